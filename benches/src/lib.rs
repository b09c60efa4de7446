//! What Kiln's criterion benches share: which model and device to measure, chosen the same way
//! by every bench so a user can tune their own hardware with their own model.
//!
//! - `KILN_BENCH_MODEL=PATH`: a GGUF file or Hugging Face directory; by default the default
//!   model if fetched (`cargo xtask fetch-model`), else random weights of its shapes.
//! - `KILN_BENCH_DEVICE=cpu|wgpu` (default cpu; wgpu needs `--features wgpu`).
//! - `KILN_BENCH_DTYPE=f32|f16`: the compute dtype (default f32; f16 keeps f16 weights f16).
//! - `KILN_BENCH_QUICK=1`: fewer sizes (what `cargo xtask bench --quick` sets).

use std::path::{Path, PathBuf};

use kiln_runtime::{DType, DeviceKind, KvCacheSize, LoadOptions, Model};

/// The model the benches measure, and a line saying which it is.
pub fn model_path() -> (PathBuf, String) {
    if let Some(path) = std::env::var_os("KILN_BENCH_MODEL") {
        let path = PathBuf::from(path);
        let what = format!("KILN_BENCH_MODEL={}", path.display());
        return (path, what);
    }
    match kiln_hub::default_model_path() {
        Ok(path) if path.exists() => {
            let what = format!("the default model ({})", path.display());
            (path, what)
        }
        _ => (
            random_smollm2(),
            "random weights of SmolLM2-135M's shapes (the default model is not fetched: \
             `cargo xtask fetch-model`)"
                .into(),
        ),
    }
}

/// The value environment variable `name` gives, parsed, else `default`; a value that does not
/// parse stops the bench, naming the variable.
fn setting<T: std::str::FromStr<Err = String>>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value.parse().unwrap_or_else(|e| panic!("{name}: {e}")),
        Err(_) => default,
    }
}

/// The device `KILN_BENCH_DEVICE` names (default: the CPU).
pub fn device() -> DeviceKind {
    setting("KILN_BENCH_DEVICE", DeviceKind::Cpu)
}

/// The compute dtype `KILN_BENCH_DTYPE` names (default: f32).
pub fn dtype() -> DType {
    setting("KILN_BENCH_DTYPE", DType::F32)
}

/// Whether to measure fewer sizes (`KILN_BENCH_QUICK=1`).
pub fn quick() -> bool {
    std::env::var("KILN_BENCH_QUICK").is_ok_and(|v| v == "1")
}

/// The KV cache's dtype: `KILN_BENCH_KV_DTYPE` (f16 | f32), else the served default.
pub fn kv_dtype() -> DType {
    setting("KILN_BENCH_KV_DTYPE", LoadOptions::default().kv_dtype)
}

/// Positions of KV cache the benches load the model with (every decode and prefill case fits).
pub const BENCH_KV_TOKENS: usize = 64 * 1024;

/// The bench model loaded on the bench device with the default (served) KV dtype and
/// [`BENCH_KV_TOKENS`] positions of cache; says on stderr what it measures.
pub fn load_model() -> Model {
    let (path, what) = model_path();
    let options = LoadOptions {
        device: device(),
        dtype: dtype(),
        kv_cache: KvCacheSize::Tokens(BENCH_KV_TOKENS),
        kv_dtype: kv_dtype(),
        ..LoadOptions::default()
    };
    eprintln!(
        "benchmarking {what} on {:?} in {:?}",
        options.device, options.dtype
    );
    match Model::load(&path, &options) {
        Ok(model) => model,
        Err(err) => panic!("loading {}: {err}", path.display()),
    }
}

/// Deterministic, varied token ids below `vocab`.
pub fn tokens(n: usize, seed: usize, vocab: usize) -> Vec<u32> {
    let span = vocab.saturating_sub(117).max(1);
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % span + 17.min(vocab - 1)) as u32)
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_stay_inside_the_vocabulary() {
        for vocab in [2, 256, 49_152] {
            assert!(tokens(1000, 3, vocab).iter().all(|&t| (t as usize) < vocab));
        }
        assert_ne!(tokens(8, 0, 49_152), tokens(8, 1, 49_152));
    }
}
