//! The one place where every failure becomes an HTTP status and an OpenAI error envelope: each
//! [`ErrorKind`] owns its status, OpenAI `type`, `code` and `Retry-After`, every [`ApiError`] is
//! built from one, and the scheduler's, tokenizer's and validation's errors are mapped here.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use kiln_api_types::{ErrorEnvelope, INVALID_REQUEST_ERROR, ValidationError, code};
use kiln_scheduler::SchedulerError;
use kiln_tokenizer::TokenizerError;

use crate::body::{Body, json_response};

/// Every kind of error the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The body is not JSON (or not a JSON object).
    InvalidJson,
    /// A field has the wrong JSON type.
    InvalidType,
    /// A required field is missing.
    MissingRequiredParameter,
    /// A field OpenAI's API does not have.
    UnknownParameter,
    /// A value out of range or otherwise not allowed.
    InvalidValue,
    /// An OpenAI feature Kiln does not implement.
    UnsupportedParameter,
    /// A validation error with no code this gateway knows (none today: every code
    /// `kiln-api-types` writes has its own kind).
    InvalidRequest,
    /// The prompt and `max_tokens` do not fit the context or the KV cache.
    ContextLengthExceeded,
    /// Images sent to a model without vision.
    ImageInputNotSupported,
    /// An image that could not be fetched, decoded or processed.
    InvalidImage,
    /// A chat request to a model without a chat template.
    NoChatTemplate,
    /// The request body could not be read.
    InvalidBody,
    /// The body is over `max_body_bytes`.
    RequestTooLarge,
    /// A body that is not `application/json`.
    UnsupportedMediaType,
    /// A CORS preflight from an origin that is not allowed.
    OriginNotAllowed,
    /// No such route.
    NotFound,
    /// No such served model.
    ModelNotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// A missing or wrong API key.
    InvalidApiKey,
    /// The engine's queue is full.
    Overloaded,
    /// The model is still loading.
    ModelLoading,
    /// The engine is shutting down or gone.
    Unavailable,
    /// A non-streaming request ran past `request_timeout`.
    Timeout,
    /// The model failed on this request (non-finite logits, a failed step, its engine gone):
    /// that model's requests fail with this while other models keep serving; the details go
    /// to the log.
    ModelFailed,
    /// Anything else; the details go to the log, not to the client.
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidJson
            | Self::InvalidType
            | Self::MissingRequiredParameter
            | Self::UnknownParameter
            | Self::InvalidValue
            | Self::UnsupportedParameter
            | Self::InvalidRequest
            | Self::ContextLengthExceeded
            | Self::ImageInputNotSupported
            | Self::InvalidImage
            | Self::NoChatTemplate
            | Self::InvalidBody => StatusCode::BAD_REQUEST,
            Self::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            Self::NotFound | Self::ModelNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::InvalidApiKey => StatusCode::UNAUTHORIZED,
            Self::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Self::ModelLoading | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::ModelFailed | Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's error `type`.
    pub fn error_type(self) -> &'static str {
        match self {
            Self::InvalidApiKey => "authentication_error",
            Self::Overloaded => "rate_limit_error",
            Self::ModelLoading
            | Self::Unavailable
            | Self::Timeout
            | Self::ModelFailed
            | Self::Internal => "server_error",
            _ => INVALID_REQUEST_ERROR,
        }
    }

    /// OpenAI's error `code`.
    pub fn code(self) -> Option<&'static str> {
        Some(match self {
            Self::InvalidJson => code::INVALID_JSON,
            Self::InvalidType => code::INVALID_TYPE,
            Self::MissingRequiredParameter => code::MISSING_REQUIRED_PARAMETER,
            Self::UnknownParameter => code::UNKNOWN_PARAMETER,
            Self::InvalidValue => code::INVALID_VALUE,
            Self::UnsupportedParameter => code::UNSUPPORTED_PARAMETER,
            Self::InvalidRequest | Self::Internal => return None,
            Self::ContextLengthExceeded => "context_length_exceeded",
            Self::ImageInputNotSupported => "image_input_not_supported",
            Self::InvalidImage => "invalid_image",
            Self::NoChatTemplate => "no_chat_template",
            Self::InvalidBody => "invalid_body",
            Self::RequestTooLarge => "request_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::NotFound => "not_found",
            Self::ModelNotFound => "model_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::InvalidApiKey => "invalid_api_key",
            Self::Overloaded => "overloaded",
            Self::ModelLoading => "model_loading",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::ModelFailed => "model_error",
        })
    }

    /// Seconds for the `Retry-After` header: when a retry can be expected to succeed.
    pub fn retry_after(self) -> Option<u64> {
        match self {
            Self::Overloaded => Some(1),
            Self::ModelLoading | Self::Unavailable => Some(5),
            _ => None,
        }
    }

    /// The kind of a [`ValidationError`], by its code.
    fn of_validation(code: Option<&str>) -> Self {
        match code {
            Some(code::INVALID_JSON) => Self::InvalidJson,
            Some(code::INVALID_TYPE) => Self::InvalidType,
            Some(code::MISSING_REQUIRED_PARAMETER) => Self::MissingRequiredParameter,
            Some(code::UNKNOWN_PARAMETER) => Self::UnknownParameter,
            Some(code::INVALID_VALUE) => Self::InvalidValue,
            Some(code::UNSUPPORTED_PARAMETER) => Self::UnsupportedParameter,
            Some(other) => {
                tracing::warn!(code = other, "validation error code without an ErrorKind");
                Self::InvalidRequest
            }
            None => Self::InvalidRequest,
        }
    }
}

/// A failed request, ready to be served.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", kind.status())]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    pub param: Option<String>,
    /// `Allow` header value, for 405.
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            param: None,
            allow: None,
        }
    }

    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            ErrorKind::ModelNotFound,
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .param("model")
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = Self::new(
            ErrorKind::MethodNotAllowed,
            format!("Method not allowed; this route accepts {allow}."),
        );
        e.allow = Some(allow);
        e
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            ErrorKind::RequestTooLarge,
            format!("The request body is larger than the limit of {limit} bytes."),
        )
    }

    pub fn loading(model: &str) -> Self {
        Self::new(
            ErrorKind::ModelLoading,
            format!("The model `{model}` is still loading; retry shortly."),
        )
    }

    pub fn timeout() -> Self {
        Self::new(ErrorKind::Timeout, "The request timed out.")
    }

    /// A 500 that says nothing about internals (those go to the log).
    pub fn internal() -> Self {
        Self::new(
            ErrorKind::Internal,
            "The server had an error while processing your request.",
        )
    }

    pub fn model_failed() -> Self {
        Self::new(
            ErrorKind::ModelFailed,
            "The model failed while generating this request; the server's log has the details.",
        )
    }

    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope::new(
            self.message.clone(),
            self.kind.error_type(),
            self.param.clone(),
            self.kind.code().map(str::to_owned),
        )
    }

    /// The HTTP response: the envelope as JSON, with `Retry-After` and `Allow` where they apply.
    pub(crate) fn to_response(&self) -> Response<Body> {
        let mut r = json_response(self.status(), &self.envelope());
        if let Some(secs) = self.kind.retry_after() {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self.allow {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        // The OpenAI SDKs retry a 5xx twice unless told not to: a generation that ran past the
        // timeout would run three times.
        if self.kind == ErrorKind::Timeout {
            r.headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        r
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self {
            kind: ErrorKind::of_validation(e.code.as_deref()),
            message: e.message,
            param: e.param,
            allow: None,
        }
    }
}

/// Scheduler errors; `prompt_param` names the field that holds the prompt (`messages` or
/// `prompt`).
pub fn from_scheduler(e: SchedulerError, prompt_param: &str) -> ApiError {
    let kind = match &e {
        SchedulerError::ContextLengthExceeded { .. } | SchedulerError::ExceedsKvCache { .. } => {
            ErrorKind::ContextLengthExceeded
        }
        SchedulerError::EmptyPrompt
        | SchedulerError::BadPromptToken { .. }
        | SchedulerError::BadLogitBias { .. }
        | SchedulerError::InvalidParameter { .. } => ErrorKind::InvalidValue,
        SchedulerError::Overloaded { .. } => ErrorKind::Overloaded,
        SchedulerError::ShuttingDown => ErrorKind::Unavailable,
        // A stopped engine does not come back: no Retry-After, and nothing about the model's
        // internals to the client.
        SchedulerError::EngineStopped => {
            tracing::error!("a request found its model's engine stopped");
            return ApiError::model_failed();
        }
        SchedulerError::Model(detail) => {
            tracing::error!(error = %detail, "model step failed");
            return ApiError::model_failed();
        }
    };
    let param = match &e {
        SchedulerError::ContextLengthExceeded { .. }
        | SchedulerError::ExceedsKvCache { .. }
        | SchedulerError::EmptyPrompt
        | SchedulerError::BadPromptToken { .. } => Some(prompt_param),
        SchedulerError::BadLogitBias { .. } => Some("logit_bias"),
        SchedulerError::InvalidParameter { param, .. } => Some(*param),
        _ => None,
    };
    let err = ApiError::new(kind, e.to_string());
    match param {
        Some(param) => err.param(param),
        None => err,
    }
}

impl From<TokenizerError> for ApiError {
    fn from(e: TokenizerError) -> Self {
        match e {
            // The template refused these messages (e.g. roles that do not alternate).
            TokenizerError::TemplateRejected { message, .. } => {
                ApiError::new(ErrorKind::InvalidValue, message).param("messages")
            }
            TokenizerError::ImagePlaceholders { .. } => {
                ApiError::new(ErrorKind::InvalidValue, e.to_string()).param("messages")
            }
            TokenizerError::NoChatTemplate => ApiError::new(
                ErrorKind::NoChatTemplate,
                "This model has no chat template (it is a base model, or its file carries none): \
                 use /v1/completions with a raw prompt, or start Kiln with --chat-template FILE.",
            ),
            // Only chat prompts reach this through `?`; completions name `prompt` themselves.
            TokenizerError::PromptTooLong { .. } => {
                ApiError::new(ErrorKind::ContextLengthExceeded, e.to_string()).param("messages")
            }
            TokenizerError::UnknownTokenId { .. } => {
                ApiError::new(ErrorKind::InvalidValue, e.to_string()).param("prompt")
            }
            other => {
                tracing::error!(error = %other, "tokenizer failed");
                ApiError::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_validation_code_has_its_kind() {
        for c in [
            code::INVALID_JSON,
            code::INVALID_TYPE,
            code::MISSING_REQUIRED_PARAMETER,
            code::UNKNOWN_PARAMETER,
            code::INVALID_VALUE,
            code::UNSUPPORTED_PARAMETER,
        ] {
            let e = ApiError::from(ValidationError::new("m", Some("p".into()), c));
            let body = e.envelope().error;
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            assert_eq!(body.code.as_deref(), Some(c));
            assert_eq!(body.kind, INVALID_REQUEST_ERROR);
            assert_eq!(body.param.as_deref(), Some("p"));
        }
    }

    #[test]
    fn kinds_keep_their_wire_status_type_and_code() {
        use ErrorKind::*;
        let wire = |kind: ErrorKind| {
            let code = kind.code().unwrap_or("-");
            format!("{} {} {code}", kind.status().as_u16(), kind.error_type())
        };
        let table = [
            (
                ContextLengthExceeded,
                "400 invalid_request_error context_length_exceeded",
            ),
            (
                ImageInputNotSupported,
                "400 invalid_request_error image_input_not_supported",
            ),
            (NoChatTemplate, "400 invalid_request_error no_chat_template"),
            (InvalidBody, "400 invalid_request_error invalid_body"),
            (InvalidRequest, "400 invalid_request_error -"),
            (
                RequestTooLarge,
                "413 invalid_request_error request_too_large",
            ),
            (InvalidImage, "400 invalid_request_error invalid_image"),
            (
                UnsupportedMediaType,
                "415 invalid_request_error unsupported_media_type",
            ),
            (
                OriginNotAllowed,
                "403 invalid_request_error origin_not_allowed",
            ),
            (NotFound, "404 invalid_request_error not_found"),
            (ModelNotFound, "404 invalid_request_error model_not_found"),
            (
                MethodNotAllowed,
                "405 invalid_request_error method_not_allowed",
            ),
            (InvalidApiKey, "401 authentication_error invalid_api_key"),
            (Overloaded, "429 rate_limit_error overloaded"),
            (ModelLoading, "503 server_error model_loading"),
            (Unavailable, "503 server_error unavailable"),
            (Timeout, "504 server_error timeout"),
            (ModelFailed, "500 server_error model_error"),
            (Internal, "500 server_error -"),
        ];
        for (kind, expected) in table {
            assert_eq!(wire(kind), expected, "{kind:?}");
        }
    }

    #[test]
    fn scheduler_errors_name_the_field() {
        let e = from_scheduler(SchedulerError::EmptyPrompt, "messages");
        assert_eq!(
            (e.kind, e.param.as_deref()),
            (ErrorKind::InvalidValue, Some("messages"))
        );
        let e = from_scheduler(
            SchedulerError::BadLogitBias {
                id: 9,
                vocab_size: 2,
            },
            "prompt",
        );
        assert_eq!(e.param.as_deref(), Some("logit_bias"));
        let e = from_scheduler(SchedulerError::Overloaded { waiting: 3 }, "prompt");
        assert_eq!((e.kind, e.param.as_deref()), (ErrorKind::Overloaded, None));
        let r = e.to_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        // A timed-out generation is not to be retried by the SDKs.
        let r = ApiError::timeout().to_response();
        assert_eq!(r.headers()["x-should-retry"], "false");
        let e = from_scheduler(SchedulerError::Model("boom".into()), "prompt");
        assert_eq!(e.kind, ErrorKind::ModelFailed);
        assert!(!e.message.contains("boom"));
        let r = from_scheduler(SchedulerError::EngineStopped, "prompt").to_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }
}
