//! Shared helpers: the test data, the tiny model behind an engine, deterministic prompts,
//! running requests to completion, reading metrics.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_runtime::{DType, KvCacheSize, LoadOptions, Model};
use kiln_scheduler::{Completion, Engine, EngineConfig, EngineHandle, GenerationRequest};
use kiln_tokenizer::Tokenizer;
use prometheus::Registry;

pub(crate) fn testdata() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("../../testdata")
}

pub(crate) fn tokenizer() -> Arc<Tokenizer> {
    Arc::new(Tokenizer::from_hf_dir(testdata().join("smollm2")).unwrap())
}

/// The tiny model with a pool of `blocks` KV blocks of 16 positions.
pub(crate) fn tiny(blocks: usize, config: EngineConfig) -> (Engine, Registry) {
    let options = LoadOptions {
        block_size: 16,
        kv_cache: KvCacheSize::Tokens(blocks * 16),
        // f32 K/V: the engine's results are compared bit for bit with the runtime's alone.
        kv_dtype: DType::F32,
        ..Default::default()
    };
    let model = Model::load(&testdata().join("tiny-llama"), &options).unwrap();
    assert_eq!(model.num_blocks(), blocks);
    let registry = Registry::new();
    let engine = Engine::start(model, tokenizer(), config, &registry).unwrap();
    (engine, registry)
}

/// Deterministic prompts of ids the tiny model (vocabulary 512) accepts, avoiding EOS-like ids.
pub(crate) fn prompt(len: usize, seed: usize) -> Vec<u32> {
    (0..len)
        .map(|i| ((i * 37 + seed * 101) % 480 + 20) as u32)
        .collect()
}

pub(crate) fn run(handle: &EngineHandle, request: GenerationRequest) -> Completion {
    let n = request.n;
    let mut stream = handle.submit(request).unwrap();
    Completion::collect(std::iter::from_fn(|| stream.blocking_next()), n).unwrap()
}

/// Runs all requests concurrently (all submitted before any is read).
pub(crate) fn run_all(handle: &EngineHandle, requests: Vec<GenerationRequest>) -> Vec<Completion> {
    let streams: Vec<_> = requests
        .into_iter()
        .map(|r| (r.n, handle.submit(r).unwrap()))
        .collect();
    streams
        .into_iter()
        .map(|(n, mut s)| Completion::collect(std::iter::from_fn(|| s.blocking_next()), n).unwrap())
        .collect()
}

pub(crate) fn metric(registry: &Registry, name: &str) -> f64 {
    use prometheus::proto::MetricType;
    for family in registry.gather() {
        if family.name() == name {
            let m = &family.get_metric()[0];
            return match family.get_field_type() {
                MetricType::GAUGE => m.get_gauge().get_value(),
                MetricType::COUNTER => m.get_counter().get_value(),
                _ => m.get_histogram().get_sample_count() as f64,
            };
        }
    }
    panic!("no metric {name}");
}

pub(crate) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
