//! Chat templates: a model's Jinja template rendered with `minijinja` the way Hugging Face
//! transformers renders it (`trim_blocks`, `lstrip_blocks`, loop controls, Python string methods,
//! `raise_exception`, `strftime_now`, a `tojson` that prints like Python's `json.dumps`).
//!
//! Every string that comes from the caller's messages, tools or extra arguments is escaped before
//! rendering (see `special.rs`), so the only control tokens in a rendered prompt are the
//! template's own.

use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::{Result, Tokenizer, TokenizerError};

/// One chat message as the template sees it (`message['role']`, `message['content']`, and any
/// other fields such as `name`, `tool_calls` or `tool_call_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<Content>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Json>,
}

impl ChatMessage {
    /// A message whose content is one string.
    pub fn text(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: Some(Content::Text(content.into())),
            extra: serde_json::Map::new(),
        }
    }
}

/// A message's content: a string, or an array of typed parts (OpenAI's content array).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// A part of an array content. Images appear to the template as `{"type": "image"}`, the form
/// Hugging Face vision templates expect; the pixels travel separately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text { text: String },
    Image,
}

/// How to render: the generation prompt, tool definitions and extra template arguments
/// (`chat_template_kwargs`, e.g. `enable_thinking`), and the length past which not to encode.
#[derive(Debug, Clone, Default)]
pub struct ChatTemplateOptions {
    pub add_generation_prompt: bool,
    pub tools: Option<Vec<Json>>,
    pub kwargs: serde_json::Map<String, Json>,
    /// Refuse ([`TokenizerError::PromptTooLong`](crate::TokenizerError::PromptTooLong)) a
    /// rendered prompt whose length alone shows it exceeds this many tokens, before encoding.
    pub max_prompt_tokens: Option<usize>,
}

/// A rendered chat: the prompt text (user text literal) and its token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPrompt {
    pub text: String,
    pub ids: Vec<u32>,
}

/// Marks an error raised by the template's `raise_exception`, to tell it from a broken template.
const RAISED: &str = "kiln:raise_exception:";

/// Bounds the work of one render, so a pathological template cannot hang the server.
const FUEL: u64 = 50_000_000;

/// A compiled chat template.
#[derive(Debug)]
pub(crate) struct ChatTemplate {
    name: String,
    source: String,
    env: Environment<'static>,
    /// Whether the template walks `message['content']` as a list of parts itself; if not, text
    /// parts are joined into one string before rendering, as vLLM does.
    takes_parts: bool,
}

impl ChatTemplate {
    /// Compiles `source`; `name` says where it came from, for error messages.
    pub(crate) fn new(name: &str, source: String) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| template_error(name, &e))?;
        env.set_syntax(syntax);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        // transformers' `{% generation %}` only marks assistant spans for training masks; it
        // changes no output, and minijinja does not know the tag.
        let compiled = strip_generation_tags(&source);
        env.add_template_owned(name.to_string(), compiled)
            .map_err(|e| template_error(name, &e))?;
        let takes_parts = [
            "message['content'] is string",
            "message.content is string",
            "message[\"content\"] is string",
            "in message['content']",
            "in message.content",
            "in message[\"content\"]",
        ]
        .iter()
        .any(|pattern| source.contains(pattern));
        Ok(Self {
            name: name.to_string(),
            source,
            env,
            takes_parts,
        })
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Renders the messages; caller strings come out escaped (see `special.rs`).
    pub(crate) fn render(
        &self,
        tokenizer: &Tokenizer,
        messages: &[ChatMessage],
        options: &ChatTemplateOptions,
    ) -> Result<String> {
        let mut rendered_messages = Vec::with_capacity(messages.len());
        for message in messages {
            let mut value = serde_json::to_value(message).map_err(|e| self.error(e))?;
            if !self.takes_parts {
                self.flatten_parts(&mut value)?;
            }
            escape_strings(tokenizer, &mut value);
            rendered_messages.push(value);
        }
        let mut context = serde_json::Map::new();
        for (key, value) in &options.kwargs {
            let mut value = value.clone();
            escape_strings(tokenizer, &mut value);
            context.insert(key.clone(), value);
        }
        context.insert("messages".into(), Json::Array(rendered_messages));
        context.insert(
            "add_generation_prompt".into(),
            Json::Bool(options.add_generation_prompt),
        );
        let token_text =
            |t: Option<&crate::TokenRef>| t.map_or(Json::Null, |t| Json::String(t.text.clone()));
        context.insert("bos_token".into(), token_text(tokenizer.bos()));
        context.insert("eos_token".into(), token_text(tokenizer.eos()));
        if let Some(tools) = &options.tools {
            let mut tools = Json::Array(tools.clone());
            escape_strings(tokenizer, &mut tools);
            context.insert("tools".into(), tools);
        }
        let template = self
            .env
            .get_template(&self.name)
            .map_err(|e| template_error(&self.name, &e))?;
        template
            .render(Value::from(minijinja::value::Serde(&context)))
            .map_err(|e| template_error(&self.name, &e))
    }

    /// Joins a content array of text parts into one string, for templates that expect strings.
    fn flatten_parts(&self, message: &mut Json) -> Result<()> {
        let Some(Json::Array(parts)) = message.get("content") else {
            return Ok(());
        };
        let mut texts = Vec::with_capacity(parts.len());
        for part in parts {
            match part.get("text").and_then(Json::as_str) {
                Some(text) => texts.push(text),
                None => {
                    return Err(TokenizerError::TemplateRejected {
                        name: self.name.clone(),
                        message: "this model's chat template does not accept image input".into(),
                    });
                }
            }
        }
        let joined = Json::String(texts.join("\n"));
        if let Some(content) = message.get_mut("content") {
            *content = joined;
        }
        Ok(())
    }

    fn error(&self, err: impl std::fmt::Display) -> TokenizerError {
        TokenizerError::Template {
            name: self.name.clone(),
            message: err.to_string(),
        }
    }
}

fn strip_generation_tags(source: &str) -> String {
    let mut out = source.to_string();
    for tag in ["generation", "endgeneration"] {
        for (open, close) in [("{%", "%}"), ("{%-", "%}"), ("{%", "-%}"), ("{%-", "-%}")] {
            out = out.replace(&format!("{open} {tag} {close}"), "");
        }
    }
    out
}

fn escape_strings(tokenizer: &Tokenizer, value: &mut Json) {
    match value {
        Json::String(s) => {
            if let Some(escaped) = tokenizer.splitter.escape(s) {
                *s = escaped;
            }
        }
        Json::Array(items) => items.iter_mut().for_each(|v| escape_strings(tokenizer, v)),
        Json::Object(map) => map.values_mut().for_each(|v| escape_strings(tokenizer, v)),
        Json::Null | Json::Bool(_) | Json::Number(_) => {}
    }
}

fn template_error(name: &str, err: &minijinja::Error) -> TokenizerError {
    if let Some(message) = err.detail().and_then(|d| d.strip_prefix(RAISED)) {
        return TokenizerError::TemplateRejected {
            name: name.to_string(),
            message: message.to_string(),
        };
    }
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    TokenizerError::Template {
        name: name.to_string(),
        message,
    }
}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED}{message}"),
    ))
}

/// Python's `datetime.now().strftime(format)`, in local time, as transformers provides it.
fn strftime_now(format: String) -> std::result::Result<String, minijinja::Error> {
    let now = jiff::Zoned::now();
    jiff::fmt::strtime::format(format.as_bytes(), &now).map_err(|e| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now({format:?}): {e}"),
        )
    })
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent,
/// sort_keys=sort_keys)`, so tool schemas print exactly as the model saw them in training.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => Some(match v.as_usize() {
            Some(n) => " ".repeat(n),
            None => v.as_str().map(str::to_string).ok_or_else(|| {
                minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: bad indent")
            })?,
        }),
    };
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    let style = PyJson {
        indent,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    style.dump(&json, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

/// Python `json.dumps` formatting: `", "` and `": "` separators, or newlines with `indent`.
struct PyJson {
    indent: Option<String>,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl PyJson {
    fn dump(&self, value: &Json, level: usize, out: &mut String) {
        match value {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(&n.to_string()),
            Json::String(s) => self.string(s, out),
            Json::Array(items) => {
                if items.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    self.separator(i, level + 1, out);
                    self.dump(item, level + 1, out);
                }
                self.close(level, out);
                out.push(']');
            }
            Json::Object(map) => {
                if map.is_empty() {
                    out.push_str("{}");
                    return;
                }
                let mut entries: Vec<_> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (key, item)) in entries.into_iter().enumerate() {
                    self.separator(i, level + 1, out);
                    self.string(key, out);
                    out.push_str(": ");
                    self.dump(item, level + 1, out);
                }
                self.close(level, out);
                out.push('}');
            }
        }
    }

    fn separator(&self, index: usize, level: usize, out: &mut String) {
        match &self.indent {
            Some(indent) => {
                if index > 0 {
                    out.push(',');
                }
                out.push('\n');
                out.push_str(&indent.repeat(level));
            }
            None if index > 0 => out.push_str(", "),
            None => {}
        }
    }

    fn close(&self, level: usize, out: &mut String) {
        if let Some(indent) = &self.indent {
            out.push('\n');
            out.push_str(&indent.repeat(level));
        }
    }

    fn string(&self, s: &str, out: &mut String) {
        // serde_json escapes exactly what Python does with ensure_ascii=False.
        let quoted = serde_json::to_string(s).unwrap_or_default();
        if !self.ensure_ascii {
            out.push_str(&quoted);
            return;
        }
        for c in quoted.chars() {
            if c.is_ascii() {
                out.push(c);
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dumps(json: &str, indent: Option<&str>) -> String {
        let mut out = String::new();
        let style = PyJson {
            indent: indent.map(str::to_string),
            sort_keys: false,
            ensure_ascii: false,
        };
        style.dump(&serde_json::from_str(json).unwrap(), 0, &mut out);
        out
    }

    #[test]
    fn tojson_prints_like_python() {
        // Expected strings are Python's json.dumps output for the same values.
        assert_eq!(
            dumps(
                r#"{"b": [1, 2.5, "é\n"], "a": {}, "c": null, "d": []}"#,
                None
            ),
            r#"{"b": [1, 2.5, "é\n"], "a": {}, "c": null, "d": []}"#
        );
        assert_eq!(
            dumps(r#"{"a": [1, {"x": true}]}"#, Some("  ")),
            "{\n  \"a\": [\n    1,\n    {\n      \"x\": true\n    }\n  ]\n}"
        );
    }

    #[test]
    fn generation_tags_are_dropped() {
        assert_eq!(
            strip_generation_tags("a{% generation %}b{%- endgeneration -%}c"),
            "abc"
        );
    }
}
