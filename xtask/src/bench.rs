//! `cargo xtask bench [--quick] [--no-docs]`: runs the top-level criterion benches
//! (`benches/`, package kiln-benches: the runtime's decode steps and prefills, the engine under
//! concurrent load, the tokenizer, the CPU kernels per format and instruction set) and prints one summary table of this run's results, which it
//! also writes to docs/perf.md between its markers.
//!
//! `--quick` measures fewer sizes with short criterion timings in the dev profile (whose
//! dependencies and runtime are optimized anyway), sharing the test build: a smoke run that
//! proves the benches work, not figures to record. The full run uses the bench (release)
//! profile. `KILN_BENCH_MODEL` and `KILN_BENCH_DEVICE` pass through to the benches.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::report;

const PERF_BEGIN: &str = "<!-- bench:begin -->";
const PERF_END: &str = "<!-- bench:end -->";

#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    pub(crate) quick: bool,
    /// Print the table only; leave docs/perf.md alone.
    pub(crate) no_docs: bool,
}

impl Options {
    pub(crate) fn parse(args: &[&str]) -> anyhow::Result<Self> {
        let mut options = Self::default();
        for &arg in args {
            match arg {
                "--quick" => options.quick = true,
                "--no-docs" => options.no_docs = true,
                other => bail!("bench: unknown argument {other:?} (--quick, --no-docs)"),
            }
        }
        Ok(options)
    }
}

/// One benchmark's result as criterion wrote it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: String,
    mean_ns: f64,
    /// Elements (tokens) per iteration, when the bench declared a throughput.
    elements: Option<u64>,
    /// Bytes per iteration, when the bench declared that throughput instead.
    bytes: Option<u64>,
}

pub(crate) fn run(root: &Path, options: &Options) -> anyhow::Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let criterion_home = target.join("criterion");
    let started = SystemTime::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .current_dir(root)
        // `--workspace` with the bench targets named: features unify as in `cargo test
        // --workspace`, so the quick run reuses the test build instead of building burn again.
        .args([
            "bench",
            "--workspace",
            "--bench",
            "runtime",
            "--bench",
            "engine",
        ])
        .args(["--bench", "tokenizer", "--bench", "kernels"])
        .env("CRITERION_HOME", &criterion_home);
    if std::env::var("KILN_BENCH_DEVICE").is_ok_and(|d| d != "cpu") {
        command.args(["--features", "kiln-benches/wgpu"]);
    }
    if options.quick {
        command
            .args(["--profile", "dev", "--", "--warm-up-time", "0.5"])
            .args(["--measurement-time", "1"])
            .env("KILN_BENCH_QUICK", "1");
    }
    eprintln!("==> bench: {command:?}");
    let status = command.status().context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench failed ({status})");
    }
    let rows = read_results(&criterion_home, started)?;
    if rows.is_empty() {
        bail!(
            "cargo bench wrote no results under {}",
            criterion_home.display()
        );
    }
    let invocation = if options.quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let table = table(&rows, invocation, root);
    println!("{table}");
    if !options.no_docs {
        let perf = root.join("docs/perf.md");
        let text = std::fs::read_to_string(&perf).unwrap_or_else(|_| "# Performance\n".into());
        std::fs::write(&perf, report::splice(&text, PERF_BEGIN, PERF_END, &table))
            .with_context(|| format!("writing {}", perf.display()))?;
        eprintln!("wrote the table to {}", perf.display());
    }
    Ok(())
}

/// Every benchmark criterion (re)wrote since `since`, in id order.
fn read_results(home: &Path, since: SystemTime) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut dirs = vec![home.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let estimates = path.join("new/estimates.json");
            let fresh = std::fs::metadata(&estimates)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since);
            if fresh {
                rows.push(parse_row(
                    &read_json(&path.join("new/benchmark.json"))?,
                    &read_json(&estimates)?,
                )?);
            } else if path.file_name().is_some_and(|n| n != "report") {
                dirs.push(path);
            }
        }
    }
    rows.sort_by_key(|row| natural_key(&row.id));
    Ok(rows)
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A row from criterion's `benchmark.json` (id, throughput) and `estimates.json` (mean).
fn parse_row(benchmark: &Value, estimates: &Value) -> anyhow::Result<Row> {
    let id = benchmark
        .get("full_id")
        .and_then(Value::as_str)
        .context("benchmark.json has no full_id")?
        .to_owned();
    let mean_ns = estimates
        .pointer("/mean/point_estimate")
        .and_then(Value::as_f64)
        .with_context(|| format!("{id}: estimates.json has no mean"))?;
    let elements = benchmark
        .pointer("/throughput/Elements")
        .and_then(Value::as_u64);
    let bytes = benchmark
        .pointer("/throughput/Bytes")
        .and_then(Value::as_u64);
    Ok(Row {
        id,
        mean_ns,
        elements,
        bytes,
    })
}

/// Sorts `decode_step/8` before `decode_step/32`.
fn natural_key(id: &str) -> (String, u64, String) {
    let (group, rest) = id.rsplit_once('/').unwrap_or((id, ""));
    match rest.parse() {
        Ok(n) => (group.to_owned(), n, String::new()),
        Err(_) => (group.to_owned(), 0, rest.to_owned()),
    }
}

fn table(rows: &[Row], invocation: &str, root: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Criterion benches (`{invocation}`), {}, commit {}, {}. Model: `KILN_BENCH_MODEL` or the \
         default model; device: `KILN_BENCH_DEVICE` ({}).\n",
        report::machine(),
        report::commit(root),
        report::date(),
        std::env::var("KILN_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into()),
    );
    let _ = writeln!(out, "| bench | mean per iteration | throughput |");
    let _ = writeln!(out, "| --- | ---: | ---: |");
    for row in rows {
        let seconds = row.mean_ns / 1e9;
        let throughput = match (row.elements, row.bytes) {
            (Some(n), _) => format!("{:.1} tok/s", n as f64 / seconds),
            (None, Some(b)) => format!("{:.1} GB/s", b as f64 / seconds / 1e9),
            (None, None) => "—".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {throughput} |",
            row.id,
            duration(row.mean_ns)
        );
    }
    out
}

fn duration(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_from_criterions_files() {
        let benchmark = serde_json::json!({
            "group_id": "decode_step", "function_id": null, "value_str": "8",
            "throughput": {"Elements": 8}, "full_id": "decode_step/8", "directory_name": "decode_step/8"
        });
        let estimates = serde_json::json!({"mean": {"point_estimate": 2.0e7}});
        let row = parse_row(&benchmark, &estimates).unwrap();
        assert_eq!(
            row,
            Row {
                id: "decode_step/8".into(),
                mean_ns: 2.0e7,
                elements: Some(8),
                bytes: None
            }
        );
        let t = table(&[row], "cargo xtask bench", Path::new("."));
        assert!(
            t.contains("| decode_step/8 | 20.0 ms | 400.0 tok/s |"),
            "{t}"
        );
        assert!(parse_row(&serde_json::json!({}), &estimates).is_err());
    }

    #[test]
    fn ids_sort_by_their_numbers() {
        let mut ids = [
            "decode_step/32",
            "decode_step/8",
            "decode_step/1",
            "engine/4",
        ];
        ids.sort_by_key(|id| natural_key(id));
        assert_eq!(
            ids,
            [
                "decode_step/1",
                "decode_step/8",
                "decode_step/32",
                "engine/4"
            ]
        );
    }
}
