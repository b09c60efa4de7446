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
//!
//! The web playground (`playground`) is a page embedded in the binary, served at `/`.
//!
//! Several models may be served, each by its own engine: a request's `model` (or its
//! deployment, see [`GatewayConfig::deployments`]) picks the [`Backend`].

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
mod playground;
mod routing;
mod server;
mod sse;
mod tools;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kiln_api_types::Limits;
use kiln_scheduler::EngineHandle;
use kiln_tokenizer::Tokenizer;
use prometheus::Registry;

pub use cors::Cors;
pub use error::{ApiError, ErrorKind};
pub use images::{MediaConfig, Vision, spans as image_spans};
pub use sse::sse_event;
pub use tools::{CallParser as ToolCallParser, Piece as ToolCallPiece, ToolSyntax};

/// The name of [`GatewayConfig::models`]' one model by default.
pub const DEFAULT_SERVED_MODEL_NAME: &str = "default";
/// [`GatewayConfig::max_body_bytes`] by default: room for a few base64 images.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 << 20;
/// [`GatewayConfig::request_timeout`] by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// [`GatewayConfig::header_timeout`] by default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// [`GatewayConfig::send_timeout`] by default (nginx's `send_timeout` is 60 s too).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// [`GatewayConfig::owned_by`] by default.
pub const DEFAULT_OWNED_BY: &str = "kiln";

/// How the gateway behaves; everything here comes from `kiln serve`'s flags.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The served models, in order; the first is the default (for an empty or missing
    /// `model`).
    pub models: Vec<ServedModel>,
    /// `/v1/ai/{deployment}/…` paths whose deployment serves one model: deployment → one of
    /// that model's names. With none, every deployment path serves as `/v1/…` does; with
    /// some, a deployment not listed is a 404.
    pub deployments: BTreeMap<String, String>,
    /// Bearer keys; empty means the API is open.
    pub api_keys: Vec<String>,
    /// Put `/metrics` behind a key too.
    pub metrics_require_key: bool,
    pub max_body_bytes: usize,
    /// Limit for a whole non-streaming request (streams run as long as they generate).
    pub request_timeout: Duration,
    /// Time allowed to send a request's headers.
    pub header_timeout: Duration,
    /// How long a stream waits for a client that reads nothing (its buffer full) before the
    /// request is cancelled and the response ended.
    pub send_timeout: Duration,
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
            models: vec![ServedModel::named(DEFAULT_SERVED_MODEL_NAME)],
            deployments: BTreeMap::new(),
            api_keys: Vec::new(),
            metrics_require_key: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            limits: Limits::default(),
            media: Arc::default(),
            cors: Cors::default(),
            owned_by: DEFAULT_OWNED_BY.into(),
        }
    }
}

/// One served model as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedModel {
    /// The names `model` may take for it: the first is its id, the others aliases.
    pub names: Vec<String>,
}

impl ServedModel {
    /// A model known by one name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            names: vec![name.into()],
        }
    }

    /// The name it is listed and reported by.
    pub fn id(&self) -> &str {
        &self.names[0]
    }
}

/// What serves generation once the model is loaded.
#[derive(Debug, Clone)]
pub struct Backend {
    pub engine: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
    /// The image side of a vision model.
    pub vision: Option<Vision>,
    /// How the model writes tool calls (`ToolSyntax::detect` on its template, or
    /// `--tool-call-format`).
    pub tool_syntax: ToolSyntax,
}

/// The HTTP service. Serve it with [`Gateway::serve`]; it answers `/health` with 503 until
/// [`Gateway::set_backend`] has been called for every model.
#[derive(Debug)]
pub struct Gateway {
    config: GatewayConfig,
    /// One per [`GatewayConfig::models`], set when that model is ready.
    backends: Vec<OnceLock<Backend>>,
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
    #[error("at least one served model with a name is needed")]
    NoModelName,
    #[error("the name `{0}` is given to two served models")]
    DuplicateName(String),
    #[error("deployment `{deployment}` names `{model}`, which is not a served model")]
    UnknownDeploymentModel { deployment: String, model: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The model a request goes to.
pub(crate) struct Resolved<'a> {
    /// The name the response reports (as the request gave it, else the model's id).
    pub(crate) name: String,
    pub(crate) backend: &'a Backend,
}

impl Gateway {
    pub fn new(config: GatewayConfig, registry: Registry) -> Result<Arc<Self>, GatewayError> {
        if config.models.is_empty() || config.models.iter().any(|m| m.names.is_empty()) {
            return Err(GatewayError::NoModelName);
        }
        let mut seen = std::collections::HashSet::new();
        for name in config.models.iter().flat_map(|m| &m.names) {
            if !seen.insert(name.as_str()) {
                return Err(GatewayError::DuplicateName(name.clone()));
            }
        }
        for (deployment, model) in &config.deployments {
            if !seen.contains(model.as_str()) {
                return Err(GatewayError::UnknownDeploymentModel {
                    deployment: deployment.clone(),
                    model: model.clone(),
                });
            }
        }
        let metrics = access::HttpMetrics::register(&registry)?;
        Ok(Arc::new(Self {
            backends: config.models.iter().map(|_| OnceLock::new()).collect(),
            config,
            registry,
            metrics,
            started: ids::unix_now(),
        }))
    }

    /// Model `index` (of [`GatewayConfig::models`]) is ready: requests for it are served, and
    /// `/health` turns 200 once every model is.
    pub fn set_backend(&self, index: usize, backend: Backend) {
        if let Some(slot) = self.backends.get(index) {
            let _ = slot.set(backend);
        }
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Whether `backend`'s model takes images (and the server allows any per request).
    pub(crate) fn takes_images(&self, backend: &Backend) -> bool {
        self.config.limits.max_images > 0 && backend.vision.is_some()
    }

    /// The loaded models, by index.
    pub(crate) fn loaded(&self) -> impl Iterator<Item = (usize, &Backend)> {
        self.backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| Some((i, b.get()?)))
    }

    /// A 503 `model_loading` while no model is ready yet.
    pub(crate) fn require_some_model(&self) -> Result<(), ApiError> {
        match self.loaded().next() {
            Some(_) => Ok(()),
            None => Err(ApiError::loading(self.config.models[0].id())),
        }
    }

    /// The model a deployment path is pinned to: `None` outside one, or when no deployment is
    /// mapped (every deployment then serves every model); a 404 for a deployment not mapped.
    pub(crate) fn deployment_model(
        &self,
        deployment: Option<&str>,
    ) -> Result<Option<usize>, ApiError> {
        let Some(deployment) = deployment else {
            return Ok(None);
        };
        if self.config.deployments.is_empty() {
            return Ok(None);
        }
        match self.config.deployments.get(deployment) {
            Some(name) => Ok(self.index_of(name)),
            None => Err(ApiError::new(
                ErrorKind::NotFound,
                format!("The deployment `{deployment}` does not exist."),
            )),
        }
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.config
            .models
            .iter()
            .position(|m| m.names.iter().any(|n| n == name))
    }

    /// The model a request's `model` names on a path of `deployment`: the deployment's model
    /// or the default for none or empty; a 404 for a name not served (there).
    pub(crate) fn resolve(
        &self,
        deployment: Option<&str>,
        model: Option<&str>,
    ) -> Result<Resolved<'_>, ApiError> {
        let pinned = self.deployment_model(deployment)?;
        let (index, name) = match model.filter(|m| !m.is_empty()) {
            None => {
                let index = pinned.unwrap_or(0);
                (index, self.config.models[index].id().to_string())
            }
            Some(m) => {
                let index = self
                    .index_of(m)
                    .ok_or_else(|| ApiError::model_not_found(m))?;
                if let Some(p) = pinned.filter(|&p| p != index) {
                    return Err(ApiError::new(
                        ErrorKind::ModelNotFound,
                        format!(
                            "The deployment `{}` serves `{}`, not `{m}`.",
                            deployment.unwrap_or_default(),
                            self.config.models[p].id()
                        ),
                    )
                    .param("model"));
                }
                (index, m.to_string())
            }
        };
        let backend = self.backends[index]
            .get()
            .ok_or_else(|| ApiError::loading(self.config.models[index].id()))?;
        Ok(Resolved { name, backend })
    }
}
