//! `kiln serve`: given its `ServeConfig` (flags, environment and config file, see `config.rs`),
//! the model is loaded (behind a listening socket whose `/health` says 503 until it
//! is ready), the engine started and the gateway served until SIGINT/SIGTERM.

use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kiln_gateway::{Backend, Gateway};
use kiln_runtime::Model;
use kiln_scheduler::Engine;

use crate::config::ServeConfig;
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

pub(crate) fn run(config: ServeConfig) -> Result<()> {
    let path = resolve_model(config.model.clone())?;
    let engine_config = config.engine_config();
    let load = config.load_options();
    let mut names = config.served_model_name.clone();
    if names.is_empty() {
        names.push(default_name(&path));
    }
    let api_keys = config.api_keys();
    let mut gateway_config = config.gateway_config(names.clone());
    gateway_config.media = Arc::new(config.media_config()?);
    let grace = config.shutdown_grace();
    let ServeConfig {
        host,
        port,
        chat_template,
        mmproj,
        ..
    } = config;

    init_logging();
    if api_keys.is_empty() {
        tracing::warn!(
            "NO API KEY IS SET: anyone who can reach this port can use the model. \
             Pass --api-key KEY (or KILN_API_KEY) to require one."
        );
    }
    // A cap the kernels cannot read is a mistake to report, not to run past.
    kiln_runtime::kernels::Isa::requested().map_err(anyhow::Error::msg)?;
    let tokenizer = Arc::new(load_tokenizer(&path, chat_template.as_deref())?);
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
        tracing::info!("listening on http://{addr} (loading the model; /health is 503 until ready)");

        let started = Instant::now();
        let tty = std::io::stderr().is_terminal();
        let model_path = path.clone();
        let model = tokio::task::spawn_blocking(move || {
            Model::load_with_progress(&model_path, &load, &mut |p| {
                if tty {
                    let width = 30;
                    let filled = p.done * width / p.total.max(1);
                    eprint!(
                        "\rloading {} [{}{}] {}/{}",
                        model_path.display(),
                        "#".repeat(filled),
                        " ".repeat(width - filled),
                        p.done,
                        p.total
                    );
                }
            })
        })
        .await
        .context("the loading task failed")?
        .with_context(|| format!("loading {}", path.display()))?;
        if tty {
            eprintln!();
        }
        let groups = model.kv_groups();
        let sliding = groups.windows.iter().filter(|w| w.is_some()).count();
        tracing::info!(
            "loaded {} in {:.1} s: {} KV pages of {} positions ({} MiB of {}; {} group{} of {} \
             layer{}, {sliding} sliding); CPU kernels: {}",
            path.display(),
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
        let vision = crate::vision(&model, &path, mmproj.as_deref())?;
        if vision.is_some() {
            tracing::info!("the model takes images");
        }
        let engine = Engine::start(model, tokenizer.clone(), engine_config, &registry)?;
        gateway.set_backend(Backend {
            engine: engine.handle(),
            tokenizer,
            vision,
        });
        let shown = if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        };
        let auth = if api_keys.is_empty() {
            String::new()
        } else {
            " -H \"Authorization: Bearer $KILN_API_KEY\"".to_string()
        };
        eprintln!(
            "\nKiln is serving `{}` at http://{shown}/v1\n\nTry it:\n  curl http://{shown}/v1/chat/completions{auth} -H \"Content-Type: application/json\" \\\n    -d '{{\"model\": \"{}\", \"messages\": [{{\"role\": \"user\", \"content\": \"What is the capital of France?\"}}]}}'\n",
            names[0], names[0]
        );

        shutdown_signal().await;
        tracing::info!("shutting down: no new requests; draining for up to {grace:?}");
        let engine_handle = engine.handle();
        engine_handle.begin_shutdown(grace);
        let _ = stop_tx.send(true);
        match server.await {
            Ok(r) => r?,
            Err(e) => bail!("the server task failed: {e}"),
        }
        tokio::task::spawn_blocking(move || engine.shutdown(Duration::ZERO))
            .await
            .ok();
        tracing::info!("stopped");
        Ok(())
    })
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
