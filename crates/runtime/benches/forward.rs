//! Criterion benches of the forward pass on SmolLM2 (the real Q4_1 GGUF, dequantized to f32):
//! one decode step for 1, 8 and 32 running sequences, and a prefill of 128 and 512 tokens.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kiln_runtime::{LoadOptions, Model, SeqInput};

/// Context each decoding sequence already holds.
const CONTEXT: usize = 64;

fn model() -> Model {
    let path = match kiln_hub::default_model_path() {
        Ok(path) if path.exists() => path,
        _ => panic!("the default model is missing: run `cargo xtask fetch-model`"),
    };
    match Model::load(&path, &LoadOptions::default()) {
        Ok(model) => model,
        Err(err) => panic!("loading {}: {err}", path.display()),
    }
}

/// Deterministic, varied token ids.
fn tokens(n: usize, seed: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 49_000 + 17) as u32)
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut model = model();
    let per_seq = (CONTEXT + 1).div_ceil(model.block_size());

    let mut group = c.benchmark_group("decode_step");
    group.sample_size(10);
    for batch in [1usize, 8, 32] {
        let tables: Vec<Vec<u32>> = (0..batch)
            .map(|s| ((s * per_seq) as u32..((s + 1) * per_seq) as u32).collect())
            .collect();
        let prompts: Vec<Vec<u32>> = (0..batch).map(|s| tokens(CONTEXT, s)).collect();
        for (prompt, table) in prompts.iter().zip(&tables) {
            let step = [SeqInput {
                tokens: prompt,
                start: 0,
                block_table: table,
                all_logits: false,
            }];
            if let Err(err) = model.forward(&step) {
                panic!("prefill: {err}");
            }
        }
        let next: Vec<[u32; 1]> = (0..batch).map(|s| [(s * 31 + 100) as u32]).collect();
        let step: Vec<SeqInput<'_>> = next
            .iter()
            .zip(&tables)
            .map(|(t, table)| SeqInput {
                tokens: t,
                start: CONTEXT,
                block_table: table,
                all_logits: false,
            })
            .collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &step, |b, step| {
            b.iter(|| model.forward(step))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("prefill");
    group.sample_size(10);
    for n in [128usize, 512] {
        let prompt = tokens(n, 99);
        let table: Vec<u32> = (0..n.div_ceil(model.block_size()) as u32).collect();
        let step = [SeqInput {
            tokens: &prompt,
            start: 0,
            block_table: &table,
            all_logits: false,
        }];
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &step, |b, step| {
            b.iter(|| model.forward(step))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
