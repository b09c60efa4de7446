//! `response_format`, as OpenAI defines it: `{"type": "text"}`, `{"type": "json_object"}` or
//! `{"type": "json_schema", "json_schema": {"name", "description", "schema", "strict"}}`,
//! checked into a [`ResponseFormat`]. Whether a schema's keywords can be enforced is the
//! grammar engine's to say (the gateway compiles it for the model before queueing).

use serde_json::{Map, Value, json};

use crate::error::{ValidationError, code};

/// What the output must be.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ResponseFormat {
    /// Free text.
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid against `schema`. `strict` is recorded as given: Kiln enforces every schema
    /// it accepts, strict or not.
    JsonSchema {
        name: String,
        schema: Value,
        strict: bool,
    },
}

/// The param of a schema's errors.
pub const SCHEMA_PARAM: &str = "response_format.json_schema.schema";

fn invalid(param: &str, message: impl Into<String>) -> ValidationError {
    ValidationError::at(param, code::INVALID_VALUE, message)
}

/// Rejects any key of `object` not in `known`, naming it under `at`.
pub(crate) fn only_keys(
    object: &Map<String, Value>,
    known: &[&str],
    at: &str,
) -> Result<(), ValidationError> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(ValidationError::at(
            format!("{at}.{key}"),
            code::UNKNOWN_PARAMETER,
            format!("Unknown parameter: `{at}.{key}`."),
        )),
        None => Ok(()),
    }
}

/// A schema or function name as OpenAI allows it: 1 to 64 of `[A-Za-z0-9_-]`.
pub(crate) fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `response_format` (absent or null: text).
pub(crate) fn validate(value: Option<Value>) -> Result<ResponseFormat, ValidationError> {
    const AT: &str = "response_format";
    let object = match value {
        None | Some(Value::Null) => return Ok(ResponseFormat::Text),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(ValidationError::at(
                AT,
                code::INVALID_TYPE,
                "`response_format` must be an object with a `type`",
            ));
        }
    };
    match object.get("type").and_then(Value::as_str) {
        Some("text") => {
            only_keys(&object, &["type"], AT)?;
            Ok(ResponseFormat::Text)
        }
        Some("json_object") => {
            only_keys(&object, &["type"], AT)?;
            Ok(ResponseFormat::JsonObject)
        }
        Some("json_schema") => {
            only_keys(&object, &["type", "json_schema"], AT)?;
            json_schema(object.get("json_schema"))
        }
        _ => Err(invalid(
            "response_format.type",
            "`response_format.type` must be `text`, `json_object` or `json_schema`",
        )),
    }
}

fn json_schema(value: Option<&Value>) -> Result<ResponseFormat, ValidationError> {
    const AT: &str = "response_format.json_schema";
    let Some(Value::Object(o)) = value else {
        return Err(ValidationError::at(
            AT,
            code::MISSING_REQUIRED_PARAMETER,
            "`response_format.json_schema` (an object with `name` and `schema`) is required \
             with type `json_schema`",
        ));
    };
    only_keys(o, &["name", "description", "schema", "strict"], AT)?;
    let name = match o.get("name") {
        Some(Value::String(name)) if is_name(name) => name.clone(),
        Some(Value::String(_)) => {
            return Err(invalid(
                "response_format.json_schema.name",
                "`response_format.json_schema.name` must be 1 to 64 characters of a-z, A-Z, \
                 0-9, `_` and `-`",
            ));
        }
        _ => {
            return Err(ValidationError::at(
                "response_format.json_schema.name",
                code::MISSING_REQUIRED_PARAMETER,
                "`response_format.json_schema.name` (a string) is required",
            ));
        }
    };
    if !matches!(
        o.get("description"),
        None | Some(Value::Null | Value::String(_))
    ) {
        return Err(ValidationError::at(
            "response_format.json_schema.description",
            code::INVALID_TYPE,
            "`response_format.json_schema.description` must be a string",
        ));
    }
    // No schema: any JSON value, as OpenAI.
    let schema = match o.get("schema") {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(s)) => Value::Object(s.clone()),
        Some(_) => {
            return Err(ValidationError::at(
                SCHEMA_PARAM,
                code::INVALID_TYPE,
                "`response_format.json_schema.schema` must be a JSON Schema object",
            ));
        }
    };
    let strict = match o.get("strict") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ValidationError::at(
                "response_format.json_schema.strict",
                code::INVALID_TYPE,
                "`response_format.json_schema.strict` must be a boolean",
            ));
        }
    };
    Ok(ResponseFormat::JsonSchema {
        name,
        schema,
        strict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: Value) -> Result<ResponseFormat, ValidationError> {
        validate(Some(v))
    }

    #[test]
    fn the_three_types() {
        assert_eq!(validate(None), Ok(ResponseFormat::Text));
        assert_eq!(check(json!({"type": "text"})), Ok(ResponseFormat::Text));
        assert_eq!(
            check(json!({"type": "json_object"})),
            Ok(ResponseFormat::JsonObject)
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            check(json!({"type": "json_schema", "json_schema": {
                "name": "thing-1", "schema": schema, "strict": true, "description": "d"}})),
            Ok(ResponseFormat::JsonSchema {
                name: "thing-1".into(),
                schema,
                strict: true
            })
        );
        assert_eq!(
            check(json!({"type": "json_schema", "json_schema": {"name": "x"}})),
            Ok(ResponseFormat::JsonSchema {
                name: "x".into(),
                schema: json!({}),
                strict: false
            })
        );
    }

    #[test]
    fn errors_name_the_field() {
        let param = |v: Value| check(v).unwrap_err().param.unwrap();
        assert_eq!(param(json!("json")), "response_format");
        assert_eq!(param(json!({"type": "yaml"})), "response_format.type");
        assert_eq!(
            param(json!({"type": "text", "schema": {}})),
            "response_format.schema"
        );
        assert_eq!(
            param(json!({"type": "json_schema"})),
            "response_format.json_schema"
        );
        assert_eq!(
            param(json!({"type": "json_schema", "json_schema": {"schema": {}}})),
            "response_format.json_schema.name"
        );
        assert_eq!(
            param(json!({"type": "json_schema", "json_schema": {"name": "a b"}})),
            "response_format.json_schema.name"
        );
        assert_eq!(
            param(json!({"type": "json_schema", "json_schema": {"name": "a", "schema": []}})),
            SCHEMA_PARAM
        );
        assert_eq!(
            param(json!({"type": "json_schema", "json_schema": {"name": "a", "strict": "yes"}})),
            "response_format.json_schema.strict"
        );
        assert_eq!(
            param(json!({"type": "json_schema", "json_schema": {"name": "a", "extra": 1}})),
            "response_format.json_schema.extra"
        );
    }
}
