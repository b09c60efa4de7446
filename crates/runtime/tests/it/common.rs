//! Helpers the runtime's integration tests share.

use std::path::PathBuf;

use kiln_runtime::DeviceKind;
use serde_json::Value;

/// `testdata/NAME` at the repository root.
pub(crate) fn testdata(name: &str) -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("../../testdata")
    .join(name)
}

/// The device the model tests run on: `KILN_TEST_DEVICE` (CI runs the tiny model's tests a
/// second time on wgpu, Mesa's software Vulkan), else the CPU.
pub(crate) fn device() -> DeviceKind {
    std::env::var("KILN_TEST_DEVICE")
        .ok()
        .map(|d| d.parse::<DeviceKind>().unwrap())
        .unwrap_or_default()
}

/// A JSON array of token ids.
pub(crate) fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The index of the largest value (the first, on ties).
pub(crate) fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// The gap between the largest and the second-largest logit.
pub(crate) fn margin(logits: &[f32]) -> f32 {
    let best = argmax(logits) as usize;
    let second = logits
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != best)
        .map(|(_, &v)| v)
        .fold(f32::NEG_INFINITY, f32::max);
    logits[best] - second
}

/// Little-endian f32 values.
pub(crate) fn f32s(bytes: &[u8]) -> Vec<f32> {
    let (chunks, rest) = bytes.as_chunks::<4>();
    assert!(rest.is_empty(), "not a whole number of f32 values");
    chunks.iter().map(|c| f32::from_le_bytes(*c)).collect()
}
