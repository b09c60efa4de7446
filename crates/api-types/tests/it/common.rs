//! Helpers shared by the integration tests: parse and validate a JSON literal in one step, and
//! assert which field an error names.

use kiln_api_types::{
    Limits, ValidatedChat, ValidatedCompletion, ValidationError, parse_chat_request,
    parse_completion_request,
};
use serde_json::Value;

pub(crate) fn chat_with(body: &Value, limits: &Limits) -> Result<ValidatedChat, ValidationError> {
    parse_chat_request(body.to_string().as_bytes())?.validate(limits)
}

pub(crate) fn chat(body: &Value) -> Result<ValidatedChat, ValidationError> {
    chat_with(body, &Limits::default())
}

pub(crate) fn completion_with(
    body: &Value,
    limits: &Limits,
) -> Result<ValidatedCompletion, ValidationError> {
    parse_completion_request(body.to_string().as_bytes())?.validate(limits)
}

pub(crate) fn completion(body: &Value) -> Result<ValidatedCompletion, ValidationError> {
    completion_with(body, &Limits::default())
}

/// A minimal valid chat body with `extra` fields merged in.
pub(crate) fn chat_body(extra: Value) -> Value {
    let mut body = serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}]
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// A minimal valid legacy completion body with `extra` fields merged in.
pub(crate) fn completion_body(extra: Value) -> Value {
    let mut body = serde_json::json!({ "model": "m", "prompt": "Once upon a time" });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// The error, which must name `param` and carry `code`.
#[track_caller]
pub(crate) fn assert_rejects<T: std::fmt::Debug>(
    result: Result<T, ValidationError>,
    param: &str,
    code: &str,
) -> ValidationError {
    let err = result.expect_err("the request should have been rejected");
    assert_eq!(err.param.as_deref(), Some(param), "param of {err:?}");
    assert_eq!(err.code.as_deref(), Some(code), "code of {err:?}");
    assert!(!err.message.is_empty());
    err
}
