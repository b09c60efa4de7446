"""The soak report's plot: RSS, request latency and the engine's gauges over the run.

`cargo xtask soak` runs this in a venv under the kiln cache (matplotlib pinned in
xtask/src/soak.rs): python soak_plot.py SOAK.json OUT.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def percentile(values, q):
    values = sorted(values)
    if not values:
        return None
    rank = min(len(values), max(1, int(-(-q * len(values) // 1))))
    return values[rank - 1]


def main(src, out):
    with open(src) as f:
        run = json.load(f)
    samples = run["samples"]
    requests = run["requests"]
    warm = run["warm_up_s"]
    t = [s["t"] / 60 for s in samples]

    fig, (ax_rss, ax_lat, ax_eng) = plt.subplots(
        3, 1, figsize=(10, 9), sharex=True, gridspec_kw={"height_ratios": [3, 3, 2]}
    )
    fig.suptitle(f"kiln serve under a mixed load of {run['streams']} closed-loop streams")

    rss = [s["rss_mib"] for s in samples]
    outside = [s["rss_mib"] - s["kv_resident_mib"] for s in samples]
    ax_rss.plot(t, rss, color="tab:blue", label="RSS")
    ax_rss.plot(t, outside, color="tab:cyan", label="RSS outside the KV cache (judged)")
    after = [o for s, o in zip(samples, outside) if s["t"] >= warm]
    if after:
        window = max(5, int(len(samples) * 0.1))
        base = max(after[:window])
        ax_rss.axhline(
            base * (1 + run["rss_growth_bound"]),
            color="tab:red",
            linestyle="--",
            linewidth=1,
            label=f"bound: +{run['rss_growth_bound']:.0%} over its level after warm-up",
        )
    ax_rss.axvspan(0, warm / 60, color="0.9", label="warm-up")
    ax_rss.set_ylabel("RSS (MiB)")
    ax_rss.set_ylim(bottom=0)
    ax_rss.legend(loc="lower right")
    ax_rss.grid(alpha=0.3)

    # Latency per 10-second bucket: whole requests' latency and streams' time to first token.
    bucket = 10.0
    end = max([r["t"] for r in requests] + [1.0])
    edges = [i * bucket for i in range(int(end // bucket) + 1)]
    series = {"latency p50": [], "latency p95": [], "TTFT p50": [], "TTFT p95": []}
    mids = []
    for lo in edges:
        rs = [r for r in requests if lo <= r["t"] < lo + bucket and r["ok"]]
        lat = [r["latency"] for r in rs if not r["streamed_answer"]]
        ttft = [r["ttft"] for r in rs if r["ttft"] is not None]
        mids.append((lo + bucket / 2) / 60)
        series["latency p50"].append(percentile(lat, 0.5))
        series["latency p95"].append(percentile(lat, 0.95))
        series["TTFT p50"].append(percentile(ttft, 0.5))
        series["TTFT p95"].append(percentile(ttft, 0.95))
    styles = {
        "latency p50": ("tab:green", "-"),
        "latency p95": ("tab:green", ":"),
        "TTFT p50": ("tab:purple", "-"),
        "TTFT p95": ("tab:purple", ":"),
    }
    for name, values in series.items():
        color, style = styles[name]
        label = name.replace("latency", "whole-request latency")
        ax_lat.plot(mids, values, color=color, linestyle=style, label=label)
    ax_lat.set_ylabel("seconds (10 s buckets)")
    ax_lat.set_ylim(bottom=0)
    ax_lat.legend(loc="upper right", ncols=2)
    ax_lat.grid(alpha=0.3)

    ax_eng.plot(t, [s["running"] for s in samples], label="running", color="tab:orange")
    ax_eng.plot(t, [s["waiting"] for s in samples], label="waiting", color="tab:gray")
    ax_eng.set_ylabel("requests")
    ax_eng.set_xlabel("minutes")
    ax_eng.grid(alpha=0.3)
    ax_fd = ax_eng.twinx()
    ax_fd.plot(t, [s["fds"] for s in samples], label="open fds", color="tab:brown", linewidth=1)
    ax_fd.plot(t, [s["threads"] for s in samples], label="threads", color="black", linewidth=1)
    ax_fd.set_ylabel("fds, threads")
    ax_fd.set_ylim(bottom=0)
    lines = ax_eng.get_legend_handles_labels()
    more = ax_fd.get_legend_handles_labels()
    ax_eng.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right", ncols=4)

    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
