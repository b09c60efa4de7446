//! The gateway over real HTTP on the tiny model (SmolLM2's tokenizer, token-id prompts): routes,
//! auth, health before and after loading, SSE framing, limits and error envelopes, and what a
//! browser may do (JSON bodies only, CORS).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiln_gateway::{Backend, Cors, Gateway, GatewayConfig, ServedModel, ToolSyntax};
use kiln_runtime::{LoadOptions, Model};
use kiln_scheduler::{Completion, Engine, EngineConfig, GenerationRequest};
use kiln_tokenizer::Tokenizer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) fn testdata() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("../../testdata")
}

struct Setup {
    addr: std::net::SocketAddr,
    gateway: Arc<Gateway>,
    engine: Engine,
    tokenizer: Arc<Tokenizer>,
}

async fn start(keys: &[&str]) -> Setup {
    start_with(keys, Cors::default()).await
}

async fn start_with(keys: &[&str], cors: Cors) -> Setup {
    let tokenizer = Arc::new(Tokenizer::from_hf_dir(testdata().join("smollm2")).unwrap());
    let model = Model::load(&testdata().join("tiny-llama"), &LoadOptions::default()).unwrap();
    let registry = prometheus::Registry::new();
    let engine =
        Engine::start(model, tokenizer.clone(), EngineConfig::default(), &registry).unwrap();
    let config = GatewayConfig {
        models: vec![ServedModel {
            names: vec!["tiny".into(), "tiny-alias".into()],
        }],
        api_keys: keys.iter().map(|k| k.to_string()).collect(),
        max_body_bytes: 4096,
        cors,
        ..GatewayConfig::default()
    };
    let gateway = Gateway::new(config, registry).unwrap();
    let addr = listen(&gateway).await;
    Setup {
        addr,
        gateway,
        engine,
        tokenizer,
    }
}

/// Serves `gateway` on a free local port until the test ends.
pub(crate) async fn listen(gateway: &Arc<Gateway>) -> std::net::SocketAddr {
    serve_on(
        gateway,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
}

/// Serves `gateway` on `listener` until the test ends.
pub(crate) fn serve_on(
    gateway: &Arc<Gateway>,
    listener: tokio::net::TcpListener,
) -> std::net::SocketAddr {
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        gateway
            .clone()
            .serve(listener, std::future::pending(), Duration::from_secs(1)),
    );
    addr
}

impl Setup {
    fn ready(&self) {
        self.gateway.set_backend(
            0,
            Backend {
                engine: self.engine.handle(),
                tokenizer: self.tokenizer.clone(),
                vision: None,
                tool_syntax: ToolSyntax::detect(self.tokenizer.chat_template()),
            },
        );
    }
}

/// One HTTP/1.1 exchange on a fresh connection: (status, headers, body).
pub(crate) async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

pub(crate) fn error(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap();
    let e = v["error"].clone();
    for key in ["message", "type", "param", "code"] {
        assert!(e.get(key).is_some(), "{key} missing in {body}");
    }
    e
}

const PROMPT: [u32; 6] = [40, 77, 123, 301, 99, 250];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_over_http_equal_the_engine_and_stream_as_sse() {
    let s = start(&[]).await;
    let (status, _, body) = call(s.addr, "GET", "/health", &[], b"").await;
    assert_eq!(status, 503, "{body}");
    let (status, _, body) = call(s.addr, "POST", "/v1/completions", &[], b"{}").await;
    assert_eq!(status, 503);
    assert_eq!(error(&body)["code"], "model_loading");
    s.ready();
    assert_eq!(call(s.addr, "GET", "/health", &[], b"").await.0, 200);

    let handle = s.engine.handle();
    let direct = tokio::task::spawn_blocking(move || {
        let mut stream = handle
            .submit(GenerationRequest::greedy(PROMPT.to_vec(), 10))
            .unwrap();
        Completion::collect(std::iter::from_fn(|| stream.blocking_next()), 1).unwrap()
    })
    .await
    .unwrap();

    let req = json!({"model": "tiny-alias", "prompt": PROMPT, "max_tokens": 10, "temperature": 0});
    let (status, _, body) = call(
        s.addr,
        "POST",
        "/v1/completions",
        &[],
        req.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "tiny-alias");
    assert_eq!(v["choices"][0]["text"], direct.choices[0].text.as_str());
    assert_eq!(
        v["usage"]["completion_tokens"],
        direct.usage.completion_tokens
    );

    // The same through SSE on a deployment-scoped path, with the usage chunk.
    let mut req = req;
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    req["model"] = json!("");
    let (status, head, body) = call(
        s.addr,
        "POST",
        "/v1/ai/dep-1/completions",
        &[],
        req.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(head.contains("text/event-stream"));
    let events: Vec<&str> = body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap())
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, direct.choices[0].text);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 6);
    assert_eq!(last["model"], "tiny");
    let ids: std::collections::HashSet<&str> =
        chunks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_openai_envelopes_with_the_right_status() {
    let s = start(&["k1", "k2"]).await;
    s.ready();
    let key = [("Authorization", "Bearer k2")];
    let body = json!({"prompt": PROMPT, "max_tokens": 2}).to_string();

    let (status, _, b) = call(s.addr, "POST", "/v1/completions", &[], body.as_bytes()).await;
    assert_eq!(status, 401);
    assert_eq!(error(&b)["type"], "authentication_error");
    let wrong = [("Authorization", "Bearer k3")];
    assert_eq!(call(s.addr, "GET", "/v1/models", &wrong, b"").await.0, 401);
    let (status, _, b) = call(s.addr, "GET", "/v1/models", &key, b"").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["data"][0]["id"], "tiny");
    assert_eq!(
        v["data"][0]["context_length"], 256,
        "the tiny model's context"
    );
    assert_eq!(v["data"][0]["input_modalities"], json!(["text"]));
    assert_eq!(v["data"][1]["id"], "tiny-alias");
    assert_eq!(
        call(s.addr, "GET", "/v1/models/tiny", &key, b"").await.0,
        200
    );
    let (status, _, b) = call(s.addr, "GET", "/v1/models/nope", &key, b"").await;
    assert_eq!(status, 404);
    assert_eq!(error(&b)["code"], "model_not_found");
    // Public by default.
    let (status, _, metrics) = call(s.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("kiln_http_requests_total{"));
    assert!(metrics.contains("kiln_num_requests_running"));

    let (status, _, b) = call(s.addr, "POST", "/v1/completions", &key, b"{\"prompt\": [1,").await;
    assert_eq!(status, 400);
    assert_eq!(error(&b)["code"], "invalid_json");
    let bad = json!({"prompt": PROMPT, "top_p": 7}).to_string();
    let (status, _, b) = call(s.addr, "POST", "/v1/completions", &key, bad.as_bytes()).await;
    assert_eq!(status, 400);
    assert_eq!(error(&b)["param"], "top_p");
    let long = json!({"prompt": PROMPT, "max_tokens": 1000}).to_string();
    let (status, _, b) = call(s.addr, "POST", "/v1/completions", &key, long.as_bytes()).await;
    assert_eq!(status, 400);
    assert_eq!(error(&b)["code"], "context_length_exceeded");
    let unknown_model = json!({"model": "gpt-4", "prompt": PROMPT}).to_string();
    let (status, _, b) = call(
        s.addr,
        "POST",
        "/v1/completions",
        &key,
        unknown_model.as_bytes(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(error(&b)["code"], "model_not_found");
    let (status, head, b) = call(s.addr, "DELETE", "/v1/completions", &key, b"").await;
    assert_eq!(status, 405);
    assert!(head.to_ascii_lowercase().contains("allow: post"));
    error(&b);
    let (status, _, b) = call(s.addr, "GET", "/v1/embeddings", &key, b"").await;
    assert_eq!(status, 404);
    error(&b);
    let (status, _, b) = call(s.addr, "POST", "/v1/completions", &key, &[b'x'; 5000]).await;
    assert_eq!(status, 413);
    error(&b);
    let (_, head, _) = call(
        s.addr,
        "GET",
        "/health",
        &[("x-request-id", "abc-123")],
        b"",
    )
    .await;
    assert!(head.contains("x-request-id: abc-123"));
    let (status, _, spec) = call(s.addr, "GET", "/openapi.json", &[], b"").await;
    assert_eq!(status, 200);
    let spec: Value = serde_json::from_str(&spec).unwrap();
    assert!(spec["paths"]["/v1/ai/{deployment}/chat/completions"].is_object());
}

/// The SSE events of a streamed answer, `[DONE]` left out (and checked to be last).
pub(crate) fn sse_chunks(body: &str) -> Vec<Value> {
    let events: Vec<&str> = body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap())
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{body}");
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

pub(crate) async fn post(addr: std::net::SocketAddr, path: &str, body: &Value) -> String {
    let (status, _, body) = call(addr, "POST", path, &[], body.to_string().as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_completions_are_their_streams_folded() {
    let s = start(&[]).await;
    s.ready();
    // Two prompts, two choices each, with logprobs: the one fold against the SSE path. (Chat
    // cannot run here: its template's tokens lie outside the tiny model's vocabulary.)
    let req = json!({
        "prompt": [PROMPT, [7, 8, 9]],
        "n": 2,
        "max_tokens": 6,
        "temperature": 0,
        "logprobs": 2,
    });
    let whole: Value = serde_json::from_str(&post(s.addr, "/v1/completions", &req).await).unwrap();
    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    let chunks = sse_chunks(&post(s.addr, "/v1/completions", &streamed).await);
    let choices = whole["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i);
        let mine: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["choices"][0])
            .filter(|c| c["index"] == i)
            .collect();
        let text: String = mine.iter().map(|c| c["text"].as_str().unwrap()).collect();
        assert_eq!(choice["text"], text.as_str());
        let field = |name: &str| -> Vec<Value> {
            mine.iter()
                .filter(|c| !c["logprobs"].is_null())
                .flat_map(|c| c["logprobs"][name].as_array().unwrap().clone())
                .collect()
        };
        assert_eq!(choice["logprobs"]["tokens"], json!(field("tokens")));
        assert_eq!(
            choice["logprobs"]["text_offset"],
            json!(field("text_offset"))
        );
        assert_eq!(
            choice["logprobs"]["tokens"].as_array().unwrap().len(),
            choice["logprobs"]["token_logprobs"]
                .as_array()
                .unwrap()
                .len()
        );
        assert_eq!(
            choice["finish_reason"],
            mine.last().unwrap()["finish_reason"]
        );
    }
    assert_eq!(whole["usage"]["prompt_tokens"], PROMPT.len() + 3, "{whole}");
    // Something was generated, so the comparisons above compared something.
    assert!(
        choices
            .iter()
            .all(|c| !c["logprobs"]["tokens"].as_array().unwrap().is_empty()),
        "{whole}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_may_only_send_json_and_cors_is_opt_in() {
    let s = start(&["k1"]).await;
    s.ready();
    let body = json!({"prompt": PROMPT, "max_tokens": 2}).to_string();
    // A "simple" cross-site request (no preflight) is refused before any work.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let headers = [("Authorization", "Bearer k1"), ("Content-Type", ct)];
        let (status, _, b) =
            call(s.addr, "POST", "/v1/completions", &headers, body.as_bytes()).await;
        assert_eq!(status, 415, "{ct}");
        assert_eq!(error(&b)["code"], "unsupported_media_type");
    }
    // JSON, with or without a charset, and the Bearer scheme in any case.
    for (auth, ct) in [
        ("BEARER k1", "application/json"),
        ("bearer k1", "application/json; charset=utf-8"),
    ] {
        let headers = [("Authorization", auth), ("Content-Type", ct)];
        let (status, head, _) =
            call(s.addr, "POST", "/v1/completions", &headers, body.as_bytes()).await;
        assert_eq!(status, 200, "{auth} {ct}");
        assert!(
            !head
                .to_ascii_lowercase()
                .contains("access-control-allow-origin")
        );
    }
    // CORS off: a preflight is just a method this route does not take.
    let preflight = [
        ("Origin", "https://app.example"),
        ("Access-Control-Request-Method", "POST"),
    ];
    assert_eq!(
        call(s.addr, "OPTIONS", "/v1/completions", &preflight, b"")
            .await
            .0,
        405
    );

    let s = start_with(
        &["k1"],
        Cors {
            allowed_origins: vec!["https://app.example".into()],
        },
    )
    .await;
    s.ready();
    let (status, head, _) = call(s.addr, "OPTIONS", "/v1/chat/completions", &preflight, b"").await;
    assert_eq!(status, 204);
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-methods: post"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-headers: authorization, content-type"),
        "{head}"
    );
    let other = [
        ("Origin", "https://evil.example"),
        ("Access-Control-Request-Method", "POST"),
    ];
    let (status, _, b) = call(s.addr, "OPTIONS", "/v1/chat/completions", &other, b"").await;
    assert_eq!(status, 403);
    assert_eq!(error(&b)["code"], "origin_not_allowed");
    // The real request from the allowed origin is readable by it; another origin's is not.
    let ok = [
        ("Authorization", "Bearer k1"),
        ("Content-Type", "application/json"),
        ("Origin", "https://app.example"),
    ];
    let (status, head, _) = call(s.addr, "POST", "/v1/completions", &ok, body.as_bytes()).await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://app.example")
    );
    let evil = [
        ("Authorization", "Bearer k1"),
        ("Content-Type", "application/json"),
        ("Origin", "https://evil.example"),
    ];
    let (_, head, _) = call(s.addr, "POST", "/v1/completions", &evil, body.as_bytes()).await;
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{head}"
    );
}

/// Two engines behind one gateway: `model` and deployments route, `/health` waits for both and
/// says which is ready, `/v1/models` lists both, and each engine's metrics carry its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_route_by_name_and_deployment() {
    let tokenizer = Arc::new(Tokenizer::from_hf_dir(testdata().join("smollm2")).unwrap());
    let registry = prometheus::Registry::new();
    let engine = |name: &str| {
        let model = Model::load(&testdata().join("tiny-llama"), &LoadOptions::default()).unwrap();
        let config = EngineConfig {
            model_name: name.into(),
            ..EngineConfig::default()
        };
        Engine::start(model, tokenizer.clone(), config, &registry).unwrap()
    };
    let (first, second) = (engine("first"), engine("second"));
    let config = GatewayConfig {
        models: vec![
            ServedModel {
                names: vec!["first".into(), "first-alias".into()],
            },
            ServedModel::named("second"),
        ],
        deployments: [("dep-second".to_string(), "second".to_string())].into(),
        ..GatewayConfig::default()
    };
    let gateway = Gateway::new(config.clone(), registry.clone()).unwrap();
    let addr = listen(&gateway).await;
    let backend = |engine: &Engine| Backend {
        engine: engine.handle(),
        tokenizer: tokenizer.clone(),
        vision: None,
        tool_syntax: ToolSyntax::detect(tokenizer.chat_template()),
    };
    let complete = |path: &'static str, model: Value| async move {
        let body = json!({"model": model, "prompt": PROMPT, "max_tokens": 3, "temperature": 0});
        let (status, _, b) = call(addr, "POST", path, &[], body.to_string().as_bytes()).await;
        (status, serde_json::from_str::<Value>(&b).unwrap())
    };

    gateway.set_backend(0, backend(&first));
    let (status, _, b) = call(addr, "GET", "/health", &[], b"").await;
    assert_eq!(status, 503);
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap(),
        json!({"status": "loading", "models": [
            {"id": "first", "status": "ok"}, {"id": "second", "status": "loading"}
        ]})
    );
    // The ready model serves while the other loads; the other says it is loading.
    assert_eq!(complete("/v1/completions", json!("first")).await.0, 200);
    let (status, v) = complete("/v1/completions", json!("second")).await;
    assert_eq!(status, 503);
    assert!(v["error"]["message"].as_str().unwrap().contains("`second`"));
    gateway.set_backend(1, backend(&second));
    assert_eq!(call(addr, "GET", "/health", &[], b"").await.0, 200);

    let (_, _, b) = call(addr, "GET", "/v1/models", &[], b"").await;
    let ids: Vec<Value> = serde_json::from_str::<Value>(&b).unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![json!("first"), json!("first-alias"), json!("second")]
    );

    let generated = |model: &str| -> f64 {
        registry
            .gather()
            .iter()
            .find(|f| f.name() == "kiln_generation_tokens_total")
            .unwrap()
            .get_metric()
            .iter()
            .find(|m| m.get_label().iter().any(|l| l.value() == model))
            .unwrap()
            .get_counter()
            .get_value()
    };
    let before = (generated("first"), generated("second"));
    // By name; empty → the default (the first).
    for (model, engine) in [("second", 1), ("first-alias", 0), ("", 0)] {
        let (status, v) = complete("/v1/completions", json!(model)).await;
        assert_eq!(status, 200, "{model}: {v}");
        let expected = if model.is_empty() { "first" } else { model };
        assert_eq!(v["model"], expected);
        let now = (generated("first"), generated("second"));
        let moved = if engine == 0 {
            now.0 > before.0
        } else {
            now.1 > before.1
        };
        assert!(
            moved,
            "{model} ran on engine {engine}: {before:?} → {now:?}"
        );
    }
    // A mapped deployment serves its model: empty `model` goes there, another model is refused,
    // its model list is that model's; an unmapped deployment is a 404.
    let (status, v) = complete("/v1/ai/dep-second/completions", json!("")).await;
    assert_eq!((status, v["model"].clone()), (200, json!("second")));
    let (status, v) = complete("/v1/ai/dep-second/completions", json!("first")).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found");
    let (_, _, b) = call(addr, "GET", "/v1/ai/dep-second/models", &[], b"").await;
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["data"][0]["id"],
        "second"
    );
    let (status, v) = complete("/v1/ai/other/completions", json!("first")).await;
    assert_eq!(status, 404, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("`other`"));
    let (status, _, _) = call(addr, "GET", "/v1/ai/other/models", &[], b"").await;
    assert_eq!(status, 404);
    let (status, v) = complete("/v1/completions", json!("third")).await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (404, json!("model_not_found"))
    );

    // /metrics shows both engines' series, each with its label.
    let (_, _, metrics) = call(addr, "GET", "/metrics", &[], b"").await;
    assert!(
        metrics.contains("kiln_num_requests_running{model=\"first\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("kiln_num_requests_running{model=\"second\"}"));

    // Bad configurations are refused up front.
    let mut dup = config.clone();
    dup.models[1].names.push("first-alias".into());
    assert!(Gateway::new(dup, prometheus::Registry::new()).is_err());
    let mut dangling = config;
    dangling.deployments.insert("dep-x".into(), "nobody".into());
    assert!(Gateway::new(dangling, prometheus::Registry::new()).is_err());
}

/// Every response says `nosniff`: none is to be read as anything but its declared type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_is_nosniff() {
    let s = start(&["k"]).await;
    let (status, head, _) = call(s.addr, "GET", "/v1/models", &[], b"").await;
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("x-content-type-options: nosniff")
    );
    let (status, head, _) = call(s.addr, "GET", "/health", &[], b"").await;
    assert_eq!(status, 503);
    assert!(
        head.to_ascii_lowercase()
            .contains("x-content-type-options: nosniff")
    );
}

/// The playground is public (it asks for the key itself), served before any model is ready,
/// under its policy; a file it does not have is the API's 404.
#[tokio::test]
async fn the_playground_is_served_with_its_policy() {
    let s = start(&["k"]).await;
    for path in ["/", "/playground", "/playground/"] {
        let (status, head, body) = call(s.addr, "GET", path, &[], b"").await;
        assert_eq!(status, 200, "{path}");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("content-type: text/html; charset=utf-8"),
            "{head}"
        );
        assert!(
            head.contains("content-security-policy: default-src 'self'; script-src 'self';"),
            "{head}"
        );
        assert!(head.contains("frame-ancestors 'none'"), "{head}");
        assert!(head.contains("x-frame-options: deny"), "{head}");
        assert!(head.contains("referrer-policy: no-referrer"), "{head}");
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        assert!(body.contains("<script type=\"module\" src=\"/playground/app.js\">"));
    }
    let (status, head, body) = call(s.addr, "GET", "/playground/app.js", &[], b"").await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/javascript")
    );
    assert!(body.contains("import { renderMarkdown }"));
    let (status, _, body) = call(s.addr, "HEAD", "/playground/style.css", &[], b"").await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, head, _) = call(s.addr, "POST", "/", &[], b"").await;
    assert_eq!(status, 405);
    assert!(head.to_ascii_lowercase().contains("allow: get, head"));
    let (status, _, body) = call(s.addr, "GET", "/playground/missing.js", &[], b"").await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        "not_found"
    );
    // The API behind it still wants the key, and the page is told so before it calls.
    let (status, _, _) = call(s.addr, "GET", "/v1/models", &[], b"").await;
    assert_eq!(status, 401);
    let config = |addr| async move {
        let (status, _, body) = call(addr, "GET", "/playground/config.json", &[], b"").await;
        assert_eq!(status, 200);
        serde_json::from_str::<Value>(&body).unwrap()
    };
    assert_eq!(config(s.addr).await, json!({"api_key_required": true}));
    assert_eq!(
        config(start(&[]).await.addr).await,
        json!({"api_key_required": false})
    );
}
