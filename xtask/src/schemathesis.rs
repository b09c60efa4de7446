//! `cargo xtask schemathesis`: property-based tests of the real `kiln serve` against its own
//! `/openapi.json` with schemathesis — no 5xx, every response as the document says.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::server::{Server, free_port, test_kiln};

/// Pinned so a new schemathesis release cannot change what CI checks under our feet.
pub(crate) const REQUIREMENTS: &str = "schemathesis==4.32.5\n";

/// The key the server under test requires (the auth checks need one).
const API_KEY: &str = "kiln-schemathesis-key";

/// What schemathesis runs; `max_examples` bounds the generated cases per operation.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) max_examples: u32,
    pub(crate) seed: u64,
    /// A time budget for the whole run, in seconds (schemathesis stops generating when it is
    /// spent); CI sets one so its length does not depend on what was drawn.
    pub(crate) max_time: Option<u32>,
}

impl Options {
    pub(crate) fn parse(args: &[&str]) -> anyhow::Result<Self> {
        let mut options = Self {
            max_examples: 30,
            seed: 1,
            max_time: None,
        };
        let mut args = args.iter();
        while let Some(&arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .copied()
                    .with_context(|| format!("{name} needs a value"))
            };
            match arg {
                "--max-examples" => {
                    options.max_examples = value(arg)?.parse().context("--max-examples")?;
                }
                "--seed" => options.seed = value(arg)?.parse().context("--seed")?,
                "--max-time" => options.max_time = Some(value(arg)?.parse().context("--max-time")?),
                other => bail!("schemathesis: unknown argument {other:?}"),
            }
        }
        Ok(options)
    }
}

pub(crate) fn run(root: &Path, options: &Options) -> anyhow::Result<()> {
    let model = crate::fetch_model()?;
    let python = crate::venv("schemathesis-venv", REQUIREMENTS)?;
    let schemathesis = python.with_file_name("schemathesis");
    let kiln = test_kiln(root)?;

    let port = free_port()?;
    let logs = std::env::temp_dir().join("kiln-schemathesis");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join("kiln.log");
    // A short served context and few choices bound what any generated request can cost, so a
    // run's length depends on the number of examples, not on the values drawn.
    let server = Server::start(
        "kiln",
        Command::new(&kiln)
            .args(["serve", "--port", &port.to_string(), "--api-key", API_KEY])
            .args(["--max-model-len", "64", "--max-n", "2"])
            .args(["--request-timeout", "120"])
            .arg("--model")
            .arg(&model)
            .env("KILN_LOG", "warn"),
        port,
        &log,
        Duration::from_secs(300),
    )?;
    eprintln!(
        "kiln serving on {} (log {}); schemathesis {} examples per operation, seed {}",
        server.base_url(),
        log.display(),
        options.max_examples,
        options.seed
    );
    let mut command = Command::new(&schemathesis);
    // Its cache directory lands in the working directory: keep it out of the checkout.
    command.current_dir(&logs).arg("run");
    if let Some(seconds) = options.max_time {
        command.args(["--max-time", &seconds.to_string()]);
    }
    let status = command
        .arg(format!("{}/openapi.json", server.base_url()))
        .args(["--header", &format!("Authorization: Bearer {API_KEY}")])
        // The document cannot say that a prompt must fit the context or that ids must be in the
        // vocabulary, so a schema-valid request may rightly get a 400: every other check runs.
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--max-examples", &options.max_examples.to_string()])
        .args(["--seed", &options.seed.to_string()])
        // Generation takes as long as the tokens asked for (up to the served context) take: a
        // slow answer is not a failure, only a timed-out one.
        .args([
            "--workers",
            "1",
            "--request-timeout",
            "150",
            "--max-response-time",
            "150",
        ])
        .args(["--suppress-health-check", "too_slow,filter_too_much"])
        .arg("--report-dir")
        .arg(logs.join("report"))
        .args(["--report", "junit"])
        .env("NO_COLOR", "1")
        .status()
        .with_context(|| format!("running {}", schemathesis.display()))?;
    let stopped = server.stop(Duration::from_secs(60))?;
    let panicked = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("panicked");
    if panicked {
        bail!("kiln panicked during the run; see {}", log.display());
    }
    if !stopped.success() {
        bail!(
            "kiln did not shut down cleanly ({stopped}); see {}",
            log.display()
        );
    }
    if !status.success() {
        bail!(
            "schemathesis found failures ({status}); the server log is {}",
            log.display()
        );
    }
    eprintln!("schemathesis: no failures");
    Ok(())
}
