//! Dequantization against gguf-py (llama.cpp's Python package) as the independent reference: the
//! fixtures in `tests/data` (made by `make_quant_fixtures.py`) and slices of the real default model.

use std::path::PathBuf;

use kiln_gguf::{GgmlType, GgufFile};
use kiln_runtime::quant::{QuantError, dequantize, dequantize_to_vec};

use crate::common::f32s;

fn data_dir() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("tests/data")
}

/// The indices where `got` and `want` differ in their bits, with both values, for the message.
fn mismatches(got: &[f32], want: &[f32]) -> Vec<(usize, f32, f32)> {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| g.to_bits() != w.to_bits())
        .map(|(i, (g, w))| (i, *g, *w))
        .collect()
}

const FIXTURE_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

#[test]
fn every_type_is_bit_exact_against_gguf_py() {
    for ty in FIXTURE_TYPES {
        let name = ty.name();
        let blocks = std::fs::read(data_dir().join(format!("quant_{name}.blocks"))).unwrap();
        let want = f32s(&std::fs::read(data_dir().join(format!("quant_{name}.f32"))).unwrap());
        let block_size = ty.block_size().unwrap() as usize;
        assert!(want.len() >= 2 * block_size, "{name}: fixture too small");

        let got = dequantize_to_vec(ty, &blocks, want.len()).unwrap();
        let bad = mismatches(&got, &want);
        assert!(
            bad.is_empty(),
            "{name}: {} of {} values differ, first: {:?}",
            bad.len(),
            want.len(),
            &bad[..bad.len().min(5)]
        );

        // Block by block into a slice of a larger buffer gives the same values.
        let block_bytes = ty.block_bytes().unwrap() as usize;
        let mut out = vec![f32::NAN; want.len()];
        for (b, y) in blocks.chunks(block_bytes).zip(out.chunks_mut(block_size)) {
            dequantize(ty, b, block_size, y).unwrap();
        }
        assert!(mismatches(&out, &want).is_empty(), "{name}: block by block");
    }
}

/// One line of `real_model_reference.txt`: a slice of a tensor's row, as gguf-py dequantized it.
struct Slice {
    tensor: String,
    row: usize,
    col: usize,
    values: Vec<f32>,
}

fn real_model_reference() -> Vec<Slice> {
    let text = std::fs::read_to_string(data_dir().join("real_model_reference.txt")).unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let mut fields = line.split_whitespace();
            let tensor = fields.next().unwrap().to_owned();
            let mut number = || fields.next().unwrap().parse::<usize>().unwrap();
            let (row, col, count) = (number(), number(), number());
            let values: Vec<f32> = fields
                .map(|hex| f32::from_bits(u32::from_str_radix(hex, 16).unwrap()))
                .collect();
            assert_eq!(values.len(), count, "{tensor} row {row}");
            Slice {
                tensor,
                row,
                col,
                values,
            }
        })
        .collect()
}

fn open_model() -> GgufFile {
    let path = kiln_hub::default_model_path().unwrap();
    assert!(
        path.is_file(),
        "the default model is missing at {}: run `cargo xtask fetch-model`",
        path.display()
    );
    GgufFile::open(&path).unwrap()
}

#[test]
fn real_model_tensors_match_gguf_py() {
    let file = open_model();
    let reference = real_model_reference();
    let mut checked = Vec::new();
    for (name, ty, dims) in [
        ("token_embd.weight", GgmlType::Q8_0, vec![576, 49152]),
        ("blk.0.attn_q.weight", GgmlType::Q4_1, vec![576, 576]),
        ("blk.0.attn_norm.weight", GgmlType::F32, vec![576]),
    ] {
        let info = file.tensor(name).unwrap();
        assert_eq!((info.ggml_type, &info.dims), (ty, &dims), "{name}");
        let n = usize::try_from(info.n_elements()).unwrap();
        let values = dequantize_to_vec(ty, file.tensor_data(info).unwrap(), n).unwrap();
        assert!(values.iter().all(|v| v.is_finite()), "{name}");

        let row_len = dims[0] as usize;
        for slice in reference.iter().filter(|s| s.tensor == name) {
            let start = slice.row * row_len + slice.col;
            let got = &values[start..start + slice.values.len()];
            let bad = mismatches(got, &slice.values);
            assert!(
                bad.is_empty(),
                "{name} row {} col {}: {} values differ, first: {:?}",
                slice.row,
                slice.col,
                bad.len(),
                &bad[..bad.len().min(5)]
            );
            checked.push((name, slice.row, slice.col));
        }
    }
    // 3 rows x 2 slices for each matrix, 2 slices of the norm.
    assert_eq!(checked.len(), 14, "{checked:?}");
}

#[test]
fn unsupported_types_are_named() {
    for ty in [
        GgmlType::Q8_K,
        GgmlType::Q8_1,
        GgmlType::I32,
        GgmlType::Other(99),
    ] {
        let err = dequantize_to_vec(ty, &[], 0).unwrap_err();
        assert_eq!(err, QuantError::UnsupportedType(ty));
        assert!(err.to_string().contains(&ty.to_string()), "{err}");
    }
    assert_eq!(
        dequantize_to_vec(GgmlType::Other(99), &[], 0)
            .unwrap_err()
            .to_string(),
        "dequantizing unknown ggml type 99 tensors is not supported"
    );
}

#[test]
fn wrong_lengths_are_errors() {
    let block = [0u8; 20];
    // One byte short, one byte over, a whole extra block.
    for len in [19, 21, 40] {
        let data = vec![0u8; len];
        assert_eq!(
            dequantize_to_vec(GgmlType::Q4_1, &data, 32),
            Err(QuantError::DataLength {
                ggml_type: GgmlType::Q4_1,
                n_elements: 32,
                expected: 20,
                actual: len,
            })
        );
    }
    for n in [1, 31, 33, 48] {
        let err = dequantize_to_vec(GgmlType::Q4_1, &block, n).unwrap_err();
        assert_eq!(
            err,
            QuantError::NotBlockMultiple {
                ggml_type: GgmlType::Q4_1,
                n_elements: n,
                block_size: 32,
            }
        );
        assert!(err.to_string().contains("Q4_1"), "{err}");
    }
    assert!(matches!(
        dequantize_to_vec(GgmlType::Q4_K, &[0; 144], 255),
        Err(QuantError::NotBlockMultiple {
            block_size: 256,
            ..
        })
    ));
    // An element count whose byte size overflows is a length error, not a panic or an allocation.
    assert!(matches!(
        dequantize_to_vec(GgmlType::F32, &block, usize::MAX / 2),
        Err(QuantError::DataLength {
            expected: usize::MAX,
            ..
        })
    ));
    assert!(matches!(
        dequantize_to_vec(GgmlType::F32, &[0; 6], 1),
        Err(QuantError::DataLength {
            expected: 4,
            actual: 6,
            ..
        })
    ));

    for out_len in [0, 31, 33] {
        let mut out = vec![0.0; out_len];
        assert_eq!(
            dequantize(GgmlType::Q4_1, &block, 32, &mut out),
            Err(QuantError::OutputLength {
                expected: 32,
                actual: out_len,
            })
        );
    }
    // Nothing at all is fine.
    assert_eq!(dequantize_to_vec(GgmlType::Q6_K, &[], 0), Ok(Vec::new()));
}
