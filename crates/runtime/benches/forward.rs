//! Criterion benches of the forward pass on SmolLM2 (the real Q4_1 GGUF, dequantized to f32, or
//! random weights of the same shapes when it is not fetched): one decode step for 1, 8 and 32
//! running sequences, and a prefill of 128 and 512 tokens.

use std::path::{Path, PathBuf};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kiln_runtime::{LoadOptions, Model, SeqInput};

/// Context each decoding sequence already holds.
const CONTEXT: usize = 64;

fn model() -> Model {
    let path = match kiln_hub::default_model_path() {
        Ok(path) if path.exists() => path,
        _ => {
            eprintln!(
                "the default model is not fetched (`cargo xtask fetch-model`): benchmarking \
                 random weights of SmolLM2-135M's shapes"
            );
            random_smollm2()
        }
    };
    match Model::load(&path, &LoadOptions::default()) {
        Ok(model) => model,
        Err(err) => panic!("loading {}: {err}", path.display()),
    }
}

/// SmolLM2-135M's architecture; the speed of a forward pass depends on shapes, not values.
const SMOLLM2_CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
  "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
  "vocab_size": 49152, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
  "rope_theta": 100000.0, "tie_word_embeddings": true, "torch_dtype": "float16"
}"#;

/// Writes (once, under the system temp dir) a Hugging Face directory of SmolLM2-135M's shapes
/// with random f16 weights.
fn random_smollm2() -> PathBuf {
    let dir = std::env::temp_dir().join("kiln-bench-random-smollm2");
    if dir.join("model.safetensors").exists() {
        return dir;
    }
    if let Err(err) = write_random_smollm2(&dir) {
        panic!("writing random weights to {}: {err}", dir.display());
    }
    dir
}

fn write_random_smollm2(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let (hidden, inter, layers, vocab) = (576, 1536, 30, 49152);
    let (q_dim, kv_dim) = (9 * 64, 3 * 64);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![vocab, hidden]),
        ("model.norm.weight".into(), vec![hidden]),
    ];
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        for (name, shape) in [
            ("input_layernorm.weight", vec![hidden]),
            ("post_attention_layernorm.weight", vec![hidden]),
            ("self_attn.q_proj.weight", vec![q_dim, hidden]),
            ("self_attn.k_proj.weight", vec![kv_dim, hidden]),
            ("self_attn.v_proj.weight", vec![kv_dim, hidden]),
            ("self_attn.o_proj.weight", vec![hidden, q_dim]),
            ("mlp.gate_proj.weight", vec![inter, hidden]),
            ("mlp.up_proj.weight", vec![inter, hidden]),
            ("mlp.down_proj.weight", vec![hidden, inter]),
        ] {
            shapes.push((format!("{p}.{name}"), shape));
        }
    }
    // A xorshift stream: norms near 1, matrices small, so activations stay finite.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(name, shape)| {
            let norm = name.ends_with("norm.weight");
            (0..shape.iter().product::<usize>())
                .flat_map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let unit = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    let value = if norm { 1.0 + 0.2 * unit } else { 0.1 * unit };
                    half::f16::from_f32(value).to_le_bytes()
                })
                .collect()
        })
        .collect();
    let views = shapes
        .iter()
        .zip(&data)
        .map(|((name, shape), bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F16, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.json"), SMOLLM2_CONFIG)?;
    // Written under another name and renamed, so an interrupted run leaves no half file behind.
    let partial = dir.join("model.safetensors.partial");
    safetensors::serialize_to_file(views, None, &partial)?;
    std::fs::rename(partial, dir.join("model.safetensors"))?;
    Ok(())
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
