//! Every validation rule: each bad value is rejected with an error naming the right field, and
//! the good values around it come out as the right typed values.

use crate::common::*;
use kiln_api_types::{
    CompletionRequest, ImageDetail, ImagePart, Limits, Part, PromptInput, ResponseFormat, Role,
    ToolChoice, code,
};
use serde_json::{Value, json};

#[test]
fn defaults() {
    let v = chat(&chat_body(json!({}))).unwrap();
    assert_eq!(v.model.as_deref(), Some("m"));
    assert_eq!(v.params, kiln_api_types::GenerationParams::default());
    assert!(!v.stream && !v.include_usage);
    assert_eq!(v.logprobs, None);
    assert_eq!(v.image_count, 0);
    assert_eq!(v.messages.len(), 1);
    assert_eq!(v.messages[0].role, Role::User);
    assert_eq!(v.messages[0].content, vec![Part::Text("hi".into())]);
}

#[test]
fn nulls_mean_absent() {
    let body = chat_body(json!({
        "temperature": null, "top_p": null, "n": null, "stop": null, "max_tokens": null,
        "max_completion_tokens": null, "logit_bias": null, "logprobs": null,
        "top_logprobs": null, "stream": null, "stream_options": null, "seed": null,
        "tools": null, "tool_choice": null, "functions": null, "function_call": null,
        "audio": null, "modalities": null, "prediction": null, "response_format": null,
        "store": null, "metadata": null, "service_tier": null, "reasoning_effort": null,
        "web_search_options": null, "verbosity": null, "user": null,
        "parallel_tool_calls": null, "top_k": null, "min_p": null,
        "repetition_penalty": null, "frequency_penalty": null, "presence_penalty": null,
        "prompt_cache_key": null, "safety_identifier": null
    }));
    assert_eq!(
        chat(&body).unwrap().params,
        kiln_api_types::GenerationParams::default()
    );
}

#[test]
fn temperature_range() {
    for bad in [-0.1, 2.01, 100.0] {
        assert_rejects(
            chat(&chat_body(json!({"temperature": bad}))),
            "temperature",
            code::INVALID_VALUE,
        );
    }
    assert_eq!(
        chat(&chat_body(json!({"temperature": 0})))
            .unwrap()
            .params
            .temperature,
        0.0
    );
    assert_eq!(
        chat(&chat_body(json!({"temperature": 2})))
            .unwrap()
            .params
            .temperature,
        2.0
    );
    assert_eq!(
        chat(&chat_body(json!({"temperature": 0.2})))
            .unwrap()
            .params
            .temperature,
        0.2
    );
}

#[test]
fn top_p_range() {
    for bad in [-0.01, 1.01] {
        assert_rejects(
            chat(&chat_body(json!({"top_p": bad}))),
            "top_p",
            code::INVALID_VALUE,
        );
    }
    assert_eq!(
        chat(&chat_body(json!({"top_p": 0}))).unwrap().params.top_p,
        0.0
    );
    assert_eq!(
        chat(&chat_body(json!({"top_p": 0.7})))
            .unwrap()
            .params
            .top_p,
        0.7
    );
}

#[test]
fn penalties_range() {
    for field in ["presence_penalty", "frequency_penalty"] {
        for bad in [-2.5, 2.1] {
            assert_rejects(
                chat(&chat_body(json!({field: bad}))),
                field,
                code::INVALID_VALUE,
            );
        }
    }
    let v = chat(&chat_body(
        json!({"presence_penalty": -2, "frequency_penalty": 1.5}),
    ))
    .unwrap();
    assert_eq!(
        (v.params.presence_penalty, v.params.frequency_penalty),
        (-2.0, 1.5)
    );
}

#[test]
fn n_bounds() {
    for bad in [0, -1, 17] {
        assert_rejects(
            chat(&chat_body(json!({"n": bad}))),
            "n",
            code::INVALID_VALUE,
        );
    }
    assert_eq!(chat(&chat_body(json!({"n": 16}))).unwrap().params.n, 16);
    let limits = Limits {
        max_n: 2,
        ..Limits::default()
    };
    assert_rejects(
        chat_with(&chat_body(json!({"n": 3})), &limits),
        "n",
        code::INVALID_VALUE,
    );
    assert_eq!(
        chat_with(&chat_body(json!({"n": 2})), &limits)
            .unwrap()
            .params
            .n,
        2
    );
}

#[test]
fn stop_rules() {
    assert_eq!(
        chat(&chat_body(json!({"stop": "\n"}))).unwrap().params.stop,
        vec!["\n"]
    );
    assert_eq!(
        chat(&chat_body(json!({"stop": ["a", "b", "c", "d"]})))
            .unwrap()
            .params
            .stop,
        vec!["a", "b", "c", "d"]
    );
    assert!(
        chat(&chat_body(json!({"stop": []})))
            .unwrap()
            .params
            .stop
            .is_empty()
    );
    for bad in [
        json!(["a", "b", "c", "d", "e"]),
        json!(""),
        json!(["a", ""]),
    ] {
        assert_rejects(
            chat(&chat_body(json!({"stop": bad}))),
            "stop",
            code::INVALID_VALUE,
        );
    }
    assert_rejects(
        chat(&chat_body(json!({"stop": 5}))),
        "stop",
        code::INVALID_TYPE,
    );
    assert_rejects(
        chat(&chat_body(json!({"stop": [5]}))),
        "stop[0]",
        code::INVALID_TYPE,
    );
}

#[test]
fn max_tokens_rules() {
    for field in ["max_tokens", "max_completion_tokens"] {
        for bad in [json!(0), json!(-5), json!(4_294_967_296u64)] {
            assert_rejects(
                chat(&chat_body(json!({field: bad}))),
                field,
                code::INVALID_VALUE,
            );
        }
        assert_eq!(
            chat(&chat_body(json!({field: 100})))
                .unwrap()
                .params
                .max_tokens,
            Some(100)
        );
    }
    let both = chat(&chat_body(
        json!({"max_tokens": 10, "max_completion_tokens": 20}),
    ))
    .unwrap();
    assert_eq!(both.params.max_tokens, Some(20));
    assert_eq!(chat(&chat_body(json!({}))).unwrap().params.max_tokens, None);
    assert_rejects(
        chat(&chat_body(json!({"max_tokens": 1.5}))),
        "max_tokens",
        code::INVALID_TYPE,
    );
}

#[test]
fn logprobs_rules() {
    assert_eq!(
        chat(&chat_body(json!({"logprobs": true})))
            .unwrap()
            .logprobs,
        Some(0)
    );
    assert_eq!(
        chat(&chat_body(json!({"logprobs": true, "top_logprobs": 20})))
            .unwrap()
            .logprobs,
        Some(20)
    );
    assert_eq!(
        chat(&chat_body(json!({"logprobs": false})))
            .unwrap()
            .logprobs,
        None
    );
    for bad in [-1, 21] {
        assert_rejects(
            chat(&chat_body(json!({"logprobs": true, "top_logprobs": bad}))),
            "top_logprobs",
            code::INVALID_VALUE,
        );
    }
    let err = assert_rejects(
        chat(&chat_body(json!({"top_logprobs": 2}))),
        "top_logprobs",
        code::INVALID_VALUE,
    );
    assert!(err.message.contains("logprobs"), "{err}");
    assert_rejects(
        chat(&chat_body(json!({"logprobs": false, "top_logprobs": 2}))),
        "top_logprobs",
        code::INVALID_VALUE,
    );
}

#[test]
fn logit_bias_rules() {
    let v = chat(&chat_body(
        json!({"logit_bias": {"50256": -100, "7": 5.5, "007": 1, "12": 100}}),
    ))
    .unwrap();
    // Sorted by id; "7" and "007" name the same token and the later key ("7", in key order) wins.
    assert_eq!(
        v.params.logit_bias,
        vec![(7, 5.5), (12, 100.0), (50256, -100.0)]
    );
    for bad_key in ["abc", "+5", "-1", "", " 5", "4294967296", "1.0"] {
        assert_rejects(
            chat(&chat_body(json!({"logit_bias": {bad_key: 1}}))),
            "logit_bias",
            code::INVALID_VALUE,
        );
    }
    for bad_value in [-100.5, 101.0] {
        assert_rejects(
            chat(&chat_body(json!({"logit_bias": {"5": bad_value}}))),
            "logit_bias",
            code::INVALID_VALUE,
        );
    }
    assert_rejects(
        chat(&chat_body(json!({"logit_bias": {"5": "high"}}))),
        "logit_bias.5",
        code::INVALID_TYPE,
    );
    let limits = Limits {
        vocab_size: Some(49152),
        ..Limits::default()
    };
    assert!(chat_with(&chat_body(json!({"logit_bias": {"49151": 1}})), &limits).is_ok());
    let err = assert_rejects(
        chat_with(&chat_body(json!({"logit_bias": {"49152": 1}})), &limits),
        "logit_bias",
        code::INVALID_VALUE,
    );
    assert!(err.message.contains("49152"), "{err}");
}

#[test]
fn vllm_extensions() {
    assert_rejects(
        chat(&chat_body(json!({"top_k": -2}))),
        "top_k",
        code::INVALID_VALUE,
    );
    assert_eq!(
        chat(&chat_body(json!({"top_k": -1}))).unwrap().params.top_k,
        None
    );
    assert_eq!(
        chat(&chat_body(json!({"top_k": 0}))).unwrap().params.top_k,
        None
    );
    assert_eq!(
        chat(&chat_body(json!({"top_k": 40}))).unwrap().params.top_k,
        Some(40)
    );
    for bad in [-0.1, 1.1] {
        assert_rejects(
            chat(&chat_body(json!({"min_p": bad}))),
            "min_p",
            code::INVALID_VALUE,
        );
    }
    assert_eq!(
        chat(&chat_body(json!({"min_p": 0.05})))
            .unwrap()
            .params
            .min_p,
        0.05
    );
    for bad in [0.0, -1.0] {
        assert_rejects(
            chat(&chat_body(json!({"repetition_penalty": bad}))),
            "repetition_penalty",
            code::INVALID_VALUE,
        );
    }
    assert_eq!(
        chat(&chat_body(json!({"repetition_penalty": 1.3})))
            .unwrap()
            .params
            .repetition_penalty,
        1.3
    );
}

#[test]
fn seed_keeps_its_bits() {
    assert_eq!(
        chat(&chat_body(json!({"seed": 42}))).unwrap().params.seed,
        Some(42)
    );
    assert_eq!(
        chat(&chat_body(json!({"seed": -1}))).unwrap().params.seed,
        Some(u64::MAX)
    );
    assert_rejects(
        chat(&chat_body(json!({"seed": 1e30}))),
        "seed",
        code::INVALID_TYPE,
    );
}

#[test]
fn stream_options_need_stream() {
    let v = chat(&chat_body(
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    ))
    .unwrap();
    assert!(v.stream && v.include_usage);
    let v = chat(&chat_body(json!({"stream": true, "stream_options": {}}))).unwrap();
    assert!(v.stream && !v.include_usage);
    assert!(chat(&chat_body(json!({"stream": true}))).unwrap().stream);
    for stream in [json!(false), json!(null)] {
        assert_rejects(
            chat(&chat_body(
                json!({"stream": stream, "stream_options": {"include_usage": true}}),
            )),
            "stream_options",
            code::INVALID_VALUE,
        );
    }
    assert_rejects(
        chat(&chat_body(
            json!({"stream": true, "stream_options": {"include_usage": 1}}),
        )),
        "stream_options.include_usage",
        code::INVALID_TYPE,
    );
    assert!(
        chat(&chat_body(
            json!({"stream": true, "stream_options": {"include_obfuscation": false}})
        ))
        .is_ok()
    );
}

#[test]
fn unsupported_features_are_rejected_by_name() {
    for (field, value) in [
        ("functions", json!([{"name": "f"}])),
        ("function_call", json!("auto")),
        ("function_call", json!({"name": "f"})),
        ("audio", json!({"voice": "alloy", "format": "wav"})),
        ("modalities", json!(["text", "audio"])),
        ("modalities", json!(["audio"])),
        ("modalities", json!([])),
        ("prediction", json!({"type": "content", "content": "x"})),
        ("store", json!(true)),
        ("web_search_options", json!({})),
        ("reasoning_effort", json!("low")),
    ] {
        let err = assert_rejects(
            chat(&chat_body(json!({field: value}))),
            field,
            code::UNSUPPORTED_PARAMETER,
        );
        assert!(err.message.contains(&format!("`{field}`")), "{err}");
        assert!(
            err.message.contains("not supported") || field == "modalities",
            "{err}"
        );
    }
    assert_rejects(
        chat(&chat_body(json!({"response_format": {"type": "xml"}}))),
        "response_format.type",
        code::INVALID_VALUE,
    );
}

#[test]
fn response_formats_become_typed_values() {
    let format = |v: Value| {
        chat(&chat_body(json!({"response_format": v}))).map(|c| c.params.response_format)
    };
    assert_eq!(
        format(json!({"type": "json_object"})),
        Ok(ResponseFormat::JsonObject)
    );
    let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
    assert_eq!(
        format(
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}})
        ),
        Ok(ResponseFormat::JsonSchema {
            name: "x".into(),
            schema,
            strict: true
        })
    );
    // The legacy API takes it too (a Kiln extension).
    let legacy: CompletionRequest =
        serde_json::from_value(json!({"prompt": "x", "response_format": {"type": "json_object"}}))
            .unwrap();
    assert_eq!(
        legacy
            .validate(&Limits::default())
            .unwrap()
            .params
            .response_format,
        ResponseFormat::JsonObject
    );
    assert_rejects(
        chat(&chat_body(
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}}),
        )),
        "response_format.json_schema.schema",
        code::INVALID_TYPE,
    );
}

#[test]
fn harmless_openai_fields_are_accepted() {
    let body = chat_body(json!({
        "tool_choice": "none",
        "function_call": "none",
        "parallel_tool_calls": true,
        "modalities": ["text"],
        "response_format": {"type": "text"},
        "store": false,
        "metadata": {"team": "search"},
        "service_tier": "auto",
        "user": "user-1234",
        "safety_identifier": "hash",
        "prompt_cache_key": "k",
        "verbosity": "low"
    }));
    assert!(chat(&body).is_ok());
    assert_rejects(
        chat(&chat_body(json!({"service_tier": "gold"}))),
        "service_tier",
        code::INVALID_VALUE,
    );
    assert_rejects(
        chat(&chat_body(json!({"metadata": {"n": 1}}))),
        "metadata.n",
        code::INVALID_TYPE,
    );
}

#[test]
fn message_rules() {
    let with = |messages: serde_json::Value| chat(&json!({"model": "m", "messages": messages}));
    assert_rejects(with(json!([])), "messages", code::INVALID_VALUE);
    let err = assert_rejects(
        with(
            json!([{"role": "user", "content": "x"}, {"role": "function", "content": "r", "name": "f"}]),
        ),
        "messages[1].role",
        code::UNSUPPORTED_PARAMETER,
    );
    assert!(err.message.contains("function"), "{err}");
    assert_rejects(
        with(json!([{"role": "robot", "content": "x"}])),
        "messages[0].role",
        code::INVALID_VALUE,
    );
    assert_rejects(
        with(json!([{"role": "user", "content": "x"}, {"role": "assistant"}])),
        "messages[1].content",
        code::MISSING_REQUIRED_PARAMETER,
    );
    assert_rejects(
        with(json!([{"role": "user", "content": null}])),
        "messages[0].content",
        code::MISSING_REQUIRED_PARAMETER,
    );
    assert_rejects(
        with(json!([{"role": "user", "content": []}])),
        "messages[0].content",
        code::INVALID_VALUE,
    );
    assert_rejects(
        with(json!([{"role": "user", "content": 5}])),
        "messages[0].content",
        code::INVALID_TYPE,
    );
    assert_rejects(
        with(json!([{"role": "user", "content": "x"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function"}]}])),
        "messages[1].tool_calls[0].function",
        code::MISSING_REQUIRED_PARAMETER,
    );
    assert_rejects(
        with(json!([{"role": "user", "content": "x", "tool_calls": []}])),
        "messages[0].tool_calls",
        code::INVALID_VALUE,
    );
    assert_rejects(
        with(json!([{"role": "assistant", "content": "x", "tool_call_id": "c"}])),
        "messages[0].tool_call_id",
        code::INVALID_VALUE,
    );
    assert_rejects(
        with(json!([{"role": "tool", "content": "x"}])),
        "messages[0].tool_call_id",
        code::MISSING_REQUIRED_PARAMETER,
    );
    assert_rejects(
        with(json!([{"role": "tool", "content": "x", "tool_call_id": "nowhere"}])),
        "messages[0].tool_call_id",
        code::INVALID_VALUE,
    );
    for field in ["refusal", "function_call", "audio"] {
        assert_rejects(
            with(json!([{"role": "assistant", "content": "x", field: {"a": 1}}])),
            &format!("messages[0].{field}"),
            code::UNSUPPORTED_PARAMETER,
        );
    }
    // What clients echo back from an earlier response is fine.
    let v = with(json!([
        {"role": "user", "content": "hi", "name": "ann"},
        {"role": "assistant", "content": "hello", "refusal": null, "tool_calls": null,
         "function_call": null, "audio": null},
        {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "user", "content": ""}
    ]))
    .unwrap();
    assert_eq!(
        v.messages.iter().map(|m| m.role).collect::<Vec<_>>(),
        [Role::User, Role::Assistant, Role::Developer, Role::User]
    );
    assert_eq!(v.messages[0].name.as_deref(), Some("ann"));
    assert_eq!(v.messages[2].content, vec![Part::Text("be brief".into())]);

    // A tool loop: the call (no content) and its result.
    let v = with(json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    ]))
    .unwrap();
    assert_eq!(v.messages[1].content, vec![]);
    assert_eq!(v.messages[1].tool_calls[0].name, "get_weather");
    assert_eq!(
        v.messages[1].tool_calls[0].arguments,
        "{\"city\": \"Paris\"}"
    );
    assert_eq!(v.messages[2].role, Role::Tool);
    assert_eq!(v.messages[2].tool_call_id.as_deref(), Some("call_1"));
}

#[test]
fn tools_become_typed_values() {
    let tool =
        json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}});
    let v = chat(&chat_body(
        json!({"tools": [tool], "parallel_tool_calls": false}),
    ))
    .unwrap();
    assert_eq!(v.tools.choice, ToolChoice::Auto);
    assert!(!v.tools.parallel);
    assert_eq!(v.tools.tools[0].name, "f");
    let v = chat(&chat_body(
        json!({"tools": [tool], "tool_choice": "required"}),
    ))
    .unwrap();
    assert_eq!(v.tools.choice, ToolChoice::Required);
    let v = chat(&chat_body(
        json!({"tools": [tool], "tool_choice": {"type": "function", "function": {"name": "f"}}}),
    ))
    .unwrap();
    assert_eq!(v.tools.choice, ToolChoice::Function("f".into()));
    // No tools: nothing to call, whatever `parallel_tool_calls` says.
    let v = chat(&chat_body(json!({"tools": [], "tool_choice": "none"}))).unwrap();
    assert!(!v.tools.enabled());
    assert_rejects(
        chat(&chat_body(
            json!({"tools": [tool], "tool_choice": {"type": "function", "function": {"name": "g"}}}),
        )),
        "tool_choice.function.name",
        code::INVALID_VALUE,
    );
    assert_rejects(
        chat(&chat_body(json!({"tool_choice": "auto"}))),
        "tool_choice",
        code::INVALID_VALUE,
    );
    assert_rejects(
        chat(&chat_body(json!({"tools": [tool, tool]}))),
        "tools[1].function.name",
        code::INVALID_VALUE,
    );
}

#[test]
fn content_part_rules() {
    let part = |p: serde_json::Value| {
        chat(
            &json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, p]}]}),
        )
    };
    for kind in ["input_audio", "file", "refusal"] {
        let err = assert_rejects(
            part(json!({"type": kind})),
            "messages[0].content[1].type",
            code::INVALID_VALUE,
        );
        assert!(err.message.contains("not supported"), "{err}");
    }
    let err = assert_rejects(
        part(json!({"type": "video"})),
        "messages[0].content[1].type",
        code::INVALID_VALUE,
    );
    assert!(err.message.contains("`video`"), "{err}");
    assert_rejects(
        part(json!({"text": "x"})),
        "messages[0].content[1].type",
        code::MISSING_REQUIRED_PARAMETER,
    );
    assert_rejects(
        part(json!({"type": "text"})),
        "messages[0].content[1].text",
        code::MISSING_REQUIRED_PARAMETER,
    );
    assert_rejects(
        part(json!({"type": "text", "text": 1})),
        "messages[0].content[1].text",
        code::INVALID_TYPE,
    );
    assert_rejects(
        part(json!({"type": "text", "text": "x", "extra": 1})),
        "messages[0].content[1].extra",
        code::UNKNOWN_PARAMETER,
    );
    assert_rejects(
        part(json!({"type": "text", "text": "x", "image_url": {"url": "https://a"}})),
        "messages[0].content[1].image_url",
        code::UNKNOWN_PARAMETER,
    );
    assert_rejects(
        part(json!({"type": "image_url"})),
        "messages[0].content[1].image_url",
        code::MISSING_REQUIRED_PARAMETER,
    );
    assert_rejects(
        part(json!({"type": "image_url", "image_url": {"url": "https://a", "size": 1}})),
        "messages[0].content[1].image_url.size",
        code::UNKNOWN_PARAMETER,
    );
    assert_rejects(
        part(json!({"type": "image_url", "image_url": {"url": "https://a", "detail": "max"}})),
        "messages[0].content[1].image_url.detail",
        code::INVALID_VALUE,
    );
    // A JSON object literal cannot repeat a key, so this one is written out.
    let repeated = br#"{"messages": [{"role": "user", "content": [{"type": "text", "type": "text", "text": "x"}]}]}"#;
    assert_rejects(
        kiln_api_types::parse_chat_request(repeated),
        "messages[0].content[0].type",
        code::INVALID_VALUE,
    );
}

#[test]
fn image_rules() {
    let image = |url: &str| json!({"type": "image_url", "image_url": {"url": url}});
    let user = |parts: Vec<serde_json::Value>| {
        chat(&json!({"model": "m", "messages": [{"role": "user", "content": parts}]}))
    };
    for good in [
        "https://example.com/cat.png",
        "http://example.com/cat.png",
        "HTTPS://EXAMPLE.COM/X",
        "data:image/png;base64,iVBORw0KGgo=",
        "data:image/jpeg;name=x.jpg;base64,/9j/4AAQ",
        "DATA:IMAGE/PNG;BASE64,AAAA",
        // The scheme passes here; the gateway refuses it unless a local media folder is set.
        "file:///srv/media/cat.png",
    ] {
        let v = user(vec![image(good)]).unwrap();
        assert_eq!(v.image_count, 1);
        assert_eq!(
            v.messages[0].content,
            vec![Part::Image(ImagePart {
                url: good.to_owned(),
                detail: ImageDetail::Auto,
            })]
        );
    }
    for bad in [
        "ftp://example.com/cat.png",
        "gopher://example.com/cat.png",
        "example.com/cat.png",
        " https://example.com",
        "data:text/plain;base64,aGk=",
        "data:image/png,rawbytes",
        "data:image/png;base64",
        "file:/etc/passwd",
        "",
    ] {
        let err = assert_rejects(
            user(vec![
                json!({"type": "text", "text": "what is this?"}),
                image(bad),
            ]),
            "messages[0].content[1].image_url.url",
            code::INVALID_VALUE,
        );
        assert!(err.message.contains("https://"), "{err}");
    }
    for role in ["system", "developer", "assistant"] {
        assert_rejects(
            chat(
                &json!({"model": "m", "messages": [{"role": role, "content": [image("https://a")]}]}),
            ),
            "messages[0].content[0].type",
            code::INVALID_VALUE,
        );
    }
    // The image limit counts over the whole request.
    let twelve = (0..12)
        .map(|i| image(&format!("https://x/{i}.png")))
        .collect::<Vec<_>>();
    assert_eq!(user(twelve.clone()).unwrap().image_count, 12);
    let err = assert_rejects(
        chat(&json!({"model": "m", "messages": [
            {"role": "user", "content": twelve},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": [image("https://x/13.png")]}
        ]})),
        "messages",
        code::INVALID_VALUE,
    );
    assert!(err.message.contains("at most 12 images"), "{err}");
    let limits = Limits {
        max_images: 1,
        ..Limits::default()
    };
    let err = chat_with(
        &json!({"model": "m", "messages": [{"role": "user", "content": [image("https://a"), image("https://b")]}]}),
        &limits,
    )
    .unwrap_err();
    assert!(
        err.message.contains("at most 1 images") || err.message.contains("at most 1 image"),
        "{err}"
    );
}

#[test]
fn model_missing_or_empty_means_default() {
    let no_model = json!({"messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(chat(&no_model).unwrap().model, None);
    assert_eq!(chat(&chat_body(json!({"model": ""}))).unwrap().model, None);
    assert_eq!(
        chat(&chat_body(json!({"model": null}))).unwrap().model,
        None
    );
    assert_eq!(
        chat(&chat_body(json!({"model": "smollm2"})))
            .unwrap()
            .model
            .as_deref(),
        Some("smollm2")
    );
}

#[test]
fn completion_defaults() {
    let v = completion(&completion_body(json!({}))).unwrap();
    assert_eq!(
        v.prompts,
        vec![PromptInput::Text("Once upon a time".into())]
    );
    assert_eq!(v.params.max_tokens, Some(16));
    assert_eq!(v.params.n, 1);
    assert!(!v.echo && !v.stream && !v.include_usage);
    assert_eq!(v.logprobs, None);
    assert_eq!(
        completion(&json!({"prompt": "x", "model": ""}))
            .unwrap()
            .model,
        None
    );
}

#[test]
fn completion_prompt_rules() {
    let with = |prompt: serde_json::Value| completion(&json!({"model": "m", "prompt": prompt}));
    assert_rejects(with(json!("")), "prompt", code::INVALID_VALUE);
    assert_rejects(with(json!([])), "prompt", code::INVALID_VALUE);
    assert_rejects(with(json!(["a", ""])), "prompt[1]", code::INVALID_VALUE);
    assert_rejects(with(json!([[]])), "prompt[0]", code::INVALID_VALUE);
    assert_rejects(with(json!([[1], []])), "prompt[1]", code::INVALID_VALUE);
    let many = (0..65).map(|i| format!("p{i}")).collect::<Vec<_>>();
    let err = assert_rejects(with(json!(many)), "prompt", code::INVALID_VALUE);
    assert!(err.message.contains("64"), "{err}");
    assert_eq!(with(json!(many[..64])).unwrap().prompts.len(), 64);
    let err = assert_rejects(with(json!(["a", 1])), "prompt", code::INVALID_VALUE);
    assert!(err.message.contains("only strings"), "{err}");
    assert_rejects(with(json!([1, [2]])), "prompt", code::INVALID_VALUE);
    assert_rejects(with(json!([1, -1])), "prompt[1]", code::INVALID_VALUE);
    assert_rejects(
        with(json!([5_000_000_000u64])),
        "prompt[0]",
        code::INVALID_VALUE,
    );
    assert_rejects(with(json!([[1, 2.5]])), "prompt[0][1]", code::INVALID_TYPE);
    assert_rejects(with(json!(5)), "prompt", code::INVALID_TYPE);
    assert_rejects(with(json!({"text": "x"})), "prompt", code::INVALID_TYPE);
    assert_rejects(
        completion(&json!({"model": "m"})),
        "prompt",
        code::MISSING_REQUIRED_PARAMETER,
    );
    let limits = Limits {
        vocab_size: Some(49152),
        ..Limits::default()
    };
    let with_vocab = |prompt: serde_json::Value| {
        completion_with(&json!({"model": "m", "prompt": prompt}), &limits)
    };
    assert!(with_vocab(json!([0, 49151])).is_ok());
    assert_rejects(
        with_vocab(json!([1, 49152])),
        "prompt[1]",
        code::INVALID_VALUE,
    );
    assert_rejects(
        with_vocab(json!([[1], [2, 60000]])),
        "prompt[1][1]",
        code::INVALID_VALUE,
    );
}

#[test]
fn completion_field_rules() {
    assert_rejects(
        completion(&completion_body(json!({"suffix": "end"}))),
        "suffix",
        code::UNSUPPORTED_PARAMETER,
    );
    assert!(completion(&completion_body(json!({"suffix": null}))).is_ok());
    assert_rejects(
        completion(&completion_body(json!({"best_of": 2}))),
        "best_of",
        code::INVALID_VALUE,
    );
    assert_rejects(
        completion(&completion_body(json!({"best_of": 1, "n": 2}))),
        "best_of",
        code::INVALID_VALUE,
    );
    assert_eq!(
        completion(&completion_body(json!({"best_of": 3, "n": 3})))
            .unwrap()
            .params
            .n,
        3
    );
    assert!(completion(&completion_body(json!({"best_of": 1}))).is_ok());
    for bad in [-1, 6] {
        assert_rejects(
            completion(&completion_body(json!({"logprobs": bad}))),
            "logprobs",
            code::INVALID_VALUE,
        );
    }
    assert_eq!(
        completion(&completion_body(json!({"logprobs": 0})))
            .unwrap()
            .logprobs,
        Some(0)
    );
    assert_eq!(
        completion(&completion_body(json!({"logprobs": 5})))
            .unwrap()
            .logprobs,
        Some(5)
    );
    assert_rejects(
        completion(&completion_body(json!({"logprobs": true}))),
        "logprobs",
        code::INVALID_TYPE,
    );
    assert!(
        completion(&completion_body(json!({"echo": true})))
            .unwrap()
            .echo
    );
    assert_rejects(
        completion(&completion_body(json!({"max_tokens": 0}))),
        "max_tokens",
        code::INVALID_VALUE,
    );
    assert_eq!(
        completion(&completion_body(json!({"max_tokens": 200})))
            .unwrap()
            .params
            .max_tokens,
        Some(200)
    );
    assert_rejects(
        completion(&completion_body(json!({"n": 17}))),
        "n",
        code::INVALID_VALUE,
    );
    assert_rejects(
        completion(&completion_body(json!({"temperature": 3}))),
        "temperature",
        code::INVALID_VALUE,
    );
    assert_rejects(
        completion(&completion_body(
            json!({"stream_options": {"include_usage": true}}),
        )),
        "stream_options",
        code::INVALID_VALUE,
    );
    let v = completion(&completion_body(json!({
        "stream": true, "stream_options": {"include_usage": true}, "stop": ["\n\n"],
        "top_k": 20, "min_p": 0.1, "repetition_penalty": 1.1, "seed": 7,
        "logit_bias": {"50256": -100}, "user": "u", "presence_penalty": 0.5,
        "frequency_penalty": 0.5, "top_p": 0.9
    })))
    .unwrap();
    assert!(v.stream && v.include_usage);
    assert_eq!(v.params.stop, vec!["\n\n"]);
    assert_eq!(v.params.top_k, Some(20));
    assert_eq!(v.params.logit_bias, vec![(50256, -100.0)]);
    assert_eq!(v.params.seed, Some(7));
    for field in ["max_completion_tokens", "messages", "tools", "top_logprobs"] {
        assert_rejects(
            completion(&completion_body(json!({field: null}))),
            field,
            code::UNKNOWN_PARAMETER,
        );
    }
}
