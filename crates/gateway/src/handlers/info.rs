//! The read-only routes: health, Prometheus metrics, the OpenAPI document and the model list.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use kiln_api_types::{Health, HealthStatus, Model, ModelHealth, ModelList};

use crate::Gateway;
use crate::body::{Body, full, json_response};
use crate::error::ApiError;

/// 200 once every model is loaded, 503 before; each model's state listed either way.
pub(crate) fn health(gw: &Gateway) -> Response<Body> {
    let state = |ready: bool| {
        if ready {
            HealthStatus::Ok
        } else {
            HealthStatus::Loading
        }
    };
    let models: Vec<ModelHealth> = gw
        .config
        .models
        .iter()
        .zip(&gw.backends)
        .map(|(m, b)| ModelHealth {
            id: m.id().to_string(),
            status: state(b.get().is_some()),
        })
        .collect();
    let ready = models.iter().all(|m| m.status == HealthStatus::Ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &Health {
            status: state(ready),
            models,
        },
    )
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

/// The document for what this server accepts: image parts only when a loaded model takes
/// images, and token ids bounded by the largest loaded vocabulary (each request is checked
/// against its own model's).
pub(crate) fn openapi(gw: &Gateway) -> Response<Body> {
    let mut limits = gw.config.limits;
    if !gw.loaded().any(|(_, b)| gw.takes_images(b)) {
        limits.max_images = 0;
    }
    limits.vocab_size = gw
        .loaded()
        .map(|(_, b)| b.engine.model_info().vocab_size as u32)
        .max();
    json_response(StatusCode::OK, &kiln_api_types::openapi_for(&limits))
}

pub(crate) fn models(gw: &Gateway, deployment: Option<&str>) -> Result<Response<Body>, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        &ModelList::new(served(gw, deployment)?),
    ))
}

pub(crate) fn model(
    gw: &Gateway,
    deployment: Option<&str>,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    match served(gw, deployment)?.into_iter().find(|m| m.id == id) {
        Some(m) => Ok(json_response(StatusCode::OK, &m)),
        None => Err(ApiError::model_not_found(id)),
    }
}

/// Every name of every model a path serves (a mapped deployment's model only), in order.
fn served(gw: &Gateway, deployment: Option<&str>) -> Result<Vec<Model>, ApiError> {
    let only = gw.deployment_model(deployment)?;
    let mut out = Vec::new();
    for (i, (model, backend)) in gw.config.models.iter().zip(&gw.backends).enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        for name in &model.names {
            let mut m = Model::new(name.clone(), gw.started, &gw.config.owned_by);
            if let Some(b) = backend.get() {
                m = m.with_context_length(b.engine.model_info().context_length as u64);
                if gw.takes_images(b) {
                    m = m.with_images(gw.config.limits.max_images as u32);
                }
            }
            out.push(m);
        }
    }
    Ok(out)
}
