//! `kiln serve`'s settings: one `ServeConfig` that flags, `KILN_*` environment variables and a
//! TOML file (`--config`) fill — a flag beats the environment, which beats the file, which beats
//! the default — and whose defaults are read from the crates that own each setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, Command, FromArgMatches as _};
use kiln_api_types::Limits;
use kiln_gateway::fetch::MediaPolicy;
use kiln_gateway::{GatewayConfig, MediaConfig, ServedModel};
use kiln_runtime::{DType, DeviceKind, KvCacheSize, LoadOptions};
use kiln_scheduler::EngineConfig;

/// Seconds to drain in-flight requests on SIGINT/SIGTERM. The server owns this default: the
/// gateway takes the grace period per call and has no setting of its own for it.
const SHUTDOWN_GRACE_SECS: u64 = 30;

/// Everything `kiln serve` is told. The flag `--foo-bar` is also the environment variable
/// `KILN_FOO_BAR` and the config-file key `foo_bar` (tested below, so the three never drift).
#[derive(Debug, Clone, Args)]
pub(crate) struct ServeConfig {
    /// GGUF file or Hugging Face directory, optionally named (`smollm2=/m/a.gguf`); repeat to
    /// serve several models, the first being the default (per-model settings: `[[models]]` in
    /// --config) [default: the default model]
    #[arg(long, env = "KILN_MODEL", value_name = "[NAME=]PATH", value_parser = model_arg)]
    pub(crate) model: Vec<ModelArg>,

    /// llama.cpp's mmproj GGUF: the vision tower of a GGUF model (SmolVLM, Pixtral); for the
    /// first model
    #[arg(long, env = "KILN_MMPROJ", value_name = "FILE")]
    pub(crate) mmproj: Option<PathBuf>,

    /// Jinja chat template file for /v1/chat/completions, replacing the first model's own (a
    /// base model has none) [default: the model's]
    #[arg(long, env = "KILN_CHAT_TEMPLATE", value_name = "FILE")]
    pub(crate) chat_template: Option<PathBuf>,

    /// How the first model writes tool calls: hermes (`<tool_call>` tags, Qwen 2.5),
    /// llama3_json or mistral (`[TOOL_CALLS]`); applies where the chat template renders tools
    /// (Kiln's generic tools prompt, for templates without, uses hermes) [default: detected
    /// from the chat template]
    #[arg(long, env = "KILN_TOOL_CALL_FORMAT", value_name = "FORMAT")]
    pub(crate) tool_call_format: Option<kiln_gateway::ToolSyntax>,

    /// Name clients use for the first model (repeat for aliases; the first is its id)
    /// [default: NAME of --model NAME=PATH, else the file's]
    #[arg(long, env = "KILN_SERVED_MODEL_NAME", value_name = "NAME")]
    pub(crate) served_model_name: Vec<String>,

    /// `/v1/ai/ID/…` serves the model MODEL (repeat for more; in the file also
    /// `deployments = { ID = "MODEL" }`) [default: none, every deployment path serves every
    /// model]
    #[arg(long, env = "KILN_DEPLOYMENT", value_name = "ID=MODEL", value_parser = deployment_arg)]
    pub(crate) deployment: Vec<(String, String)>,

    /// Address to listen on
    #[arg(long, env = "KILN_HOST", default_value = "127.0.0.1")]
    pub(crate) host: String,

    /// Port to listen on
    #[arg(long, env = "KILN_PORT", default_value_t = 8000)]
    pub(crate) port: u16,

    /// Accepted Bearer key (repeat for more; the environment variable is comma-separated)
    #[arg(long, env = "KILN_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub(crate) api_key: Vec<String>,

    /// cpu | wgpu
    #[arg(long, env = "KILN_DEVICE", default_value = device_name(LoadOptions::default().device))]
    pub(crate) device: DeviceKind,

    /// f32 | f16
    #[arg(long, env = "KILN_DTYPE", default_value = dtype_name(LoadOptions::default().dtype))]
    pub(crate) dtype: DType,

    /// Tokens per engine step
    #[arg(long, env = "KILN_MAX_BATCHED_TOKENS", value_name = "N",
        default_value_t = EngineConfig::default().max_batched_tokens, value_parser = positive)]
    pub(crate) max_batched_tokens: usize,

    /// Sequences running at once
    #[arg(long, env = "KILN_MAX_RUNNING", value_name = "N",
        default_value_t = EngineConfig::default().max_running, value_parser = positive)]
    pub(crate) max_running: usize,

    /// Requests waiting before 429
    #[arg(long, env = "KILN_MAX_QUEUE", value_name = "N",
        default_value_t = EngineConfig::default().max_waiting)]
    pub(crate) max_queue: usize,

    /// KV cache size, e.g. 4GiB or 512MiB [default: --max-running sequences of 1024 positions
    /// and one whole context, in at most a quarter of the free memory]
    #[arg(long, env = "KILN_KV_CACHE_MEMORY", value_name = "SIZE")]
    pub(crate) kv_cache_memory: Option<ByteSize>,

    /// KV cache size in positions, all sequences together (instead of --kv-cache-memory)
    #[arg(long, env = "KILN_KV_CACHE_TOKENS", value_name = "N", value_parser = positive)]
    pub(crate) kv_cache_tokens: Option<usize>,

    /// f16 | f32: what K and V are stored in (f32 keeps results bit-identical to an f32
    /// reference; f16 halves the cache)
    #[arg(long, env = "KILN_KV_CACHE_DTYPE", value_name = "DTYPE",
        default_value = dtype_name(LoadOptions::default().kv_dtype))]
    pub(crate) kv_cache_dtype: DType,

    /// Positions per KV block
    #[arg(long, env = "KILN_BLOCK_SIZE", value_name = "N",
        default_value_t = LoadOptions::default().block_size)]
    pub(crate) block_size: usize,

    /// Context length served (prompt + output), at most the model's [default: the model's]
    #[arg(long, env = "KILN_MAX_MODEL_LEN", value_name = "N", value_parser = positive)]
    pub(crate) max_model_len: Option<usize>,

    /// Most choices per request
    #[arg(long, env = "KILN_MAX_N", value_name = "N",
        default_value_t = EngineConfig::default().max_n)]
    pub(crate) max_n: usize,

    /// Request body limit
    #[arg(long, env = "KILN_MAX_BODY_BYTES", value_name = "SIZE",
        default_value_t = ByteSize(GatewayConfig::default().max_body_bytes))]
    pub(crate) max_body_bytes: ByteSize,

    /// Seconds a non-streaming request may take
    #[arg(long, env = "KILN_REQUEST_TIMEOUT", value_name = "SECONDS",
        default_value_t = GatewayConfig::default().request_timeout.as_secs())]
    pub(crate) request_timeout: u64,

    /// Seconds a stream waits for a client that reads nothing before its request is cancelled
    #[arg(long, env = "KILN_SEND_TIMEOUT", value_name = "SECONDS",
        default_value_t = GatewayConfig::default().send_timeout.as_secs() as usize, value_parser = positive)]
    pub(crate) send_timeout: usize,

    /// Seconds to drain in-flight requests on SIGTERM
    #[arg(long, env = "KILN_SHUTDOWN_GRACE", value_name = "SECONDS",
        default_value_t = SHUTDOWN_GRACE_SECS)]
    pub(crate) shutdown_grace: u64,

    /// Put /metrics behind the API key
    #[arg(long, env = "KILN_METRICS_REQUIRE_KEY", value_name = "BOOL", action = ArgAction::Set,
        num_args = 0..=1, require_equals = true, default_missing_value = "true",
        default_value_t = GatewayConfig::default().metrics_require_key, value_parser = switch)]
    pub(crate) metrics_require_key: bool,

    /// Do not share KV blocks between requests
    #[arg(long, env = "KILN_NO_PREFIX_CACHING", value_name = "BOOL", action = ArgAction::Set,
        num_args = 0..=1, require_equals = true, default_missing_value = "true",
        default_value_t = !EngineConfig::default().prefix_caching, value_parser = switch)]
    pub(crate) no_prefix_caching: bool,

    /// Most images in one chat request (a vision model; 0 refuses images)
    #[arg(long, env = "KILN_MAX_IMAGES_PER_REQUEST", value_name = "N",
        default_value_t = kiln_api_types::DEFAULT_MAX_IMAGES)]
    pub(crate) max_images_per_request: usize,

    /// Host name, IP or CIDR image URLs may be fetched from although it is loopback, private or
    /// link-local (repeat for more; the environment variable is comma-separated)
    #[arg(long, env = "KILN_ALLOW_MEDIA_HOST", value_name = "HOST")]
    pub(crate) allow_media_host: Vec<String>,

    /// Folder `file://` image URLs may read from [default: none, `file://` refused]
    #[arg(long, env = "KILN_ALLOWED_LOCAL_MEDIA_PATH", value_name = "DIR")]
    pub(crate) allowed_local_media_path: Option<PathBuf>,

    /// Largest image a URL may return
    #[arg(long, env = "KILN_MEDIA_MAX_BYTES", value_name = "SIZE",
        default_value_t = ByteSize(kiln_gateway::fetch::MediaPolicy::DEFAULT_MAX_BYTES))]
    pub(crate) media_max_bytes: ByteSize,

    /// Seconds an image fetch may take, redirects and body included
    #[arg(long, env = "KILN_MEDIA_TIMEOUT", value_name = "SECONDS",
        default_value_t = kiln_gateway::fetch::MediaPolicy::default().total_timeout.as_secs())]
    pub(crate) media_timeout: u64,

    /// PEM file of CA certificates trusted for https image URLs besides the system's
    #[arg(long, env = "KILN_MEDIA_CA_FILE", value_name = "FILE")]
    pub(crate) media_ca_file: Option<PathBuf>,

    /// Browser origin allowed to call the API (CORS), e.g. https://app.example.com, or * for any
    /// (repeat for more; the environment variable is comma-separated) [default: none, CORS off]
    #[arg(long, env = "KILN_ALLOWED_ORIGINS", value_name = "ORIGIN")]
    pub(crate) allowed_origins: Vec<String>,

    /// TOML file with any of these settings (keys are the flags with `_`: `max_running = 8`),
    /// and `[[models]]` entries, one per served model (`path`, `served_model_name`, `mmproj`,
    /// `chat_template`, `tool_call_format`, `device`, `dtype`, `kv_cache_memory`, `kv_cache_tokens`,
    /// `kv_cache_dtype`, `max_model_len`)
    #[arg(long, env = "KILN_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// The config file's `[[models]]`, used when no --model is given.
    #[arg(skip)]
    pub(crate) file_models: Vec<ModelSpec>,
}

/// `--model [NAME=]PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModelArg {
    pub(crate) name: Option<String>,
    pub(crate) path: PathBuf,
}

/// `[NAME=]PATH`: a name is what comes before the first `=` when that holds no path separator
/// (so a path with `=` in a folder name still reads as a path).
fn model_arg(s: &str) -> Result<ModelArg, String> {
    let (name, path) = match s.split_once('=') {
        Some((name, path)) if !name.contains(['/', '\\']) => (Some(name.trim()), path),
        _ => (None, s),
    };
    if name == Some("") {
        return Err("the name before `=` is empty".into());
    }
    if path.is_empty() {
        return Err("no path".into());
    }
    Ok(ModelArg {
        name: name.map(String::from),
        path: PathBuf::from(path),
    })
}

/// `ID=MODEL`.
fn deployment_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((id, model)) if !id.trim().is_empty() && !model.trim().is_empty() => {
            if id.contains('/') {
                return Err(format!("a deployment id cannot hold `/`: {id:?}"));
            }
            Ok((id.trim().to_string(), model.trim().to_string()))
        }
        _ => Err(format!("{s:?} is not ID=MODEL")),
    }
}

/// One `[[models]]` entry of the config file; what it leaves unset comes from the top-level
/// settings. Each key is read by the same parser as the flag of its name.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ModelSpec {
    /// GGUF file or Hugging Face directory
    #[arg(long)]
    pub(crate) path: Option<PathBuf>,
    #[arg(long)]
    pub(crate) served_model_name: Vec<String>,
    #[arg(long)]
    pub(crate) mmproj: Option<PathBuf>,
    #[arg(long)]
    pub(crate) chat_template: Option<PathBuf>,
    #[arg(long)]
    pub(crate) tool_call_format: Option<kiln_gateway::ToolSyntax>,
    #[arg(long)]
    pub(crate) device: Option<DeviceKind>,
    #[arg(long)]
    pub(crate) dtype: Option<DType>,
    #[arg(long)]
    pub(crate) kv_cache_memory: Option<ByteSize>,
    #[arg(long, value_parser = positive)]
    pub(crate) kv_cache_tokens: Option<usize>,
    #[arg(long)]
    pub(crate) kv_cache_dtype: Option<DType>,
    #[arg(long, value_parser = positive)]
    pub(crate) max_model_len: Option<usize>,
}

/// One model to serve, every setting settled.
#[derive(Debug, Clone)]
pub(crate) struct ModelPlan {
    /// `None`: the default model (resolved when it is loaded).
    pub(crate) path: Option<PathBuf>,
    /// Empty: named after its file.
    pub(crate) names: Vec<String>,
    pub(crate) chat_template: Option<PathBuf>,
    /// `None`: detected from the chat template.
    pub(crate) tool_call_format: Option<kiln_gateway::ToolSyntax>,
    pub(crate) load: LoadOptions,
    pub(crate) engine: EngineConfig,
}

impl ServeConfig {
    /// How to load a model the top-level settings alone describe.
    #[cfg(test)]
    pub(crate) fn load_options(&self) -> LoadOptions {
        self.load_options_for(&self.top_level_spec())
    }

    /// How to load the model of `spec`, the top-level settings filling what it leaves unset.
    fn load_options_for(&self, spec: &ModelSpec) -> LoadOptions {
        let max_model_len = spec.max_model_len.or(self.max_model_len);
        // An entry's own way of sizing its cache replaces the top-level one.
        let (memory, tokens) = if spec.kv_cache_memory.is_some() || spec.kv_cache_tokens.is_some() {
            (spec.kv_cache_memory, spec.kv_cache_tokens)
        } else {
            (self.kv_cache_memory, self.kv_cache_tokens)
        };
        LoadOptions {
            device: spec.device.unwrap_or(self.device),
            dtype: spec.dtype.unwrap_or(self.dtype),
            block_size: self.block_size,
            kv_cache: match (memory, tokens) {
                (Some(bytes), _) => KvCacheSize::Bytes(bytes.0),
                (None, Some(tokens)) => KvCacheSize::Tokens(tokens),
                (None, None) => KvCacheSize::Auto {
                    running: self.max_running,
                    context: max_model_len,
                },
            },
            kv_dtype: spec.kv_cache_dtype.unwrap_or(self.kv_cache_dtype),
            mmproj: spec.mmproj.clone(),
        }
    }

    /// The engine's limits for a model the top-level settings alone describe.
    pub(crate) fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            max_batched_tokens: self.max_batched_tokens,
            max_running: self.max_running,
            max_waiting: self.max_queue,
            max_n: self.max_n,
            prefix_caching: !self.no_prefix_caching,
            max_model_len: self.max_model_len,
            ..EngineConfig::default()
        }
    }

    /// The first model's settings from the top-level flags (`--mmproj`, `--chat-template`,
    /// `--served-model-name`).
    fn top_level_spec(&self) -> ModelSpec {
        ModelSpec {
            served_model_name: self.served_model_name.clone(),
            mmproj: self.mmproj.clone(),
            chat_template: self.chat_template.clone(),
            tool_call_format: self.tool_call_format,
            ..ModelSpec::default()
        }
    }

    /// The models to serve, in order (the first is the default): each `--model`, else the
    /// file's `[[models]]`, else the default model. The top-level `--served-model-name`,
    /// `--mmproj` and `--chat-template` are the first model's unless its entry sets them.
    pub(crate) fn plans(&self) -> Result<Vec<ModelPlan>> {
        if self.kv_cache_memory.is_some() && self.kv_cache_tokens.is_some() {
            bail!("kv_cache_memory and kv_cache_tokens both size the KV cache: give one, not both");
        }
        let mut specs: Vec<ModelSpec> = if !self.model.is_empty() {
            self.model
                .iter()
                .map(|m| ModelSpec {
                    path: Some(m.path.clone()),
                    served_model_name: m.name.iter().cloned().collect(),
                    ..ModelSpec::default()
                })
                .collect()
        } else if !self.file_models.is_empty() {
            self.file_models.clone()
        } else {
            vec![ModelSpec::default()]
        };
        let top = self.top_level_spec();
        let first = &mut specs[0];
        if first.served_model_name.is_empty() {
            first.served_model_name = top.served_model_name;
        } else if !top.served_model_name.is_empty() {
            bail!(
                "the first model is named twice: by served_model_name and by its own entry \
                 (`--model NAME=PATH` or `[[models]]`); give one"
            );
        }
        first.mmproj = first.mmproj.take().or(top.mmproj);
        first.chat_template = first.chat_template.take().or(top.chat_template);
        first.tool_call_format = first.tool_call_format.or(top.tool_call_format);
        specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                if spec.kv_cache_memory.is_some() && spec.kv_cache_tokens.is_some() {
                    bail!(
                        "models[{i}]: kv_cache_memory and kv_cache_tokens both size the KV \
                         cache: give one, not both"
                    );
                }
                let engine = EngineConfig {
                    max_model_len: spec.max_model_len.or(self.max_model_len),
                    ..self.engine_config()
                };
                Ok(ModelPlan {
                    path: spec.path.clone(),
                    names: spec.served_model_name.clone(),
                    chat_template: spec.chat_template.clone(),
                    tool_call_format: spec.tool_call_format,
                    load: self.load_options_for(spec),
                    engine,
                })
            })
            .collect()
    }

    /// The accepted API keys (empty ones dropped: an empty key would let anyone in).
    pub(crate) fn api_keys(&self) -> Vec<String> {
        self.api_key
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect()
    }

    /// The gateway's settings, serving `models`.
    pub(crate) fn gateway_config(&self, models: Vec<ServedModel>) -> Result<GatewayConfig> {
        let mut deployments = BTreeMap::new();
        for (id, model) in &self.deployment {
            if deployments.insert(id.clone(), model.clone()).is_some() {
                bail!("deployment `{id}` is mapped twice");
            }
        }
        Ok(GatewayConfig {
            models,
            deployments,
            api_keys: self.api_keys(),
            metrics_require_key: self.metrics_require_key,
            max_body_bytes: self.max_body_bytes.0,
            request_timeout: Duration::from_secs(self.request_timeout),
            send_timeout: Duration::from_secs(self.send_timeout as u64),
            // The engine enforces `max_n`; validation states the same limit to clients.
            limits: Limits {
                max_n: self.max_n as u32,
                max_images: self.max_images_per_request,
                ..Limits::default()
            },
            cors: kiln_gateway::Cors {
                allowed_origins: self.allowed_origins.clone(),
            },
            ..GatewayConfig::default()
        })
    }

    /// How image URLs are fetched: the allow-list, the local folder, the size and time limits
    /// and any extra CA.
    pub(crate) fn media_config(&self) -> Result<MediaConfig> {
        let mut policy = MediaPolicy {
            max_bytes: self.media_max_bytes.0,
            total_timeout: Duration::from_secs(self.media_timeout.max(1)),
            ..MediaPolicy::default()
        };
        for host in &self.allow_media_host {
            policy.allow_hosts.push(
                MediaPolicy::parse_host_rule(host)
                    .map_err(|e| anyhow::anyhow!("--allow-media-host {host:?}: {e}"))?,
            );
        }
        if let Some(dir) = &self.allowed_local_media_path {
            let dir = dir
                .canonicalize()
                .with_context(|| format!("--allowed-local-media-path {}", dir.display()))?;
            if !dir.is_dir() {
                bail!(
                    "--allowed-local-media-path {}: not a directory",
                    dir.display()
                );
            }
            policy.allowed_local_path = Some(dir);
        }
        if let Some(file) = &self.media_ca_file {
            policy.extra_roots = kiln_gateway::fetch::read_pem_certificates(file)
                .map_err(|e| anyhow::anyhow!("--media-ca-file: {e}"))?;
        }
        Ok(MediaConfig {
            policy,
            ..MediaConfig::default()
        })
    }

    pub(crate) fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace)
    }

    /// The KV cache is sized one way: `--kv-cache-memory` or `--kv-cache-tokens`. Given both,
    /// the one from the stronger source wins (a flag beats the environment, which beats the
    /// file), and two from one source are an error.
    pub(crate) fn settle_kv_cache_size(&mut self, matches: &ArgMatches) -> Result<()> {
        if self.kv_cache_memory.is_none() || self.kv_cache_tokens.is_none() {
            return Ok(());
        }
        let memory = matches.value_source("kv_cache_memory");
        let tokens = matches.value_source("kv_cache_tokens");
        match memory.cmp(&tokens) {
            std::cmp::Ordering::Greater => self.kv_cache_tokens = None,
            std::cmp::Ordering::Less => self.kv_cache_memory = None,
            std::cmp::Ordering::Equal => {
                bail!(
                    "kv_cache_memory and kv_cache_tokens both size the KV cache: give one, not both"
                )
            }
        }
        Ok(())
    }

    /// A list given by its environment variable is comma-separated (`KILN_API_KEY=k1,k2`); on
    /// the command line and in the file each value is one item. clap cannot split by source,
    /// so this runs on the parsed matches.
    pub(crate) fn split_env_lists(&mut self, matches: &ArgMatches) {
        for (id, list) in [
            ("served_model_name", &mut self.served_model_name),
            ("api_key", &mut self.api_key),
            ("allow_media_host", &mut self.allow_media_host),
            ("allowed_origins", &mut self.allowed_origins),
        ] {
            if matches.value_source(id) == Some(ValueSource::EnvVariable) {
                *list = split_env_list(list);
            }
        }
    }
}

/// `k1, k2,,k3` → `[k1, k2, k3]`.
fn split_env_list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// What a config file says: its settings checked against `serve` (each key a flag, each value
/// what that flag accepts) as `(argument id, values)`, and its `[[models]]`.
#[derive(Debug, Default)]
pub(crate) struct FileConfig {
    pub(crate) settings: Vec<(String, Vec<String>)>,
    pub(crate) models: Vec<ModelSpec>,
}

/// Reads a config file. A key may not be `config` itself; `deployments = { ID = "MODEL" }` is
/// the table form of `deployment = ["ID=MODEL"]`; `[[models]]` lists the served models.
pub(crate) fn read_config(serve: &Command, path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut file = FileConfig::default();
    if let Some(models) = table.remove("models") {
        if table.contains_key("model") {
            bail!(
                "{}: `model` and `[[models]]` both say what to serve: give one",
                path.display()
            );
        }
        file.models = read_models(path, &models)?;
    }
    if let Some(deployments) = table.remove("deployments") {
        let toml::Value::Table(map) = deployments else {
            bail!(
                "{}: `deployments` is a table: deployments = {{ ID = \"MODEL\" }}",
                path.display()
            );
        };
        if table.contains_key("deployment") {
            bail!(
                "{}: `deployment` and `deployments` both map deployments: give one",
                path.display()
            );
        }
        let pairs = map
            .into_iter()
            .map(|(id, model)| match model {
                toml::Value::String(m) => Ok(toml::Value::String(format!("{id}={m}"))),
                other => bail!(
                    "{}: deployments.{id} must be a model's name, not a {}",
                    path.display(),
                    other.type_str()
                ),
            })
            .collect::<Result<Vec<_>>>()?;
        table.insert("deployment".into(), toml::Value::Array(pairs));
    }
    let mut out = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let Some(arg) = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()) && flag != "config")
        else {
            bail!("{}: unknown setting `{key}`", path.display());
        };
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
        let mut values = match &value {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<Vec<_>>>()?,
            v => vec![scalar(v)?],
        };
        // A single-valued setting given an array takes its last item, as a repeated flag does.
        if !matches!(arg.get_action(), ArgAction::Append) && values.len() > 1 {
            values.drain(..values.len() - 1);
        }
        // Checked here, by the flag's own parser, so a bad value names the file and the key.
        for v in &values {
            let probe = Command::new("kiln serve")
                .no_binary_name(true)
                .arg(arg.clone().env(None::<&str>));
            if let Err(e) = probe.try_get_matches_from([format!("--{flag}={v}")]) {
                let why = std::error::Error::source(&e)
                    .map_or_else(|| e.kind().to_string(), ToString::to_string);
                bail!("{}: `{key}` = {v:?}: {why}", path.display());
            }
        }
        if !values.is_empty() {
            out.push((arg.get_id().to_string(), values));
        }
    }
    file.settings = out;
    Ok(file)
}

/// The `[[models]]` entries, each key checked by its flag's parser (an error names the entry
/// and the key).
fn read_models(path: &Path, models: &toml::Value) -> Result<Vec<ModelSpec>> {
    let toml::Value::Array(entries) = models else {
        bail!(
            "{}: `models` is a list of tables: [[models]] path = \"…\"",
            path.display()
        );
    };
    if entries.is_empty() {
        bail!("{}: `models` lists no model", path.display());
    }
    let command = ModelSpec::augment_args(Command::new("[[models]]").no_binary_name(true));
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let toml::Value::Table(entry) = entry else {
                bail!("{}: models[{i}] is not a table", path.display());
            };
            if !entry.contains_key("path") {
                bail!(
                    "{}: models[{i}] has no `path` (the GGUF file or Hugging Face directory)",
                    path.display()
                );
            }
            let mut argv = Vec::new();
            for (key, value) in entry {
                let flag = key.replace('_', "-");
                if command
                    .get_arguments()
                    .all(|a| a.get_long() != Some(flag.as_str()))
                {
                    bail!("{}: models[{i}]: unknown setting `{key}`", path.display());
                }
                let items = match value {
                    toml::Value::Array(items) if key == "served_model_name" => items.clone(),
                    v => vec![v.clone()],
                };
                for item in items {
                    let v = match item {
                        toml::Value::String(s) => s,
                        toml::Value::Integer(n) => n.to_string(),
                        other => bail!(
                            "{}: models[{i}]: `{key}` cannot be a {}",
                            path.display(),
                            other.type_str()
                        ),
                    };
                    let arg = format!("--{flag}={v}");
                    if let Err(e) = command.clone().try_get_matches_from([&arg]) {
                        let why = std::error::Error::source(&e)
                            .map_or_else(|| e.kind().to_string(), ToString::to_string);
                        bail!("{}: models[{i}]: `{key}` = {v:?}: {why}", path.display());
                    }
                    argv.push(arg);
                }
            }
            let matches = command
                .clone()
                .try_get_matches_from(&argv)
                .with_context(|| format!("{}: models[{i}]", path.display()))?;
            Ok(ModelSpec::from_arg_matches(&matches)?)
        })
        .collect()
}

/// `serve` with the file's settings as its defaults: clap then applies flag > environment >
/// default itself, which is exactly flag > environment > file > built-in default.
pub(crate) fn with_file_defaults(serve: Command, settings: Vec<(String, Vec<String>)>) -> Command {
    settings.into_iter().fold(serve, |serve, (id, values)| {
        serve.mut_arg(id, |arg| arg.default_values(values))
    })
}

/// A byte count that reads `1GiB`, `512MiB`, `64mb`, `1000000` and prints the largest exact
/// binary unit, so a default shown by `--help` reads back as the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSize(pub(crate) usize);

impl std::str::FromStr for ByteSize {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_bytes(s).map(Self)
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (unit, size) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
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

/// A count that must be at least 1.
pub(crate) fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A switch's value (`--flag`, `--flag=false`, `KILN_FLAG=1`, `flag = true` in the file).
fn switch(s: &str) -> Result<bool, String> {
    match s {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

/// The flag value naming `device` (what the runtime's `FromStr` reads back).
pub(crate) fn device_name(device: DeviceKind) -> &'static str {
    match device {
        DeviceKind::Cpu => "cpu",
        DeviceKind::Wgpu => "wgpu",
    }
}

/// The flag value naming `dtype` (what the runtime's `FromStr` reads back).
pub(crate) fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::io::Write as _;

    use super::*;
    use crate::{Cli, Commands, parse};

    fn serve(args: &[&str]) -> Result<ServeConfig> {
        let argv = ["kiln", "serve"].iter().chain(args).map(|s| s.to_string());
        match parse(argv)?.command {
            Some(Commands::Serve(config)) => Ok(config),
            other => panic!("not a serve command: {other:?}"),
        }
    }

    fn serve_command() -> Command {
        let mut cli = <Cli as clap::CommandFactory>::command();
        cli.build();
        cli.find_subcommand("serve").cloned().unwrap()
    }

    fn config_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

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
    fn sizes_print_as_they_parse() {
        for bytes in [1 << 30, 256 << 20, 32 << 20, 3 << 10, 1000, 1, 1536 << 20] {
            let shown = ByteSize(bytes).to_string();
            assert_eq!(
                shown.parse::<ByteSize>().unwrap(),
                ByteSize(bytes),
                "{shown}"
            );
        }
        assert_eq!(ByteSize(1 << 30).to_string(), "1GiB");
        assert_eq!(ByteSize(32 << 20).to_string(), "32MiB");
    }

    #[test]
    fn flags_override_and_lists_repeat() {
        let args = [
            "--port",
            "9000",
            "--api-key",
            "a",
            "--api-key=b",
            "--port",
            "9001",
        ];
        let s = serve(&args).unwrap();
        assert_eq!(s.port, 9001);
        assert_eq!(s.api_key, vec!["a", "b"]);
        assert!(serve(&["--nope"]).is_err());
        assert!(serve(&["--port"]).is_err());
    }

    #[test]
    fn defaults_are_the_owning_crates_defaults() {
        let s = serve(&[]).unwrap();
        // Debug output compares every field, including ones added later. The KV cache is sized
        // for the sequences the engine runs at once.
        let sized_for_the_engine = LoadOptions {
            kv_cache: KvCacheSize::Auto {
                running: EngineConfig::default().max_running,
                context: EngineConfig::default().max_model_len,
            },
            ..LoadOptions::default()
        };
        assert_eq!(
            format!("{:?}", s.load_options()),
            format!("{sized_for_the_engine:?}")
        );
        assert_eq!(s.load_options().kv_dtype, DType::F16);
        assert_eq!(
            format!("{:?}", s.engine_config()),
            format!("{:?}", EngineConfig::default())
        );
        let models = vec![ServedModel::named("m")];
        let gateway = s.gateway_config(models.clone()).unwrap();
        let default = GatewayConfig {
            models,
            ..GatewayConfig::default()
        };
        assert_eq!(format!("{gateway:?}"), format!("{default:?}"));
        assert_eq!(s.shutdown_grace(), Duration::from_secs(30));
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 8000));
    }

    #[test]
    fn values_are_typed_and_checked() {
        let s = serve(&[
            "--kv-cache-memory",
            "512MiB",
            "--max-body-bytes=1MiB",
            "--device",
            "cpu",
            "--dtype",
            "f16",
            "--max-model-len",
            "64",
            "--no-prefix-caching",
            "--metrics-require-key=false",
        ])
        .unwrap();
        assert_eq!(s.load_options().kv_cache, KvCacheSize::Bytes(512 << 20));
        assert_eq!(s.gateway_config(vec![]).unwrap().max_body_bytes, 1 << 20);
        assert_eq!(s.load_options().dtype, DType::F16);
        assert_eq!(s.engine_config().max_model_len, Some(64));
        assert!(!s.engine_config().prefix_caching);
        assert!(!s.metrics_require_key);
        for bad in [
            &["--kv-cache-memory", "12 parsecs"][..],
            &["--kv-cache-memory", "1GiB", "--kv-cache-tokens", "4096"],
            &["--kv-cache-tokens", "0"],
            &["--kv-cache-dtype", "f8"],
            &["--device", "tpu"],
            &["--dtype", "f8"],
            &["--max-model-len", "0"],
            &["--max-running", "0"],
            &["--max-batched-tokens", "0"],
            &["--port", "65536"],
            &["--no-prefix-caching=maybe"],
            &["extra"],
        ] {
            assert!(serve(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_file_fills_what_flags_leave_unset() {
        let file = config_file(
            "port = 9100\nhost = \"0.0.0.0\"\napi_key = [\"x\", \"y\"]\n\
             kv_cache_memory = \"512MiB\"\nmax_body_bytes = 4096\n\
             metrics_require_key = true\nmax_running = [2, 3]\n",
        );
        let path = file.path().to_str().unwrap();
        let s = serve(&["--config", path, "--port", "9200"]).unwrap();
        assert_eq!(s.port, 9200);
        assert_eq!(s.host, "0.0.0.0");
        assert_eq!(s.api_key, vec!["x", "y"]);
        assert_eq!(s.kv_cache_memory, Some(ByteSize(512 << 20)));
        assert_eq!(s.max_body_bytes, ByteSize(4096));
        assert!(s.metrics_require_key);
        assert_eq!(s.max_running, 3);
        // A list flag replaces the file's list rather than adding to it (flag beats file).
        let s = serve(&["--config", path, "--api-key", "z"]).unwrap();
        assert_eq!(s.api_key, vec!["z"]);
    }

    #[test]
    fn the_kv_cache_is_sized_one_way() {
        let s = serve(&["--kv-cache-tokens", "16384", "--kv-cache-dtype", "f32"]).unwrap();
        assert_eq!(s.load_options().kv_cache, KvCacheSize::Tokens(16384));
        assert_eq!(s.load_options().kv_dtype, DType::F32);
        let s = serve(&["--max-running", "8", "--max-model-len", "2048"]).unwrap();
        assert_eq!(
            s.load_options().kv_cache,
            KvCacheSize::Auto {
                running: 8,
                context: Some(2048)
            }
        );
        // A flag beats the file's other way of sizing it; two ways in one file are refused.
        let file = config_file("kv_cache_memory = \"512MiB\"\n");
        let path = file.path().to_str().unwrap();
        let s = serve(&["--config", path, "--kv-cache-tokens", "4096"]).unwrap();
        assert_eq!(s.load_options().kv_cache, KvCacheSize::Tokens(4096));
        let both = config_file("kv_cache_memory = \"512MiB\"\nkv_cache_tokens = 4096\n");
        let err = serve(&["--config", both.path().to_str().unwrap()]).unwrap_err();
        assert!(format!("{err:#}").contains("not both"), "{err:#}");
    }

    #[test]
    fn bad_files_are_errors_naming_the_file_and_key() {
        for (text, expected) in [
            ("nope = 1\n", "unknown setting `nope`"),
            ("config = \"other.toml\"\n", "unknown setting `config`"),
            ("port = \"http\"\n", "`port` = \"http\""),
            (
                "max_running = 0\n",
                "`max_running` = \"0\": must be at least 1",
            ),
            ("kv_cache_memory = \"1 parsec\"\n", "unknown unit"),
            ("port = { a = 1 }\n", "`port` cannot be a table"),
            ("port = \n", "parsing"),
        ] {
            let file = config_file(text);
            let path = file.path().to_str().unwrap();
            let err = format!("{:#}", serve(&["--config", path]).unwrap_err());
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(err.contains(path), "{text:?}: {err}");
        }
        let err = serve(&["--config", "/nonexistent/kiln.toml"]).unwrap_err();
        assert!(format!("{err:#}").contains("reading the config file"));
    }

    #[test]
    fn env_lists_are_comma_separated() {
        let values = vec![" k1, k2,,k3 ".to_string()];
        assert_eq!(split_env_list(&values), vec!["k1", "k2", "k3"]);
        assert!(split_env_list(&[String::new()]).is_empty());
    }

    #[test]
    fn every_flag_is_an_env_var_and_a_file_key() {
        let serve = serve_command();
        let mut seen = 0;
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            let env = format!("KILN_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(arg.get_env(), Some(OsStr::new(&env)), "--{long}");
            // The file key is the flag with `_`; the argument id is what clap fills from it.
            assert_eq!(arg.get_id().as_str(), long.replace('-', "_"), "--{long}");
            seen += 1;
        }
        assert_eq!(seen, 34);
    }

    #[test]
    fn help_shows_every_flag_with_its_env_var_and_default() {
        let mut serve = serve_command();
        let help = serve.render_long_help().to_string();
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            assert!(help.contains(&format!("--{long}")), "--{long} in\n{help}");
            if let Some(env) = arg.get_env() {
                let env = env.to_str().unwrap();
                assert!(help.contains(&format!("[env: {env}")), "{env} in\n{help}");
            }
            for default in arg.get_default_values() {
                let default = default.to_str().unwrap();
                assert!(help.contains(&format!("[default: {default}]")), "{default}");
            }
        }
    }

    #[test]
    fn several_models_from_flags_with_names_and_deployments() {
        let s = serve(&[
            "--model",
            "small=/m/a.gguf",
            "--model",
            "/m/dir=x/b.gguf",
            "--mmproj",
            "/m/mmproj.gguf",
            "--deployment",
            "dep1=small",
            "--kv-cache-memory",
            "256MiB",
            "--max-model-len",
            "512",
        ])
        .unwrap();
        let plans = s.plans().unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].path.as_deref(), Some(Path::new("/m/a.gguf")));
        assert_eq!(plans[0].names, vec!["small"]);
        // A `=` inside a path is not a name.
        assert_eq!(plans[1].path.as_deref(), Some(Path::new("/m/dir=x/b.gguf")));
        assert!(plans[1].names.is_empty());
        // The top-level --mmproj is the first model's; the KV budget and context every model's.
        assert_eq!(
            plans[0].load.mmproj.as_deref(),
            Some(Path::new("/m/mmproj.gguf"))
        );
        assert_eq!(plans[1].load.mmproj, None);
        for p in &plans {
            assert_eq!(p.load.kv_cache, KvCacheSize::Bytes(256 << 20));
            assert_eq!(p.engine.max_model_len, Some(512));
        }
        let gateway = s
            .gateway_config(vec![ServedModel::named("small"), ServedModel::named("b")])
            .unwrap();
        assert_eq!(
            gateway.deployments.get("dep1").map(String::as_str),
            Some("small")
        );
        for bad in [
            &["--model", "=/m/a.gguf"][..],
            &["--deployment", "dep1"],
            &["--deployment", "a/b=small"],
            &["--deployment", "=small"],
        ] {
            assert!(serve(bad).is_err(), "{bad:?}");
        }
        let twice = serve(&["--deployment", "d=a", "--deployment", "d=b"]).unwrap();
        assert!(twice.gateway_config(vec![]).is_err());
        let named_twice = serve(&["--model", "a=/m/a.gguf", "--served-model-name", "b"]).unwrap();
        assert!(named_twice.plans().is_err());
        // One model named by --served-model-name, as before.
        let one = serve(&["--model", "/m/a.gguf", "--served-model-name", "x"]).unwrap();
        assert_eq!(one.plans().unwrap()[0].names, vec!["x"]);
        // No --model: the default model.
        let none = serve(&[]).unwrap().plans().unwrap();
        assert_eq!((none.len(), none[0].path.clone()), (1, None));
    }

    #[test]
    fn models_in_the_file_carry_their_own_settings() {
        let file = config_file(
            "kv_cache_dtype = \"f32\"\nmax_model_len = 1024\n\
             deployments = { sVUARttwSjilLOZY = \"smollm2\" }\n\n\
             [[models]]\npath = \"/m/smollm2.gguf\"\nserved_model_name = [\"smollm2\", \"default\"]\n\
             kv_cache_memory = \"512MiB\"\n\n\
             [[models]]\npath = \"/m/vlm\"\nserved_model_name = \"vlm\"\nmmproj = \"/m/p.gguf\"\n\
             chat_template = \"/m/t.jinja\"\ndtype = \"f16\"\nkv_cache_tokens = 4096\n\
             kv_cache_dtype = \"f16\"\nmax_model_len = 256\ndevice = \"cpu\"\n\
             tool_call_format = \"mistral\"\n",
        );
        let path = file.path().to_str().unwrap();
        let s = serve(&["--config", path]).unwrap();
        let plans = s.plans().unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].names, vec!["smollm2", "default"]);
        assert_eq!(plans[0].load.kv_cache, KvCacheSize::Bytes(512 << 20));
        assert_eq!(plans[0].load.kv_dtype, DType::F32, "from the top level");
        assert_eq!(plans[0].engine.max_model_len, Some(1024));
        assert_eq!(plans[1].names, vec!["vlm"]);
        assert_eq!(plans[1].path.as_deref(), Some(Path::new("/m/vlm")));
        assert_eq!(
            plans[1].load.mmproj.as_deref(),
            Some(Path::new("/m/p.gguf"))
        );
        assert_eq!(
            plans[1].chat_template.as_deref(),
            Some(Path::new("/m/t.jinja"))
        );
        assert_eq!(plans[1].load.dtype, DType::F16);
        assert_eq!(plans[1].load.kv_cache, KvCacheSize::Tokens(4096));
        assert_eq!(plans[1].load.kv_dtype, DType::F16);
        assert_eq!(plans[1].engine.max_model_len, Some(256));
        assert_eq!(
            plans[0].tool_call_format, None,
            "detected from the template"
        );
        assert_eq!(
            plans[1].tool_call_format,
            Some(kiln_gateway::ToolSyntax::Mistral)
        );
        let gateway = s.gateway_config(vec![]).unwrap();
        assert_eq!(
            gateway
                .deployments
                .get("sVUARttwSjilLOZY")
                .map(String::as_str),
            Some("smollm2")
        );
        // A --model on the command line replaces the file's list (a flag beats the file).
        let s = serve(&["--config", path, "--model", "/m/other.gguf"]).unwrap();
        let plans = s.plans().unwrap();
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].path.as_deref(), Some(Path::new("/m/other.gguf")));
    }

    #[test]
    fn bad_model_entries_name_the_entry_and_key() {
        for (text, expected) in [
            (
                "[[models]]\npath = \"/m\"\nnope = 1\n",
                "models[0]: unknown setting `nope`",
            ),
            (
                "[[models]]\nserved_model_name = \"x\"\n",
                "models[0] has no `path`",
            ),
            (
                "[[models]]\npath = \"/a\"\n[[models]]\npath = \"/b\"\ndevice = \"tpu\"\n",
                "models[1]: `device` = \"tpu\"",
            ),
            (
                "[[models]]\npath = \"/a\"\nkv_cache_tokens = 0\n",
                "must be at least 1",
            ),
            ("models = 3\n", "`models` is a list of tables"),
            ("model = \"/a\"\n[[models]]\npath = \"/b\"\n", "give one"),
            (
                "deployments = { d = 3 }\n",
                "deployments.d must be a model's name",
            ),
            ("deployment = \"nonsense\"\n", "is not ID=MODEL"),
        ] {
            let file = config_file(text);
            let path = file.path().to_str().unwrap();
            let err = format!("{:#}", serve(&["--config", path]).unwrap_err());
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(err.contains(path), "{text:?}: {err}");
        }
        let both = config_file(
            "[[models]]\npath = \"/a\"\nkv_cache_memory = \"1GiB\"\nkv_cache_tokens = 9\n",
        );
        let s = serve(&["--config", both.path().to_str().unwrap()]).unwrap();
        assert!(format!("{:#}", s.plans().unwrap_err()).contains("models[0]"));
    }

    #[test]
    fn names_read_back_through_the_runtime() {
        for device in [DeviceKind::Cpu, DeviceKind::Wgpu] {
            assert_eq!(device_name(device).parse::<DeviceKind>().unwrap(), device);
        }
        for dtype in [DType::F32, DType::F16] {
            assert_eq!(dtype_name(dtype).parse::<DType>().unwrap(), dtype);
        }
    }
}
