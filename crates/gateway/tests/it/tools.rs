//! Tool calling over real HTTP on a tiny random Qwen2 chat model with Qwen 2.5's tools template
//! (`testdata/tiny-qwen2-tools`).
//! `required` and named calls are valid against their schemas even from random weights (the
//! grammar allows nothing else), streamed deltas fold into the whole answer, earlier calls and
//! their results go back through the template, and what cannot work is a 400.

use std::sync::Arc;

use kiln_gateway::{Backend, Gateway, GatewayConfig, ServedModel, ToolSyntax};
use kiln_runtime::{LoadOptions, Model};
use kiln_scheduler::{Engine, EngineConfig};
use kiln_tokenizer::Tokenizer;
use serde_json::{Value, json};

use crate::http::{call, error, listen, post, sse_chunks, testdata};

struct Server {
    addr: std::net::SocketAddr,
    tokenizer: Arc<Tokenizer>,
    _engine: Engine,
    _gateway: Arc<Gateway>,
}

/// A ChatML template that knows nothing of tools (SmolLM2's kind): Kiln's generic prompt.
const PLAIN_CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}\
    <|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// The tiny model behind the gateway; `qwen_template`: its own template (Qwen 2.5's, which
/// renders tools), else [`PLAIN_CHATML`].
async fn serve(qwen_template: bool) -> Server {
    serve_as(qwen_template, None).await
}

/// [`serve`], the tool-call syntax forced to `syntax` (as `--tool-call-format` does).
async fn serve_as(qwen_template: bool, syntax: Option<ToolSyntax>) -> Server {
    let dir = testdata().join("tiny-qwen2-tools");
    let mut tokenizer = Tokenizer::from_hf_dir(&dir).unwrap();
    if !qwen_template {
        tokenizer = tokenizer
            .with_chat_template("chatml", PLAIN_CHATML)
            .unwrap();
    }
    let tokenizer = Arc::new(tokenizer);
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let registry = prometheus::Registry::new();
    let engine =
        Engine::start(model, tokenizer.clone(), EngineConfig::default(), &registry).unwrap();
    let config = GatewayConfig {
        models: vec![ServedModel::named("tiny")],
        ..GatewayConfig::default()
    };
    let gateway = Gateway::new(config, registry).unwrap();
    gateway.set_backend(
        0,
        Backend {
            engine: engine.handle(),
            tokenizer: tokenizer.clone(),
            vision: None,
            tool_syntax: syntax.unwrap_or_else(|| ToolSyntax::detect(tokenizer.chat_template())),
        },
    );
    let addr = listen(&gateway).await;
    Server {
        addr,
        tokenizer,
        _engine: engine,
        _gateway: gateway,
    }
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather",
            "description": "The weather in a city for the next days.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"enum": ["Paris", "Oslo", "Lima"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7}
                },
                "required": ["city", "days"],
                "additionalProperties": false
            }
        }},
        {"type": "function", "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {
                    "a": {"type": "integer", "minimum": 0, "maximum": 99},
                    "b": {"type": "integer", "minimum": 0, "maximum": 99}
                },
                "required": ["a", "b"],
                "additionalProperties": false
            }
        }}
    ])
}

/// Whether `arguments` (a JSON text) is valid for the tool `name` of [`tools`].
fn valid_arguments(name: &str, arguments: &str) {
    let args: Value = serde_json::from_str(arguments).unwrap();
    let args = args.as_object().unwrap();
    match name {
        "get_weather" => {
            assert_eq!(args.len(), 2, "{arguments}");
            assert!(["Paris", "Oslo", "Lima"].contains(&args["city"].as_str().unwrap()));
            assert!((1..=7).contains(&args["days"].as_i64().unwrap()));
        }
        "add" => {
            assert_eq!(args.len(), 2, "{arguments}");
            for key in ["a", "b"] {
                assert!(
                    (0..=99).contains(&args[key].as_i64().unwrap()),
                    "{arguments}"
                );
            }
        }
        other => panic!("a call to {other}"),
    }
}

fn request(choice: Value, extra: Value) -> Value {
    let mut body = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": tools(),
        "tool_choice": choice,
        "max_tokens": 120,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_and_named_calls_are_valid_even_from_random_weights() {
    for qwen in [true, false] {
        let s = serve(qwen).await;
        let named = json!({"type": "function", "function": {"name": "add"}});
        for (choice, only) in [(json!("required"), None), (named, Some("add"))] {
            for seed in 0..3 {
                let body = request(
                    choice.clone(),
                    json!({"temperature": 1, "seed": seed, "parallel_tool_calls": false}),
                );
                let v: Value =
                    serde_json::from_str(&post(s.addr, "/v1/chat/completions", &body).await)
                        .unwrap();
                let c = &v["choices"][0];
                assert_eq!(c["finish_reason"], "tool_calls", "{v}");
                assert!(c["message"]["content"].is_null(), "{v}");
                let calls = c["message"]["tool_calls"].as_array().unwrap();
                assert_eq!(calls.len(), 1, "{v}");
                let call = &calls[0];
                assert!(call["id"].as_str().unwrap().starts_with("call_"));
                assert_eq!(call["type"], "function");
                let name = call["function"]["name"].as_str().unwrap();
                if let Some(only) = only {
                    assert_eq!(name, only);
                }
                valid_arguments(name, call["function"]["arguments"].as_str().unwrap());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_syntax_round_trips_through_its_grammar_and_parser() {
    // Each syntax's grammar makes the model write calls its parser reads back: Mistral's
    // through its control token `[TOOL_CALLS]` (kept in the text for the parser), streamed
    // and whole alike.
    for syntax in ToolSyntax::ALL {
        let s = serve_as(true, Some(syntax)).await;
        let body = request(json!("required"), json!({"temperature": 1, "seed": 3}));
        let v: Value =
            serde_json::from_str(&post(s.addr, "/v1/chat/completions", &body).await).unwrap();
        let c = &v["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls", "{syntax}: {v}");
        assert!(c["message"]["content"].is_null(), "{syntax}: {v}");
        let calls = c["message"]["tool_calls"].as_array().unwrap();
        for call in calls {
            let f = &call["function"];
            valid_arguments(
                f["name"].as_str().unwrap(),
                f["arguments"].as_str().unwrap(),
            );
        }
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let chunks = sse_chunks(&post(s.addr, "/v1/chat/completions", &streamed).await);
        let mut arguments = vec![String::new(); calls.len()];
        for chunk in &chunks {
            for d in chunk["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let i = d["index"].as_u64().unwrap() as usize;
                arguments[i].push_str(d["function"]["arguments"].as_str().unwrap());
            }
            if let Some(content) = chunk["choices"][0]["delta"].get("content") {
                assert_eq!(content, "", "{syntax}: markup leaked into {chunk}");
            }
        }
        let whole: Vec<&str> = calls
            .iter()
            .map(|c| c["function"]["arguments"].as_str().unwrap())
            .collect();
        assert_eq!(arguments, whole, "{syntax}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_with_a_response_format_is_calls_or_that_json() {
    // `auto` alone leaves the model free; with a JSON format, its answer is held to either
    // calls or that JSON: each answer is one of the two, whole, and these seeds give both.
    let s = serve(true).await;
    let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"], "additionalProperties": false});
    let mut kinds = std::collections::BTreeSet::new();
    for seed in 0..6 {
        let body = request(
            json!("auto"),
            json!({"temperature": 1, "seed": seed, "max_tokens": 200, "parallel_tool_calls": false,
                   "response_format": {"type": "json_schema",
                                       "json_schema": {"name": "r", "schema": schema}}}),
        );
        let v: Value =
            serde_json::from_str(&post(s.addr, "/v1/chat/completions", &body).await).unwrap();
        let c = &v["choices"][0];
        match c["finish_reason"].as_str().unwrap() {
            "tool_calls" => {
                let call = &c["message"]["tool_calls"][0]["function"];
                valid_arguments(
                    call["name"].as_str().unwrap(),
                    call["arguments"].as_str().unwrap(),
                );
                kinds.insert("calls");
            }
            "stop" => {
                let answer: Value =
                    serde_json::from_str(c["message"]["content"].as_str().unwrap()).unwrap();
                assert!(answer["ok"].is_boolean(), "{v}");
                assert_eq!(answer.as_object().unwrap().len(), 1, "{v}");
                kinds.insert("json");
            }
            other => panic!("{other}: {v}"),
        }
    }
    assert_eq!(
        kinds.len(),
        2,
        "both kinds of answer over the seeds: {kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_calls_fold_into_the_whole_answer() {
    let s = serve(true).await;
    // Two choices, several calls allowed: every call's deltas in order, per choice.
    let extra = json!({"temperature": 1, "seed": 7, "n": 2, "max_tokens": 200});
    let whole: Value = serde_json::from_str(
        &post(
            s.addr,
            "/v1/chat/completions",
            &request(json!("required"), extra.clone()),
        )
        .await,
    )
    .unwrap();
    let mut streamed = request(json!("required"), extra);
    streamed["stream"] = json!(true);
    let chunks = sse_chunks(&post(s.addr, "/v1/chat/completions", &streamed).await);
    for (i, choice) in whole["choices"].as_array().unwrap().iter().enumerate() {
        let mut calls: Vec<(String, String)> = Vec::new();
        let mut finish = Value::Null;
        for chunk in &chunks {
            let Some(c) = chunk["choices"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["index"] == i)
            else {
                continue;
            };
            let delta = &c["delta"];
            // Nothing of the markup is content.
            if let Some(content) = delta.get("content") {
                assert_eq!(content, "", "{chunk}");
            }
            for d in delta["tool_calls"].as_array().into_iter().flatten() {
                let index = d["index"].as_u64().unwrap() as usize;
                if index == calls.len() {
                    // A call's first delta: id, type and name, empty arguments.
                    assert!(d["id"].as_str().unwrap().starts_with("call_"), "{d}");
                    assert_eq!(d["type"], "function");
                    assert_eq!(d["function"]["arguments"], "");
                    calls.push((
                        d["function"]["name"].as_str().unwrap().into(),
                        String::new(),
                    ));
                } else {
                    assert_eq!(index + 1, calls.len(), "{d}");
                    assert!(d.get("id").is_none() && d.get("type").is_none(), "{d}");
                    assert!(d["function"].get("name").is_none(), "{d}");
                    calls[index]
                        .1
                        .push_str(d["function"]["arguments"].as_str().unwrap());
                }
            }
            if !c["finish_reason"].is_null() {
                finish = c["finish_reason"].clone();
            }
        }
        let expected: Vec<(String, String)> = choice["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let f = &c["function"];
                (
                    f["name"].as_str().unwrap().into(),
                    f["arguments"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(calls, expected, "choice {i}");
        assert_eq!(finish, choice["finish_reason"]);
        // Complete calls are valid; one cut by max_tokens is reported as `length`.
        let complete = if finish == "length" {
            calls.len() - 1
        } else {
            calls.len()
        };
        for (name, arguments) in &calls[..complete] {
            valid_arguments(name, arguments);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_results_go_back_through_the_template() {
    let s = serve(true).await;
    let arguments = "{\"city\": \"Paris\", \"days\": 2}";
    let body = json!({
        "model": "tiny",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ],
        "tools": [tools()[0]],
        "max_tokens": 1,
        "temperature": 0
    });
    let v: Value =
        serde_json::from_str(&post(s.addr, "/v1/chat/completions", &body).await).unwrap();
    let tool = serde_json::to_string(&tools()[0]).unwrap();
    // What transformers renders for the same conversation (tojson as json.dumps).
    let tool = tool.replace("\":", "\": ").replace(",\"", ", \"");
    let expected = format!(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful \
         assistant.\n\n# Tools\n\nYou may call one or more functions to assist with the user \
         query.\n\nYou are provided with function signatures within <tools></tools> XML \
         tags:\n<tools>\n{tool}\n</tools>\n\nFor each function call, return a json object \
         with function name and arguments within <tool_call></tool_call> XML \
         tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": \
         <args-json-object>}}\n</tool_call><|im_end|>\n<|im_start|>user\nWeather in \
         Paris?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{{\"name\": \"get_weather\", \
         \"arguments\": {arguments}}}\n</tool_call><|im_end|>\n<|im_start|>user\n\
         <tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = s.tokenizer.encode(&expected, true, false).unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], ids.len(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_call_is_spelled_as_the_template_teaches() {
    // The model's own tokens (their logprobs) spell exactly the Hermes call the response
    // reports: markup and all, nothing added, nothing lost.
    let s = serve(true).await;
    let body = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "add 1 and 2"}],
        "tools": tools(),
        "tool_choice": {"type": "function", "function": {"name": "add"}},
        "max_tokens": 60,
        "temperature": 0,
        "logprobs": true
    });
    let v: Value =
        serde_json::from_str(&post(s.addr, "/v1/chat/completions", &body).await).unwrap();
    let spelled: String = v["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    let call = &v["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "add");
    assert_eq!(
        spelled,
        format!(
            "<tool_call>\n{{\"name\": \"add\", \"arguments\": {}}}\n</tool_call>",
            call["arguments"].as_str().unwrap()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_work_is_a_400_naming_it() {
    let s = serve(true).await;
    let bad = |body: Value| async move {
        let (status, _, b) = call(
            s.addr,
            "POST",
            "/v1/chat/completions",
            &[],
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(status, 400, "{b}");
        error(&b)
    };
    let named = |name: &str| json!({"type": "function", "function": {"name": name}});
    let e = bad(request(named("rm"), json!({}))).await;
    assert_eq!(e["param"], "tool_choice.function.name");
    let mut unenforceable = tools();
    unenforceable[1]["function"]["parameters"]["properties"]["a"] =
        json!({"type": "array", "uniqueItems": true});
    let mut body = request(json!("required"), json!({}));
    body["tools"] = unenforceable.clone();
    let e = bad(body).await;
    assert_eq!(e["param"], "tools[1].function.parameters", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("uniqueItems"),
        "{e}"
    );
    // Even where `auto` leaves the model free, the schemas must be enforceable.
    let mut body = request(json!("auto"), json!({}));
    body["tools"] = unenforceable;
    assert_eq!(bad(body).await["param"], "tools[1].function.parameters");
    let e = bad(json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}))
        .await;
    assert_eq!(e["param"], "tool_choice");
    let e = bad(json!({"messages": [{"role": "user", "content": "x"},
        {"role": "tool", "tool_call_id": "call_9", "content": "r"}]}))
    .await;
    assert_eq!(e["param"], "messages[1].tool_call_id");
    let e = bad(json!({"messages": [{"role": "function", "name": "f", "content": "x"}]})).await;
    assert_eq!(e["param"], "messages[0].role");
}
