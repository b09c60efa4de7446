//! The tiny random Mistral, Phi-3 and Gemma 3 checkpoints (`testdata/tiny-mistral`, `tiny-phi3`,
//! `tiny-gemma3`, made with transformers; each GGUF written by llama.cpp's converter) through
//! the real runtime, from safetensors and from GGUF: logits at every position of a prompt longer than
//! the sliding window (and, for Phi-3, longer than `longrope`'s original context), and greedy
//! decoding with the paged KV cache, against transformers. Mistral has Nemo's explicit head_dim
//! (24 for hidden 64 and 4 heads); Phi-3 fused projections and a partial RoPE (8 of 16 dims);
//! Gemma 3 its own scale, sandwich norms and mixed sliding and global layers.

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

/// A table of 16 blocks of pages (a page per block per KV group) starting at block `first`.
fn table(model: &Model, first: u32) -> Vec<u32> {
    let groups = model.kv_groups().windows.len() as u32;
    (first * groups..(first + 16) * groups).collect()
}

/// Logits at every position of `prompt`, prefilled in chunks of `chunk`, in blocks from
/// `first_block`.
fn all_logits(model: &mut Model, prompt: &[u32], chunk: usize, first_block: u32) -> Vec<f32> {
    let table = table(model, first_block);
    let mut out = Vec::new();
    for (i, part) in prompt.chunks(chunk).enumerate() {
        let logits = model
            .forward(&[SeqInput {
                tokens: part,
                start: i * chunk,
                block_table: &table,
                all_logits: true,
                embeds: &[],
            }])
            .unwrap();
        out.extend_from_slice(&logits[0].data);
    }
    out
}

fn greedy(model: &mut Model, prompt: &[u32], steps: usize, first_block: u32) -> Vec<u32> {
    let table = table(model, first_block);
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
                embeds: &[],
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
    for (source, path) in sources(family) {
        check_source(
            family,
            (source, &path),
            architecture,
            ("logits_all.f32", &golden),
        );
    }
}

/// One checkpoint of `family` against the reference logits in `logits` and the greedy ids of
/// `reference`.
fn check_source(
    family: &str,
    (source, path): (&str, &std::path::Path),
    architecture: Architecture,
    (logits, reference): (&str, &Value),
) {
    let golden = golden(family);
    let prompt = ids(&golden["input_ids"]);
    let expected = f32s(&std::fs::read(testdata(family).join(logits)).unwrap());
    let mut model = Model::load(path, &options()).unwrap();
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
    assert_eq!(got, ids(&reference["greedy_ids"]), "{family} from {source}");
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
    // Every layer slides: one group, a page per block.
    assert_eq!(model.kv_groups().windows, [Some(8)]);
    let table: Vec<u32> = (0..8).collect();
    let step = |model: &mut Model, table: &[u32], token: u32, start: usize| {
        model.forward(&[SeqInput {
            tokens: &[token],
            start,
            block_table: table,
            all_logits: false,
            embeds: &[],
        }])
    };
    model
        .forward(&[SeqInput {
            tokens: &prompt,
            start: 0,
            block_table: &table,
            all_logits: false,
            embeds: &[],
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

/// The tiny random Gemma 3 (`testdata/tiny-gemma3`: head_dim 32 for hidden 64, q·k scaled by
/// 1/√24, layers [sliding, sliding, global], window 6, two RoPE bases, (1 + w) norms):
/// from safetensors against transformers; from the GGUF llama.cpp's converter wrote (which
/// cannot say the scale or the layer pattern, so it means what llama.cpp reads: 1/√head_dim,
/// every sixth layer global) against transformers with that config.
#[test]
fn tiny_gemma3_matches_transformers_from_safetensors_and_gguf() {
    let golden = golden("tiny-gemma3");
    let dir = testdata("tiny-gemma3");
    check_source(
        "tiny-gemma3",
        ("safetensors", &dir),
        Architecture::Gemma3,
        ("logits_all.f32", &golden),
    );
    check_source(
        "tiny-gemma3",
        ("GGUF", &dir.join("model.gguf")),
        Architecture::Gemma3,
        (
            "logits_all_llamacpp_semantics.f32",
            &golden["llamacpp_semantics"],
        ),
    );
    let model = Model::load(&dir, &options()).unwrap();
    // 1 global and 2 sliding layers: three groups of one.
    assert_eq!(model.kv_groups().windows, [None, Some(6), Some(6)]);
}
