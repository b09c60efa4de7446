//! The engine under load, in process: C concurrent requests (distinct 64-token prompts, 32 new
//! tokens each, EOS ignored) through the real scheduler and runtime, for C = 1, 4, 16 and 64.
//! One iteration is one round of C requests from submission to their last token; throughput is
//! aggregate generated tokens per second. Model and device: see `kiln_benches`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kiln_benches::{load_model, model_path, quick, tokens};
use kiln_scheduler::{Engine, EngineConfig, EngineHandle, Event, GenerationRequest};
use kiln_tokenizer::Tokenizer;

const PROMPT: usize = 64;

/// Runs `c` requests of `new` tokens at once; returns the wall time until the last finished.
fn round(
    handle: &EngineHandle,
    c: usize,
    new: usize,
    vocab: usize,
    seed: &AtomicUsize,
) -> Duration {
    let started = Instant::now();
    let streams: Vec<_> = (0..c)
        .map(|_| {
            // Distinct prompts every round, so the prefix cache never skips a prefill.
            let prompt = tokens(PROMPT, seed.fetch_add(1, Ordering::Relaxed), vocab);
            let mut request = GenerationRequest::greedy(prompt, new);
            request.stop_at_eos = false;
            handle
                .submit(request)
                .unwrap_or_else(|e| panic!("submit: {e}"))
        })
        .collect();
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            std::thread::spawn(move || {
                let mut generated = 0;
                while let Some(event) = stream.blocking_next() {
                    match event {
                        Event::Token { .. } => generated += 1,
                        Event::Done { .. } => break,
                        Event::Error(e) => panic!("{e}"),
                        Event::Finished { .. } => {}
                    }
                }
                generated
            })
        })
        .collect();
    for reader in readers {
        let generated = reader
            .join()
            .unwrap_or_else(|_| panic!("a reader panicked"));
        assert_eq!(generated, new, "a request stopped early");
    }
    started.elapsed()
}

fn bench(c: &mut Criterion) {
    let (path, _) = model_path();
    let tokenizer = if path.is_file() {
        Tokenizer::from_gguf_path(&path)
    } else {
        Tokenizer::from_hf_dir(&path).or_else(|_| {
            Tokenizer::from_hf_dir(
                std::path::PathBuf::from(
                    std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
                )
                .join("../testdata/smollm2"),
            )
        })
    };
    let tokenizer = Arc::new(tokenizer.unwrap_or_else(|e| panic!("tokenizer: {e}")));
    let (concurrency, new): (&[usize], usize) = if quick() {
        (&[1, 4], 8)
    } else {
        (&[1, 4, 16, 64], 32)
    };
    let seed = AtomicUsize::new(0);
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    for &streams in concurrency {
        let model = load_model();
        let vocab = model.config().vocab_size;
        let engine = Engine::start(
            model,
            tokenizer.clone(),
            EngineConfig {
                max_running: streams.max(EngineConfig::default().max_running),
                ..EngineConfig::default()
            },
            &prometheus::Registry::new(),
        )
        .unwrap_or_else(|e| panic!("engine: {e}"));
        let handle = engine.handle();
        group.throughput(Throughput::Elements((streams * new) as u64));
        group.bench_function(BenchmarkId::from_parameter(streams), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| round(&handle, streams, new, vocab, &seed))
                    .sum()
            })
        });
        engine.shutdown(Duration::from_secs(1));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
