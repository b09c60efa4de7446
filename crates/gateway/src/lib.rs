//! Kiln's HTTP front on hyper 1: OpenAI routes (also under `/v1/ai/{deployment}/`), SSE
//! streaming, Bearer auth, request ids, access logs, limits, metrics and graceful shutdown.
//!
//! The gateway is thin: bodies are parsed and validated by `kiln-api-types`, generation is the
//! scheduler's, and every failure is turned into an OpenAI error envelope in [`error`].

// Errors are the cold path of a request that already allocates; boxing them buys nothing.
#![allow(clippy::result_large_err)]

pub mod error;
mod openai;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use kiln_api_types::Limits;
use kiln_scheduler::EngineHandle;
use kiln_tokenizer::Tokenizer;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tokio::net::TcpListener;

pub use error::ApiError;

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
    /// Whether the model takes image input.
    pub accepts_images: bool,
    pub owned_by: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            served_model_names: vec!["default".into()],
            api_keys: Vec::new(),
            metrics_require_key: false,
            max_body_bytes: 32 << 20,
            request_timeout: Duration::from_secs(600),
            header_timeout: Duration::from_secs(30),
            limits: Limits::default(),
            accepts_images: false,
            owned_by: "kiln".into(),
        }
    }
}

/// What serves generation once the model is loaded.
#[derive(Debug, Clone)]
pub struct Backend {
    pub engine: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
}

#[derive(Debug)]
struct HttpMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
}

/// The HTTP service. Serve it with [`Gateway::serve`]; it answers `/health` with 503 until
/// [`Gateway::set_backend`] is called.
#[derive(Debug)]
pub struct Gateway {
    config: GatewayConfig,
    backend: OnceLock<Backend>,
    registry: Registry,
    metrics: HttpMetrics,
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

pub(crate) type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random-looking hex id (not a secret: ids only need to be unique).
pub(crate) fn random_hex(len: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(len);
    out
}

/// Compares without an early exit, so response time does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A streamed body fed by a channel; when the client goes away hyper drops it, the sender sees
/// the channel closed, and the request is cancelled.
pub(crate) struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Which route a request matched (also the metrics label).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Health,
    Metrics,
    OpenApi,
    Models,
    Model(String),
    Chat,
    Completions,
    NotFound,
}

impl Route {
    fn parse(path: &str) -> (Self, &'static str) {
        let rest = match path.strip_prefix("/v1") {
            Some(rest) => rest,
            None => {
                return match path {
                    "/health" => (Self::Health, "/health"),
                    "/metrics" => (Self::Metrics, "/metrics"),
                    "/openapi.json" => (Self::OpenApi, "/openapi.json"),
                    _ => (Self::NotFound, "unknown"),
                };
            }
        };
        // `/v1/ai/{deployment}/…` is the same API, scoped to a deployment.
        let (rest, scoped) = match rest.strip_prefix("/ai/") {
            Some(scoped) => match scoped.split_once('/') {
                Some((deployment, rest)) if !deployment.is_empty() => (rest, true),
                _ => return (Self::NotFound, "unknown"),
            },
            None => match rest.strip_prefix('/') {
                Some(rest) => (rest, false),
                None => return (Self::NotFound, "unknown"),
            },
        };
        let label = |plain: &'static str, deployment: &'static str| {
            if scoped { deployment } else { plain }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        match rest {
            "chat/completions" => (
                Self::Chat,
                label(
                    "/v1/chat/completions",
                    "/v1/ai/{deployment}/chat/completions",
                ),
            ),
            "completions" => (
                Self::Completions,
                label("/v1/completions", "/v1/ai/{deployment}/completions"),
            ),
            "models" => (
                Self::Models,
                label("/v1/models", "/v1/ai/{deployment}/models"),
            ),
            _ => match rest.strip_prefix("models/") {
                Some(id) if !id.is_empty() => (
                    Self::Model(id.to_string()),
                    label("/v1/models/{model}", "/v1/ai/{deployment}/models/{model}"),
                ),
                _ => (Self::NotFound, "unknown"),
            },
        }
    }

    fn allowed(&self) -> &'static str {
        match self {
            Self::Chat | Self::Completions => "POST",
            _ => "GET, HEAD",
        }
    }

    fn accepts(&self, method: &Method) -> bool {
        match self {
            Self::Chat | Self::Completions => method == Method::POST,
            Self::NotFound => true,
            _ => method == Method::GET || method == Method::HEAD,
        }
    }
}

impl Gateway {
    pub fn new(config: GatewayConfig, registry: Registry) -> Result<Arc<Self>, GatewayError> {
        if config.served_model_names.is_empty() {
            return Err(GatewayError::NoModelName);
        }
        let requests = IntCounterVec::new(
            Opts::new(
                "kiln_http_requests_total",
                "HTTP requests by route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "kiln_http_request_duration_seconds",
                "Time to the response head (streams: to the first byte).",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
            &["route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Arc::new(Self {
            config,
            backend: OnceLock::new(),
            registry,
            metrics: HttpMetrics { requests, latency },
            started: unix_now(),
        }))
    }

    /// The model is ready: generation routes start answering and `/health` turns 200.
    pub fn set_backend(&self, backend: Backend) {
        let _ = self.backend.set(backend);
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
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

    /// Accepts connections on `listener` until `shutdown` resolves, then stops accepting and
    /// gives in-flight requests (streams included) up to `drain` to finish.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
        drain: Duration,
    ) -> Result<(), GatewayError> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_timeout)
            .max_buf_size(64 * 1024);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let gw = self.clone();
                    let service = hyper::service::service_fn(move |req| {
                        let gw = gw.clone();
                        async move { Ok::<_, Infallible>(gw.handle(req, peer).await) }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        tracing::info!("draining in-flight requests (up to {drain:?})");
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("drain deadline passed; closing remaining connections");
        }
        Ok(())
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 200)
            .map_or_else(|| format!("req-{}", random_hex(24)), str::to_string);
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let (route, label) = Route::parse(&path);
        let mut response = match self.dispatch(req, &route).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", v);
        }
        let status = response.status();
        let elapsed = started.elapsed();
        self.metrics
            .requests
            .with_label_values(&[label, method.as_str(), status.as_str()])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[label])
            .observe(elapsed.as_secs_f64());
        tracing::info!(
            target: "kiln::access",
            request_id = %request_id,
            peer = %peer,
            method = %method,
            path = %path,
            status = status.as_u16(),
            ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
        if method == Method::HEAD {
            *response.body_mut() = full(Bytes::new());
        }
        response
    }

    async fn dispatch(
        self: &Arc<Self>,
        req: Request<Incoming>,
        route: &Route,
    ) -> Result<Response<Body>, ApiError> {
        if *route == Route::NotFound {
            return Err(ApiError::not_found(format!(
                "Invalid URL ({} {}).",
                req.method(),
                req.uri().path()
            )));
        }
        if !route.accepts(req.method()) {
            return Err(ApiError::method_not_allowed(route.allowed()));
        }
        let needs_key = match route {
            Route::Health | Route::OpenApi => false,
            Route::Metrics => self.config.metrics_require_key,
            _ => true,
        };
        if needs_key {
            self.authorize(&req)?;
        }
        match route {
            Route::Health => {
                use kiln_api_types::{Health, HealthStatus};
                Ok(match self.backend.get() {
                    Some(_) => json_response(
                        StatusCode::OK,
                        &Health {
                            status: HealthStatus::Ok,
                        },
                    ),
                    None => json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &Health {
                            status: HealthStatus::Loading,
                        },
                    ),
                })
            }
            Route::Metrics => {
                let mut buf = Vec::new();
                let encoder = prometheus::TextEncoder::new();
                if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
                    tracing::error!(error = %e, "encoding metrics");
                    return Err(ApiError::internal());
                }
                let mut r = Response::new(full(buf));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Ok(r)
            }
            Route::OpenApi => {
                // Describe what this server accepts: no image parts for a text-only model, and
                // the loaded vocabulary's bound on token ids.
                let mut limits = self.config.limits;
                if !self.config.accepts_images {
                    limits.max_images = 0;
                }
                if let Some(b) = self.backend.get() {
                    limits.vocab_size = Some(b.engine.model_info().vocab_size as u32);
                }
                Ok(json_response(
                    StatusCode::OK,
                    &kiln_api_types::openapi_for(&limits),
                ))
            }
            Route::Models => Ok(json_response(
                StatusCode::OK,
                &kiln_api_types::ModelList::new(self.models()),
            )),
            Route::Model(id) => {
                let found = self.models().into_iter().find(|m| &m.id == id);
                match found {
                    Some(m) => Ok(json_response(StatusCode::OK, &m)),
                    None => Err(ApiError::model_not_found(id)),
                }
            }
            Route::Chat => {
                let body = self.read_body(req).await?;
                self.with_timeout(openai::chat(self.clone(), body)).await
            }
            Route::Completions => {
                let body = self.read_body(req).await?;
                self.with_timeout(openai::completions(self.clone(), body))
                    .await
            }
            Route::NotFound => Err(ApiError::internal()),
        }
    }

    /// Bounds the time to the response head; a stream's body is not bounded by this.
    async fn with_timeout(
        &self,
        fut: impl std::future::Future<Output = Result<Response<Body>, ApiError>>,
    ) -> Result<Response<Body>, ApiError> {
        match tokio::time::timeout(self.config.request_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "The request timed out.",
            )
            .code("timeout")),
        }
    }

    fn models(&self) -> Vec<kiln_api_types::Model> {
        self.config
            .served_model_names
            .iter()
            .map(|n| kiln_api_types::Model::new(n.clone(), self.started, &self.config.owned_by))
            .collect()
    }

    fn authorize(&self, req: &Request<Incoming>) -> Result<(), ApiError> {
        if self.config.api_keys.is_empty() {
            return Ok(());
        }
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "Missing API key: send it as `Authorization: Bearer <key>`.",
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .unwrap_or_default();
        // Every key is compared, so timing does not reveal which one nearly matched.
        let ok = self.config.api_keys.iter().fold(false, |ok, k| {
            ok | constant_time_eq(k.as_bytes(), presented.as_bytes())
        });
        if ok {
            Ok(())
        } else {
            Err(ApiError::unauthorized("Incorrect API key provided."))
        }
    }

    async fn read_body(&self, req: Request<Incoming>) -> Result<Bytes, ApiError> {
        let limit = self.config.max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::too_large(limit));
        }
        match Limited::new(req.into_body(), limit).collect().await {
            Ok(b) => Ok(b.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(limit)),
            Err(e) => Err(
                ApiError::invalid(format!("Could not read the request body: {e}"))
                    .code("invalid_body"),
            ),
        }
    }
}

pub(crate) fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(full(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.status, &e.envelope());
    if let Some(secs) = e.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(allow) = e.allow {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    r
}

pub(crate) fn sse_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let mut r = Response::new(ChannelBody { rx }.boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_plain_and_deployment_scoped() {
        assert_eq!(Route::parse("/v1/chat/completions").0, Route::Chat);
        assert_eq!(
            Route::parse("/v1/ai/my-dep/chat/completions").0,
            Route::Chat
        );
        assert_eq!(
            Route::parse("/v1/ai/my-dep/completions").0,
            Route::Completions
        );
        assert_eq!(Route::parse("/v1/models").0, Route::Models);
        assert_eq!(
            Route::parse("/v1/models/org/name").0,
            Route::Model("org/name".into())
        );
        assert_eq!(Route::parse("/v1/ai//chat/completions").0, Route::NotFound);
        assert_eq!(Route::parse("/v2/chat/completions").0, Route::NotFound);
        assert_eq!(Route::parse("/health").0, Route::Health);
        assert_eq!(Route::parse("/v1/chat/completions/").0, Route::Chat);
    }

    #[test]
    fn keys_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn ids_are_hex_of_the_asked_length_and_differ() {
        let a = random_hex(24);
        assert_eq!(a.len(), 24);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(24));
    }
}
