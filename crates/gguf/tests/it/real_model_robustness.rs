//! The real model's header, truncated and bit-flipped: every result is an error or a valid file,
//! never a panic or an allocation the input cannot back (see `common::parse_checked`).

use kiln_gguf::{GgufError, GgufFile, GgufWriter, TensorInfo};

use crate::common::{self, Rng, parse_checked};

fn expect_truncated(bytes: &[u8], len: usize) {
    let prefix = bytes.get(..len).expect("a prefix of the file").to_vec();
    let err = parse_checked(prefix, &|| format!("the first {len} bytes"))
        .expect_err("a truncated header must not parse");
    match err {
        GgufError::Truncated { offset, .. } => assert!(offset <= len as u64, "{len}: {err}"),
        err => panic!("the first {len} bytes: expected truncation, got {err}"),
    }
}

/// The first tensor (in index order) whose data does not fit in `len` bytes.
fn first_cut_tensor(file: &GgufFile, len: usize) -> &str {
    let cut = |t: &&TensorInfo| t.offset + t.n_bytes.expect("all types known") > len as u64;
    &file
        .tensors()
        .iter()
        .find(cut)
        .expect("some tensor is cut")
        .name
}

#[test]
fn every_truncation_of_the_header_is_an_error() {
    let file = common::open_model();
    let r = common::regions(&file);
    let bytes = file.as_bytes();

    let mut lens: Vec<usize> = (0..4096).collect();
    lens.extend((4096..300_000).step_by(509));
    lens.extend((300_000..r.infos_start).step_by(7919));
    lens.extend((r.infos_start..r.infos_end).step_by(211));
    lens.extend(r.infos_end - 40..r.infos_end);
    for len in lens {
        expect_truncated(bytes, len);
    }

    // With the whole header but no data, the first tensor is what is missing.
    for len in r.infos_end..=r.data_offset {
        let prefix = bytes[..len].to_vec();
        let err = parse_checked(prefix, &|| format!("the first {len} bytes")).unwrap_err();
        assert!(
            matches!(&err, GgufError::TensorOutOfBounds { name, .. } if name == "token_embd.weight"),
            "{len}: {err}"
        );
    }
}

#[test]
fn truncation_inside_the_data_section_is_an_error() {
    let file = common::open_model();
    let bytes = file.as_bytes();
    let embd_end = 1_785_664 + 30_081_024;
    for len in [
        file.data_offset() as usize + 1,
        embd_end - 1,
        embd_end + 1,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        let err = parse_checked(bytes[..len].to_vec(), &|| format!("the first {len} bytes"))
            .expect_err("truncated data must not parse");
        let expected = first_cut_tensor(&file, len);
        assert!(
            matches!(&err, GgufError::TensorOutOfBounds { name, file_len, .. }
                if name == expected && *file_len == len as u64),
            "{len}: {err}"
        );
    }
    let whole = parse_checked(bytes.to_vec(), &|| "the whole file".into()).unwrap();
    assert_eq!(whole.tensors(), file.tensors());
}

/// The real tensor infos behind a metadata section without the big vocab arrays: a small file
/// whose every prefix can be parsed quickly. Unflipped it fails only because there is no data.
/// Also returns where the infos start and end.
fn small_header_with_real_tensor_infos(file: &GgufFile) -> (Vec<u8>, std::ops::Range<usize>) {
    let r = common::regions(file);
    let small = |alignment: u8| {
        let mut w = GgufWriter::new();
        for (key, value) in file.metadata().iter() {
            if value.as_array().is_none_or(|a| a.len() < 100) {
                w.add(key, value.clone());
            }
        }
        w.add("general.alignment", alignment);
        w.to_bytes().expect("the real metadata is writable")
    };
    // Alignment 1 means no padding, which tells where the (same-sized) metadata ends.
    let metadata_end = small(1).len();
    let mut out = small(32);
    out.truncate(metadata_end);
    out[8..16].copy_from_slice(&(file.tensors().len() as u64).to_le_bytes());
    out.extend_from_slice(&file.as_bytes()[r.infos_start..r.infos_end]);
    let infos = metadata_end..out.len();
    out.resize(out.len().next_multiple_of(32), 0);
    (out, infos)
}

#[test]
fn every_truncation_of_the_tensor_infos_is_an_error() {
    let file = common::open_model();
    let (small, infos) = small_header_with_real_tensor_infos(&file);
    let err = parse_checked(small.clone(), &|| "the small header".into()).unwrap_err();
    assert!(
        matches!(&err, GgufError::TensorOutOfBounds { name, .. } if name == "token_embd.weight"),
        "{err}"
    );
    for len in infos.start - 64..infos.end {
        expect_truncated(&small, len);
    }
}

fn flip_bits(
    base: &[u8],
    iterations: usize,
    seed: u64,
    mut position: impl FnMut(&mut Rng) -> usize,
) -> (usize, usize) {
    let mut rng = Rng::new(seed);
    let (mut ok, mut err) = (0, 0);
    for i in 0..iterations {
        let mut bytes = base.to_vec();
        let mut flips = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let (pos, bit) = (position(&mut rng), rng.below(8));
            bytes[pos] ^= 1 << bit;
            flips.push((pos, bit));
        }
        let context = || format!("iteration {i} (seed {seed}), flipped (byte, bit) {flips:?}");
        match parse_checked(bytes, &context) {
            Ok(file) => {
                ok += 1;
                for t in file.tensors() {
                    if t.n_bytes.is_some() {
                        file.tensor_data(t)
                            .unwrap_or_else(|e| panic!("{}: {e}", context()));
                    }
                }
            }
            Err(_) => err += 1,
        }
    }
    (ok, err)
}

#[test]
fn bit_flips_in_the_metadata_never_panic() {
    let file = common::open_model();
    let r = common::regions(&file);
    // Zero tensors, so the unflipped metadata is a valid file and flips reach the success path.
    let mut base = file.as_bytes()[..r.infos_start].to_vec();
    base[8..16].copy_from_slice(&0u64.to_le_bytes());
    let parsed = parse_checked(base.clone(), &|| "the metadata alone".into()).unwrap();
    assert_eq!(parsed.metadata(), file.metadata());

    let len = base.len();
    let (ok, err) = flip_bits(&base, 600, 1, |rng| match rng.below(10) {
        // The small entries and the array headers come first; the template and ids come last.
        0..=5 => rng.below(8192),
        6..=7 => len - 1 - rng.below(65_536),
        _ => rng.below(len),
    });
    assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
}

#[test]
fn bit_flips_in_the_tensor_infos_never_panic() {
    let file = common::open_model();
    let (small, infos) = small_header_with_real_tensor_infos(&file);
    let len = small.len();
    let (_, err) = flip_bits(&small, 3000, 2, |rng| match rng.below(4) {
        0..=2 => infos.start + rng.below(infos.len()),
        _ => rng.below(len),
    });
    assert!(err > 0);
}
