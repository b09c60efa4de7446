//! kiln-fuzz's tests, one binary: every target runs its seeds and a short burst of mutants
//! without a finding (CI's short fuzz run), and every saved regression replays clean.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kiln_fuzz::{Budget, check_one, regressions, run, targets};

#[test]
fn every_target_survives_a_short_run() {
    for name in targets::NAMES {
        let target = targets::target(name).unwrap();
        let budget = Budget {
            time: Duration::from_secs(20),
            inputs: 3_000,
            per_input: Duration::from_secs(5),
            seed: 1,
        };
        let report = run(&target, &budget);
        assert!(report.inputs >= target.seeds.len() as u64, "{name}");
        assert!(
            report.findings.is_empty(),
            "{name}: {:?}",
            report
                .findings
                .iter()
                .map(|f| (f.index, &f.what, String::from_utf8_lossy(&f.input)))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn saved_regressions_replay_clean() {
    for name in targets::NAMES {
        let target = targets::target(name).unwrap();
        for (path, input) in regressions(name).unwrap() {
            let (_, _, what) = check_one(&target, &input, Duration::from_secs(5));
            assert!(what.is_none(), "{}: {what:?}", path.display());
        }
    }
}

#[test]
fn a_broken_property_and_a_panic_are_findings() {
    // The harness itself: a check that fails on some inputs is reported, not swallowed.
    let mut target = targets::target("tool_calls").unwrap();
    target.check = Box::new(|input| {
        if input.first() == Some(&b'L') {
            panic!("boom");
        }
        if input.contains(&b'[') {
            return Err("a bracket".into());
        }
        Ok(true)
    });
    let budget = Budget {
        time: Duration::from_secs(5),
        inputs: 3,
        per_input: Duration::from_secs(5),
        seed: 1,
    };
    let report = run(&target, &budget);
    let whats: Vec<&str> = report.findings.iter().map(|f| f.what.as_str()).collect();
    assert_eq!(whats, ["panic: boom", "property: a bracket"]);
}
