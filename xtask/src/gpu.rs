//! `cargo xtask gpu-bundle`: what `scripts/gpu-bench.sh` runs on a lent GPU machine, built here
//! (nothing can be fetched or built there): `kiln`, the runtime's integration and unit tests and
//! the runtime bench, all with `--features wgpu`, stripped and xz-compressed into `gpu-bundle/`
//! (ignored; what a device run may carry is 64 MiB with the tree). `--dev` takes the dev
//! profile (what the tests here already built: quick, for `--dry-run`); `--lean` leaves out the
//! runtime's unit tests (the GPU kernel tests) when the bundle and the tree would pass 64 MiB;
//! `--dry-run` then runs the script here on Mesa's software Vulkan with small shapes.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::server::cargo_executable;

pub(crate) fn run(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let mut dev = false;
    let mut dry_run = false;
    let mut lean = false;
    for &arg in args {
        match arg {
            "--dev" => dev = true,
            "--dry-run" => dry_run = true,
            "--lean" => lean = true,
            other => bail!("gpu-bundle: unknown argument {other:?}"),
        }
    }
    let release: &[&str] = if dev { &[] } else { &["--release"] };
    let with = |base: &[&'static str]| -> Vec<&str> {
        base.iter()
            .copied()
            .chain(release.iter().copied())
            .collect()
    };
    let builds = [
        (
            "kiln",
            with(&[
                "build",
                "-p",
                "kiln-server",
                "--features",
                "kiln-server/wgpu",
            ]),
            "kiln",
            Some(false),
        ),
        (
            "runtime-it",
            with(&[
                "test",
                "-p",
                "kiln-runtime",
                "--features",
                "wgpu",
                "--test",
                "it",
                "--no-run",
            ]),
            "it",
            Some(true),
        ),
        (
            "runtime-lib",
            with(&[
                "test",
                "-p",
                "kiln-runtime",
                "--features",
                "wgpu",
                "--lib",
                "--no-run",
            ]),
            "kiln_runtime",
            Some(true),
        ),
        (
            "runtime-bench",
            [
                &[
                    "bench",
                    "-p",
                    "kiln-benches",
                    "--features",
                    "wgpu",
                    "--bench",
                    "runtime",
                ][..],
                &["--no-run"],
                if dev { &["--profile", "dev"][..] } else { &[] },
            ]
            .concat(),
            "runtime",
            None,
        ),
    ];
    let bundle = root.join("gpu-bundle");
    // A bundle made before is replaced whole (a lean one has no unit tests).
    let _ = std::fs::remove_dir_all(&bundle);
    std::fs::create_dir_all(&bundle)?;
    let mut total = 0;
    for (name, args, target, test) in &builds {
        if lean && *name == "runtime-lib" {
            continue;
        }
        let path = cargo_executable(root, args, target, *test)?;
        let stripped = bundle.join(name);
        run_tool(Command::new("strip").arg("-o").arg(&stripped).arg(&path))?;
        let xz = std::fs::File::create(bundle.join(format!("{name}.xz")))?;
        let status = Command::new("xz")
            .args(["-T0", "-9", "-c"])
            .arg(&stripped)
            .stdout(xz)
            .status()
            .context("running xz")?;
        if !status.success() {
            bail!("xz {name} failed ({status})");
        }
        std::fs::remove_file(&stripped)?;
        let size = std::fs::metadata(bundle.join(format!("{name}.xz")))?.len();
        total += size;
        eprintln!("gpu-bundle: {name}.xz {:.1} MiB", mib(size));
    }
    let tree = tree_bytes(root)?;
    let over = match (total + tree > 64 << 20, lean) {
        (false, _) => "",
        (true, false) => ": too much, try --lean",
        (true, true) => ": too much even lean",
    };
    eprintln!(
        "gpu-bundle: {:.1} MiB with the tree's {:.1} MiB (a device run carries at most 64 MiB{over})",
        mib(total + tree),
        mib(tree),
    );
    let manifest = format!(
        "commit {} ({} profile), built {}\n",
        crate::report::commit(root),
        if dev { "dev" } else { "release" },
        crate::report::date()
    );
    std::fs::write(bundle.join("MANIFEST"), &manifest)?;
    eprint!("gpu-bundle: {} {manifest}", bundle.display());
    if dry_run {
        let out = root.join("target").join("gpu-dry-run");
        let status = Command::new("bash")
            .args(["scripts/gpu-bench.sh", "--dry-run"])
            .env("OUT", &out)
            .current_dir(root)
            .status()
            .context("running scripts/gpu-bench.sh")?;
        if !status.success() {
            bail!(
                "scripts/gpu-bench.sh --dry-run failed ({status}); see {}",
                out.display()
            );
        }
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// Bytes of what travels with a device run besides what it carries: tracked files and untracked
/// ones git does not ignore.
fn tree_bytes(root: &Path) -> anyhow::Result<u64> {
    let output = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output()
        .context("running git ls-files")?;
    Ok(output
        .stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .filter_map(|p| std::fs::metadata(root.join(String::from_utf8_lossy(p).as_ref())).ok())
        .map(|m| m.len())
        .sum())
}

fn run_tool(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}
