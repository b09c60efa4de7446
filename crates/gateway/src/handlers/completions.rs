//! `/v1/completions` (legacy): every prompt becomes its own scheduler request, all submitted
//! before any is read so they batch; their events, merged in one channel, become one response
//! or SSE chunks whose choice `index` is `prompt * n + choice`.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use kiln_api_types::{
    CompletionChoice, CompletionLogprobs, FinishReason, PromptInput, TextCompletionObject,
    TopLogprobsMap, Usage,
};
use kiln_scheduler::{
    ChoiceOutput, Completion, CompletionFold, Event, GenerationStream, Logprobs, SchedulerError,
};
use tokio::sync::mpsc;

use super::{blocking, compile_format, fingerprint, finish, generation_request, usage};
use crate::Gateway;
use crate::body::{Body, json_response};
use crate::error::{ApiError, ErrorKind, from_scheduler};
use crate::ids::{random_hex, unix_now};
use crate::sse::sse_response;

/// The field that holds the prompts, for errors about them.
const PROMPT_PARAM: &str = "prompt";

fn push_logprobs(out: &mut CompletionLogprobs, text_before: usize, lp: &Logprobs) {
    out.tokens.push(lp.chosen.text.clone());
    out.token_logprobs.push(Some(lp.chosen.logprob));
    out.top_logprobs.push(Some(TopLogprobsMap(
        lp.top.iter().map(|t| (t.text.clone(), t.logprob)).collect(),
    )));
    out.text_offset.push(text_before as u32);
}

/// A folded choice as the legacy API writes it, after `echo` (the prompt's text, or "").
fn legacy_choice(index: usize, echo: &str, c: ChoiceOutput, logprobs: bool) -> CompletionChoice {
    let logprobs = logprobs.then(|| {
        let mut out = CompletionLogprobs::default();
        // One logprob per token, as the request asked for them.
        for (lp, at) in c.logprobs.iter().zip(&c.text_offsets) {
            push_logprobs(&mut out, echo.len() + at, lp);
        }
        out
    });
    CompletionChoice {
        text: format!("{echo}{}", c.text),
        index: index as u32,
        logprobs,
        finish_reason: Some(c.finish_reason.map_or(FinishReason::Stop, finish)),
    }
}

fn add_usage(total: Usage, u: kiln_scheduler::Usage) -> Usage {
    let u = usage(u);
    Usage::new(
        total.prompt_tokens + u.prompt_tokens,
        total.completion_tokens + u.completion_tokens,
    )
}

pub(crate) async fn completions(
    gw: Arc<Gateway>,
    deployment: Option<String>,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    // Before any model is ready every request is a 503, whatever its body.
    gw.require_some_model()?;
    let req = kiln_api_types::parse_completion_request(&body)?;
    // The model first: its vocabulary bounds the token ids the request may hold.
    let target = gw.resolve(deployment.as_deref(), req.model.as_deref())?;
    let (model, backend) = (target.name, target.backend.clone());
    let mut limits = gw.config.limits;
    limits.vocab_size = Some(backend.engine.model_info().vocab_size as u32);
    let req = req.validate(&limits)?;
    if req.echo && req.logprobs.is_some() {
        return Err(ApiError::new(
            ErrorKind::UnsupportedParameter,
            "`echo` together with `logprobs` (prompt logprobs) is not supported.",
        )
        .param("echo"));
    }
    let grammar = compile_format(&backend.engine, &req.params.response_format).await?;
    let n = req.params.n as usize;
    let mut prompts = Vec::with_capacity(req.prompts.len());
    for p in &req.prompts {
        let (text, ids) = match p {
            PromptInput::Text(t) => {
                // Refused from its length alone when it surely cannot fit, before encoding.
                let limit = backend.engine.model_info().context_length;
                let at_least = backend.tokenizer.min_tokens(t);
                if at_least > limit {
                    let e = kiln_tokenizer::TokenizerError::PromptTooLong {
                        bytes: t.len(),
                        at_least,
                        limit,
                    };
                    return Err(
                        ApiError::new(ErrorKind::ContextLengthExceeded, e.to_string())
                            .param("prompt"),
                    );
                }
                // Off the async workers, as chat prompts are.
                let (tokenizer, text) = (backend.tokenizer.clone(), t.clone());
                let ids = blocking(move || tokenizer.encode(&text, true, true)).await??;
                (t.clone(), ids)
            }
            PromptInput::Tokens(ids) => (backend.tokenizer.decode(ids, false)?, ids.clone()),
        };
        prompts.push((text, ids));
    }
    // Every prompt is submitted before any is read, so they batch together; an error in any
    // refuses the request (dropping the others' streams cancels them).
    let mut streams: Vec<GenerationStream> = Vec::with_capacity(prompts.len());
    for (_, ids) in &prompts {
        let request = generation_request(ids.clone(), &req.params, req.logprobs, grammar.as_ref());
        streams.push(
            backend
                .engine
                .submit(request)
                .map_err(|e| from_scheduler(e, PROMPT_PARAM))?,
        );
    }
    let id = format!("cmpl-{}", random_hex(24));
    let created = unix_now();
    let echo_texts: Vec<String> = prompts.into_iter().map(|(t, _)| t).collect();
    let want_logprobs = req.logprobs.is_some();
    let prompt_count = streams.len();
    let mut erx = merge(streams);

    if !req.stream {
        // One fold per prompt over the merged events.
        let mut folds = vec![CompletionFold::new(n); prompt_count];
        let mut done: Vec<Option<Completion>> = vec![None; prompt_count];
        while done.iter().any(Option::is_none) {
            let Some((pi, event)) = erx.recv().await else {
                return Err(from_scheduler(SchedulerError::EngineStopped, PROMPT_PARAM));
            };
            match folds[pi].push(event) {
                None => {}
                Some(Ok(completion)) => done[pi] = Some(completion),
                Some(Err(e)) => return Err(from_scheduler(e, PROMPT_PARAM)),
            }
        }
        let mut total = Usage::new(0, 0);
        let mut choices = Vec::with_capacity(prompt_count * n);
        for (pi, completion) in done.into_iter().flatten().enumerate() {
            total = add_usage(total, completion.usage);
            let echo = if req.echo {
                echo_texts[pi].as_str()
            } else {
                ""
            };
            for (c, choice) in completion.choices.into_iter().enumerate() {
                choices.push(legacy_choice(pi * n + c, echo, choice, want_logprobs));
            }
        }
        return Ok(json_response(
            StatusCode::OK,
            &kiln_api_types::Completion {
                id,
                object: TextCompletionObject::Value,
                created,
                model,
                choices,
                usage: Some(total),
                system_fingerprint: fingerprint(),
            },
        ));
    }

    let first = erx.recv().await;
    if let Some((_, Event::Error(e))) = &first {
        return Err(from_scheduler(e.clone(), PROMPT_PARAM));
    }
    let (sse, response) = sse_response(gw.config.send_timeout);
    let include_usage = req.include_usage;
    let echo = req.echo;
    tokio::spawn(async move {
        let chunk = |index: usize,
                     text: String,
                     logprobs: Option<CompletionLogprobs>,
                     finish_reason: Option<FinishReason>| {
            kiln_api_types::Completion {
                id: id.clone(),
                object: TextCompletionObject::Value,
                created,
                model: model.clone(),
                choices: vec![CompletionChoice {
                    text,
                    index: index as u32,
                    logprobs,
                    finish_reason,
                }],
                usage: None,
                system_fingerprint: fingerprint(),
            }
        };
        let mut offsets = vec![0usize; prompt_count * n];
        if echo {
            for (pi, text) in echo_texts.iter().enumerate() {
                for c in 0..n {
                    offsets[pi * n + c] = text.len();
                    if !sse.send(&chunk(pi * n + c, text.clone(), None, None)).await {
                        return;
                    }
                }
            }
        }
        let mut total = Usage::new(0, 0);
        let mut done = 0;
        let mut next = first;
        while done < prompt_count {
            let event = match next.take() {
                Some(e) => Some(e),
                None => erx.recv().await,
            };
            let Some((pi, event)) = event else {
                sse.error(from_scheduler(SchedulerError::EngineStopped, PROMPT_PARAM))
                    .await;
                return;
            };
            let sent = match event {
                Event::Token {
                    choice,
                    text,
                    logprobs,
                    ..
                } => {
                    let index = pi * n + choice;
                    if text.is_empty() && !want_logprobs {
                        true
                    } else {
                        let lp = logprobs.map(|lp| {
                            let mut out = CompletionLogprobs::default();
                            push_logprobs(&mut out, offsets[index], &lp);
                            out
                        });
                        offsets[index] += text.len();
                        sse.send(&chunk(index, text, lp, None)).await
                    }
                }
                Event::Finished {
                    choice,
                    reason,
                    text,
                } => {
                    sse.send(&chunk(pi * n + choice, text, None, Some(finish(reason))))
                        .await
                }
                Event::Done { usage: u } => {
                    total = add_usage(total, u);
                    done += 1;
                    true
                }
                Event::Error(e) => {
                    sse.error(from_scheduler(e, PROMPT_PARAM)).await;
                    return;
                }
            };
            if !sent {
                return;
            }
        }
        if include_usage {
            let final_chunk = kiln_api_types::Completion {
                id: id.clone(),
                object: TextCompletionObject::Value,
                created,
                model: model.clone(),
                choices: Vec::new(),
                usage: Some(total),
                system_fingerprint: fingerprint(),
            };
            sse.send(&final_chunk).await;
        }
        sse.done().await;
    });
    Ok(response)
}

/// The events of every prompt's stream, tagged with the prompt's index, in one channel. Each
/// stream is forwarded until its last event; dropping the receiver (the client went away)
/// drops the streams, cancelling their requests.
fn merge(streams: Vec<GenerationStream>) -> mpsc::UnboundedReceiver<(usize, Event)> {
    let (etx, erx) = mpsc::unbounded_channel::<(usize, Event)>();
    for (pi, mut s) in streams.into_iter().enumerate() {
        let etx = etx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = s.next() => match event {
                        Some(e) => {
                            let end = matches!(e, Event::Done { .. } | Event::Error(_));
                            if etx.send((pi, e)).is_err() || end {
                                return;
                            }
                        }
                        None => return,
                    },
                    // The reader is gone (client disconnected): stop, cancelling the request.
                    () = etx.closed() => return,
                }
            }
        });
    }
    erx
}
