//! Gemma 3 270M (base) from its real Q4_K_M GGUF (Q5_0, Q8_0, Q4_K and Q6_K tensors, kept
//! packed) against transformers' float32 reference (`testdata/gemma3`, copied from the shared
//! golden set): last-position logits within 1e-3, the top-20 ids and 32 greedy steps with the KV
//! cache, exactly, on all four prompts — the 958-token one crosses the 512-position window of
//! the sliding layers, and is prefilled in chunks that straddle it.

use kiln_runtime::{DType, KvCacheSize, LayerAttention, LoadOptions, Model, SeqInput};
use serde_json::Value;

use crate::common::{argmax, device, f32s, ids, margin, testdata};

fn model(kv_dtype: DType) -> Model {
    let path = kiln_hub::model_path(&kiln_hub::GEMMA3_270M).unwrap();
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask fetch-model --model gemma3-270m`",
        path.display()
    );
    let options = LoadOptions {
        device: device(),
        block_size: 16,
        kv_cache: KvCacheSize::Tokens(4096),
        kv_dtype,
        ..Default::default()
    };
    Model::load(&path, &options).unwrap()
}

fn golden() -> Value {
    serde_json::from_slice(&std::fs::read(testdata("gemma3").join("golden_gemma3.json")).unwrap())
        .unwrap()
}

/// Prefills `prompt` in chunks of at most `chunk` tokens, then runs `steps` greedy steps;
/// the prompt's last logits and the greedy ids with each step's top-1 margin.
fn run(
    model: &mut Model,
    prompt: &[u32],
    table: &[u32],
    chunk: usize,
    steps: usize,
) -> (Vec<f32>, Vec<(u32, f32)>) {
    let mut last = Vec::new();
    for (i, part) in prompt.chunks(chunk).enumerate() {
        let out = model
            .forward(&[SeqInput {
                tokens: part,
                start: i * chunk,
                block_table: table,
                all_logits: false,
                embeds: &[],
            }])
            .unwrap();
        last = out[0].last().to_vec();
    }
    let mut logits = last.clone();
    let mut greedy = Vec::with_capacity(steps);
    for step in 0..steps {
        let id = argmax(&logits);
        greedy.push((id, margin(&logits)));
        if step + 1 == steps {
            break;
        }
        let out = model
            .forward(&[SeqInput {
                tokens: &[id],
                start: prompt.len() + step,
                block_table: table,
                all_logits: false,
                embeds: &[],
            }])
            .unwrap();
        logits = out[0].last().to_vec();
    }
    (last, greedy)
}

const PROMPTS: [&str; 4] = ["english", "code", "unicode", "long_sliding_window"];

#[test]
fn golden_prompts_match_transformers() {
    let golden = golden();
    let mut model = model(DType::F32);
    let config = model.config().clone();
    assert_eq!(config.num_layers, 18);
    assert_eq!(config.sliding_window, Some(512));
    assert_eq!(
        config
            .layer_attention
            .iter()
            .filter(|a| **a == LayerAttention::Full)
            .count(),
        3
    );
    // 3 global and 15 sliding layers: groups of 3, one global and five sliding.
    let groups = model.kv_groups();
    assert_eq!(groups.size, 3);
    assert_eq!(
        groups.windows,
        [None, Some(512), Some(512), Some(512), Some(512), Some(512)]
    );
    // 4,096 positions of room: a page per block per group.
    assert_eq!(model.num_blocks(), 256 * 6);
    for (n, name) in PROMPTS.iter().enumerate() {
        let case = &golden[name];
        let prompt = ids(&case["token_ids"]);
        // 1,024 positions per prompt, each in its own pages of the one pool: 64 blocks, a
        // page per block for each of the 6 KV groups (the global layers', five sliding).
        let table: Vec<u32> = (n as u32 * 384..n as u32 * 384 + 384).collect();
        // The long prompt in chunks of 400: the second and third start past the window.
        let chunk = if prompt.len() > 512 {
            400
        } else {
            prompt.len()
        };
        let (logits, greedy) = run(&mut model, &prompt, &table, chunk, 32);
        let expected = f32s(
            &std::fs::read(testdata("gemma3").join(format!("logits_last_{name}.f32"))).unwrap(),
        );
        assert_eq!(logits.len(), expected.len());
        let diff = logits
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!(
            "{name}: {} prompt tokens, max |logit diff| {diff:.2e}",
            prompt.len()
        );
        assert!(diff < 1e-3, "{name}: max |logit diff| = {diff}");
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let top20: Vec<u32> = order[..20].iter().map(|&i| i as u32).collect();
        assert_eq!(top20, ids(&case["top20_ids"]), "{name}: top-20 ids");
        let greedy: Vec<u32> = greedy.iter().map(|g| g.0).collect();
        assert_eq!(greedy, ids(&case["greedy_ids"]), "{name}: greedy ids");
    }
}

/// With f16 K/V (the served default) the greedy ids must stay transformers' where the margin
/// allows; each prompt's smallest margin on the path is printed, and a flip is reported with
/// the margin transformers had at that step.
#[test]
fn f16_kv_keeps_the_golden_greedy_ids() {
    let golden = golden();
    let mut model = model(DType::F16);
    for (n, name) in PROMPTS.iter().enumerate() {
        let case = &golden[name];
        let prompt = ids(&case["token_ids"]);
        let table: Vec<u32> = (n as u32 * 384..n as u32 * 384 + 384).collect();
        let (_, greedy) = run(&mut model, &prompt, &table, prompt.len(), 32);
        let smallest = greedy.iter().map(|g| g.1).fold(f32::INFINITY, f32::min);
        eprintln!("{name}: smallest top-1 margin with f16 K/V {smallest:.4}");
        let expected = ids(&case["greedy_ids"]);
        let margins: Vec<f64> = case["margins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        for (step, ((got, _), want)) in greedy.iter().zip(&expected).enumerate() {
            assert_eq!(
                got, want,
                "{name}: step {step} flipped with f16 K/V (transformers' margin there {})",
                margins[step]
            );
        }
    }
}
