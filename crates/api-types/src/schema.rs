//! The JSON Schema pieces derive cannot express: hand-written schemas for the types with
//! hand-written deserializers, the constraints that span fields, and the ones that depend on
//! [`Limits`]. Each must accept exactly what parsing plus validation accept, so that requests
//! generated from the OpenAPI document are served and the ones it rules out are refused.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value, json};

use crate::limits::{Limits, MAX_PROMPTS};

/// What [`crate::validate::is_accepted_image_url`] accepts, as an ECMA-262 pattern.
pub(crate) const IMAGE_URL_PATTERN: &str = "^(?:[Hh][Tt][Tt][Pp][Ss]?://|[Ff][Ii][Ll][Ee]://|[Dd][Aa][Tt][Aa]:[Ii][Mm][Aa][Gg][Ee]/[^,]*;[Bb][Aa][Ss][Ee]64,)";

/// An unsupported feature: only null passes.
pub(crate) fn null_only(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "null" })
}

/// `tool_choice`, `function_call`: `"none"` or null.
pub(crate) fn none_or_null(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "enum": ["none", null] })
}

/// `store`: false or null.
pub(crate) fn false_or_null(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "enum": [false, null] })
}

/// `modalities`: `["text"]` or null.
pub(crate) fn text_modality(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "array", "items": { "const": "text" }, "minItems": 1, "maxItems": 1 },
            { "type": "null" }
        ]
    })
}

/// `response_format`: text, any JSON object, or JSON valid against a schema; or null.
pub(crate) fn response_format(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            {
                "type": "object",
                "properties": { "type": { "enum": ["text", "json_object"] } },
                "required": ["type"],
                "additionalProperties": false
            },
            {
                "type": "object",
                "properties": {
                    "type": { "const": "json_schema" },
                    "json_schema": named_schema("schema")
                },
                "required": ["type", "json_schema"],
                "additionalProperties": false
            },
            { "type": "null" }
        ]
    })
}

/// A named JSON Schema as OpenAI writes one (`response_format.json_schema`, a tool's
/// `function`): `name`, `description`, the schema under `key`, `strict`.
fn named_schema(key: &str) -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "pattern": NAME_PATTERN },
            "description": { "type": ["string", "null"] },
            key: { "type": ["object", "null"] },
            "strict": { "type": ["boolean", "null"] }
        },
        "required": ["name"],
        "additionalProperties": false
    })
}

/// The names OpenAI allows for schemas and functions.
const NAME_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

/// `tools`: functions with a name and a JSON Schema for their arguments.
pub(crate) fn tools(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["array", "null"],
        "maxItems": crate::MAX_TOOLS,
        "items": {
            "type": "object",
            "properties": {
                "type": { "const": "function" },
                "function": named_schema("parameters")
            },
            "required": ["type", "function"],
            "additionalProperties": false
        }
    })
}

/// `tool_choice`: a mode, or one function by name (which `tools` must define).
pub(crate) fn tool_choice(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "enum": ["none", "auto", "required", null] },
            {
                "type": "object",
                "properties": {
                    "type": { "const": "function" },
                    "function": {
                        "type": "object",
                        "properties": {
                            "name": { "type": "string", "pattern": NAME_PATTERN }
                        },
                        "required": ["name"],
                        "additionalProperties": false
                    }
                },
                "required": ["type", "function"],
                "additionalProperties": false
            }
        ]
    })
}

/// An assistant message's earlier `tool_calls`.
fn tool_calls_in() -> Value {
    json!({
        "type": ["array", "null"],
        "items": {
            "type": "object",
            "properties": {
                "id": { "type": "string", "minLength": 1 },
                "type": { "const": "function" },
                "function": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string", "minLength": 1 },
                        "arguments": { "type": "string" }
                    },
                    "required": ["name", "arguments"],
                    "additionalProperties": false
                }
            },
            "required": ["id", "type", "function"],
            "additionalProperties": false
        }
    })
}

/// `logit_bias` under the default limits (see [`apply_request_limits`]).
pub(crate) fn logit_bias(_: &mut SchemaGenerator) -> Schema {
    to_schema(logit_bias_schema(&Limits::default()))
}

fn to_schema(value: Value) -> Schema {
    Schema::try_from(value).unwrap_or_default()
}

fn logit_bias_schema(limits: &Limits) -> Value {
    json!({
        "type": ["object", "null"],
        "propertyNames": { "pattern": token_id_key_pattern(limits) },
        "additionalProperties": { "type": "number", "minimum": -100, "maximum": 100 }
    })
}

/// The largest token id the limits allow, `None` when none is.
fn max_token_id(limits: &Limits) -> Option<u64> {
    match limits.vocab_size {
        None => Some(u64::from(u32::MAX)),
        Some(size) => u64::from(size).checked_sub(1),
    }
}

/// A pattern for `logit_bias` keys: ASCII decimal (leading zeros allowed, as `str::parse`
/// allows them) of a number no greater than the largest token id.
pub(crate) fn token_id_key_pattern(limits: &Limits) -> String {
    match max_token_id(limits) {
        // Matches no string, in ECMA-262 and Python alike.
        None => "[^\\s\\S]".to_owned(),
        Some(max) => format!("^0*(?:{})$", decimal_at_most(max)),
    }
}

/// Alternatives matching the decimal numbers 0..=`max` written with exactly as many digits as
/// `max` (zero-padded) or fewer.
fn decimal_at_most(max: u64) -> String {
    let digits: Vec<u8> = max.to_string().into_bytes();
    let k = digits.len();
    let mut alternatives = Vec::new();
    if k > 1 {
        alternatives.push(format!("[0-9]{{1,{}}}", k - 1));
    }
    for i in 0..k {
        if digits[i] > b'0' {
            let prefix = String::from_utf8_lossy(&digits[..i]);
            let below = char::from(digits[i] - 1);
            let rest = match k - i - 1 {
                0 => String::new(),
                1 => "[0-9]".to_owned(),
                r => format!("[0-9]{{{r}}}"),
            };
            alternatives.push(format!("{prefix}[0-{below}]{rest}"));
        }
    }
    alternatives.push(max.to_string());
    alternatives.join("|")
}

fn token_id_schema(limits: &Limits) -> Value {
    match max_token_id(limits) {
        Some(max) => json!({ "type": "integer", "minimum": 0, "maximum": max }),
        None => json!(false),
    }
}

/// `prompt` of a legacy completion.
pub(crate) fn prompt(limits: &Limits) -> Schema {
    let id = token_id_schema(limits);
    to_schema(json!({
        "anyOf": [
            { "type": "string", "minLength": 1 },
            {
                "type": "array",
                "items": { "type": "string", "minLength": 1 },
                "minItems": 1,
                "maxItems": MAX_PROMPTS
            },
            { "type": "array", "items": id, "minItems": 1 },
            {
                "type": "array",
                "items": { "type": "array", "items": id, "minItems": 1 },
                "minItems": 1,
                "maxItems": MAX_PROMPTS
            }
        ]
    }))
}

fn text_part() -> Value {
    json!({
        "type": "object",
        "properties": {
            "type": { "const": "text" },
            "text": { "type": "string" }
        },
        "required": ["type", "text"],
        "additionalProperties": false
    })
}

/// A content part: text, or (where `image_url` gives the `ImageUrl` schema) an image.
fn content_part(image_url: Option<&Value>) -> Value {
    match image_url {
        None => text_part(),
        Some(image_url) => json!({
            "oneOf": [
                text_part(),
                {
                    "type": "object",
                    "properties": {
                        "type": { "const": "image_url" },
                        "image_url": image_url
                    },
                    "required": ["type", "image_url"],
                    "additionalProperties": false
                }
            ]
        }),
    }
}

/// [`ContentPart`](crate::ContentPart)'s schema, given the `ImageUrl` schema (the caller's
/// generator makes it, so this module need not know the wire types).
pub(crate) fn any_content_part(image_url: &Value) -> Schema {
    to_schema(content_part(Some(image_url)))
}

/// A chat message under the default limits, given the `ImageUrl` schema.
pub(crate) fn chat_message(image_url: &Value) -> Schema {
    to_schema(chat_message_for(
        Some(image_url),
        Limits::default().max_images,
    ))
}

/// A chat message: user messages may hold images when `image_url` (the `ImageUrl` schema) is
/// given, the other accepted roles only text. The total image limit spans messages, which JSON
/// Schema cannot state, so it is only described.
pub(crate) fn chat_message_for(image_url: Option<&Value>, max_images: usize) -> Value {
    /// Which role a branch is for, and what it may hold beyond text.
    enum Kind {
        Plain,
        Assistant,
        Tool,
    }
    let message = |roles: &[&str], part: Value, kind: Kind| {
        let content = json!({
            "anyOf": [
                { "type": "string" },
                { "type": "array", "items": part, "minItems": 1 }
            ]
        });
        let (content, tool_calls, tool_call_id, required) = match kind {
            Kind::Plain => (
                content,
                json!({ "type": "null" }),
                json!({ "type": "null" }),
                json!(["role", "content"]),
            ),
            // Content may be null when the message holds tool calls (not expressible here).
            Kind::Assistant => (
                json!({ "anyOf": [content, { "type": "null" }] }),
                tool_calls_in(),
                json!({ "type": "null" }),
                json!(["role"]),
            ),
            Kind::Tool => (
                content,
                json!({ "type": "null" }),
                json!({ "type": "string" }),
                json!(["role", "content", "tool_call_id"]),
            ),
        };
        json!({
            "type": "object",
            "properties": {
                "role": { "enum": roles },
                "content": content,
                "name": { "type": ["string", "null"] },
                "refusal": { "type": "null" },
                "tool_calls": tool_calls,
                "tool_call_id": tool_call_id,
                "function_call": { "type": "null" },
                "audio": { "type": "null" }
            },
            "required": required,
            "additionalProperties": false
        })
    };
    let user_part = match image_url {
        Some(image_url) if max_images > 0 => content_part(Some(image_url)),
        _ => text_part(),
    };
    let description = if max_images > 0 && image_url.is_some() {
        format!(
            "A message. Image parts are allowed in user messages only, at most {max_images} in \
             the whole request; a `tool` message answers an earlier call by `tool_call_id`; \
             role `function` is not supported."
        )
    } else {
        "A message with text content (this server accepts no images); a `tool` message \
         answers an earlier call by `tool_call_id`; role `function` is not supported."
            .to_owned()
    };
    json!({
        "description": description,
        "oneOf": [
            message(&["user"], user_part, Kind::Plain),
            message(&["system", "developer"], text_part(), Kind::Plain),
            message(&["assistant"], text_part(), Kind::Assistant),
            message(&["tool"], text_part(), Kind::Tool)
        ]
    })
}

/// The type-level rules of a chat request, under the default limits.
pub(crate) fn chat_request_rules(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        apply_request_limits(object, &Limits::default(), Api::Chat);
    }
}

/// The type-level rules of a legacy completion request, under the default limits.
pub(crate) fn completion_request_rules(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        apply_request_limits(object, &Limits::default(), Api::Completions);
    }
}

/// Which request schema [`apply_request_limits`] is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Chat,
    Completions,
}

/// Rewrites the parts of a request schema that depend on `limits` or span fields (and so
/// cannot come from derive): `n`'s maximum, `logit_bias` keys, `prompt`, and an `anyOf` that
/// states the cross-field rules as branches of plain property constraints.
pub(crate) fn apply_request_limits(schema: &mut Map<String, Value>, limits: &Limits, api: Api) {
    let Some(Value::Object(properties)) = schema.get_mut("properties") else {
        return;
    };
    let max_n = limits.max_n;
    if let Some(Value::Object(n)) = properties.get_mut("n") {
        n.insert("maximum".into(), json!(max_n));
    }
    if let Some(Value::Object(bias)) = properties.get_mut("logit_bias")
        && let Value::Object(new) = logit_bias_schema(limits)
    {
        bias.extend(new);
    }

    let stream_options = vec![
        json!({ "properties": { "stream_options": { "type": "null" } } }),
        json!({ "properties": { "stream": { "const": true } }, "required": ["stream"] }),
    ];
    let rules = match api {
        Api::Chat => vec![
            vec![
                json!({ "properties": { "top_logprobs": { "type": "null" } } }),
                json!({ "properties": { "logprobs": { "const": true } }, "required": ["logprobs"] }),
            ],
            stream_options,
        ],
        Api::Completions => {
            if let Some(Value::Object(best_of)) = properties.get_mut("best_of") {
                best_of.insert("maximum".into(), json!(max_n));
            }
            if let Some(Value::Object(prompt_schema)) = properties.get_mut("prompt")
                && let Value::Object(new) = prompt(limits).to_value()
            {
                prompt_schema.remove("anyOf");
                prompt_schema.extend(new);
            }
            let mut best_of = vec![
                json!({ "properties": { "best_of": { "type": "null" } } }),
                json!({ "properties": { "n": { "enum": [1, null] }, "best_of": { "const": 1 } } }),
            ];
            best_of.extend((2..=max_n).map(|k| {
                json!({
                    "properties": { "n": { "const": k }, "best_of": { "const": k } },
                    "required": ["n", "best_of"]
                })
            }));
            vec![stream_options, best_of]
        }
    };
    schema.insert("anyOf".into(), Value::Array(product(&rules)));
}

/// Every combination of one branch per rule, each merged into one branch, so the request schema
/// needs a single `anyOf` (which generators handle far better than `allOf` of `anyOf`s).
fn product(rules: &[Vec<Value>]) -> Vec<Value> {
    let mut combos = vec![json!({})];
    for rule in rules {
        combos = combos
            .iter()
            .flat_map(|combo| rule.iter().map(move |branch| merge_branch(combo, branch)))
            .collect();
    }
    combos
}

/// Two branches of plain `properties`/`required` constraints as one.
fn merge_branch(a: &Value, b: &Value) -> Value {
    let mut out = a.clone();
    let (Value::Object(out_map), Value::Object(b_map)) = (&mut out, b) else {
        return out;
    };
    if let Some(Value::Object(b_props)) = b_map.get("properties") {
        let props = out_map.entry("properties").or_insert_with(|| json!({}));
        if let Value::Object(props) = props {
            for (key, schema) in b_props {
                match props.remove(key) {
                    None => props.insert(key.clone(), schema.clone()),
                    Some(existing) => {
                        props.insert(key.clone(), json!({ "allOf": [existing, schema] }))
                    }
                };
            }
        }
    }
    if let Some(Value::Array(b_required)) = b_map.get("required") {
        let required = out_map.entry("required").or_insert_with(|| json!([]));
        if let Value::Array(required) = required {
            for name in b_required {
                if !required.contains(name) {
                    required.push(name.clone());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_patterns() {
        assert_eq!(decimal_at_most(0), "0");
        assert_eq!(decimal_at_most(7), "[0-6]|7");
        assert_eq!(decimal_at_most(10), "[0-9]{1,1}|[0-0][0-9]|10");
        assert_eq!(
            decimal_at_most(49151),
            "[0-9]{1,4}|[0-3][0-9]{4}|4[0-8][0-9]{3}|49[0-0][0-9]{2}|491[0-4][0-9]|4915[0-0]|49151"
        );
        let limits = Limits {
            vocab_size: Some(0),
            ..Limits::default()
        };
        assert_eq!(token_id_key_pattern(&limits), "[^\\s\\S]");
    }

    #[test]
    fn product_merges_branches() {
        let rules = vec![
            vec![
                json!({"properties": {"a": {"type": "null"}}}),
                json!({"required": ["b"]}),
            ],
            vec![json!({"properties": {"a": {"const": 1}}, "required": ["a"]})],
        ];
        assert_eq!(
            product(&rules),
            vec![
                json!({"properties": {"a": {"allOf": [{"type": "null"}, {"const": 1}]}}, "required": ["a"]}),
                json!({"required": ["b", "a"], "properties": {"a": {"const": 1}}}),
            ]
        );
    }
}
