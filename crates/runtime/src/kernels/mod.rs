//! Kiln's own CPU kernels for the steps decode spends its time in: `y = x Wᵀ` for a few rows of
//! `x`, reading each weight once — straight from GGUF's Q8_0/Q4_0/Q4_1 blocks or from f32 rows —
//! on every core (rayon) with the widest SIMD the CPU has.
//!
//! A decode step multiplies one row per sequence by every weight matrix, so it is bound by
//! reading the weights, and burn's general matmul runs such a product on one thread. Keeping the
//! weights in their 4.5–8.5-bit blocks reads 4–7x fewer bytes than f32. Activations stay f32 and
//! the weights take exactly the values of ggml's reference dequantizer ([`crate::quant`]); only
//! the order of the additions differs from a dequantize-then-matmul, so logits agree with the
//! f32 path to rounding. Each output element is computed by the same sequence of operations
//! whatever the number of rows, the row's place in the batch or the thread that runs it, so a
//! sequence's logits do not depend on what else is in the batch.
//!
//! Rooms: [`packed`] holds the block formats and the one walk over them; [`portable`] the
//! generic decoder and dot products; `x86` the AVX2 decoder. This file is the one dispatch
//! point: [`Isa::detect`] picks the decoder at run time (never assumed at compile time), and
//! pulp's `Arch::dispatch` compiles the callers for the vector width the CPU has.

mod packed;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

pub(crate) use packed::PackedMatrix;
use packed::{Blocks, dequantize_blocks};
use portable::{Portable, dots};

/// The most rows of `x` the kernels take; a larger batch is compute-bound and goes to burn's
/// matmul, which tiles for the cache.
pub(crate) const GEMV_MAX_ROWS: usize = 64;

/// Values per quantization block in the formats kept packed.
const BLOCK: usize = 32;

/// The instruction sets this CPU has beyond what pulp's portable operations cover: widening
/// bytes to f32 lanes, which LLVM leaves scalar in the dequantization loops.
#[derive(Debug, Clone, Copy)]
struct Isa {
    #[cfg(target_arch = "x86_64")]
    v3: Option<pulp::x86::V3>,
}

impl Isa {
    fn detect() -> Self {
        Self {
            #[cfg(target_arch = "x86_64")]
            v3: pulp::x86::V3::try_new(),
        }
    }

    /// Blocks `first_block..` into `out` with the best decoder this CPU has.
    #[inline(always)]
    fn dequantize_blocks(self, blocks: &Blocks, first_block: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = self.v3 {
            return dequantize_blocks(v3, blocks, first_block, out);
        }
        dequantize_blocks(Portable, blocks, first_block, out);
    }
}

/// Dequantizes consecutive blocks into `out` (whole blocks) inside pulp's dispatch, so the
/// fixed-size loops vectorize for the CPU at hand.
fn dequantize_into(blocks: &Blocks, first_block: usize, out: &mut [f32]) {
    struct Dequantize<'a> {
        isa: Isa,
        blocks: &'a Blocks,
        first_block: usize,
        out: &'a mut [f32],
    }
    impl WithSimd for Dequantize<'_> {
        type Output = ();

        #[inline(always)]
        fn with_simd<S: Simd>(self, _simd: S) -> Self::Output {
            self.isa
                .dequantize_blocks(self.blocks, self.first_block, self.out);
        }
    }
    Arch::new().dispatch(Dequantize {
        isa: Isa::detect(),
        blocks,
        first_block,
        out,
    });
}

/// The weights a kernel call reads: f32 rows, or packed blocks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Weight<'a> {
    /// `[rows, cols]` row-major.
    F32 {
        data: &'a [f32],
        rows: usize,
        cols: usize,
    },
    Packed(&'a PackedMatrix),
}

impl Weight<'_> {
    fn dims(&self) -> (usize, usize) {
        match self {
            Self::F32 { rows, cols, .. } => (*rows, *cols),
            Self::Packed(p) => (p.rows, p.cols),
        }
    }
}

/// `y = x Wᵀ` for `m` rows of `x` (`[m, cols]` row-major, `1 <= m <= GEMV_MAX_ROWS`): returns
/// `[m, rows]` row-major. The caller checks the shapes; a mismatch gives zeros, not a panic.
pub(crate) fn matmul_t(w: Weight<'_>, x: &[f32], m: usize) -> Vec<f32> {
    let (n, k) = w.dims();
    if m == 0 || m > GEMV_MAX_ROWS || x.len() != m * k || k == 0 {
        return vec![0.0; m * n];
    }
    // Rows are out-features; results are gathered `[rows, m]` and transposed at the end.
    let mut out_t = vec![0.0f32; n * m];
    let threads = rayon::current_num_threads().max(1);
    let rows_per_task = n.div_ceil(threads * 8).max(4);
    let arch = Arch::new();
    let isa = Isa::detect();
    out_t
        .par_chunks_mut(rows_per_task * m)
        .enumerate()
        .for_each(|(t, out)| {
            arch.dispatch(RowDots {
                isa,
                w,
                x,
                m,
                k,
                first: t * rows_per_task,
                out,
            });
        });
    if m == 1 {
        return out_t;
    }
    let mut out = vec![0.0f32; m * n];
    for (r, vals) in out_t.chunks_exact(m).enumerate() {
        for (i, &v) in vals.iter().enumerate() {
            if let Some(o) = out.get_mut(i * n + r) {
                *o = v;
            }
        }
    }
    out
}

/// One task's rows: `out` is `[rows, m]` for rows `first..`.
struct RowDots<'a> {
    isa: Isa,
    w: Weight<'a>,
    x: &'a [f32],
    m: usize,
    k: usize,
    first: usize,
    out: &'a mut [f32],
}

impl WithSimd for RowDots<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Self::Output {
        let Self {
            isa,
            w,
            x,
            m,
            k,
            first,
            out,
        } = self;
        // A packed row is dequantized once into this buffer (it stays in L1), then dotted with
        // every row of x: the same values and the same sums as a dense f32 row.
        let mut buffer = match w {
            Weight::Packed(_) => vec![0.0f32; k],
            Weight::F32 { .. } => Vec::new(),
        };
        for (i, out_row) in out.chunks_exact_mut(m).enumerate() {
            let r = first + i;
            let row: &[f32] = match w {
                Weight::F32 { data, .. } => data.get(r * k..(r + 1) * k).unwrap_or_default(),
                Weight::Packed(p) => {
                    p.dequantize_row_with(isa, r, &mut buffer);
                    &buffer
                }
            };
            // Two rows of x at a time share the loads of the weight row.
            let mut xs = x.chunks_exact(k);
            let mut outs = out_row.chunks_mut(2);
            for o in outs.by_ref() {
                match o {
                    [a, b] => {
                        let (Some(x0), Some(x1)) = (xs.next(), xs.next()) else {
                            break;
                        };
                        [*a, *b] = dots(simd, row, [x0, x1]);
                    }
                    [a] => {
                        let Some(x0) = xs.next() else { break };
                        [*a] = dots(simd, row, [x0]);
                    }
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use half::f16;
    use kiln_gguf::GgmlType;

    use super::*;
    use crate::quant::QuantError;

    /// Deterministic pseudo-random bytes (xorshift), so the tests need no dependency.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    /// GGUF blocks of `ty` with sane f16 scales (random bytes would make NaNs and infinities).
    fn blocks(ty: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
        let (size, scales) = match ty {
            GgmlType::Q8_0 => (34, 1),
            GgmlType::Q4_0 => (18, 1),
            _ => (20, 2),
        };
        let mut data = bytes(n_blocks * size, seed);
        for (i, block) in data.chunks_exact_mut(size).enumerate() {
            for s in 0..scales {
                let v = 0.01 + ((i * 7 + s * 3) % 13) as f32 * 0.004;
                let v = if s == 1 { -v * 4.0 } else { v };
                block[2 * s..2 * s + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
            }
        }
        data
    }

    fn reference_product(w: &[f32], x: &[f32], n: usize, k: usize, m: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; m * n];
        for i in 0..m {
            for r in 0..n {
                let mut s = 0.0f64;
                for c in 0..k {
                    s += f64::from(w[r * k + c]) * f64::from(x[i * k + c]);
                }
                out[i * n + r] = s as f32;
            }
        }
        out
    }

    fn x_values(m: usize, k: usize) -> Vec<f32> {
        bytes(m * k, 99)
            .into_iter()
            .map(|b| (f32::from(b) - 127.5) / 64.0)
            .collect()
    }

    #[test]
    fn packed_values_equal_the_reference_dequantizer() {
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            let (rows, cols) = (5, 96);
            let data = blocks(ty, rows * cols / BLOCK, 7);
            let reference = crate::quant::dequantize_to_vec(ty, &data, rows * cols).unwrap();
            let packed = PackedMatrix::from_gguf(ty, &data, rows, cols).unwrap();
            assert_eq!(packed.ggml_type(), ty);
            assert_eq!(packed.dequantize(), reference, "{ty}");
            assert_eq!(
                packed.gather_rows(&[3, 0]),
                [&reference[3 * cols..4 * cols], &reference[..cols]].concat()
            );
        }
    }

    #[test]
    fn products_match_a_dequantized_reference_for_every_format_and_row_count() {
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            let (n, k) = (70, 160);
            let data = blocks(ty, n * k / BLOCK, 11);
            let dense = crate::quant::dequantize_to_vec(ty, &data, n * k).unwrap();
            let packed = PackedMatrix::from_gguf(ty, &data, n, k).unwrap();
            for m in 1..=GEMV_MAX_ROWS {
                let x = x_values(m, k);
                let want = reference_product(&dense, &x, n, k, m);
                for (name, got) in [
                    ("packed", matmul_t(Weight::Packed(&packed), &x, m)),
                    (
                        "f32",
                        matmul_t(
                            Weight::F32 {
                                data: &dense,
                                rows: n,
                                cols: k,
                            },
                            &x,
                            m,
                        ),
                    ),
                ] {
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{ty} {name} m={m}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_row_gives_the_same_bits_alone_and_among_others() {
        let (n, k) = (33, 64);
        let data = blocks(GgmlType::Q4_1, n * k / BLOCK, 3);
        let packed = PackedMatrix::from_gguf(GgmlType::Q4_1, &data, n, k).unwrap();
        let x = x_values(GEMV_MAX_ROWS, k);
        let batched = matmul_t(Weight::Packed(&packed), &x, GEMV_MAX_ROWS);
        for i in 0..GEMV_MAX_ROWS {
            let alone = matmul_t(Weight::Packed(&packed), &x[i * k..(i + 1) * k], 1);
            assert_eq!(alone, batched[i * n..(i + 1) * n]);
        }
    }

    #[test]
    fn odd_widths_and_rows_use_the_scalar_tail() {
        let (n, k) = (3, 13);
        let w: Vec<f32> = (0..n * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let x = x_values(2, k);
        let got = matmul_t(
            Weight::F32 {
                data: &w,
                rows: n,
                cols: k,
            },
            &x,
            2,
        );
        let want = reference_product(&w, &x, n, k, 2);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()));
        }
    }

    #[test]
    fn concat_and_permute_move_whole_rows() {
        let ty = GgmlType::Q4_1;
        let (rows, cols) = (4, 64);
        let a = blocks(ty, rows * cols / BLOCK, 5);
        let b = blocks(ty, 2 * cols / BLOCK, 6);
        let pa = PackedMatrix::from_gguf(ty, &a, rows, cols).unwrap();
        let pb = PackedMatrix::from_gguf(ty, &b, 2, cols).unwrap();
        let both = PackedMatrix::concat_rows(vec![pa.clone(), pb.clone()]).unwrap();
        assert_eq!(both.rows, 6);
        assert_eq!(
            both.dequantize(),
            [pa.dequantize(), pb.dequantize()].concat()
        );
        let swapped = pa.permute_rows(&[1, 0, 3, 2]);
        let d = pa.dequantize();
        assert_eq!(
            swapped.dequantize(),
            [
                &d[cols..2 * cols],
                &d[..cols],
                &d[3 * cols..],
                &d[2 * cols..3 * cols]
            ]
            .concat()
        );
        let q8 = PackedMatrix::from_gguf(GgmlType::Q8_0, &blocks(GgmlType::Q8_0, 2, 1), 1, cols)
            .unwrap();
        assert!(PackedMatrix::concat_rows(vec![pa, q8]).is_none());
    }

    #[test]
    fn bad_block_data_is_an_error() {
        assert!(matches!(
            PackedMatrix::from_gguf(GgmlType::Q4_1, &[0; 39], 1, 64),
            Err(QuantError::DataLength { .. })
        ));
        assert!(matches!(
            PackedMatrix::from_gguf(GgmlType::Q4_1, &[0; 20], 1, 48),
            Err(QuantError::NotBlockMultiple { .. })
        ));
        assert!(matches!(
            PackedMatrix::from_gguf(GgmlType::Q6_K, &[0; 210], 1, 256),
            Err(QuantError::UnsupportedType(_))
        ));
    }
}
