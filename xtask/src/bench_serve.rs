//! `cargo xtask bench-serve`: Kiln against llama.cpp's `llama-server` on the same GGUF, same
//! machine, one run — servers started alternately (never both at once), driven by the Rust load
//! generator, figures and Kiln/llama.cpp ratios written to `docs/perf.md` and a JSON file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::loadgen::{self, RequestResult, Scenario, quantile};
use crate::report;
use crate::server::{Server, free_port, kiln_binary};

/// Threads each server may use: the same for both, and all this machine's cores.
const THREADS: usize = 2;
/// New tokens per request (EOS suppressed, so every request makes exactly this many).
const MAX_TOKENS: usize = 128;
/// Share of the machine (in cores) others may use during a run before its row is marked.
const BUSY_CORES: f64 = 0.25;
const PERF_BEGIN: &str = "<!-- bench-serve:begin -->";
const PERF_END: &str = "<!-- bench-serve:end -->";

#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Kiln alone, 1 and 4 streams, a few requests: keeps the harness working (CI).
    pub(crate) quick: bool,
    pub(crate) kiln_only: bool,
    pub(crate) out: Option<PathBuf>,
    /// Write the table into docs/perf.md.
    pub(crate) docs: bool,
    /// A GGUF to measure instead of the default model (both servers load it).
    pub(crate) model: Option<PathBuf>,
    /// Only the key scenarios (one stream after 128- and 512-token prompts, 16 streams).
    pub(crate) key_only: bool,
    /// Kiln on a GPU through wgpu (`--device wgpu`): a build with the `wgpu` feature, Kiln
    /// alone (the llama.cpp this harness builds is CPU-only, so a ratio would compare devices).
    pub(crate) wgpu: bool,
}

impl Options {
    pub(crate) fn quick() -> Self {
        Self {
            quick: true,
            kiln_only: true,
            out: None,
            docs: false,
            model: None,
            key_only: false,
            wgpu: false,
        }
    }

    /// The command line that gives these options, as the report records it.
    fn invocation(&self) -> String {
        let mut line = String::from("cargo xtask bench-serve");
        if self.quick {
            line.push_str(" --quick");
        } else if self.kiln_only {
            line.push_str(" --kiln-only");
        }
        if self.key_only {
            line.push_str(" --key");
        }
        if let Some(model) = &self.model {
            let _ = write!(line, " --model {}", model.display());
        }
        if self.wgpu {
            line.push_str(" --device wgpu");
        }
        line
    }

    pub(crate) fn parse(args: &[&str]) -> anyhow::Result<Self> {
        let mut options = Self {
            quick: false,
            kiln_only: false,
            out: None,
            docs: true,
            model: None,
            key_only: false,
            wgpu: false,
        };
        let mut args = args.iter();
        while let Some(&arg) = args.next() {
            match arg {
                "--quick" => {
                    options.quick = true;
                    options.kiln_only = true;
                    options.docs = false;
                }
                "--kiln-only" => options.kiln_only = true,
                "--no-docs" => options.docs = false,
                "--key" => options.key_only = true,
                "--out" => {
                    let path = args.next().context("--out needs a path")?;
                    options.out = Some(PathBuf::from(path));
                }
                // docs/perf.md's table is the default model's: another model's figures go to
                // stdout and --out only.
                "--model" => {
                    let path = args.next().context("--model needs a GGUF path")?;
                    options.model = Some(PathBuf::from(path));
                    options.docs = false;
                }
                "--device" => match args.next().copied() {
                    Some("cpu") => options.wgpu = false,
                    Some("wgpu") => {
                        options.wgpu = true;
                        options.kiln_only = true;
                        options.docs = false;
                    }
                    other => bail!("--device needs cpu or wgpu, got {other:?}"),
                },
                other => bail!("bench-serve: unknown argument {other:?}"),
            }
        }
        Ok(options)
    }
}

/// The model's end-of-sequence ids (`tokenizer.ggml.eos_token_id`, and the end-of-turn and
/// end-of-message ids where the file has them), which the load generator bans.
fn eos_ids(model: &Path) -> anyhow::Result<Vec<u32>> {
    let file = kiln_gguf::GgufFile::open(model)
        .with_context(|| format!("reading the end-of-sequence ids of {}", model.display()))?;
    let meta = file.metadata();
    let mut ids = Vec::new();
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        ids.extend(meta.opt_u32(key)?);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn scenarios(quick: bool, banned: &[u32]) -> Vec<Scenario> {
    let scenario = |prompt_tokens, shared_prefix, concurrency, requests, limit| Scenario {
        name: format!(
            "{prompt_tokens}-token prompt{}, {concurrency} stream{}",
            if shared_prefix > 0 {
                format!(" ({shared_prefix} shared)")
            } else {
                String::new()
            },
            if concurrency == 1 { "" } else { "s" }
        ),
        prompt_tokens,
        shared_prefix,
        concurrency,
        requests,
        max_tokens: MAX_TOKENS,
        time_limit: Duration::from_secs(limit),
        seed: 20_261_201,
        banned: banned.to_vec(),
    };
    if quick {
        return vec![scenario(128, 0, 1, 2, 60), scenario(128, 0, 4, 4, 60)];
    }
    let mut all = Vec::new();
    for prompt in [128, 512] {
        for concurrency in [1, 4, 16, 64] {
            // Two rounds of requests per stream (8 at least, 96 at most), and no new request
            // after 90 s: a full run takes about half an hour on 2 cores.
            let requests = (2 * concurrency).clamp(8, 96);
            all.push(scenario(prompt, 0, concurrency, requests, 90));
        }
    }
    // A system prompt every request shares: what prefix caching is for.
    all.push(scenario(512, 384, 16, 32, 90));
    all
}

/// How to start one server.
struct ServerSpec {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl ServerSpec {
    fn command_line(&self) -> String {
        let mut line: Vec<String> = self.envs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        line.push(
            self.program
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        );
        line.extend(self.args.iter().cloned());
        line.join(" ")
    }

    fn start(&self, port: u16, log: &Path) -> anyhow::Result<Server> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .args(["--port", &port.to_string()])
            .envs(self.envs.iter().map(|(k, v)| (k, v)));
        Server::start(
            &self.name,
            &mut command,
            port,
            log,
            Duration::from_secs(600),
        )
    }
}

/// One server's figures for one scenario.
#[derive(Debug, Clone, Default)]
struct Figures {
    requests: usize,
    errors: usize,
    first_error: Option<String>,
    ttft_ms: [Option<f64>; 3],
    itl_ms: [Option<f64>; 2],
    stream_tok_s: Option<f64>,
    aggregate_tok_s: f64,
    requests_per_s: f64,
    peak_rss_mb: Option<f64>,
    /// Resident memory after start-up and one short request, before the load.
    idle_rss_mb: Option<f64>,
    /// Cores' worth of CPU that other processes used during the run.
    others_cores: f64,
    busy: bool,
}

impl Figures {
    fn from_results(
        results: &[RequestResult],
        wall: Duration,
        max_tokens: usize,
        prompt_tokens: usize,
    ) -> Self {
        let mut f = Self {
            requests: results.len(),
            ..Self::default()
        };
        let mut ttft = Vec::new();
        let mut itl = Vec::new();
        let mut rates = Vec::new();
        let mut generated = 0u64;
        for r in results {
            // Honest by construction: a request counts only if the server says it generated
            // exactly what was asked for, from exactly the prompt that was sent.
            let error = r.error.clone().or_else(|| {
                (r.completion_tokens != Some(max_tokens as u64)
                    || r.prompt_tokens != Some(prompt_tokens as u64))
                .then(|| {
                    format!(
                        "usage says {:?} prompt and {:?} completion tokens, expected {prompt_tokens} and {max_tokens}",
                        r.prompt_tokens, r.completion_tokens
                    )
                })
            });
            if let Some(error) = error {
                f.errors += 1;
                f.first_error.get_or_insert(error);
                continue;
            }
            generated += r.completion_tokens.unwrap_or(0);
            if let Some(t) = r.ttft() {
                ttft.push(t.as_secs_f64() * 1e3);
            }
            itl.extend(
                r.token_times
                    .windows(2)
                    .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1e3),
            );
            if let (Some(first), Some(last)) = (r.token_times.first(), r.token_times.last()) {
                let span = last.duration_since(*first).as_secs_f64();
                let tokens = r.completion_tokens.unwrap_or(0).saturating_sub(1) as f64;
                if span > 0.0 && tokens > 0.0 {
                    rates.push(tokens / span);
                }
            }
        }
        f.ttft_ms = [0.5, 0.9, 0.99].map(|q| quantile(&ttft, q));
        f.itl_ms = [0.5, 0.99].map(|q| quantile(&itl, q));
        f.stream_tok_s = quantile(&rates, 0.5);
        let secs = wall.as_secs_f64().max(1e-9);
        f.aggregate_tok_s = generated as f64 / secs;
        f.requests_per_s = (f.requests - f.errors) as f64 / secs;
        f
    }

    fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "first_error": self.first_error,
            "ttft_ms": { "p50": self.ttft_ms[0], "p90": self.ttft_ms[1], "p99": self.ttft_ms[2] },
            "itl_ms": { "p50": self.itl_ms[0], "p99": self.itl_ms[1] },
            "stream_decode_tok_s": self.stream_tok_s,
            "aggregate_tok_s": self.aggregate_tok_s,
            "requests_per_s": self.requests_per_s,
            "peak_rss_mb": self.peak_rss_mb,
            "idle_rss_mb": self.idle_rss_mb,
            "other_processes_cores": self.others_cores,
            "cpu_busy": self.busy,
        })
    }
}

/// The scenarios the extra runs (a K-quant copy of the model, Kiln's AVX2 path) repeat: one
/// stream after short and long prompts (decode rate and TTFT) and 16 streams (batching).
fn is_key_scenario(s: &Scenario) -> bool {
    s.shared_prefix == 0 && (s.concurrency == 1 || (s.concurrency == 16 && s.prompt_tokens == 128))
}

/// The K-quant type the default model is also measured in (what most downloads are).
const KQUANT_COPY: &str = "Q4_K_M";

pub(crate) fn run(root: &Path, options: &Options) -> anyhow::Result<()> {
    let model = match &options.model {
        Some(path) if path.is_file() => path.clone(),
        Some(path) => bail!("--model {}: no such file", path.display()),
        None => crate::fetch_model()?,
    };
    // The harness check (--quick) takes the dev build CI has already made; a comparison needs
    // the release build.
    let kiln = if options.wgpu {
        crate::server::cargo_build_bin(
            root,
            &["build", "--release", "-p", "kiln-server", "--bin", "kiln"]
                .into_iter()
                .chain(["--features", "kiln-server/wgpu"])
                .collect::<Vec<_>>(),
            "kiln",
        )?
    } else {
        kiln_binary(root, options.quick)?
    };
    // Kiln as a user starts it: the KV cache sized by its defaults (`--max-running` sequences).
    let kiln_spec = |name: String, model: &Path, isa: Option<&str>| {
        let mut envs = vec![
            ("RAYON_NUM_THREADS".to_string(), THREADS.to_string()),
            ("KILN_LOG".into(), "warn".into()),
        ];
        if let Some(isa) = isa {
            envs.push(("KILN_CPU_ISA".into(), isa.into()));
        }
        ServerSpec {
            name,
            program: kiln.clone(),
            args: [
                "serve",
                "--model",
                &model.display().to_string(),
                "--max-running",
                "64",
                "--device",
                if options.wgpu { "wgpu" } else { "cpu" },
            ]
            .map(String::from)
            .to_vec(),
            envs,
        }
    };
    let scenarios: Vec<Scenario> = scenarios(options.quick, &eos_ids(&model)?)
        .into_iter()
        .filter(|s| !options.key_only || is_key_scenario(s))
        .collect();
    let mut specs = vec![kiln_spec("kiln".into(), &model, None)];
    // (scenario, the specs that run it)
    let mut plan: Vec<(Scenario, Vec<usize>)> =
        scenarios.iter().map(|s| (s.clone(), vec![0])).collect();
    let mut cmake_flags = Vec::new();
    if !options.kiln_only {
        let llama = crate::llama_cpp::llama_server()?;
        cmake_flags = llama.cmake_flags.clone();
        // 16 slots of continuous batching, each with room for the longest prompt plus output.
        let llama_spec = |model: &Path| ServerSpec {
            name: "llama.cpp".into(),
            program: llama.path.clone(),
            args: [
                "-m",
                &model.display().to_string(),
                "--host",
                "127.0.0.1",
                "-t",
                &THREADS.to_string(),
                "-tb",
                &THREADS.to_string(),
                "-np",
                "16",
                "-cb",
                "-c",
                "16384",
            ]
            .map(String::from)
            .to_vec(),
            envs: Vec::new(),
        };
        specs.push(llama_spec(&model));
        for (_, servers) in &mut plan {
            servers.push(1);
        }
        // Kiln's AVX2 path on the key scenarios, where this CPU would otherwise take AVX-512.
        if !options.quick && cpu_has("avx512f") {
            specs.push(kiln_spec("kiln (AVX2)".into(), &model, Some("avx2")));
            let avx2 = specs.len() - 1;
            for (scenario, servers) in &mut plan {
                if is_key_scenario(scenario) {
                    servers.push(avx2);
                }
            }
        }
        // The default model's K-quant copy, on both servers.
        if options.model.is_none() && !options.quick {
            let copy = llama.requantized(&model, KQUANT_COPY)?;
            specs.push(kiln_spec(format!("kiln ({KQUANT_COPY})"), &copy, None));
            specs.push(ServerSpec {
                name: format!("llama.cpp ({KQUANT_COPY})"),
                ..llama_spec(&copy)
            });
            let pair = vec![specs.len() - 2, specs.len() - 1];
            for scenario in scenarios.iter().filter(|s| is_key_scenario(s)) {
                let scenario = Scenario {
                    name: format!("{KQUANT_COPY} copy: {}", scenario.name),
                    ..scenario.clone()
                };
                plan.push((scenario, pair.clone()));
            }
        }
    }

    let logs = std::env::temp_dir().join("kiln-bench-serve");
    std::fs::create_dir_all(&logs)?;
    let mut rows: Vec<Row> = Vec::new();
    for (scenario, servers) in &plan {
        let mut results = Vec::new();
        for spec in servers.iter().map(|&i| &specs[i]) {
            eprintln!("bench-serve: {} — {}", spec.name, scenario.name);
            let figures = measure(spec, scenario, &logs)?;
            eprintln!(
                "  {:.1} tok/s aggregate, TTFT p50 {}, {} errors{}",
                figures.aggregate_tok_s,
                ms(figures.ttft_ms[0]),
                figures.errors,
                if figures.busy { " (CPU busy)" } else { "" }
            );
            results.push((spec.name.clone(), figures));
        }
        rows.push(Row {
            scenario: scenario.clone(),
            results,
        });
    }

    let report = Report {
        machine: report::machine(),
        commit: report::commit(root),
        date: report::date(),
        invocation: options.invocation(),
        commands: specs
            .iter()
            .map(|s| (s.name.to_owned(), s.command_line()))
            .collect(),
        cmake_flags,
        rows,
    };
    let table = report.markdown();
    println!("{table}");

    let json_path = match &options.out {
        Some(path) => path.clone(),
        None if options.docs => root.join("docs/bench-serve.json"),
        None => logs.join("bench-serve.json"),
    };
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&report.to_json())? + "\n",
    )
    .with_context(|| format!("writing {}", json_path.display()))?;
    eprintln!("bench-serve: JSON in {}", json_path.display());
    if options.docs {
        let perf = root.join("docs/perf.md");
        let text = std::fs::read_to_string(&perf).unwrap_or_default();
        std::fs::write(&perf, report::splice(&text, PERF_BEGIN, PERF_END, &table))?;
        eprintln!("bench-serve: table written to {}", perf.display());
    }
    let errors: usize = report
        .rows
        .iter()
        .flat_map(|r| &r.results)
        .map(|(_, f)| f.errors)
        .sum();
    if errors > 0 {
        let first = report
            .rows
            .iter()
            .flat_map(|r| &r.results)
            .find_map(|(_, f)| f.first_error.clone())
            .unwrap_or_default();
        bail!("{errors} requests failed or came back short; the first: {first}");
    }
    Ok(())
}

/// Starts the server, warms it up, runs the scenario, stops it; the CPU is checked before and
/// accounted during the run.
fn measure(spec: &ServerSpec, scenario: &Scenario, logs: &Path) -> anyhow::Result<Figures> {
    wait_for_idle_cpu();
    let port = free_port()?;
    let log = logs.join(format!("{}-{port}.log", spec.name));
    let server = spec.start(port, &log)?;
    // One short request first, so lazy initialisation is not measured.
    let warm = loadgen::Scenario {
        requests: 1,
        concurrency: 1,
        max_tokens: 4,
        prompt_tokens: 16,
        shared_prefix: 0,
        seed: scenario.seed ^ 0xFFFF,
        ..scenario.clone()
    };
    let (warm_results, _) = loadgen::run(port, &warm)?;
    if let Some(err) = warm_results.iter().find_map(|r| r.error.clone()) {
        bail!(
            "{}: the warm-up request failed: {err} (log {})",
            spec.name,
            log.display()
        );
    }
    let idle_rss = server.rss();
    let before = CpuSample::take(server.pid());
    let (results, wall) = loadgen::run(port, scenario)?;
    let after = CpuSample::take(server.pid());
    let mut figures =
        Figures::from_results(&results, wall, scenario.max_tokens, scenario.prompt_tokens);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    figures.peak_rss_mb = server.peak_rss().map(mib);
    figures.idle_rss_mb = idle_rss.map(mib);
    if let (Some(a), Some(b)) = (before, after) {
        figures.others_cores = b.others_since(&a);
        figures.busy = figures.others_cores > BUSY_CORES;
    }
    let status = server.stop(Duration::from_secs(60))?;
    if !status.success() {
        eprintln!(
            "  {} exited with {status} on SIGTERM (log {})",
            spec.name,
            log.display()
        );
    }
    Ok(figures)
}

/// Waits (up to a minute) until the machine is idle before a run: a leftover build or a server
/// still exiting would be measured with it.
fn wait_for_idle_cpu() {
    for attempt in 0..12 {
        let Some(a) = CpuSample::take(std::process::id()) else {
            return;
        };
        std::thread::sleep(Duration::from_secs(1));
        let Some(b) = CpuSample::take(std::process::id()) else {
            return;
        };
        let busy = b.total_busy - a.total_busy;
        if busy < BUSY_CORES * b.elapsed_since(&a) {
            return;
        }
        if attempt == 0 {
            eprintln!(
                "  waiting for the CPU to be idle ({:.2} cores busy)",
                busy / b.elapsed_since(&a)
            );
        }
        std::thread::sleep(Duration::from_secs(4));
    }
    eprintln!("  the CPU stayed busy; the run will say so");
}

/// CPU time, in seconds: the whole machine's busy time, the server's and this process's.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    at: Instant,
    total_busy: f64,
    server: f64,
    own: f64,
}

impl CpuSample {
    fn take(server_pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<f64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
        let busy: f64 = fields
            .iter()
            .take(8)
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, v)| v)
            .sum();
        Some(Self {
            at: Instant::now(),
            total_busy: busy / CLOCK_TICKS,
            server: process_cpu(server_pid).unwrap_or(0.0),
            own: process_cpu(std::process::id()).unwrap_or(0.0),
        })
    }

    fn elapsed_since(&self, earlier: &Self) -> f64 {
        self.at.duration_since(earlier.at).as_secs_f64().max(1e-9)
    }

    /// Cores' worth of CPU used by processes other than the server and the load generator.
    fn others_since(&self, earlier: &Self) -> f64 {
        let others = (self.total_busy - earlier.total_busy)
            - (self.server - earlier.server)
            - (self.own - earlier.own);
        others.max(0.0) / self.elapsed_since(earlier)
    }
}

/// `USER_HZ`: 100 on every Linux this runs on.
const CLOCK_TICKS: f64 = 100.0;

/// A process's user + system CPU seconds (all its threads).
fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields resume after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS)
}

struct Report {
    machine: String,
    commit: String,
    date: String,
    invocation: String,
    commands: Vec<(String, String)>,
    cmake_flags: Vec<String>,
    rows: Vec<Row>,
}

/// One scenario and each server's figures, in the order they ran.
struct Row {
    scenario: Scenario,
    results: Vec<(String, Figures)>,
}

/// Whether this CPU advertises `flag` in `/proc/cpuinfo`.
fn cpu_has(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines()
            .find_map(|l| l.strip_prefix("flags"))
            .is_some_and(|l| l.split_whitespace().any(|f| f == flag))
    })
}

impl Report {
    fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## Serving: Kiln against llama.cpp's server\n");
        let _ = writeln!(
            out,
            "Issue 6's benchmark: both servers on loopback, alternately (never both at once), one \
             GGUF (the default model's unless `--model` names another; it is in the command \
             lines below), {THREADS} threads each; a Rust load generator drives OpenAI \
             streaming `/v1/completions` with C closed-loop streams, token-id prompts from a \
             fixed seed (distinct per request unless a shared prefix is named), {MAX_TOKENS} new \
             tokens with EOS suppressed. A request counts only if its `usage` shows the exact \
             prompt and {MAX_TOKENS} completion tokens. Ratios are Kiln / llama.cpp (for \
             latencies, below 1 is better for Kiln; for rates, above 1).\n"
        );
        let _ = writeln!(out, "- Machine: {}", self.machine);
        let _ = writeln!(out, "- Commit: {}; date: {}", self.commit, self.date);
        let _ = writeln!(out, "- Command: `{}`", self.invocation);
        for (name, line) in &self.commands {
            let _ = writeln!(out, "- {name}: `{line}`");
        }
        if !self.cmake_flags.is_empty() {
            let _ = writeln!(
                out,
                "- llama-server built from llama-cpp-python {} (vendored llama.cpp) with `{}`",
                crate::llama_cpp::SDIST_VERSION,
                self.cmake_flags.join(" ")
            );
        }
        let _ = writeln!(
            out,
            "\n| Scenario | Server | TTFT p50 / p90 / p99 | ITL p50 / p99 | Stream tok/s | Aggregate tok/s | Req/s | Errors | Idle RSS | Peak RSS |"
        );
        let _ = writeln!(
            out,
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        let mib = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.0} MiB"));
        for row in &self.rows {
            let name = &row.scenario.name;
            for (server, f) in &row.results {
                let _ = writeln!(
                    out,
                    "| {name} | {server}{} | {} / {} / {} | {} / {} | {} | {:.1} | {:.2} | {}/{} | {} | {} |",
                    if f.busy {
                        " (CPU busy: not comparable)"
                    } else {
                        ""
                    },
                    ms(f.ttft_ms[0]),
                    ms(f.ttft_ms[1]),
                    ms(f.ttft_ms[2]),
                    ms(f.itl_ms[0]),
                    ms(f.itl_ms[1]),
                    f.stream_tok_s.map_or("—".into(), |v| format!("{v:.1}")),
                    f.aggregate_tok_s,
                    f.requests_per_s,
                    f.errors,
                    f.requests,
                    mib(f.idle_rss_mb),
                    mib(f.peak_rss_mb),
                );
            }
            // Each Kiln against the llama.cpp of its row.
            let Some((peer_name, peer)) =
                row.results.iter().find(|(n, _)| n.starts_with("llama.cpp"))
            else {
                continue;
            };
            for (server, kiln) in row.results.iter().filter(|(n, _)| n.starts_with("kiln")) {
                let comparable = !kiln.busy && !peer.busy;
                let ratio = |a: Option<f64>, b: Option<f64>| match (a, b, comparable) {
                    (Some(a), Some(b), true) if b > 0.0 => format!("{:.2}x", a / b),
                    _ => "—".into(),
                };
                let _ = writeln!(
                    out,
                    "| {name} | **{server} / {peer_name}** | {} / {} / {} | {} / {} | {} | {} | {} | | {} | {} |",
                    ratio(kiln.ttft_ms[0], peer.ttft_ms[0]),
                    ratio(kiln.ttft_ms[1], peer.ttft_ms[1]),
                    ratio(kiln.ttft_ms[2], peer.ttft_ms[2]),
                    ratio(kiln.itl_ms[0], peer.itl_ms[0]),
                    ratio(kiln.itl_ms[1], peer.itl_ms[1]),
                    ratio(kiln.stream_tok_s, peer.stream_tok_s),
                    ratio(Some(kiln.aggregate_tok_s), Some(peer.aggregate_tok_s)),
                    ratio(Some(kiln.requests_per_s), Some(peer.requests_per_s)),
                    ratio(kiln.idle_rss_mb, peer.idle_rss_mb),
                    ratio(kiln.peak_rss_mb, peer.peak_rss_mb),
                );
            }
        }
        out
    }

    fn to_json(&self) -> Value {
        json!({
            "machine": self.machine,
            "commit": self.commit,
            "date": self.date,
            "command": self.invocation,
            "servers": self.commands.iter().map(|(n, c)| json!({ "name": n, "command": c })).collect::<Vec<_>>(),
            "llama_cpp_cmake_flags": self.cmake_flags,
            "scenarios": self.rows.iter().map(|Row { scenario: s, results }| json!({
                "name": s.name,
                "prompt_tokens": s.prompt_tokens,
                "shared_prefix_tokens": s.shared_prefix,
                "concurrency": s.concurrency,
                "requests": s.requests,
                "max_tokens": s.max_tokens,
                "time_limit_s": s.time_limit.as_secs(),
                "results": results.iter()
                    .map(|(n, f)| (n.clone(), f.to_json()))
                    .collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.0} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_model_is_measured_but_not_written_to_the_docs() {
        let options = Options::parse(&["--model", "q4km.gguf", "--out", "r.json"]).unwrap();
        assert_eq!(options.model, Some(PathBuf::from("q4km.gguf")));
        assert!(!options.docs && !options.quick);
        assert!(Options::parse(&["--model"]).is_err());
        let gpu = Options::parse(&["--device", "wgpu"]).unwrap();
        assert!(gpu.wgpu && gpu.kiln_only && !gpu.docs);
        assert!(gpu.invocation().ends_with("--device wgpu"));
        assert!(Options::parse(&["--device", "tpu"]).is_err());
        let default = Options::parse(&[]).unwrap();
        assert!(default.docs && default.model.is_none());
    }

    #[test]
    fn the_extra_runs_repeat_one_stream_and_sixteen() {
        let key: Vec<(usize, usize)> = scenarios(false, &[2])
            .iter()
            .filter(|s| is_key_scenario(s))
            .map(|s| (s.prompt_tokens, s.concurrency))
            .collect();
        assert_eq!(key, [(128, 1), (128, 16), (512, 1)]);
    }

    #[test]
    fn short_or_failed_requests_are_errors_not_figures() {
        let now = Instant::now();
        let ok = RequestResult {
            start: Some(now),
            token_times: (1..=4)
                .map(|i| now + Duration::from_millis(100 * i))
                .collect(),
            end: Some(now + Duration::from_millis(450)),
            prompt_tokens: Some(16),
            completion_tokens: Some(4),
            error: None,
        };
        let short = RequestResult {
            completion_tokens: Some(3),
            ..ok.clone()
        };
        let failed = RequestResult {
            error: Some("HTTP 500".into()),
            ..ok.clone()
        };
        let f = Figures::from_results(&[ok, short, failed], Duration::from_secs(1), 4, 16);
        assert_eq!((f.requests, f.errors), (3, 2));
        assert_eq!(f.ttft_ms[0].map(f64::round), Some(100.0));
        assert_eq!(f.itl_ms[0].map(f64::round), Some(100.0));
        assert_eq!(f.stream_tok_s.map(f64::round), Some(10.0));
        assert!((f.aggregate_tok_s - 4.0).abs() < 1e-9);
        assert!(f.first_error.is_some_and(|e| e.contains("completion")));
    }
}
