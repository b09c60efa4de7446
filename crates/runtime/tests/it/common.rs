//! Helpers the runtime's integration tests share.

use std::path::PathBuf;

use kiln_runtime::{DeviceKind, Embeds};
use kiln_tokenizer::{ChatMessage, Content, ContentPart};
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

pub(crate) fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `(start, len)` runs of `token` in `ids`, split into `per_image` counts.
pub(crate) fn image_runs(ids: &[u32], token: u32, per_image: &[usize]) -> Vec<Vec<(usize, usize)>> {
    let mut positions = ids
        .iter()
        .enumerate()
        .filter(|&(_, &t)| t == token)
        .map(|(p, _)| p);
    per_image
        .iter()
        .map(|&n| {
            let mut runs: Vec<(usize, usize)> = Vec::new();
            for _ in 0..n {
                let p = positions.next().unwrap();
                match runs.last_mut() {
                    Some((s, l)) if *s + *l == p => *l += 1,
                    _ => runs.push((p, 1)),
                }
            }
            runs
        })
        .collect()
}

/// The image rows for prompt positions `range`, as offsets into the chunk.
pub(crate) fn embeds<'a>(
    rows: &'a [Vec<f32>],
    runs: &[Vec<(usize, usize)>],
    range: std::ops::Range<usize>,
    hidden: usize,
) -> Vec<Embeds<'a>> {
    let mut out = Vec::new();
    for (rows, runs) in rows.iter().zip(runs) {
        let mut row = 0;
        for &(start, len) in runs {
            let (from, to) = (start.max(range.start), (start + len).min(range.end));
            if from < to {
                let first = row + from - start;
                out.push(Embeds {
                    at: from - range.start,
                    rows: &rows[first * hidden..(first + to - from) * hidden],
                });
            }
            row += len;
        }
    }
    out
}

/// A golden case's chat messages (`{"type": "image", "image": FILE}` parts as image parts;
/// string content stays a string).
pub(crate) fn messages(case: &Value) -> Vec<ChatMessage> {
    case["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage {
            role: m["role"].as_str().unwrap().to_string(),
            content: Some(match m["content"].as_str() {
                Some(text) => Content::Text(text.to_string()),
                None => Content::Parts(
                    m["content"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| match p["type"].as_str().unwrap() {
                            "image" => ContentPart::Image,
                            _ => ContentPart::Text {
                                text: p["text"].as_str().unwrap().to_string(),
                            },
                        })
                        .collect(),
                ),
            }),
            extra: serde_json::Map::new(),
        })
        .collect()
}
