//! Server-sent events: a streamed response body fed by a channel, and the sender that writes
//! `data:` events into it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderValue};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::body::Body;
use crate::error::ApiError;

/// How many events may wait for a slow client before the generating task waits too.
const SSE_BUFFER: usize = 64;

/// A streamed body fed by a channel; when the client goes away hyper drops it, the sender sees
/// the channel closed, and the request is cancelled.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// An event-stream response and the sender that feeds it; a client that takes no event for
/// `send_timeout` while the buffer is full is treated as gone (see [`Sse::send`]).
pub(crate) fn sse_response(send_timeout: Duration) -> (Sse, Response<Body>) {
    let (tx, rx) = mpsc::channel(SSE_BUFFER);
    let mut r = Response::new(ChannelBody { rx }.boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    (
        Sse {
            tx,
            send_timeout,
            stalled: AtomicBool::new(false),
        },
        r,
    )
}

/// Sends SSE `data:` lines; `false` once the client is gone.
#[derive(Debug)]
pub(crate) struct Sse {
    tx: mpsc::Sender<Bytes>,
    send_timeout: Duration,
    /// Set once a send timed out: later sends fail at once instead of waiting again.
    stalled: AtomicBool,
}

/// One SSE event carrying `value` as JSON: `data: {…}\n\n`. JSON escapes every line break
/// inside strings, so an event is one line whatever the model wrote. (Public for the fuzzer,
/// which checks exactly that.)
pub fn sse_event(value: &impl serde::Serialize) -> Option<Bytes> {
    let json = serde_json::to_string(value).ok()?;
    Some(Bytes::from(format!("data: {json}\n\n")))
}

impl Sse {
    /// Queues one event; `false` when the client is gone — it closed the connection, or it
    /// read nothing for `send_timeout` while [`SSE_BUFFER`] events (and the socket's buffers)
    /// waited. The caller then drops its generation stream, which cancels the request and
    /// frees its KV blocks, so a client that stops reading holds at most the events made in
    /// that time rather than the whole answer.
    pub(crate) async fn send(&self, value: &impl serde::Serialize) -> bool {
        let Some(event) = sse_event(value) else {
            return false;
        };
        self.push(event).await
    }

    async fn push(&self, event: Bytes) -> bool {
        if self.stalled.load(Ordering::Relaxed) {
            return false;
        }
        match tokio::time::timeout(self.send_timeout, self.tx.send(event)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                self.stalled.store(true, Ordering::Relaxed);
                tracing::warn!(
                    timeout_s = self.send_timeout.as_secs_f64(),
                    "a streaming client read nothing for the send timeout; cancelling its request"
                );
                false
            }
        }
    }

    pub(crate) async fn done(&self) {
        let _ = self.push(Bytes::from_static(b"data: [DONE]\n\n")).await;
    }

    /// A failure after the stream started: an error object as the last event (as vLLM does).
    pub(crate) async fn error(&self, e: ApiError) {
        let _ = self.send(&e.envelope()).await;
    }
}
