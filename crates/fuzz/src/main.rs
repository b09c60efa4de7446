//! `kiln-fuzz`: runs the fuzz targets (`cargo xtask fuzz` builds and starts it).
//!
//! `kiln-fuzz [--seconds N] [--inputs N] [--seed S] [--per-input-ms MS] [TARGET ...]`: each
//! target (all by default) for N seconds (default 60) or N inputs; prints inputs, rate and the
//! slowest input per target; writes findings under `$KILN_HOME/fuzz/findings/<target>/`; exits
//! 1 when there are any. A watchdog ends the process (exit 3) if one input runs past a minute,
//! naming the target, seed and index that reproduce it.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kiln_fuzz::{Budget, CURRENT_INDEX, CURRENT_SINCE_MS, epoch, run, save, targets};

const HANG: Duration = Duration::from_secs(60);

struct Args {
    budget: Budget,
    targets: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut budget = Budget {
        time: Duration::from_secs(60),
        inputs: u64::MAX,
        per_input: Duration::from_secs(2),
        seed: 0,
    };
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    let number = |flag: &str, v: Option<String>| -> Result<u64, String> {
        v.ok_or(format!("{flag} needs a value"))?
            .parse()
            .map_err(|e| format!("{flag}: {e}"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => budget.time = Duration::from_secs(number(&arg, args.next())?),
            "--inputs" => budget.inputs = number(&arg, args.next())?,
            "--seed" => budget.seed = number(&arg, args.next())?,
            "--per-input-ms" => {
                budget.per_input = Duration::from_millis(number(&arg, args.next())?);
            }
            "-h" | "--help" => {
                return Err(format!(
                    "usage: kiln-fuzz [--seconds N] [--inputs N] [--seed S] [--per-input-ms MS] \
                     [TARGET ...]\ntargets: {}",
                    targets::NAMES.join(", ")
                ));
            }
            flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}")),
            name => names.push(name.to_string()),
        }
    }
    if names.is_empty() {
        names = targets::NAMES.iter().map(|n| n.to_string()).collect();
    }
    Ok(Args {
        budget,
        targets: names,
    })
}

/// The target running now, as an index into `targets::NAMES`, for the watchdog.
static CURRENT_TARGET: AtomicUsize = AtomicUsize::new(0);

fn watchdog(seed: u64) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let since = CURRENT_SINCE_MS.load(Ordering::SeqCst);
            let now = epoch().elapsed().as_millis() as u64;
            if since != 0 && now.saturating_sub(since) > HANG.as_millis() as u64 {
                let index = CURRENT_INDEX.load(Ordering::SeqCst);
                let target = targets::NAMES[CURRENT_TARGET.load(Ordering::SeqCst)];
                eprintln!(
                    "kiln-fuzz: {target}: input {index} (seed {seed}) has run for over {} s: a \
                     hang; reproduce with `kiln-fuzz --seed {seed} --inputs {} {target}`",
                    HANG.as_secs(),
                    index + 1
                );
                std::process::exit(3);
            }
        }
    });
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let findings_dir = match kiln_hub::kiln_home() {
        Ok(home) => home.join("fuzz").join("findings"),
        Err(e) => {
            eprintln!("kiln-fuzz: {e}");
            return ExitCode::from(2);
        }
    };
    let _ = epoch();
    watchdog(args.budget.seed);
    let mut total = 0usize;
    println!(
        "{:<20} {:>10} {:>10} {:>9} {:>12} {:>9}",
        "target", "inputs", "inputs/s", "parsed", "slowest ms", "findings"
    );
    for name in &args.targets {
        let target = match targets::target(name) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("kiln-fuzz: {name}: {e}");
                return ExitCode::from(2);
            }
        };
        let position = targets::NAMES.iter().position(|n| *n == target.name);
        CURRENT_TARGET.store(position.unwrap_or(0), Ordering::SeqCst);
        let report = run(&target, &args.budget);
        let rate = report.inputs as f64 / report.elapsed.as_secs_f64().max(1e-9);
        println!(
            "{:<20} {:>10} {:>10.0} {:>8.1}% {:>12.1} {:>9}",
            report.target,
            report.inputs,
            rate,
            100.0 * report.accepted as f64 / report.inputs.max(1) as f64,
            report.slowest.as_secs_f64() * 1e3,
            report.findings.len()
        );
        for finding in &report.findings {
            match save(finding, &findings_dir) {
                Ok(path) => eprintln!(
                    "  finding at input {} ({}): {}",
                    finding.index,
                    path.display(),
                    finding.what
                ),
                Err(e) => eprintln!(
                    "  finding at input {}: {} (not saved: {e})",
                    finding.index, finding.what
                ),
            }
        }
        total += report.findings.len();
    }
    if total > 0 {
        eprintln!("kiln-fuzz: {total} finding(s)");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
