//! The model list (`GET /v1/models`, `GET /v1/models/{model}`) and the health answer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ListObject, ModelObject};

/// A served model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Model {
    /// The name clients pass as `model`.
    pub id: String,
    pub object: ModelObject,
    /// Unix seconds.
    pub created: u64,
    pub owned_by: String,
    /// What the model takes as input: `["text"]`, or `["text", "image"]` for a vision model
    /// (a Kiln extension; OpenAI's model object has no such field, clients ignore it).
    pub input_modalities: Vec<Modality>,
    /// Prompt and output tokens together, at most (a Kiln extension; absent while the model
    /// loads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    /// Most images one request may carry, for a model that takes images (a Kiln extension,
    /// which the playground shows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_images_per_request: Option<u32>,
}

/// A kind of input a model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    Text,
    Image,
}

impl Model {
    /// A text model's entry.
    pub fn new(id: impl Into<String>, created: u64, owned_by: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            object: ModelObject::Value,
            created,
            owned_by: owned_by.into(),
            input_modalities: vec![Modality::Text],
            context_length: None,
            max_images_per_request: None,
        }
    }

    /// The entry with the context length served.
    pub fn with_context_length(mut self, tokens: u64) -> Self {
        self.context_length = Some(tokens);
        self
    }

    /// The entry of a model that also takes images, at most `max_per_request` in one request.
    pub fn with_images(mut self, max_per_request: u32) -> Self {
        self.input_modalities = vec![Modality::Text, Modality::Image];
        self.max_images_per_request = Some(max_per_request);
        self
    }
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModelList {
    pub object: ListObject,
    pub data: Vec<Model>,
}

impl ModelList {
    /// A list of `data`.
    pub fn new(data: Vec<Model>) -> Self {
        Self {
            object: ListObject::Value,
            data,
        }
    }
}

/// The server's state as `/health` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Serving (status 200).
    #[default]
    Ok,
    /// The model is still loading (status 503).
    Loading,
}

/// The body of `GET /health`: `{"status": "ok", "models": [...]}` with 200 once every served
/// model is ready, `{"status": "loading", ...}` with 503 before, each model's own state listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    pub status: HealthStatus,
    /// Every served model (by its first name) and whether it is ready.
    #[serde(default)]
    pub models: Vec<ModelHealth>,
}

/// One model's line in [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModelHealth {
    pub id: String,
    pub status: HealthStatus,
}
