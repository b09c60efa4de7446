//! Kiln's HTTP front on hyper 1: OpenAI routes (also under `/v1/ai/{deployment}/`), SSE
//! streaming, Bearer auth, request ids, access logs, limits, metrics and graceful shutdown.
//!
//! The gateway is thin: bodies are parsed and validated by `kiln-api-types`, generation is the
//! scheduler's (its `CompletionFold` is the one fold of events into a whole response), and
//! every failure is an [`ErrorKind`] turned into an OpenAI error envelope in [`error`].
//!
//! A request goes `server` (the accept loop) → `access` (request id, metrics, access log) →
//! `routing` (route, method, `auth`, dispatch) → a handler in `handlers` (`chat`,
//! `completions`, `info`), which reads its body with `body` and answers with a JSON body or an
//! `sse` stream. A chat's image parts are fetched by `fetch` (SSRF-safe) and decoded and
//! processed by `images` before its prompt is built.

// Errors are the cold path of a request that already allocates; boxing them buys nothing.
#![allow(clippy::result_large_err)]

mod access;
mod auth;
mod body;
mod cors;
pub mod error;
pub mod fetch;
mod handlers;
mod ids;
mod images;
mod routing;
mod server;
mod sse;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kiln_api_types::Limits;
use kiln_scheduler::EngineHandle;
use kiln_tokenizer::Tokenizer;
use prometheus::Registry;

pub use cors::Cors;
pub use error::{ApiError, ErrorKind};
pub use images::{MediaConfig, Vision, spans as image_spans};

/// [`GatewayConfig::served_model_names`] by default.
pub const DEFAULT_SERVED_MODEL_NAME: &str = "default";
/// [`GatewayConfig::max_body_bytes`] by default: room for a few base64 images.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 << 20;
/// [`GatewayConfig::request_timeout`] by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// [`GatewayConfig::header_timeout`] by default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// [`GatewayConfig::owned_by`] by default.
pub const DEFAULT_OWNED_BY: &str = "kiln";

/// How the gateway behaves; everything here comes from `kiln serve`'s flags.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The first name is the default model (for an empty or missing `model`); the others are
    /// aliases of it.
    pub served_model_names: Vec<String>,
    /// Bearer keys; empty means the API is open.
    pub api_keys: Vec<String>,
    /// Put `/metrics` behind a key too.
    pub metrics_require_key: bool,
    pub max_body_bytes: usize,
    /// Limit for a whole non-streaming request (streams run as long as they generate).
    pub request_timeout: Duration,
    /// Time allowed to send a request's headers.
    pub header_timeout: Duration,
    pub limits: Limits,
    /// How image URLs are fetched and decoded.
    pub media: Arc<MediaConfig>,
    /// Which browser origins may call the API (CORS; none by default).
    pub cors: Cors,
    pub owned_by: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            served_model_names: vec![DEFAULT_SERVED_MODEL_NAME.into()],
            api_keys: Vec::new(),
            metrics_require_key: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            limits: Limits::default(),
            media: Arc::default(),
            cors: Cors::default(),
            owned_by: DEFAULT_OWNED_BY.into(),
        }
    }
}

/// What serves generation once the model is loaded.
#[derive(Debug, Clone)]
pub struct Backend {
    pub engine: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
    /// The image side of a vision model.
    pub vision: Option<Vision>,
}

/// The HTTP service. Serve it with [`Gateway::serve`]; it answers `/health` with 503 until
/// [`Gateway::set_backend`] is called.
#[derive(Debug)]
pub struct Gateway {
    config: GatewayConfig,
    backend: OnceLock<Backend>,
    registry: Registry,
    metrics: access::HttpMetrics,
    /// Unix time the gateway started: the models' `created`.
    started: u64,
}

/// Errors starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("registering HTTP metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("at least one served model name is needed")]
    NoModelName,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Gateway {
    pub fn new(config: GatewayConfig, registry: Registry) -> Result<Arc<Self>, GatewayError> {
        if config.served_model_names.is_empty() {
            return Err(GatewayError::NoModelName);
        }
        let metrics = access::HttpMetrics::register(&registry)?;
        Ok(Arc::new(Self {
            config,
            backend: OnceLock::new(),
            registry,
            metrics,
            started: ids::unix_now(),
        }))
    }

    /// The model is ready: generation routes start answering and `/health` turns 200.
    pub fn set_backend(&self, backend: Backend) {
        let _ = self.backend.set(backend);
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Whether the loaded model takes images (and the server allows any per request).
    pub(crate) fn accepts_images(&self) -> bool {
        self.config.limits.max_images > 0 && self.backend.get().is_some_and(|b| b.vision.is_some())
    }

    pub(crate) fn backend(&self) -> Result<&Backend, ApiError> {
        self.backend.get().ok_or_else(ApiError::loading)
    }

    /// The served name a request's `model` refers to: the default for none or empty.
    pub(crate) fn resolve_model(&self, model: Option<&str>) -> Result<String, ApiError> {
        let names = &self.config.served_model_names;
        match model {
            None | Some("") => Ok(names[0].clone()),
            Some(m) if names.iter().any(|n| n == m) => Ok(m.to_string()),
            Some(m) => Err(ApiError::model_not_found(m)),
        }
    }
}
