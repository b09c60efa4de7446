//! Kiln's fuzzer, on the stable toolchain (no nightly, so no libFuzzer/`cargo fuzz`): each
//! target ([`targets`]) is fed its real seeds and mutants of them ([`mutate`]), and every input
//! is checked for panics, for a broken property, and for taking longer than a bound. A finding
//! is written to disk with the seed and index that reproduce it; `regressions/<target>/` holds
//! the findings that were fixed, replayed by the crate's tests.
//!
//! Mutation-based and unguided: no coverage feedback, so it relies on seeds and dictionaries
//! that already reach deep (real requests, real GGUF files and images, control-token strings).

pub mod mutate;
pub mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mutate::Rng;
use targets::Target;

/// How long one run goes, and what counts as too slow.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Stop after this long…
    pub time: Duration,
    /// …or this many inputs, whichever comes first.
    pub inputs: u64,
    /// One input taking longer is a finding (the parser's work must be bounded).
    pub per_input: Duration,
    pub seed: u64,
}

/// What went wrong with one input.
#[derive(Debug, Clone)]
pub struct Finding {
    pub target: &'static str,
    /// The input's index in the run (its reproduction: same seed, same index).
    pub index: u64,
    pub what: String,
    pub input: Vec<u8>,
}

/// What a target's run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: &'static str,
    pub inputs: u64,
    /// Inputs that got past the target's first gate (they parsed).
    pub accepted: u64,
    pub elapsed: Duration,
    /// The slowest input's time.
    pub slowest: Duration,
    pub findings: Vec<Finding>,
}

/// The input being checked now, for a watchdog: its index, and when it started (milliseconds
/// since [`epoch`]; 0 when none is running).
pub static CURRENT_INDEX: AtomicU64 = AtomicU64::new(0);
pub static CURRENT_SINCE_MS: AtomicU64 = AtomicU64::new(0);

/// The clock [`CURRENT_SINCE_MS`] counts from.
pub fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Checks one input: a panic, a broken property or a slow answer is a finding. Returns the
/// time it took, whether it got past the target's first gate, and the finding if any.
pub fn check_one(
    target: &Target,
    input: &[u8],
    per_input: Duration,
) -> (Duration, bool, Option<String>) {
    let start = Instant::now();
    let since = start.duration_since(epoch()).as_millis() as u64;
    CURRENT_SINCE_MS.store(since.max(1), Ordering::SeqCst);
    let outcome = catch_unwind(AssertUnwindSafe(|| (target.check)(input)));
    CURRENT_SINCE_MS.store(0, Ordering::SeqCst);
    let took = start.elapsed();
    let accepted = matches!(outcome, Ok(Ok(true)));
    let what = match outcome {
        Err(panic) => Some(format!("panic: {}", panic_message(&panic))),
        Ok(Err(property)) => Some(format!("property: {property}")),
        Ok(Ok(_)) if took > per_input => Some(format!(
            "slow: {} ms (bound {} ms)",
            took.as_millis(),
            per_input.as_millis()
        )),
        Ok(Ok(_)) => None,
    };
    (took, accepted, what)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(not a string)".to_string()
    }
}

/// Runs `target` within `budget`: its seeds first, then mutants. Stops early after 10
/// findings (one bug tends to repeat).
pub fn run(target: &Target, budget: &Budget) -> Report {
    let mut rng = Rng::new(budget.seed ^ fnv(target.name.as_bytes()));
    let start = Instant::now();
    let mut report = Report {
        target: target.name,
        inputs: 0,
        accepted: 0,
        elapsed: Duration::ZERO,
        slowest: Duration::ZERO,
        findings: Vec::new(),
    };
    // A corpus that grows with inputs that got past the first gate (every fourth such mutant,
    // up to 512), so mutation wanders away from the seeds without losing its footing.
    let mut corpus: Vec<Vec<u8>> = target.seeds.clone();
    while report.inputs < budget.inputs && start.elapsed() < budget.time {
        let index = report.inputs;
        let input = if (index as usize) < target.seeds.len() {
            target.seeds[index as usize].clone()
        } else {
            let base = &corpus[rng.below(corpus.len())];
            let other = &corpus[rng.below(corpus.len())];
            target.mutator.mutate(&mut rng, base, other)
        };
        CURRENT_INDEX.store(index, Ordering::SeqCst);
        let (took, accepted, what) = check_one(target, &input, budget.per_input);
        report.inputs += 1;
        report.accepted += u64::from(accepted);
        report.slowest = report.slowest.max(took);
        match what {
            Some(what) => {
                report.findings.push(Finding {
                    target: target.name,
                    index,
                    what,
                    input,
                });
                if report.findings.len() >= 10 {
                    break;
                }
            }
            None if accepted && index.is_multiple_of(4) && corpus.len() < 512 => corpus.push(input),
            None => {}
        }
    }
    report.elapsed = start.elapsed();
    report
}

/// FNV-1a, for names and file names.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Writes a finding under `dir/<target>/`; returns its path.
pub fn save(finding: &Finding, dir: &Path) -> std::io::Result<PathBuf> {
    let dir = dir.join(finding.target);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{:016x}.bin", fnv(&finding.input)));
    std::fs::write(&path, &finding.input)?;
    std::fs::write(path.with_extension("txt"), format!("{}\n", finding.what))?;
    Ok(path)
}

/// The fixed findings of `target`, replayed by the tests: `regressions/<target>/*.bin`.
pub fn regressions(target: &str) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target);
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    paths.sort();
    for path in paths {
        let bytes = std::fs::read(&path)?;
        out.push((path, bytes));
    }
    Ok(out)
}
