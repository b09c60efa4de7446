//! Response types serialize to exactly OpenAI's JSON shapes (nulls included), read back to the
//! same values, and keep logprobs finite.

use kiln_api_types::{
    AssistantRole, ChatCompletion, ChatCompletionChoice, ChatCompletionChunk,
    ChatCompletionChunkChoice, ChatCompletionChunkObject, ChatCompletionDelta,
    ChatCompletionMessage, ChatCompletionObject, ChatCompletionRequest, ChatLogprobs, ChatMessage,
    Completion, CompletionChoice, CompletionLogprobs, CompletionRequest, ErrorEnvelope,
    FinishReason, Health, HealthStatus, MessageRole, Model, ModelHealth, ModelList, Prompt,
    TextCompletionObject, TokenLogprob, TopLogprob, TopLogprobsMap, Usage, ValidationError, code,
    parse_chat_request,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// `value` serializes to `expected` and reads back to itself.
#[track_caller]
fn assert_wire<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    value: &T,
    expected: Value,
) {
    assert_eq!(serde_json::to_value(value).unwrap(), expected);
    let back: T = serde_json::from_value(expected).unwrap();
    assert_eq!(&back, value);
}

#[test]
fn chat_completion() {
    let completion = ChatCompletion {
        id: "chatcmpl-abc123".into(),
        object: ChatCompletionObject::Value,
        created: 1_741_569_952,
        model: "smollm2-135m-instruct".into(),
        choices: vec![ChatCompletionChoice {
            index: 0,
            message: ChatCompletionMessage::new("The capital of France is Paris."),
            logprobs: None,
            finish_reason: FinishReason::Stop,
        }],
        usage: Usage::new(19, 10),
        system_fingerprint: Some("kiln-0.1.0".into()),
    };
    assert_wire(
        &completion,
        json!({
            "id": "chatcmpl-abc123",
            "object": "chat.completion",
            "created": 1_741_569_952,
            "model": "smollm2-135m-instruct",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "The capital of France is Paris.",
                    "refusal": null
                },
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29},
            "system_fingerprint": "kiln-0.1.0"
        }),
    );
}

#[test]
fn chat_logprobs() {
    let logprobs = ChatLogprobs {
        content: Some(vec![TokenLogprob {
            token: "Hello".into(),
            logprob: -0.25,
            bytes: Some(b"Hello".to_vec()),
            top_logprobs: vec![
                TopLogprob {
                    token: "Hello".into(),
                    logprob: -0.25,
                    bytes: Some(b"Hello".to_vec()),
                },
                TopLogprob {
                    token: "Hi".into(),
                    logprob: -1.5,
                    bytes: Some(b"Hi".to_vec()),
                },
            ],
        }]),
        refusal: None,
    };
    assert_wire(
        &logprobs,
        json!({
            "content": [{
                "token": "Hello",
                "logprob": -0.25,
                "bytes": [72, 101, 108, 108, 111],
                "top_logprobs": [
                    {"token": "Hello", "logprob": -0.25, "bytes": [72, 101, 108, 108, 111]},
                    {"token": "Hi", "logprob": -1.5, "bytes": [72, 105]}
                ]
            }],
            "refusal": null
        }),
    );
}

#[test]
fn non_finite_logprobs_are_floored() {
    let token = TopLogprob {
        token: "x".into(),
        logprob: f32::NEG_INFINITY,
        bytes: None,
    };
    assert_eq!(
        serde_json::to_value(&token).unwrap(),
        json!({"token": "x", "logprob": -9999.0, "bytes": null})
    );
    let legacy = CompletionLogprobs {
        tokens: vec!["a".into(), "b".into()],
        token_logprobs: vec![None, Some(f32::NAN)],
        top_logprobs: vec![
            None,
            Some(TopLogprobsMap(vec![("b".into(), f32::NEG_INFINITY)])),
        ],
        text_offset: vec![0, 1],
    };
    assert_eq!(
        serde_json::to_value(&legacy).unwrap(),
        json!({
            "tokens": ["a", "b"],
            "token_logprobs": [null, -9999.0],
            "top_logprobs": [null, {"b": -9999.0}],
            "text_offset": [0, 1]
        })
    );
}

fn chunk(choices: Vec<ChatCompletionChunkChoice>, usage: Option<Usage>) -> ChatCompletionChunk {
    ChatCompletionChunk {
        id: "chatcmpl-1".into(),
        object: ChatCompletionChunkObject::Value,
        created: 1_700_000_000,
        model: "m".into(),
        system_fingerprint: None,
        choices,
        usage,
    }
}

#[test]
fn chat_chunks() {
    let first = chunk(
        vec![ChatCompletionChunkChoice {
            index: 0,
            delta: ChatCompletionDelta {
                role: Some(AssistantRole::Value),
                content: Some(String::new()),
                tool_calls: None,
            },
            logprobs: None,
            finish_reason: None,
        }],
        None,
    );
    assert_wire(
        &first,
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "m",
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": null,
                "finish_reason": null
            }]
        }),
    );
    let last = chunk(
        vec![ChatCompletionChunkChoice {
            index: 0,
            delta: ChatCompletionDelta::default(),
            logprobs: None,
            finish_reason: Some(FinishReason::Length),
        }],
        None,
    );
    assert_wire(
        &last,
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "m",
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "length"}]
        }),
    );
    let usage = chunk(Vec::new(), Some(Usage::new(5, 7)));
    assert_wire(
        &usage,
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "m",
            "system_fingerprint": null,
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
        }),
    );
    // Clients that receive `"usage": null` in ordinary chunks read it as absent.
    let read: ChatCompletionChunk = serde_json::from_value(json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "m", "system_fingerprint": null, "choices": [], "usage": null
    }))
    .unwrap();
    assert_eq!(read.usage, None);
}

#[test]
fn legacy_completion() {
    let completion = Completion {
        id: "cmpl-1".into(),
        object: TextCompletionObject::Value,
        created: 1_589_478_378,
        model: "gpt-3.5-turbo-instruct".into(),
        choices: vec![CompletionChoice {
            text: "\n\nThis is indeed a test".into(),
            index: 0,
            logprobs: Some(CompletionLogprobs {
                tokens: vec!["\n\n".into(), "This".into()],
                token_logprobs: vec![Some(-0.5), Some(-0.125)],
                top_logprobs: vec![
                    Some(TopLogprobsMap(vec![
                        ("\n\n".into(), -0.5),
                        ("\n".into(), -1.0),
                    ])),
                    Some(TopLogprobsMap(vec![
                        ("This".into(), -0.125),
                        ("this".into(), -2.0),
                    ])),
                ],
                text_offset: vec![0, 2],
            }),
            finish_reason: Some(FinishReason::Length),
        }],
        usage: Some(Usage::new(5, 7)),
        system_fingerprint: None,
    };
    assert_wire(
        &completion,
        json!({
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1_589_478_378,
            "model": "gpt-3.5-turbo-instruct",
            "choices": [{
                "text": "\n\nThis is indeed a test",
                "index": 0,
                "logprobs": {
                    "tokens": ["\n\n", "This"],
                    "token_logprobs": [-0.5, -0.125],
                    "top_logprobs": [{"\n\n": -0.5, "\n": -1.0}, {"This": -0.125, "this": -2.0}],
                    "text_offset": [0, 2]
                },
                "finish_reason": "length"
            }],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
            "system_fingerprint": null
        }),
    );
    let streamed = Completion {
        choices: vec![CompletionChoice {
            text: " test".into(),
            index: 0,
            logprobs: None,
            finish_reason: None,
        }],
        usage: None,
        ..completion
    };
    assert_wire(
        &streamed,
        json!({
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1_589_478_378,
            "model": "gpt-3.5-turbo-instruct",
            "choices": [{"text": " test", "index": 0, "logprobs": null, "finish_reason": null}],
            "system_fingerprint": null
        }),
    );
}

#[test]
fn duplicate_top_logprob_tokens_keep_the_first() {
    let map = TopLogprobsMap(vec![
        ("a".into(), -0.1),
        ("a".into(), -3.0),
        ("b".into(), -4.0),
    ]);
    // Written as text, an f32 keeps its shortest form (`-0.1`, not `-0.10000000149011612`).
    assert_eq!(
        serde_json::to_string(&map).unwrap(),
        r#"{"a":-0.1,"b":-4.0}"#
    );
}

#[test]
fn models() {
    let list = ModelList::new(vec![
        Model::new("smollm2", 1_700_000_000, "kiln"),
        Model::new("smolvlm", 1_700_000_000, "kiln")
            .with_images(12)
            .with_context_length(8192),
    ]);
    assert_wire(
        &list,
        json!({
            "object": "list",
            "data": [
                {"id": "smollm2", "object": "model", "created": 1_700_000_000, "owned_by": "kiln",
                 "input_modalities": ["text"]},
                {"id": "smolvlm", "object": "model", "created": 1_700_000_000, "owned_by": "kiln",
                 "input_modalities": ["text", "image"], "context_length": 8192,
                 "max_images_per_request": 12}
            ]
        }),
    );
    assert_wire(&Health::default(), json!({"status": "ok", "models": []}));
    assert_wire(
        &Health {
            status: HealthStatus::Loading,
            models: vec![
                ModelHealth {
                    id: "smollm2".into(),
                    status: HealthStatus::Ok,
                },
                ModelHealth {
                    id: "smolvlm".into(),
                    status: HealthStatus::Loading,
                },
            ],
        },
        json!({"status": "loading", "models": [
            {"id": "smollm2", "status": "ok"}, {"id": "smolvlm", "status": "loading"}
        ]}),
    );
}

#[test]
fn error_envelope() {
    let envelope = ErrorEnvelope::new(
        "The model `x` does not exist",
        "not_found_error",
        None,
        None,
    );
    assert_wire(
        &envelope,
        json!({"error": {"message": "The model `x` does not exist", "type": "not_found_error", "param": null, "code": null}}),
    );
    let err = ValidationError::new(
        "`n` must be between 1 and 16, got 0",
        Some("n".into()),
        code::INVALID_VALUE,
    );
    assert_eq!(err.to_string(), "`n` must be between 1 and 16, got 0");
    assert_eq!(
        serde_json::to_value(ErrorEnvelope::from(err.clone())).unwrap(),
        json!({"error": {
            "message": "`n` must be between 1 and 16, got 0",
            "type": "invalid_request_error",
            "param": "n",
            "code": "invalid_value"
        }})
    );
    assert_eq!(err.to_envelope(), ErrorEnvelope::from(err));
}

#[test]
fn requests_round_trip() {
    let request = ChatCompletionRequest {
        model: Some("m".into()),
        messages: vec![ChatMessage::text(MessageRole::User, "hi")],
        temperature: Some(0.5),
        ..Default::default()
    };
    let value = serde_json::to_value(&request).unwrap();
    assert_eq!(
        value,
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5})
    );
    assert_eq!(
        parse_chat_request(value.to_string().as_bytes()).unwrap(),
        request
    );

    for prompt in [
        Prompt::Text("a".into()),
        Prompt::Texts(vec!["a".into(), "b".into()]),
        Prompt::Tokens(vec![1, 2]),
        Prompt::TokenLists(vec![vec![1], vec![2, 3]]),
    ] {
        let request = CompletionRequest::new(prompt);
        let text = serde_json::to_string(&request).unwrap();
        let back = kiln_api_types::parse_completion_request(text.as_bytes()).unwrap();
        assert_eq!(back, request);
    }
}
