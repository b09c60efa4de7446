//! Validation: a parsed request is checked once, completely, and turned into typed values the
//! rest of Kiln can trust ([`ValidatedChat`], [`ValidatedCompletion`]). Every rejection is a
//! [`ValidationError`] naming the field (`param`) at fault; the gateway answers it with 400
//! `invalid_request_error`.
//!
//! Nothing OpenAI defines is silently dropped when it would change the answer: each field is
//! honoured, accepted and ignored (only where ignoring it cannot change the output a client
//! expects), or rejected. Fields OpenAI does not define are rejected while parsing.
//!
//! # Chat completions (`POST /v1/chat/completions`)
//!
//! | Field | Treatment |
//! | --- | --- |
//! | `model` | Honoured. Missing or `""` → `None`: the server's default model. |
//! | `messages` | Honoured. At least one. Roles `system`, `developer`, `user`, `assistant`, `tool`; `function` (deprecated) rejected. |
//! | `messages[i].content` | Honoured. Required for every role, except an assistant message with `tool_calls` (null or absent there). A string, or a non-empty array of parts: `text` anywhere, `image_url` in user messages only; other part types rejected. |
//! | `messages[i].content[j].image_url.url` | Honoured. `https://`, `http://`, `data:image/…;base64,…` or `file://` (scheme checked, case-insensitively; fetched and decoded by the gateway, `file://` only under `--allowed-local-media-path`). At most [`Limits::max_images`] images per request; with `max_images` 0 any image part is rejected. |
//! | `messages[i].content[j].image_url.detail` | Accepted, ignored: the model's own image resolution is used. |
//! | `messages[i].name` | Honoured: given to the chat template. |
//! | `messages[i].tool_calls` | Honoured in assistant messages (`id`, `type: "function"`, `function.name`, `function.arguments` as a JSON string): given to the chat template; in other roles only null. |
//! | `messages[i].tool_call_id` | Required in `tool` messages, and must name a call of an earlier assistant message; in other roles only null. |
//! | `messages[i].refusal`, `.function_call`, `.audio` | Null accepted (clients echo them back); any value rejected. |
//! | `frequency_penalty`, `presence_penalty` | Honoured, −2 to 2. |
//! | `logit_bias` | Honoured. Keys are decimal token ids (below [`Limits::vocab_size`] when known), values −100 to 100. |
//! | `logprobs`, `top_logprobs` | Honoured. `top_logprobs` 0 to 20, and only with `logprobs: true`. |
//! | `max_completion_tokens`, `max_tokens` | Honoured, ≥ 1. When both are given `max_completion_tokens` wins (OpenAI deprecated `max_tokens`). Neither → `None`: until the context is full. |
//! | `n` | Honoured, 1 to [`Limits::max_n`]. |
//! | `stop` | Honoured: a string or up to 4 strings, none empty. |
//! | `stream`, `stream_options.include_usage` | Honoured. `stream_options` (non-null) only with `stream: true`, as OpenAI. |
//! | `stream_options.include_obfuscation` | Accepted, ignored: chunks are never padded. |
//! | `temperature` | Honoured, 0 to 2 (0 means greedy). |
//! | `top_p` | Honoured, 0 to 1. |
//! | `seed` | Honoured: any `i64`, kept as its `u64` bits. |
//! | `top_k`, `min_p`, `repetition_penalty` | Honoured (vLLM extensions). `top_k` ≥ −1 (−1 or 0 disable), `min_p` 0 to 1, `repetition_penalty` > 0. |
//! | `user`, `safety_identifier` | Accepted, ignored: Kiln keeps no per-user records. |
//! | `metadata` | Accepted, ignored: it labels stored completions, and nothing is stored. |
//! | `store` | `false` accepted; `true` rejected: nothing is stored. |
//! | `service_tier` | Accepted (OpenAI's values), ignored: there is one tier. |
//! | `prompt_cache_key` | Accepted, ignored: prefix reuse needs no key. |
//! | `verbosity` | Accepted (`low`/`medium`/`high`), ignored: a length hint, not a constraint. |
//! | `tools` | Honoured: up to [`MAX_TOOLS`](crate::MAX_TOOLS) functions (`type: "function"`; `function.name` 1–64 of `[A-Za-z0-9_-]`, unique; `description`; `parameters`, a JSON Schema object, none meaning no arguments; `strict`). `[]` means no tools. A `parameters` keyword the grammar engine cannot enforce is rejected by the gateway, naming it. |
//! | `tool_choice` | Honoured: `none`, `auto` (the default with tools), `required`, or `{"type": "function", "function": {"name"}}` naming a defined tool; anything but `none` needs tools. |
//! | `parallel_tool_calls` | Honoured: `false` allows at most one call per answer. |
//! | `functions`, `function_call` | Deprecated by OpenAI for `tools`: `functions` rejected, `function_call` only `"none"`. |
//! | `response_format` | Honoured: `text`, `json_object` (any JSON object) and `json_schema` (`name` 1–64 of `[A-Za-z0-9_-]`, `description`, `schema`, `strict`), enforced token by token; a schema keyword the grammar engine cannot enforce is rejected by the gateway, naming it (`response_format.json_schema.schema`). Unknown keys rejected. |
//! | `modalities` | `["text"]` accepted; anything else rejected. |
//! | `audio`, `prediction`, `web_search_options`, `reasoning_effort` | Rejected: not implemented. |
//!
//! "Rejected" means rejected when present with a non-null value; null always means absent.
//! Every number must be finite.
//!
//! # Legacy completions (`POST /v1/completions`)
//!
//! | Field | Treatment |
//! | --- | --- |
//! | `model` | As for chat. |
//! | `prompt` | Honoured. A non-empty string, or a non-empty array of non-empty strings, of token ids, or of non-empty arrays of token ids; at most [`MAX_PROMPTS`] prompts; ids below [`Limits::vocab_size`] when known. |
//! | `max_tokens` | Honoured, ≥ 1; absent → [`LEGACY_DEFAULT_MAX_TOKENS`] (16), as OpenAI's legacy API. |
//! | `n` | Honoured, 1 to [`Limits::max_n`] (per prompt). |
//! | `best_of` | Accepted only equal to `n`: Kiln returns every sequence it generates. |
//! | `echo` | Honoured. |
//! | `logprobs` | Honoured, 0 to 5 (alternatives per position, besides the chosen token). |
//! | `suffix` | Rejected: no insertion. |
//! | `temperature`, `top_p`, `top_k`, `min_p`, `frequency_penalty`, `presence_penalty`, `repetition_penalty`, `seed`, `stop`, `logit_bias`, `stream`, `stream_options`, `user` | As for chat. |
//! | `response_format` | A Kiln extension (OpenAI's legacy API has none): as for chat. |

use std::collections::BTreeMap;

use serde_json::Value;

use crate::chat::{ChatCompletionRequest, ContentPart, MessageContent, MessageRole};
use crate::common::{Stop, StreamOptions};
use crate::completions::{CompletionRequest, Prompt};
use crate::error::{ValidationError, code};
use crate::limits::MAX_STOP;
use crate::response_format::{self, ResponseFormat};
use crate::tools::{self, ToolCallIn, Tools};
// Re-exported so that the limits this table names keep their `validate::` paths.
pub use crate::limits::{
    LEGACY_DEFAULT_MAX_TOKENS, Limits, MAX_LEGACY_LOGPROBS, MAX_PROMPTS, MAX_TOP_LOGPROBS,
};

/// A message's role after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    System,
    /// OpenAI's successor to `system`; most chat templates only know `system`.
    Developer,
    User,
    Assistant,
    /// A tool's result, answering an earlier call.
    Tool,
}

impl Role {
    /// The wire (and chat template) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// A piece of a validated message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    /// An image, not fetched or decoded yet.
    Image(ImagePart),
}

/// An image part: its URL (`http`, `https`, `data:image/…;base64` or `file` scheme — only the
/// scheme is checked here) and `detail` (`auto` when not given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePart {
    pub url: String,
    pub detail: crate::ImageDetail,
}

/// A validated chat message. String content becomes one [`Part::Text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedMessage {
    pub role: Role,
    /// Empty only for an assistant message that holds just tool calls.
    pub content: Vec<Part>,
    pub name: Option<String>,
    /// Assistant messages only: the calls it made.
    pub tool_calls: Vec<ToolCallIn>,
    /// Tool messages only: the call this result answers.
    pub tool_call_id: Option<String>,
}

/// Generation settings shared by both APIs, every value in range.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    /// `None`: until end of sequence or the context is full.
    pub max_tokens: Option<u32>,
    /// 0 to 2; 0 means greedy.
    pub temperature: f32,
    /// 0 to 1; 1 disables.
    pub top_p: f32,
    /// `None` disables (the request gave none, -1 or 0).
    pub top_k: Option<u32>,
    /// 0 to 1; 0 disables.
    pub min_p: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// > 0; 1 disables.
    pub repetition_penalty: f32,
    pub seed: Option<u64>,
    /// At most 4, none empty.
    pub stop: Vec<String>,
    /// Sorted by token id, one entry per id.
    pub logit_bias: Vec<(u32, f32)>,
    /// 1 to [`Limits::max_n`].
    pub n: u32,
    /// What the output must be (chat's `response_format`; an extension of the legacy API).
    pub response_format: ResponseFormat,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_tokens: None,
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            min_p: 0.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            seed: None,
            stop: Vec::new(),
            logit_bias: Vec::new(),
            n: 1,
            response_format: ResponseFormat::Text,
        }
    }
}

/// A chat request that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedChat {
    /// `None` when missing or empty: use the default model.
    pub model: Option<String>,
    pub messages: Vec<ValidatedMessage>,
    pub params: GenerationParams,
    pub stream: bool,
    /// Streamed requests only: send a final chunk with `usage`.
    pub include_usage: bool,
    /// `Some(k)` when `logprobs` is true: return each token's logprob and `k` alternatives.
    pub logprobs: Option<u8>,
    /// Images over all messages.
    pub image_count: usize,
    /// The functions the model may call, and whether it must.
    pub tools: Tools,
}

/// One legacy prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptInput {
    /// Text to tokenize (special-token strings are parsed, as for any raw prompt).
    Text(String),
    /// Token ids, used as given.
    Tokens(Vec<u32>),
}

/// A legacy completion request that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedCompletion {
    pub model: Option<String>,
    /// 1 to [`MAX_PROMPTS`], none empty; each gets `params.n` choices.
    pub prompts: Vec<PromptInput>,
    pub params: GenerationParams,
    pub stream: bool,
    pub include_usage: bool,
    pub echo: bool,
    /// `Some(k)`: return logprobs with `k` (0 to 5) alternatives per position.
    pub logprobs: Option<u8>,
}

impl ChatCompletionRequest {
    /// Checks every field (see the [module table](self)) and returns typed values.
    pub fn validate(self, limits: &Limits) -> Result<ValidatedChat, ValidationError> {
        reject_non_null("functions", self.functions.as_ref())?;
        allow_only_none("function_call", self.function_call.as_ref())?;
        let tools = tools::validate(self.tools, self.tool_choice, self.parallel_tool_calls)?;
        reject_non_null("audio", self.audio.as_ref())?;
        reject_non_null("prediction", self.prediction.as_ref())?;
        reject_non_null("web_search_options", self.web_search_options.as_ref())?;
        reject_non_null("reasoning_effort", self.reasoning_effort.as_ref())?;
        if let Some(modalities) = &self.modalities
            && modalities.iter().map(String::as_str).ne(["text"])
        {
            return Err(ValidationError::at(
                "modalities",
                code::UNSUPPORTED_PARAMETER,
                r#"`modalities` must be ["text"]: this server only produces text"#,
            ));
        }
        if self.store == Some(true) {
            return Err(ValidationError::at(
                "store",
                code::UNSUPPORTED_PARAMETER,
                "`store` is not supported by this server (completions are not stored); only `false` is accepted",
            ));
        }

        let (messages, image_count) = validate_messages(self.messages, limits)?;

        let max_completion_tokens =
            max_tokens("max_completion_tokens", self.max_completion_tokens)?;
        let max_tokens = max_tokens("max_tokens", self.max_tokens)?;
        let common = Common {
            n: self.n,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            stop: self.stop,
            logit_bias: self.logit_bias,
            stream: self.stream,
            stream_options: self.stream_options,
            response_format: self.response_format,
        };
        let (params, stream, include_usage) =
            common.validate(max_completion_tokens.or(max_tokens), limits)?;

        let top_logprobs = match self.top_logprobs {
            None => None,
            Some(k) => Some(int_in_range(
                "top_logprobs",
                k,
                0,
                i64::from(MAX_TOP_LOGPROBS),
            )?),
        };
        let logprobs = match (self.logprobs, top_logprobs) {
            (Some(true), k) => Some(narrow(k.unwrap_or(0))),
            (_, None) => None,
            (_, Some(_)) => {
                return Err(ValidationError::at(
                    "top_logprobs",
                    code::INVALID_VALUE,
                    "`top_logprobs` requires `logprobs` to be true",
                ));
            }
        };

        Ok(ValidatedChat {
            model: self.model.filter(|m| !m.is_empty()),
            messages,
            params,
            stream,
            include_usage,
            logprobs,
            image_count,
            tools,
        })
    }
}

impl CompletionRequest {
    /// Checks every field (see the [module table](self)) and returns typed values.
    pub fn validate(self, limits: &Limits) -> Result<ValidatedCompletion, ValidationError> {
        reject_non_null("suffix", self.suffix.as_ref())?;
        let prompts = validate_prompt(self.prompt, limits)?;
        let max_tokens = max_tokens("max_tokens", self.max_tokens)?;
        let best_of = self.best_of;
        let common = Common {
            n: self.n,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            stop: self.stop,
            logit_bias: self.logit_bias,
            stream: self.stream,
            stream_options: self.stream_options,
            response_format: self.response_format,
        };
        let (params, stream, include_usage) = common.validate(
            Some(max_tokens.unwrap_or(LEGACY_DEFAULT_MAX_TOKENS)),
            limits,
        )?;
        if let Some(best_of) = best_of
            && best_of != i64::from(params.n)
        {
            return Err(ValidationError::at(
                "best_of",
                code::INVALID_VALUE,
                format!(
                    "`best_of` must equal `n` ({}), got {best_of}: this server returns every sequence it generates",
                    params.n
                ),
            ));
        }
        let logprobs = match self.logprobs {
            None => None,
            Some(k) => Some(narrow(int_in_range(
                "logprobs",
                k,
                0,
                i64::from(MAX_LEGACY_LOGPROBS),
            )?)),
        };
        Ok(ValidatedCompletion {
            model: self.model.filter(|m| !m.is_empty()),
            prompts,
            params,
            stream,
            include_usage,
            echo: self.echo.unwrap_or(false),
            logprobs,
        })
    }
}

/// The sampling fields both APIs share, moved out of either request.
struct Common {
    n: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    min_p: Option<f64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    repetition_penalty: Option<f64>,
    seed: Option<i64>,
    stop: Option<Stop>,
    logit_bias: Option<BTreeMap<String, f64>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    response_format: Option<Value>,
}

impl Common {
    /// The generation parameters, `stream` and `include_usage`.
    fn validate(
        self,
        max_tokens: Option<u32>,
        limits: &Limits,
    ) -> Result<(GenerationParams, bool, bool), ValidationError> {
        let defaults = GenerationParams::default();
        let n = match self.n {
            None => 1,
            Some(n) => narrow(int_in_range("n", n, 1, i64::from(limits.max_n))?),
        };
        let temperature = float_in("temperature", self.temperature, 0.0, 2.0)?;
        let top_p = float_in("top_p", self.top_p, 0.0, 1.0)?;
        let min_p = float_in("min_p", self.min_p, 0.0, 1.0)?;
        let presence_penalty = float_in("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        let frequency_penalty = float_in("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        let repetition_penalty = match self.repetition_penalty {
            None => None,
            Some(v) if v.is_finite() && v > 0.0 => Some(v as f32),
            Some(v) => {
                return Err(ValidationError::at(
                    "repetition_penalty",
                    code::INVALID_VALUE,
                    format!("`repetition_penalty` must be greater than 0, got {v}"),
                ));
            }
        };
        let top_k = match self.top_k {
            None => None,
            Some(k) => match int_in_range("top_k", k, -1, i64::from(u32::MAX))? {
                -1 | 0 => None,
                k => Some(narrow(k)),
            },
        };
        let stop = match self.stop {
            None => Vec::new(),
            Some(stop) => validate_stop(stop)?,
        };
        let logit_bias = match self.logit_bias {
            None => Vec::new(),
            Some(bias) => validate_logit_bias(bias, limits)?,
        };
        let stream = self.stream.unwrap_or(false);
        let include_usage = match self.stream_options {
            None => false,
            Some(_) if !stream => {
                return Err(ValidationError::at(
                    "stream_options",
                    code::INVALID_VALUE,
                    "`stream_options` is only allowed when `stream` is true",
                ));
            }
            Some(options) => options.include_usage.unwrap_or(false),
        };
        let params = GenerationParams {
            max_tokens,
            temperature: temperature.unwrap_or(defaults.temperature),
            top_p: top_p.unwrap_or(defaults.top_p),
            top_k,
            min_p: min_p.unwrap_or(defaults.min_p),
            presence_penalty: presence_penalty.unwrap_or(defaults.presence_penalty),
            frequency_penalty: frequency_penalty.unwrap_or(defaults.frequency_penalty),
            repetition_penalty: repetition_penalty.unwrap_or(defaults.repetition_penalty),
            // Seeds are opaque bits: a negative seed is as good a seed as any.
            seed: self.seed.map(|s| s as u64),
            stop,
            logit_bias,
            n,
            response_format: response_format::validate(self.response_format)?,
        };
        Ok((params, stream, include_usage))
    }
}

/// Converts a value already checked to fit.
fn narrow<T: TryFrom<i64> + Default>(v: i64) -> T {
    T::try_from(v).unwrap_or_default()
}

fn int_in_range(param: &str, v: i64, min: i64, max: i64) -> Result<i64, ValidationError> {
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(ValidationError::at(
            param,
            code::INVALID_VALUE,
            format!("`{param}` must be between {min} and {max}, got {v}"),
        ))
    }
}

fn float_in(
    param: &str,
    v: Option<f64>,
    min: f64,
    max: f64,
) -> Result<Option<f32>, ValidationError> {
    match v {
        None => Ok(None),
        Some(v) if v.is_finite() && (min..=max).contains(&v) => Ok(Some(v as f32)),
        Some(v) => Err(ValidationError::at(
            param,
            code::INVALID_VALUE,
            format!("`{param}` must be between {min} and {max}, got {v}"),
        )),
    }
}

fn max_tokens(param: &str, v: Option<i64>) -> Result<Option<u32>, ValidationError> {
    v.map(|v| int_in_range(param, v, 1, i64::from(u32::MAX)).map(narrow))
        .transpose()
}

fn unsupported(param: &str) -> ValidationError {
    ValidationError::at(
        param,
        code::UNSUPPORTED_PARAMETER,
        format!("`{param}` is not supported by this server"),
    )
}

fn reject_non_null(param: &str, v: Option<&Value>) -> Result<(), ValidationError> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(_) => Err(unsupported(param)),
    }
}

/// `function_call` may say `"none"`, which is what happens without functions.
fn allow_only_none(param: &str, v: Option<&Value>) -> Result<(), ValidationError> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s == "none" => Ok(()),
        Some(_) => Err(ValidationError::at(
            param,
            code::UNSUPPORTED_PARAMETER,
            format!("`{param}` is not supported by this server (only \"none\" is accepted)"),
        )),
    }
}

fn validate_stop(stop: Stop) -> Result<Vec<String>, ValidationError> {
    let stop = stop.into_vec();
    if stop.len() > MAX_STOP {
        return Err(ValidationError::at(
            "stop",
            code::INVALID_VALUE,
            format!(
                "`stop` may hold at most {MAX_STOP} sequences, got {}",
                stop.len()
            ),
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ValidationError::at(
            "stop",
            code::INVALID_VALUE,
            "`stop` sequences must not be empty",
        ));
    }
    Ok(stop)
}

/// Whether `key` is a decimal token id (ASCII digits only; `str::parse` would also take `+7`)
/// within the vocabulary.
fn token_id_key(key: &str, limits: &Limits) -> Option<u32> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: u32 = key.parse().ok()?;
    in_vocab(id, limits).then_some(id)
}

fn in_vocab(id: u32, limits: &Limits) -> bool {
    limits.vocab_size.is_none_or(|size| id < size)
}

fn vocab_phrase(limits: &Limits) -> String {
    match limits.vocab_size {
        Some(size) => format!("a token id below the vocabulary size {size}"),
        None => "a token id (an integer from 0 to 4294967295)".to_owned(),
    }
}

fn validate_logit_bias(
    bias: BTreeMap<String, f64>,
    limits: &Limits,
) -> Result<Vec<(u32, f32)>, ValidationError> {
    let mut by_id = BTreeMap::new();
    for (key, value) in bias {
        let Some(id) = token_id_key(&key, limits) else {
            return Err(ValidationError::at(
                "logit_bias",
                code::INVALID_VALUE,
                format!(
                    "`logit_bias` keys must be decimal token ids, each {}; got {key:?}",
                    vocab_phrase(limits)
                ),
            ));
        };
        if !(value.is_finite() && (-100.0..=100.0).contains(&value)) {
            return Err(ValidationError::at(
                "logit_bias",
                code::INVALID_VALUE,
                format!(
                    "`logit_bias` values must be between -100 and 100, got {value} for {key:?}"
                ),
            ));
        }
        // Keys are strings, so "7" and "007" can both name token 7; the later one wins, as a
        // repeated key in a JSON object would.
        by_id.insert(id, value as f32);
    }
    Ok(by_id.into_iter().collect())
}

/// Whether `url` has a scheme Kiln accepts for images. Only the scheme is checked here;
/// fetching or decoding is the caller's business.
pub fn is_accepted_image_url(url: &str) -> bool {
    let has_prefix = |prefix: &str| {
        url.len() >= prefix.len()
            && url.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    // `file://` is refused later unless the server allows a local media folder.
    if has_prefix("http://") || has_prefix("https://") || has_prefix("file://") {
        return true;
    }
    if !has_prefix("data:image/") {
        return false;
    }
    // `data:image/<type>[;params];base64,<data>`: the header ends at the first comma.
    url.split_once(',').is_some_and(|(header, _)| {
        header.len() >= 7 && header.as_bytes()[header.len() - 7..].eq_ignore_ascii_case(b";base64")
    })
}

fn validate_messages(
    messages: Vec<crate::chat::ChatMessage>,
    limits: &Limits,
) -> Result<(Vec<ValidatedMessage>, usize), ValidationError> {
    if messages.is_empty() {
        return Err(ValidationError::at(
            "messages",
            code::INVALID_VALUE,
            "`messages` must hold at least one message",
        ));
    }
    let mut images = 0usize;
    let mut out = Vec::with_capacity(messages.len());
    // Every call id so far: a tool message must answer one of them.
    let mut call_ids = std::collections::HashSet::new();
    for (i, message) in messages.into_iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        let role = match message.role {
            MessageRole::System => Role::System,
            MessageRole::Developer => Role::Developer,
            MessageRole::User => Role::User,
            MessageRole::Assistant => Role::Assistant,
            MessageRole::Tool => Role::Tool,
            MessageRole::Function => {
                return Err(ValidationError::at(
                    at("role"),
                    code::UNSUPPORTED_PARAMETER,
                    "messages with role `function` (deprecated by OpenAI) are not supported by \
                     this server; send tool results as role `tool`",
                ));
            }
        };
        for (field, value) in [
            ("refusal", &message.refusal),
            ("function_call", &message.function_call),
            ("audio", &message.audio),
        ] {
            reject_non_null(&at(field), value.as_ref())?;
        }
        let tool_calls = match (&message.tool_calls, role) {
            (None | Some(Value::Null), _) => Vec::new(),
            (Some(calls), Role::Assistant) => tools::calls_in(calls, &at("tool_calls"))?,
            (Some(_), _) => {
                return Err(ValidationError::at(
                    at("tool_calls"),
                    code::INVALID_VALUE,
                    "`tool_calls` is only allowed in assistant messages",
                ));
            }
        };
        call_ids.extend(tool_calls.iter().map(|c| c.id.clone()));
        let tool_call_id = match (&message.tool_call_id, role) {
            (None | Some(Value::Null), Role::Tool) => {
                return Err(ValidationError::at(
                    at("tool_call_id"),
                    code::MISSING_REQUIRED_PARAMETER,
                    format!("`{}` is required in tool messages", at("tool_call_id")),
                ));
            }
            (None | Some(Value::Null), _) => None,
            (Some(Value::String(id)), Role::Tool) => {
                if !call_ids.contains(id) {
                    return Err(ValidationError::at(
                        at("tool_call_id"),
                        code::INVALID_VALUE,
                        format!(
                            "`{}` is {id:?}, which no earlier assistant message's `tool_calls` holds",
                            at("tool_call_id")
                        ),
                    ));
                }
                Some(id.clone())
            }
            (Some(_), Role::Tool) => {
                return Err(ValidationError::at(
                    at("tool_call_id"),
                    code::INVALID_TYPE,
                    format!("`{}` must be a string", at("tool_call_id")),
                ));
            }
            (Some(_), _) => {
                return Err(ValidationError::at(
                    at("tool_call_id"),
                    code::INVALID_VALUE,
                    "`tool_call_id` is only allowed in tool messages",
                ));
            }
        };
        let content = match message.content {
            None if !tool_calls.is_empty() => Vec::new(),
            None => {
                return Err(ValidationError::at(
                    at("content"),
                    code::MISSING_REQUIRED_PARAMETER,
                    format!("`{}` is required", at("content")),
                ));
            }
            Some(MessageContent::Text(text)) => vec![Part::Text(text)],
            Some(MessageContent::Parts(parts)) if parts.is_empty() => {
                return Err(ValidationError::at(
                    at("content"),
                    code::INVALID_VALUE,
                    format!("`{}` must not be an empty array", at("content")),
                ));
            }
            Some(MessageContent::Parts(parts)) => {
                let mut content = Vec::with_capacity(parts.len());
                for (j, part) in parts.into_iter().enumerate() {
                    match part {
                        ContentPart::Text { text } => content.push(Part::Text(text)),
                        ContentPart::ImageUrl { image_url } => {
                            if role != Role::User {
                                return Err(ValidationError::at(
                                    format!("messages[{i}].content[{j}].type"),
                                    code::INVALID_VALUE,
                                    "image content parts are only allowed in user messages",
                                ));
                            }
                            if limits.max_images == 0 {
                                return Err(ValidationError::at(
                                    format!("messages[{i}].content[{j}].type"),
                                    code::UNSUPPORTED_PARAMETER,
                                    "image content is not supported by this server",
                                ));
                            }
                            if !is_accepted_image_url(&image_url.url) {
                                return Err(ValidationError::at(
                                    format!("messages[{i}].content[{j}].image_url.url"),
                                    code::INVALID_VALUE,
                                    "image URLs must start with `https://`, `http://`, `data:image/<type>;base64,` or `file://`",
                                ));
                            }
                            images += 1;
                            content.push(Part::Image(ImagePart {
                                url: image_url.url,
                                detail: image_url.detail.unwrap_or(crate::ImageDetail::Auto),
                            }));
                        }
                    }
                }
                content
            }
        };
        out.push(ValidatedMessage {
            role,
            content,
            name: message.name,
            tool_calls,
            tool_call_id,
        });
    }
    if images > limits.max_images {
        return Err(ValidationError::at(
            "messages",
            code::INVALID_VALUE,
            format!(
                "at most {} images are allowed per request, got {images}",
                limits.max_images
            ),
        ));
    }
    Ok((out, images))
}

fn validate_prompt(prompt: Prompt, limits: &Limits) -> Result<Vec<PromptInput>, ValidationError> {
    let empty = |param: String| {
        ValidationError::at(
            param.clone(),
            code::INVALID_VALUE,
            format!("`{param}` must not be empty"),
        )
    };
    let too_many = |count: usize| {
        ValidationError::at(
            "prompt",
            code::INVALID_VALUE,
            format!("at most {MAX_PROMPTS} prompts are allowed per request, got {count}"),
        )
    };
    let check_ids = |ids: &[u32], param: &dyn Fn(usize) -> String| match ids
        .iter()
        .position(|&id| !in_vocab(id, limits))
    {
        None => Ok(()),
        Some(k) => Err(ValidationError::at(
            param(k),
            code::INVALID_VALUE,
            format!(
                "`{}` must be {}, got {}",
                param(k),
                vocab_phrase(limits),
                ids[k]
            ),
        )),
    };
    match prompt {
        Prompt::Text(text) if text.is_empty() => Err(empty("prompt".to_owned())),
        Prompt::Text(text) => Ok(vec![PromptInput::Text(text)]),
        Prompt::Texts(texts) => {
            if texts.is_empty() {
                return Err(empty("prompt".to_owned()));
            }
            if texts.len() > MAX_PROMPTS {
                return Err(too_many(texts.len()));
            }
            if let Some(i) = texts.iter().position(String::is_empty) {
                return Err(empty(format!("prompt[{i}]")));
            }
            Ok(texts.into_iter().map(PromptInput::Text).collect())
        }
        Prompt::Tokens(ids) => {
            if ids.is_empty() {
                return Err(empty("prompt".to_owned()));
            }
            check_ids(&ids, &|k| format!("prompt[{k}]"))?;
            Ok(vec![PromptInput::Tokens(ids)])
        }
        Prompt::TokenLists(lists) => {
            if lists.is_empty() {
                return Err(empty("prompt".to_owned()));
            }
            if lists.len() > MAX_PROMPTS {
                return Err(too_many(lists.len()));
            }
            for (i, ids) in lists.iter().enumerate() {
                if ids.is_empty() {
                    return Err(empty(format!("prompt[{i}]")));
                }
                check_ids(ids, &|k| format!("prompt[{i}][{k}]"))?;
            }
            Ok(lists.into_iter().map(PromptInput::Tokens).collect())
        }
    }
}
