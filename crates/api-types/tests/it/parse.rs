//! Parsing request bodies as real clients send them, and the errors for bodies that are not
//! valid JSON or do not fit the types: line and column for broken JSON, the field path otherwise.

use crate::common::*;
use kiln_api_types::{
    Part, PromptInput, Role, Stop, code, parse_chat_request, parse_completion_request,
};
use serde_json::json;

#[test]
fn scaleway_style_request() {
    let body = br#"{
        "model": "llama-3.1-8b-instruct",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant"},
            {"role": "user", "content": "Describe a futuristic city with advanced technology and green energy solutions."}
        ],
        "max_tokens": 100,
        "temperature": 0.2,
        "top_p": 0.7,
        "stop": "\n\n",
        "stream": false
    }"#;
    let request = parse_chat_request(body).unwrap();
    assert_eq!(request.stop, Some(Stop::One("\n\n".into())));
    let v = request.validate(&Default::default()).unwrap();
    assert_eq!(v.model.as_deref(), Some("llama-3.1-8b-instruct"));
    assert_eq!(v.messages[0].role, Role::System);
    assert_eq!(
        v.messages[0].content,
        vec![Part::Text("You are a helpful assistant".into())]
    );
    assert_eq!(v.params.max_tokens, Some(100));
    assert_eq!(v.params.temperature, 0.2);
    assert_eq!(v.params.top_p, 0.7);
    assert_eq!(v.params.stop, vec!["\n\n"]);
    assert!(!v.stream);

    let v = chat(&json!({
        "model": "mistral-nemo-instruct-2407",
        "messages": [{"role": "user", "content": "Hi"}],
        "stop": ["###", "User:"], "presence_penalty": 0, "frequency_penalty": 0
    }))
    .unwrap();
    assert_eq!(v.params.stop, vec!["###", "User:"]);
}

#[test]
fn vision_request() {
    let body = json!({
        "model": "pixtral-12b-2409",
        "messages": [{
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these images?"},
                {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgICAgMCAgIDAwMDBAYEBAQEBAgGBgUGCQgKCgkICQkKDA8MCgsOCwkJDRENDg8QEBEQCgwSExIQEw8QEBD/"}}
            ]
        }],
        "max_tokens": 300
    });
    let v = chat(&body).unwrap();
    assert_eq!(v.image_count, 2);
    match &v.messages[0].content[..] {
        [Part::Text(t), Part::Image(a), Part::Image(b)] => {
            assert_eq!(t, "What is in these images?");
            assert!(a.url.starts_with("https://upload.wikimedia.org/"));
            assert!(b.url.starts_with("data:image/jpeg;base64,"));
        }
        other => panic!("unexpected content {other:?}"),
    }
}

#[test]
fn thirteen_images_are_too_many() {
    let parts: Vec<_> = (0..13)
        .map(|i| json!({"type": "image_url", "image_url": {"url": format!("https://img.example/{i}.png")}}))
        .collect();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": parts}]});
    let err = assert_rejects(chat(&body), "messages", code::INVALID_VALUE);
    assert_eq!(
        err.message,
        "at most 12 images are allowed per request, got 13"
    );
}

#[test]
fn cloudsway_requests_without_a_model() {
    let v = chat(&json!({
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": true,
        "max_tokens": 512
    }))
    .unwrap();
    assert_eq!(v.model, None);
    assert!(v.stream && !v.include_usage);
    let v =
        chat(&json!({"model": "", "messages": [{"role": "user", "content": "Hello"}]})).unwrap();
    assert_eq!(v.model, None);
}

#[test]
fn stream_with_usage() {
    let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Count to 3"}],
        "stream":true,"stream_options":{"include_usage":true}}"#;
    let v = parse_chat_request(body)
        .unwrap()
        .validate(&Default::default())
        .unwrap();
    assert!(v.stream && v.include_usage);
}

#[test]
fn heroku_multi_turn() {
    let v = chat(&json!({
        "model": "claude-3-5-haiku",
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "What is Heroku?"},
            {"role": "assistant", "content": "A cloud platform as a service."},
            {"role": "user", "content": "Which languages does it support?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Ruby, Node.js, Python, Java and more."}]},
            {"role": "user", "content": "Thanks!"}
        ],
        "temperature": 0.5,
        "max_completion_tokens": 200
    }))
    .unwrap();
    assert_eq!(
        v.messages.iter().map(|m| m.role).collect::<Vec<_>>(),
        [
            Role::System,
            Role::User,
            Role::Assistant,
            Role::User,
            Role::Assistant,
            Role::User
        ]
    );
    assert_eq!(
        v.messages[4].content,
        vec![Part::Text("Ruby, Node.js, Python, Java and more.".into())]
    );
    assert_eq!(v.params.max_tokens, Some(200));
}

#[test]
fn legacy_completion_prompts() {
    let v = completion(&json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "max_tokens": 7, "temperature": 0}))
        .unwrap();
    assert_eq!(
        v.prompts,
        vec![PromptInput::Text("Say this is a test".into())]
    );
    assert_eq!(v.params.max_tokens, Some(7));
    assert_eq!(v.params.temperature, 0.0);

    let v =
        completion(&json!({"model": "m", "prompt": ["one", "two"], "n": 2, "echo": true})).unwrap();
    assert_eq!(
        v.prompts,
        vec![
            PromptInput::Text("one".into()),
            PromptInput::Text("two".into())
        ]
    );
    assert_eq!(v.params.n, 2);
    assert!(v.echo);

    let v = completion(&json!({"model": "m", "prompt": [1, 2, 3], "logprobs": 3})).unwrap();
    assert_eq!(v.prompts, vec![PromptInput::Tokens(vec![1, 2, 3])]);
    assert_eq!(v.logprobs, Some(3));

    let v = completion(&json!({"model": "m", "prompt": [[1, 2], [3]]})).unwrap();
    assert_eq!(
        v.prompts,
        vec![
            PromptInput::Tokens(vec![1, 2]),
            PromptInput::Tokens(vec![3])
        ]
    );
}

#[test]
fn invalid_json_names_line_and_column() {
    let err = parse_chat_request(br#"{"model": "m",, "messages": []}"#).unwrap_err();
    assert_eq!(err.code.as_deref(), Some(code::INVALID_JSON));
    assert_eq!(err.param, None);
    assert_eq!(
        err.message,
        "invalid JSON at line 1 column 15: key must be a string"
    );

    let err = parse_chat_request(b"{\n  \"model\": \"m\",\n  \"messages\": [\n").unwrap_err();
    assert!(
        err.message
            .starts_with("invalid JSON at line 4 column 0: EOF"),
        "{err}"
    );

    let err =
        parse_chat_request(br#"{"messages": [{"role": "user", "content": "x"}]} {}"#).unwrap_err();
    assert!(err.message.contains("trailing characters"), "{err}");
    assert_eq!(err.code.as_deref(), Some(code::INVALID_JSON));

    for empty in [&b""[..], b"  \n"] {
        let err = parse_completion_request(empty).unwrap_err();
        assert!(err.message.contains("empty"), "{err}");
        assert_eq!(err.code.as_deref(), Some(code::INVALID_JSON));
    }

    for not_object in [&b"[]"[..], b"\"hi\"", b"null", b"42"] {
        let err = parse_chat_request(not_object).unwrap_err();
        assert!(
            err.message
                .starts_with("the request body must be a JSON object"),
            "{err}"
        );
        assert_eq!(err.param, None);
    }
}

#[test]
fn type_errors_name_the_field() {
    let err = assert_rejects(
        chat(&chat_body(json!({"temperature": "hot"}))),
        "temperature",
        code::INVALID_TYPE,
    );
    assert_eq!(
        err.message,
        "invalid type for `temperature`: string \"hot\", expected a number"
    );
    assert_rejects(
        chat(&json!({"model": "m", "messages": [{"role": "user", "content": {"text": "x"}}]})),
        "messages[0].content",
        code::INVALID_TYPE,
    );
    assert_rejects(
        chat(&json!({"model": "m", "messages": [{"content": "x"}]})),
        "messages[0].role",
        code::MISSING_REQUIRED_PARAMETER,
    );
    let err = assert_rejects(
        chat(&json!({"model": "m"})),
        "messages",
        code::MISSING_REQUIRED_PARAMETER,
    );
    assert_eq!(err.message, "missing required parameter `messages`");
    assert_rejects(
        chat(&json!({"model": "m", "messages": null})),
        "messages",
        code::MISSING_REQUIRED_PARAMETER,
    );
    assert_rejects(
        chat(&json!({"model": 5, "messages": []})),
        "model",
        code::INVALID_TYPE,
    );
    assert_rejects(
        chat(&chat_body(json!({"stream": "yes"}))),
        "stream",
        code::INVALID_TYPE,
    );
    assert_rejects(chat(&chat_body(json!({"n": 2.5}))), "n", code::INVALID_TYPE);
    // JSON Schema counts 2.0 as an integer, so it reads as one.
    assert_eq!(chat(&chat_body(json!({"n": 2.0}))).unwrap().params.n, 2);
    assert_eq!(
        chat(&chat_body(json!({"max_tokens": 1e3})))
            .unwrap()
            .params
            .max_tokens,
        Some(1000)
    );
    let v = completion(&json!({"prompt": [1.0, 2], "logprobs": 2.0})).unwrap();
    assert_eq!(v.prompts, vec![PromptInput::Tokens(vec![1, 2])]);
    assert_eq!(v.logprobs, Some(2));
    // An integer beyond i64 reaches serde as the nearest f64, which is i64::MIN or i64::MAX + 1
    // exactly: it must not slip through as an in-range seed (found by schemathesis).
    for seed in [
        "-9223372036854775809",
        "9223372036854775808",
        "-1e19",
        "1e300",
    ] {
        let body = format!(
            r#"{{"model": "m", "messages": [{{"role": "user", "content": "hi"}}], "seed": {seed}}}"#
        );
        let err = parse_chat_request(body.as_bytes()).expect_err(seed);
        assert_eq!(err.param.as_deref(), Some("seed"), "{seed}: {err:?}");
    }
    let body = r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": -9223372036854775808}"#;
    let seed = parse_chat_request(body.as_bytes())
        .unwrap()
        .validate(&Default::default())
        .unwrap()
        .params
        .seed;
    assert_eq!(seed, Some(i64::MIN as u64));
}

#[test]
fn unknown_fields_are_rejected() {
    let err = assert_rejects(
        chat(&chat_body(json!({"temprature": 0.5}))),
        "temprature",
        code::UNKNOWN_PARAMETER,
    );
    assert_eq!(err.message, "unknown parameter `temprature`");
    assert_rejects(
        chat(&chat_body(json!({"ignore_eos": true}))),
        "ignore_eos",
        code::UNKNOWN_PARAMETER,
    );
    assert_rejects(
        chat(&json!({"model": "m", "messages": [{"role": "user", "content": "x", "weight": 1}]})),
        "messages[0].weight",
        code::UNKNOWN_PARAMETER,
    );
    assert_rejects(
        chat(&chat_body(
            json!({"stream": true, "stream_options": {"include_usage": true, "chunk_size": 5}}),
        )),
        "stream_options.chunk_size",
        code::UNKNOWN_PARAMETER,
    );
    assert_rejects(
        completion(&completion_body(json!({"messages": []}))),
        "messages",
        code::UNKNOWN_PARAMETER,
    );
}

#[test]
fn tools_parse_and_name_their_faults() {
    let v = chat(&chat_body(json!({
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": "auto"
    })))
    .unwrap();
    assert_eq!(v.tools.tools[0].name, "get_weather");
    assert_rejects(
        chat(&chat_body(
            json!({"tools": [{"type": "function", "function": {"name": "a", "parameters": {}, "extra": 1}}]}),
        )),
        "tools[0].function.extra",
        code::UNKNOWN_PARAMETER,
    );
}
