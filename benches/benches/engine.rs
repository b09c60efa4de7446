//! The engine under load, in process: C concurrent requests (distinct 64-token prompts, 32 new
//! tokens each, EOS ignored) through the real scheduler and runtime, for C = 1, 4, 16 and 64.
//! One iteration is one round of C requests from submission to their last token; throughput is
//! aggregate generated tokens per second. Model and device: see `kiln_benches`.
//!
//! `engine_json` is the same load with every request held to a JSON schema (structured
//! outputs): the cost of computing a token mask per sequence per step, which runs beside the
//! forward. The schema cannot be completed in the tokens generated, so every request runs its
//! full length; its objects, keys, numbers, enums and strings keep the grammar busy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kiln_benches::{load_model, model_path, quick, tokens};
use kiln_scheduler::{
    Engine, EngineConfig, EngineHandle, Event, GenerationRequest, Grammar, OutputFormat,
};
use kiln_tokenizer::Tokenizer;

const PROMPT: usize = 64;

/// Runs `c` requests of `new` tokens at once; returns the wall time until the last finished.
fn round(
    handle: &EngineHandle,
    c: usize,
    new: usize,
    vocab: usize,
    seed: &AtomicUsize,
    grammar: Option<&Grammar>,
) -> Duration {
    let started = Instant::now();
    let streams: Vec<_> = (0..c)
        .map(|_| {
            // Distinct prompts every round, so the prefix cache never skips a prefill.
            let prompt = tokens(PROMPT, seed.fetch_add(1, Ordering::Relaxed), vocab);
            let mut request = GenerationRequest::greedy(prompt, new);
            request.stop_at_eos = false;
            request.grammar = grammar.cloned();
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
    let schema = serde_json::json!({
        "type": "array",
        "minItems": 1000,
        "items": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 12},
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
                "role": {"enum": ["admin", "user", "guest"]},
                "score": {"type": "number"}
            },
            "required": ["name", "age", "role", "score"],
            "additionalProperties": false
        }
    });
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    for &streams in concurrency {
        let (engine, vocab) = start(&tokenizer, streams);
        let handle = engine.handle();
        group.throughput(Throughput::Elements((streams * new) as u64));
        group.bench_function(BenchmarkId::from_parameter(streams), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| round(&handle, streams, new, vocab, &seed, None))
                    .sum()
            })
        });
        engine.shutdown(Duration::from_secs(1));
    }
    group.finish();

    let mut group = c.benchmark_group("engine_json");
    group.sample_size(10);
    for &streams in concurrency {
        let (engine, vocab) = start(&tokenizer, streams);
        let handle = engine.handle();
        let grammar = handle
            .compile(&OutputFormat::JsonSchema(schema.clone()), "schema")
            .unwrap_or_else(|e| panic!("schema: {e}"));
        group.throughput(Throughput::Elements((streams * new) as u64));
        group.bench_function(BenchmarkId::from_parameter(streams), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| round(&handle, streams, new, vocab, &seed, Some(&grammar)))
                    .sum()
            })
        });
        engine.shutdown(Duration::from_secs(1));
    }
    group.finish();
}

/// An engine on the bench model that runs `streams` requests at once; and its vocabulary.
fn start(tokenizer: &Arc<Tokenizer>, streams: usize) -> (Engine, usize) {
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
    (engine, vocab)
}

criterion_group!(benches, bench);
criterion_main!(benches);
