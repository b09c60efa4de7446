//! The tiny random Mistral and Phi-3 checkpoints (`testdata/tiny-mistral`, `testdata/tiny-phi3`,
//! made with transformers; each GGUF written by llama.cpp's converter) through the real
//! runtime, from safetensors and from GGUF: logits at every position of a prompt longer than
//! the sliding window (and, for Phi-3, longer than `longrope`'s original context), and greedy
//! decoding with the paged KV cache, against transformers. Mistral has Nemo's explicit head_dim
//! (24 for hidden 64 and 4 heads); Phi-3 fused projections and a partial RoPE (8 of 16 dims).

use std::path::PathBuf;

use kiln_runtime::{Architecture, DType, FREED_BLOCK, KvCacheSize, LoadOptions, Model, SeqInput};
use serde_json::Value;

use crate::common::{argmax, device, f32s, ids, testdata};

fn options() -> LoadOptions {
    LoadOptions {
        device: device(),
        block_size: 4,
        kv_cache: KvCacheSize::Tokens(64 * 4),
        kv_dtype: DType::F32,
        ..Default::default()
    }
}

/// The family's two checkpoints: the Hugging Face directory and the GGUF inside it.
fn sources(family: &str) -> [(&'static str, PathBuf); 2] {
    let dir = testdata(family);
    [
        ("safetensors", dir.clone()),
        ("GGUF", dir.join("model.gguf")),
    ]
}

fn golden(family: &str) -> Value {
    serde_json::from_slice(&std::fs::read(testdata(family).join("golden.json")).unwrap()).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Logits at every position of `prompt`, prefilled in chunks of `chunk`, in blocks from
/// `first_block`.
fn all_logits(model: &mut Model, prompt: &[u32], chunk: usize, first_block: u32) -> Vec<f32> {
    let table: Vec<u32> = (first_block..first_block + 16).collect();
    let mut out = Vec::new();
    for (i, part) in prompt.chunks(chunk).enumerate() {
        let logits = model
            .forward(&[SeqInput {
                tokens: part,
                start: i * chunk,
                block_table: &table,
                all_logits: true,
            }])
            .unwrap();
        out.extend_from_slice(&logits[0].data);
    }
    out
}

fn greedy(model: &mut Model, prompt: &[u32], steps: usize, first_block: u32) -> Vec<u32> {
    let table: Vec<u32> = (first_block..first_block + 16).collect();
    let mut tokens = prompt.to_vec();
    let mut start = 0;
    let mut out = Vec::new();
    while out.len() < steps {
        let logits = model
            .forward(&[SeqInput {
                tokens: &tokens,
                start,
                block_table: &table,
                all_logits: false,
            }])
            .unwrap();
        let next = argmax(logits[0].last());
        out.push(next);
        start += tokens.len();
        tokens = vec![next];
    }
    out
}

fn check_family(family: &str, architecture: Architecture) {
    let golden = golden(family);
    let prompt = ids(&golden["input_ids"]);
    let expected = f32s(&std::fs::read(testdata(family).join("logits_all.f32")).unwrap());
    for (source, path) in sources(family) {
        let mut model = Model::load(&path, &options()).unwrap();
        let config = model.config().clone();
        assert_eq!(config.architecture, architecture, "{family} {source}");
        let window = config.sliding_window.unwrap();
        assert!(prompt.len() > window, "the prompt must outrun the window");
        // In one step, and in chunks of 5 that start inside and past the window.
        for (chunk, first_block) in [(prompt.len(), 0), (5, 16)] {
            let logits = all_logits(&mut model, &prompt, chunk, first_block);
            let diff = max_diff(&logits, &expected);
            assert!(
                diff < 1e-4,
                "{family} from {source}, chunks of {chunk}: max |logit diff| {diff}"
            );
        }
        let got = greedy(&mut model, &ids(&golden["greedy_prompt"]), 16, 32);
        assert_eq!(got, ids(&golden["greedy_ids"]), "{family} from {source}");
    }
}

#[test]
fn tiny_mistral_matches_transformers_from_safetensors_and_gguf() {
    check_family("tiny-mistral", Architecture::Llama);
    let model = Model::load(&testdata("tiny-mistral"), &options()).unwrap();
    // Nemo's shape: head_dim is not hidden / heads.
    assert_eq!(model.config().head_dim, 24);
    assert_eq!(model.config().sliding_window, Some(8));
}

#[test]
fn tiny_phi3_matches_transformers_from_safetensors_and_gguf() {
    check_family("tiny-phi3", Architecture::Phi3);
    for (source, path) in sources("tiny-phi3") {
        let model = Model::load(&path, &options()).unwrap();
        let config = model.config();
        assert_eq!((config.rotary_dim, config.head_dim), (8, 16), "{source}");
        assert_eq!(config.sliding_window, Some(12), "{source}");
    }
}

/// A table whose blocks wholly before the window are [`FREED_BLOCK`] gives the same logits (no
/// layer reads them); a freed block the window still needs is refused before any work.
#[test]
fn blocks_before_the_window_may_be_freed() {
    let golden = golden("tiny-mistral");
    let prompt = ids(&golden["input_ids"]);
    let mut model = Model::load(&testdata("tiny-mistral"), &options()).unwrap();
    assert_eq!(model.config().kv_horizon(), Some(8));
    let table: Vec<u32> = (0..8).collect();
    let step = |model: &mut Model, table: &[u32], token: u32, start: usize| {
        model.forward(&[SeqInput {
            tokens: &[token],
            start,
            block_table: table,
            all_logits: false,
        }])
    };
    model
        .forward(&[SeqInput {
            tokens: &prompt,
            start: 0,
            block_table: &table,
            all_logits: false,
        }])
        .unwrap();
    let whole = step(&mut model, &table, 7, 24).unwrap();
    // Position 24 sees 17..=24: blocks 0..4 (positions 0..16) are out of every window.
    let mut freed = table.clone();
    freed[..4].fill(FREED_BLOCK);
    let again = step(&mut model, &freed, 7, 24).unwrap();
    assert_eq!(whole[0].data, again[0].data);
    freed[4] = FREED_BLOCK;
    assert!(step(&mut model, &freed, 7, 24).is_err());
}
