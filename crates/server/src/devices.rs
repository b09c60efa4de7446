//! `kiln devices`: what this machine offers `--device`: the CPU (and the kernel path it runs)
//! and every GPU adapter wgpu sees, with the one `--device wgpu` starts and its memory.

use anyhow::Result;
use clap::Args;
use serde_json::json;

/// `kiln devices`'s flags.
#[derive(Debug, Args)]
pub(crate) struct DevicesArgs {
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: DevicesArgs) -> Result<()> {
    let isa = kiln_runtime::kernels::Isa::active().kind().name();
    // rayon's pool, which the kernels run on, is this size.
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let adapters = kiln_runtime::gpu_adapters();
    let gpu = if cfg!(feature = "wgpu") {
        kiln_runtime::gpu_device()
    } else {
        Err(kiln_runtime::LoadError::Unsupported(
            "this build has no wgpu support (build with `--features wgpu`)".into(),
        ))
    };
    if args.json {
        let value = json!({
            "cpu": {"isa": isa, "threads": threads},
            "wgpu_adapters": adapters.iter().map(|a| json!({
                "name": a.name, "kind": a.kind, "backend": a.backend, "driver": a.driver,
            })).collect::<Vec<_>>(),
            "wgpu": match &gpu {
                Ok(d) => json!({"name": d.name, "memory_bytes": d.memory}),
                Err(e) => json!({"error": e.to_string()}),
            },
        });
        println!("{value}");
        return Ok(());
    }
    println!("cpu   kernels {isa}, {threads} threads (--device cpu, the default)");
    if adapters.is_empty() {
        println!("wgpu  no adapters");
    }
    for (i, a) in adapters.iter().enumerate() {
        let driver = if a.driver.is_empty() {
            String::new()
        } else {
            format!(", {}", a.driver)
        };
        println!(
            "wgpu  adapter {i}: {} ({}, {}{driver})",
            a.name, a.kind, a.backend
        );
    }
    match gpu {
        Ok(d) => {
            let memory = d.memory.map_or_else(
                || "memory not reported".to_string(),
                |m| format!("{:.1} GiB", m as f64 / f64::from(1u32 << 30)),
            );
            println!("--device wgpu runs on: {} ({memory})", d.name);
        }
        Err(e) => println!("--device wgpu: {e}"),
    }
    Ok(())
}
