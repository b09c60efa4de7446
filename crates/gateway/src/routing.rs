//! Routing: which route a path names (and its metrics label), which methods it takes, whether
//! it needs a key, and the dispatch to its handler.

use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::body::{Body, read_body};
use crate::error::{ApiError, ErrorKind};
use crate::playground::{self, Asset};
use crate::{Gateway, auth, handlers};

/// Which route a request matched (also the metrics label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Health,
    Metrics,
    OpenApi,
    Models,
    Model(String),
    Chat,
    Completions,
    /// The playground page or one of its files.
    Page(&'static Asset),
    /// What the playground needs to know of this server.
    PageConfig,
    NotFound,
}

impl Route {
    /// The route, its metrics label (the path with its variable parts named, so labels stay
    /// few) and the deployment a `/v1/ai/{deployment}/…` path names.
    pub(crate) fn parse(path: &str) -> (Self, &'static str, Option<&str>) {
        let rest = match path.strip_prefix("/v1") {
            Some(rest) => rest,
            None => {
                let (route, label) = match path {
                    "/health" => (Self::Health, "/health"),
                    "/metrics" => (Self::Metrics, "/metrics"),
                    "/openapi.json" => (Self::OpenApi, "/openapi.json"),
                    playground::CONFIG_PATH => (Self::PageConfig, "/playground"),
                    _ => match Asset::find(path) {
                        Some(asset) => (Self::Page(asset), "/playground"),
                        None => (Self::NotFound, "unknown"),
                    },
                };
                return (route, label, None);
            }
        };
        // `/v1/ai/{deployment}/…` is the same API, scoped to a deployment.
        let (rest, deployment) = match rest.strip_prefix("/ai/") {
            Some(scoped) => match scoped.split_once('/') {
                Some((deployment, rest)) if !deployment.is_empty() => (rest, Some(deployment)),
                _ => return (Self::NotFound, "unknown", None),
            },
            None => match rest.strip_prefix('/') {
                Some(rest) => (rest, None),
                None => return (Self::NotFound, "unknown", None),
            },
        };
        let (route, label) = Self::parse_api(rest, deployment.is_some());
        (route, label, deployment)
    }

    /// A path below `/v1/` (or `/v1/ai/{deployment}/`).
    fn parse_api(rest: &str, scoped: bool) -> (Self, &'static str) {
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

    /// Health, the OpenAPI document and the playground's files are always public (the page
    /// asks for a key when the API needs one); metrics as configured.
    fn needs_key(&self, metrics_require_key: bool) -> bool {
        match self {
            Self::Health | Self::OpenApi | Self::Page(_) | Self::PageConfig => false,
            Self::Metrics => metrics_require_key,
            _ => true,
        }
    }
}

impl Gateway {
    pub(crate) async fn dispatch(
        self: &Arc<Self>,
        req: Request<Incoming>,
        route: &Route,
        deployment: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        if *route == Route::NotFound {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!("Invalid URL ({} {}).", req.method(), req.uri().path()),
            ));
        }
        if let Some(answer) = self.config.cors.preflight(&req, route.allowed()) {
            return answer;
        }
        if !route.accepts(req.method()) {
            return Err(ApiError::method_not_allowed(route.allowed()));
        }
        if route.needs_key(self.config.metrics_require_key) {
            auth::authorize(&self.config.api_keys, &req)?;
        }
        match route {
            Route::Health => Ok(handlers::info::health(self)),
            Route::Metrics => handlers::info::metrics(self),
            Route::OpenApi => Ok(handlers::info::openapi(self)),
            Route::Page(asset) => Ok(asset.response()),
            Route::PageConfig => Ok(playground::config_response(
                !self.config.api_keys.is_empty(),
            )),
            Route::Models => handlers::info::models(self, deployment),
            Route::Model(id) => handlers::info::model(self, deployment, id),
            Route::Chat => {
                require_json(&req)?;
                let body = read_body(req, self.config.max_body_bytes).await?;
                let deployment = deployment.map(str::to_string);
                self.with_timeout(handlers::chat::chat(self.clone(), deployment, body))
                    .await
            }
            Route::Completions => {
                require_json(&req)?;
                let body = read_body(req, self.config.max_body_bytes).await?;
                let deployment = deployment.map(str::to_string);
                self.with_timeout(handlers::completions::completions(
                    self.clone(),
                    deployment,
                    body,
                ))
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
            Err(_) => Err(ApiError::timeout()),
        }
    }
}

/// A body must be JSON. A browser sends `text/plain` or form-encoded bodies across sites without
/// asking (no preflight), so serving those would let any page spend a keyless server's compute
/// from its visitors' browsers. A missing `Content-Type` stays accepted (no browser sends that).
fn require_json<B>(req: &Request<B>) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    let media = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            format!(
                "The request body must be JSON, sent as `Content-Type: application/json` (got \
                 `{media}`)."
            ),
        ))
    }
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
        assert_eq!(Route::parse("/v1/chat/completions").2, None);
        assert_eq!(Route::parse("/v1/ai/my-dep/models/x").2, Some("my-dep"));
        for page in ["/", "/playground", "/playground/app.js"] {
            let (route, label, _) = Route::parse(page);
            assert!(matches!(route, Route::Page(_)), "{page}");
            assert_eq!(label, "/playground");
            assert!(!route.needs_key(true) && route.accepts(&Method::HEAD));
        }
        assert_eq!(Route::parse("/playground/x.js").0, Route::NotFound);
    }

    #[test]
    fn bodies_must_be_json() {
        let with = |ct: Option<&str>| {
            let mut r = Request::builder();
            if let Some(ct) = ct {
                r = r.header(http::header::CONTENT_TYPE, ct);
            }
            require_json(&r.body(()).unwrap_or_else(|_| Request::new(())))
        };
        assert!(with(None).is_ok());
        assert!(with(Some("application/json")).is_ok());
        assert!(with(Some("Application/JSON; charset=utf-8")).is_ok());
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            assert_eq!(
                with(Some(bad)).unwrap_err().kind,
                ErrorKind::UnsupportedMediaType,
                "{bad}"
            );
        }
    }

    #[test]
    fn methods_and_keys_per_route() {
        assert!(Route::Chat.accepts(&Method::POST) && !Route::Chat.accepts(&Method::GET));
        assert!(Route::Models.accepts(&Method::HEAD) && !Route::Models.accepts(&Method::POST));
        assert_eq!(Route::Completions.allowed(), "POST");
        assert!(!Route::Health.needs_key(true) && !Route::OpenApi.needs_key(true));
        assert!(Route::Metrics.needs_key(true) && !Route::Metrics.needs_key(false));
        assert!(Route::Model("m".into()).needs_key(false));
    }
}
