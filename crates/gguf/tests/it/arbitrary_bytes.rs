//! Property tests: arbitrary bytes after a valid magic and version never panic or over-allocate,
//! arbitrary metadata survives a writer→reader round trip, and mutated valid files stay safe.

use kiln_gguf::{Array, GgmlType, GgufFile, GgufWriter, Value};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::common::parse_checked;

fn header(version: u32, tensor_count: u64, kv_count: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&tensor_count.to_le_bytes());
    out.extend_from_slice(&kv_count.to_le_bytes());
    out
}

fn array() -> impl Strategy<Value = Array> {
    let f32s = -1e30f32..1e30f32;
    let leaf = prop_oneof![
        vec(any::<u8>(), 0..8).prop_map(Array::U8),
        vec(any::<i8>(), 0..8).prop_map(Array::I8),
        vec(any::<u16>(), 0..8).prop_map(Array::U16),
        vec(any::<i16>(), 0..8).prop_map(Array::I16),
        vec(any::<u32>(), 0..8).prop_map(Array::U32),
        vec(any::<i32>(), 0..8).prop_map(Array::I32),
        vec(f32s, 0..8).prop_map(Array::F32),
        vec(any::<bool>(), 0..8).prop_map(Array::Bool),
        vec(".{0,12}", 0..8).prop_map(Array::String),
        vec(any::<u64>(), 0..8).prop_map(Array::U64),
        vec(any::<i64>(), 0..8).prop_map(Array::I64),
        vec(-1e300f64..1e300, 0..8).prop_map(Array::F64),
    ];
    // Depth 6 stays under the reader's nesting cap of 8.
    leaf.prop_recursive(6, 64, 4, |inner| vec(inner, 0..4).prop_map(Array::Array))
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        (-1e30f32..1e30).prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        ".{0,24}".prop_map(Value::String),
        array().prop_map(Value::Array),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        (-1e300f64..1e300).prop_map(Value::F64),
    ]
}

fn chunk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0u64..40).prop_map(|n| n.to_le_bytes().to_vec()),
        (0u32..14).prop_map(|t| t.to_le_bytes().to_vec()),
        vec(any::<u8>(), 0..6),
    ]
}

/// A small valid file with a few entries and tensors of assorted types, for mutating.
fn sample_file() -> Vec<u8> {
    GgufWriter::new()
        .add("general.architecture", "llama")
        .add("llama.block_count", 2u32)
        .add("tokenizer.ggml.tokens", vec!["a", "b", "<|im_end|>"])
        .add(
            "nested",
            Value::Array(Array::Array(vec![Array::Bool(vec![true])])),
        )
        .add_tensor("a", &[4, 2], GgmlType::F32, vec![1; 32])
        .add_tensor("b", &[32], GgmlType::Q8_0, vec![2; 34])
        .add_tensor("c", &[256, 1, 1, 1], GgmlType::Q4_K, vec![3; 144])
        .add_tensor("d", &[3], GgmlType::Other(77), vec![4; 7])
        .to_bytes()
        .expect("the sample is valid")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_after_magic_and_version(version in 2u32..=3, tail in vec(any::<u8>(), 0..512)) {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&tail);
        let _ = parse_checked(bytes, &|| "arbitrary bytes".into());
    }

    /// Small counts get the parser past the header into the entries and tensor infos.
    #[test]
    fn arbitrary_entries_after_small_counts(
        tensors in 0u64..4,
        kvs in 0u64..4,
        tail in vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = header(3, tensors, kvs);
        bytes.extend_from_slice(&tail);
        let _ = parse_checked(bytes, &|| "arbitrary entries".into());
    }

    /// Mostly small lengths and valid type ids, so random input often parses deep into nested
    /// arrays and tensor infos instead of failing on the first absurd length.
    #[test]
    fn structured_noise(
        tensors in 0u64..4,
        kvs in 0u64..6,
        chunks in vec(chunk(), 0..48),
    ) {
        let mut bytes = header(3, tensors, kvs);
        bytes.extend(chunks.concat());
        let _ = parse_checked(bytes, &|| "structured noise".into());
    }

    #[test]
    fn mutated_valid_files_stay_safe(edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = sample_file();
        for (at, byte) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *byte;
        }
        if let Ok(file) = parse_checked(bytes, &|| format!("edits {edits:?}")) {
            for t in file.tensors() {
                if t.n_bytes.is_some() {
                    prop_assert!(file.tensor_data(t).is_ok(), "{}", t.name);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn metadata_round_trips(entries in vec(value(), 0..12)) {
        let mut w = GgufWriter::new();
        for (i, v) in entries.iter().enumerate() {
            w.add(format!("key.{i}"), v.clone());
        }
        let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
        let read: Vec<Value> = file.metadata().iter().map(|(_, v)| v.clone()).collect();
        prop_assert_eq!(read, entries);
    }
}

#[test]
fn sample_file_parses() {
    let file = parse_checked(sample_file(), &|| "the sample".into()).unwrap();
    assert_eq!(file.tensors().len(), 4);
}
