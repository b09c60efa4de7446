//! The ways models write tool calls, how to tell which one a model uses from its chat template,
//! and each one's grammar for constrained calls (`tool_choice` `required` or a named function).

use std::fmt;
use std::str::FromStr;

use kiln_api_types::Tool;
use kiln_scheduler::OutputFormat;
use kiln_tokenizer::Tokenizer;
use serde_json::Value;

/// A tool-call syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolSyntax {
    /// Hermes / Qwen 2.5: `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>` per call,
    /// text allowed before. Kiln's generic prompt for templates without tools uses it too.
    Hermes,
    /// Llama 3.1/3.2 JSON: the answer is `{"name": …, "parameters": {…}}`, calls separated by
    /// `; `, optionally after `<|python_tag|>`; anything else is text.
    Llama3Json,
    /// Mistral: `[TOOL_CALLS]` then a JSON array of `{"name": …, "arguments": {…}}`.
    Mistral,
}

impl ToolSyntax {
    pub const ALL: [ToolSyntax; 3] = [Self::Hermes, Self::Llama3Json, Self::Mistral];

    /// The name `--tool-call-format` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hermes => "hermes",
            Self::Llama3Json => "llama3_json",
            Self::Mistral => "mistral",
        }
    }

    /// The syntax a chat template teaches its model: found from the markers it writes, Hermes
    /// when it writes none (also the syntax of Kiln's generic tools prompt).
    pub fn detect(template: Option<&str>) -> Self {
        let template = template.unwrap_or_default();
        if template.contains("[TOOL_CALLS]") {
            Self::Mistral
        } else if template.contains("<tool_call>") {
            Self::Hermes
        } else if template.contains("<|python_tag|>") || template.contains("ipython") {
            Self::Llama3Json
        } else {
            Self::Hermes
        }
    }

    /// Where each call starts and ends, and what stands between calls.
    pub(crate) fn markers(self) -> Markers {
        match self {
            Self::Hermes => Markers {
                call_open: "<tool_call>",
                call_close: "</tool_call>",
                separator: "\n",
                list_close: "",
                arguments_key: "arguments",
            },
            Self::Llama3Json => Markers {
                call_open: "",
                call_close: "",
                separator: "; ",
                list_close: "",
                arguments_key: "parameters",
            },
            Self::Mistral => Markers {
                call_open: "",
                call_close: "",
                separator: ", ",
                list_close: "]",
                arguments_key: "arguments",
            },
        }
    }

    /// The syntax's marker tokens (`<tool_call>`, `</tool_call>`, `[TOOL_CALLS]`).
    fn marker_tokens(self) -> &'static [&'static str] {
        match self {
            Self::Hermes => &["<tool_call>", "</tool_call>"],
            Self::Mistral => &["[TOOL_CALLS]"],
            Self::Llama3Json => &[],
        }
    }

    /// Whether one of the syntax's markers is a control token of the vocabulary: the grammar
    /// names it by id, and the text must keep it for the parser to see.
    pub(crate) fn has_special_marker(self, tokenizer: &Tokenizer) -> bool {
        self.marker_tokens()
            .iter()
            .any(|m| special_id(tokenizer, m).is_some())
    }

    /// The Lark rules of an answer made only of calls (rule `calls`; the caller writes
    /// `start`): one call when `many` is false, else one or more; each to one of `tools`, its
    /// arguments valid against that tool's schema, in the layout Kiln writes JSON in.
    pub(crate) fn calls_grammar(
        self,
        tools: &[&Tool],
        many: bool,
        tokenizer: &Tokenizer,
    ) -> String {
        let m = self.markers();
        // A marker by id when it is a control token, so the model writes that token rather
        // than spelling it out (which the vocabulary's matcher would never read back as it).
        let marker = |text: &str| match special_id(tokenizer, text) {
            Some(id) => format!("<[{id}]>"),
            None => quote(text),
        };
        let mut lark = String::new();
        let call = if self == Self::Hermes {
            format!(
                "{} \"\\n\" body \"\\n\" {}",
                marker(m.call_open),
                marker(m.call_close)
            )
        } else {
            "body".to_owned()
        };
        let list = if many {
            format!("call ({} call)*", quote(m.separator))
        } else {
            "call".to_owned()
        };
        let (open, close) = match self {
            Self::Mistral => (
                format!("{} \"[\" ", marker("[TOOL_CALLS]")),
                format!(" {}", quote(m.list_close)),
            ),
            _ => (String::new(), String::new()),
        };
        lark.push_str(&format!("calls: {open}{list}{close}\n"));
        lark.push_str(&format!("call: {call}\n"));
        let bodies: Vec<String> = (0..tools.len()).map(|i| format!("f{i}")).collect();
        lark.push_str(&format!("body: {}\n", bodies.join(" | ")));
        for (i, tool) in tools.iter().enumerate() {
            let head = format!(
                "{{\"name\": {}, \"{}\": ",
                serde_json::to_string(&tool.name).unwrap_or_default(),
                m.arguments_key
            );
            let schema = OutputFormat::embedded_schema(&arguments_schema(&tool.parameters));
            lark.push_str(&format!(
                "f{i}: {} %json {} \"}}\"\n",
                quote(&head),
                serde_json::to_string(&schema).unwrap_or_default()
            ));
        }
        lark
    }
}

/// The id of `text` when the vocabulary holds it as one control token.
fn special_id(tokenizer: &Tokenizer, text: &str) -> Option<u32> {
    let id = tokenizer.token_to_id(text)?;
    tokenizer.is_special(id).then_some(id)
}

/// Arguments are always an object: a schema that says nothing of its type gets `object`.
fn arguments_schema(parameters: &Value) -> Value {
    let mut schema = parameters.clone();
    if let Some(map) = schema.as_object_mut()
        && !map.contains_key("type")
        && !map.contains_key("$ref")
        && !map.contains_key("anyOf")
        && !map.contains_key("oneOf")
        && !map.contains_key("allOf")
    {
        map.insert("type".into(), Value::String("object".into()));
    }
    schema
}

/// A Lark string literal (JSON's quoting, which llguidance's Lark reads).
fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// The fixed text of a syntax.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Markers {
    /// Around each call (Hermes' tags). Mistral's list opens with `[TOOL_CALLS][`.
    pub(crate) call_open: &'static str,
    pub(crate) call_close: &'static str,
    /// Between calls, as Kiln writes it (whitespace around it is accepted when parsing).
    pub(crate) separator: &'static str,
    pub(crate) list_close: &'static str,
    /// The key of the arguments object (`parameters` for Llama 3; `arguments` is accepted
    /// too when parsing).
    pub(crate) arguments_key: &'static str,
}

impl fmt::Display for ToolSyntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ToolSyntax {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|syntax| syntax.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown tool-call format {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_from_the_template() {
        assert_eq!(ToolSyntax::detect(None), ToolSyntax::Hermes);
        let qwen = "{%- if tools %}<tools>{% endif %}<tool_call>\n{\"name\": ";
        assert_eq!(ToolSyntax::detect(Some(qwen)), ToolSyntax::Hermes);
        let llama = "{%- if message.role == \"ipython\" %}<|python_tag|>";
        assert_eq!(ToolSyntax::detect(Some(llama)), ToolSyntax::Llama3Json);
        let mistral = "{{- \"[TOOL_CALLS] [\" }}";
        assert_eq!(ToolSyntax::detect(Some(mistral)), ToolSyntax::Mistral);
        assert_eq!("mistral".parse(), Ok(ToolSyntax::Mistral));
        assert!("json".parse::<ToolSyntax>().is_err());
    }

    #[test]
    fn arguments_are_objects() {
        assert_eq!(
            arguments_schema(&serde_json::json!({"properties": {}})),
            serde_json::json!({"type": "object", "properties": {}})
        );
        assert_eq!(
            arguments_schema(&serde_json::json!({"anyOf": []})),
            serde_json::json!({"anyOf": []})
        );
    }
}
