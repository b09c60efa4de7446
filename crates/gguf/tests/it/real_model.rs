//! Reads the real default model (SmolLM2-135M-Instruct, Q4_1) and checks what is known about it
//! from independent tools (the Python `gguf` package and the header bytes).

use kiln_gguf::{GgmlType, GgufWriter, Value};

use crate::common;

#[test]
fn header_facts() {
    let file = common::open_model();
    assert_eq!(file.version(), 3);
    assert_eq!(file.len(), 98_362_432);
    assert_eq!(file.alignment(), 32);
    assert_eq!(file.data_offset(), 1_785_664);
    assert_eq!(file.tensors().len(), 272);
    // The header's own kv_count (the Python reader shows 36 by adding 3 synthetic GGUF.* fields).
    assert_eq!(file.metadata().len(), 33);
    let bytes = file.as_bytes();
    assert_eq!(bytes.get(16..24), Some(&33u64.to_le_bytes()[..]));
}

#[test]
fn metadata_facts() {
    let file = common::open_model();
    let m = file.metadata();
    assert_eq!(m.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(m.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(m.get_u32("llama.context_length").unwrap(), 8192);
    assert_eq!(m.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(m.get_u32("llama.feed_forward_length").unwrap(), 1536);
    assert_eq!(m.get_u32("llama.attention.head_count").unwrap(), 9);
    assert_eq!(m.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(m.get_u32("llama.rope.dimension_count").unwrap(), 64);
    assert_eq!(m.get_f32("llama.rope.freq_base").unwrap(), 100_000.0);
    assert_eq!(
        m.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(),
        1e-5
    );
    assert!(!m.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert_eq!(m.get_u32("tokenizer.ggml.eos_token_id").unwrap(), 2);
    assert_eq!(m.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(m.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(m.get_str_array("general.languages").unwrap(), ["en"]);

    let tokens = m.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 49_152);
    assert_eq!(
        &tokens[..3],
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    );
    let merges = m.get_str_array("tokenizer.ggml.merges").unwrap();
    assert_eq!(merges.len(), 48_900);
    assert_eq!(merges[0], "Ġ t");
    let types = m.get_i32_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!(types.len(), 49_152);
    assert_eq!(types.iter().filter(|&&t| t == 3).count(), 17);
    assert!(matches!(
        m.get("tokenizer.ggml.token_type"),
        Some(Value::Array(kiln_gguf::Array::I32(_)))
    ));

    let template = m.get_str("tokenizer.chat_template").unwrap();
    assert!(template.contains("<|im_start|>"), "{template}");
    assert!(m.opt_str("tokenizer.ggml.scores").unwrap().is_none());
}

#[test]
fn tensor_facts() {
    let file = common::open_model();
    let embd = file.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.ggml_type, GgmlType::Q8_0);
    assert_eq!(embd.dims, [576, 49_152]);
    assert_eq!(embd.offset, file.data_offset());
    assert_eq!(embd.n_bytes, Some(30_081_024));

    let q = file.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.ggml_type, GgmlType::Q4_1);
    assert_eq!(q.dims, [576, 576]);
    let k = file.tensor("blk.29.attn_k.weight").unwrap();
    assert_eq!(
        (k.ggml_type, k.dims.as_slice()),
        (GgmlType::Q4_1, &[576, 192][..])
    );
    let down = file.tensor("blk.0.ffn_down.weight").unwrap();
    assert_eq!(down.dims, [1536, 576]);
    for name in [
        "blk.0.attn_norm.weight",
        "blk.29.ffn_norm.weight",
        "output_norm.weight",
    ] {
        let norm = file.tensor(name).unwrap();
        assert_eq!(norm.ggml_type, GgmlType::F32, "{name}");
        assert_eq!(norm.dims, [576], "{name}");
    }
    // The output layer is tied to the embedding.
    assert!(file.tensor("output.weight").is_none());

    let count = |ty| file.tensors().iter().filter(|t| t.ggml_type == ty).count();
    assert_eq!(count(GgmlType::Q4_1), 210);
    assert_eq!(count(GgmlType::F32), 61);
    assert_eq!(count(GgmlType::Q8_0), 1);

    let mut end_of_data = 0;
    for t in file.tensors() {
        let data = file.tensor_data(t).unwrap();
        assert_eq!(Some(data.len() as u64), t.n_bytes, "{}", t.name);
        assert_eq!(t.offset % 32, 0, "{}", t.name);
        assert!(t.offset >= file.data_offset(), "{}", t.name);
        end_of_data = end_of_data.max(t.offset + data.len() as u64);
    }
    assert_eq!(end_of_data, file.len(), "the last tensor ends the file");

    // A norm's weights are sensible floats, so the offsets point at the right bytes.
    let norm = file
        .tensor_data(file.tensor("blk.0.attn_norm.weight").unwrap())
        .unwrap();
    let weights: Vec<f32> = norm
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert!(weights.iter().all(|w| w.is_finite() && w.abs() < 100.0));
    assert!(weights.iter().any(|&w| w != 0.0));
}

/// Re-encoding what was parsed reproduces the file's header byte for byte: every value,
/// including the 49,152-string vocab, was read exactly.
#[test]
fn header_re_encodes_byte_for_byte() {
    let file = common::open_model();
    let regions = common::regions(&file);
    let original = file.as_bytes();

    let mut w = GgufWriter::new();
    for (key, value) in file.metadata().iter() {
        w.add(key, value.clone());
    }
    let written = w.to_bytes().unwrap();
    // Same magic, version and kv_count; the writer's tensor_count is 0.
    assert_eq!(written[..8], original[..8]);
    assert_eq!(written[16..24], original[16..24]);
    let kvs = 24..regions.infos_start;
    assert_eq!(written.get(kvs.clone()), original.get(kvs));
    assert_eq!(written.len(), regions.infos_start.next_multiple_of(32));

    // The padding after the tensor infos is zeros up to the data section.
    assert!(
        original[regions.infos_end..regions.data_offset]
            .iter()
            .all(|&b| b == 0)
    );
}
