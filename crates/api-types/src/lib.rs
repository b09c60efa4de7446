//! Kiln's OpenAI API surface without any HTTP: the wire types (serde), parsing of request bodies
//! with errors that name the field, validation of a request once into typed values, and the
//! OpenAPI 3.1 document that describes the server.
//!
//! A request goes [`parse_chat_request`] (bytes → [`ChatCompletionRequest`]) then
//! [`ChatCompletionRequest::validate`] (→ [`ValidatedChat`]); the legacy API goes
//! [`parse_completion_request`] then [`CompletionRequest::validate`]. Either step fails with a
//! [`ValidationError`], which the gateway serves as a 400 [`ErrorEnvelope`]. What each OpenAI
//! field does here is tabled in [`validate`].

mod chat;
mod common;
mod completions;
mod error;
mod limits;
mod models;
pub mod openapi;
mod parse;
mod response_format;
mod schema;
mod tools;
pub mod validate;

pub use chat::{
    ChatCompletion, ChatCompletionChoice, ChatCompletionChunk, ChatCompletionChunkChoice,
    ChatCompletionDelta, ChatCompletionMessage, ChatCompletionRequest, ChatLogprobs, ChatMessage,
    ContentPart, ImageDetail, ImageUrl, MessageContent, MessageRole, ServiceTier, TokenLogprob,
    TopLogprob, Verbosity,
};
pub use common::{
    AssistantRole, ChatCompletionChunkObject, ChatCompletionObject, FinishReason, FunctionType,
    LOGPROB_FLOOR, ListObject, ModelObject, Stop, StreamOptions, TextCompletionObject, Usage,
};
pub use completions::{
    Completion, CompletionChoice, CompletionLogprobs, CompletionRequest, Prompt, TopLogprobsMap,
};
pub use error::{ErrorBody, ErrorEnvelope, INVALID_REQUEST_ERROR, ValidationError, code};
pub use limits::{DEFAULT_MAX_IMAGES, DEFAULT_MAX_N, Limits, MAX_STOP};
pub use models::{Health, HealthStatus, Modality, Model, ModelHealth, ModelList};
pub use openapi::{openapi, openapi_for};
pub use parse::{parse_chat_request, parse_completion_request};
pub use response_format::{ResponseFormat, SCHEMA_PARAM};
pub use tools::{
    FunctionCall, FunctionCallDelta, MAX_TOOLS, Tool, ToolCall, ToolCallDelta, ToolCallIn,
    ToolChoice, Tools,
};
pub use validate::{
    GenerationParams, ImagePart, Part, PromptInput, Role, ValidatedChat, ValidatedCompletion,
    ValidatedMessage,
};
