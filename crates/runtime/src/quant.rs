//! GGUF tensor dequantization: ggml's block formats unpacked to f32 with exactly the arithmetic of
//! ggml's reference `dequantize_row_*` (ggml-quants.c), so a weight loaded here equals what
//! llama.cpp (and gguf-py) compute, bit for bit.
//!
//! Each format is a kernel from one block's bytes (`[u8; BLOCK_BYTES]`) to its values
//! (`[f32; BLOCK_SIZE]`), run over the whole tensor with `as_chunks`. Lengths are checked once up
//! front; inside a kernel every index is a constant or a loop counter bounded by constants into a
//! fixed-size array, so nothing can panic and the compiler drops the bounds checks.
//!
//! The arithmetic follows ggml's order, though little depends on it: every product here is exact
//! in f32 (an f16 scale has 11 significant bits, a sub-scale at most 8, a quant at most 6), so only
//! the final `+ m` or `- min` rounds, and contracting it into an FMA would not change a bit.

use half::f16;
use kiln_gguf::GgmlType;

/// Why a tensor could not be dequantized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    #[error("dequantizing {0} tensors is not supported")]
    UnsupportedType(GgmlType),

    #[error("{n_elements} elements is not a whole number of {ggml_type} blocks of {block_size}")]
    NotBlockMultiple {
        ggml_type: GgmlType,
        n_elements: usize,
        block_size: usize,
    },

    #[error("{n_elements} {ggml_type} elements take {expected} bytes, got {actual}")]
    DataLength {
        ggml_type: GgmlType,
        n_elements: usize,
        /// Saturates at `usize::MAX` on overflow (no slice is that long, so it never matches).
        expected: usize,
        actual: usize,
    },

    #[error("output has room for {actual} values, the tensor has {expected}")]
    OutputLength { expected: usize, actual: usize },
}

/// Dequantizes `n_elements` values of type `ggml_type` from `data` (exactly their blocks, as
/// [`kiln_gguf::GgufFile::tensor_data`] returns them) into `out` (exactly `n_elements` long).
///
/// Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
pub fn dequantize(
    ggml_type: GgmlType,
    data: &[u8],
    n_elements: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    check(ggml_type, data.len(), n_elements)?;
    if out.len() != n_elements {
        return Err(QuantError::OutputLength {
            expected: n_elements,
            actual: out.len(),
        });
    }
    use GgmlType as T;
    match ggml_type {
        T::F32 => run(data, out, f32_le),
        T::F16 => run(data, out, f16_le),
        T::BF16 => run(data, out, bf16_le),
        T::Q4_0 => run(data, out, q4_0),
        T::Q4_1 => run(data, out, q4_1),
        T::Q5_0 => run(data, out, q5_0),
        T::Q5_1 => run(data, out, q5_1),
        T::Q8_0 => run(data, out, q8_0),
        T::Q2_K => run(data, out, q2_k),
        T::Q3_K => run(data, out, q3_k),
        T::Q4_K => run(data, out, q4_k),
        T::Q5_K => run(data, out, q5_k),
        T::Q6_K => run(data, out, q6_k),
        other => return Err(QuantError::UnsupportedType(other)),
    }
    Ok(())
}

/// [`dequantize`] into a new vector.
pub fn dequantize_to_vec(
    ggml_type: GgmlType,
    data: &[u8],
    n_elements: usize,
) -> Result<Vec<f32>, QuantError> {
    // Checked before allocating, so the allocation is bounded by the data actually given.
    check(ggml_type, data.len(), n_elements)?;
    let mut out = vec![0.0; n_elements];
    dequantize(ggml_type, data, n_elements, &mut out)?;
    Ok(out)
}

/// Checks `n_elements` is whole blocks of `ggml_type` and `data_len` is exactly their bytes.
fn check(ggml_type: GgmlType, data_len: usize, n_elements: usize) -> Result<(), QuantError> {
    let layout = ggml_type
        .block_size()
        .zip(ggml_type.block_bytes())
        .and_then(|(size, bytes)| {
            Some((usize::try_from(size).ok()?, usize::try_from(bytes).ok()?))
        });
    let Some((block_size, block_bytes)) = layout else {
        return Err(QuantError::UnsupportedType(ggml_type));
    };
    if !n_elements.is_multiple_of(block_size) {
        return Err(QuantError::NotBlockMultiple {
            ggml_type,
            n_elements,
            block_size,
        });
    }
    let expected = (n_elements / block_size).saturating_mul(block_bytes);
    if data_len != expected {
        return Err(QuantError::DataLength {
            ggml_type,
            n_elements,
            expected,
            actual: data_len,
        });
    }
    Ok(())
}

/// Runs `kernel` over every block. The caller has checked the lengths against kiln-gguf's layout
/// table, which a unit test ties to each kernel's `IN`/`OUT`, so both remainders are empty.
#[inline]
fn run<const IN: usize, const OUT: usize>(
    data: &[u8],
    out: &mut [f32],
    kernel: impl Fn(&[u8; IN], &mut [f32; OUT]),
) {
    let (blocks, _) = data.as_chunks::<IN>();
    let (values, _) = out.as_chunks_mut::<OUT>();
    for (block, y) in blocks.iter().zip(values) {
        kernel(block, y);
    }
}

/// ggml's `GGML_FP16_TO_FP32`: exact (a NaN comes out quiet, as from F16C or ggml's fallback).
#[inline]
fn half(lo: u8, hi: u8) -> f32 {
    f16::from_le_bytes([lo, hi]).to_f32()
}

/// ggml's `get_scale_min_k4`: the `j`th (scale, min) pair of the K-quants' 12 bytes of 6-bit
/// values. Pairs 0..4 are the low 6 bits of bytes 0..4 (scales) and 4..8 (mins); pairs 4..8 take
/// their low 4 bits from bytes 8..12 and their top 2 bits from the spare top bits of 0..8.
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Bytes `START..START + N` of a block as an array.
#[inline]
fn field<const START: usize, const N: usize, const IN: usize>(block: &[u8; IN]) -> [u8; N] {
    std::array::from_fn(|i| block[START + i])
}

fn f32_le(b: &[u8; 4], y: &mut [f32; 1]) {
    y[0] = f32::from_le_bytes(*b);
}

fn f16_le(b: &[u8; 2], y: &mut [f32; 1]) {
    y[0] = half(b[0], b[1]);
}

/// A plain shift, as ggml's `GGML_BF16_TO_FP32` (half's conversion would quiet NaNs).
fn bf16_le(b: &[u8; 2], y: &mut [f32; 1]) {
    y[0] = f32::from_bits(u32::from(u16::from_le_bytes(*b)) << 16);
}

/// `d: f16, qs: [u8; 16]`: low nibbles are elements 0..16, high nibbles 16..32, each `(q - 8) * d`.
fn q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = half(b[0], b[1]);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = f32::from(i16::from(q & 0x0F) - 8) * d;
        y[j + 16] = f32::from(i16::from(q >> 4) - 8) * d;
    }
}

/// `d: f16, m: f16, qs: [u8; 16]`: as Q4_0 but unsigned, `q * d + m`.
fn q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let d = half(b[0], b[1]);
    let m = half(b[2], b[3]);
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = f32::from(q & 0x0F) * d + m;
        y[j + 16] = f32::from(q >> 4) * d + m;
    }
}

/// The fifth bits of a Q5 block: bit `j` of `qh` belongs to element `j`, returned as 0 or 16.
#[inline]
fn q5_high(qh: u32, j: usize) -> u8 {
    if qh >> j & 1 == 1 { 16 } else { 0 }
}

/// `d: f16, qh: u32, qs: [u8; 16]`: Q4_0's nibbles plus a fifth bit from `qh`, `(q - 16) * d`.
fn q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = half(b[0], b[1]);
    let qh = u32::from_le_bytes(field::<2, 4, 22>(b));
    for j in 0..16 {
        let q = b[6 + j];
        let x0 = (q & 0x0F) | q5_high(qh, j);
        let x1 = (q >> 4) | q5_high(qh, j + 16);
        y[j] = f32::from(i16::from(x0) - 16) * d;
        y[j + 16] = f32::from(i16::from(x1) - 16) * d;
    }
}

/// `d: f16, m: f16, qh: u32, qs: [u8; 16]`: as Q5_0 but unsigned, `q * d + m`.
fn q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let d = half(b[0], b[1]);
    let m = half(b[2], b[3]);
    let qh = u32::from_le_bytes(field::<4, 4, 24>(b));
    for j in 0..16 {
        let q = b[8 + j];
        let x0 = (q & 0x0F) | q5_high(qh, j);
        let x1 = (q >> 4) | q5_high(qh, j + 16);
        y[j] = f32::from(x0) * d + m;
        y[j + 16] = f32::from(x1) * d + m;
    }
}

/// `d: f16, qs: [i8; 32]`: `q * d`.
fn q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = half(b[0], b[1]);
    for j in 0..32 {
        y[j] = f32::from(b[2 + j].cast_signed()) * d;
    }
}

/// `scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16`. Each 128 values use 32 bytes of `qs`, four
/// 2-bit planes of them; each 16 values have a 4-bit scale (low) and min (high) byte:
/// `d * scale * q - dmin * min`.
fn q2_k(b: &[u8; 84], y: &mut [f32; 256]) {
    let d = half(b[80], b[81]);
    let min = half(b[82], b[83]);
    for n in 0..2 {
        let q = 16 + 32 * n;
        for j in 0..4 {
            let shift = 2 * j;
            for half_plane in 0..2 {
                let sc = b[8 * n + 2 * j + half_plane];
                let dl = d * f32::from(sc & 0x0F);
                let ml = min * f32::from(sc >> 4);
                let base = 128 * n + 32 * j + 16 * half_plane;
                for l in 0..16 {
                    let x = (b[q + 16 * half_plane + l] >> shift) & 3;
                    y[base + l] = dl * f32::from(x) - ml;
                }
            }
        }
    }
}

/// Q3_K's sixteen 6-bit scales, less 32: the low 4 bits of scale `s` are nibble `s / 8` of byte
/// `s % 8`, its top 2 bits are bits `2 * (s / 4)..` of byte `8 + s % 4`.
#[inline]
pub(crate) fn q3_k_scales(packed: &[u8; 12]) -> [i16; 16] {
    std::array::from_fn(|s| {
        let low = (packed[s % 8] >> (4 * (s / 8))) & 0x0F;
        let high = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
        i16::from(low | (high << 4)) - 32
    })
}

/// `hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16`: 2-bit planes as Q2_K, less 4 where
/// the element's `hmask` bit is clear, times `d * (scale - 32)`.
fn q3_k(b: &[u8; 110], y: &mut [f32; 256]) {
    let d_all = half(b[108], b[109]);
    let scales = q3_k_scales(&field::<96, 12, 110>(b));
    for n in 0..2 {
        let q = 32 + 32 * n;
        for j in 0..4 {
            let shift = 2 * j;
            let mask = 1u8 << (4 * n + j);
            for half_plane in 0..2 {
                let dl = d_all * f32::from(scales[8 * n + 2 * j + half_plane]);
                let base = 128 * n + 32 * j + 16 * half_plane;
                for l in 0..16 {
                    let i = 16 * half_plane + l;
                    let low = i16::from((b[q + i] >> shift) & 3);
                    let x = if b[i] & mask != 0 { low } else { low - 4 };
                    y[base + l] = dl * f32::from(x);
                }
            }
        }
    }
}

/// `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`: each 64 values are 32 bytes, low nibbles
/// first, each 32 with its own 6-bit scale and min: `d * scale * q - dmin * min`.
fn q4_k(b: &[u8; 144], y: &mut [f32; 256]) {
    let d = half(b[0], b[1]);
    let min = half(b[2], b[3]);
    let scales = field::<4, 12, 144>(b);
    for k in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * k, &scales);
        let (sc2, m2) = scale_min_k4(2 * k + 1, &scales);
        let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
        for l in 0..32 {
            let q = b[16 + 32 * k + l];
            y[64 * k + l] = d1 * f32::from(q & 0x0F) - m1;
            y[64 * k + 32 + l] = d2 * f32::from(q >> 4) - m2;
        }
    }
}

/// `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`: Q4_K plus a fifth bit,
/// bit `2k` (low nibbles) or `2k + 1` (high) of `qh[l]` for the `k`th 64 values.
fn q5_k(b: &[u8; 176], y: &mut [f32; 256]) {
    let d = half(b[0], b[1]);
    let min = half(b[2], b[3]);
    let scales = field::<4, 12, 176>(b);
    for k in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * k, &scales);
        let (sc2, m2) = scale_min_k4(2 * k + 1, &scales);
        let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
        let (u1, u2) = (1u8 << (2 * k), 2u8 << (2 * k));
        for l in 0..32 {
            let q = b[48 + 32 * k + l];
            let h = b[16 + l];
            let x0 = (q & 0x0F) + if h & u1 != 0 { 16 } else { 0 };
            let x1 = (q >> 4) + if h & u2 != 0 { 16 } else { 0 };
            y[64 * k + l] = d1 * f32::from(x0) - m1;
            y[64 * k + 32 + l] = d2 * f32::from(x1) - m2;
        }
    }
}

/// `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`. Each 128 values use 64 bytes of `ql`
/// (nibbles) and 32 of `qh` (four 2-bit planes); each 16 values have an 8-bit scale:
/// `d * scale * (q - 32)`.
fn q6_k(b: &[u8; 210], y: &mut [f32; 256]) {
    let d = half(b[208], b[209]);
    for n in 0..2 {
        let (ql, qh, sc) = (64 * n, 128 + 32 * n, 192 + 8 * n);
        for l in 0..32 {
            let is = l / 16;
            let (lo, hi, h) = (b[ql + l], b[ql + 32 + l], b[qh + l]);
            let q1 = i16::from((lo & 0x0F) | ((h & 3) << 4)) - 32;
            let q2 = i16::from((hi & 0x0F) | (((h >> 2) & 3) << 4)) - 32;
            let q3 = i16::from((lo >> 4) | (((h >> 4) & 3) << 4)) - 32;
            let q4 = i16::from((hi >> 4) | (((h >> 6) & 3) << 4)) - 32;
            let scale = |k: usize| d * f32::from(b[sc + is + k].cast_signed());
            let base = 128 * n + l;
            y[base] = scale(0) * f32::from(q1);
            y[base + 32] = scale(2) * f32::from(q2);
            y[base + 64] = scale(4) * f32::from(q3);
            y[base + 96] = scale(6) * f32::from(q4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kernel's block shape, which `run` relies on matching kiln-gguf's layout table.
    fn kernel_shape(ty: GgmlType) -> Option<(usize, usize)> {
        fn shape<const IN: usize, const OUT: usize>(
            _: fn(&[u8; IN], &mut [f32; OUT]),
        ) -> Option<(usize, usize)> {
            Some((OUT, IN))
        }
        use GgmlType as T;
        match ty {
            T::F32 => shape(f32_le),
            T::F16 => shape(f16_le),
            T::BF16 => shape(bf16_le),
            T::Q4_0 => shape(q4_0),
            T::Q4_1 => shape(q4_1),
            T::Q5_0 => shape(q5_0),
            T::Q5_1 => shape(q5_1),
            T::Q8_0 => shape(q8_0),
            T::Q2_K => shape(q2_k),
            T::Q3_K => shape(q3_k),
            T::Q4_K => shape(q4_k),
            T::Q5_K => shape(q5_k),
            T::Q6_K => shape(q6_k),
            _ => None,
        }
    }

    #[test]
    fn kernel_shapes_match_the_gguf_layout_table_and_dispatch() {
        let mut supported = Vec::new();
        for ty in GgmlType::known() {
            let block_size = ty.block_size().unwrap() as usize;
            let block_bytes = ty.block_bytes().unwrap() as usize;
            let result = dequantize(
                ty,
                &vec![0; block_bytes],
                block_size,
                &mut [0.0; 256][..block_size],
            );
            match kernel_shape(ty) {
                Some(shape) => {
                    assert_eq!(shape, (block_size, block_bytes), "{ty}");
                    assert_eq!(result, Ok(()), "{ty}");
                    supported.push(ty.name());
                }
                None => assert_eq!(result, Err(QuantError::UnsupportedType(ty))),
            }
        }
        assert_eq!(
            supported,
            [
                "F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
                "Q5_K", "Q6_K", "BF16"
            ]
        );
    }

    #[test]
    fn q4_0_low_nibbles_are_the_first_half() {
        let mut block = [0u8; 18];
        block[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        for j in 0..16 {
            block[2 + j] = (j as u8) | ((15 - j as u8) << 4);
        }
        let y = dequantize_to_vec(GgmlType::Q4_0, &block, 32).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 0.5, "element {j}");
            assert_eq!(y[j + 16], (7.0 - j as f32) * 0.5, "element {}", j + 16);
        }
    }

    #[test]
    fn q5_0_fifth_bit_of_element_j_is_bit_j() {
        let mut block = [0u8; 22];
        block[..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        // Only elements 3 and 20 get their fifth bit; every nibble is zero.
        block[2..6].copy_from_slice(&((1u32 << 3) | (1u32 << 20)).to_le_bytes());
        let y = dequantize_to_vec(GgmlType::Q5_0, &block, 32).unwrap();
        for (j, &v) in y.iter().enumerate() {
            assert_eq!(
                v,
                if j == 3 || j == 20 { 0.0 } else { -16.0 },
                "element {j}"
            );
        }
    }

    #[test]
    fn scale_min_k4_unpacks_the_6_bit_pairs() {
        // Scales 10, 17, .. 59 and mins 40, 43, .. 61 (using the top bits), packed as ggml's
        // quantizer packs them.
        let (sc, mn): ([u8; 8], [u8; 8]) = (
            std::array::from_fn(|j| 10 + j as u8 * 7),
            std::array::from_fn(|j| 40 + j as u8 * 3),
        );
        let mut packed = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                packed[j] = sc[j];
                packed[j + 4] = mn[j];
            } else {
                packed[j + 4] = (sc[j] & 0x0F) | ((mn[j] & 0x0F) << 4);
                packed[j - 4] |= (sc[j] >> 4) << 6;
                packed[j] |= (mn[j] >> 4) << 6;
            }
        }
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &packed), (sc[j], mn[j]), "pair {j}");
        }
    }

    #[test]
    fn f16_nan_stays_nan_and_bf16_is_a_shift() {
        let y = dequantize_to_vec(GgmlType::F16, &[0x01, 0x7C], 1).unwrap();
        assert!(y[0].is_nan());
        let y = dequantize_to_vec(GgmlType::BF16, &[0x81, 0x7F, 0x49, 0x40], 2).unwrap();
        assert_eq!(y[0].to_bits(), 0x7F81_0000);
        assert_eq!(y[1], 3.140625);
    }
}
