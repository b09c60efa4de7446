//! The serving benchmark's load generator: closed-loop OpenAI streaming clients (tokio + hyper)
//! that time every token of every `/v1/completions` stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// One load pattern: `concurrency` streams, each sending its next request as soon as the last
/// finished, until `requests` have been sent or `time_limit` has passed.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) name: String,
    pub(crate) prompt_tokens: usize,
    /// Leading prompt tokens every request shares (a common system prompt); 0 for none.
    pub(crate) shared_prefix: usize,
    pub(crate) concurrency: usize,
    pub(crate) requests: usize,
    pub(crate) max_tokens: usize,
    pub(crate) time_limit: Duration,
    pub(crate) seed: u64,
    /// Token ids banned with a -100 logit bias (the model's end-of-sequence ids), so every
    /// request makes exactly `max_tokens`.
    pub(crate) banned: Vec<u32>,
}

/// What one request saw.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestResult {
    pub(crate) error: Option<String>,
    pub(crate) start: Option<Instant>,
    /// Arrival of each chunk that carried text.
    pub(crate) token_times: Vec<Instant>,
    pub(crate) end: Option<Instant>,
    /// From the server's `usage`.
    pub(crate) prompt_tokens: Option<u64>,
    pub(crate) completion_tokens: Option<u64>,
}

impl RequestResult {
    pub(crate) fn ttft(&self) -> Option<Duration> {
        Some(self.token_times.first()?.duration_since(self.start?))
    }
}

/// Token ids of request `index`'s prompt: the first `shared_prefix` come from the seed alone (the
/// same for every request), the rest from the seed and the index (no two requests share them).
/// Ids avoid the first 100 (special tokens in most vocabularies) and stay below 49 000.
pub(crate) fn prompt(scenario: &Scenario, index: usize) -> Vec<u32> {
    let mut shared = XorShift::new(scenario.seed);
    let mut own =
        XorShift::new(scenario.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (0..scenario.prompt_tokens)
        .map(|i| {
            let r = if i < scenario.shared_prefix {
                shared.next()
            } else {
                own.next()
            };
            (100 + r % 48_900) as u32
        })
        .collect()
}

/// A small seeded generator: what the load generators send is a function of their seed.
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The request body: a token-id prompt (so both servers see exactly `prompt_tokens` tokens),
/// greedy, streamed with usage, and the `banned` ids (EOS) suppressed so every request
/// generates `max_tokens`.
pub(crate) fn body(prompt: &[u32], max_tokens: usize, banned: &[u32]) -> Value {
    let bias: serde_json::Map<String, Value> = banned
        .iter()
        .map(|id| (id.to_string(), json!(-100)))
        .collect();
    json!({
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": true,
        "stream_options": { "include_usage": true },
        "logit_bias": bias
    })
}

/// Runs a scenario against the server on `port`; returns every request's result and the wall
/// time from the first request's start to the last one's end.
pub(crate) fn run(
    port: u16,
    scenario: &Scenario,
) -> anyhow::Result<(Vec<RequestResult>, Duration)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the load generator's runtime")?;
    runtime.block_on(async {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..scenario.concurrency {
            let next = next.clone();
            let scenario = scenario.clone();
            workers.push(tokio::spawn(async move {
                let mut results = Vec::new();
                loop {
                    if started.elapsed() > scenario.time_limit {
                        break;
                    }
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    if index >= scenario.requests {
                        break;
                    }
                    let body = body(
                        &prompt(&scenario, index),
                        scenario.max_tokens,
                        &scenario.banned,
                    );
                    results.push(stream_completion(port, &body).await);
                }
                results
            }));
        }
        let mut results = Vec::new();
        for worker in workers {
            results.extend(worker.await.context("a load-generator task failed")?);
        }
        let first = results.iter().filter_map(|r| r.start).min();
        let last = results.iter().filter_map(|r| r.end).max();
        let wall = match (first, last) {
            (Some(a), Some(b)) => b.duration_since(a),
            _ => started.elapsed(),
        };
        Ok((results, wall))
    })
}

/// One streamed completion, timed; failures are recorded in the result, not returned.
pub(crate) async fn stream_completion(port: u16, body: &Value) -> RequestResult {
    let mut result = RequestResult {
        start: Some(Instant::now()),
        ..RequestResult::default()
    };
    if let Err(err) = stream_into(port, body, &mut result).await {
        result.error = Some(format!("{err:#}"));
    }
    result.end = Some(Instant::now());
    result
}

/// An HTTP/1.1 connection to the server on `port`: the sender, and the task driving the
/// connection (aborting it hangs up).
pub(crate) async fn connect(
    port: u16,
) -> anyhow::Result<(
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .context("connecting")?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    Ok((sender, tokio::spawn(conn)))
}

/// What one complete line of an event stream carried.
pub(crate) enum SseLine {
    Event(Value),
    Done,
}

/// Takes the complete lines out of `buffer` (a partial last line stays) and gives back the
/// `data:` ones: `[DONE]`, or the event's JSON.
pub(crate) fn take_sse_lines(buffer: &mut Vec<u8>) -> anyhow::Result<Vec<SseLine>> {
    let mut out = Vec::new();
    while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buffer.drain(..=end).collect();
        let line = String::from_utf8_lossy(&line);
        let Some(payload) = line.trim_end().strip_prefix("data:") else {
            continue;
        };
        let payload = payload.trim();
        out.push(if payload == "[DONE]" {
            SseLine::Done
        } else {
            SseLine::Event(
                serde_json::from_str(payload)
                    .with_context(|| format!("an event that is not JSON: {payload}"))?,
            )
        });
    }
    Ok(out)
}

async fn stream_into(port: u16, body: &Value, result: &mut RequestResult) -> anyhow::Result<()> {
    let (mut sender, conn) = connect(port).await?;
    let request = hyper::Request::post("/v1/completions")
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let response = sender.send_request(request).await.context("sending")?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&bytes));
    }
    let mut buffer: Vec<u8> = Vec::new();
    let mut done = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the stream")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let now = Instant::now();
        buffer.extend_from_slice(&data);
        for line in take_sse_lines(&mut buffer)? {
            let SseLine::Event(event) = line else {
                done = true;
                continue;
            };
            if let Some(error) = event.get("error") {
                bail!("error event: {error}");
            }
            let text = event["choices"][0]["text"].as_str().unwrap_or_default();
            if !text.is_empty() {
                result.token_times.push(now);
            }
            if let Some(usage) = event.get("usage").filter(|u| !u.is_null()) {
                result.prompt_tokens = usage["prompt_tokens"].as_u64();
                result.completion_tokens = usage["completion_tokens"].as_u64();
            }
        }
    }
    conn.abort();
    if !done {
        bail!("the stream ended without `data: [DONE]`");
    }
    Ok(())
}

/// The `q`-quantile (0..=1) of `values`, nearest-rank; `None` when empty.
pub(crate) fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(shared_prefix: usize) -> Scenario {
        Scenario {
            name: "t".into(),
            prompt_tokens: 128,
            shared_prefix,
            concurrency: 1,
            requests: 4,
            max_tokens: 8,
            time_limit: Duration::from_secs(1),
            seed: 7,
            banned: vec![2],
        }
    }

    #[test]
    fn prompts_are_distinct_unless_a_prefix_is_shared() {
        let s = scenario(0);
        let (a, b) = (prompt(&s, 0), prompt(&s, 1));
        assert_eq!(a.len(), 128);
        assert_eq!(
            a,
            prompt(&s, 0),
            "a prompt is a function of the seed and index"
        );
        assert_ne!(a[..16], b[..16]);
        assert!(a.iter().all(|&id| (100..49_000).contains(&id)));

        let s = scenario(96);
        let (a, b) = (prompt(&s, 0), prompt(&s, 1));
        assert_eq!(a[..96], b[..96]);
        assert_ne!(a[96..], b[96..]);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[3.0], 0.9), Some(3.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
