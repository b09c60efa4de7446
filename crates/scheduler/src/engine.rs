//! The engine thread: owns the model, the KV block manager and every sequence. Each step asks
//! the planner (`planner.rs`) who runs, with how many tokens, who is preempted and who is
//! admitted, carries that plan out on the sequences, runs one ragged forward, samples, and
//! streams the results.
//!
//! Every sequence is `tokens` (prompt, then generated) of which the first `computed` are in its
//! KV blocks; a step feeds the rest (or a chunk of it), and when nothing is left uncomputed the
//! logits pick the next token. Prefill, chunked prefill, decode, recompute after preemption and
//! the tail of a forked choice are all that one rule.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Instant;

use kiln_runtime::{Embeds, FREED_BLOCK, Model, SeqInput};
use kiln_tokenizer::{Detokenizer, Tokenizer};
use tokio::sync::mpsc::UnboundedSender;

use crate::blocks::BlockManager;
use crate::constraint::Constrained;
use crate::metrics::Metrics;
use crate::planner;
use crate::sampling::{self, Rng};
use crate::stop::{StopCheck, StopMatcher};
use crate::{
    Command, EngineConfig, Event, FinishReason, GenerationRequest, Logprobs, SchedulerError,
    Shared, TokenLogprob, Usage,
};

/// A checked request on its way to the engine thread.
pub(crate) struct Submission {
    pub(crate) request: GenerationRequest,
    pub(crate) max_tokens: usize,
    pub(crate) events: UnboundedSender<Event>,
    pub(crate) arrived: Instant,
}

struct Request {
    request: GenerationRequest,
    max_tokens: usize,
    events: UnboundedSender<Event>,
    arrived: Instant,
    first_token_seen: bool,
    unfinished: usize,
    usage: Usage,
    seed: u64,
}

struct Seq<'t> {
    request: u64,
    choice: usize,
    tokens: Vec<u32>,
    prompt_len: usize,
    computed: usize,
    blocks: Vec<u32>,
    /// Chain hashes of the full blocks registered so far.
    hashes: Vec<u64>,
    rng: Rng,
    detok: Detokenizer<'t>,
    stop: StopMatcher,
    /// Choices still to be forked from this one when its prompt is complete.
    pending_forks: usize,
    /// Not yet admitted even once: still counts against the waiting limit.
    fresh: bool,
    /// Admission order: the newest running sequence is preempted first.
    admitted: u64,
    last_token_at: Option<Instant>,
    done: bool,
    /// The prompt's images with their tower rows, shared by the request's choices.
    images: Option<Arc<SeqImages>>,
    /// The grammar's matcher, for a request with an output format.
    constraint: Option<Box<Constrained>>,
}

/// An image's spans in the prompt and the tower's rows for them (`hidden` values per token, in
/// span order).
struct EncodedImage {
    spans: Vec<(usize, usize)>,
    rows: Vec<f32>,
}

/// A prompt's images once encoded: each image's rows and spans, and the prompt as the prefix
/// cache sees it (image positions keyed by the image's hash instead of the placeholder id).
struct SeqImages {
    images: Vec<EncodedImage>,
    hidden: usize,
    keys: Vec<u32>,
}

impl SeqImages {
    /// The tower's rows for each image of `request`, or the error that refuses it.
    fn encode(
        model: &Model,
        request: &GenerationRequest,
        metrics: &Metrics,
    ) -> Result<Self, SchedulerError> {
        let hidden = model.config().hidden_size;
        let mut keys = request.prompt.clone();
        let mut images = Vec::with_capacity(request.images.len());
        for image in &request.images {
            let started = Instant::now();
            let rows = model.encode_image(&image.tiles)?;
            metrics
                .image_encode
                .observe(started.elapsed().as_secs_f64());
            let tokens: usize = image.spans.iter().map(|&(_, len)| len).sum();
            if rows.len() != tokens * hidden {
                return Err(SchedulerError::InvalidParameter {
                    param: "images",
                    message: format!(
                        "the vision tower made {} rows for an image with {tokens} tokens",
                        rows.len() / hidden.max(1)
                    ),
                });
            }
            let mut j = 0u32;
            for &(start, len) in &image.spans {
                for key in &mut keys[start..start + len] {
                    *key = image_key(&image.hash, j);
                    j += 1;
                }
            }
            images.push(EncodedImage {
                spans: image.spans.clone(),
                rows,
            });
        }
        Ok(Self {
            images,
            hidden,
            keys,
        })
    }

    /// The rows for new tokens `range` of the prompt, as offsets into the chunk.
    fn embeds(&self, range: std::ops::Range<usize>) -> Vec<Embeds<'_>> {
        let mut out = Vec::new();
        for EncodedImage { spans, rows } in &self.images {
            let mut row = 0;
            for &(start, len) in spans {
                let (from, to) = (start.max(range.start), (start + len).min(range.end));
                if from < to {
                    let first = row + from - start;
                    out.push(Embeds {
                        at: from - range.start,
                        rows: &rows[first * self.hidden..(first + to - from) * self.hidden],
                    });
                }
                row += len;
            }
        }
        out
    }
}

/// The prefix-cache key of an image's `j`-th token: from its hash, never a vocabulary id (high
/// bit set) nor the KV-group markers near `u32::MAX`.
fn image_key(hash: &[u8; 32], j: u32) -> u32 {
    // FNV-1a over the hash and the index.
    let mut h: u32 = 0x811c_9dc5;
    for &b in hash.iter().chain(&j.to_le_bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    0x8000_0000 | (h & 0x3fff_ffff)
}

impl Seq<'_> {
    fn uncomputed(&self) -> usize {
        self.tokens.len() - self.computed
    }

    /// The tokens as the prefix cache keys them: image positions by their image.
    fn cache_tokens(&self) -> Cow<'_, [u32]> {
        match &self.images {
            None => Cow::Borrowed(&self.tokens),
            Some(images) => {
                let mut keys = images.keys.clone();
                keys.extend_from_slice(&self.tokens[self.prompt_len..]);
                Cow::Owned(keys)
            }
        }
    }

    fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
}

struct State<'t> {
    tokenizer: &'t Tokenizer,
    config: &'t EngineConfig,
    metrics: Metrics,
    shared: &'t Shared,
    blocks: BlockManager,
    /// The model's KV groups' windows ([`kiln_runtime::KvGroups`]): a table holds a page per
    /// block per group, and a sliding group's pages are given back as they slide out.
    kv_groups: Vec<Option<usize>>,
    context_length: usize,
    eos: Vec<u32>,
    requests: HashMap<u64, Request>,
    waiting: VecDeque<Seq<'t>>,
    running: Vec<Seq<'t>>,
    next_request: u64,
    tick: u64,
    /// Bytes of the KV pool, for the resident-bytes gauge.
    kv_bytes: usize,
}

pub(crate) fn run(
    mut model: Model,
    tokenizer: &Tokenizer,
    config: &EngineConfig,
    metrics: Metrics,
    shared: &Shared,
    rx: mpsc::Receiver<Command>,
) {
    let mut st = State {
        tokenizer,
        config,
        metrics,
        shared,
        blocks: BlockManager::new(
            model.num_blocks(),
            model.block_size(),
            config.prefix_caching,
        ),
        kv_groups: model.kv_groups().windows.clone(),
        context_length: config.context_length(model.config().max_position_embeddings),
        eos: tokenizer.eos_ids().to_vec(),
        requests: HashMap::new(),
        waiting: VecDeque::new(),
        running: Vec::new(),
        next_request: 0,
        tick: 0,
        kv_bytes: model.kv_cache_bytes(),
    };
    let mut deadline: Option<Instant> = None;
    let mut disconnected = false;
    loop {
        if st.idle() {
            if deadline.is_some() || disconnected {
                break;
            }
            match rx.recv() {
                Ok(cmd) => st.command(cmd, &mut deadline, &model),
                Err(_) => break,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(cmd) => st.command(cmd, &mut deadline, &model),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        st.drop_cancelled();
        if !st.idle() {
            st.step(&mut model);
        }
        st.update_gauges();
    }
    shared.accepting.store(false, Ordering::SeqCst);
    let left: Vec<u64> = st.requests.keys().copied().collect();
    for id in left {
        st.fail(id, SchedulerError::ShuttingDown);
    }
    // Anything that raced into the channel after the loop ended.
    while let Ok(Command::Submit(s)) = rx.try_recv() {
        shared.waiting.fetch_sub(1, Ordering::SeqCst);
        let _ = s.events.send(Event::Error(SchedulerError::ShuttingDown));
    }
    st.update_gauges();
}

impl<'t> State<'t> {
    fn idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    fn command(&mut self, cmd: Command, deadline: &mut Option<Instant>, model: &Model) {
        match cmd {
            Command::Submit(s) => self.enqueue(*s, model),
            Command::Shutdown { deadline: d } => {
                *deadline = Some(deadline.map_or(d, |old| old.min(d)));
            }
        }
    }

    fn enqueue(&mut self, s: Submission, model: &Model) {
        // The vision tower runs once per request, here: a failure refuses the request before
        // it holds anything.
        let images = if s.request.images.is_empty() {
            None
        } else {
            match SeqImages::encode(model, &s.request, &self.metrics) {
                Ok(images) => Some(Arc::new(images)),
                Err(e) => {
                    self.shared.waiting.fetch_sub(1, Ordering::SeqCst);
                    let _ = s.events.send(Event::Error(e));
                    return;
                }
            }
        };
        let id = self.next_request;
        self.next_request += 1;
        let r = &s.request;
        let seed = r.sampling.seed.unwrap_or_else(Rng::entropy_seed);
        let seq = Seq {
            request: id,
            choice: 0,
            tokens: r.prompt.clone(),
            prompt_len: r.prompt.len(),
            computed: 0,
            blocks: Vec::new(),
            hashes: Vec::new(),
            rng: Rng::new(seed),
            detok: self.tokenizer.detokenizer(r.skip_special_tokens),
            stop: StopMatcher::new(r.stop.clone()),
            pending_forks: r.n.saturating_sub(1),
            fresh: true,
            admitted: 0,
            last_token_at: None,
            done: false,
            images,
            constraint: r.grammar.as_ref().map(|g| Box::new(Constrained::new(g))),
        };
        self.requests.insert(
            id,
            Request {
                unfinished: r.n.max(1),
                usage: Usage {
                    prompt_tokens: r.prompt.len(),
                    ..Usage::default()
                },
                request: s.request,
                max_tokens: s.max_tokens,
                events: s.events,
                arrived: s.arrived,
                first_token_seen: false,
                seed,
            },
        );
        self.waiting.push_back(seq);
    }

    /// Requests whose stream was dropped: free everything they hold.
    fn drop_cancelled(&mut self) {
        let gone: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.events.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.remove_request(id);
        }
    }

    /// Takes every sequence of a request out of the engine, freeing its blocks.
    fn remove_request(&mut self, id: u64) -> Option<Request> {
        let blocks = &mut self.blocks;
        let shared = self.shared;
        let mut release = |seq: &Seq<'_>| {
            blocks.release(&seq.blocks);
            if seq.fresh {
                shared.waiting.fetch_sub(1, Ordering::SeqCst);
            }
        };
        self.running.retain(|s| {
            let keep = s.request != id;
            if !keep && !s.done {
                release(s);
            }
            keep
        });
        self.waiting.retain(|s| {
            let keep = s.request != id;
            if !keep {
                release(s);
            }
            keep
        });
        self.requests.remove(&id)
    }

    fn fail(&mut self, id: u64, err: SchedulerError) {
        if let Some(r) = self.remove_request(id) {
            let _ = r.events.send(Event::Error(err));
        }
    }

    fn update_gauges(&self) {
        self.metrics
            .running
            .set(distinct(self.running.iter().map(|s| s.request)) as i64);
        self.metrics
            .waiting
            .set(distinct(self.waiting.iter().map(|s| s.request)) as i64);
        self.metrics.kv_usage.set(self.blocks.usage());
        self.metrics
            .kv_resident
            .set((self.blocks.touched_ratio() * self.kv_bytes as f64) as i64);
    }

    /// Plans the step, then carries the plan out on the sequences: preempted ones go back to the
    /// queue to be recomputed, admitted ones take their blocks and prefix-cache progress.
    /// Returns each batch row's chunk; the batch is the first `chunks.len()` running sequences.
    fn schedule(&mut self) -> Vec<usize> {
        let limits = planner::Limits {
            max_batched_tokens: self.config.max_batched_tokens,
            max_running: self.config.max_running,
            kv_groups: &self.kv_groups,
        };
        let plan = {
            let keyed: Vec<Cow<'_, [u32]>> = self.running.iter().map(Seq::cache_tokens).collect();
            let running: Vec<planner::Running<'_>> = self
                .running
                .iter()
                .zip(&keyed)
                .map(|(s, tokens)| planner::Running {
                    tokens,
                    computed: s.computed,
                    blocks: &s.blocks,
                    admitted: s.admitted,
                })
                .collect();
            let waiting_keyed: Vec<Cow<'_, [u32]>> =
                self.waiting.iter().map(Seq::cache_tokens).collect();
            let waiting: Vec<&[u32]> = waiting_keyed.iter().map(|t| &t[..]).collect();
            planner::plan(&mut self.blocks, &running, &waiting, limits)
        };

        let mut slots: Vec<Option<Seq<'t>>> = std::mem::take(&mut self.running)
            .into_iter()
            .map(Some)
            .collect();
        let mut chunks = Vec::with_capacity(plan.run.len() + plan.admit.len());
        for c in plan.run {
            if let Some(mut seq) = slots[c.seq].take() {
                seq.blocks.extend(c.new_blocks);
                chunks.push(c.tokens);
                self.running.push(seq);
            }
        }
        for &p in &plan.preempt {
            if let Some(mut seq) = slots[p].take() {
                // The planner has released its blocks.
                seq.blocks.clear();
                seq.hashes.clear();
                seq.computed = 0;
                self.metrics.preemptions.inc();
                self.waiting.push_front(seq);
            }
        }
        for a in plan.admit {
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            self.metrics.prefix_queries.inc_by(seq.tokens.len() as u64);
            self.metrics.prefix_hits.inc_by(a.cached as u64);
            if seq.fresh {
                seq.fresh = false;
                self.shared.waiting.fetch_sub(1, Ordering::SeqCst);
                self.metrics.prompt_tokens.inc_by(seq.prompt_len as u64);
                if let Some(r) = self.requests.get_mut(&seq.request) {
                    r.usage.cached_tokens = a.cached;
                }
            }
            seq.blocks = a.blocks;
            seq.hashes = a.hashes;
            seq.computed = a.cached;
            self.tick += 1;
            seq.admitted = self.tick;
            chunks.push(a.tokens);
            self.running.push(seq);
        }
        // Left out by the budget: after the batch (never alongside admissions, which need
        // budget left over once every running sequence is served).
        for &s in &plan.idle {
            self.running.extend(slots[s].take());
        }
        debug_assert!(slots.iter().all(Option::is_none), "a sequence was dropped");
        chunks
    }

    fn step(&mut self, model: &mut Model) {
        let bs = self.blocks.block_size();
        let chunks = self.schedule();
        if chunks.is_empty() {
            return;
        }

        // The grammars' next masks are computed while the model runs (they depend only on the
        // tokens committed so far); a sequence without a grammar is not touched.
        let mut pending: Vec<(usize, Box<Constrained>)> = Vec::new();
        for (i, s) in self.running.iter_mut().enumerate().take(chunks.len()) {
            if s.constraint.as_ref().is_some_and(|c| c.needs_mask()) {
                pending.extend(s.constraint.take().map(|c| (i, c)));
            }
        }
        let embeds: Vec<Vec<Embeds<'_>>> = self
            .running
            .iter()
            .zip(&chunks)
            .map(|(s, &chunk)| match &s.images {
                Some(images) => images.embeds(s.computed..s.computed + chunk),
                None => Vec::new(),
            })
            .collect();
        let inputs: Vec<SeqInput<'_>> = self
            .running
            .iter()
            .zip(&chunks)
            .zip(&embeds)
            .map(|((s, &chunk), embeds)| SeqInput {
                tokens: &s.tokens[s.computed..s.computed + chunk],
                start: s.computed,
                block_table: &s.blocks,
                all_logits: false,
                embeds,
            })
            .collect();
        let masked: Vec<usize> = pending.iter().map(|(i, _)| *i).collect();
        let result = if pending.is_empty() {
            model.forward(&inputs)
        } else {
            let (result, done) = std::thread::scope(|scope| {
                let masks = scope.spawn(move || {
                    for (_, c) in &mut pending {
                        c.prepare();
                    }
                    pending
                });
                let result = model.forward(&inputs);
                (result, masks.join().unwrap_or_default())
            });
            pending = done;
            result
        };
        drop(inputs);
        drop(embeds);
        for (i, c) in pending {
            self.running[i].constraint = Some(c);
        }
        // A grammar engine that panicked lost its matchers: those choices cannot go on
        // constrained and must not go on unconstrained, so they fail when they sample.
        for &i in &masked {
            let seq = &mut self.running[i];
            if seq.constraint.is_none() {
                seq.constraint = Some(Box::new(Constrained::broken("the grammar engine failed")));
            }
        }
        let logits = match result {
            Ok(logits) => logits,
            Err(err) => {
                let failed: HashSet<u64> = self.running[..chunks.len()]
                    .iter()
                    .map(|s| s.request)
                    .collect();
                let err = SchedulerError::from(err);
                for id in failed {
                    self.fail(id, err.clone());
                }
                return;
            }
        };

        let mut forks = Vec::new();
        // Requests that cannot go on, failed once the batch is done (failing removes
        // sequences, which would shift the batch's indices).
        let mut failed: Vec<(u64, SchedulerError)> = Vec::new();
        for (i, (chunk, out)) in chunks.iter().zip(&logits).enumerate() {
            let seq = &mut self.running[i];
            seq.computed += chunk;
            let groups = self.kv_groups.len();
            if (seq.hashes.len() + 1) * bs <= seq.computed {
                let keyed = seq.cache_tokens();
                let mut parent = seq.hashes.last().copied().unwrap_or(0);
                let mut new = Vec::new();
                for b in seq.hashes.len()..seq.computed / bs {
                    let tokens = &keyed[b * bs..(b + 1) * bs];
                    // Each group's page of the block (none is freed yet: only blocks that slid
                    // out of a window are, and those were registered when they filled).
                    let mut hash = crate::blocks::chain_hash(parent, tokens);
                    for group in 0..groups {
                        let id = seq.blocks[b * groups + group];
                        if id != FREED_BLOCK {
                            hash = self.blocks.register_group(id, parent, tokens, group);
                        }
                    }
                    new.push(hash);
                    parent = hash;
                }
                drop(keyed);
                seq.hashes.extend(new);
            }
            if seq.uncomputed() > 0 {
                continue;
            }
            if seq.pending_forks > 0 && seq.generated() == 0 {
                forks.extend(self.fork(i, out.last()));
            }
            let logits = out.last().to_vec();
            failed.extend(self.advance(i, &logits).err());
        }
        for (seq, logits) in forks {
            self.running.push(seq);
            let i = self.running.len() - 1;
            failed.extend(self.advance(i, &logits).err());
        }
        self.free_slid_out();
        self.collect_finished();
        for (id, err) in failed {
            self.fail(id, err);
        }
    }

    /// Gives back the pages of sliding KV groups that slid out of their window: the next token
    /// a sequence feeds (at position `computed`) reads nothing before `computed + 1 - window`,
    /// nor does any later one. The table keeps its length (positions still index it), with
    /// [`FREED_BLOCK`] in their place; a cached page goes back to the prefix cache's evictable
    /// set (its K/V are still right for a later hit). A prompt whose other choices are still
    /// to be forked keeps its pages: they share them.
    fn free_slid_out(&mut self) {
        let bs = self.blocks.block_size();
        let groups = self.kv_groups.len();
        for seq in self
            .running
            .iter_mut()
            .filter(|s| !s.done && s.pending_forks == 0)
        {
            for (group, window) in self.kv_groups.iter().enumerate() {
                let Some(window) = window else { continue };
                let dead = (seq.computed + 1).saturating_sub(*window) / bs;
                for b in 0..dead {
                    let Some(entry) = seq.blocks.get_mut(b * groups + group) else {
                        break;
                    };
                    if *entry != FREED_BLOCK {
                        self.blocks.release(&[*entry]);
                        *entry = FREED_BLOCK;
                        self.metrics.window_freed.inc();
                    }
                }
            }
        }
    }

    /// Creates a request's other choices from its first, whose prompt is now complete: they
    /// share its full prompt blocks and recompute only the partial last block.
    fn fork(&mut self, i: usize, logits: &[f32]) -> Vec<(Seq<'t>, Vec<f32>)> {
        let bs = self.blocks.block_size();
        let (request, tokens, prompt_len, shared, hashes, n, images) = {
            let s = &mut self.running[i];
            let full = s.prompt_len / bs;
            let n = std::mem::take(&mut s.pending_forks);
            (
                s.request,
                s.tokens.clone(),
                s.prompt_len,
                s.blocks[..full * self.kv_groups.len()].to_vec(),
                s.hashes[..full.min(s.hashes.len())].to_vec(),
                n,
                s.images.clone(),
            )
        };
        let Some(r) = self.requests.get(&request) else {
            return Vec::new();
        };
        let (skip, stops, seed, grammar) = (
            r.request.skip_special_tokens,
            r.request.stop.clone(),
            r.seed,
            &r.request.grammar,
        );
        let mut out = Vec::with_capacity(n);
        for choice in 1..=n {
            self.blocks.share(&shared);
            self.tick += 1;
            out.push((
                Seq {
                    request,
                    choice,
                    tokens: tokens.clone(),
                    prompt_len,
                    computed: shared.len() / self.kv_groups.len().max(1) * bs,
                    blocks: shared.clone(),
                    hashes: hashes.clone(),
                    rng: Rng::new(choice_seed(seed, choice)),
                    detok: self.tokenizer.detokenizer(skip),
                    stop: StopMatcher::new(stops.clone()),
                    pending_forks: 0,
                    fresh: false,
                    admitted: self.tick,
                    last_token_at: None,
                    done: false,
                    images: images.clone(),
                    constraint: grammar.as_ref().map(|g| Box::new(Constrained::new(g))),
                },
                logits.to_vec(),
            ));
        }
        out
    }

    /// Samples the next token of running sequence `i` from its logits and streams the result.
    /// An error: the request cannot go on (its grammar failed).
    fn advance(&mut self, i: usize, logits: &[f32]) -> Result<(), (u64, SchedulerError)> {
        let now = Instant::now();
        let seq = &mut self.running[i];
        let Some(r) = self.requests.get_mut(&seq.request) else {
            seq.done = true;
            return Ok(());
        };
        // NaN or +inf logits mean broken weights or overflowing numerics (f16 on a GPU):
        // sampling them would make garbage silently, so the request fails, typed, instead.
        if let Some(at) = logits
            .iter()
            .position(|l| l.is_nan() || *l == f32::INFINITY)
        {
            return Err((
                seq.request,
                SchedulerError::Model(format!(
                    "the model produced a non-finite logit ({} for token {at}): its weights or \
                     its numerics are broken",
                    logits[at]
                )),
            ));
        }
        let params = &r.request;
        // With a grammar, the model's distribution over what the grammar allows: sampling
        // and the reported logprobs both see the masked logits.
        let masked;
        let logits = match seq.constraint.as_mut() {
            Some(c) => {
                let mut l = logits.to_vec();
                c.apply(&mut l)
                    .map_err(|e| (seq.request, grammar_failed(&e)))?;
                masked = l;
                &masked[..]
            }
            None => logits,
        };
        let mut scratch = logits.to_vec();
        let token = sampling::sample(
            &mut scratch,
            &params.sampling,
            &seq.tokens[..seq.prompt_len],
            &seq.tokens[seq.prompt_len..],
            &mut seq.rng,
        );
        let grammar_done = match seq.constraint.as_mut() {
            Some(c) => {
                c.commit(token)
                    .map_err(|e| (seq.request, grammar_failed(&e)))?;
                c.is_finished()
            }
            None => false,
        };
        let logprobs = params.logprobs.map(|top| {
            let (logprob, best) = sampling::logprobs(logits, token, top);
            let entry = |id: u32, logprob: f32| TokenLogprob {
                id,
                text: self.tokenizer.decode(&[id], false).unwrap_or_default(),
                logprob,
            };
            Logprobs {
                chosen: entry(token, logprob),
                top: best.into_iter().map(|(id, lp)| entry(id, lp)).collect(),
            }
        });
        seq.tokens.push(token);
        r.usage.completion_tokens += 1;
        self.metrics.generation_tokens.inc();
        if !r.first_token_seen {
            r.first_token_seen = true;
            self.metrics
                .ttft
                .observe(now.duration_since(r.arrived).as_secs_f64());
        }
        if let Some(last) = seq.last_token_at {
            self.metrics
                .itl
                .observe(now.duration_since(last).as_secs_f64());
        }
        seq.last_token_at = Some(now);

        let choice = seq.choice;
        let mut finish = None;
        // A complete grammar ends the choice even where EOS would not (`stop_at_eos` off).
        if (params.stop_at_eos || grammar_done) && self.eos.contains(&token) {
            let tail = seq.detok.flush().unwrap_or_default();
            finish = Some((FinishReason::Stop, release_tail(&mut seq.stop, &tail)));
        } else {
            let delta = seq.detok.push(token).unwrap_or_default();
            let text = match seq.stop.push(&delta) {
                StopCheck::Stopped(before) => {
                    finish = Some((FinishReason::Stop, String::new()));
                    before
                }
                StopCheck::Continue(released) => released,
            };
            let _ = r.events.send(Event::Token {
                choice,
                id: token,
                text,
                logprobs,
            });
            if finish.is_none()
                && (seq.generated() >= r.max_tokens || seq.tokens.len() >= self.context_length)
            {
                let tail = seq.detok.flush().unwrap_or_default();
                finish = Some((FinishReason::Length, release_tail(&mut seq.stop, &tail)));
            }
        }
        if let Some((reason, text)) = finish {
            seq.done = true;
            let _ = r.events.send(Event::Finished {
                choice,
                reason,
                text,
            });
            r.unfinished -= 1;
            self.blocks.release(&seq.blocks);
            seq.blocks.clear();
            if r.unfinished == 0 {
                // Metrics first: whoever sees `Done` sees them counted.
                self.metrics
                    .e2e
                    .observe(now.duration_since(r.arrived).as_secs_f64());
                self.metrics
                    .finished
                    .with_label_values(&[reason.as_str()])
                    .inc();
                let _ = r.events.send(Event::Done { usage: r.usage });
                let id = seq.request;
                self.requests.remove(&id);
            }
        }
        Ok(())
    }

    fn collect_finished(&mut self) {
        self.running.retain(|s| !s.done);
    }
}

fn grammar_failed(message: &str) -> SchedulerError {
    SchedulerError::Model(format!("constrained decoding failed: {message}"))
}

/// Requests among sequences (a request's choices are one request).
fn distinct(requests: impl Iterator<Item = u64>) -> usize {
    requests.collect::<HashSet<_>>().len()
}

/// The seed of a request's choice `choice`: choice 0 uses the request's seed itself, so `n = 1`
/// with a seed replays whatever else is running; the others are spread by an odd constant.
fn choice_seed(seed: u64, choice: usize) -> u64 {
    seed.wrapping_add((choice as u64).wrapping_mul(0xA076_1D64_78BD_642F))
}

/// The text still held when a choice ends without a stop string: the detokenizer's tail, cut at
/// a stop string if it completes one.
fn release_tail(stop: &mut StopMatcher, tail: &str) -> String {
    match stop.push(tail) {
        StopCheck::Stopped(before) => before,
        StopCheck::Continue(mut text) => {
            text.push_str(&stop.finish());
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_that_completes_a_stop_string_is_cut_before_it() {
        let mut stop = StopMatcher::new(vec!["END".into()]);
        assert_eq!(stop.push("ok E"), StopCheck::Continue("ok ".into()));
        assert_eq!(release_tail(&mut stop, "ND and more"), "");
    }

    #[test]
    fn a_tail_releases_everything_held_when_no_stop_string_completes() {
        let mut stop = StopMatcher::new(vec!["END".into()]);
        assert_eq!(stop.push("ok E"), StopCheck::Continue("ok ".into()));
        // "E" was held back as a possible start of "END"; the choice ends, so it is released.
        assert_eq!(release_tail(&mut stop, "N"), "EN");
        let mut none = StopMatcher::new(Vec::new());
        assert_eq!(release_tail(&mut none, "tail"), "tail");
    }

    #[test]
    fn choice_zero_keeps_the_seed_and_other_choices_differ() {
        assert_eq!(choice_seed(42, 0), 42);
        let seeds: HashSet<u64> = (0..16).map(|c| choice_seed(42, c)).collect();
        assert_eq!(seeds.len(), 16);
        // Wraps rather than overflowing.
        assert_ne!(choice_seed(u64::MAX, 1), choice_seed(u64::MAX, 2));
    }

    #[test]
    fn choices_of_one_request_count_once() {
        assert_eq!(distinct([3, 3, 3, 5].into_iter()), 2);
        assert_eq!(distinct(std::iter::empty()), 0);
    }
}
