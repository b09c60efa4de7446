//! The engine's Prometheus metrics, named and bucketed as vLLM's so existing dashboards apply.

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// An image through the vision tower: a tiny tower's tile in milliseconds, a real one's 17 tiles on
/// a CPU in tens of seconds.
const IMAGE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0,
];
const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) ttft: Histogram,
    pub(crate) itl: Histogram,
    pub(crate) e2e: Histogram,
    pub(crate) image_encode: Histogram,
    pub(crate) running: IntGauge,
    pub(crate) waiting: IntGauge,
    pub(crate) kv_usage: Gauge,
    pub(crate) kv_resident: IntGauge,
    pub(crate) prompt_tokens: IntCounter,
    pub(crate) generation_tokens: IntCounter,
    pub(crate) preemptions: IntCounter,
    pub(crate) window_freed: IntCounter,
    pub(crate) prefix_queries: IntCounter,
    pub(crate) prefix_hits: IntCounter,
    pub(crate) finished: IntCounterVec,
}

impl Metrics {
    /// The metrics of the engine serving `model` (their `model` label), registered in
    /// `registry`. Several engines share one registry: their series differ by the label.
    pub(crate) fn register(registry: &Registry, model: &str) -> prometheus::Result<Self> {
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            Histogram::with_opts(
                HistogramOpts::new(name, help)
                    .const_label("model", model)
                    .buckets(buckets.to_vec()),
            )
        };
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("model", model);
        let m = Self {
            ttft: histogram(
                "kiln_time_to_first_token_seconds",
                "Time from a request's arrival to its first generated token.",
                TTFT_BUCKETS,
            )?,
            itl: histogram(
                "kiln_inter_token_latency_seconds",
                "Time between consecutive generated tokens of one sequence.",
                ITL_BUCKETS,
            )?,
            e2e: histogram(
                "kiln_e2e_request_latency_seconds",
                "Time from a request's arrival to its last token.",
                E2E_BUCKETS,
            )?,
            image_encode: histogram(
                "kiln_image_encode_seconds",
                "Time the vision tower took for one image (the engine's step waits for it).",
                IMAGE_BUCKETS,
            )?,
            running: IntGauge::with_opts(opts(
                "kiln_num_requests_running",
                "Requests with sequences in the running batch.",
            ))?,
            waiting: IntGauge::with_opts(opts(
                "kiln_num_requests_waiting",
                "Requests queued for admission (preempted ones included).",
            ))?,
            kv_usage: Gauge::with_opts(opts(
                "kiln_kv_cache_usage_ratio",
                "Fraction of KV cache blocks held by running sequences (0 to 1).",
            ))?,
            kv_resident: IntGauge::with_opts(opts(
                "kiln_kv_cache_resident_bytes",
                "Bytes of the KV cache pool written so far: the pool is committed lazily, so \
                 this much of it is in resident memory (it grows to the pool's size as the \
                 prefix cache fills it, then stays).",
            ))?,
            prompt_tokens: IntCounter::with_opts(opts(
                "kiln_prompt_tokens_total",
                "Prompt tokens of admitted requests.",
            ))?,
            generation_tokens: IntCounter::with_opts(opts(
                "kiln_generation_tokens_total",
                "Tokens generated.",
            ))?,
            preemptions: IntCounter::with_opts(opts(
                "kiln_num_preemptions_total",
                "Sequences preempted (blocks freed, recomputed later) for lack of KV blocks.",
            ))?,
            window_freed: IntCounter::with_opts(opts(
                "kiln_kv_blocks_freed_by_window_total",
                "KV blocks given back by running sequences because they slid out of every \
                 layer's attention window (models whose layers all slide).",
            ))?,
            prefix_queries: IntCounter::with_opts(opts(
                "kiln_prefix_cache_queries_total",
                "Prompt tokens looked up in the prefix cache.",
            ))?,
            prefix_hits: IntCounter::with_opts(opts(
                "kiln_prefix_cache_hits_total",
                "Prompt tokens found in the prefix cache (not recomputed).",
            ))?,
            finished: IntCounterVec::new(
                opts(
                    "kiln_request_success_total",
                    "Finished requests by finish reason.",
                ),
                &["finished_reason"],
            )?,
        };
        registry.register(Box::new(m.ttft.clone()))?;
        registry.register(Box::new(m.itl.clone()))?;
        registry.register(Box::new(m.e2e.clone()))?;
        registry.register(Box::new(m.image_encode.clone()))?;
        registry.register(Box::new(m.running.clone()))?;
        registry.register(Box::new(m.waiting.clone()))?;
        registry.register(Box::new(m.kv_usage.clone()))?;
        registry.register(Box::new(m.kv_resident.clone()))?;
        registry.register(Box::new(m.prompt_tokens.clone()))?;
        registry.register(Box::new(m.generation_tokens.clone()))?;
        registry.register(Box::new(m.preemptions.clone()))?;
        registry.register(Box::new(m.window_freed.clone()))?;
        registry.register(Box::new(m.prefix_queries.clone()))?;
        registry.register(Box::new(m.prefix_hits.clone()))?;
        registry.register(Box::new(m.finished.clone()))?;
        Ok(m)
    }
}
