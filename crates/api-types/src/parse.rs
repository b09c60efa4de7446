//! Request bodies from bytes: JSON into the wire types, every failure a [`ValidationError`] that
//! says where (line and column for broken JSON, the field path for a wrong field).

use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::chat::ChatCompletionRequest;
use crate::completions::CompletionRequest;
use crate::error::{ValidationError, code};

/// Parses a `POST /v1/chat/completions` body (validate it next with
/// [`ChatCompletionRequest::validate`]).
pub fn parse_chat_request(body: &[u8]) -> Result<ChatCompletionRequest, ValidationError> {
    parse(body)
}

/// Parses a `POST /v1/completions` body (validate it next with [`CompletionRequest::validate`]).
pub fn parse_completion_request(body: &[u8]) -> Result<CompletionRequest, ValidationError> {
    parse(body)
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ValidationError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ValidationError::new(
            "the request body is empty; expected a JSON object",
            None,
            code::INVALID_JSON,
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        from_json_error(&path, err.into_inner())
    })?;
    // Trailing garbage after the object is broken JSON too.
    de.end().map_err(|err| from_json_error(".", err))?;
    Ok(value)
}

/// serde_json's message without its " at line L column C" suffix.
fn bare_message(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
}

fn from_json_error(path: &str, err: serde_json::Error) -> ValidationError {
    let message = bare_message(&err);
    if err.classify() != Category::Data {
        return ValidationError::new(
            format!(
                "invalid JSON at line {} column {}: {message}",
                err.line(),
                err.column()
            ),
            None,
            code::INVALID_JSON,
        );
    }
    let path = (path != ".").then_some(path);
    let message = plain_words(&message);

    if let Some(name) = backticked_after(&message, "unknown field `") {
        let param = join(path, name);
        return ValidationError::new(
            format!("unknown parameter `{param}`"),
            Some(param),
            code::UNKNOWN_PARAMETER,
        );
    }
    if let Some(name) = backticked_after(&message, "missing field `") {
        let param = join(path, name);
        return ValidationError::new(
            format!("missing required parameter `{param}`"),
            Some(param),
            code::MISSING_REQUIRED_PARAMETER,
        );
    }
    if let Some(name) = backticked_after(&message, "duplicate field `") {
        let param = join(path, name);
        return ValidationError::new(
            format!("`{param}` is given twice"),
            Some(param),
            code::INVALID_VALUE,
        );
    }
    let Some(path) = path else {
        return ValidationError::new(
            format!("the request body must be a JSON object ({message})"),
            None,
            code::INVALID_JSON,
        );
    };
    let param = path.to_owned();
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        return match rest.strip_prefix("null, ") {
            Some(expected) => ValidationError::new(
                format!("`{param}` must not be null ({expected})"),
                Some(param),
                code::MISSING_REQUIRED_PARAMETER,
            ),
            None => ValidationError::new(
                format!("invalid type for `{param}`: {rest}"),
                Some(param),
                code::INVALID_TYPE,
            ),
        };
    }
    let rest = message.strip_prefix("invalid value: ").unwrap_or(&message);
    ValidationError::new(
        format!("invalid value for `{param}`: {rest}"),
        Some(param),
        code::INVALID_VALUE,
    )
}

/// The field path of `name` inside the object at `path`. An unknown key is reported with the
/// key already on the path; a check made after the whole object was read is not.
fn join(path: Option<&str>, name: &str) -> String {
    match path {
        None => name.to_owned(),
        Some(p) if p == name || p.ends_with(&format!(".{name}")) => p.to_owned(),
        Some(p) => format!("{p}.{name}"),
    }
}

/// The text between `prefix` (which ends with a backtick) and the next backtick.
fn backticked_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(name, _)| name)
}

/// serde's Rust vocabulary in JSON words.
fn plain_words(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected i64", "expected an integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected u8", "expected a non-negative integer"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected an object"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: map", "invalid type: object"),
        ("invalid type: unit value", "invalid type: null"),
        ("unknown variant", "unknown value"),
    ];
    let mut out = message.to_owned();
    for (from, to) in WORDS {
        out = out.replace(from, to);
    }
    if let Some(i) = out.find("expected struct ") {
        out.truncate(i);
        out.push_str("expected an object");
    }
    out
}
