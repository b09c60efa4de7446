//! `/v1/chat/completions`: a validated chat becomes a prompt through the model's chat
//! template and one scheduler request; its events become one response or SSE chunks.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use kiln_api_types::{
    AssistantRole, ChatCompletion, ChatCompletionChoice, ChatCompletionChunk,
    ChatCompletionChunkChoice, ChatCompletionChunkObject, ChatCompletionDelta,
    ChatCompletionMessage, ChatCompletionObject, ChatLogprobs, FinishReason, Part, Role,
    ValidatedMessage,
};
use kiln_scheduler::{Completion, Event, ImageInput, SchedulerError};
use kiln_tokenizer::{ChatMessage, ChatTemplateOptions, Content, ContentPart};

use super::{blocking, fingerprint, finish_with_calls, generation_request, token_logprob, usage};
use crate::body::{Body, json_response};
use crate::error::{ApiError, ErrorKind, from_scheduler};
use crate::ids::{random_hex, unix_now};
use crate::sse::sse_response;
use crate::tools::{ChoiceCalls, ToolPlan};
use crate::{Gateway, images};

/// The field that holds a chat's prompt, for errors about it.
const PROMPT_PARAM: &str = "messages";

/// How a vision model's template takes message content. Hugging Face vision templates iterate
/// over a message's parts (SmolVLM's renders a plain string as nothing), and some also take
/// plain strings — and need them where they concatenate (Pixtral's system and assistant
/// messages). So: parts for every message, unless the template tests `is (not) string`, in
/// which case only messages with images get parts.
fn parts_for_text(template: Option<&str>) -> bool {
    !template.is_some_and(|t| t.contains("is string") || t.contains("is not string"))
}

/// A validated message as the chat template takes it: its parts as a list (`{"type":
/// "image"}` for an image, whose pixels the processor handles) with `as_parts`, else its text
/// parts joined.
fn template_message(m: &ValidatedMessage, as_parts: bool) -> ChatMessage {
    let content = if as_parts {
        Content::Parts(
            m.content
                .iter()
                .map(|p| match p {
                    Part::Text(text) => ContentPart::Text { text: text.clone() },
                    Part::Image(_) => ContentPart::Image,
                })
                .collect(),
        )
    } else {
        let text: Vec<&str> = m
            .content
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                Part::Image(_) => None,
            })
            .collect();
        Content::Text(text.join("\n"))
    };
    // Templates written for system prompts rarely know `developer`. (Tool calls and results
    // are added by `ToolPlan::messages`.)
    let role = match m.role {
        Role::Developer => "system",
        other => other.as_str(),
    };
    let mut msg = ChatMessage {
        role: role.to_string(),
        content: Some(content),
        extra: serde_json::Map::new(),
    };
    if let Some(name) = &m.name {
        msg.extra
            .insert("name".into(), serde_json::Value::String(name.clone()));
    }
    msg
}

pub(crate) async fn chat(
    gw: Arc<Gateway>,
    deployment: Option<String>,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    // Before any model is ready every request is a 503, whatever its body.
    gw.require_some_model()?;
    let req = kiln_api_types::parse_chat_request(&body)?;
    // The model first: its vocabulary bounds the token ids the request may hold.
    let target = gw.resolve(deployment.as_deref(), req.model.as_deref())?;
    let (model, backend) = (target.name, target.backend.clone());
    let mut limits = gw.config.limits;
    limits.vocab_size = Some(backend.engine.model_info().vocab_size as u32);
    let req = req.validate(&limits)?;
    let plan = ToolPlan::new(backend.tool_syntax, backend.tokenizer.chat_template());
    let grammar = plan
        .compile(
            &backend.engine,
            &backend.tokenizer,
            &req.tools,
            &req.params.response_format,
        )
        .await?;
    let vision = match &backend.vision {
        Some(v) if gw.takes_images(&backend) => Some(v),
        _ if req.image_count > 0 => {
            return Err(ApiError::new(
                ErrorKind::ImageInputNotSupported,
                format!("The model `{model}` does not accept image input."),
            )
            .param("messages"));
        }
        _ => None,
    };
    let text_as_parts = vision.is_some() && parts_for_text(backend.tokenizer.chat_template());
    let messages: Vec<ChatMessage> = req
        .messages
        .iter()
        .map(|m| {
            let has_image = m.content.iter().any(|p| matches!(p, Part::Image(_)));
            template_message(m, vision.is_some() && (has_image || text_as_parts))
        })
        .collect();
    let messages = plan.messages(messages, &req.messages, &req.tools);
    let options = ChatTemplateOptions {
        add_generation_prompt: true,
        tools: plan.template_tools(&req.tools),
        // A prompt that surely cannot fit is refused before it is encoded (a multi-megabyte
        // message would otherwise cost seconds of CPU and hundreds of MiB first).
        max_prompt_tokens: Some(backend.engine.model_info().context_length),
        ..ChatTemplateOptions::default()
    };
    let (prompt, images) = match vision {
        Some(v) if req.image_count > 0 => {
            let processed = images::prepare(&req.messages, &v.processor, &gw.config.media).await?;
            let expansions: Vec<String> = processed.iter().map(|p| p.prompt.clone()).collect();
            let prompt = backend.tokenizer.apply_chat_template_with_images(
                &messages,
                &options,
                v.processor.placeholder(),
                &expansions,
            )?;
            let spans =
                images::spans(&prompt.ids, v.image_token_id, &processed).ok_or_else(|| {
                    ApiError::new(
                        ErrorKind::InvalidValue,
                        "the prompt's image tokens do not match its images",
                    )
                    .param(PROMPT_PARAM)
                })?;
            let inputs = processed
                .into_iter()
                .zip(spans)
                .map(|(p, spans)| ImageInput {
                    tiles: p.tiles,
                    hash: p.hash,
                    spans,
                })
                .collect();
            (prompt, inputs)
        }
        _ => {
            // Off the async workers: a long prompt takes a while to encode, and every stream
            // the server is writing waits for the worker it blocks.
            let tokenizer = backend.tokenizer.clone();
            let prompt =
                blocking(move || tokenizer.apply_chat_template(&messages, &options)).await??;
            (prompt, Vec::new())
        }
    };
    let n = req.params.n as usize;
    let mut request = generation_request(prompt.ids, &req.params, req.logprobs, grammar.as_ref());
    request.images = images;
    let tools_on = req.tools.enabled();
    // A syntax whose marker is a control token needs it in the text to be parsed.
    request.skip_special_tokens = !(tools_on && plan.keeps_special_tokens(&backend.tokenizer));
    let tools = req.tools;
    let calls_for = move || tools_on.then(|| ChoiceCalls::new(&plan, &tools));
    let mut stream = backend
        .engine
        .submit(request)
        .map_err(|e| from_scheduler(e, PROMPT_PARAM))?;
    let id = format!("chatcmpl-{}", random_hex(24));
    let created = unix_now();
    if !req.stream {
        let done = Completion::receive(&mut stream, n)
            .await
            .map_err(|e| from_scheduler(e, PROMPT_PARAM))?;
        let choices = done
            .choices
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let mut message = ChatCompletionMessage::new(c.text);
                let mut calls = 0;
                if let Some(parser) = calls_for() {
                    let text = message.content.take().unwrap_or_default();
                    let (content, tool_calls) = parser.message(&text);
                    calls = tool_calls.len();
                    message.content = content;
                    message.tool_calls = (calls > 0).then_some(tool_calls);
                }
                ChatCompletionChoice {
                    index: i as u32,
                    logprobs: req.logprobs.map(|_| ChatLogprobs {
                        content: Some(c.logprobs.iter().map(token_logprob).collect()),
                        refusal: None,
                    }),
                    message,
                    finish_reason: finish_with_calls(c.finish_reason, calls),
                }
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
                usage: usage(done.usage),
                system_fingerprint: fingerprint(),
            },
        ));
    }

    // Streaming: the first event is awaited here, so an error that comes before any token
    // is still a proper HTTP error rather than an event in a 200 stream.
    let first = stream.next().await;
    if let Some(Event::Error(e)) = &first {
        return Err(from_scheduler(e.clone(), PROMPT_PARAM));
    }
    let (sse, response) = sse_response(gw.config.send_timeout);
    let want_logprobs = req.logprobs.is_some();
    let include_usage = req.include_usage;
    tokio::spawn(async move {
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
        let mut parsers: Vec<Option<ChoiceCalls>> = (0..n).map(|_| calls_for()).collect();
        for i in 0..n {
            let delta = ChatCompletionDelta {
                role: Some(AssistantRole::Value),
                content: Some(String::new()),
                tool_calls: None,
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
                    let mut lp = logprobs.map(|lp| ChatLogprobs {
                        content: Some(vec![token_logprob(&lp)]),
                        refusal: None,
                    });
                    let deltas = match parsers.get_mut(choice) {
                        Some(Some(parser)) => parser.push(&text),
                        _ if text.is_empty() => Vec::new(),
                        _ => vec![ChatCompletionDelta {
                            content: Some(text),
                            ..ChatCompletionDelta::default()
                        }],
                    };
                    let mut sent = true;
                    if deltas.is_empty() && want_logprobs {
                        // A token that shows nothing yet still reports its logprob.
                        let delta = ChatCompletionDelta {
                            content: Some(String::new()),
                            ..ChatCompletionDelta::default()
                        };
                        sent = sse
                            .send(&chunk(one(choice, delta, lp.take(), None), None))
                            .await;
                    }
                    for delta in deltas {
                        if !sent {
                            break;
                        }
                        sent = sse
                            .send(&chunk(one(choice, delta, lp.take(), None), None))
                            .await;
                    }
                    sent
                }
                Some(Event::Finished {
                    choice,
                    reason,
                    text,
                }) => {
                    let (deltas, calls) = match parsers.get_mut(choice) {
                        Some(Some(parser)) => {
                            let mut deltas = parser.push(&text);
                            deltas.extend(parser.finish());
                            (deltas, parser.calls())
                        }
                        _ if text.is_empty() => (Vec::new(), 0),
                        _ => (
                            vec![ChatCompletionDelta {
                                content: Some(text),
                                ..ChatCompletionDelta::default()
                            }],
                            0,
                        ),
                    };
                    for delta in deltas {
                        if !sse.send(&chunk(one(choice, delta, None, None), None)).await {
                            return;
                        }
                    }
                    let delta = ChatCompletionDelta::default();
                    let reason = finish_with_calls(Some(reason), calls);
                    sse.send(&chunk(one(choice, delta, None, Some(reason)), None))
                        .await
                }
                Some(Event::Done { usage: u }) => {
                    if include_usage {
                        sse.send(&chunk(Vec::new(), Some(usage(u)))).await;
                    }
                    sse.done().await;
                    return;
                }
                Some(Event::Error(e)) => {
                    sse.error(from_scheduler(e, PROMPT_PARAM)).await;
                    return;
                }
                None => {
                    sse.error(from_scheduler(SchedulerError::EngineStopped, PROMPT_PARAM))
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
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vision_templates_get_parts_unless_they_take_strings() {
        let smolvlm = "{% for line in message['content'] %}{% if line['type'] == 'image' %}";
        let pixtral =
            "{%- if message[\"content\"] is not string %}{%- for chunk in message[\"content\"] %}";
        assert!(parts_for_text(Some(smolvlm)));
        assert!(!parts_for_text(Some(pixtral)));
        assert!(!parts_for_text(Some("{% if m.content is string %}")));
        assert!(parts_for_text(None));
    }
}
