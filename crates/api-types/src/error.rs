//! The crate's one error type, [`ValidationError`], and OpenAI's error envelope that carries any
//! error to the client.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The OpenAI error `type` of every [`ValidationError`] (served with status 400).
pub const INVALID_REQUEST_ERROR: &str = "invalid_request_error";

/// The `code` values a [`ValidationError`] carries, so callers and tests need not spell them.
pub mod code {
    /// The body is not JSON (or not a JSON object).
    pub const INVALID_JSON: &str = "invalid_json";
    /// A field has the wrong JSON type.
    pub const INVALID_TYPE: &str = "invalid_type";
    /// A required field is missing (or null where a value is required).
    pub const MISSING_REQUIRED_PARAMETER: &str = "missing_required_parameter";
    /// A field OpenAI's API does not have.
    pub const UNKNOWN_PARAMETER: &str = "unknown_parameter";
    /// A value out of range or otherwise not allowed.
    pub const INVALID_VALUE: &str = "invalid_value";
    /// An OpenAI feature Kiln does not implement (tools, audio, JSON mode, …).
    pub const UNSUPPORTED_PARAMETER: &str = "unsupported_parameter";
}

/// A request Kiln will not run, with the field at fault: the gateway answers it with status 400
/// and error type [`INVALID_REQUEST_ERROR`] (see [`ValidationError::to_envelope`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    /// Human-readable, names the field.
    pub message: String,
    /// The field at fault as a path (`temperature`, `messages[0].content[1].image_url.url`);
    /// `None` when the body as a whole is wrong.
    pub param: Option<String>,
    /// One of [`code`]'s values.
    pub code: Option<String>,
}

impl ValidationError {
    /// An error about `param` (or the whole body when `None`).
    pub fn new(message: impl Into<String>, param: Option<String>, code: &str) -> Self {
        Self {
            message: message.into(),
            param,
            code: Some(code.to_owned()),
        }
    }

    /// An error about the field at `param`.
    pub(crate) fn at(param: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        Self::new(message, Some(param.into()), code)
    }

    /// The OpenAI error envelope for this error.
    pub fn to_envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope::new(
            self.message.clone(),
            INVALID_REQUEST_ERROR,
            self.param.clone(),
            self.code.clone(),
        )
    }
}

impl From<ValidationError> for ErrorEnvelope {
    fn from(err: ValidationError) -> Self {
        ErrorEnvelope::new(err.message, INVALID_REQUEST_ERROR, err.param, err.code)
    }
}

/// The body of every error response: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

impl ErrorEnvelope {
    /// An envelope with the given message, OpenAI error type, param and code.
    pub fn new(
        message: impl Into<String>,
        kind: impl Into<String>,
        param: Option<String>,
        code: Option<String>,
    ) -> Self {
        Self {
            error: ErrorBody {
                message: message.into(),
                kind: kind.into(),
                param,
                code,
            },
        }
    }
}

/// OpenAI's error object; `param` and `code` are always written, null when absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub message: String,
    /// OpenAI's error type: `invalid_request_error`, `authentication_error`, `not_found_error`,
    /// `rate_limit_error`, `server_error`, ….
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}
