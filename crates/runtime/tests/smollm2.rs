//! SmolLM2-135M-Instruct from its Q4_1 GGUF against transformers' float32 reference
//! (`testdata/smollm2/golden_smollm2.json` and `logits_last_*.f32`): full last-position logits
//! within 1e-3, the top-20 ids, and 32 greedy steps with the KV cache, exactly.

// Helpers outside #[test] fns unwrap too: a test should fail loudly.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use kiln_runtime::{DeviceKind, LoadOptions, Model, SeqInput};
use serde_json::Value;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/smollm2")
}

fn model() -> Model {
    let path = kiln_hub::default_model_path().unwrap();
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask fetch-model`",
        path.display()
    );
    let device = std::env::var("KILN_TEST_DEVICE")
        .ok()
        .map(|d| d.parse::<DeviceKind>().unwrap())
        .unwrap_or_default();
    let options = LoadOptions {
        device,
        block_size: 16,
        kv_cache_bytes: 64 << 20,
        ..Default::default()
    };
    Model::load(&path, &options).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn golden_prompts_match_transformers() {
    let golden: Value =
        serde_json::from_slice(&std::fs::read(testdata().join("golden_smollm2.json")).unwrap())
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
            }])
            .unwrap();
        let logits = out[0].last().to_vec();
        let expected: Vec<f32> = std::fs::read(testdata().join(format!("logits_last_{name}.f32")))
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
                }])
                .unwrap();
            greedy.push(argmax(out[0].last()));
        }
        assert_eq!(greedy, ids(&case["greedy_ids"]), "{name}: greedy ids");
    }
}
