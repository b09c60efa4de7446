//! The route handlers, and what the generation routes share: turning validated parameters
//! into a scheduler request and the scheduler's outputs into wire values.

pub(crate) mod chat;
pub(crate) mod completions;
pub(crate) mod info;

use kiln_api_types::{
    FinishReason, GenerationParams, ResponseFormat, SCHEMA_PARAM, TopLogprob, Usage,
};
use kiln_scheduler::{
    EngineHandle, GenerationRequest, Grammar, Logprobs, OutputFormat, SamplingParams,
};

use crate::error::{ApiError, from_scheduler};

/// `system_fingerprint`: the build that answered.
fn fingerprint() -> Option<String> {
    Some(format!(
        "fp_kiln_{}",
        env!("CARGO_PKG_VERSION").replace('.', "_")
    ))
}

fn finish(reason: kiln_scheduler::FinishReason) -> FinishReason {
    match reason {
        kiln_scheduler::FinishReason::Stop => FinishReason::Stop,
        kiln_scheduler::FinishReason::Length => FinishReason::Length,
    }
}

/// A choice's finish reason on the wire: a choice that stopped after tool calls says so.
fn finish_with_calls(reason: Option<kiln_scheduler::FinishReason>, calls: usize) -> FinishReason {
    match reason.map_or(FinishReason::Stop, finish) {
        FinishReason::Stop if calls > 0 => FinishReason::ToolCalls,
        other => other,
    }
}

fn usage(u: kiln_scheduler::Usage) -> Usage {
    Usage::new(u.prompt_tokens as u32, u.completion_tokens as u32)
}

/// `f` on the blocking pool (tokenizing a long prompt, compiling a grammar): the async
/// workers keep serving meanwhile. A panic in `f` is an internal error, not a lost worker.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::internal())
}

/// The request's output format compiled for the model's vocabulary, on the blocking pool (a
/// large schema, or the model's first, takes a while). A schema the grammar engine cannot
/// enforce is a 400 naming the keyword.
pub(crate) async fn compile_format(
    engine: &EngineHandle,
    format: &ResponseFormat,
) -> Result<Option<Grammar>, ApiError> {
    let (format, param) = match format {
        ResponseFormat::Text => return Ok(None),
        ResponseFormat::JsonObject => (OutputFormat::JsonObject, "response_format"),
        ResponseFormat::JsonSchema { schema, .. } => {
            (OutputFormat::JsonSchema(schema.clone()), SCHEMA_PARAM)
        }
    };
    let engine = engine.clone();
    blocking(move || engine.compile(&format, param))
        .await?
        .map(Some)
        .map_err(|e| from_scheduler(e, param))
}

fn generation_request(
    prompt: Vec<u32>,
    p: &GenerationParams,
    logprobs: Option<u8>,
    grammar: Option<&Grammar>,
) -> GenerationRequest {
    GenerationRequest {
        prompt,
        sampling: SamplingParams {
            temperature: p.temperature,
            top_p: p.top_p,
            top_k: p.top_k.map(|k| k as usize),
            min_p: p.min_p,
            presence_penalty: p.presence_penalty,
            frequency_penalty: p.frequency_penalty,
            repetition_penalty: p.repetition_penalty,
            seed: p.seed,
            logit_bias: p.logit_bias.clone(),
        },
        max_tokens: p.max_tokens.map(|m| m as usize),
        stop: p.stop.clone(),
        stop_at_eos: true,
        n: p.n as usize,
        logprobs: logprobs.map(usize::from),
        skip_special_tokens: true,
        images: Vec::new(),
        grammar: grammar.cloned(),
    }
}

fn token_logprob(lp: &Logprobs) -> kiln_api_types::TokenLogprob {
    kiln_api_types::TokenLogprob {
        token: lp.chosen.text.clone(),
        logprob: lp.chosen.logprob,
        bytes: Some(lp.chosen.text.as_bytes().to_vec()),
        top_logprobs: lp
            .top
            .iter()
            .map(|t| TopLogprob {
                token: t.text.clone(),
                logprob: t.logprob,
                bytes: Some(t.text.as_bytes().to_vec()),
            })
            .collect(),
    }
}
