//! The route handlers, and what the generation routes share: turning validated parameters
//! into a scheduler request and the scheduler's outputs into wire values.

pub(crate) mod chat;
pub(crate) mod completions;
pub(crate) mod info;

use kiln_api_types::{FinishReason, GenerationParams, TopLogprob, Usage};
use kiln_scheduler::{GenerationRequest, Logprobs, SamplingParams};

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

fn usage(u: kiln_scheduler::Usage) -> Usage {
    Usage::new(u.prompt_tokens as u32, u.completion_tokens as u32)
}

fn generation_request(
    prompt: Vec<u32>,
    p: &GenerationParams,
    logprobs: Option<u8>,
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
