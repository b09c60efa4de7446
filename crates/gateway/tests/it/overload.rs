//! What the gateway does when things go wrong underneath it: a model whose engine fails (real
//! broken weights: a NaN in the tiny model's final norm) fails its own requests with a typed
//! 500 while another model keeps serving, and a client that stops reading a stream cannot make
//! the server hold its whole answer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kiln_gateway::{Backend, Gateway, GatewayConfig, ServedModel, ToolSyntax};
use kiln_runtime::{LoadOptions, Model};
use kiln_scheduler::{Engine, EngineConfig};
use kiln_tokenizer::Tokenizer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http::{call, error, serve_on, testdata};

/// A copy of the tiny Llama whose `model.norm.weight` is all NaN: every logit it makes is NaN.
fn poisoned_tiny_llama(dir: &Path) {
    let src = testdata().join("tiny-llama");
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let norm = &header["model.norm.weight"];
    assert_eq!(norm["dtype"], "F32");
    let start = 8 + header_len + norm["data_offsets"][0].as_u64().unwrap() as usize;
    let end = 8 + header_len + norm["data_offsets"][1].as_u64().unwrap() as usize;
    for value in bytes[start..end].chunks_exact_mut(4) {
        value.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(&path, bytes).unwrap();
}

struct Two {
    addr: std::net::SocketAddr,
    _engines: Vec<Engine>,
    registry: prometheus::Registry,
}

/// The gateway serving `models` (name, model folder), all ready.
async fn serve(models: &[(&str, &Path)], config: GatewayConfig) -> Two {
    let tokenizer = Arc::new(Tokenizer::from_hf_dir(testdata().join("smollm2")).unwrap());
    let registry = prometheus::Registry::new();
    let config = GatewayConfig {
        models: models.iter().map(|(n, _)| ServedModel::named(*n)).collect(),
        ..config
    };
    let gateway = Gateway::new(config, registry.clone()).unwrap();
    let mut engines = Vec::new();
    for (i, (name, dir)) in models.iter().enumerate() {
        let model = Model::load(dir, &LoadOptions::default()).unwrap();
        let config = EngineConfig {
            model_name: (*name).into(),
            ..EngineConfig::default()
        };
        let engine = Engine::start(model, tokenizer.clone(), config, &registry).unwrap();
        gateway.set_backend(
            i,
            Backend {
                engine: engine.handle(),
                tokenizer: tokenizer.clone(),
                vision: None,
                tool_syntax: ToolSyntax::detect(tokenizer.chat_template()),
            },
        );
        engines.push(engine);
    }
    // Accepted sockets inherit the listener's send buffer: a fixed small one (no autotuning
    // to megabytes) makes what the kernel holds for a stalled reader small and predictable.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(16 << 10).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = serve_on(&gateway, socket.listen(64).unwrap());
    Two {
        addr,
        _engines: engines,
        registry,
    }
}

/// The engine sets its gauges after each step, just after it answered: wait for that.
async fn settles_to_zero(registry: &prometheus::Registry, model: &str) {
    for _ in 0..100 {
        if gauge(registry, "kiln_num_requests_running", model) == 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("`{model}` still has requests running");
}

fn gauge(registry: &prometheus::Registry, name: &str, model: &str) -> f64 {
    registry
        .gather()
        .iter()
        .find(|f| f.name() == name)
        .unwrap()
        .get_metric()
        .iter()
        .find(|m| m.get_label().iter().any(|l| l.value() == model))
        .unwrap()
        .get_gauge()
        .get_value()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_fails_typed_while_the_other_keeps_serving() {
    let broken = tempfile::tempdir().unwrap();
    poisoned_tiny_llama(broken.path());
    let good = testdata().join("tiny-llama");
    let s = serve(
        &[("good", &good), ("broken", broken.path())],
        GatewayConfig::default(),
    )
    .await;
    let request = |model: &str, stream: bool| {
        json!({"model": model, "prompt": [40, 77, 123, 301], "max_tokens": 8,
               "temperature": 0, "stream": stream})
        .to_string()
    };
    let (status, _, body) = call(
        s.addr,
        "POST",
        "/v1/completions",
        &[],
        request("good", false).as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let text = answer["choices"][0]["text"].clone();

    // Whole and streamed, while the good model answers: each of the broken model's is a typed
    // 500, without Retry-After (a retry would fail the same way), and the good model's answers
    // are what they were. (Token-id prompts: the tiny model's vocabulary is SmolLM2's first
    // 512 ids, too few for a chat template.)
    for _ in 0..3 {
        let broken_requests = [request("broken", false), request("broken", true)];
        let good_request = request("good", false);
        let good_call = call(
            s.addr,
            "POST",
            "/v1/completions",
            &[],
            good_request.as_bytes(),
        );
        let broken_calls = in_order(
            broken_requests
                .iter()
                .map(|body| call(s.addr, "POST", "/v1/completions", &[], body.as_bytes()))
                .collect(),
        );
        let (good_reply, broken_replies) = tokio::join!(good_call, broken_calls);
        for (status, head, body) in broken_replies {
            assert_eq!(status, 500, "{body}");
            let e = error(&body);
            assert_eq!(e["type"], "server_error");
            assert_eq!(e["code"], "model_error");
            assert!(!head.to_ascii_lowercase().contains("retry-after"), "{head}");
        }
        assert_eq!(good_reply.0, 200, "{}", good_reply.2);
        let again: Value = serde_json::from_str(&good_reply.2).unwrap();
        assert_eq!(again["choices"][0]["text"], text);
    }
    // Nothing is left running on either engine, and both are still up.
    settles_to_zero(&s.registry, "broken").await;
    settles_to_zero(&s.registry, "good").await;
    let (status, _, _) = call(s.addr, "GET", "/health", &[], b"").await;
    assert_eq!(status, 200);
}

/// Awaits every future, one after the other.
async fn in_order<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await);
    }
    out
}

/// A streamed answer of over half a megabyte: eight choices of 240 tokens with 5 top logprobs
/// each, end-of-text tokens banned so none stops early.
fn big_stream_request() -> String {
    json!({"model": "tiny", "prompt": [40, 77, 123, 301, 99, 250], "max_tokens": 240, "n": 8,
           "temperature": 0, "logprobs": 5, "logit_bias": {"0": -100, "1": -100, "2": -100},
           "stream": true})
    .to_string()
}

/// Sends `body` as a streaming request on a socket with a small receive buffer, waits `idle`
/// without reading, then reads to the end: the bytes that came.
async fn read_after(addr: std::net::SocketAddr, body: &str, idle: Duration) -> Vec<u8> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    tokio::time::sleep(idle).await;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), s.read_to_end(&mut out))
        .await
        .expect("the server ends the response")
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_after_the_send_timeout() {
    let tiny = testdata().join("tiny-llama");
    let s = serve(
        &[("tiny", &tiny)],
        GatewayConfig {
            send_timeout: Duration::from_secs(1),
            ..GatewayConfig::default()
        },
    )
    .await;
    let body = big_stream_request();
    // A client that reads at once gets the whole answer.
    let whole = read_after(s.addr, &body, Duration::ZERO).await;
    let whole_text = String::from_utf8_lossy(&whole);
    assert!(whole_text.contains("data: [DONE]"), "{whole_text:.300}");
    assert!(whole.len() > 300_000, "{} bytes", whole.len());

    // One that reads nothing for three times the timeout gets only what was buffered when the
    // server gave up on it: the events the channel and the sockets held, never the answer, and
    // no [DONE].
    let cut = read_after(s.addr, &body, Duration::from_secs(3)).await;
    let cut_text = String::from_utf8_lossy(&cut);
    assert!(
        !cut_text.contains("data: [DONE]"),
        "{} of {} bytes",
        cut.len(),
        whole.len()
    );
    assert!(cut_text.starts_with("HTTP/1.1 200"), "{cut_text:.200}");
    assert!(
        cut.len() < whole.len() / 2,
        "{} of {} bytes",
        cut.len(),
        whole.len()
    );
    // Its request is gone from the engine, which serves the next one in full.
    settles_to_zero(&s.registry, "tiny").await;
    let again = read_after(s.addr, &body, Duration::ZERO).await;
    assert!(String::from_utf8_lossy(&again).contains("data: [DONE]"));
}
