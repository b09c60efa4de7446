//! Every request's bookkeeping around its route: the request id, CORS headers, HTTP metrics, the
//! access log, and HEAD answered as GET without a body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::Gateway;
use crate::body::{Body, full};
use crate::ids::random_hex;
use crate::routing::Route;

/// Latency buckets in seconds: from a cached `/health` to a long non-streaming generation.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The longest client-given `x-request-id` that is kept (longer ones are replaced).
const MAX_REQUEST_ID_LEN: usize = 200;

#[derive(Debug)]
pub(crate) struct HttpMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl HttpMetrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
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
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Self { requests, latency })
    }
}

impl Gateway {
    /// Serves one request: routes it, turns an error into its response, and records it.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let started = Instant::now();
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN)
            .map_or_else(|| format!("req-{}", random_hex(24)), str::to_string);
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let (route, label, deployment) = Route::parse(&path);
        let request_headers = self.config.cors.enabled().then(|| req.headers().clone());
        let mut response = match self.dispatch(req, &route, deployment).await {
            Ok(r) => r,
            Err(e) => e.to_response(),
        };
        if let Some(headers) = &request_headers {
            self.config.cors.decorate(headers, &mut response);
        }
        // No response is ever to be read as anything but its declared type.
        response
            .headers_mut()
            .entry(http::header::X_CONTENT_TYPE_OPTIONS)
            .or_insert(HeaderValue::from_static("nosniff"));
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
}
