//! The tiny random Llama (`testdata/tiny-llama`, made with transformers) through the real
//! runtime: logits and hidden states at every position, greedy decoding with the paged KV cache,
//! chunked prefill, batch invariance, the GGUF path (llama.cpp's q/k permutation), Qwen2-style
//! q/k/v biases, and step errors.

use std::path::{Path, PathBuf};

use kiln_gguf::{GgmlType, GgufWriter};
use kiln_runtime::{DType, DeviceKind, KvCacheSize, LoadOptions, Model, RuntimeError, SeqInput};
use serde_json::Value;

use crate::common::{argmax, device, f32s, ids, testdata};

fn dir() -> PathBuf {
    testdata("tiny-llama")
}

fn golden() -> Value {
    serde_json::from_slice(&std::fs::read(dir().join("tiny_golden.json")).unwrap()).unwrap()
}

fn options() -> LoadOptions {
    LoadOptions {
        device: device(),
        block_size: 4,
        // 64 blocks of 4; f32 K/V keep every step bit-exact against the reference.
        kv_cache: KvCacheSize::Tokens(64 * 4),
        kv_dtype: DType::F32,
        ..Default::default()
    }
}

fn load() -> Model {
    Model::load(&dir(), &options()).unwrap()
}

fn read_f32(path: &Path) -> Vec<f32> {
    f32s(&std::fs::read(path).unwrap())
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Greedy decoding of `steps` tokens after `prompt`, one sequence, blocks 0.. in order.
fn greedy(model: &mut Model, prompt: &[u32], steps: usize, first_block: u32) -> Vec<u32> {
    let table: Vec<u32> = (first_block..first_block + 16).collect();
    let mut out = Vec::new();
    let logits = model
        .forward(&[SeqInput {
            tokens: prompt,
            start: 0,
            block_table: &table,
            all_logits: false,
            embeds: &[],
        }])
        .unwrap();
    let mut next = argmax(logits[0].last());
    for i in 0..steps {
        out.push(next);
        if i + 1 == steps {
            break;
        }
        let logits = model
            .forward(&[SeqInput {
                tokens: &[next],
                start: prompt.len() + i,
                block_table: &table,
                all_logits: false,
                embeds: &[],
            }])
            .unwrap();
        next = argmax(logits[0].last());
    }
    out
}

#[test]
fn logits_at_every_position_match_transformers() {
    let g = golden();
    let mut model = load();
    let input = ids(&g["input_ids"]);
    let table: Vec<u32> = (0..4).collect();
    let out = model
        .forward(&[SeqInput {
            tokens: &input,
            start: 0,
            block_table: &table,
            all_logits: true,
            embeds: &[],
        }])
        .unwrap();
    let expected = read_f32(&dir().join("logits_all.f32"));
    assert_eq!(out[0].rows, 16);
    let diff = max_diff(&out[0].data, &expected);
    assert!(diff < 1e-4, "max |diff| = {diff}");
}

#[test]
fn hidden_states_match_transformers_layer_by_layer() {
    let g = golden();
    let mut model = load();
    let input = ids(&g["input_ids"]);
    // Five blocks of 4: the 16 prompt positions and the decode step after them.
    let table: Vec<u32> = (0..5).collect();
    let out = model
        .hidden_states(&[SeqInput {
            tokens: &input,
            start: 0,
            block_table: &table,
            all_logits: false,
            embeds: &[],
        }])
        .unwrap();
    // 3 × 16 × 64: the embedding output, after layer 0, after layer 1 + the final norm.
    let expected = read_f32(&dir().join("hidden_states.f32"));
    let [seq] = out.as_slice() else {
        panic!("one sequence in, {} out", out.len())
    };
    assert_eq!((seq.rows, seq.hidden, seq.states.len()), (16, 64, 3));
    for (i, (state, reference)) in seq.states.iter().zip(expected.chunks(16 * 64)).enumerate() {
        let diff = max_diff(state, reference);
        assert!(diff < 1e-4, "hidden state {i}: max |diff| = {diff}");
    }
    // The cache was written as by `forward`: a decode step on top of it equals one prefill of
    // all 17 tokens.
    let next = [5u32];
    let step = model
        .forward(&[SeqInput {
            tokens: &next,
            start: 16,
            block_table: &table,
            all_logits: false,
            embeds: &[],
        }])
        .unwrap();
    let whole: Vec<u32> = input.iter().copied().chain(next).collect();
    let fresh = load()
        .forward(&[SeqInput {
            tokens: &whole,
            start: 0,
            block_table: &table,
            all_logits: false,
            embeds: &[],
        }])
        .unwrap();
    let diff = max_diff(step[0].last(), fresh[0].last());
    assert!(
        diff < 1e-5,
        "decode after hidden_states: max |diff| = {diff}"
    );
}

#[test]
fn greedy_decoding_with_the_kv_cache_matches_transformers() {
    let g = golden();
    let mut model = load();
    let got = greedy(&mut model, &ids(&g["greedy_prompt_ids"]), 16, 0);
    assert_eq!(got, ids(&g["greedy_new_ids_16"]));
    // Blocks elsewhere in the pool give the same answer.
    let got = greedy(&mut model, &ids(&g["greedy_prompt_ids"]), 16, 20);
    assert_eq!(got, ids(&g["greedy_new_ids_16"]));
}

#[test]
fn chunked_prefill_equals_one_prefill() {
    let g = golden();
    let input = ids(&g["input_ids"]);
    let expected = read_f32(&dir().join("logits_all.f32"));
    let mut model = load();
    let table = [7u32, 3, 9, 1];
    let mut start = 0;
    for chunk in [5usize, 1, 7, 3] {
        let out = model
            .forward(&[SeqInput {
                tokens: &input[start..start + chunk],
                start,
                block_table: &table,
                all_logits: true,
                embeds: &[],
            }])
            .unwrap();
        let want = &expected[start * 512..(start + chunk) * 512];
        let diff = max_diff(&out[0].data, want);
        assert!(diff < 1e-4, "chunk at {start}: max |diff| = {diff}");
        start += chunk;
    }
}

#[test]
fn a_sequence_gives_the_same_logits_alone_and_in_a_ragged_batch() {
    let g = golden();
    let input = ids(&g["input_ids"]);
    let mut model = load();
    let alone = model
        .forward(&[SeqInput {
            tokens: &input[..9],
            start: 0,
            block_table: &[0, 1, 2],
            all_logits: false,
            embeds: &[],
        }])
        .unwrap();
    // Eight sequences of different lengths, the probe among them, each in its own blocks.
    let others: Vec<Vec<u32>> = (0..7)
        .map(|i| {
            (0..(1 + i * 2))
                .map(|t| ((t * 31 + i * 7) % 512) as u32)
                .collect()
        })
        .collect();
    let tables: Vec<Vec<u32>> = (0..8)
        .map(|i| vec![3 + i * 4, 4 + i * 4, 5 + i * 4, 6 + i * 4])
        .collect();
    let mut batch = Vec::new();
    for (i, other) in others.iter().enumerate() {
        if i == 3 {
            batch.push(SeqInput {
                tokens: &input[..9],
                start: 0,
                block_table: &tables[7],
                all_logits: false,
                embeds: &[],
            });
        }
        batch.push(SeqInput {
            tokens: other,
            start: 0,
            block_table: &tables[i],
            all_logits: false,
            embeds: &[],
        });
    }
    let together = model.forward(&batch).unwrap();
    let diff = max_diff(alone[0].last(), together[3].last());
    assert!(diff <= 1e-5, "max |diff| = {diff}");
    assert_eq!(argmax(alone[0].last()), argmax(together[3].last()));
    // And each other sequence matches its own solo run too.
    for (i, other) in others.iter().enumerate() {
        let solo = model
            .forward(&[SeqInput {
                tokens: other,
                start: 0,
                block_table: &tables[i],
                all_logits: false,
                embeds: &[],
            }])
            .unwrap();
        let j = if i < 3 { i } else { i + 1 };
        let diff = max_diff(solo[0].last(), together[j].last());
        assert!(diff <= 1e-5, "sequence {i}: max |diff| = {diff}");
    }
}

/// llama.cpp's converter permutes q/k rows; write the tiny model as GGUF the same way.
fn permute(data: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    let width = data.len() / rows;
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..half {
                let src = (h * head_dim + s * half + j) * width;
                let dst = (h * head_dim + 2 * j + s) * width;
                out[dst..dst + width].copy_from_slice(&data[src..src + width]);
            }
        }
    }
    out
}

fn tiny_as_gguf(path: &Path) {
    let bytes = std::fs::read(dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama")
        .add("llama.block_count", 2u32)
        .add("llama.context_length", 256u32)
        .add("llama.embedding_length", 64u32)
        .add("llama.feed_forward_length", 128u32)
        .add("llama.attention.head_count", 4u32)
        .add("llama.attention.head_count_kv", 2u32)
        .add("llama.rope.freq_base", 100000.0f32)
        .add("llama.attention.layer_norm_rms_epsilon", 1e-5f32)
        .add("llama.vocab_size", 512u32);
    for (name, view) in st.tensors() {
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let shape = view.shape().to_vec();
        let data = if name.ends_with("q_proj.weight") {
            permute(&data, shape[0], 4)
        } else if name.ends_with("k_proj.weight") {
            permute(&data, shape[0], 2)
        } else {
            data
        };
        let gguf = match name.as_str() {
            "model.embed_tokens.weight" => "token_embd.weight".to_string(),
            "model.norm.weight" => "output_norm.weight".to_string(),
            other => {
                let rest = other.strip_prefix("model.layers.").unwrap();
                let (layer, tail) = rest.split_once('.').unwrap();
                let t = match tail {
                    "input_layernorm.weight" => "attn_norm.weight",
                    "post_attention_layernorm.weight" => "ffn_norm.weight",
                    "self_attn.q_proj.weight" => "attn_q.weight",
                    "self_attn.k_proj.weight" => "attn_k.weight",
                    "self_attn.v_proj.weight" => "attn_v.weight",
                    "self_attn.o_proj.weight" => "attn_output.weight",
                    "mlp.gate_proj.weight" => "ffn_gate.weight",
                    "mlp.up_proj.weight" => "ffn_up.weight",
                    "mlp.down_proj.weight" => "ffn_down.weight",
                    t => panic!("unexpected tensor {t}"),
                };
                format!("blk.{layer}.{t}")
            }
        };
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.add_tensor(gguf, &dims, GgmlType::F32, raw);
    }
    w.write_to(path).unwrap();
}

#[test]
fn the_gguf_form_of_the_model_gives_the_same_logits() {
    let path = std::env::temp_dir().join(format!("kiln-tiny-{}.gguf", std::process::id()));
    tiny_as_gguf(&path);
    let loaded = Model::load(&path, &options());
    std::fs::remove_file(&path).unwrap();
    let mut model = loaded.unwrap();
    let g = golden();
    let input = ids(&g["input_ids"]);
    let out = model
        .forward(&[SeqInput {
            tokens: &input,
            start: 0,
            block_table: &[0, 1, 2, 3],
            all_logits: true,
            embeds: &[],
        }])
        .unwrap();
    let diff = max_diff(&out[0].data, &read_f32(&dir().join("logits_all.f32")));
    assert!(diff < 1e-4, "max |diff| = {diff}");
}

#[test]
fn bad_steps_are_errors_and_leave_the_cache_alone() {
    let g = golden();
    let prompt = ids(&g["greedy_prompt_ids"]);
    let mut model = load();
    let step = |model: &mut Model, tokens: &[u32], start: usize, table: &[u32]| {
        model
            .forward(&[SeqInput {
                tokens,
                start,
                block_table: table,
                all_logits: false,
                embeds: &[],
            }])
            .map(|_| ())
    };
    assert_eq!(
        step(&mut model, &[512], 0, &[0]),
        Err(RuntimeError::BadTokenId {
            id: 512,
            vocab_size: 512
        })
    );
    assert_eq!(
        step(&mut model, &[1], 256, &(0..65).collect::<Vec<_>>()),
        Err(RuntimeError::ContextExceeded {
            position: 256,
            context_length: 256
        })
    );
    assert_eq!(
        step(&mut model, &prompt, 3, &[0]),
        Err(RuntimeError::BlockTableTooShort {
            sequence: 0,
            needed: 2,
            given: 1
        })
    );
    let blocks = model.num_blocks() as u32;
    assert_eq!(
        step(&mut model, &prompt, 0, &[blocks]),
        Err(RuntimeError::BadBlock {
            block: blocks,
            num_blocks: blocks as usize
        })
    );
    assert_eq!(
        step(&mut model, &[], 0, &[0]),
        Err(RuntimeError::EmptySequence { sequence: 0 })
    );
    assert_eq!(
        model.forward(&[]).map(|_| ()),
        Err(RuntimeError::EmptyBatch)
    );
    let shared = model.forward(&[
        SeqInput {
            tokens: &[1],
            start: 0,
            block_table: &[0],
            all_logits: false,
            embeds: &[],
        },
        SeqInput {
            tokens: &[2],
            start: 0,
            block_table: &[0],
            all_logits: false,
            embeds: &[],
        },
    ]);
    assert_eq!(
        shared.map(|_| ()),
        Err(RuntimeError::SharedWrite { block: 0 })
    );
    // After all that, the model still decodes correctly.
    assert_eq!(
        greedy(&mut model, &prompt, 16, 0),
        ids(&g["greedy_new_ids_16"])
    );
}

#[test]
fn loading_errors_name_the_file_and_tensor() {
    let err = Model::load(Path::new("/nonexistent/model.gguf"), &options()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/model.gguf"), "{err}");
    // A GGUF whose tensors do not fit its config.
    let path = std::env::temp_dir().join(format!("kiln-bad-{}.gguf", std::process::id()));
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama")
        .add("llama.block_count", 1u32)
        .add("llama.context_length", 16u32)
        .add("llama.embedding_length", 8u32)
        .add("llama.feed_forward_length", 16u32)
        .add("llama.attention.head_count", 2u32)
        .add("llama.attention.layer_norm_rms_epsilon", 1e-5f32)
        .add("llama.vocab_size", 4u32)
        .add_tensor(
            "token_embd.weight",
            &[8, 5],
            GgmlType::F32,
            vec![0u8; 8 * 5 * 4],
        );
    w.write_to(&path).unwrap();
    let err = Model::load(&path, &options()).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("token_embd.weight") && msg.contains("[5, 8]"),
        "{msg}"
    );
}

#[test]
fn f16_compute_stays_close_to_the_f32_reference() {
    // On the CPU: f16 support on a GPU depends on the adapter, and lavapipe lacks it.
    let options = LoadOptions {
        device: DeviceKind::Cpu,
        dtype: DType::F16,
        ..options()
    };
    let mut model = Model::load(&dir(), &options).unwrap();
    let input = ids(&golden()["input_ids"]);
    let out = model
        .forward(&[SeqInput {
            tokens: &input,
            start: 0,
            block_table: &[0, 1, 2, 3],
            all_logits: true,
            embeds: &[],
        }])
        .unwrap();
    let diff = max_diff(&out[0].data, &read_f32(&dir().join("logits_all.f32")));
    // f16 keeps ~3 significant digits; these logits are of order 1.
    assert!(diff < 2e-2, "max |diff| = {diff}");
}

/// Writes the tiny model as two BF16 safetensors shards with an index, as big checkpoints ship.
fn tiny_as_bf16_shards(out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    std::fs::copy(dir().join("config.json"), out.join("config.json")).unwrap();
    let bytes = std::fs::read(dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    let converted: Vec<(String, Vec<usize>, Vec<u8>)> = names
        .iter()
        .map(|name| {
            let view = st.tensor(name).unwrap();
            let bf16: Vec<u8> = view
                .data()
                .chunks_exact(4)
                .flat_map(|b| {
                    half::bf16::from_f32(f32::from_le_bytes(b.try_into().unwrap())).to_le_bytes()
                })
                .collect();
            (name.clone(), view.shape().to_vec(), bf16)
        })
        .collect();
    for (shard, part) in converted.chunks(converted.len() / 2 + 1).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", shard + 1);
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = part
            .iter()
            .map(|(name, shape, data)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::BF16,
                    shape.clone(),
                    data,
                )
                .unwrap();
                (name.clone(), view)
            })
            .collect();
        for (name, _) in &views {
            weight_map.insert(name.clone(), Value::from(file.clone()));
        }
        safetensors::serialize_to_file(views, None, &out.join(&file)).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        out.join("model.safetensors.index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

#[test]
fn sharded_bf16_safetensors_load_and_agree() {
    let out = std::env::temp_dir().join(format!("kiln-tiny-shards-{}", std::process::id()));
    tiny_as_bf16_shards(&out);
    let loaded = Model::load(&out, &options());
    std::fs::remove_dir_all(&out).unwrap();
    let mut model = loaded.unwrap();
    let input = ids(&golden()["input_ids"]);
    let logits = model
        .forward(&[SeqInput {
            tokens: &input,
            start: 0,
            block_table: &[0, 1, 2, 3],
            all_logits: true,
            embeds: &[],
        }])
        .unwrap();
    // BF16 weights carry ~3 significant digits: close to the f32 reference, not equal to it.
    let diff = max_diff(&logits[0].data, &read_f32(&dir().join("logits_all.f32")));
    assert!(diff < 0.1, "max |diff| = {diff}");
    assert!(
        diff > 0.0,
        "BF16 weights cannot reproduce f32 logits exactly"
    );
}

/// The tiny model with Qwen2-style q/k/v biases (`bias(layer, name, len)` gives each one) and
/// `attention_bias: true`, written to `out`; `None` leaves that bias tensor out.
fn tiny_with_biases(out: &Path, bias: impl Fn(usize, &str, usize) -> Option<Vec<f32>>) {
    std::fs::create_dir_all(out).unwrap();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(dir().join("config.json")).unwrap()).unwrap();
    config["attention_bias"] = true.into();
    std::fs::write(out.join("config.json"), config.to_string()).unwrap();
    let bytes = std::fs::read(dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec(), view.data().to_vec()))
        .collect();
    for layer in 0..2 {
        for (name, len) in [("q_proj", 64), ("k_proj", 32), ("v_proj", 32)] {
            if let Some(values) = bias(layer, name, len) {
                tensors.push((
                    format!("model.layers.{layer}.self_attn.{name}.bias"),
                    vec![len],
                    values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ));
            }
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
}

#[test]
fn qkv_biases_are_loaded_and_applied() {
    let input = ids(&golden()["input_ids"]);
    let run = |dir: &Path| {
        Model::load(dir, &options())
            .unwrap()
            .forward(&[SeqInput {
                tokens: &input,
                start: 0,
                block_table: &[0, 1, 2, 3],
                all_logits: true,
                embeds: &[],
            }])
            .unwrap()
            .remove(0)
            .data
    };
    let reference = read_f32(&dir().join("logits_all.f32"));
    let base = std::env::temp_dir().join(format!("kiln-tiny-bias-{}", std::process::id()));

    // Zero biases: the bias path is wired in and changes nothing.
    let zero = base.join("zero");
    tiny_with_biases(&zero, |_, _, len| Some(vec![0.0; len]));
    let diff = max_diff(&run(&zero), &reference);
    assert!(diff < 1e-5, "zero biases moved the logits by {diff}");

    // A bias on v shifts every attention output by exactly that vector (softmax weights sum to
    // one), so it must move the logits; one on q and k must too.
    for (which, shift) in [("v_proj", 0.5f32), ("q_proj", 0.5), ("k_proj", 0.5)] {
        let path = base.join(which);
        tiny_with_biases(&path, |_, name, len| {
            Some(if name == which {
                (0..len).map(|i| shift * ((i % 7) as f32 - 3.0)).collect()
            } else {
                vec![0.0; len]
            })
        });
        let diff = max_diff(&run(&path), &reference);
        assert!(
            diff > 1e-2,
            "a {which} bias left the logits unchanged ({diff})"
        );
    }

    // A declared bias that is missing is a load error naming it.
    let missing = base.join("missing");
    tiny_with_biases(&missing, |layer, name, len| {
        ((layer, name) != (1, "k_proj")).then(|| vec![0.0; len])
    });
    let err = Model::load(&missing, &options()).unwrap_err().to_string();
    assert!(
        err.contains("model.layers.1.self_attn.k_proj.bias"),
        "{err}"
    );
    std::fs::remove_dir_all(&base).unwrap();
}
