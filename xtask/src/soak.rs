//! `cargo xtask soak`: the real `kiln serve` under a mixed closed-loop load for minutes — every
//! kind of request the API takes, clients that hang up mid-stream, invalid requests — with the
//! process's memory, fds, threads and engine gauges sampled every second, a greedy canary whose
//! answer must never change, and a burst of huge bad requests whose memory must come back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};

use crate::loadgen::{SseLine, XorShift as Rng, connect, take_sse_lines};
use crate::report;
use crate::server::{Server, free_port, http_get, kiln_binary};

const DOC_BEGIN: &str = "<!-- soak:begin -->";
const DOC_END: &str = "<!-- soak:end -->";
/// Served names of the two models: the default text model and the tiny random vision model.
const TEXT: &str = "smollm2";
const VISION: &str = "vlm";
/// RSS after warm-up may grow by this share before the run fails.
const RSS_GROWTH: f64 = 0.05;
/// RSS after the burst of huge bad requests must be back within this share of its level before.
const BURST_RETURN: f64 = 0.10;
/// A request with no answer in this long counts as a hang.
const REQUEST_LIMIT: Duration = Duration::from_secs(300);
const PLOT_REQUIREMENTS: &str = "matplotlib==3.11.2\n";

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) minutes: f64,
    pub(crate) streams: usize,
    pub(crate) seed: u64,
    /// The test build CI has already made, instead of a release build.
    pub(crate) dev: bool,
    /// Write the plot and table into docs/.
    pub(crate) docs: bool,
}

impl Options {
    pub(crate) fn parse(args: &[&str]) -> anyhow::Result<Self> {
        let mut options = Self {
            minutes: 10.0,
            streams: 64,
            seed: 0,
            dev: false,
            docs: true,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .copied()
                    .with_context(|| format!("{name} needs a value"))
            };
            match *arg {
                "--minutes" => {
                    options.minutes = value("--minutes")?
                        .parse()
                        .ok()
                        .filter(|m: &f64| *m > 0.0)
                        .context("--minutes: a positive number")?;
                }
                "--streams" => {
                    options.streams = value("--streams")?
                        .parse()
                        .ok()
                        .filter(|s| *s > 0)
                        .context("--streams: a positive integer")?;
                }
                "--seed" => options.seed = value("--seed")?.parse().context("--seed")?,
                "--dev" => options.dev = true,
                "--no-docs" => options.docs = false,
                other => bail!("soak: unknown argument {other:?}"),
            }
        }
        Ok(options)
    }

    /// CI's short soak: one minute, eight streams, the test build, nothing written to docs/.
    pub(crate) fn ci() -> Self {
        Self {
            minutes: 1.0,
            streams: 8,
            seed: 0,
            dev: true,
            docs: false,
        }
    }

    fn invocation(&self) -> String {
        let mut line = format!(
            "cargo xtask soak --minutes {} --streams {}",
            self.minutes, self.streams
        );
        if self.seed != 0 {
            let _ = write!(line, " --seed {}", self.seed);
        }
        if self.dev {
            line.push_str(" --dev");
        }
        line
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.minutes * 60.0)
    }

    /// Memory is judged after this: caches, the KV pool's touched pages and the allocator's
    /// pools have reached their working size.
    fn warm_up(&self) -> Duration {
        Duration::from_secs_f64((self.minutes * 60.0 * 0.2).clamp(10.0, 120.0))
    }
}

/// What a request is, for the mix and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    ChatStream,
    ChatWhole,
    LongCompletionStream,
    CompletionWhole,
    SharedPrefix,
    Choices,
    Stop,
    Seeded,
    JsonSchema,
    ToolCall,
    Image,
    Disconnect,
    Invalid,
}

impl Kind {
    /// The mix: each kind with its weight.
    const MIX: [(Self, u32); 13] = [
        (Self::ChatStream, 14),
        (Self::ChatWhole, 8),
        (Self::LongCompletionStream, 6),
        (Self::CompletionWhole, 6),
        (Self::SharedPrefix, 8),
        (Self::Choices, 5),
        (Self::Stop, 6),
        (Self::Seeded, 6),
        (Self::JsonSchema, 6),
        (Self::ToolCall, 6),
        (Self::Image, 8),
        (Self::Disconnect, 8),
        (Self::Invalid, 8),
    ];

    fn pick(rng: &mut Rng) -> Self {
        let total: u32 = Self::MIX.iter().map(|(_, w)| w).sum();
        let mut r = (rng.next() % u64::from(total)) as u32;
        for (kind, weight) in Self::MIX {
            if r < weight {
                return kind;
            }
            r -= weight;
        }
        Self::ChatStream
    }

    fn name(self) -> &'static str {
        match self {
            Self::ChatStream => "chat, streamed",
            Self::ChatWhole => "chat, whole",
            Self::LongCompletionStream => "completion, 300-700 token prompt, streamed",
            Self::CompletionWhole => "completion, whole",
            Self::SharedPrefix => "chat, shared 300-token system prompt, streamed",
            Self::Choices => "chat, n = 3",
            Self::Stop => "chat, stop strings, streamed",
            Self::Seeded => "chat, seeded sampling",
            Self::JsonSchema => "chat, json_schema",
            Self::ToolCall => "chat, tool_choice required",
            Self::Image => "chat with an image (vision model)",
            Self::Disconnect => "stream the client drops after 3 events",
            Self::Invalid => "invalid request",
        }
    }
}

/// What a correct answer to a request looks like.
#[derive(Debug, Clone)]
enum Expect {
    /// 200 with this many choices, each with text and a finish reason.
    Answer { choices: usize, check: Check },
    /// An error envelope with this status.
    Error(u16),
    /// A stream the client drops after this many events.
    HangUp(usize),
}

#[derive(Debug, Clone, Copy)]
enum Check {
    Text,
    /// No choice that stopped on a stop string contains one.
    Stops,
    /// Content that finished is a JSON object with `name` and `age`.
    Json,
    /// The answer is tool calls whose arguments are JSON objects.
    Tools,
}

/// One request, ready to send.
#[derive(Debug, Clone)]
struct Planned {
    path: &'static str,
    content_type: &'static str,
    body: Bytes,
    stream: bool,
    expect: Expect,
}

/// Everything the mix draws from.
struct Corpus {
    image_url: String,
    system_prompt: String,
}

impl Corpus {
    fn new(root: &Path) -> anyhow::Result<Self> {
        let png = root.join("testdata/tiny-smolvlm/rgba_50x50.png");
        let bytes = std::fs::read(&png).with_context(|| format!("reading {}", png.display()))?;
        let image_url = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        let system_prompt = "You are a careful assistant for a company that sells kilns, \
            glazes and clay. Answer in one or two sentences, politely, and never invent prices. "
            .repeat(8);
        Ok(Self {
            image_url,
            system_prompt,
        })
    }
}

const QUESTIONS: [&str; 8] = [
    "What is the capital of France?",
    "Name three primary colours.",
    "How many legs does a spider have?",
    "Write a haiku about autumn.",
    "What is 17 times 3?",
    "Explain what a kiln is in one sentence.",
    "Give me a synonym for happy.",
    "Which planet is closest to the sun?",
];

fn user(text: &str) -> Value {
    json!([{ "role": "user", "content": text }])
}

fn plan(kind: Kind, rng: &mut Rng, corpus: &Corpus) -> Planned {
    let question = QUESTIONS[rng.below(QUESTIONS.len())];
    let answer = |choices: usize, check: Check| Expect::Answer { choices, check };
    let chat = |body: Value, stream: bool, expect: Expect| Planned {
        path: "/v1/chat/completions",
        content_type: "application/json",
        body: Bytes::from(body.to_string()),
        stream,
        expect,
    };
    let max_tokens = 8 + rng.below(40);
    let seed = rng.next() % 1_000_000;
    match kind {
        Kind::ChatStream => chat(
            json!({"model": TEXT, "messages": user(question), "max_tokens": max_tokens,
                   "temperature": 0.7, "seed": seed, "stream": true,
                   "stream_options": {"include_usage": true}}),
            true,
            answer(1, Check::Text),
        ),
        Kind::ChatWhole => chat(
            json!({"model": TEXT, "messages": user(question), "max_tokens": max_tokens,
                   "temperature": 0}),
            false,
            answer(1, Check::Text),
        ),
        Kind::LongCompletionStream | Kind::CompletionWhole => {
            let (len, stream) = if kind == Kind::LongCompletionStream {
                (300 + rng.below(400), true)
            } else {
                (16 + rng.below(64), false)
            };
            let prompt: Vec<u64> = (0..len).map(|_| 100 + rng.next() % 48_900).collect();
            Planned {
                path: "/v1/completions",
                content_type: "application/json",
                body: Bytes::from(
                    json!({"model": TEXT, "prompt": prompt, "max_tokens": 16,
                           "temperature": 0, "stream": stream})
                    .to_string(),
                ),
                stream,
                expect: answer(1, Check::Text),
            }
        }
        Kind::SharedPrefix => chat(
            json!({"model": TEXT, "messages": [
                      {"role": "system", "content": corpus.system_prompt},
                      {"role": "user", "content": question}],
                   "max_tokens": max_tokens, "temperature": 0, "stream": true}),
            true,
            answer(1, Check::Text),
        ),
        Kind::Choices => chat(
            json!({"model": TEXT, "messages": user(question), "max_tokens": max_tokens,
                   "n": 3, "temperature": 0.9, "seed": seed}),
            false,
            answer(3, Check::Text),
        ),
        Kind::Stop => chat(
            json!({"model": TEXT, "messages": user(question), "max_tokens": 48,
                   "stop": [".", "\n"], "temperature": 0.5, "seed": seed, "stream": true}),
            true,
            answer(1, Check::Stops),
        ),
        Kind::Seeded => chat(
            json!({"model": TEXT, "messages": user(question), "max_tokens": max_tokens,
                   "temperature": 1.0, "top_p": 0.9, "top_k": 40, "seed": seed,
                   "presence_penalty": 0.5, "logprobs": true, "top_logprobs": 3}),
            false,
            answer(1, Check::Text),
        ),
        Kind::JsonSchema => chat(
            json!({"model": TEXT, "messages": user("Describe a person as JSON."),
                   "max_tokens": 64, "temperature": 0.7, "seed": seed,
                   "response_format": {"type": "json_schema", "json_schema": {
                       "name": "person", "strict": true, "schema": {
                           "type": "object",
                           "properties": {"name": {"type": "string", "maxLength": 24},
                                          "age": {"type": "integer"}},
                           "required": ["name", "age"], "additionalProperties": false}}}}),
            false,
            answer(1, Check::Json),
        ),
        Kind::ToolCall => {
            let stream = rng.below(2) == 0;
            chat(
                json!({"model": TEXT, "messages": user("What is the weather in Paris?"),
                   "max_tokens": 64, "temperature": 0, "stream": stream,
                   "tool_choice": "required",
                   "tools": [{"type": "function", "function": {
                       "name": "get_weather", "description": "The weather in a city",
                       "parameters": {"type": "object",
                                      "properties": {"city": {"type": "string", "maxLength": 32}},
                                      "required": ["city"]}}}]}),
                stream,
                answer(1, Check::Tools),
            )
        }
        Kind::Image => chat(
            json!({"model": VISION, "max_tokens": 8, "temperature": 0, "messages": [
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": corpus.image_url}},
                    {"type": "text", "text": "What is in this image?"}]}]}),
            false,
            answer(1, Check::Text),
        ),
        Kind::Disconnect => chat(
            json!({"model": TEXT, "messages": user(question), "max_tokens": 256,
                   "temperature": 0.8, "seed": seed, "stream": true}),
            true,
            Expect::HangUp(3),
        ),
        Kind::Invalid => invalid(rng.below(10), question),
    }
}

/// One of ten kinds of bad request, with the status it must get.
fn invalid(which: usize, question: &str) -> Planned {
    let body = |v: Value| Bytes::from(v.to_string());
    let (content_type, bytes, status) = match which {
        0 => (
            "application/json",
            Bytes::from(format!(
                "{{\"model\": \"{TEXT}\", \"messages\": [{{\"role\": \"user\", \"content\": \"{question}"
            )),
            400,
        ),
        1 => (
            "application/json",
            body(json!({"model": TEXT, "messages": user(question), "temperature": 5})),
            400,
        ),
        2 => (
            "application/json",
            body(json!({"model": TEXT, "messages": user(question), "frobnicate": true})),
            400,
        ),
        3 => (
            "application/json",
            body(json!({"model": "no-such-model", "messages": user(question)})),
            404,
        ),
        4 => (
            "application/json",
            body(json!({"model": TEXT, "messages": []})),
            400,
        ),
        5 => (
            "application/json",
            body(json!({"model": TEXT, "messages": user(question), "max_tokens": 1_000_000})),
            400,
        ),
        6 => (
            "text/plain",
            body(json!({"model": TEXT, "messages": user(question)})),
            415,
        ),
        7 => (
            "application/json",
            body(
                json!({"model": TEXT, "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "text", "text": question}]}]}),
            ),
            400,
        ),
        8 => (
            "application/json",
            body(json!({"model": TEXT, "messages": user(question), "n": 0})),
            400,
        ),
        // A prompt far past the context: tokenized, then refused before anything is queued.
        _ => (
            "application/json",
            body(json!({"model": TEXT, "messages": user(&"many words ".repeat(30_000))})),
            400,
        ),
    };
    Planned {
        path: "/v1/chat/completions",
        content_type,
        body: bytes,
        stream: false,
        expect: Expect::Error(status),
    }
}

/// What came back.
#[derive(Debug, Default)]
struct Reply {
    status: u16,
    retry_after: bool,
    body: Vec<u8>,
    events: Vec<Value>,
    done: bool,
    first_token: Option<Instant>,
}

async fn exchange(port: u16, planned: &Planned) -> anyhow::Result<Reply> {
    let (mut sender, conn) = connect(port).await?;
    let request = hyper::Request::post(planned.path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", planned.content_type)
        .body(Full::new(planned.body.clone()))?;
    let response = sender.send_request(request).await.context("sending")?;
    let mut reply = Reply {
        status: response.status().as_u16(),
        retry_after: response.headers().contains_key("retry-after"),
        ..Reply::default()
    };
    let mut body = response.into_body();
    if !(planned.stream && reply.status == 200) {
        reply.body = body
            .collect()
            .await
            .context("reading the body")?
            .to_bytes()
            .to_vec();
        conn.abort();
        return Ok(reply);
    }
    let hang_up = match planned.expect {
        Expect::HangUp(after) => Some(after),
        _ => None,
    };
    let mut buffer = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.context("reading the stream")?.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        for line in take_sse_lines(&mut buffer)? {
            let SseLine::Event(event) = line else {
                reply.done = true;
                continue;
            };
            if reply.first_token.is_none() && carries_output(&event) {
                reply.first_token = Some(Instant::now());
            }
            reply.events.push(event);
            if hang_up.is_some_and(|n| reply.events.len() >= n) {
                // Dropping the connection mid-stream is the point.
                conn.abort();
                return Ok(reply);
            }
        }
    }
    conn.abort();
    Ok(reply)
}

fn carries_output(event: &Value) -> bool {
    event["choices"].as_array().is_some_and(|choices| {
        choices.iter().any(|c| {
            c["text"].as_str().is_some_and(|t| !t.is_empty())
                || c["delta"]["content"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty())
                || c["delta"].get("tool_calls").is_some()
        })
    })
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// The expected error envelope.
    Refused,
    /// 503 or 429 with Retry-After: load shed as promised.
    Shed,
    /// The client hung up, as planned.
    HungUp,
    Failed(String),
}

/// A whole answer's choices, from a JSON body or from a stream's events folded.
struct Choice {
    text: String,
    finish: Option<String>,
    tool_calls: Vec<Value>,
}

fn choices(planned: &Planned, reply: &Reply) -> Result<Vec<Choice>, String> {
    if !planned.stream {
        let v: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("a 200 body that is not JSON ({e})"))?;
        let list = v["choices"].as_array().ok_or("no `choices`")?;
        return Ok(list
            .iter()
            .map(|c| Choice {
                text: c["message"]["content"]
                    .as_str()
                    .or(c["text"].as_str())
                    .unwrap_or_default()
                    .to_owned(),
                finish: c["finish_reason"].as_str().map(str::to_owned),
                tool_calls: c["message"]["tool_calls"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect());
    }
    if !reply.done {
        return Err("the stream ended without `data: [DONE]`".into());
    }
    let mut folded: BTreeMap<u64, Choice> = BTreeMap::new();
    for event in &reply.events {
        if let Some(error) = event.get("error") {
            return Err(format!("an error event: {error}"));
        }
        for c in event["choices"].as_array().into_iter().flatten() {
            let index = c["index"].as_u64().unwrap_or(0);
            let choice = folded.entry(index).or_insert(Choice {
                text: String::new(),
                finish: None,
                tool_calls: Vec::new(),
            });
            let text = c["text"].as_str().or(c["delta"]["content"].as_str());
            choice.text.push_str(text.unwrap_or_default());
            if let Some(reason) = c["finish_reason"].as_str() {
                choice.finish = Some(reason.to_owned());
            }
            for call in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let i = call["index"].as_u64().unwrap_or(0) as usize;
                if choice.tool_calls.len() <= i {
                    choice
                        .tool_calls
                        .resize(i + 1, json!({"function": {"arguments": ""}}));
                }
                let args = call["function"]["arguments"].as_str().unwrap_or_default();
                let slot = &mut choice.tool_calls[i]["function"]["arguments"];
                *slot = Value::String(slot.as_str().unwrap_or_default().to_owned() + args);
            }
        }
    }
    Ok(folded.into_values().collect())
}

fn judge(planned: &Planned, reply: anyhow::Result<Reply>) -> Outcome {
    let reply = match reply {
        Ok(reply) => reply,
        Err(err) => return Outcome::Failed(format!("connection: {err:#}")),
    };
    if matches!(reply.status, 429 | 503) {
        return if reply.retry_after {
            Outcome::Shed
        } else {
            Outcome::Failed(format!("{} without Retry-After", reply.status))
        };
    }
    let body = || String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)]).into_owned();
    match &planned.expect {
        Expect::Error(status) => {
            let envelope: Option<Value> = serde_json::from_slice(&reply.body).ok();
            let typed = envelope.as_ref().is_some_and(|e| {
                e["error"]["message"].is_string() && e["error"]["type"].is_string()
            });
            if reply.status == *status && typed {
                Outcome::Refused
            } else {
                Outcome::Failed(format!(
                    "expected {status} with an error envelope, got {}: {}",
                    reply.status,
                    body()
                ))
            }
        }
        Expect::HangUp(after) => {
            if reply.status == 200 && reply.events.len() >= *after {
                Outcome::HungUp
            } else {
                Outcome::Failed(format!(
                    "a stream of {} events (status {}) before the planned hang-up: {}",
                    reply.events.len(),
                    reply.status,
                    body()
                ))
            }
        }
        Expect::Answer { choices: n, check } => {
            if reply.status != 200 {
                return Outcome::Failed(format!("status {}: {}", reply.status, body()));
            }
            let list = match choices(planned, &reply) {
                Ok(list) => list,
                Err(why) => return Outcome::Failed(why),
            };
            if list.len() != *n {
                return Outcome::Failed(format!("{} choices, expected {n}", list.len()));
            }
            for c in &list {
                if let Err(why) = check_choice(*check, c) {
                    return Outcome::Failed(why);
                }
            }
            Outcome::Ok
        }
    }
}

fn check_choice(check: Check, c: &Choice) -> Result<(), String> {
    let finish = c
        .finish
        .as_deref()
        .ok_or("a choice without finish_reason")?;
    match check {
        Check::Text => {
            if !matches!(finish, "stop" | "length") {
                return Err(format!("finish_reason {finish}"));
            }
        }
        Check::Stops => {
            if finish == "stop" && (c.text.contains('.') || c.text.contains('\n')) {
                return Err(format!("stopped text holds a stop string: {:?}", c.text));
            }
        }
        Check::Json => {
            if finish == "stop" {
                let v: Value = serde_json::from_str(&c.text)
                    .map_err(|e| format!("json_schema answer is not JSON ({e}): {:?}", c.text))?;
                if !(v["name"].is_string()
                    && v["age"].is_i64()
                    && v.as_object().map(|o| o.len()) == Some(2))
                {
                    return Err(format!("json_schema answer breaks its schema: {v}"));
                }
            }
        }
        Check::Tools => {
            if finish == "tool_calls" {
                if c.tool_calls.is_empty() {
                    return Err("finish_reason tool_calls without calls".into());
                }
                for call in &c.tool_calls {
                    let args = call["function"]["arguments"].as_str().unwrap_or_default();
                    let v: Value = serde_json::from_str(args)
                        .map_err(|e| format!("tool arguments are not JSON ({e}): {args:?}"))?;
                    if !v["city"].is_string() {
                        return Err(format!("tool arguments break their schema: {v}"));
                    }
                }
            } else if finish != "length" {
                return Err(format!("tool_choice required finished with {finish}"));
            }
        }
    }
    Ok(())
}

/// One finished request, for the report.
#[derive(Debug, Clone)]
struct Record {
    /// Seconds since the load started.
    t: f64,
    kind: Kind,
    latency: f64,
    ttft: Option<f64>,
    outcome: Outcome,
}

/// One second's look at the server.
#[derive(Debug, Clone, Default)]
struct Sample {
    t: f64,
    rss_mib: f64,
    /// The KV pools' written part (resident, bounded by the pools' size).
    kv_resident_mib: f64,
    fds: u64,
    threads: u64,
    running: f64,
    waiting: f64,
    kv_usage: f64,
}

fn sample(pid: u32, port: u16, t: f64) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    let metrics = http_get(port, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let gauge = |name: &str, model: Option<&str>| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| model.is_none_or(|m| l.contains(&format!("model=\"{m}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Sample {
        t,
        rss_mib: field("VmRSS:") as f64 / 1024.0,
        fds,
        threads: field("Threads:"),
        running: gauge("kiln_num_requests_running", None),
        waiting: gauge("kiln_num_requests_waiting", None),
        kv_usage: gauge("kiln_kv_cache_usage_ratio", Some(TEXT)),
        kv_resident_mib: gauge("kiln_kv_cache_resident_bytes", None) / f64::from(1 << 20),
    }
}

/// The canary: the same greedy request (and a seeded one) every few seconds; both answers must
/// never change, whatever else is in the batch.
fn canary_bodies() -> [Bytes; 2] {
    let greedy = json!({"model": TEXT, "messages": user("What is the capital of France?"),
                        "max_tokens": 32, "temperature": 0});
    let seeded = json!({"model": TEXT, "messages": user("Tell me a short story about a cat."),
                        "max_tokens": 32, "temperature": 0.9, "seed": 1234});
    [greedy, seeded].map(|b| Bytes::from(b.to_string()))
}

async fn canary_text(port: u16, body: &Bytes) -> Result<String, String> {
    let planned = Planned {
        path: "/v1/chat/completions",
        content_type: "application/json",
        body: body.clone(),
        stream: false,
        expect: Expect::Answer {
            choices: 1,
            check: Check::Text,
        },
    };
    let reply = tokio::time::timeout(REQUEST_LIMIT, exchange(port, &planned))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| format!("{e:#}"))?;
    if reply.status != 200 {
        return Err(format!("status {}", reply.status));
    }
    let list = choices(&planned, &reply)?;
    Ok(list.first().map(|c| c.text.clone()).unwrap_or_default())
}

/// The canaries' record: the greedy answer must never change; a seeded one may (OpenAI's
/// `seed` is best effort: its sampling sees logits whose last bits depend on the batch), and
/// how often it did is reported.
#[derive(Debug, Default)]
struct Canary {
    requests: [usize; 2],
    failures: Vec<String>,
    seeded_changed: usize,
}

/// What the run measured.
struct Run {
    records: Vec<Record>,
    samples: Vec<Sample>,
    canary: Canary,
    burst: Burst,
    load: Duration,
}

/// The burst of huge bad requests before the load, and the memory it left behind.
#[derive(Debug, Clone, Default)]
struct Burst {
    requests: usize,
    bytes: usize,
    rss_before_mib: f64,
    rss_peak_mib: f64,
    rss_after_mib: f64,
    failures: Vec<String>,
}

/// Huge bad requests, each refused: bodies just under the limit that are not JSON or nest too
/// deep, and multi-megabyte prompts far past the context. (Bodies over the limit are sent
/// apart, by [`declared_too_large`].)
fn burst_requests() -> Vec<Planned> {
    let mib = 1 << 20;
    let mut out = Vec::new();
    let mut push = |body: Vec<u8>, status: u16| {
        out.push(Planned {
            path: "/v1/chat/completions",
            content_type: "application/json",
            body: Bytes::from(body),
            stream: false,
            expect: Expect::Error(status),
        });
    };
    for i in 0..6 {
        let mut truncated = format!(
            "{{\"model\": \"{TEXT}\", \"messages\": [{{\"role\": \"user\", \"content\": \""
        )
        .into_bytes();
        truncated.resize(30 * mib + i, b'a');
        push(truncated, 400);
        let mut nested = vec![b'['; 8 * mib];
        nested.extend(std::iter::repeat_n(b']', 8 * mib));
        push(nested, 400);
        let prompt = "lorem ipsum dolor sit amet ".repeat(80_000 + i);
        push(
            json!({"model": TEXT, "messages": user(&prompt)})
                .to_string()
                .into_bytes(),
            400,
        );
    }
    out
}

/// A request declaring a 40 MiB body, over the limit: the 413 must come before any of it is
/// sent (a client writing a body the server will not read would see its connection reset).
fn declared_too_large(port: u16) -> Result<(), String> {
    use std::io::{Read as _, Write as _};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        40u64 << 20
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.ends_with("413") {
        Ok(())
    } else {
        Err(format!("a 40 MiB declared body got {head:?}, not 413"))
    }
}

async fn burst(port: u16, pid: u32) -> Burst {
    let requests = burst_requests();
    for _ in 0..6 {
        if let Err(why) = tokio::task::spawn_blocking(move || declared_too_large(port))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
        {
            return Burst {
                failures: vec![why],
                ..Burst::default()
            };
        }
    }
    let mut result = Burst {
        requests: requests.len() + 6,
        bytes: requests.iter().map(|r| r.body.len()).sum(),
        rss_before_mib: sample(pid, port, 0.0).rss_mib,
        ..Burst::default()
    };
    let peak = Arc::new(std::sync::Mutex::new(result.rss_before_mib));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let rss = sample(pid, port, 0.0).rss_mib;
                if let Ok(mut p) = peak.lock() {
                    *p = p.max(rss);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // Eight at a time: the worst a handful of careless clients would do together.
    for group in requests.chunks(8) {
        let handles: Vec<_> = group
            .iter()
            .cloned()
            .map(|p| tokio::spawn(async move { (judge(&p, exchange(port, &p).await), p) }))
            .collect();
        for handle in handles {
            if let Ok((outcome, p)) = handle.await
                && let Outcome::Failed(why) = outcome
            {
                result
                    .failures
                    .push(format!("a {}-byte bad request: {why}", p.body.len()));
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let _ = watcher.join();
    result.rss_peak_mib = peak.lock().map_or(0.0, |p| *p);
    // Memory given back may take the allocator a moment; wait up to 10 s for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        result.rss_after_mib = sample(pid, port, 0.0).rss_mib;
        if result.rss_after_mib <= result.rss_before_mib * (1.0 + BURST_RETURN)
            || Instant::now() > deadline
        {
            break;
        }
    }
    result
}

fn drive(port: u16, pid: u32, options: &Options, corpus: Corpus) -> anyhow::Result<Run> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the soak client's runtime")?;
    let corpus = Arc::new(corpus);
    runtime.block_on(async {
        // A few requests of every kind first, so the idle level before the burst is a warm
        // server's (tokenizer, grammar trie and the vision tower loaded).
        let mut rng = Rng::new(options.seed ^ 0xC0FFEE);
        for (kind, _) in Kind::MIX {
            let planned = plan(kind, &mut rng, &corpus);
            let outcome = judge(&planned, exchange(port, &planned).await);
            if let Outcome::Failed(why) = outcome {
                bail!("the warm-up request `{}` failed: {why}", kind.name());
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        eprintln!("soak: a burst of huge bad requests");
        let burst = burst(port, pid).await;
        eprintln!(
            "soak: RSS {:.0} MiB before the burst, {:.0} MiB at its peak, {:.0} MiB after",
            burst.rss_before_mib, burst.rss_peak_mib, burst.rss_after_mib
        );

        let duration = options.duration();
        eprintln!(
            "soak: {} streams for {:.1} minutes",
            options.streams, options.minutes
        );
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut samples = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let tick = Instant::now();
                    samples.push(sample(pid, port, started.elapsed().as_secs_f64()));
                    std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
                }
                samples
            })
        };
        let mut workers = Vec::new();
        for w in 0..options.streams {
            let corpus = corpus.clone();
            let mut rng = Rng::new(options.seed.wrapping_add(w as u64 + 1));
            workers.push(tokio::spawn(async move {
                let mut records = Vec::new();
                while started.elapsed() < duration {
                    let kind = Kind::pick(&mut rng);
                    let planned = plan(kind, &mut rng, &corpus);
                    let t0 = Instant::now();
                    let reply = tokio::time::timeout(REQUEST_LIMIT, exchange(port, &planned))
                        .await
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer in {REQUEST_LIMIT:?}")));
                    let ttft = reply
                        .as_ref()
                        .ok()
                        .and_then(|r| r.first_token)
                        .map(|f| f.duration_since(t0).as_secs_f64());
                    records.push(Record {
                        t: t0.duration_since(started).as_secs_f64(),
                        kind,
                        latency: t0.elapsed().as_secs_f64(),
                        ttft,
                        outcome: judge(&planned, reply),
                    });
                }
                records
            }));
        }
        let canary = tokio::spawn(async move {
            let bodies = canary_bodies();
            let mut first: [Option<String>; 2] = [None, None];
            let mut canary = Canary::default();
            while started.elapsed() < duration {
                for (i, (body, first)) in bodies.iter().zip(first.iter_mut()).enumerate() {
                    canary.requests[i] += 1;
                    match (canary_text(port, body).await, first.as_ref()) {
                        (Ok(text), None) => *first = Some(text),
                        (Ok(text), Some(want)) if &text == want => {}
                        (Ok(text), Some(want)) if i == 0 => canary.failures.push(format!(
                            "at {:.0} s the greedy canary said {text:?}, first {want:?}",
                            started.elapsed().as_secs_f64()
                        )),
                        (Ok(_), Some(_)) => canary.seeded_changed += 1,
                        (Err(why), _) => canary.failures.push(format!("canary request: {why}")),
                    }
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            canary
        });
        let mut records = Vec::new();
        for worker in workers {
            records.extend(worker.await.context("a soak client task failed")?);
        }
        let canary = canary.await.context("the canary task failed")?;
        let load = started.elapsed();
        stop.store(true, Ordering::SeqCst);
        let samples = sampler
            .join()
            .map_err(|_| anyhow::anyhow!("the sampler thread panicked"))?;
        Ok(Run {
            records,
            samples,
            canary,
            burst,
            load,
        })
    })
}

/// The verdict on a run: every reason it fails.
struct Verdict {
    failures: Vec<String>,
    rss_baseline: f64,
    rss_end: f64,
    fds: (u64, u64),
    threads: (u64, u64),
}

/// The most of `f` over the samples in `[from, to)` seconds.
fn window_max(samples: &[Sample], from: f64, to: f64, f: impl Fn(&Sample) -> f64) -> f64 {
    samples
        .iter()
        .filter(|s| s.t >= from && s.t < to)
        .map(f)
        .fold(0.0, f64::max)
}

fn verdict(run: &Run, options: &Options, log: &str) -> Verdict {
    let mut failures = Vec::new();
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for r in &run.records {
        if let Outcome::Failed(why) = &r.outcome {
            *by_reason
                .entry(format!("{}: {why}", r.kind.name()))
                .or_default() += 1;
        }
    }
    for (why, n) in by_reason {
        failures.push(format!("{n} × {why}"));
    }
    failures.extend(run.canary.failures.iter().cloned());
    failures.extend(run.burst.failures.iter().cloned());
    if run.burst.rss_after_mib > run.burst.rss_before_mib * (1.0 + BURST_RETURN) {
        failures.push(format!(
            "RSS did not come back after the burst: {:.0} MiB before, {:.0} MiB after (bound {:.0}%)",
            run.burst.rss_before_mib,
            run.burst.rss_after_mib,
            BURST_RETURN * 100.0
        ));
    }
    if let Some(line) = log.lines().find(|l| l.contains("panicked")) {
        failures.push(format!("a panic in the server's log: {line}"));
    }
    // Windows of a tenth of the run (at least five samples) right after warm-up and at the end.
    let end = run.load.as_secs_f64();
    let warm = options.warm_up().as_secs_f64();
    let window = (end * 0.1).max(5.0);
    // The KV pool is committed lazily and the prefix cache fills all of it in time: that
    // growth is bounded by the pool's size and reported apart; the bound is on the rest.
    let outside = |s: &Sample| s.rss_mib - s.kv_resident_mib;
    let rss_baseline = window_max(&run.samples, warm, warm + window, outside);
    let rss_end = window_max(&run.samples, end - window, end + 1.0, outside);
    if rss_end > rss_baseline * (1.0 + RSS_GROWTH) {
        failures.push(format!(
            "RSS outside the KV cache grew after warm-up: {rss_baseline:.0} MiB → {rss_end:.0} MiB \
             (bound {:.0}%)",
            RSS_GROWTH * 100.0
        ));
    }
    let fds = (
        window_max(&run.samples, warm, warm + window, |s| s.fds as f64) as u64,
        window_max(&run.samples, end - window, end + 1.0, |s| s.fds as f64) as u64,
    );
    // Every stream holds a connection, so fds swing with the mix; a leak shows as a climb past
    // that swing.
    let fd_slack = 16 + options.streams as u64 / 4;
    if fds.1 > fds.0 + fd_slack {
        failures.push(format!(
            "open fds kept growing: {} → {} (slack {fd_slack})",
            fds.0, fds.1
        ));
    }
    let threads = (
        window_max(&run.samples, warm, warm + window, |s| s.threads as f64) as u64,
        window_max(&run.samples, end - window, end + 1.0, |s| s.threads as f64) as u64,
    );
    if threads.1 > threads.0 + 2 {
        failures.push(format!(
            "threads kept growing: {} → {}",
            threads.0, threads.1
        ));
    }
    if run.samples.len() < 5 {
        failures.push(format!("only {} samples were taken", run.samples.len()));
    }
    Verdict {
        failures,
        rss_baseline,
        rss_end,
        fds,
        threads,
    }
}

fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

fn seconds(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2} s"))
}

/// The report's markdown: where and how it ran, what the memory did, and each kind's counts
/// and latencies.
fn table(
    commit: &str,
    run: &Run,
    verdict: &Verdict,
    options: &Options,
    plot: Option<&str>,
) -> String {
    let mut out = String::new();
    let ok = |o: &Outcome| !matches!(o, Outcome::Failed(_));
    let total = run.records.len();
    let failed = run.records.iter().filter(|r| !ok(&r.outcome)).count();
    let _ = writeln!(
        out,
        "Latest soak: {}, {}, commit {}, `{}` (release build unless `--dev`), models \
         SmolLM2-135M-Instruct Q4_1 (`{TEXT}`) and the tiny random SmolVLM (`{VISION}`). \
         {} requests in {:.1} minutes, {} failed; verdict: **{}**.\n",
        report::date(),
        report::machine(),
        commit,
        options.invocation(),
        total,
        run.load.as_secs_f64() / 60.0,
        failed,
        if verdict.failures.is_empty() {
            "pass"
        } else {
            "FAIL"
        }
    );
    if let Some(plot) = plot {
        let _ = writeln!(
            out,
            "![RSS, latency and the engine's gauges over the soak]({plot})\n"
        );
    }
    let last = run.samples.last().cloned().unwrap_or_default();
    let peak_rss = run.samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    let _ = writeln!(out, "| Measure | Value |\n| --- | --- |");
    let _ = writeln!(
        out,
        "| RSS outside the KV cache, after warm-up ({:.0} s) → at the end (bound +{:.0}%) | {:.0} MiB → {:.0} MiB ({:+.1}%) |",
        options.warm_up().as_secs_f64(),
        RSS_GROWTH * 100.0,
        verdict.rss_baseline,
        verdict.rss_end,
        (verdict.rss_end / verdict.rss_baseline.max(1.0) - 1.0) * 100.0
    );
    let kv_resident = last.kv_resident_mib;
    let _ = writeln!(
        out,
        "| Peak RSS; KV cache written (resident) at the end | {peak_rss:.0} MiB; {kv_resident:.0} MiB |"
    );
    let _ = writeln!(
        out,
        "| Burst of {} huge bad requests ({:.0} MiB of bodies): RSS before → peak → after (bound +{:.0}%) | {:.0} → {:.0} → {:.0} MiB ({:+.1}%) |",
        run.burst.requests,
        run.burst.bytes as f64 / f64::from(1 << 20),
        BURST_RETURN * 100.0,
        run.burst.rss_before_mib,
        run.burst.rss_peak_mib,
        run.burst.rss_after_mib,
        (run.burst.rss_after_mib / run.burst.rss_before_mib.max(1.0) - 1.0) * 100.0
    );
    let _ = writeln!(
        out,
        "| Open fds after warm-up → at the end | {} → {} |",
        verdict.fds.0, verdict.fds.1
    );
    let _ = writeln!(
        out,
        "| Threads after warm-up → at the end | {} → {} |",
        verdict.threads.0, verdict.threads.1
    );
    let _ = writeln!(
        out,
        "| Greedy canary: requests, answers changed | {}, {} |",
        run.canary.requests[0],
        run.canary.failures.len()
    );
    let _ = writeln!(
        out,
        "| Seeded canary (reported, not judged: `seed` is best effort): requests, answers changed | {}, {} |",
        run.canary.requests[1], run.canary.seeded_changed
    );
    let kv_peak = run.samples.iter().map(|s| s.kv_usage).fold(0.0, f64::max);
    let waiting_peak = run.samples.iter().map(|s| s.waiting).fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "| Peak KV cache usage (`{TEXT}`), peak waiting | {:.0}%, {waiting_peak:.0} |",
        kv_peak * 100.0
    );
    let _ = writeln!(
        out,
        "| Samples (one a second) | {} (last: {:.0} s) |",
        run.samples.len(),
        last.t
    );
    let _ = writeln!(
        out,
        "\n| Request | Count | Ok | Refused as expected | Shed (429/503 + Retry-After) | Hung up as planned | Failed | Latency p50 | p95 | p99 | TTFT p50 | TTFT p95 |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (kind, _) in Kind::MIX {
        let rs: Vec<&Record> = run.records.iter().filter(|r| r.kind == kind).collect();
        let count = |o: &dyn Fn(&Outcome) -> bool| rs.iter().filter(|r| o(&r.outcome)).count();
        let mut lat: Vec<f64> = rs
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Ok | Outcome::Refused | Outcome::HungUp))
            .map(|r| r.latency)
            .collect();
        let mut ttft: Vec<f64> = rs.iter().filter_map(|r| r.ttft).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            kind.name(),
            rs.len(),
            count(&|o| *o == Outcome::Ok),
            count(&|o| *o == Outcome::Refused),
            count(&|o| *o == Outcome::Shed),
            count(&|o| *o == Outcome::HungUp),
            count(&|o| matches!(o, Outcome::Failed(_))),
            seconds(percentile(&mut lat, 0.5)),
            seconds(percentile(&mut lat, 0.95)),
            seconds(percentile(&mut lat, 0.99)),
            seconds(percentile(&mut ttft, 0.5)),
            seconds(percentile(&mut ttft, 0.95)),
        );
    }
    if !verdict.failures.is_empty() {
        let _ = writeln!(out, "\nFailures:\n");
        for f in &verdict.failures {
            let _ = writeln!(out, "- {f}");
        }
    }
    out
}

/// The run as JSON, for the plot and for anyone who wants the raw series.
fn series(run: &Run, options: &Options) -> Value {
    json!({
        "warm_up_s": options.warm_up().as_secs_f64(),
        "rss_growth_bound": RSS_GROWTH,
        "streams": options.streams,
        "samples": run.samples.iter().map(|s| json!({
            "t": s.t, "rss_mib": s.rss_mib, "kv_resident_mib": s.kv_resident_mib,
            "fds": s.fds, "threads": s.threads,
            "running": s.running, "waiting": s.waiting, "kv_usage": s.kv_usage,
        })).collect::<Vec<_>>(),
        "requests": run.records.iter().map(|r| json!({
            "t": r.t, "kind": r.kind.name(), "latency": r.latency, "ttft": r.ttft,
            "ok": !matches!(r.outcome, Outcome::Failed(_)),
            "streamed_answer": matches!(r.kind, Kind::ChatStream | Kind::SharedPrefix | Kind::Stop | Kind::LongCompletionStream),
        })).collect::<Vec<_>>(),
    })
}

/// Renders the PNG with matplotlib (in a venv under the kiln cache).
fn plot(root: &Path, json_path: &Path, png: &Path) -> anyhow::Result<()> {
    let python = crate::venv("plot-venv", PLOT_REQUIREMENTS)?;
    let script = root.join("xtask/soak_plot.py");
    let status = Command::new(&python)
        .arg(&script)
        .arg(json_path)
        .arg(png)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(status.success(), "{} failed ({status})", script.display());
    Ok(())
}

pub(crate) fn run(root: &Path, options: &Options) -> anyhow::Result<()> {
    // Before anything is written (the plot into docs/ would make the tree look changed).
    let commit = report::commit(root);
    let model = crate::fetch_model()?;
    let kiln = kiln_binary(root, options.dev)?;
    let dir = kiln_hub::kiln_home()?.join("soak");
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("server.log");
    let port = free_port()?;
    let vision = root.join("testdata/tiny-smolvlm");
    let mut command = Command::new(&kiln);
    command
        .args(["serve", "--port", &port.to_string(), "--model"])
        .arg(format!("{TEXT}={}", model.display()))
        .arg("--model")
        .arg(format!("{VISION}={}", vision.display()))
        .env("KILN_LOG", "info");
    let server = Server::start("kiln", &mut command, port, &log, Duration::from_secs(300))?;
    let corpus = Corpus::new(root)?;
    let run = drive(port, server.pid(), options, corpus);
    let exit = server.stop(Duration::from_secs(60));
    let run = run?;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut verdict = verdict(&run, options, &log_text);
    match exit {
        Ok(status) if status.success() => {}
        Ok(status) => verdict
            .failures
            .push(format!("the server exited with {status} after SIGTERM")),
        Err(err) => verdict.failures.push(format!("{err:#}")),
    }

    let json_path = dir.join("soak.json");
    std::fs::write(&json_path, serde_json::to_string(&series(&run, options))?)?;
    let png = if options.docs {
        root.join("docs/soak.png")
    } else {
        dir.join("soak.png")
    };
    plot(root, &json_path, &png)?;
    let table = table(
        &commit,
        &run,
        &verdict,
        options,
        options.docs.then_some("soak.png"),
    );
    print!("{table}");
    eprintln!(
        "soak: series in {}, plot in {}, server log in {}",
        json_path.display(),
        png.display(),
        log.display()
    );
    if options.docs {
        let path = root.join("docs/reliability.md");
        let doc = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        std::fs::write(&path, report::splice(&doc, DOC_BEGIN, DOC_END, &table))?;
        eprintln!("soak: wrote {} and {}", path.display(), png.display());
    }
    if !verdict.failures.is_empty() {
        bail!(
            "the soak failed:\n{}",
            verdict
                .failures
                .iter()
                .map(|f| format!("  - {f}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Corpus {
        Corpus {
            image_url: "data:image/png;base64,AAAA".into(),
            system_prompt: "s".into(),
        }
    }

    #[test]
    fn the_mix_draws_every_kind() {
        let mut rng = Rng::new(3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2_000 {
            seen.insert(Kind::pick(&mut rng));
        }
        assert_eq!(seen.len(), Kind::MIX.len());
    }

    #[test]
    fn every_kind_plans_valid_json_but_the_broken_one() {
        let mut rng = Rng::new(5);
        for (kind, _) in Kind::MIX {
            let p = plan(kind, &mut rng, &corpus());
            if kind != Kind::Invalid {
                let v: Value = serde_json::from_slice(&p.body).unwrap();
                assert!(v["model"].is_string(), "{kind:?}");
            }
        }
        let truncated = invalid(0, "q");
        assert!(serde_json::from_slice::<Value>(&truncated.body).is_err());
    }

    fn reply(status: u16, body: &str) -> anyhow::Result<Reply> {
        Ok(Reply {
            status,
            body: body.as_bytes().to_vec(),
            ..Reply::default()
        })
    }

    #[test]
    fn judging_tells_promises_kept_from_broken() {
        let refused = invalid(1, "q");
        let envelope = r#"{"error": {"message": "m", "type": "invalid_request_error"}}"#;
        assert_eq!(judge(&refused, reply(400, envelope)), Outcome::Refused);
        assert!(matches!(
            judge(&refused, reply(400, "{}")),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            judge(&refused, reply(500, envelope)),
            Outcome::Failed(_)
        ));
        let mut shed = reply(503, envelope).unwrap();
        assert!(
            matches!(judge(&refused, Ok(shed)), Outcome::Failed(_)),
            "no Retry-After"
        );
        shed = reply(429, envelope).unwrap();
        shed.retry_after = true;
        assert_eq!(judge(&refused, Ok(shed)), Outcome::Shed);
        assert!(matches!(
            judge(&refused, Err(anyhow::anyhow!("reset"))),
            Outcome::Failed(_)
        ));

        let mut rng = Rng::new(1);
        let json_req = plan(Kind::JsonSchema, &mut rng, &corpus());
        let answer = |content: &str, finish: &str| {
            json!({"choices": [{"message": {"content": content}, "finish_reason": finish}]})
                .to_string()
        };
        let good = answer(r#"{"name": "Ann", "age": 3}"#, "stop");
        assert_eq!(judge(&json_req, reply(200, &good)), Outcome::Ok);
        let bad = answer(r#"{"name": "Ann"}"#, "stop");
        assert!(matches!(
            judge(&json_req, reply(200, &bad)),
            Outcome::Failed(_)
        ));
        let cut = answer(r#"{"name": "An"#, "length");
        assert_eq!(judge(&json_req, reply(200, &cut)), Outcome::Ok);
    }

    #[test]
    fn streams_fold_into_choices_and_need_done() {
        let mut rng = Rng::new(2);
        let p = plan(Kind::Stop, &mut rng, &corpus());
        let events = vec![
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "Hi there"}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        ];
        let mut r = Reply {
            status: 200,
            events: events.clone(),
            done: true,
            ..Reply::default()
        };
        assert_eq!(judge(&p, Ok(r)), Outcome::Ok);
        r = Reply {
            status: 200,
            events,
            done: false,
            ..Reply::default()
        };
        assert!(matches!(judge(&p, Ok(r)), Outcome::Failed(_)));
        let leaked = vec![
            json!({"choices": [{"index": 0, "delta": {"content": "Hi. there"}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        ];
        r = Reply {
            status: 200,
            events: leaked,
            done: true,
            ..Reply::default()
        };
        assert!(matches!(judge(&p, Ok(r)), Outcome::Failed(_)));
    }

    #[test]
    fn memory_growth_after_warm_up_fails_the_run() {
        let options = Options::ci();
        let samples = |end_rss: f64, end_kv: f64| -> Vec<Sample> {
            (0..60)
                .map(|t| Sample {
                    t: f64::from(t),
                    rss_mib: if t < 50 { 1000.0 } else { end_rss },
                    kv_resident_mib: if t < 50 { 100.0 } else { end_kv },
                    fds: 20,
                    threads: 10,
                    ..Sample::default()
                })
                .collect()
        };
        let run_kv = |end_rss, end_kv| Run {
            records: Vec::new(),
            samples: samples(end_rss, end_kv),
            canary: Canary::default(),
            burst: Burst {
                rss_before_mib: 1000.0,
                rss_after_mib: 1050.0,
                ..Burst::default()
            },
            load: Duration::from_secs(60),
        };
        let run = |end_rss| run_kv(end_rss, 100.0);
        assert!(verdict(&run(1040.0), &options, "").failures.is_empty());
        // Growth that is the KV pool being written is not a leak.
        assert!(
            verdict(&run_kv(1400.0, 500.0), &options, "")
                .failures
                .is_empty()
        );
        let v = verdict(&run(1100.0), &options, "");
        assert_eq!(v.failures.len(), 1, "{:?}", v.failures);
        assert!(v.failures[0].contains("RSS outside the KV cache grew"));
        let v = verdict(&run(1000.0), &options, "thread 'x' panicked at src/a.rs");
        assert!(v.failures[0].contains("panic"));
    }
}
