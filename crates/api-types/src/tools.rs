//! Tool calling as OpenAI defines it: the request's `tools`, `tool_choice` and
//! `parallel_tool_calls` checked into [`Tools`]; earlier calls in assistant messages checked into
//! [`ToolCallIn`]; and the calls a response carries ([`ToolCall`], streamed as
//! [`ToolCallDelta`]s). Which syntax a model writes its calls in is the gateway's business.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::common::FunctionType;
use crate::error::{ValidationError, code};
use crate::response_format::{is_name, only_keys};

/// The most tools one request may define (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

/// One function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// 1 to 64 of `[A-Za-z0-9_-]`, unique within the request.
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema object for the arguments (`{"type": "object", "properties": {}}` when the
    /// request gave none). Whether it can be enforced is the grammar engine's to say.
    pub parameters: Value,
    /// Recorded as given: Kiln enforces the schema of every call it constrains, strict or not.
    pub strict: bool,
}

impl Tool {
    /// The tool as chat templates take it (Hugging Face's form, which is OpenAI's):
    /// `{"type": "function", "function": {"name", "description", "parameters"}}`.
    pub fn template_value(&self) -> Value {
        let mut function = Map::new();
        function.insert("name".into(), Value::String(self.name.clone()));
        if let Some(d) = &self.description {
            function.insert("description".into(), Value::String(d.clone()));
        }
        function.insert("parameters".into(), self.parameters.clone());
        json!({"type": "function", "function": function})
    }
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// Never call a tool (the default without tools).
    #[default]
    None,
    /// The model chooses between text and calls (the default with tools).
    Auto,
    /// At least one call, to any of the tools.
    Required,
    /// Exactly one call, to this tool.
    Function(String),
}

/// A request's tools, validated: every tool name unique, `choice` naming only defined tools.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tools {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    /// `parallel_tool_calls` (true unless the request says false): may one answer hold
    /// several calls?
    pub parallel: bool,
}

impl Tools {
    /// Whether the model may call anything.
    pub fn enabled(&self) -> bool {
        self.choice != ToolChoice::None
    }
}

/// An earlier call in an assistant message, going back through the chat template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallIn {
    pub id: String,
    pub name: String,
    /// As the client sent it: a JSON string (normally of an object).
    pub arguments: String,
}

/// A call in a response: `{"id", "type": "function", "function": {"name", "arguments"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: FunctionType,
    pub function: FunctionCall,
}

/// The function a call names and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as a JSON text, exactly as the model wrote them.
    pub arguments: String,
}

/// A piece of a streamed call. The first piece of each call carries `id`, `type` and
/// `function.name` (with empty `arguments`); later pieces carry `index` and `arguments` text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ToolCallDelta {
    /// Which call of the choice (0, 1, …).
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<FunctionType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

/// A piece of a streamed call's function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> ValidationError {
    ValidationError::at(param, code::INVALID_VALUE, message)
}

fn wrong_type(param: impl Into<String>, message: impl Into<String>) -> ValidationError {
    ValidationError::at(param, code::INVALID_TYPE, message)
}

fn name_at(object: &Map<String, Value>, at: &str) -> Result<String, ValidationError> {
    let param = format!("{at}.name");
    match object.get("name") {
        Some(Value::String(name)) if is_name(name) => Ok(name.clone()),
        Some(Value::String(_)) => Err(invalid(
            &param,
            format!("`{param}` must be 1 to 64 characters of a-z, A-Z, 0-9, `_` and `-`"),
        )),
        _ => Err(ValidationError::at(
            &param,
            code::MISSING_REQUIRED_PARAMETER,
            format!("`{param}` (a string) is required"),
        )),
    }
}

fn object_at<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, ValidationError> {
    value
        .as_object()
        .ok_or_else(|| wrong_type(at, format!("`{at}` must be an object")))
}

/// `"type": "function"`, the only kind.
fn function_type(object: &Map<String, Value>, at: &str) -> Result<(), ValidationError> {
    match object.get("type") {
        Some(Value::String(t)) if t == "function" => Ok(()),
        Some(_) => Err(invalid(
            format!("{at}.type"),
            format!("`{at}.type` must be `function`, the only tool type this server knows"),
        )),
        None => Err(ValidationError::at(
            format!("{at}.type"),
            code::MISSING_REQUIRED_PARAMETER,
            format!("`{at}.type` (`function`) is required"),
        )),
    }
}

/// The required `function` object of a tool, a call or a `tool_choice`, named `at.function`.
fn function_at<'a>(
    object: &'a Map<String, Value>,
    at: &str,
) -> Result<(&'a Map<String, Value>, String), ValidationError> {
    let at = format!("{at}.function");
    match object.get("function") {
        Some(f) => Ok((object_at(f, &at)?, at)),
        None => Err(ValidationError::at(
            &at,
            code::MISSING_REQUIRED_PARAMETER,
            format!("`{at}` (an object) is required"),
        )),
    }
}

/// `object[key]`, a non-empty string, required.
fn required_string(
    object: &Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<String, ValidationError> {
    match object.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(ValidationError::at(
            format!("{at}.{key}"),
            code::MISSING_REQUIRED_PARAMETER,
            format!("`{at}.{key}` (a non-empty string) is required"),
        )),
    }
}

fn tool(value: &Value, at: &str) -> Result<Tool, ValidationError> {
    let object = object_at(value, at)?;
    only_keys(object, &["type", "function"], at)?;
    function_type(object, at)?;
    let (function, at) = function_at(object, at)?;
    only_keys(
        function,
        &["name", "description", "parameters", "strict"],
        &at,
    )?;
    let name = name_at(function, &at)?;
    let description = match function.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => {
            return Err(wrong_type(
                format!("{at}.description"),
                format!("`{at}.description` must be a string"),
            ));
        }
    };
    // No parameters: a function without arguments, as OpenAI.
    let parameters = match function.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(Value::Object(p)) => Value::Object(p.clone()),
        Some(_) => {
            return Err(wrong_type(
                format!("{at}.parameters"),
                format!("`{at}.parameters` must be a JSON Schema object"),
            ));
        }
    };
    let strict = match function.get("strict") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(wrong_type(
                format!("{at}.strict"),
                format!("`{at}.strict` must be a boolean"),
            ));
        }
    };
    Ok(Tool {
        name,
        description,
        parameters,
        strict,
    })
}

fn tool_choice(value: &Value, tools: &[Tool]) -> Result<ToolChoice, ValidationError> {
    const AT: &str = "tool_choice";
    let choice = match value {
        Value::String(s) => match s.as_str() {
            "none" => return Ok(ToolChoice::None),
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            _ => {
                return Err(invalid(
                    AT,
                    "`tool_choice` must be `none`, `auto`, `required` or \
                     {\"type\": \"function\", \"function\": {\"name\": …}}",
                ));
            }
        },
        Value::Object(object) => {
            only_keys(object, &["type", "function"], AT)?;
            function_type(object, AT)?;
            let (function, at) = function_at(object, AT)?;
            only_keys(function, &["name"], &at)?;
            let name = name_at(function, &at)?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(invalid(
                    "tool_choice.function.name",
                    format!(
                        "`tool_choice` names the function `{name}`, which `tools` does not define"
                    ),
                ));
            }
            ToolChoice::Function(name)
        }
        _ => {
            return Err(wrong_type(
                AT,
                "`tool_choice` must be a string or an object",
            ));
        }
    };
    if tools.is_empty() {
        return Err(invalid(
            AT,
            "`tool_choice` other than `none` needs `tools` to define at least one function",
        ));
    }
    Ok(choice)
}

/// `tools`, `tool_choice` and `parallel_tool_calls` (absent or null: no tools, `none`,
/// parallel).
pub(crate) fn validate(
    tools: Option<Value>,
    choice: Option<Value>,
    parallel: Option<bool>,
) -> Result<Tools, ValidationError> {
    let tools = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            if items.len() > MAX_TOOLS {
                return Err(invalid(
                    "tools",
                    format!(
                        "`tools` may define at most {MAX_TOOLS} functions, got {}",
                        items.len()
                    ),
                ));
            }
            let mut tools: Vec<Tool> = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let at = format!("tools[{i}]");
                let t = tool(item, &at)?;
                if tools.iter().any(|other| other.name == t.name) {
                    return Err(invalid(
                        format!("{at}.function.name"),
                        format!("`tools` defines the function `{}` twice", t.name),
                    ));
                }
                tools.push(t);
            }
            tools
        }
        Some(_) => return Err(wrong_type("tools", "`tools` must be an array of tools")),
    };
    let choice = match choice {
        None | Some(Value::Null) if tools.is_empty() => ToolChoice::None,
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(v) => tool_choice(&v, &tools)?,
    };
    Ok(Tools {
        tools,
        choice,
        parallel: parallel.unwrap_or(true),
    })
}

/// An assistant message's `tool_calls` (`at` names the field).
pub(crate) fn calls_in(value: &Value, at: &str) -> Result<Vec<ToolCallIn>, ValidationError> {
    let Value::Array(items) = value else {
        return Err(wrong_type(
            at,
            format!("`{at}` must be an array of tool calls"),
        ));
    };
    let mut calls = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let object = object_at(item, &at)?;
        only_keys(object, &["id", "type", "function"], &at)?;
        function_type(object, &at)?;
        let id = required_string(object, "id", &at)?;
        let (function, fat) = function_at(object, &at)?;
        only_keys(function, &["name", "arguments"], &fat)?;
        let name = required_string(function, "name", &fat)?;
        let arguments = match function.get("arguments") {
            Some(Value::String(a)) => a.clone(),
            _ => {
                return Err(ValidationError::at(
                    format!("{fat}.arguments"),
                    code::MISSING_REQUIRED_PARAMETER,
                    format!("`{fat}.arguments` (a JSON string) is required"),
                ));
            }
        };
        calls.push(ToolCallIn {
            id,
            name,
            arguments,
        });
    }
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!({"type": "function", "function": {
            "name": "get_weather", "description": "d",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
        }})
    }

    #[test]
    fn defaults_follow_openai() {
        let none = validate(None, None, None).unwrap();
        assert_eq!(none.choice, ToolChoice::None);
        assert!(none.parallel && !none.enabled());
        let auto = validate(Some(json!([weather()])), None, Some(false)).unwrap();
        assert_eq!(auto.choice, ToolChoice::Auto);
        assert!(!auto.parallel);
        assert_eq!(auto.tools[0].name, "get_weather");
        // "none" with tools: the tools are known but never called.
        let off = validate(Some(json!([weather()])), Some(json!("none")), None).unwrap();
        assert!(!off.enabled());
        let named = validate(
            Some(json!([weather()])),
            Some(json!({"type": "function", "function": {"name": "get_weather"}})),
            None,
        )
        .unwrap();
        assert_eq!(named.choice, ToolChoice::Function("get_weather".into()));
        let bare = validate(
            Some(json!([{"type": "function", "function": {"name": "now"}}])),
            Some(json!("required")),
            None,
        )
        .unwrap();
        assert_eq!(
            bare.tools[0].parameters,
            json!({"type": "object", "properties": {}})
        );
        assert_eq!(
            bare.tools[0].template_value(),
            json!({"type": "function", "function": {"name": "now",
                "parameters": {"type": "object", "properties": {}}}})
        );
    }

    #[test]
    fn errors_name_the_field() {
        let param = |tools: Value, choice: Option<Value>| {
            validate(Some(tools), choice, None)
                .unwrap_err()
                .param
                .unwrap()
        };
        let w = weather();
        assert_eq!(param(json!({}), None), "tools");
        assert_eq!(param(json!([1]), None), "tools[0]");
        assert_eq!(
            param(
                json!([{"type": "retrieval", "function": {"name": "a"}}]),
                None
            ),
            "tools[0].type"
        );
        assert_eq!(
            param(json!([{"type": "function"}]), None),
            "tools[0].function"
        );
        assert_eq!(
            param(
                json!([{"type": "function", "function": {"name": "a b"}}]),
                None
            ),
            "tools[0].function.name"
        );
        assert_eq!(
            param(
                json!([{"type": "function", "function": {"name": "a", "parameters": []}}]),
                None
            ),
            "tools[0].function.parameters"
        );
        assert_eq!(
            param(
                json!([{"type": "function", "function": {"name": "a", "x": 1}}]),
                None
            ),
            "tools[0].function.x"
        );
        assert_eq!(param(json!([w, w]), None), "tools[1].function.name");
        assert_eq!(param(json!([w]), Some(json!("always"))), "tool_choice");
        assert_eq!(
            param(
                json!([w]),
                Some(json!({"type": "function", "function": {"name": "other"}}))
            ),
            "tool_choice.function.name"
        );
        assert_eq!(param(json!([]), Some(json!("required"))), "tool_choice");
        let many: Vec<Value> = (0..=MAX_TOOLS)
            .map(|i| json!({"type": "function", "function": {"name": format!("f{i}")}}))
            .collect();
        assert_eq!(param(Value::Array(many), None), "tools");
    }

    #[test]
    fn earlier_calls() {
        let calls = calls_in(
            &json!([{"id": "call_1", "type": "function",
                     "function": {"name": "f", "arguments": "{\"a\": 1}"}}]),
            "m",
        )
        .unwrap();
        assert_eq!(
            calls,
            vec![ToolCallIn {
                id: "call_1".into(),
                name: "f".into(),
                arguments: "{\"a\": 1}".into()
            }]
        );
        let param = |v: Value| calls_in(&v, "m").unwrap_err().param.unwrap();
        assert_eq!(param(json!({})), "m");
        assert_eq!(
            param(json!([{"type": "function", "function": {}}])),
            "m[0].id"
        );
        assert_eq!(
            param(
                json!([{"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}])
            ),
            "m[0].function.arguments"
        );
    }
}
