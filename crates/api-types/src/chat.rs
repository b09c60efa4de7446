//! Chat completions on the wire (`POST /v1/chat/completions`): the request with its messages and
//! content parts, the response, and the streamed chunk.
//!
//! Request types mirror OpenAI field by field and keep what the client sent (numbers as
//! `f64`/`i64`, unsupported features as raw JSON) so that [`crate::validate`] can judge every
//! value once and name the field it rejects; they refuse unknown fields while parsing.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::common::{
    AssistantRole, ChatCompletionChunkObject, ChatCompletionObject, FinishReason, Stop,
    StreamOptions, Usage, json_object, opt_int, ser_logprob, string_enum,
};
use crate::schema;

/// The body of `POST /v1/chat/completions`.
///
/// Which fields Kiln honours, accepts and ignores, or rejects is tabled in [`crate::validate`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(remote = "Self", deny_unknown_fields)]
#[schemars(rename = "ChatCompletionRequest")]
#[schemars(
    description = "The body of `POST /v1/chat/completions`. Unknown fields are rejected; \
    fields for features the server lacks are accepted only when null."
)]
#[schemars(transform = schema::chat_request_rules)]
pub struct ChatCompletionRequest {
    /// The model to use; missing or empty means the server's default model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The conversation so far; at least one message.
    #[schemars(length(min = 1))]
    pub messages: Vec<ChatMessage>,
    /// Not supported (audio output); must be absent or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::null_only")]
    pub audio: Option<Value>,
    /// Penalises tokens by how often they already appeared, -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -2.0, max = 2.0))]
    pub frequency_penalty: Option<f64>,
    /// Deprecated function calling: only `"none"` (or null) is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::none_or_null")]
    pub function_call: Option<Value>,
    /// Not supported (deprecated function calling); must be absent or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::null_only")]
    pub functions: Option<Value>,
    /// Token id (as a decimal string) → bias from -100 to 100 added to its logit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::logit_bias")]
    pub logit_bias: Option<BTreeMap<String, f64>>,
    /// Return the log probability of each output token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// The most tokens to generate (wins over `max_tokens`).
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 4_294_967_295u32))]
    pub max_completion_tokens: Option<i64>,
    /// The most tokens to generate (deprecated by OpenAI in favour of `max_completion_tokens`).
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 4_294_967_295u32))]
    pub max_tokens: Option<i64>,
    /// Accepted and ignored: Kiln stores nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Output modalities: only `["text"]` (or null) is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::text_modality")]
    pub modalities: Option<Vec<String>>,
    /// How many choices to generate (at most the server's limit, 16 by default).
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 16))]
    pub n: Option<i64>,
    /// Whether one answer may hold several tool calls (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Not supported (predicted outputs); must be absent or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::null_only")]
    pub prediction: Option<Value>,
    /// Penalises tokens that already appeared, -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -2.0, max = 2.0))]
    pub presence_penalty: Option<f64>,
    /// Accepted and ignored: caching is automatic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<String>,
    /// Not supported (no reasoning models); must be absent or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::null_only")]
    pub reasoning_effort: Option<Value>,
    /// Output format: `{"type": "text"}`, `{"type": "json_object"}` or `{"type":
    /// "json_schema", "json_schema": {…}}`, enforced while decoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::response_format")]
    pub response_format: Option<Value>,
    /// Accepted and ignored: Kiln keeps no per-user abuse record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_identifier: Option<String>,
    /// Seed for sampling; the same seed and parameters give the same output.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = i64::MIN, max = i64::MAX))]
    pub seed: Option<i64>,
    /// Accepted and ignored: Kiln has one service tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<ServiceTier>,
    /// Up to 4 sequences where generation stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Only `false` (or null) is accepted: Kiln stores nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::false_or_null")]
    pub store: Option<bool>,
    /// Stream the answer as server-sent events (`chat.completion.chunk` objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options; only allowed when `stream` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Sampling temperature, 0 to 2; 0 is greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: Option<f64>,
    /// `none`, `auto` (the default with tools), `required`, or `{"type": "function",
    /// "function": {"name": …}}`; `required` and a named function are enforced while decoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::tool_choice")]
    pub tool_choice: Option<Value>,
    /// Functions the model may call (at most 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::tools")]
    pub tools: Option<Value>,
    /// How many most likely alternatives to return per token, 0 to 20; needs `logprobs: true`.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 20))]
    pub top_logprobs: Option<i64>,
    /// Nucleus sampling mass, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub top_p: Option<f64>,
    /// Accepted and ignored: Kiln keeps no per-user abuse record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Accepted and ignored: a length hint Kiln's models do not take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<Verbosity>,
    /// Not supported (web search); must be absent or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::null_only")]
    pub web_search_options: Option<Value>,
    /// vLLM extension: sample from the k most likely tokens; -1 or 0 disables.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = -1, max = 4_294_967_295u32))]
    pub top_k: Option<i64>,
    /// vLLM extension: drop tokens less likely than `min_p` × the top token's probability, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_p: Option<f64>,
    /// vLLM extension: penalises tokens already seen by this factor; > 0, 1 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub repetition_penalty: Option<f64>,
}

json_object!(ChatCompletionRequest);

/// `service_tier` values OpenAI documents; all are accepted and mean the same here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceTier {
    Auto,
    Default,
    Flex,
    Scale,
    Priority,
}

string_enum!(ServiceTier {
    Auto = "auto",
    Default = "default",
    Flex = "flex",
    Scale = "scale",
    Priority = "priority",
});

/// `verbosity` values OpenAI documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verbosity {
    Low,
    Medium,
    High,
}

string_enum!(Verbosity {
    Low = "low",
    Medium = "medium",
    High = "high",
});

/// A message's `role`. `function` parses (so the error can say it is unsupported rather than
/// unknown) but never validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

string_enum!(MessageRole {
    System = "system",
    Developer = "developer",
    User = "user",
    Assistant = "assistant",
    Tool = "tool",
    Function = "function",
});

/// One message of a chat request.
///
/// One struct for every role, rather than an enum tagged by `role`: a tagged enum buffers the
/// message and loses the path of any error inside it. The fields OpenAI defines only for tool
/// calling and audio are kept as raw JSON so validation can check them and name the field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct ChatMessage {
    pub role: MessageRole,
    /// Required for every role but an assistant message with `tool_calls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    /// The participant's name; passed to the chat template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An earlier assistant refusal; must be null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Value>,
    /// An assistant message's tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
    /// The call a tool message answers (required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<Value>,
    /// An earlier function call (deprecated); must be null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<Value>,
    /// An earlier audio answer; must be null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<Value>,
}

json_object!(ChatMessage);

impl ChatMessage {
    /// A message whose content is one string.
    pub fn text(role: MessageRole, content: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(MessageContent::Text(content.into())),
            name: None,
            refusal: None,
            tool_calls: None,
            tool_call_id: None,
            function_call: None,
            audio: None,
        }
    }
}

impl JsonSchema for ChatMessage {
    fn schema_name() -> Cow<'static, str> {
        "ChatMessage".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        schema::chat_message(&generator.subschema_for::<ImageUrl>().to_value())
    }
}

/// A message's `content`: a string or an array of parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

// Hand-written for the same reason as `Stop`: keep error paths and say what was expected.
impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;

        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = MessageContent;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<MessageContent, E> {
                Ok(MessageContent::Text(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<MessageContent, E> {
                Ok(MessageContent::Text(v))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MessageContent, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element::<ContentPart>()? {
                    parts.push(part);
                }
                Ok(MessageContent::Parts(parts))
            }
        }

        deserializer.deserialize_any(ContentVisitor)
    }
}

impl JsonSchema for MessageContent {
    fn schema_name() -> Cow<'static, str> {
        "MessageContent".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let part = generator.subschema_for::<ContentPart>();
        json_schema!({
            "anyOf": [
                { "type": "string" },
                { "type": "array", "items": part, "minItems": 1 }
            ]
        })
    }
}

/// One part of an array `content`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// `{"type": "text", "text": ...}`.
    Text { text: String },
    /// `{"type": "image_url", "image_url": {"url": ..., "detail": ...}}` (user messages only).
    ImageUrl { image_url: ImageUrl },
}

/// The part types a content part may name; OpenAI's others are recognised so the error can say
/// they are unsupported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartType {
    Text,
    ImageUrl,
}

impl<'de> Deserialize<'de> for PartType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.as_str() {
            "text" => Ok(PartType::Text),
            "image_url" => Ok(PartType::ImageUrl),
            "input_audio" | "file" | "refusal" => Err(de::Error::custom(format_args!(
                "content part type `{name}` is not supported by this server; expected `text` or `image_url`"
            ))),
            _ => Err(de::Error::unknown_variant(&name, &["text", "image_url"])),
        }
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum PartField {
    Type,
    Text,
    ImageUrl,
}

// Hand-written rather than internally tagged: serde's tagged enums buffer the object, which loses
// the error path, and an unknown `type` must be reported at `...content[j].type`.
impl<'de> Deserialize<'de> for ContentPart {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PartVisitor;

        impl<'de> Visitor<'de> for PartVisitor {
            type Value = ContentPart;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a content part object such as {"type": "text", "text": "..."}"#)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ContentPart, A::Error> {
                let mut kind = None;
                let mut text = None;
                let mut image_url = None;
                while let Some(field) = map.next_key::<PartField>()? {
                    match field {
                        PartField::Type if kind.is_some() => {
                            return Err(de::Error::duplicate_field("type"));
                        }
                        PartField::Type => kind = Some(map.next_value::<PartType>()?),
                        PartField::Text if text.is_some() => {
                            return Err(de::Error::duplicate_field("text"));
                        }
                        PartField::Text => text = Some(map.next_value::<String>()?),
                        PartField::ImageUrl if image_url.is_some() => {
                            return Err(de::Error::duplicate_field("image_url"));
                        }
                        PartField::ImageUrl => image_url = Some(map.next_value::<ImageUrl>()?),
                    }
                }
                match kind {
                    None => Err(de::Error::missing_field("type")),
                    Some(PartType::Text) => {
                        if image_url.is_some() {
                            return Err(de::Error::unknown_field("image_url", &["type", "text"]));
                        }
                        let text = text.ok_or_else(|| de::Error::missing_field("text"))?;
                        Ok(ContentPart::Text { text })
                    }
                    Some(PartType::ImageUrl) => {
                        if text.is_some() {
                            return Err(de::Error::unknown_field("text", &["type", "image_url"]));
                        }
                        let image_url =
                            image_url.ok_or_else(|| de::Error::missing_field("image_url"))?;
                        Ok(ContentPart::ImageUrl { image_url })
                    }
                }
            }
        }

        deserializer.deserialize_map(PartVisitor)
    }
}

impl JsonSchema for ContentPart {
    fn schema_name() -> Cow<'static, str> {
        "ContentPart".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        schema::any_content_part(&generator.subschema_for::<ImageUrl>().to_value())
    }
}

/// An image reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(remote = "Self", deny_unknown_fields)]
#[schemars(rename = "ImageUrl")]
pub struct ImageUrl {
    /// `https://…`, `http://…`, `data:image/<type>;base64,<data>`, or `file://…` where the
    /// server allows a local media folder.
    #[schemars(pattern(schema::IMAGE_URL_PATTERN))]
    pub url: String,
    /// `low` asks for fewer image tokens where the model's processor has a way (Idefics3: the
    /// global image only, no tiles); elsewhere accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ImageDetail>,
}

json_object!(ImageUrl);

/// `image_url.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageDetail {
    Auto,
    Low,
    High,
}

string_enum!(ImageDetail {
    Auto = "auto",
    Low = "low",
    High = "high",
});

/// The response to a non-streamed chat request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-…`.
    pub id: String,
    pub object: ChatCompletionObject,
    /// Unix seconds.
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatCompletionChoice>,
    pub usage: Usage,
    pub system_fingerprint: Option<String>,
}

/// One generated answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatCompletionChoice {
    pub index: u32,
    pub message: ChatCompletionMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: FinishReason,
}

/// The assistant's message in a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatCompletionMessage {
    pub role: AssistantRole,
    /// The text; null when the answer is only tool calls.
    pub content: Option<String>,
    /// Always null: Kiln's models do not produce structured refusals.
    pub refusal: Option<String>,
    /// The calls the model made, when it made any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<crate::ToolCall>>,
}

impl ChatCompletionMessage {
    /// An assistant message with `content` and no refusal.
    pub fn new(content: impl Into<String>) -> Self {
        Self {
            role: AssistantRole::Value,
            content: Some(content.into()),
            refusal: None,
            tool_calls: None,
        }
    }
}

/// Per-token log probabilities of a choice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatLogprobs {
    pub content: Option<Vec<TokenLogprob>>,
    pub refusal: Option<Vec<TokenLogprob>>,
}

/// One output token with its log probability and the most likely alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TokenLogprob {
    pub token: String,
    /// Non-finite values are written as -9999.
    #[serde(serialize_with = "ser_logprob")]
    pub logprob: f32,
    /// The token's UTF-8 bytes (a token may hold part of a character).
    pub bytes: Option<Vec<u8>>,
    pub top_logprobs: Vec<TopLogprob>,
}

/// An alternative token at one position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TopLogprob {
    pub token: String,
    /// Non-finite values are written as -9999.
    #[serde(serialize_with = "ser_logprob")]
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
}

/// One server-sent event of a streamed chat answer.
///
/// The final chunk of a request with `stream_options.include_usage` has `usage` set and no
/// choices; other chunks omit `usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: ChatCompletionChunkObject,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: Option<String>,
    pub choices: Vec<ChatCompletionChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One choice's piece of a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatCompletionChunkChoice {
    pub index: u32,
    pub delta: ChatCompletionDelta,
    pub logprobs: Option<ChatLogprobs>,
    /// Null until the choice's last chunk.
    pub finish_reason: Option<FinishReason>,
}

/// What a chunk adds to a choice: the role in the first chunk, then text or pieces of tool
/// calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatCompletionDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<AssistantRole>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<crate::ToolCallDelta>>,
}
