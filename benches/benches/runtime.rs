//! The decode loop on the runtime alone: one decode step for 1, 8, 32 and 64 running sequences
//! (each holding 64 positions of context), and a prefill of 128 and 512 tokens. Throughput is
//! tokens per second. Model and device: see `kiln_benches` (`KILN_BENCH_MODEL`,
//! `KILN_BENCH_DEVICE`).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kiln_benches::{load_model, quick, tokens};
use kiln_runtime::SeqInput;

/// Context each decoding sequence already holds.
const CONTEXT: usize = 64;

fn bench(c: &mut Criterion) {
    let mut model = load_model();
    let vocab = model.config().vocab_size;
    // A page per block of positions per KV group.
    let groups = model.kv_groups().windows.len();
    let per_seq = (CONTEXT + 1).div_ceil(model.block_size()) * groups;
    let (batches, prefills): (&[usize], &[usize]) = if quick() {
        (&[1, 8], &[128])
    } else {
        (&[1, 8, 32, 64], &[128, 512])
    };

    let mut group = c.benchmark_group("decode_step");
    group.sample_size(10);
    for &batch in batches {
        assert!(
            batch * per_seq <= model.num_blocks(),
            "the KV cache holds {} blocks; decode_step/{batch} needs {}",
            model.num_blocks(),
            batch * per_seq
        );
        let tables: Vec<Vec<u32>> = (0..batch)
            .map(|s| ((s * per_seq) as u32..((s + 1) * per_seq) as u32).collect())
            .collect();
        for (s, table) in tables.iter().enumerate() {
            let prompt = tokens(CONTEXT, s, vocab);
            let step = [SeqInput {
                tokens: &prompt,
                start: 0,
                block_table: table,
                all_logits: false,
                embeds: &[],
            }];
            if let Err(err) = model.forward(&step) {
                panic!("prefill: {err}");
            }
        }
        let next: Vec<Vec<u32>> = (0..batch).map(|s| tokens(1, s + 1000, vocab)).collect();
        let step: Vec<SeqInput<'_>> = next
            .iter()
            .zip(&tables)
            .map(|(t, table)| SeqInput {
                tokens: t,
                start: CONTEXT,
                block_table: table,
                all_logits: false,
                embeds: &[],
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
    for &n in prefills {
        let prompt = tokens(n, 99, vocab);
        let table: Vec<u32> = (0..(n.div_ceil(model.block_size()) * groups) as u32).collect();
        let step = [SeqInput {
            tokens: &prompt,
            start: 0,
            block_table: &table,
            all_logits: false,
            embeds: &[],
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
