//! `kiln serve`: flags, environment variables and a TOML config file merged into one settings
//! value; then the model is loaded (behind a listening socket whose `/health` says 503 until it
//! is ready), the engine started and the gateway served until SIGINT/SIGTERM.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kiln_gateway::{Backend, Gateway, GatewayConfig};
use kiln_runtime::{DType, DeviceKind, LoadOptions, Model};
use kiln_scheduler::{Engine, EngineConfig};

use crate::{load_tokenizer, resolve_model};

/// Every setting: its flag (without `--`), whether it repeats, whether it is a switch, and help.
/// The environment variable is `KILN_` + the flag upper-cased with `_`; the config file key is
/// the flag with `_` (e.g. `max_batched_tokens = 1024`).
const SETTINGS: &[(&str, Kind, &str)] = &[
    (
        "model",
        Kind::Value,
        "GGUF file or Hugging Face directory (default: the default model)",
    ),
    (
        "served-model-name",
        Kind::List,
        "name(s) clients use; the first is the default",
    ),
    (
        "host",
        Kind::Value,
        "address to listen on (default 127.0.0.1)",
    ),
    ("port", Kind::Value, "port (default 8000)"),
    (
        "api-key",
        Kind::List,
        "accepted Bearer key(s); env: comma-separated",
    ),
    ("device", Kind::Value, "cpu | wgpu (default cpu)"),
    ("dtype", Kind::Value, "f32 | f16 (default f32)"),
    (
        "max-batched-tokens",
        Kind::Value,
        "tokens per engine step (default 512)",
    ),
    (
        "max-running",
        Kind::Value,
        "sequences running at once (default 64)",
    ),
    (
        "max-queue",
        Kind::Value,
        "requests waiting before 429 (default 256)",
    ),
    (
        "kv-cache-memory",
        Kind::Value,
        "KV cache size, e.g. 1GiB or 512MiB (default 1GiB)",
    ),
    (
        "block-size",
        Kind::Value,
        "positions per KV block (default 16)",
    ),
    (
        "max-model-len",
        Kind::Value,
        "context length served (prompt + output), at most the model's (default: the model's)",
    ),
    (
        "max-n",
        Kind::Value,
        "most choices per request (default 16)",
    ),
    (
        "max-body-bytes",
        Kind::Value,
        "request body limit (default 32MiB)",
    ),
    (
        "request-timeout",
        Kind::Value,
        "seconds a non-streaming request may take (default 600)",
    ),
    (
        "shutdown-grace",
        Kind::Value,
        "seconds to drain in-flight requests on SIGTERM (default 30)",
    ),
    (
        "metrics-require-key",
        Kind::Switch,
        "put /metrics behind the API key",
    ),
    (
        "no-prefix-caching",
        Kind::Switch,
        "do not share KV blocks between requests",
    ),
    (
        "config",
        Kind::Value,
        "TOML file with any of these settings",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Value,
    List,
    Switch,
}

pub(crate) fn usage() -> String {
    let mut s = String::from(
        "    serve       Serve the OpenAI-compatible API. Every flag is also an environment \
         variable\n                (KILN_MODEL, KILN_API_KEY, …) and a key in --config FILE \
         (TOML).\n",
    );
    for (name, kind, help) in SETTINGS {
        let flag = match kind {
            Kind::Switch => format!("--{name}"),
            _ => format!("--{name} V"),
        };
        s.push_str(&format!("                  {flag:<26} {help}\n"));
    }
    s
}

/// Settings from all sources: flag beats environment beats config file.
#[derive(Debug, Default)]
struct Settings {
    values: BTreeMap<&'static str, Vec<String>>,
}

impl Settings {
    fn gather(args: &[String]) -> Result<Self> {
        let mut flags: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(stripped) = arg.strip_prefix("--") else {
                bail!("unexpected argument {arg:?}; run `kiln help`");
            };
            let (name, inline) = match stripped.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (stripped, None),
            };
            let Some(&(key, kind, _)) = SETTINGS.iter().find(|(n, _, _)| *n == name) else {
                bail!("unknown flag --{name}; run `kiln help`");
            };
            let value = match (kind, inline) {
                (Kind::Switch, None) => "true".to_string(),
                (_, Some(v)) => v,
                (_, None) => it
                    .next()
                    .cloned()
                    .with_context(|| format!("--{name} needs a value"))?,
            };
            let entry = flags.entry(key).or_default();
            if kind != Kind::List {
                entry.clear();
            }
            entry.push(value);
        }
        let mut values = BTreeMap::new();
        let env =
            |key: &str| std::env::var(format!("KILN_{}", key.to_uppercase().replace('-', "_")));
        let config_path = flags
            .get("config")
            .and_then(|v| v.last().cloned())
            .or_else(|| env("config").ok());
        let file = match config_path {
            Some(p) => read_config(Path::new(&p))?,
            None => BTreeMap::new(),
        };
        for &(key, kind, _) in SETTINGS {
            if let Some(v) = flags.remove(key) {
                values.insert(key, v);
            } else if let Ok(v) = env(key) {
                let v = if kind == Kind::List {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                } else {
                    vec![v]
                };
                values.insert(key, v);
            } else if let Some(v) = file.get(&key.replace('-', "_")) {
                values.insert(key, v.clone());
            }
        }
        Ok(Self { values })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    fn list(&self, key: &str) -> Vec<String> {
        self.values.get(key).cloned().unwrap_or_default()
    }

    fn parse<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| anyhow::anyhow!("--{key} {v:?}: {e}")),
        }
    }

    fn switch(&self, key: &str) -> Result<bool> {
        match self.get(key) {
            None => Ok(false),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off" | "") => Ok(false),
            Some(v) => bail!("--{key} is a switch; {v:?} is not true or false"),
        }
    }

    fn bytes(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_bytes(v).with_context(|| format!("--{key} {v:?}")),
        }
    }
}

/// A TOML file's keys as strings (arrays for repeated settings).
fn read_config(path: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        if !SETTINGS.iter().any(|(n, _, _)| *n == flag) || flag == "config" {
            bail!("{}: unknown setting `{key}`", path.display());
        }
        let scalar = |v: &toml::Value| -> Result<String> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => bail!(
                    "{}: `{key}` cannot be a {}",
                    path.display(),
                    other.type_str()
                ),
            })
        };
        let values = match &value {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<_>>()?,
            v => vec![scalar(v)?],
        };
        out.insert(flag, values);
    }
    Ok(out)
}

/// `1GiB`, `512MiB`, `64mb`, `1000000` → bytes.
fn parse_bytes(s: &str) -> Result<usize> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().context("not a size")?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => bail!("unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB, GB)"),
    };
    let bytes = num * mult;
    if !(bytes >= 1.0 && bytes.is_finite()) {
        bail!("must be a positive size");
    }
    Ok(bytes as usize)
}

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

pub(crate) fn run(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("kiln serve [FLAGS]\n\n{}", usage());
        return Ok(());
    }
    let s = Settings::gather(args)?;
    let path = resolve_model(s.get("model").map(PathBuf::from))?;
    let host: String = s.parse("host", "127.0.0.1".to_string())?;
    let port: u16 = s.parse("port", 8000)?;
    let device: DeviceKind = s
        .get("device")
        .unwrap_or("cpu")
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--device: {e}"))?;
    let dtype: DType = s
        .get("dtype")
        .unwrap_or("f32")
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--dtype: {e}"))?;
    let engine_config = EngineConfig {
        max_batched_tokens: s.parse("max-batched-tokens", 512)?,
        max_running: s.parse("max-running", 64)?,
        max_waiting: s.parse("max-queue", 256)?,
        max_n: s.parse("max-n", 16)?,
        prefix_caching: !s.switch("no-prefix-caching")?,
        max_model_len: s
            .get("max-model-len")
            .map(|v| {
                v.parse::<usize>()
                    .with_context(|| format!("--max-model-len {v:?}"))
            })
            .transpose()?,
    };
    if engine_config.max_model_len == Some(0) {
        bail!("--max-model-len must be at least 1");
    }
    if engine_config.max_batched_tokens == 0 || engine_config.max_running == 0 {
        bail!("--max-batched-tokens and --max-running must be at least 1");
    }
    let load = LoadOptions {
        device,
        dtype,
        block_size: s.parse("block-size", 16)?,
        kv_cache_bytes: s.bytes("kv-cache-memory", 1 << 30)?,
    };
    let mut names = s.list("served-model-name");
    if names.is_empty() {
        names.push(default_name(&path));
    }
    let api_keys: Vec<String> = s
        .list("api-key")
        .into_iter()
        .filter(|k| !k.is_empty())
        .collect();
    let limits = kiln_api_types::Limits {
        max_n: engine_config.max_n as u32,
        ..kiln_api_types::Limits::default()
    };
    let gateway_config = GatewayConfig {
        served_model_names: names.clone(),
        api_keys: api_keys.clone(),
        metrics_require_key: s.switch("metrics-require-key")?,
        max_body_bytes: s.bytes("max-body-bytes", 32 << 20)?,
        request_timeout: Duration::from_secs(s.parse("request-timeout", 600)?),
        limits,
        ..GatewayConfig::default()
    };
    let grace = Duration::from_secs(s.parse("shutdown-grace", 30)?);

    init_logging();
    if api_keys.is_empty() {
        tracing::warn!(
            "NO API KEY IS SET: anyone who can reach this port can use the model. \
             Pass --api-key KEY (or KILN_API_KEY) to require one."
        );
    }
    let tokenizer = Arc::new(load_tokenizer(&path)?);
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
        tracing::info!(
            "loaded {} in {:.1} s: {} KV blocks of {} positions",
            path.display(),
            started.elapsed().as_secs_f64(),
            model.num_blocks(),
            model.block_size()
        );
        let engine = Engine::start(model, tokenizer.clone(), engine_config, &registry)?;
        gateway.set_backend(Backend {
            engine: engine.handle(),
            tokenizer,
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
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("64mb").unwrap(), 64_000_000);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("12 parsecs").is_err());
    }

    #[test]
    fn names_drop_the_quantization_suffix() {
        assert_eq!(
            default_name(Path::new("/m/SmolLM2-135M-Instruct.Q4_1.gguf")),
            "SmolLM2-135M-Instruct"
        );
        assert_eq!(default_name(Path::new("/m/llama.gguf")), "llama");
    }

    #[test]
    fn flags_override_and_lists_repeat() {
        let args: Vec<String> = [
            "--port",
            "9000",
            "--api-key",
            "a",
            "--api-key=b",
            "--port",
            "9001",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let s = Settings::gather(&args).unwrap();
        assert_eq!(s.get("port"), Some("9001"));
        assert_eq!(s.list("api-key"), vec!["a", "b"]);
        assert!(Settings::gather(&["--nope".to_string()]).is_err());
        assert!(Settings::gather(&["--port".to_string()]).is_err());
    }
}
