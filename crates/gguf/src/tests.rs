//! Writer→reader round trips, and a hand-crafted file for every way a header can be wrong.

use crate::value::{write_str, write_value};
use crate::*;

/// Builds raw GGUF bytes field by field, so tests can write what `GgufWriter` refuses to.
#[derive(Clone)]
struct Raw(Vec<u8>);

impl Raw {
    fn new(version: u32, tensor_count: u64, kv_count: u64) -> Self {
        Self(b"GGUF".to_vec())
            .u32(version)
            .u64(tensor_count)
            .u64(kv_count)
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(mut self, s: &str) -> Self {
        write_str(&mut self.0, s);
        self
    }
    fn kv(mut self, key: &str, value: impl Into<Value>) -> Self {
        write_str(&mut self.0, key);
        write_value(&mut self.0, &value.into());
        self
    }
    fn tensor(self, name: &str, dims: &[u64], ggml_type: u32, offset: u64) -> Self {
        let mut s = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            s = s.u64(d);
        }
        s.u32(ggml_type).u64(offset)
    }
    /// Pads to the data section and appends `n` data bytes.
    fn data(mut self, alignment: usize, n: usize) -> Self {
        let len = self.0.len().next_multiple_of(alignment) + n;
        self.0.resize(len, 0);
        self
    }
    fn parse(self) -> Result<GgufFile, GgufError> {
        GgufFile::from_bytes(self.0)
    }
    fn err(self) -> GgufError {
        self.parse().expect_err("crafted file should be rejected")
    }
}

fn all_value_types() -> Vec<(&'static str, Value)> {
    vec![
        ("u8", Value::U8(200)),
        ("i8", Value::I8(-100)),
        ("u16", Value::U16(60_000)),
        ("i16", Value::I16(-30_000)),
        ("u32", Value::U32(4_000_000_000)),
        ("i32", Value::I32(-2_000_000_000)),
        ("f32", Value::F32(1e-5)),
        ("bool", Value::Bool(true)),
        ("string", Value::from("ünïcödé ✓")),
        ("u64", Value::U64(u64::MAX)),
        ("i64", Value::I64(i64::MIN)),
        ("f64", Value::F64(-2.5e-300)),
        ("arr.u8", vec![1u8, 2].into()),
        ("arr.i8", vec![-1i8].into()),
        ("arr.u16", vec![7u16].into()),
        ("arr.i16", vec![-7i16].into()),
        ("arr.u32", vec![7u32].into()),
        ("arr.i32", vec![1i32, 3, 3].into()),
        ("arr.f32", vec![0.5f32, -0.0].into()),
        ("arr.bool", vec![false, true].into()),
        ("arr.string", vec!["<|endoftext|>", "Ġ t", ""].into()),
        ("arr.u64", vec![u64::MAX].into()),
        ("arr.i64", vec![i64::MIN].into()),
        ("arr.f64", vec![1e300f64].into()),
        ("arr.empty", Value::Array(Array::F64(vec![]))),
        (
            "arr.nested",
            Value::Array(Array::Array(vec![
                Array::Array(vec![Array::String(vec!["x".into()])]),
                Array::U8(vec![]),
            ])),
        ),
    ]
}

#[test]
fn every_value_type_round_trips_in_file_order() {
    let values = all_value_types();
    let mut w = GgufWriter::new();
    for (k, v) in &values {
        w.add(*k, v.clone());
    }
    let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 32);
    assert!(file.tensors().is_empty());
    let read: Vec<_> = file
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect();
    let expected: Vec<_> = values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    assert_eq!(read, expected);
}

/// Deterministic bytes that differ per tensor, so a misplaced slice is noticed.
fn pattern(seed: usize, n: u64) -> Vec<u8> {
    (0..n as usize).map(|i| (i * 31 + seed * 7) as u8).collect()
}

#[test]
fn every_tensor_type_round_trips() {
    let mut w = GgufWriter::new();
    let mut expected = Vec::new();
    for (i, ty) in GgmlType::known().enumerate() {
        let block = ty.block_size().unwrap();
        let dims = vec![block * 2, 3];
        let data = pattern(i, ty.n_bytes(block * 6).unwrap());
        w.add_tensor(format!("t.{}", ty.name()), &dims, ty, data.clone());
        expected.push((format!("t.{}", ty.name()), dims, ty, data));
    }
    // An unknown type is written verbatim and its info stays readable.
    w.add_tensor("t.future", &[64], GgmlType::Other(99), vec![1u8; 5]);
    w.add_tensor("t.4d", &[2, 3, 4, 5], GgmlType::F16, pattern(99, 240));

    let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert_eq!(file.tensors().len(), expected.len() + 2);
    for (name, dims, ty, data) in expected {
        let info = file.tensor(&name).unwrap();
        assert_eq!(info.dims, dims);
        assert_eq!(info.ggml_type, ty);
        assert_eq!(info.n_bytes, Some(data.len() as u64));
        assert_eq!(info.offset % 32, 0, "{name} is unaligned");
        assert!(info.offset >= file.data_offset());
        assert_eq!(file.tensor_data(info).unwrap(), data, "{name}");
    }
    let future = file.tensor("t.future").unwrap();
    assert_eq!(future.ggml_type, GgmlType::Other(99));
    assert_eq!(future.n_bytes, None);
    let err = file.tensor_data(future).unwrap_err();
    assert!(
        matches!(err, GgufError::UnsupportedTensorType { type_id: 99, .. }),
        "{err}"
    );
    let four = file.tensor("t.4d").unwrap();
    assert_eq!(four.n_elements(), 120);
    assert_eq!(file.tensor_data(four).unwrap(), pattern(99, 240));
    // The file order is kept.
    assert_eq!(file.tensors().first().unwrap().name, "t.F32");
    assert_eq!(file.tensors().last().unwrap().name, "t.4d");
}

#[test]
fn alignment_comes_from_metadata_in_any_unsigned_type() {
    for (value, expected) in [
        (Value::U8(1), 1),
        (Value::U16(64), 64),
        (Value::U32(8), 8),
        (Value::U64(4096), 4096),
    ] {
        let bytes = GgufWriter::new()
            .add(ALIGNMENT_KEY, value)
            .add_tensor("a", &[3], GgmlType::I8, vec![1, 2, 3])
            .add_tensor("b", &[1], GgmlType::F32, vec![4, 5, 6, 7])
            .to_bytes()
            .unwrap();
        let file = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(file.alignment(), expected);
        assert_eq!(file.data_offset() % expected, 0);
        for t in file.tensors() {
            assert_eq!(t.offset % expected, 0);
        }
        let b = file.tensor("b").unwrap();
        assert_eq!(file.tensor_data(b).unwrap(), [4, 5, 6, 7]);
        assert_eq!(file.len() % expected, 0);
    }
}

#[test]
fn version_2_is_accepted() {
    let mut bytes = GgufWriter::new().add("k", 1u32).to_bytes().unwrap();
    bytes[4] = 2;
    let file = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(file.version(), 2);
    assert_eq!(file.metadata().get_u32("k").unwrap(), 1);
}

#[test]
fn open_maps_a_file_and_reports_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    GgufWriter::new()
        .add("general.name", "tiny")
        .add_tensor("w", &[2], GgmlType::F32, vec![0, 0, 128, 63, 0, 0, 0, 64])
        .write_to(&path)
        .unwrap();
    let file = GgufFile::open(&path).unwrap();
    let w = file.tensor("w").unwrap();
    assert_eq!(file.tensor_data(w).unwrap(), [0, 0, 128, 63, 0, 0, 0, 64]);
    assert_eq!(file.len(), std::fs::metadata(&path).unwrap().len());

    let missing = dir.path().join("missing.gguf");
    let err = GgufFile::open(&missing).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(err.to_string().contains("missing.gguf"), "{err}");

    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let err = GgufFile::open(&empty).unwrap_err();
    assert!(
        matches!(err, GgufError::Truncated { offset: 0, .. }),
        "{err}"
    );
}

#[test]
fn truncation_names_what_and_where() {
    let err = GgufFile::from_bytes(Vec::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "GGUF file truncated: reading the magic at offset 0 needs 4 bytes, only 0 remain"
    );
    let full = Raw::new(3, 0, 1).kv("general.name", "tiny").0;
    let mut saw_value = false;
    for len in 0..full.len() {
        let err = GgufFile::from_bytes(full.get(..len).unwrap().to_vec()).unwrap_err();
        let GgufError::Truncated { what, offset, .. } = &err else {
            panic!("prefix {len}: {err}");
        };
        assert!(*offset <= len as u64);
        saw_value |= what == "the value of key \"general.name\"";
    }
    assert!(saw_value);
    assert!(Raw::new(3, 0, 1).kv("general.name", "tiny").parse().is_ok());
}

#[test]
fn absurd_counts_are_rejected_before_allocating() {
    let err = Raw::new(3, 0, u64::MAX).err();
    assert!(
        matches!(
            err,
            GgufError::Truncated {
                needed: u64::MAX,
                offset: 24,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("metadata entries"), "{err}");

    let err = Raw::new(3, 1 << 40, 0).err();
    assert!(err.to_string().contains("tensor infos"), "{err}");

    // An array claiming 2^60 strings in a tiny file.
    let err = Raw::new(3, 0, 1)
        .str("tokens")
        .u32(9)
        .u32(8)
        .u64(1 << 60)
        .bytes(&[0; 64])
        .err();
    assert!(matches!(&err, GgufError::Truncated { what, .. } if what.contains("key \"tokens\"")));

    // Ten strings need at least 80 bytes: refused up front, not after reading eight of them.
    let err = Raw::new(3, 0, 1)
        .str("tokens")
        .u32(9)
        .u32(8)
        .u64(10)
        .bytes(&[0; 64])
        .err();
    assert!(
        matches!(&err, GgufError::Truncated { what, needed: 80, available: 64, .. }
            if what == "the 10 elements of key \"tokens\""),
        "{err}"
    );

    let err = Raw::new(3, 0, 1).str("s").u32(8).u64(u64::MAX - 1).err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
}

#[test]
fn bad_magic() {
    let mut bytes = Raw::new(3, 0, 0).0;
    bytes[..4].copy_from_slice(b"GGML");
    let err = GgufFile::from_bytes(bytes).unwrap_err();
    assert!(matches!(err, GgufError::BadMagic { found } if &found == b"GGML"));
}

#[test]
fn bad_versions() {
    for version in [0, 1, 4, 0xffff_ffff] {
        let err = Raw::new(version, 0, 0).err();
        assert!(matches!(err, GgufError::UnsupportedVersion { version: v } if v == version));
    }
    assert_eq!(
        Raw::new(1, 0, 0).err().to_string(),
        "unsupported GGUF version 1 (only versions 2 and 3 are supported)"
    );
    for version in [2u32, 3] {
        let err = Raw::new(version.swap_bytes(), 0, 0).err();
        assert!(matches!(err, GgufError::BigEndian { .. }));
        assert!(
            err.to_string()
                .starts_with("big-endian GGUF is not supported")
        );
    }
}

#[test]
fn invalid_utf8_names_the_key() {
    let err = Raw::new(3, 0, 1)
        .u64(2)
        .bytes(&[b'k', 0xff])
        .u32(0)
        .bytes(&[0])
        .err();
    assert!(
        matches!(err, GgufError::InvalidUtf8 { offset: 32, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("metadata key \"k\u{fffd}\""),
        "{err}"
    );

    let err = Raw::new(3, 0, 1)
        .str("general.name")
        .u32(8)
        .u64(1)
        .bytes(&[0xc3])
        .err();
    assert!(
        err.to_string()
            .contains("the value of key \"general.name\""),
        "{err}"
    );

    let err = Raw::new(3, 0, 1)
        .str("tokens")
        .u32(9)
        .u32(8)
        .u64(2)
        .str("ok")
        .u64(1)
        .bytes(&[0x80])
        .err();
    assert!(
        err.to_string().contains("element 1 of key \"tokens\""),
        "{err}"
    );

    let err = Raw::new(3, 1, 0)
        .u64(1)
        .bytes(&[0xfe])
        .u32(1)
        .u64(1)
        .u32(0)
        .u64(0)
        .data(32, 4)
        .err();
    assert!(err.to_string().contains("the name of tensor 0"), "{err}");
}

#[test]
fn unknown_value_type() {
    let err = Raw::new(3, 0, 1).str("k").u32(13).u64(0).err();
    assert!(
        matches!(
            err,
            GgufError::UnknownValueType {
                type_id: 13,
                offset: 33,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("key \"k\""), "{err}");
    let err = Raw::new(3, 0, 1).str("k").u32(9).u32(99).u64(0).err();
    assert!(
        matches!(err, GgufError::UnknownValueType { type_id: 99, .. }),
        "{err}"
    );
}

#[test]
fn bool_must_be_0_or_1() {
    let err = Raw::new(3, 0, 1).str("flag").u32(7).bytes(&[2]).err();
    assert!(
        matches!(
            err,
            GgufError::InvalidBool {
                byte: 2,
                offset: 40,
                ..
            }
        ),
        "{err}"
    );
    let err = Raw::new(3, 0, 1)
        .str("flags")
        .u32(9)
        .u32(7)
        .u64(2)
        .bytes(&[1, 255])
        .err();
    assert!(
        matches!(err, GgufError::InvalidBool { byte: 255, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("element 1 of key \"flags\""),
        "{err}"
    );
}

#[test]
fn nesting_too_deep() {
    let mut raw = Raw::new(3, 0, 1).str("deep");
    raw = raw.u32(9);
    for _ in 0..MAX_ARRAY_DEPTH {
        raw = raw.u32(9).u64(1);
    }
    let err = raw.u32(0).u64(0).err();
    assert!(
        matches!(
            err,
            GgufError::NestingTooDeep {
                max: MAX_ARRAY_DEPTH,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn duplicate_key() {
    let err = Raw::new(3, 0, 2).kv("a", 1u8).kv("a", 2u8).err();
    assert!(
        matches!(&err, GgufError::DuplicateKey { key, offset: 38 } if key == "a"),
        "{err}"
    );
    let err = GgufWriter::new()
        .add("a", 1u8)
        .add("a", 1u8)
        .to_bytes()
        .unwrap_err();
    assert!(matches!(err, GgufError::DuplicateKey { .. }));
}

#[test]
fn duplicate_tensor() {
    let err = Raw::new(3, 2, 0)
        .tensor("w", &[1], 0, 0)
        .tensor("w", &[1], 0, 32)
        .data(32, 64)
        .err();
    assert!(
        matches!(&err, GgufError::DuplicateTensor { name, .. } if name == "w"),
        "{err}"
    );
}

#[test]
fn bad_alignment() {
    for value in [
        Value::U32(0),
        Value::U32(48),
        Value::U64(3),
        Value::I32(32),
        Value::from("32"),
    ] {
        let err = Raw::new(3, 0, 1).kv(ALIGNMENT_KEY, value.clone()).err();
        assert!(
            matches!(err, GgufError::BadAlignment { .. }),
            "{value:?}: {err}"
        );
        let err = GgufWriter::new()
            .add(ALIGNMENT_KEY, value)
            .to_bytes()
            .unwrap_err();
        assert!(matches!(err, GgufError::BadAlignment { .. }));
    }
}

#[test]
fn dim_count() {
    for dims in [&[][..], &[1, 1, 1, 1, 1]] {
        let err = Raw::new(3, 1, 0).tensor("w", dims, 0, 0).data(32, 4).err();
        assert!(
            matches!(&err, GgufError::BadDimCount { name, n_dims, max: 4 } if name == "w" && *n_dims as usize == dims.len()),
            "{err}"
        );
    }
}

#[test]
fn zero_or_absurd_dimension() {
    let err = Raw::new(3, 1, 0)
        .tensor("w", &[4, 0], 0, 0)
        .data(32, 4)
        .err();
    assert!(
        matches!(
            err,
            GgufError::BadDimension {
                index: 1,
                value: 0,
                ..
            }
        ),
        "{err}"
    );
    let err = Raw::new(3, 1, 0)
        .tensor("w", &[u64::MAX], 0, 0)
        .data(32, 4)
        .err();
    assert!(
        matches!(err, GgufError::BadDimension { index: 0, .. }),
        "{err}"
    );
}

#[test]
fn element_count_overflow() {
    let err = Raw::new(3, 1, 0)
        .tensor("w", &[1 << 32, 1 << 32], 0, 0)
        .data(32, 4)
        .err();
    assert!(
        matches!(err, GgufError::ElementCountOverflow { .. }),
        "{err}"
    );
    // The count fits but the F64 byte size does not.
    let err = Raw::new(3, 1, 0)
        .tensor("w", &[1 << 31, 1 << 31], 28, 0)
        .data(32, 4)
        .err();
    assert!(
        matches!(err, GgufError::ElementCountOverflow { .. }),
        "{err}"
    );
}

#[test]
fn row_must_be_whole_blocks() {
    let err = Raw::new(3, 1, 0)
        .tensor("w", &[16, 2], 2, 0)
        .data(32, 18)
        .err();
    assert_eq!(
        err.to_string(),
        "tensor \"w\": ne[0] = 16 is not a multiple of the Q4_0 block size 32"
    );
    // ne[1] need not be a multiple: only rows are quantized in blocks.
    assert!(
        Raw::new(3, 1, 0)
            .tensor("w", &[32, 3], 2, 0)
            .data(32, 54)
            .parse()
            .is_ok()
    );
}

#[test]
fn unaligned_tensor() {
    let err = Raw::new(3, 1, 0).tensor("w", &[1], 0, 8).data(32, 64).err();
    assert!(
        matches!(
            err,
            GgufError::UnalignedTensor {
                offset: 8,
                alignment: 32,
                ..
            }
        ),
        "{err}"
    );
    // With alignment 8 the same offset is fine.
    let ok = Raw::new(3, 1, 1)
        .kv(ALIGNMENT_KEY, 8u32)
        .tensor("w", &[1], 0, 8)
        .data(8, 12)
        .parse()
        .unwrap();
    let w = ok.tensor("w").unwrap();
    assert_eq!(w.offset, ok.data_offset() + 8);
}

#[test]
fn tensor_data_past_the_end() {
    let raw = Raw::new(3, 1, 0).tensor("w", &[8], 0, 0);
    assert!(raw.clone().data(32, 32).parse().is_ok());
    let err = raw.clone().data(32, 31).err();
    assert!(
        matches!(&err, GgufError::TensorOutOfBounds { name, n_bytes: 32, .. } if name == "w"),
        "{err}"
    );
    // Offsets that overflow when added to the data section start.
    let err = Raw::new(3, 1, 0)
        .tensor("w", &[8], 0, u64::MAX - 31)
        .data(32, 32)
        .err();
    assert!(
        matches!(
            err,
            GgufError::TensorOutOfBounds {
                start: u64::MAX,
                ..
            }
        ),
        "{err}"
    );
    // An unknown type has no size, but must still start inside the file.
    let err = Raw::new(3, 1, 0)
        .tensor("w", &[8], 99, 64)
        .data(32, 32)
        .err();
    assert!(matches!(err, GgufError::TensorOutOfBounds { .. }), "{err}");
}

#[test]
fn tensor_data_checks_a_foreign_info() {
    let file = GgufWriter::new()
        .add_tensor("w", &[1], GgmlType::F32, vec![0; 4])
        .to_bytes()
        .and_then(GgufFile::from_bytes)
        .unwrap();
    let mut info = file.tensor("w").unwrap().clone();
    info.offset = file.len() - 2;
    assert!(matches!(
        file.tensor_data(&info),
        Err(GgufError::TensorOutOfBounds { .. })
    ));
    info.offset = u64::MAX;
    assert!(matches!(
        file.tensor_data(&info),
        Err(GgufError::TensorOutOfBounds { .. })
    ));
}

#[test]
fn writer_checks_data_length() {
    let err = GgufWriter::new()
        .add_tensor("w", &[32, 2], GgmlType::Q8_0, vec![0; 67])
        .to_bytes()
        .unwrap_err();
    assert!(
        matches!(&err, GgufError::TensorDataLength { name, expected: 68, actual: 67 } if name == "w"),
        "{err}"
    );
    // The writer refuses whatever the reader would.
    let err = GgufWriter::new()
        .add_tensor("w", &[0], GgmlType::F32, vec![])
        .to_bytes()
        .unwrap_err();
    assert!(matches!(err, GgufError::BadDimension { .. }), "{err}");
    let err = GgufWriter::new()
        .add_tensor("w", &[1], GgmlType::F32, vec![0; 4])
        .add_tensor("w", &[1], GgmlType::F32, vec![0; 4])
        .to_bytes()
        .unwrap_err();
    assert!(matches!(err, GgufError::DuplicateTensor { .. }), "{err}");
}
