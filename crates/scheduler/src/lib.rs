//! Kiln's batching engine: many concurrent generation requests turned into ragged runtime steps,
//! with continuous batching, chunked prefill, a paged KV cache with prefix sharing and
//! preemption, OpenAI's sampling and stop rules, streaming events, cancellation and metrics.
//!
//! The shape is an actor (as in TGI): [`Engine::start`] moves the model onto one engine thread
//! that owns it and runs the step loop; an [`EngineHandle`] (cheap to clone, usable from any
//! thread or async task) submits requests, each answered by its own [`GenerationStream`] of
//! [`Event`]s. No lock is held across a model step: the handle and the engine share only
//! channels and atomics. Dropping a stream cancels its request.

mod blocks;
mod constraint;
mod engine;
mod metrics;
mod planner;
mod sampling;
mod stop;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_runtime::{Model, RuntimeError};
use kiln_tokenizer::Tokenizer;

pub use constraint::{Grammar, Grammars, OutputFormat};
pub use sampling::{Logprobs, SamplingParams, TokenLogprob};

/// [`EngineConfig::max_batched_tokens`] by default.
pub const DEFAULT_MAX_BATCHED_TOKENS: usize = 512;
/// [`EngineConfig::max_running`] by default.
pub const DEFAULT_MAX_RUNNING: usize = 64;
/// [`EngineConfig::max_waiting`] by default.
pub const DEFAULT_MAX_WAITING: usize = 256;
/// [`EngineConfig::max_n`] by default.
pub const DEFAULT_MAX_N: usize = 16;
/// [`EngineConfig::prefix_caching`] by default.
pub const DEFAULT_PREFIX_CACHING: bool = true;
/// [`EngineConfig::model_name`] by default.
pub const DEFAULT_MODEL_NAME: &str = "default";

/// Engine limits. Defaults (the `DEFAULT_*` constants) suit a small model on a CPU.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Tokens one step may feed the model (decodes count one each; prefills are chunked to fit).
    pub max_batched_tokens: usize,
    /// Sequences that may run at once.
    pub max_running: usize,
    /// Requests that may wait for admission; beyond this a submit is `Overloaded`.
    pub max_waiting: usize,
    /// Most choices (`n`) one request may ask for.
    pub max_n: usize,
    /// Share full KV blocks between requests with a common prefix.
    pub prefix_caching: bool,
    /// The context length to serve (prompt + generated tokens), when shorter than the model's:
    /// bounds every request's cost, and what `max_tokens` defaults to.
    pub max_model_len: Option<usize>,
    /// The served model's name: its metrics carry it as their `model` label, so engines of
    /// several models can share one registry.
    pub model_name: String,
}

impl EngineConfig {
    /// The context length served for a model of `model_context` positions.
    pub fn context_length(&self, model_context: usize) -> usize {
        self.max_model_len
            .map_or(model_context, |len| len.min(model_context))
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batched_tokens: DEFAULT_MAX_BATCHED_TOKENS,
            max_running: DEFAULT_MAX_RUNNING,
            max_waiting: DEFAULT_MAX_WAITING,
            max_n: DEFAULT_MAX_N,
            prefix_caching: DEFAULT_PREFIX_CACHING,
            // The model's own context length.
            max_model_len: None,
            model_name: DEFAULT_MODEL_NAME.into(),
        }
    }
}

/// One generation request: prompt ids in, a stream of events out.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    /// Generated tokens per choice; `None` fills the context (or what the KV pool can hold).
    pub max_tokens: Option<usize>,
    /// Up to 4 strings that end a choice; they are not part of its text.
    pub stop: Vec<String>,
    /// Stop at the model's EOS ids (off only for benchmarks that need a fixed length).
    pub stop_at_eos: bool,
    /// Choices to generate from the one prompt (they share its KV blocks).
    pub n: usize,
    /// `Some(k)`: report each token's logprob and the `k` most likely alternatives.
    pub logprobs: Option<usize>,
    /// Leave control tokens out of the text (OpenAI's behaviour).
    pub skip_special_tokens: bool,
    /// The prompt's images, in prompt order (empty for text).
    pub images: Vec<ImageInput>,
    /// What the output must be, compiled by [`EngineHandle::compile`]; every choice is held
    /// to it token by token.
    pub grammar: Option<Grammar>,
}

/// An image in a prompt: its processed tiles, a hash of its pixels and of how they were
/// processed, and where its tokens are. The vision tower runs when the request reaches the
/// engine; its rows then fill the spans in order. The prefix cache keys the image's positions
/// by the hash, so two images behind the same placeholder tokens never share KV blocks, and
/// one image repeated (a system prompt's) does.
#[derive(Debug, Clone)]
pub struct ImageInput {
    pub tiles: Vec<kiln_media::Tile>,
    pub hash: [u8; 32],
    /// Runs of the image's tokens in the prompt, `(start, len)`, in order.
    pub spans: Vec<(usize, usize)>,
}

impl GenerationRequest {
    /// A single greedy choice stopping at EOS: the common starting point.
    pub fn greedy(prompt: Vec<u32>, max_tokens: usize) -> Self {
        Self {
            prompt,
            sampling: SamplingParams::greedy(),
            max_tokens: Some(max_tokens),
            stop: Vec::new(),
            stop_at_eos: true,
            n: 1,
            logprobs: None,
            skip_special_tokens: true,
            images: Vec::new(),
            grammar: None,
        }
    }
}

/// Why a choice ended, as OpenAI defines `finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS or a stop string.
    Stop,
    /// `max_tokens` or the context length.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// Token counts of a finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Over all choices.
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

/// What a request's stream yields, in order: per choice any number of `Token`s then one
/// `Finished`; after every choice has finished, one `Done`. An `Error` ends the stream instead.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Token {
        choice: usize,
        id: u32,
        /// The text this token releases (may be empty: a partial character or text that may
        /// start a stop string is held back).
        text: String,
        logprobs: Option<Logprobs>,
    },
    Finished {
        choice: usize,
        reason: FinishReason,
        /// Held-back text released at the end (never part of a stop string).
        text: String,
    },
    Done {
        usage: Usage,
    },
    Error(SchedulerError),
}

/// Everything a request can fail with. Submit-time errors come back from
/// [`EngineHandle::submit`]; later ones arrive as [`Event::Error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    #[error(
        "this model's maximum context length is {context_length} tokens; the request has {prompt_tokens} prompt tokens and asks for {max_tokens} more"
    )]
    ContextLengthExceeded {
        prompt_tokens: usize,
        max_tokens: usize,
        context_length: usize,
    },
    #[error(
        "the request needs {needed_tokens} tokens of KV cache but the server's cache holds {capacity_tokens}"
    )]
    ExceedsKvCache {
        needed_tokens: usize,
        capacity_tokens: usize,
    },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("prompt token id {id} is outside the vocabulary (size {vocab_size})")]
    BadPromptToken { id: u32, vocab_size: usize },
    #[error("logit_bias token id {id} is outside the vocabulary (size {vocab_size})")]
    BadLogitBias { id: u32, vocab_size: usize },
    #[error("{param}: {message}")]
    InvalidParameter {
        param: &'static str,
        message: String,
    },
    #[error("the server is overloaded ({waiting} requests waiting); retry later")]
    Overloaded { waiting: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The model failed while running this request's step.
    #[error("the model failed: {0}")]
    Model(String),
    /// The engine thread is gone (it panicked or was stopped).
    #[error("the engine has stopped")]
    EngineStopped,
}

impl From<RuntimeError> for SchedulerError {
    fn from(err: RuntimeError) -> Self {
        Self::Model(err.to_string())
    }
}

/// A request's events. Dropping it cancels the request: its KV blocks are freed by the next step.
#[derive(Debug)]
pub struct GenerationStream {
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    prompt_tokens: usize,
}

impl GenerationStream {
    /// The next event, or `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// [`Self::next`] for threads outside an async runtime.
    pub fn blocking_next(&mut self) -> Option<Event> {
        self.rx.blocking_recv()
    }

    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }
}

/// What every choice of a finished request produced: the collected form of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub choices: Vec<ChoiceOutput>,
    pub usage: Usage,
}

/// One choice of a [`Completion`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChoiceOutput {
    /// Every released text in order, the `Finished` tail included.
    pub text: String,
    /// The generated token ids (an EOS that ends the choice is not one of them).
    pub tokens: Vec<u32>,
    /// One per token when the request asked for logprobs, else empty.
    pub logprobs: Vec<Logprobs>,
    /// One per token: the byte offset in `text` where that token's text starts.
    pub text_offsets: Vec<usize>,
    /// `Some` for every choice the engine ran: each finishes before `Done`.
    pub finish_reason: Option<FinishReason>,
}

/// The one fold of a request's [`Event`]s into a [`Completion`]: feed it the events in order,
/// whichever way they arrive (an iterator, an async stream, a channel shared by several
/// requests); [`Completion::collect`] and [`Completion::receive`] drive it for the plain cases.
#[derive(Debug, Clone)]
pub struct CompletionFold {
    choices: Vec<ChoiceOutput>,
}

impl CompletionFold {
    /// A fold for a request with `n` choices.
    pub fn new(n: usize) -> Self {
        Self {
            choices: vec![ChoiceOutput::default(); n],
        }
    }

    /// Folds the next event; `Some` once the stream is over: the completion at `Done`, the
    /// error at `Error`. Events for a choice beyond `n` are ignored. A stream that ends before
    /// either means the engine is gone ([`SchedulerError::EngineStopped`]).
    pub fn push(&mut self, event: Event) -> Option<Result<Completion, SchedulerError>> {
        match event {
            Event::Token {
                choice,
                id,
                text,
                logprobs,
            } => {
                if let Some(c) = self.choices.get_mut(choice) {
                    c.text_offsets.push(c.text.len());
                    c.text.push_str(&text);
                    c.tokens.push(id);
                    c.logprobs.extend(logprobs);
                }
                None
            }
            Event::Finished {
                choice,
                reason,
                text,
            } => {
                if let Some(c) = self.choices.get_mut(choice) {
                    c.text.push_str(&text);
                    c.finish_reason = Some(reason);
                }
                None
            }
            Event::Done { usage } => Some(Ok(Completion {
                choices: std::mem::take(&mut self.choices),
                usage,
            })),
            Event::Error(err) => Some(Err(err)),
        }
    }
}

impl Completion {
    /// Folds a stream's events into per-choice outputs.
    pub fn collect(
        events: impl IntoIterator<Item = Event>,
        n: usize,
    ) -> Result<Self, SchedulerError> {
        let mut fold = CompletionFold::new(n);
        for event in events {
            if let Some(done) = fold.push(event) {
                return done;
            }
        }
        Err(SchedulerError::EngineStopped)
    }

    /// [`Self::collect`] for a stream read in an async task.
    pub async fn receive(stream: &mut GenerationStream, n: usize) -> Result<Self, SchedulerError> {
        let mut fold = CompletionFold::new(n);
        while let Some(event) = stream.next().await {
            if let Some(done) = fold.push(event) {
                return done;
            }
        }
        Err(SchedulerError::EngineStopped)
    }
}

#[cfg(test)]
mod completion_tests {
    use super::*;

    fn token(choice: usize, id: u32, text: &str) -> Event {
        Event::Token {
            choice,
            id,
            text: text.into(),
            logprobs: None,
        }
    }

    #[test]
    fn folds_choices_in_any_interleaving() {
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
            cached_tokens: 0,
        };
        let events = vec![
            token(1, 7, "b"),
            token(0, 5, "he"),
            token(0, 6, ""),
            token(1, 8, "c"),
            Event::Finished {
                choice: 1,
                reason: FinishReason::Length,
                text: String::new(),
            },
            token(0, 9, "l"),
            Event::Finished {
                choice: 0,
                reason: FinishReason::Stop,
                text: "lo".into(),
            },
            Event::Done { usage },
        ];
        let c = Completion::collect(events, 2).unwrap();
        assert_eq!(c.usage, usage);
        assert_eq!(c.choices[0].text, "hello");
        assert_eq!(c.choices[0].tokens, vec![5, 6, 9]);
        assert_eq!(c.choices[0].text_offsets, vec![0, 2, 2]);
        assert_eq!(c.choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(c.choices[1].text, "bc");
        assert_eq!(c.choices[1].text_offsets, vec![0, 1]);
        assert_eq!(c.choices[1].finish_reason, Some(FinishReason::Length));
        assert!(c.choices.iter().all(|c| c.logprobs.is_empty()));
    }

    #[test]
    fn keeps_logprobs_per_token_and_ignores_unknown_choices() {
        let lp = |id: u32| Logprobs {
            chosen: TokenLogprob {
                id,
                text: id.to_string(),
                logprob: -0.5,
            },
            top: Vec::new(),
        };
        let mut fold = CompletionFold::new(1);
        for (choice, id) in [(0, 1), (3, 2), (0, 3)] {
            let event = Event::Token {
                choice,
                id,
                text: "x".into(),
                logprobs: Some(lp(id)),
            };
            assert!(fold.push(event).is_none());
        }
        let done = fold.push(Event::Done {
            usage: Usage::default(),
        });
        let c = done.unwrap().unwrap();
        assert_eq!(c.choices.len(), 1);
        assert_eq!(c.choices[0].logprobs, vec![lp(1), lp(3)]);
        assert_eq!(c.choices[0].finish_reason, None);
    }

    #[test]
    fn an_error_or_a_cut_stream_fails_the_fold() {
        let events = vec![token(0, 1, "a"), Event::Error(SchedulerError::ShuttingDown)];
        assert_eq!(
            Completion::collect(events, 1),
            Err(SchedulerError::ShuttingDown)
        );
        assert_eq!(
            Completion::collect(vec![token(0, 1, "a")], 1),
            Err(SchedulerError::EngineStopped)
        );
    }
}

/// Facts about the served model that request validation needs.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub context_length: usize,
    pub vocab_size: usize,
    /// Tokens the whole KV pool can hold.
    pub kv_capacity_tokens: usize,
}

/// The longest sequence the KV pool holds alone: its pages are one per block per KV group, a
/// sliding group's bounded by its window ([`planner::pages_for`], the admission rule). A model
/// whose layers all slide holds any length its window and a chunk fit in.
fn kv_capacity_tokens(model: &Model, config: &EngineConfig) -> usize {
    let (pages, bs) = (model.num_blocks(), model.block_size());
    let windows = &model.kv_groups().windows;
    let limits = planner::Limits {
        max_batched_tokens: config.max_batched_tokens,
        max_running: config.max_running,
        kv_groups: windows,
    };
    let fits = |positions: usize| planner::pages_for(positions.div_ceil(bs), bs, limits) <= pages;
    // The largest that fits, searched up to the longest anything could be.
    let (mut lo, mut hi) = (
        0usize,
        (pages * bs).max(model.config().max_position_embeddings),
    );
    if fits(hi) {
        return hi;
    }
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) { lo = mid } else { hi = mid }
    }
    lo
}

pub(crate) enum Command {
    Submit(Box<engine::Submission>),
    Shutdown { deadline: Instant },
}

#[derive(Debug)]
pub(crate) struct Shared {
    waiting: AtomicUsize,
    accepting: AtomicBool,
    stopped: AtomicBool,
}

struct StoppedGuard(Arc<Shared>);

impl Drop for StoppedGuard {
    fn drop(&mut self) {
        self.0.accepting.store(false, Ordering::SeqCst);
        self.0.stopped.store(true, Ordering::SeqCst);
    }
}

/// The running engine: owns its thread. Dropping it without [`Engine::shutdown`] leaves the
/// thread serving until every handle is gone.
#[derive(Debug)]
pub struct Engine {
    handle: EngineHandle,
    thread: Option<JoinHandle<()>>,
}

/// Submits requests to the engine; cheap to clone.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    info: ModelInfo,
    config: Arc<EngineConfig>,
    grammars: Arc<constraint::Grammars>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Submit(_) => f.write_str("Submit"),
            Self::Shutdown { deadline } => write!(f, "Shutdown({deadline:?})"),
        }
    }
}

impl Engine {
    /// Starts the engine thread with `model`; metrics go into `registry`.
    pub fn start(
        model: Model,
        tokenizer: Arc<Tokenizer>,
        config: EngineConfig,
        registry: &prometheus::Registry,
    ) -> Result<Self, SchedulerError> {
        let metrics = metrics::Metrics::register(registry, &config.model_name).map_err(|e| {
            SchedulerError::InvalidParameter {
                param: "registry",
                message: e.to_string(),
            }
        })?;
        let info = ModelInfo {
            context_length: config.context_length(model.config().max_position_embeddings),
            vocab_size: model.config().vocab_size,
            kv_capacity_tokens: kv_capacity_tokens(&model, &config),
        };
        let shared = Arc::new(Shared {
            waiting: AtomicUsize::new(0),
            accepting: AtomicBool::new(true),
            stopped: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel();
        let config = Arc::new(config);
        let grammar_tokenizer = tokenizer.clone();
        let thread = {
            let shared = shared.clone();
            let config = config.clone();
            std::thread::Builder::new()
                .name("kiln-engine".into())
                .spawn(move || {
                    // Marks the engine stopped however the thread ends, a panic included, so
                    // submits fail fast instead of queueing forever.
                    let _guard = StoppedGuard(shared.clone());
                    engine::run(model, &tokenizer, &config, metrics, &shared, rx);
                })
                .map_err(|e| SchedulerError::Model(format!("spawning the engine thread: {e}")))?
        };
        Ok(Self {
            handle: EngineHandle {
                tx,
                shared,
                grammars: Arc::new(constraint::Grammars::new(
                    grammar_tokenizer,
                    info.vocab_size,
                )),
                info,
                config,
            },
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Stops admitting, lets in-flight requests finish until `grace` has passed, cancels the
    /// rest (their streams get [`SchedulerError::ShuttingDown`]) and joins the engine thread.
    pub fn shutdown(mut self, grace: Duration) {
        self.handle.begin_shutdown(grace);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl EngineHandle {
    pub fn model_info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Compiles an output format for this model's vocabulary (blocking: up to a few hundred
    /// milliseconds the first time, while the vocabulary's trie is built, and for large
    /// schemas). An unsupported schema is [`SchedulerError::InvalidParameter`] for `param`.
    pub fn compile(
        &self,
        format: &OutputFormat,
        param: &'static str,
    ) -> Result<Grammar, SchedulerError> {
        self.grammars.compile(format, param)
    }

    /// Requests waiting for admission now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::SeqCst)
    }

    /// Checks the request against the model and the limits, then queues it. Never blocks.
    pub fn submit(&self, request: GenerationRequest) -> Result<GenerationStream, SchedulerError> {
        if !self.shared.accepting.load(Ordering::SeqCst) {
            return Err(SchedulerError::ShuttingDown);
        }
        if self.shared.stopped.load(Ordering::SeqCst) {
            return Err(SchedulerError::EngineStopped);
        }
        let max_tokens = self.check(&request)?;
        let waiting = self.shared.waiting.fetch_add(1, Ordering::SeqCst);
        if waiting >= self.config.max_waiting {
            self.shared.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(SchedulerError::Overloaded { waiting });
        }
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        let prompt_tokens = request.prompt.len();
        let submission = engine::Submission {
            request,
            max_tokens,
            events,
            arrived: Instant::now(),
        };
        if self.tx.send(Command::Submit(Box::new(submission))).is_err() {
            self.shared.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(SchedulerError::EngineStopped);
        }
        Ok(GenerationStream { rx, prompt_tokens })
    }

    /// Validates a request; returns the effective `max_tokens`.
    fn check(&self, r: &GenerationRequest) -> Result<usize, SchedulerError> {
        let info = &self.info;
        if r.prompt.is_empty() {
            return Err(SchedulerError::EmptyPrompt);
        }
        let mut end = 0;
        for image in &r.images {
            for &(start, len) in &image.spans {
                if start < end || len == 0 || start + len > r.prompt.len() {
                    return Err(SchedulerError::InvalidParameter {
                        param: "images",
                        message: format!(
                            "an image's tokens at {start}..{} are out of order or outside the \
                             {}-token prompt",
                            start + len,
                            r.prompt.len()
                        ),
                    });
                }
                end = start + len;
            }
        }
        if let Some(&id) = r.prompt.iter().find(|&&id| id as usize >= info.vocab_size) {
            return Err(SchedulerError::BadPromptToken {
                id,
                vocab_size: info.vocab_size,
            });
        }
        if let Some(&(id, _)) = r
            .sampling
            .logit_bias
            .iter()
            .find(|(id, _)| *id as usize >= info.vocab_size)
        {
            return Err(SchedulerError::BadLogitBias {
                id,
                vocab_size: info.vocab_size,
            });
        }
        if r.n == 0 || r.n > self.config.max_n {
            return Err(SchedulerError::InvalidParameter {
                param: "n",
                message: format!("must be between 1 and {}", self.config.max_n),
            });
        }
        if r.stop.len() > 4 {
            return Err(SchedulerError::InvalidParameter {
                param: "stop",
                message: "at most 4 stop sequences".into(),
            });
        }
        if r.logprobs.is_some_and(|k| k > 20) {
            return Err(SchedulerError::InvalidParameter {
                param: "top_logprobs",
                message: "must be between 0 and 20".into(),
            });
        }
        if r.max_tokens == Some(0) {
            return Err(SchedulerError::InvalidParameter {
                param: "max_tokens",
                message: "must be at least 1".into(),
            });
        }
        let prompt = r.prompt.len();
        let room = info.context_length.saturating_sub(prompt);
        let max_tokens = match r.max_tokens {
            Some(m) => m,
            // Fill the context, but never ask for more than the cache could ever hold.
            None => room.min((info.kv_capacity_tokens + 1).saturating_sub(prompt)),
        };
        if max_tokens == 0 || prompt + max_tokens > info.context_length {
            return Err(SchedulerError::ContextLengthExceeded {
                prompt_tokens: prompt,
                max_tokens: max_tokens.max(1),
                context_length: info.context_length,
            });
        }
        // The last generated token is never fed back, so it needs no slot.
        let needed = prompt + max_tokens - 1;
        if needed > info.kv_capacity_tokens {
            return Err(SchedulerError::ExceedsKvCache {
                needed_tokens: needed,
                capacity_tokens: info.kv_capacity_tokens,
            });
        }
        Ok(max_tokens)
    }

    /// Stops admitting new requests; in-flight ones get until `grace` from now.
    pub fn begin_shutdown(&self, grace: Duration) {
        self.shared.accepting.store(false, Ordering::SeqCst);
        let _ = self.tx.send(Command::Shutdown {
            deadline: Instant::now() + grace,
        });
    }

    /// Whether the engine thread is still serving.
    pub fn is_running(&self) -> bool {
        !self.shared.stopped.load(Ordering::SeqCst)
    }
}
