//! What every benchmark report says about where it ran, and how a report replaces its own
//! section of docs/perf.md (between its markers) without touching the rest.

use std::path::Path;
use std::process::Command;

/// Replaces the section between `begin` and `end` of `perf` with `table`, or appends one.
pub(crate) fn splice(perf: &str, begin: &str, end: &str, table: &str) -> String {
    let section = format!("{begin}\n{table}{end}\n");
    match (perf.find(begin), perf.find(end)) {
        (Some(b), Some(e)) if e > b => {
            let after = &perf[e + end.len()..];
            format!(
                "{}{section}{}",
                &perf[..b],
                after.strip_prefix('\n').unwrap_or(after)
            )
        }
        _ => format!(
            "{}\n{section}",
            perf.trim_end_matches('\n').to_owned() + "\n"
        ),
    }
}

/// The CPU model, cores and memory of this machine.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / (1 << 20) as f64);
    let isa = if cpuinfo.contains(" avx512f") {
        "AVX-512"
    } else if cpuinfo.contains(" avx2") {
        "AVX2"
    } else {
        "no AVX2"
    };
    format!("{model} ({isa}), {cores} cores, {mem_gib:.0} GiB")
}

/// The short commit, marked when the tree has uncommitted changes.
pub(crate) fn commit(root: &Path) -> String {
    let dirty = git(root, &["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    git(root, &["rev-parse", "--short", "HEAD"]).unwrap_or_default()
        + if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        }
}

/// Now, in UTC, to the minute.
pub(crate) fn date() -> String {
    command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default()
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(root)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_replaces_its_own_section_only() {
        let (b, e) = ("<!-- x:begin -->", "<!-- x:end -->");
        let doc = "# Perf\n\nbefore\n";
        let once = splice(doc, b, e, "T1\n");
        assert!(once.starts_with("# Perf\n\nbefore\n\n<!-- x:begin -->\nT1\n"));
        let twice = splice(&(once.clone() + "\nafter\n"), b, e, "T2\n");
        assert!(twice.contains("T2\n<!-- x:end -->"));
        assert!(!twice.contains("T1"));
        assert!(twice.starts_with("# Perf\n\nbefore\n"));
        assert!(twice.ends_with("after\n"));
    }
}
