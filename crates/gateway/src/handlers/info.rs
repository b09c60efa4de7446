//! The read-only routes: health, Prometheus metrics, the OpenAPI document and the model list.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use kiln_api_types::{Health, HealthStatus, Model, ModelList};

use crate::Gateway;
use crate::body::{Body, full, json_response};
use crate::error::ApiError;

/// 200 once the model is loaded, 503 before.
pub(crate) fn health(gw: &Gateway) -> Response<Body> {
    match gw.backend.get() {
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
    }
}

pub(crate) fn metrics(gw: &Gateway) -> Result<Response<Body>, ApiError> {
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = prometheus::Encoder::encode(&encoder, &gw.registry.gather(), &mut buf) {
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

/// The document for what this server accepts: no image parts for a text-only model (or before
/// the model is loaded), and the
/// loaded vocabulary's bound on token ids.
pub(crate) fn openapi(gw: &Gateway) -> Response<Body> {
    let mut limits = gw.config.limits;
    if !gw.accepts_images() {
        limits.max_images = 0;
    }
    if let Some(b) = gw.backend.get() {
        limits.vocab_size = Some(b.engine.model_info().vocab_size as u32);
    }
    json_response(StatusCode::OK, &kiln_api_types::openapi_for(&limits))
}

pub(crate) fn models(gw: &Gateway) -> Response<Body> {
    json_response(StatusCode::OK, &ModelList::new(served(gw)))
}

pub(crate) fn model(gw: &Gateway, id: &str) -> Result<Response<Body>, ApiError> {
    match served(gw).into_iter().find(|m| m.id == id) {
        Some(m) => Ok(json_response(StatusCode::OK, &m)),
        None => Err(ApiError::model_not_found(id)),
    }
}

fn served(gw: &Gateway) -> Vec<Model> {
    gw.config
        .served_model_names
        .iter()
        .map(|n| {
            let mut m = Model::new(n.clone(), gw.started, &gw.config.owned_by);
            if let Some(b) = gw.backend.get() {
                m = m.with_context_length(b.engine.model_info().context_length as u64);
            }
            if gw.accepts_images() {
                m = m.with_images();
            }
            m
        })
        .collect()
}
