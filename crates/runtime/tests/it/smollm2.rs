//! SmolLM2-135M-Instruct from its Q4_1 GGUF against transformers' float32 reference
//! (`testdata/smollm2/golden_smollm2.json` and `logits_last_*.f32`): full last-position logits
//! within 1e-3, the top-20 ids, and 32 greedy steps with the KV cache, exactly.

use kiln_runtime::{LoadOptions, Model, SeqInput};
use serde_json::Value;

use crate::common::{argmax, device, ids, testdata};

fn model() -> Model {
    let path = kiln_hub::default_model_path().unwrap();
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask fetch-model`",
        path.display()
    );
    let options = LoadOptions {
        device: device(),
        block_size: 16,
        kv_cache_bytes: 64 << 20,
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
                }])
                .unwrap();
            greedy.push(argmax(out[0].last()));
        }
        assert_eq!(greedy, ids(&case["greedy_ids"]), "{name}: greedy ids");
    }
}
