//! SmolLM2-135M-Instruct from its Q4_1 GGUF against transformers' float32 reference
//! (`testdata/smollm2/golden_smollm2.json` and `logits_last_*.f32`): full last-position logits
//! within 1e-3, the top-20 ids, and 32 greedy steps with the KV cache, exactly — with f32 K/V,
//! and the same greedy ids with the served default, f16 K/V.

use kiln_runtime::{DType, KvCacheSize, LoadOptions, Model, SeqInput};
use serde_json::Value;

use crate::common::{argmax, device, ids, margin, testdata};

fn model() -> Model {
    model_with_kv(DType::F32)
}

fn model_with_kv(kv_dtype: DType) -> Model {
    let path = kiln_hub::default_model_path().unwrap();
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask fetch-model`",
        path.display()
    );
    let options = LoadOptions {
        device: device(),
        block_size: 16,
        kv_cache: KvCacheSize::Bytes(64 << 20),
        kv_dtype,
        ..Default::default()
    };
    Model::load(&path, &options).unwrap()
}

#[test]
fn golden_prompts_match_transformers() {
    let golden: Value = serde_json::from_slice(
        &std::fs::read(testdata("smollm2").join("golden_smollm2.json")).unwrap(),
    )
    .unwrap();
    let mut model = model();
    assert_eq!(model.config().num_layers, 30);
    // Each prompt in its own blocks, so all four also share one pool without interfering.
    for (n, (name, case)) in golden["prompts"].as_object().unwrap().iter().enumerate() {
        let prompt = ids(&case["token_ids"]);
        let table: Vec<u32> = (n as u32 * 8..n as u32 * 8 + 8).collect();
        let out = model
            .forward(&[SeqInput {
                tokens: &prompt,
                start: 0,
                block_table: &table,
                all_logits: false,
                embeds: &[],
            }])
            .unwrap();
        let logits = out[0].last().to_vec();
        let expected: Vec<f32> =
            std::fs::read(testdata("smollm2").join(format!("logits_last_{name}.f32")))
                .unwrap()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
        let diff = logits
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-3, "{name}: max |logit diff| = {diff}");
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let top20: Vec<u32> = order[..20].iter().map(|&i| i as u32).collect();
        assert_eq!(
            top20,
            ids(&case["last_logits_top20_ids"]),
            "{name}: top-20 ids"
        );

        let mut greedy = vec![argmax(&logits)];
        for step in 1..32 {
            let out = model
                .forward(&[SeqInput {
                    tokens: &[greedy[step - 1]],
                    start: prompt.len() + step - 1,
                    block_table: &table,
                    all_logits: false,
                    embeds: &[],
                }])
                .unwrap();
            greedy.push(argmax(out[0].last()));
        }
        assert_eq!(greedy, ids(&case["greedy_ids"]), "{name}: greedy ids");
    }
}

/// The greedy ids of `steps` steps after `prompt` in blocks `table`, with each step's logits.
fn greedy(model: &mut Model, prompt: &[u32], table: &[u32], steps: usize) -> Vec<(u32, Vec<f32>)> {
    let mut out = Vec::with_capacity(steps);
    for step in 0..steps {
        let (tokens, start) = match out.last() {
            None => (prompt.to_vec(), 0),
            Some((id, _)) => (vec![*id], prompt.len() + step - 1),
        };
        let logits = model
            .forward(&[SeqInput {
                tokens: &tokens,
                start,
                block_table: table,
                all_logits: false,
                embeds: &[],
            }])
            .unwrap()[0]
            .last()
            .to_vec();
        out.push((argmax(&logits), logits));
    }
    out
}

/// f16 K/V (the served default) rounds what attention reads, so logits move a little; the
/// golden prompts' greedy ids must not. The smallest top-1 margin and the largest logit shift
/// are printed, so a flip would come with the margin it happened at.
#[test]
fn f16_kv_keeps_the_golden_greedy_ids() {
    let golden: Value = serde_json::from_slice(
        &std::fs::read(testdata("smollm2").join("golden_smollm2.json")).unwrap(),
    )
    .unwrap();
    let (mut exact, mut half) = (model_with_kv(DType::F32), model_with_kv(DType::F16));
    assert_eq!(half.kv_dtype(), DType::F16);
    assert_eq!(
        half.num_blocks(),
        2 * exact.num_blocks(),
        "same bytes, twice the blocks"
    );
    for (n, (name, case)) in golden["prompts"].as_object().unwrap().iter().enumerate() {
        let prompt = ids(&case["token_ids"]);
        let table: Vec<u32> = (n as u32 * 8..n as u32 * 8 + 8).collect();
        let expected = ids(&case["greedy_ids"]);
        let reference = greedy(&mut exact, &prompt, &table, expected.len());
        let served = greedy(&mut half, &prompt, &table, expected.len());
        let (mut min_margin, mut max_shift) = (f32::INFINITY, 0.0f32);
        for ((_, a), (_, b)) in reference.iter().zip(&served) {
            min_margin = min_margin.min(margin(a));
            let shift = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            max_shift = max_shift.max(shift);
        }
        eprintln!(
            "{name}: f16 K/V: smallest top-1 margin {min_margin:.4}, largest logit shift {max_shift:.4}"
        );
        let served_ids: Vec<u32> = served.iter().map(|(id, _)| *id).collect();
        assert_eq!(
            served_ids, expected,
            "{name}: greedy ids with f16 K/V (smallest margin {min_margin}, largest shift {max_shift})"
        );
        // f16 keeps ~3 significant digits of K and V; logits here are of order 10.
        assert!(max_shift < 0.25, "{name}: largest logit shift {max_shift}");
    }
}
