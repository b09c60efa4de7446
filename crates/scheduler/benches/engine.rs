//! In-process serving throughput on SmolLM2: C concurrent requests (128-token distinct prompts,
//! 64 new tokens each, EOS ignored) through the real engine; prints aggregate decode tokens/s and
//! time to first token for C = 1, 4, 16, 64. Run with `cargo bench -p kiln-scheduler --bench engine`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_runtime::{LoadOptions, Model};
use kiln_scheduler::{Engine, EngineConfig, Event, GenerationRequest};
use kiln_tokenizer::Tokenizer;

const PROMPT: usize = 128;
const NEW: usize = 64;

fn main() {
    // `cargo bench` passes `--bench`; a filter may follow.
    let filter: Option<usize> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    let path = kiln_hub::default_model_path().expect("no kiln home");
    assert!(path.exists(), "run `cargo xtask fetch-model` first");
    let tokenizer = Arc::new(Tokenizer::from_gguf_path(&path).expect("tokenizer"));
    println!(
        "engine: SmolLM2-135M-Instruct Q4_1 (f32 compute, CPU), prompt {PROMPT}, {NEW} new tokens"
    );
    println!(
        "{:>5} {:>10} {:>14} {:>12} {:>12}",
        "C", "requests", "agg tok/s", "TTFT p50 ms", "wall s"
    );
    for c in [1usize, 4, 16, 64] {
        if filter.is_some_and(|f| f != c) {
            continue;
        }
        let model = Model::load(
            &path,
            &LoadOptions {
                kv_cache_bytes: 1 << 30,
                ..LoadOptions::default()
            },
        )
        .expect("model");
        let engine = Engine::start(
            model,
            tokenizer.clone(),
            EngineConfig {
                max_running: 64,
                ..EngineConfig::default()
            },
            &prometheus::Registry::new(),
        )
        .expect("engine");
        let handle = engine.handle();
        let started = Instant::now();
        let threads: Vec<_> = (0..c)
            .map(|i| {
                let handle = handle.clone();
                std::thread::spawn(move || {
                    let prompt: Vec<u32> = (0..PROMPT)
                        .map(|j| ((j * 7919 + i * 104_729) % 48_000 + 100) as u32)
                        .collect();
                    let mut r = GenerationRequest::greedy(prompt, NEW);
                    r.stop_at_eos = false;
                    let sent = Instant::now();
                    let mut stream = handle.submit(r).expect("submit");
                    let mut first = None;
                    let mut tokens = 0;
                    while let Some(e) = stream.blocking_next() {
                        match e {
                            Event::Token { .. } => {
                                tokens += 1;
                                first.get_or_insert_with(|| sent.elapsed());
                            }
                            Event::Done { .. } => break,
                            Event::Error(e) => panic!("{e}"),
                            Event::Finished { .. } => {}
                        }
                    }
                    (tokens, first.unwrap_or_default())
                })
            })
            .collect();
        let mut total = 0;
        let mut ttfts: Vec<Duration> = Vec::new();
        for t in threads {
            let (n, ttft) = t.join().expect("client thread");
            total += n;
            ttfts.push(ttft);
        }
        let wall = started.elapsed().as_secs_f64();
        ttfts.sort();
        let p50 = ttfts[ttfts.len() / 2].as_secs_f64() * 1000.0;
        println!(
            "{c:>5} {c:>10} {:>14.1} {p50:>12.0} {wall:>12.2}",
            total as f64 / wall
        );
        engine.shutdown(Duration::from_secs(1));
    }
}
