//! Legacy completions on the wire (`POST /v1/completions`): the request with its four prompt
//! forms, and the `text_completion` object used both for the response and for streamed chunks.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::common::{
    FinishReason, Stop, StreamOptions, TextCompletionObject, Usage, finite_logprob, integral,
    json_object, opt_int, ser_opt_logprobs,
};
use crate::limits::Limits;
use crate::schema;

/// The body of `POST /v1/completions`.
///
/// Which fields Kiln honours, accepts and ignores, or rejects is tabled in [`crate::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(remote = "Self", deny_unknown_fields)]
#[schemars(rename = "CompletionRequest")]
#[schemars(
    description = "The body of `POST /v1/completions`. Unknown fields are rejected; \
    fields for features the server lacks are accepted only when null."
)]
#[schemars(transform = schema::completion_request_rules)]
pub struct CompletionRequest {
    /// The model to use; missing or empty means the server's default model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A string, strings, token ids, or arrays of token ids; each string or id array is one
    /// prompt (at most 64).
    pub prompt: Prompt,
    /// Must equal `n` if given: Kiln returns every sequence it generates.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 16))]
    pub best_of: Option<i64>,
    /// Return the prompt before the completion (with its logprobs if `logprobs` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    /// Penalises tokens by how often they already appeared, -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -2.0, max = 2.0))]
    pub frequency_penalty: Option<f64>,
    /// Token id (as a decimal string) → bias from -100 to 100 added to its logit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::logit_bias")]
    pub logit_bias: Option<BTreeMap<String, f64>>,
    /// Return the log probabilities of this many most likely tokens per position, 0 to 5, plus
    /// the chosen token's.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 5))]
    pub logprobs: Option<i64>,
    /// The most tokens to generate; 16 when absent, as in OpenAI's legacy API.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 4_294_967_295u32))]
    pub max_tokens: Option<i64>,
    /// How many completions to generate per prompt (at most the server's limit, 16 by default).
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 16))]
    pub n: Option<i64>,
    /// Penalises tokens that already appeared, -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -2.0, max = 2.0))]
    pub presence_penalty: Option<f64>,
    /// Seed for sampling; the same seed and parameters give the same output.
    #[serde(
        default,
        deserialize_with = "opt_int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = i64::MIN, max = i64::MAX))]
    pub seed: Option<i64>,
    /// Up to 4 sequences where generation stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Stream the answer as server-sent events (`text_completion` objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options; only allowed when `stream` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Not supported (insertion); must be absent or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::null_only")]
    pub suffix: Option<Value>,
    /// A Kiln extension: the output format, as chat's `response_format`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::response_format")]
    pub response_format: Option<Value>,
    /// Sampling temperature, 0 to 2; 0 is greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub top_p: Option<f64>,
    /// Accepted and ignored: Kiln keeps no per-user abuse record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
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

json_object!(CompletionRequest);

impl CompletionRequest {
    /// A request for `prompt` with every option left to its default.
    pub fn new(prompt: Prompt) -> Self {
        Self {
            model: None,
            prompt,
            best_of: None,
            echo: None,
            frequency_penalty: None,
            logit_bias: None,
            logprobs: None,
            max_tokens: None,
            n: None,
            presence_penalty: None,
            seed: None,
            stop: None,
            stream: None,
            stream_options: None,
            suffix: None,
            response_format: None,
            temperature: None,
            top_p: None,
            user: None,
            top_k: None,
            min_p: None,
            repetition_penalty: None,
        }
    }
}

/// The four shapes of `prompt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One text prompt.
    Text(String),
    /// Several text prompts (an empty array parses as this, and fails validation).
    Texts(Vec<String>),
    /// One prompt given as token ids.
    Tokens(Vec<u32>),
    /// Several prompts given as token ids.
    TokenLists(Vec<Vec<u32>>),
}

/// What a token id must be, for error messages.
const TOKEN_ID: &str = "a token id (an integer from 0 to 4294967295)";

/// A token id on the wire: a non-negative integer that fits `u32`.
struct TokenId(u32);

impl<'de> Deserialize<'de> for TokenId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;

        impl Visitor<'_> for IdVisitor {
            type Value = TokenId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(TOKEN_ID)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TokenId, E> {
                u32::try_from(v)
                    .map(TokenId)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &TOKEN_ID))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TokenId, E> {
                u32::try_from(v)
                    .map(TokenId)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &TOKEN_ID))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TokenId, E> {
                let Some(i) = integral(v) else {
                    return Err(E::invalid_type(de::Unexpected::Float(v), &TOKEN_ID));
                };
                u32::try_from(i)
                    .map(TokenId)
                    .map_err(|_| E::invalid_value(de::Unexpected::Float(v), &TOKEN_ID))
            }
        }

        deserializer.deserialize_u64(IdVisitor)
    }
}

/// One element of an array prompt, before the array is known to be homogeneous.
enum PromptItem {
    Text(String),
    Token(u32),
    Tokens(Vec<u32>),
}

impl<'de> Deserialize<'de> for PromptItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;

        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = PromptItem;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a token id or an array of token ids")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<PromptItem, E> {
                Ok(PromptItem::Text(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<PromptItem, E> {
                Ok(PromptItem::Text(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PromptItem, E> {
                u32::try_from(v)
                    .map(PromptItem::Token)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &TOKEN_ID))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PromptItem, E> {
                u32::try_from(v)
                    .map(PromptItem::Token)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &TOKEN_ID))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<PromptItem, E> {
                let Some(i) = integral(v) else {
                    return Err(E::invalid_type(de::Unexpected::Float(v), &TOKEN_ID));
                };
                u32::try_from(i)
                    .map(PromptItem::Token)
                    .map_err(|_| E::invalid_value(de::Unexpected::Float(v), &TOKEN_ID))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PromptItem, A::Error> {
                let mut ids = Vec::new();
                while let Some(TokenId(id)) = seq.next_element()? {
                    ids.push(id);
                }
                Ok(PromptItem::Tokens(ids))
            }
        }

        deserializer.deserialize_any(ItemVisitor)
    }
}

// Hand-written: an untagged enum would only say "data did not match any variant", and the
// element that breaks an array's homogeneity deserves a message of its own.
impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PromptVisitor;

        const MIXED: &str =
            "a prompt array must hold only strings, only token ids, or only arrays of token ids";

        impl<'de> Visitor<'de> for PromptVisitor {
            type Value = Prompt;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a string, an array of strings, an array of token ids or an array of arrays of token ids",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Prompt, E> {
                Ok(Prompt::Text(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Prompt, E> {
                Ok(Prompt::Text(v))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Prompt, A::Error> {
                let Some(first) = seq.next_element::<PromptItem>()? else {
                    return Ok(Prompt::Texts(Vec::new()));
                };
                let mut prompt = match first {
                    PromptItem::Text(s) => Prompt::Texts(vec![s]),
                    PromptItem::Token(id) => Prompt::Tokens(vec![id]),
                    PromptItem::Tokens(ids) => Prompt::TokenLists(vec![ids]),
                };
                while let Some(item) = seq.next_element::<PromptItem>()? {
                    match (&mut prompt, item) {
                        (Prompt::Texts(v), PromptItem::Text(s)) => v.push(s),
                        (Prompt::Tokens(v), PromptItem::Token(id)) => v.push(id),
                        (Prompt::TokenLists(v), PromptItem::Tokens(ids)) => v.push(ids),
                        _ => return Err(de::Error::custom(MIXED)),
                    }
                }
                Ok(prompt)
            }
        }

        deserializer.deserialize_any(PromptVisitor)
    }
}

impl JsonSchema for Prompt {
    fn schema_name() -> Cow<'static, str> {
        "Prompt".into()
    }

    // Inline, so that the request schema's limits (vocabulary size, prompt count) can be
    // rewritten in place by `openapi_for`.
    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schema::prompt(&Limits::default())
    }
}

/// A legacy completion, or one streamed chunk of it (same shape: chunks have `finish_reason`
/// null until a choice's last chunk, and no `usage` except in the final `include_usage` chunk,
/// whose `choices` is empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Completion {
    /// `cmpl-…`.
    pub id: String,
    pub object: TextCompletionObject,
    /// Unix seconds.
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    pub system_fingerprint: Option<String>,
}

/// One generated text (one per prompt × `n`, indexed prompt-major).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CompletionChoice {
    pub text: String,
    pub index: u32,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<FinishReason>,
}

/// Legacy per-token log probabilities, as parallel arrays.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    /// Null for the first echoed prompt token, which has no prediction; non-finite values are
    /// written as -9999.
    #[serde(serialize_with = "ser_opt_logprobs")]
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<TopLogprobsMap>>,
    /// Character offset of each token in the returned text (echoed prompt included).
    pub text_offset: Vec<u32>,
}

/// The legacy `top_logprobs` entry: token text → logprob, most likely first.
///
/// A list underneath because two ids can decode to the same text; when they do, the first (more
/// likely) one is written and the rest dropped, since JSON object keys must be unique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopLogprobsMap(pub Vec<(String, f32)>);

impl Serialize for TopLogprobsMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<_> = self
            .0
            .iter()
            .filter(|(t, _)| seen.insert(t.as_str()))
            .collect();
        let mut map = serializer.serialize_map(Some(unique.len()))?;
        for (token, logprob) in unique {
            map.serialize_entry(token, &finite_logprob(*logprob))?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for TopLogprobsMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::<String, Value>::deserialize(deserializer)?;
        map.into_iter()
            .map(|(k, v)| match v.as_f64() {
                Some(f) => Ok((k, f as f32)),
                None => Err(de::Error::custom("a top_logprobs value must be a number")),
            })
            .collect::<Result<_, _>>()
            .map(TopLogprobsMap)
    }
}

impl JsonSchema for TopLogprobsMap {
    fn schema_name() -> Cow<'static, str> {
        "TopLogprobsMap".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "additionalProperties": { "type": "number" }
        })
    }
}
