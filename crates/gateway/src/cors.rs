//! CORS: off unless origins are allowed (`--allowed-origins`). Then a preflight (`OPTIONS` with
//! `Origin` and `Access-Control-Request-Method`) from an allowed origin is answered 204 with
//! the route's methods and the asked headers, and every response to an allowed origin carries
//! `Access-Control-Allow-Origin` for it; a preflight from another origin is a 403.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::{Body, full};
use crate::error::{ApiError, ErrorKind};

/// The headers a page may send: the API's own, and what the OpenAI SDKs add.
const ALLOWED_HEADERS: &str = "authorization, content-type, x-request-id, openai-organization, \
     openai-project, x-stainless-arch, x-stainless-lang, x-stainless-os, \
     x-stainless-package-version, x-stainless-retry-count, x-stainless-runtime, \
     x-stainless-runtime-version, x-stainless-timeout";

/// Which origins may call the API from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    /// Exact origins (`https://app.example.com`), or `*` for any.
    pub allowed_origins: Vec<String>,
}

impl Cors {
    fn allows(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }

    pub(crate) fn enabled(&self) -> bool {
        !self.allowed_origins.is_empty()
    }

    /// The answer to a preflight, when `req` is one and CORS is on.
    pub(crate) fn preflight<B>(
        &self,
        req: &Request<B>,
        allowed_methods: &'static str,
    ) -> Option<Result<Response<Body>, ApiError>> {
        if !self.enabled()
            || req.method() != Method::OPTIONS
            || !req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let origin = origin(req.headers())?;
        if !self.allows(origin) {
            return Some(Err(ApiError::new(
                ErrorKind::OriginNotAllowed,
                format!("The origin `{origin}` may not call this server (see --allowed-origins)."),
            )));
        }
        let mut r = Response::new(full(Vec::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(allowed_methods),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(600));
        Some(Ok(r))
    }

    /// Marks a response to an allowed origin as readable by it.
    pub(crate) fn decorate(&self, request: &HeaderMap, response: &mut Response<Body>) {
        if !self.enabled() {
            return;
        }
        let h = response.headers_mut();
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin(request).filter(|o| self.allows(o)) else {
            return;
        };
        if let Ok(v) = HeaderValue::from_str(origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("x-request-id, retry-after"),
            );
        }
    }
}

fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preflight(origin: &str) -> Request<()> {
        Request::builder()
            .method(Method::OPTIONS)
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(())
            .unwrap_or_else(|_| Request::new(()))
    }

    #[test]
    fn preflights_are_answered_for_allowed_origins_only() {
        let off = Cors::default();
        assert!(
            off.preflight(&preflight("https://a.example"), "POST")
                .is_none()
        );
        let on = Cors {
            allowed_origins: vec!["https://a.example".into()],
        };
        let ok = on.preflight(&preflight("https://a.example"), "POST");
        let Some(Ok(r)) = ok else {
            panic!("a preflight from an allowed origin is answered");
        };
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_METHODS], "POST");
        let Some(Err(e)) = on.preflight(&preflight("https://evil.example"), "POST") else {
            panic!("another origin is refused");
        };
        assert_eq!(e.kind, ErrorKind::OriginNotAllowed);
        let any = Cors {
            allowed_origins: vec!["*".into()],
        };
        assert!(matches!(
            any.preflight(&preflight("https://b.example"), "POST"),
            Some(Ok(_))
        ));
    }
}
