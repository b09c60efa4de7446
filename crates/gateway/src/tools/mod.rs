//! Tool calling around the model: the prompt (the chat template's own tool support, or Kiln's
//! generic prompt for templates without it), the grammar that enforces `tool_choice`
//! `required` or a named function, and the parser that turns the model's calls back into
//! OpenAI's `tool_calls`.
//!
//! `auto` is not constrained: the model chooses between text and calls, and what it wrote is
//! parsed (a call to an undefined function, or one that does not parse, stays text). `none`
//! leaves the tools out of the prompt and never parses.

mod parse;
mod syntax;

use std::collections::HashMap;

use kiln_api_types::{
    ChatCompletionDelta, FunctionCall, FunctionCallDelta, FunctionType, ResponseFormat, Role,
    SCHEMA_PARAM, Tool, ToolCall, ToolCallDelta, ToolChoice, Tools, ValidatedMessage,
};
use kiln_scheduler::{EngineHandle, Grammar, OutputFormat};
use kiln_tokenizer::{ChatMessage, Content, Tokenizer};
use serde_json::{Value, json};

use crate::error::{ApiError, from_scheduler};
use crate::ids::random_hex;

pub use parse::{CallParser, Piece};
pub use syntax::ToolSyntax;

/// Whether a chat template renders `tools` itself (Hugging Face templates read the variable
/// `tools`); if not, Kiln's generic prompt describes them.
pub(crate) fn template_takes_tools(template: Option<&str>) -> bool {
    template.is_some_and(|t| t.contains("tools"))
}

/// How one request's tools meet the model.
#[derive(Debug, Clone)]
pub(crate) struct ToolPlan {
    /// The syntax the model is asked for, and parsed in.
    pub(crate) syntax: ToolSyntax,
    /// The template renders the tools (else the generic prompt does).
    native: bool,
}

impl ToolPlan {
    pub(crate) fn new(syntax: ToolSyntax, template: Option<&str>) -> Self {
        let native = template_takes_tools(template);
        Self {
            // The generic prompt teaches Hermes tags.
            syntax: if native { syntax } else { ToolSyntax::Hermes },
            native,
        }
    }

    /// The tools as the template takes them (only when the model may call them).
    pub(crate) fn template_tools(&self, tools: &Tools) -> Option<Vec<Value>> {
        (self.native && tools.enabled())
            .then(|| tools.tools.iter().map(Tool::template_value).collect())
    }

    /// Gives the template the conversation's calls and results: in the template's own form
    /// (`tool_calls`, `tool_call_id`, as Hugging Face passes them), or, for a template
    /// without tools, as the generic prompt's text.
    pub(crate) fn messages(
        &self,
        mut rendered: Vec<ChatMessage>,
        validated: &[ValidatedMessage],
        tools: &Tools,
    ) -> Vec<ChatMessage> {
        let mut names = HashMap::new();
        for m in validated {
            for c in &m.tool_calls {
                names.insert(c.id.as_str(), c.name.as_str());
            }
        }
        if self.native {
            for (msg, m) in rendered.iter_mut().zip(validated) {
                self.native_fields(msg, m, &names);
            }
            return rendered;
        }
        let mut out: Vec<ChatMessage> = Vec::with_capacity(rendered.len() + 1);
        for (mut msg, m) in rendered.into_iter().zip(validated) {
            if !m.tool_calls.is_empty() {
                let mut text = text_of(&msg);
                for c in &m.tool_calls {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    let call = json!({"name": c.name, "arguments": arguments_value(&c.arguments)});
                    text.push_str(&format!("<tool_call>\n{call}\n</tool_call>"));
                }
                msg.content = Some(Content::Text(text));
            }
            if m.role == Role::Tool {
                let response = format!("<tool_response>\n{}\n</tool_response>", text_of(&msg));
                // Results of one turn's calls go back as one user turn.
                if let Some(last) = out.last_mut()
                    && last.extra.contains_key("kiln_tool_results")
                {
                    let joined = format!("{}\n{response}", text_of(last));
                    last.content = Some(Content::Text(joined));
                    continue;
                }
                let mut user = ChatMessage::text("user", response);
                user.extra
                    .insert("kiln_tool_results".into(), Value::Bool(true));
                out.push(user);
                continue;
            }
            out.push(msg);
        }
        for m in &mut out {
            m.extra.remove("kiln_tool_results");
        }
        if tools.enabled() {
            let prompt = generic_prompt(&tools.tools);
            match out.first_mut() {
                Some(first) if first.role == "system" => {
                    let joined = format!("{}\n\n{prompt}", text_of(first));
                    first.content = Some(Content::Text(joined));
                }
                _ => out.insert(0, ChatMessage::text("system", prompt)),
            }
        }
        out
    }

    fn native_fields(
        &self,
        msg: &mut ChatMessage,
        m: &ValidatedMessage,
        names: &HashMap<&str, &str>,
    ) {
        if !m.tool_calls.is_empty() {
            let calls: Vec<Value> = m
                .tool_calls
                .iter()
                .map(|c| {
                    json!({
                        "id": self.template_id(&c.id),
                        "type": "function",
                        // Templates print arguments with `tojson`: an object, as vLLM and
                        // transformers give them.
                        "function": {"name": c.name, "arguments": arguments_value(&c.arguments)},
                    })
                })
                .collect();
            msg.extra.insert("tool_calls".into(), Value::Array(calls));
            if m.content.is_empty() {
                msg.content = None;
            }
        }
        if let Some(id) = &m.tool_call_id {
            msg.extra
                .insert("tool_call_id".into(), Value::String(self.template_id(id)));
            if !msg.extra.contains_key("name")
                && let Some(name) = names.get(id.as_str())
            {
                msg.extra
                    .insert("name".into(), Value::String((*name).to_string()));
            }
        }
    }

    /// Mistral's templates accept only 9 alphanumeric characters as a call id.
    fn template_id(&self, id: &str) -> String {
        if self.syntax != ToolSyntax::Mistral {
            return id.to_string();
        }
        mistral_id(id)
    }

    /// A new call's id, in the form the model's template takes back.
    pub(crate) fn new_call_id(&self) -> String {
        match self.syntax {
            ToolSyntax::Mistral => mistral_id(&random_hex(9)),
            _ => format!("call_{}", random_hex(24)),
        }
    }

    /// A parser for one choice's answer.
    pub(crate) fn parser(&self, tools: &Tools) -> CallParser {
        let names = match &tools.choice {
            ToolChoice::Function(name) => vec![name.clone()],
            _ => tools.tools.iter().map(|t| t.name.clone()).collect(),
        };
        CallParser::new(self.syntax, names)
    }

    /// Whether the text must keep special tokens: the syntax's marker is one.
    pub(crate) fn keeps_special_tokens(&self, tokenizer: &Tokenizer) -> bool {
        self.syntax.has_special_marker(tokenizer)
    }

    /// The request's output constraint: the calls grammar for `required` and a named
    /// function; for `auto` with a JSON `response_format`, calls or that JSON; otherwise the
    /// response format alone. Every tool's schema is compiled (so a keyword the grammar
    /// engine cannot enforce is a 400 naming the tool) even where `auto` leaves the model
    /// free.
    pub(crate) async fn compile(
        &self,
        engine: &EngineHandle,
        tokenizer: &Tokenizer,
        tools: &Tools,
        response_format: &ResponseFormat,
    ) -> Result<Option<Grammar>, ApiError> {
        let all: Vec<&Tool> = tools.tools.iter().collect();
        let (allowed, many) = match &tools.choice {
            ToolChoice::None => {
                return crate::handlers::compile_format(engine, response_format).await;
            }
            ToolChoice::Function(name) => (
                all.iter().copied().filter(|t| &t.name == name).collect(),
                false,
            ),
            ToolChoice::Required | ToolChoice::Auto => (all.clone(), tools.parallel),
        };
        let calls = self.syntax.calls_grammar(&allowed, many, tokenizer);
        let either = |schema: &Value| {
            format!(
                "start: calls | %json {}\n{calls}",
                OutputFormat::embedded_schema(schema)
            )
        };
        let constrained = match (&tools.choice, response_format) {
            (ToolChoice::Auto, ResponseFormat::Text) => None,
            (ToolChoice::Auto, ResponseFormat::JsonObject) => {
                Some(either(&json!({"type": "object"})))
            }
            (ToolChoice::Auto, ResponseFormat::JsonSchema { schema, .. }) => Some(either(schema)),
            _ => Some(format!("start: calls\n{calls}")),
        };
        let is_constrained = constrained.is_some();
        let lark = constrained.unwrap_or_else(|| format!("start: calls\n{calls}"));
        match compile_lark(engine, lark).await {
            Ok(grammar) => Ok(is_constrained.then_some(grammar)),
            Err(e) => Err(self
                .blame(engine, tokenizer, &all, e, response_format)
                .await),
        }
    }

    /// Which part of the request made the grammar fail: the first tool whose schema fails
    /// alone, else the response format.
    async fn blame(
        &self,
        engine: &EngineHandle,
        tokenizer: &Tokenizer,
        tools: &[&Tool],
        error: ApiError,
        response_format: &ResponseFormat,
    ) -> ApiError {
        for (i, tool) in tools.iter().enumerate() {
            let lark = format!(
                "start: calls\n{}",
                self.syntax.calls_grammar(&[tool], false, tokenizer)
            );
            if let Err(e) = compile_lark(engine, lark).await {
                return e.param(format!("tools[{i}].function.parameters"));
            }
        }
        let param = match response_format {
            ResponseFormat::JsonSchema { .. } => SCHEMA_PARAM,
            _ => "response_format",
        };
        error.param(param)
    }
}

/// One choice's calls as they stream: the parser, and the id given to each call.
#[derive(Debug)]
pub(crate) struct ChoiceCalls {
    parser: CallParser,
    ids: Vec<String>,
    plan: ToolPlan,
}

impl ChoiceCalls {
    pub(crate) fn new(plan: &ToolPlan, tools: &Tools) -> Self {
        Self {
            parser: plan.parser(tools),
            ids: Vec::new(),
            plan: plan.clone(),
        }
    }

    /// How many calls the answer holds so far.
    pub(crate) fn calls(&self) -> usize {
        self.parser.calls()
    }

    /// The deltas `text` adds.
    pub(crate) fn push(&mut self, text: &str) -> Vec<ChatCompletionDelta> {
        let pieces = self.parser.push(text);
        self.deltas(pieces)
    }

    /// The deltas the end of the answer releases.
    pub(crate) fn finish(&mut self) -> Vec<ChatCompletionDelta> {
        let pieces = self.parser.finish();
        self.deltas(pieces)
    }

    fn deltas(&mut self, pieces: Vec<Piece>) -> Vec<ChatCompletionDelta> {
        pieces
            .into_iter()
            .map(|piece| match piece {
                Piece::Content(text) => ChatCompletionDelta {
                    content: Some(text),
                    ..ChatCompletionDelta::default()
                },
                Piece::Call { index, name } => {
                    let id = self.plan.new_call_id();
                    self.ids.push(id.clone());
                    call_delta(ToolCallDelta {
                        index: index as u32,
                        id: Some(id),
                        kind: Some(FunctionType::Value),
                        function: Some(FunctionCallDelta {
                            name: Some(name),
                            arguments: Some(String::new()),
                        }),
                    })
                }
                Piece::Arguments { index, text } => call_delta(ToolCallDelta {
                    index: index as u32,
                    id: None,
                    kind: None,
                    function: Some(FunctionCallDelta {
                        name: None,
                        arguments: Some(text),
                    }),
                }),
            })
            .collect()
    }

    /// A whole answer: its text (none when it is only calls) and its calls.
    pub(crate) fn message(mut self, text: &str) -> (Option<String>, Vec<ToolCall>) {
        let mut deltas = self.push(text);
        deltas.extend(self.finish());
        let mut content = String::new();
        let mut calls: Vec<ToolCall> = Vec::new();
        for delta in deltas {
            if let Some(text) = delta.content {
                content.push_str(&text);
            }
            for d in delta.tool_calls.into_iter().flatten() {
                let function = d.function.unwrap_or_default();
                match d.id {
                    Some(id) => calls.push(ToolCall {
                        id,
                        kind: FunctionType::Value,
                        function: FunctionCall {
                            name: function.name.unwrap_or_default(),
                            arguments: function.arguments.unwrap_or_default(),
                        },
                    }),
                    None => {
                        if let Some(call) = calls.get_mut(d.index as usize) {
                            call.function
                                .arguments
                                .push_str(&function.arguments.unwrap_or_default());
                        }
                    }
                }
            }
        }
        let content = (calls.is_empty() || !content.is_empty()).then_some(content);
        (content, calls)
    }
}

fn call_delta(call: ToolCallDelta) -> ChatCompletionDelta {
    ChatCompletionDelta {
        tool_calls: Some(vec![call]),
        ..ChatCompletionDelta::default()
    }
}

async fn compile_lark(engine: &EngineHandle, lark: String) -> Result<Grammar, ApiError> {
    let engine = engine.clone();
    crate::handlers::blocking(move || engine.compile(&OutputFormat::Lark(lark), "tools"))
        .await?
        .map_err(|e| from_scheduler(e, "tools"))
}

/// A call's arguments as the template prints them: the object the JSON text holds, else the
/// text itself.
fn arguments_value(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::String(arguments.to_string()),
    }
}

fn text_of(msg: &ChatMessage) -> String {
    match &msg.content {
        Some(Content::Text(t)) => t.clone(),
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                kiln_tokenizer::ContentPart::Text { text } => Some(text.as_str()),
                kiln_tokenizer::ContentPart::Image => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
        None => String::new(),
    }
}

/// 9 alphanumeric characters from any id, the same for the same id.
fn mistral_id(id: &str) -> String {
    let alnum: String = id.chars().filter(char::is_ascii_alphanumeric).collect();
    if alnum.len() == 9 {
        return alnum;
    }
    // FNV-1a, printed in base 36: stable across runs, so a call and its result agree.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..9)
        .map(|_| {
            let c = digits[(hash % 36) as usize] as char;
            hash /= 36;
            c
        })
        .collect()
}

/// Kiln's generic tools prompt (Qwen 2.5's words, Hermes tags), for templates that do not
/// render tools.
fn generic_prompt(tools: &[Tool]) -> String {
    let mut prompt = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for tool in tools {
        prompt.push('\n');
        prompt.push_str(&tool.template_value().to_string());
    }
    prompt.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and \
         arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mistral_ids_are_nine_alphanumerics_and_stable() {
        let a = mistral_id("call_0123456789abcdef");
        assert_eq!(a.len(), 9);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(a, mistral_id("call_0123456789abcdef"));
        assert_ne!(a, mistral_id("call_0123456789abcdeg"));
        assert_eq!(mistral_id("abcDEF123"), "abcDEF123");
    }

    #[test]
    fn arguments_go_to_templates_as_objects() {
        assert_eq!(arguments_value("{\"a\": 1}"), json!({"a": 1}));
        assert_eq!(arguments_value("[1]"), json!("[1]"));
    }
}
