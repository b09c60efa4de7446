//! Helpers the runtime's integration tests share.

use std::path::PathBuf;

use kiln_runtime::{DeviceKind, Embeds, Model, SeqInput};
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

/// Each image's tower rows and the runs of its tokens in the prompt.
pub(crate) type ImageRows<'a> = (&'a [Vec<f32>], &'a [Vec<(usize, usize)>]);

/// A vision model (a folder, or a GGUF with its `mmproj`) with f32 K/V in blocks of 4, 64 of them.
pub(crate) fn vision_model(path: &std::path::Path, mmproj: Option<PathBuf>) -> Model {
    Model::load(
        path,
        &kiln_runtime::LoadOptions {
            device: device(),
            block_size: 4,
            kv_cache: kiln_runtime::KvCacheSize::Tokens(4 * 64),
            kv_dtype: kiln_runtime::DType::F32,
            mmproj,
            ..Default::default()
        },
    )
    .unwrap()
}

/// One sequence through `model` from position 0 in blocks `0..64`: `prompt` prefilled in chunks
/// of `chunk` (which may cut through the images' `runs`, filled from `rows`), logits at every
/// position, then `steps` greedy ids from the cache (the first from the prefill's last row).
pub(crate) fn prefill_and_greedy(
    model: &mut Model,
    prompt: &[u32],
    (rows, runs): ImageRows<'_>,
    chunk: usize,
    steps: usize,
) -> (Vec<f32>, Vec<u32>) {
    let hidden = model.config().hidden_size;
    let vocab = model.config().vocab_size;
    let table: Vec<u32> = (0..64).collect();
    let mut logits = Vec::new();
    for start in (0..prompt.len()).step_by(chunk) {
        let end = (start + chunk).min(prompt.len());
        let e = embeds(rows, runs, start..end, hidden);
        let out = model
            .forward(&[SeqInput {
                tokens: &prompt[start..end],
                start,
                block_table: &table,
                all_logits: true,
                embeds: &e,
            }])
            .unwrap();
        logits.extend_from_slice(&out[0].data);
    }
    let mut next = argmax(&logits[(prompt.len() - 1) * vocab..]);
    let mut greedy = vec![next];
    for step in 0..steps.saturating_sub(1) {
        let out = model
            .forward(&[SeqInput {
                tokens: &[next],
                start: prompt.len() + step,
                block_table: &table,
                all_logits: false,
                embeds: &[],
            }])
            .unwrap();
        next = argmax(out[0].last());
        greedy.push(next);
    }
    (logits, greedy)
}
