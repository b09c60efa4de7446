//! The one place where every failure becomes an HTTP status and an OpenAI error envelope.

use http::StatusCode;
use kiln_api_types::{ErrorEnvelope, ValidationError};
use kiln_scheduler::SchedulerError;
use kiln_tokenizer::TokenizerError;

/// A failed request, ready to be served.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI's error `type`.
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<String>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// `Allow` header value, for 405.
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
            allow: None,
        }
    }

    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message).code("not_found")
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .param("model")
        .code("model_not_found")
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message).code("invalid_api_key")
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("Method not allowed; this route accepts {allow}."),
        )
        .code("method_not_allowed");
        e.allow = Some(allow);
        e
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The request body is larger than the limit of {limit} bytes."),
        )
        .code("request_too_large")
    }

    pub fn loading() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "The model is still loading; retry shortly.",
        )
        .code("model_loading");
        e.retry_after = Some(5);
        e
    }

    /// A 500 that says nothing about internals (those go to the log).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The server had an error while processing your request.",
        )
    }

    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope::new(
            self.message.clone(),
            self.kind,
            self.param.clone(),
            self.code.clone(),
        )
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: e.message,
            param: e.param,
            code: e.code,
            retry_after: None,
            allow: None,
        }
    }
}

/// Scheduler errors; `prompt_param` names the field that holds the prompt (`messages` or
/// `prompt`).
pub fn from_scheduler(e: SchedulerError, prompt_param: &str) -> ApiError {
    match &e {
        SchedulerError::ContextLengthExceeded { .. } | SchedulerError::ExceedsKvCache { .. } => {
            ApiError::invalid(e.to_string())
                .param(prompt_param)
                .code("context_length_exceeded")
        }
        SchedulerError::EmptyPrompt | SchedulerError::BadPromptToken { .. } => {
            ApiError::invalid(e.to_string())
                .param(prompt_param)
                .code("invalid_value")
        }
        SchedulerError::BadLogitBias { .. } => ApiError::invalid(e.to_string())
            .param("logit_bias")
            .code("invalid_value"),
        SchedulerError::InvalidParameter { param, .. } => ApiError::invalid(e.to_string())
            .param(*param)
            .code("invalid_value"),
        SchedulerError::Overloaded { .. } => {
            let mut err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                e.to_string(),
            )
            .code("overloaded");
            err.retry_after = Some(1);
            err
        }
        SchedulerError::ShuttingDown | SchedulerError::EngineStopped => {
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                e.to_string(),
            )
            .code("unavailable");
            err.retry_after = Some(5);
            err
        }
        SchedulerError::Model(detail) => {
            tracing::error!(error = %detail, "model step failed");
            ApiError::internal()
        }
    }
}

impl From<TokenizerError> for ApiError {
    fn from(e: TokenizerError) -> Self {
        match e {
            // The template refused these messages (e.g. roles that do not alternate).
            TokenizerError::TemplateRejected { message, .. } => ApiError::invalid(message)
                .param("messages")
                .code("invalid_value"),
            TokenizerError::NoChatTemplate => ApiError::invalid(
                "This model has no chat template; use /v1/completions with a raw prompt.",
            )
            .code("no_chat_template"),
            TokenizerError::UnknownTokenId { .. } => ApiError::invalid(e.to_string())
                .param("prompt")
                .code("invalid_value"),
            other => {
                tracing::error!(error = %other, "tokenizer failed");
                ApiError::internal()
            }
        }
    }
}
