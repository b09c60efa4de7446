//! `kiln serve`: given its `ServeConfig` (flags, environment and config file, see `config.rs`),
//! each model is loaded in turn (behind a listening socket whose `/health` says 503 until all
//! are ready), its engine started and the gateway served until SIGINT/SIGTERM.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kiln_gateway::{Backend, Gateway, ServedModel};
use kiln_runtime::{KvCacheSize, Model};
use kiln_scheduler::{Engine, EngineConfig};

use crate::config::{ModelPlan, ServeConfig};
use crate::{load_tokenizer, resolve_model};

/// The name clients see for a model file: the default model's own name, else the file stem
/// without a quantization suffix, or the directory name.
fn default_name(path: &Path) -> String {
    if path.is_dir() {
        return path
            .file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    }
    let stem = path
        .file_stem()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    // `SmolLM2-135M-Instruct.Q4_1` → `SmolLM2-135M-Instruct`.
    match stem.rsplit_once('.') {
        Some((base, quant))
            if quant
                .chars()
                .next()
                .is_some_and(|c| c == 'Q' || c == 'F' || c == 'q' || c == 'f') =>
        {
            base.to_string()
        }
        _ => stem,
    }
}

/// A model on its way to being served: where it is, what it is called, how to load it.
struct Pending {
    path: PathBuf,
    plan: ModelPlan,
    served: ServedModel,
    tokenizer: Arc<kiln_tokenizer::Tokenizer>,
}

pub(crate) fn run(config: ServeConfig) -> Result<()> {
    crate::alloc::tune();
    let mut pending = Vec::new();
    for plan in config.plans()? {
        let path = resolve_model(plan.path.clone())?;
        let names = if plan.names.is_empty() {
            vec![default_name(&path)]
        } else {
            plan.names.clone()
        };
        // Tokenizers (and templates) first: a bad file fails before anything is loaded.
        let tokenizer = Arc::new(load_tokenizer(&path, plan.chat_template.as_deref())?);
        pending.push(Pending {
            path,
            served: ServedModel { names },
            plan,
            tokenizer,
        });
    }
    check_fixed_kv_budgets(&pending)?;
    let api_keys = config.api_keys();
    let mut gateway_config =
        config.gateway_config(pending.iter().map(|p| p.served.clone()).collect())?;
    gateway_config.media = Arc::new(config.media_config()?);
    let grace = config.shutdown_grace();
    let ServeConfig { host, port, .. } = config;

    init_logging();
    if api_keys.is_empty() {
        tracing::warn!(
            "NO API KEY IS SET: anyone who can reach this port can use the model. \
             Pass --api-key KEY (or KILN_API_KEY) to require one."
        );
    }
    // A cap the kernels cannot read is a mistake to report, not to run past.
    kiln_runtime::kernels::Isa::requested().map_err(anyhow::Error::msg)?;
    let registry = prometheus::Registry::new();
    let gateway = Gateway::new(gateway_config, registry.clone())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .with_context(|| format!("listening on {host}:{port}"))?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(gateway.clone().serve(
            listener,
            async move {
                let mut rx = stop_rx;
                let _ = rx.wait_for(|stop| *stop).await;
            },
            grace,
        ));
        let count = pending.len();
        tracing::info!(
            "listening on http://{addr} (loading {count} model{}; /health is 503 until ready)",
            if count == 1 { "" } else { "s" }
        );

        // One after the other, each served as soon as it is ready.
        let mut engines = Vec::with_capacity(count);
        let mut kv_total = 0usize;
        for (index, p) in pending.iter().enumerate() {
            let model = load(p, index, count).await?;
            if p.plan.load.device == kiln_runtime::DeviceKind::Cpu {
                kv_total += model.kv_cache_bytes();
                check_kv_total(kv_total, index + 1)?;
            }
            let vision = crate::vision(&model, &p.path, p.plan.load.mmproj.as_deref())?;
            if vision.is_some() {
                tracing::info!("`{}` takes images", p.served.id());
            }
            let engine_config = EngineConfig {
                model_name: p.served.id().to_string(),
                ..p.plan.engine.clone()
            };
            let engine = Engine::start(model, p.tokenizer.clone(), engine_config, &registry)?;
            gateway.set_backend(
                index,
                Backend {
                    engine: engine.handle(),
                    tokenizer: p.tokenizer.clone(),
                    vision,
                    tool_syntax: p.plan.tool_call_format.unwrap_or_else(|| {
                        kiln_gateway::ToolSyntax::detect(p.tokenizer.chat_template())
                    }),
                },
            );
            engines.push(engine);
        }
        print_banner(addr, &pending, !api_keys.is_empty());

        shutdown_signal().await;
        tracing::info!("shutting down: no new requests; draining for up to {grace:?}");
        for engine in &engines {
            engine.handle().begin_shutdown(grace);
        }
        let _ = stop_tx.send(true);
        match server.await {
            Ok(r) => r?,
            Err(e) => bail!("the server task failed: {e}"),
        }
        tokio::task::spawn_blocking(move || {
            for engine in engines {
                engine.shutdown(Duration::ZERO);
            }
        })
        .await
        .ok();
        tracing::info!("stopped");
        Ok(())
    })
}

/// Loads model `index` of `count`, with a progress bar on a terminal and a line when done.
async fn load(p: &Pending, index: usize, count: usize) -> Result<Model> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let name = p.served.id().to_string();
    let path = p.path.clone();
    let options = p.plan.load.clone();
    tracing::info!(
        "loading model {}/{count} `{name}` from {}",
        index + 1,
        path.display()
    );
    let model = tokio::task::spawn_blocking(move || {
        Model::load_with_progress(&path, &options, &mut |progress| {
            if tty {
                let width = 30;
                let filled = progress.done * width / progress.total.max(1);
                eprint!(
                    "\rloading {name} [{}{}] {}/{}",
                    "#".repeat(filled),
                    " ".repeat(width - filled),
                    progress.done,
                    progress.total
                );
            }
        })
    })
    .await
    .context("the loading task failed")?
    .with_context(|| format!("loading {}", p.path.display()))?;
    if tty {
        eprintln!();
    }
    let groups = model.kv_groups();
    let sliding = groups.windows.iter().filter(|w| w.is_some()).count();
    tracing::info!(
        "loaded `{}` ({}) in {:.1} s: {} KV pages of {} positions ({} MiB of {}; {} group{} of \
         {} layer{}, {sliding} sliding); CPU kernels: {}",
        p.served.id(),
        p.path.display(),
        started.elapsed().as_secs_f64(),
        model.num_blocks(),
        model.block_size(),
        model.kv_cache_bytes() >> 20,
        crate::config::dtype_name(model.kv_dtype()),
        groups.windows.len(),
        if groups.windows.len() == 1 { "" } else { "s" },
        groups.size,
        if groups.size == 1 { "" } else { "s" },
        kiln_runtime::kernels::Isa::active().kind().name()
    );
    Ok(model)
}

/// The KV budgets given in bytes, added up before anything loads: more than the memory there
/// is fails now, not with an out-of-memory kill once the caches fill.
fn check_fixed_kv_budgets(pending: &[Pending]) -> Result<()> {
    let fixed: usize = pending
        .iter()
        .filter(|p| p.plan.load.device == kiln_runtime::DeviceKind::Cpu)
        .filter_map(|p| match p.plan.load.kv_cache {
            KvCacheSize::Bytes(bytes) => Some(bytes),
            _ => None,
        })
        .sum();
    if fixed == 0 {
        return Ok(());
    }
    check_kv_total(fixed, pending.len())
}

/// The KV caches of the first `models` models (`total` bytes, committed as positions are
/// written) must fit in the memory still available once their weights are loaded.
fn check_kv_total(total: usize, models: usize) -> Result<()> {
    let Some(available) = kiln_runtime::memory_available() else {
        return Ok(());
    };
    if total > available {
        bail!(
            "the KV cache{} of {models} model{} would take {} MiB when full, but only {} MiB of \
             memory is available: lower kv_cache_memory or kv_cache_tokens (per model in \
             [[models]] of --config), or serve fewer models",
            if models == 1 { "" } else { "s" },
            if models == 1 { "" } else { "s" },
            total >> 20,
            available >> 20
        );
    }
    Ok(())
}

/// What a person starting the server wants to see: where the API and the playground are, the
/// models, and a request to paste.
fn print_banner(addr: std::net::SocketAddr, pending: &[Pending], keyed: bool) {
    let shown = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    let auth = if keyed {
        " -H \"Authorization: Bearer $KILN_API_KEY\""
    } else {
        ""
    };
    let models: Vec<&str> = pending.iter().map(|p| p.served.id()).collect();
    let first = models[0];
    eprintln!(
        "\nKiln is serving {} at http://{shown}/v1\nPlayground: http://{shown}/\n\nTry it:\n  curl \
         http://{shown}/v1/chat/completions{auth} -H \"Content-Type: application/json\" \\\n    -d \
         '{{\"model\": \"{first}\", \"messages\": [{{\"role\": \"user\", \"content\": \"What is the \
         capital of France?\"}}]}}'\n",
        models
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = ctrl_c => {},
            () = term => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_drop_the_quantization_suffix() {
        assert_eq!(
            default_name(Path::new("/m/SmolLM2-135M-Instruct.Q4_1.gguf")),
            "SmolLM2-135M-Instruct"
        );
        assert_eq!(default_name(Path::new("/m/llama.gguf")), "llama");
    }
}
