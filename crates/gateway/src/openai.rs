//! `/v1/chat/completions` and `/v1/completions`: validated requests become scheduler
//! requests; events become OpenAI responses or SSE chunks.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use kiln_api_types::{
    AssistantRole, ChatCompletion, ChatCompletionChoice, ChatCompletionChunk,
    ChatCompletionChunkChoice, ChatCompletionChunkObject, ChatCompletionDelta,
    ChatCompletionMessage, ChatCompletionObject, ChatLogprobs, CompletionChoice,
    CompletionLogprobs, FinishReason, GenerationParams, Part, PromptInput, Role,
    TextCompletionObject, TopLogprob, TopLogprobsMap, Usage,
};
use kiln_scheduler::{
    Event, GenerationRequest, GenerationStream, Logprobs, SamplingParams, SchedulerError,
};
use kiln_tokenizer::{ChatMessage, ChatTemplateOptions, Content};
use tokio::sync::mpsc;

use crate::error::{ApiError, from_scheduler};
use crate::{Body, Gateway, json_response, random_hex, sse_response, unix_now};

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

/// Sends SSE `data:` lines; `false` once the client is gone.
struct Sse {
    tx: mpsc::Sender<Bytes>,
}

impl Sse {
    async fn send(&self, value: &impl serde::Serialize) -> bool {
        let Ok(json) = serde_json::to_string(value) else {
            return false;
        };
        self.tx
            .send(Bytes::from(format!("data: {json}\n\n")))
            .await
            .is_ok()
    }

    async fn done(&self) {
        let _ = self.tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
    }

    /// A failure after the stream started: an error object as the last event (as vLLM does).
    async fn error(&self, e: ApiError) {
        let _ = self.send(&e.envelope()).await;
    }
}

pub(crate) async fn chat(gw: Arc<Gateway>, body: Bytes) -> Result<Response<Body>, ApiError> {
    let backend = gw.backend()?.clone();
    let mut limits = gw.config.limits;
    limits.vocab_size = Some(backend.engine.model_info().vocab_size as u32);
    let req = kiln_api_types::parse_chat_request(&body)?.validate(&limits)?;
    let model = gw.resolve_model(req.model.as_deref())?;
    if req.image_count > 0 && !gw.config.accepts_images {
        return Err(
            ApiError::invalid(format!("The model `{model}` does not accept image input."))
                .param("messages")
                .code("image_input_not_supported"),
        );
    }
    let messages: Vec<ChatMessage> = req
        .messages
        .iter()
        .map(|m| {
            let text: Vec<&str> = m
                .content
                .iter()
                .filter_map(|p| match p {
                    Part::Text(t) => Some(t.as_str()),
                    Part::Image(_) => None,
                })
                .collect();
            // Templates written for system prompts rarely know `developer`.
            let role = match m.role {
                Role::Developer => "system",
                other => other.as_str(),
            };
            let mut msg = ChatMessage {
                role: role.to_string(),
                content: Some(Content::Text(text.join("\n"))),
                extra: serde_json::Map::new(),
            };
            if let Some(name) = &m.name {
                msg.extra
                    .insert("name".into(), serde_json::Value::String(name.clone()));
            }
            msg
        })
        .collect();
    let prompt = backend.tokenizer.apply_chat_template(
        &messages,
        &ChatTemplateOptions {
            add_generation_prompt: true,
            ..ChatTemplateOptions::default()
        },
    )?;
    let n = req.params.n as usize;
    let request = generation_request(prompt.ids, &req.params, req.logprobs);
    let mut stream = backend
        .engine
        .submit(request)
        .map_err(|e| from_scheduler(e, "messages"))?;
    let id = format!("chatcmpl-{}", random_hex(24));
    let created = unix_now();
    if !req.stream {
        let mut texts = vec![String::new(); n];
        let mut logprobs: Vec<Vec<kiln_api_types::TokenLogprob>> = vec![Vec::new(); n];
        let mut reasons = vec![FinishReason::Stop; n];
        let usage = loop {
            match stream.next().await {
                Some(Event::Token {
                    choice,
                    text,
                    logprobs: lp,
                    ..
                }) => {
                    if let Some(t) = texts.get_mut(choice) {
                        t.push_str(&text);
                    }
                    if let (Some(lp), Some(v)) = (lp, logprobs.get_mut(choice)) {
                        v.push(token_logprob(&lp));
                    }
                }
                Some(Event::Finished {
                    choice,
                    reason,
                    text,
                }) => {
                    if let Some(t) = texts.get_mut(choice) {
                        t.push_str(&text);
                        reasons[choice] = finish(reason);
                    }
                }
                Some(Event::Done { usage }) => break usage,
                Some(Event::Error(e)) => return Err(from_scheduler(e, "messages")),
                None => return Err(from_scheduler(SchedulerError::EngineStopped, "messages")),
            }
        };
        let choices = texts
            .into_iter()
            .zip(logprobs)
            .zip(reasons)
            .enumerate()
            .map(|(i, ((text, lps), reason))| ChatCompletionChoice {
                index: i as u32,
                message: ChatCompletionMessage::new(text),
                logprobs: req.logprobs.map(|_| ChatLogprobs {
                    content: Some(lps),
                    refusal: None,
                }),
                finish_reason: reason,
            })
            .collect();
        return Ok(json_response(
            StatusCode::OK,
            &ChatCompletion {
                id,
                object: ChatCompletionObject::Value,
                created,
                model,
                choices,
                usage: Usage::new(usage.prompt_tokens as u32, usage.completion_tokens as u32),
                system_fingerprint: fingerprint(),
            },
        ));
    }

    // Streaming: the first event is awaited here, so an error that comes before any token
    // is still a proper HTTP error rather than an event in a 200 stream.
    let first = stream.next().await;
    if let Some(Event::Error(e)) = &first {
        return Err(from_scheduler(e.clone(), "messages"));
    }
    let (tx, rx) = mpsc::channel(64);
    let want_logprobs = req.logprobs.is_some();
    let include_usage = req.include_usage;
    tokio::spawn(async move {
        let sse = Sse { tx };
        let chunk = |choices: Vec<ChatCompletionChunkChoice>,
                     usage: Option<kiln_api_types::Usage>| {
            ChatCompletionChunk {
                id: id.clone(),
                object: ChatCompletionChunkObject::Value,
                created,
                model: model.clone(),
                system_fingerprint: fingerprint(),
                choices,
                usage,
            }
        };
        let one = |index: usize,
                   delta: ChatCompletionDelta,
                   logprobs: Option<ChatLogprobs>,
                   finish_reason: Option<FinishReason>| {
            vec![ChatCompletionChunkChoice {
                index: index as u32,
                delta,
                logprobs,
                finish_reason,
            }]
        };
        for i in 0..n {
            let delta = ChatCompletionDelta {
                role: Some(AssistantRole::Value),
                content: Some(String::new()),
            };
            if !sse.send(&chunk(one(i, delta, None, None), None)).await {
                return;
            }
        }
        let mut next = first;
        loop {
            let event = match next.take() {
                Some(e) => Some(e),
                None => stream.next().await,
            };
            let sent = match event {
                Some(Event::Token {
                    choice,
                    text,
                    logprobs,
                    ..
                }) => {
                    if text.is_empty() && !want_logprobs {
                        true
                    } else {
                        let lp = logprobs.map(|lp| ChatLogprobs {
                            content: Some(vec![token_logprob(&lp)]),
                            refusal: None,
                        });
                        let delta = ChatCompletionDelta {
                            role: None,
                            content: Some(text),
                        };
                        sse.send(&chunk(one(choice, delta, lp, None), None)).await
                    }
                }
                Some(Event::Finished {
                    choice,
                    reason,
                    text,
                }) => {
                    if !text.is_empty() {
                        let delta = ChatCompletionDelta {
                            role: None,
                            content: Some(text),
                        };
                        if !sse.send(&chunk(one(choice, delta, None, None), None)).await {
                            return;
                        }
                    }
                    let delta = ChatCompletionDelta::default();
                    sse.send(&chunk(one(choice, delta, None, Some(finish(reason))), None))
                        .await
                }
                Some(Event::Done { usage }) => {
                    if include_usage {
                        let usage =
                            Usage::new(usage.prompt_tokens as u32, usage.completion_tokens as u32);
                        sse.send(&chunk(Vec::new(), Some(usage))).await;
                    }
                    sse.done().await;
                    return;
                }
                Some(Event::Error(e)) => {
                    sse.error(from_scheduler(e, "messages")).await;
                    return;
                }
                None => {
                    sse.error(from_scheduler(SchedulerError::EngineStopped, "messages"))
                        .await;
                    return;
                }
            };
            if !sent {
                // The client went away: dropping `stream` cancels the request.
                return;
            }
        }
    });
    Ok(sse_response(rx))
}

/// One choice of a legacy completion being assembled.
#[derive(Default, Clone)]
struct LegacyChoice {
    text: String,
    logprobs: CompletionLogprobs,
    finish: Option<FinishReason>,
}

fn push_logprobs(out: &mut CompletionLogprobs, text_before: usize, lp: &Logprobs) {
    out.tokens.push(lp.chosen.text.clone());
    out.token_logprobs.push(Some(lp.chosen.logprob));
    out.top_logprobs.push(Some(TopLogprobsMap(
        lp.top.iter().map(|t| (t.text.clone(), t.logprob)).collect(),
    )));
    out.text_offset.push(text_before as u32);
}

pub(crate) async fn completions(gw: Arc<Gateway>, body: Bytes) -> Result<Response<Body>, ApiError> {
    let backend = gw.backend()?.clone();
    let mut limits = gw.config.limits;
    limits.vocab_size = Some(backend.engine.model_info().vocab_size as u32);
    let req = kiln_api_types::parse_completion_request(&body)?.validate(&limits)?;
    let model = gw.resolve_model(req.model.as_deref())?;
    if req.echo && req.logprobs.is_some() {
        return Err(ApiError::invalid(
            "`echo` together with `logprobs` (prompt logprobs) is not supported.",
        )
        .param("echo")
        .code("unsupported_parameter"));
    }
    let n = req.params.n as usize;
    let mut prompts = Vec::with_capacity(req.prompts.len());
    for p in &req.prompts {
        let (text, ids) = match p {
            PromptInput::Text(t) => (t.clone(), backend.tokenizer.encode(t, true, true)?),
            PromptInput::Tokens(ids) => (backend.tokenizer.decode(ids, false)?, ids.clone()),
        };
        prompts.push((text, ids));
    }
    // Every prompt is submitted before any is read, so they batch together; an error in any
    // refuses the request (dropping the others' streams cancels them).
    let mut streams: Vec<GenerationStream> = Vec::with_capacity(prompts.len());
    for (_, ids) in &prompts {
        let request = generation_request(ids.clone(), &req.params, req.logprobs);
        streams.push(
            backend
                .engine
                .submit(request)
                .map_err(|e| from_scheduler(e, "prompt"))?,
        );
    }
    let id = format!("cmpl-{}", random_hex(24));
    let created = unix_now();
    let echo_texts: Vec<String> = prompts.iter().map(|(t, _)| t.clone()).collect();
    let want_logprobs = req.logprobs.is_some();

    // Events of every prompt, tagged with the prompt's index, in one channel.
    let (etx, mut erx) = mpsc::unbounded_channel::<(usize, Event)>();
    let prompt_count = streams.len();
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
    drop(etx);

    if !req.stream {
        let mut choices = vec![LegacyChoice::default(); prompt_count * n];
        for (pi, text) in echo_texts.iter().enumerate() {
            if req.echo {
                for c in 0..n {
                    choices[pi * n + c].text.push_str(text);
                }
            }
        }
        let mut usage = Usage::new(0, 0);
        let mut done = 0;
        while done < prompt_count {
            let Some((pi, event)) = erx.recv().await else {
                return Err(from_scheduler(SchedulerError::EngineStopped, "prompt"));
            };
            match event {
                Event::Token {
                    choice,
                    text,
                    logprobs,
                    ..
                } => {
                    if let Some(c) = choices.get_mut(pi * n + choice) {
                        if let Some(lp) = logprobs {
                            push_logprobs(&mut c.logprobs, c.text.len(), &lp);
                        }
                        c.text.push_str(&text);
                    }
                }
                Event::Finished {
                    choice,
                    reason,
                    text,
                } => {
                    if let Some(c) = choices.get_mut(pi * n + choice) {
                        c.text.push_str(&text);
                        c.finish = Some(finish(reason));
                    }
                }
                Event::Done { usage: u } => {
                    usage = Usage::new(
                        usage.prompt_tokens + u.prompt_tokens as u32,
                        usage.completion_tokens + u.completion_tokens as u32,
                    );
                    done += 1;
                }
                Event::Error(e) => return Err(from_scheduler(e, "prompt")),
            }
        }
        let choices = choices
            .into_iter()
            .enumerate()
            .map(|(i, c)| CompletionChoice {
                text: c.text,
                index: i as u32,
                logprobs: want_logprobs.then_some(c.logprobs),
                finish_reason: c.finish.or(Some(FinishReason::Stop)),
            })
            .collect();
        return Ok(json_response(
            StatusCode::OK,
            &kiln_api_types::Completion {
                id,
                object: TextCompletionObject::Value,
                created,
                model,
                choices,
                usage: Some(usage),
                system_fingerprint: fingerprint(),
            },
        ));
    }

    let first = erx.recv().await;
    if let Some((_, Event::Error(e))) = &first {
        return Err(from_scheduler(e.clone(), "prompt"));
    }
    let (tx, rx) = mpsc::channel(64);
    let include_usage = req.include_usage;
    let echo = req.echo;
    tokio::spawn(async move {
        let sse = Sse { tx };
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
        let mut usage = Usage::new(0, 0);
        let mut done = 0;
        let mut next = first;
        while done < prompt_count {
            let event = match next.take() {
                Some(e) => Some(e),
                None => erx.recv().await,
            };
            let Some((pi, event)) = event else {
                sse.error(from_scheduler(SchedulerError::EngineStopped, "prompt"))
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
                    usage = Usage::new(
                        usage.prompt_tokens + u.prompt_tokens as u32,
                        usage.completion_tokens + u.completion_tokens as u32,
                    );
                    done += 1;
                    true
                }
                Event::Error(e) => {
                    sse.error(from_scheduler(e, "prompt")).await;
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
                usage: Some(usage),
                system_fingerprint: fingerprint(),
            };
            sse.send(&final_chunk).await;
        }
        sse.done().await;
    });
    Ok(sse_response(rx))
}
