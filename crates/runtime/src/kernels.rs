//! Kiln's own CPU kernels for the steps decode spends its time in: `y = x Wᵀ` for a few rows of
//! `x`, reading each weight once — straight from GGUF's Q8_0/Q4_0/Q4_1 blocks or from f32 rows —
//! on every core (rayon) with the widest SIMD the CPU has (pulp's runtime dispatch).
//!
//! A decode step multiplies one row per sequence by every weight matrix, so it is bound by
//! reading the weights, and burn's general matmul runs such a product on one thread. Keeping the
//! weights in their 4.5–8.5-bit blocks reads 4–7x fewer bytes than f32. Activations stay f32 and
//! the weights take exactly the values of ggml's reference dequantizer ([`crate::quant`]); only
//! the order of the additions differs from a dequantize-then-matmul, so logits agree with the
//! f32 path to rounding. Each output element is computed by the same sequence of operations
//! whatever the number of rows, the row's place in the batch or the thread that runs it, so a
//! sequence's logits do not depend on what else is in the batch.

use half::f16;
use kiln_gguf::GgmlType;
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use crate::quant::QuantError;

/// The most rows of `x` the kernels take; a larger batch is compute-bound and goes to burn's
/// matmul, which tiles for the cache.
pub(crate) const GEMV_MAX_ROWS: usize = 64;

/// Values per quantization block in the formats kept packed.
const BLOCK: usize = 32;

/// A weight matrix `[rows, cols]` (rows are output features) kept in a GGUF block format, with the
/// f16 scales widened to f32 once at load.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PackedMatrix {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    blocks: Blocks,
}

#[derive(Debug, Clone, PartialEq)]
enum Blocks {
    /// `d * q`, one signed byte per value.
    Q8_0 { d: Vec<f32>, qs: Vec<i8> },
    /// `d * (q - 8)`: byte `j` of a block holds value `j` (low nibble) and `j + 16` (high).
    Q4_0 { d: Vec<f32>, qs: Vec<u8> },
    /// `d * q + m`, nibbles as Q4_0.
    Q4_1 {
        d: Vec<f32>,
        m: Vec<f32>,
        qs: Vec<u8>,
    },
}

impl PackedMatrix {
    /// Whether [`from_gguf`](Self::from_gguf) keeps this type packed (others are dequantized).
    pub(crate) fn supports(ggml_type: GgmlType) -> bool {
        matches!(ggml_type, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1)
    }

    /// Repacks a GGUF tensor's blocks (`rows * cols` values, rows whole blocks).
    pub(crate) fn from_gguf(
        ggml_type: GgmlType,
        data: &[u8],
        rows: usize,
        cols: usize,
    ) -> Result<Self, QuantError> {
        let n_elements = rows.saturating_mul(cols);
        if !cols.is_multiple_of(BLOCK) {
            return Err(QuantError::NotBlockMultiple {
                ggml_type,
                n_elements: cols,
                block_size: BLOCK,
            });
        }
        let bytes = match ggml_type {
            GgmlType::Q8_0 => 34,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            other => return Err(QuantError::UnsupportedType(other)),
        };
        let n_blocks = n_elements / BLOCK;
        let expected = n_blocks.saturating_mul(bytes);
        if data.len() != expected {
            return Err(QuantError::DataLength {
                ggml_type,
                n_elements,
                expected,
                actual: data.len(),
            });
        }
        let scale = |b: &[u8], at: usize| {
            f16::from_le_bytes([
                b.get(at).copied().unwrap_or(0),
                b.get(at + 1).copied().unwrap_or(0),
            ])
            .to_f32()
        };
        let blocks = data.chunks_exact(bytes);
        let blocks = match ggml_type {
            GgmlType::Q8_0 => Blocks::Q8_0 {
                d: blocks.clone().map(|b| scale(b, 0)).collect(),
                qs: blocks
                    .flat_map(|b| b.iter().skip(2).map(|q| q.cast_signed()))
                    .collect(),
            },
            GgmlType::Q4_0 => Blocks::Q4_0 {
                d: blocks.clone().map(|b| scale(b, 0)).collect(),
                qs: blocks.flat_map(|b| b.iter().skip(2).copied()).collect(),
            },
            _ => Blocks::Q4_1 {
                d: blocks.clone().map(|b| scale(b, 0)).collect(),
                m: blocks.clone().map(|b| scale(b, 2)).collect(),
                qs: blocks.flat_map(|b| b.iter().skip(4).copied()).collect(),
            },
        };
        Ok(Self { rows, cols, blocks })
    }

    /// The format the blocks came in.
    pub(crate) fn ggml_type(&self) -> GgmlType {
        match self.blocks {
            Blocks::Q8_0 { .. } => GgmlType::Q8_0,
            Blocks::Q4_0 { .. } => GgmlType::Q4_0,
            Blocks::Q4_1 { .. } => GgmlType::Q4_1,
        }
    }

    /// Stacks matrices of one format and width, rows of the first first.
    pub(crate) fn concat_rows(parts: Vec<Self>) -> Option<Self> {
        let mut parts = parts.into_iter();
        let mut out = parts.next()?;
        for p in parts {
            if p.cols != out.cols {
                return None;
            }
            match (&mut out.blocks, p.blocks) {
                (Blocks::Q4_0 { d, qs }, Blocks::Q4_0 { d: d2, qs: q2 }) => {
                    d.extend(d2);
                    qs.extend(q2);
                }
                (Blocks::Q8_0 { d, qs }, Blocks::Q8_0 { d: d2, qs: q2 }) => {
                    d.extend(d2);
                    qs.extend(q2);
                }
                (
                    Blocks::Q4_1 { d, m, qs },
                    Blocks::Q4_1 {
                        d: d2,
                        m: m2,
                        qs: q2,
                    },
                ) => {
                    d.extend(d2);
                    m.extend(m2);
                    qs.extend(q2);
                }
                _ => return None,
            }
            out.rows += p.rows;
        }
        Some(out)
    }

    /// Applies a row permutation: row `i` of the result is row `order[i]` of `self`.
    pub(crate) fn permute_rows(&self, order: &[usize]) -> Self {
        let per_row = self.cols / BLOCK;
        fn gather<T: Copy>(v: &[T], order: &[usize], width: usize) -> Vec<T> {
            order
                .iter()
                .flat_map(|&r| v.get(r * width..(r + 1) * width).unwrap_or_default())
                .copied()
                .collect()
        }
        let blocks = match &self.blocks {
            Blocks::Q8_0 { d, qs } => Blocks::Q8_0 {
                d: gather(d, order, per_row),
                qs: gather(qs, order, self.cols),
            },
            Blocks::Q4_0 { d, qs } => Blocks::Q4_0 {
                d: gather(d, order, per_row),
                qs: gather(qs, order, self.cols / 2),
            },
            Blocks::Q4_1 { d, m, qs } => Blocks::Q4_1 {
                d: gather(d, order, per_row),
                m: gather(m, order, per_row),
                qs: gather(qs, order, self.cols / 2),
            },
        };
        Self {
            rows: order.len(),
            cols: self.cols,
            blocks,
        }
    }

    /// Rows `first..first + out.len() / cols` as f32, with the reference dequantizer's arithmetic
    /// (bit for bit: a product and a sum, never fused).
    fn dequantize_rows(&self, first: usize, out: &mut [f32]) {
        Arch::new().dispatch(Dequantize {
            isa: Isa::detect(),
            blocks: &self.blocks,
            first_block: first * self.cols / BLOCK,
            out,
        });
    }

    /// The whole matrix as f32 `[rows, cols]`, row-major (on every core).
    pub(crate) fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        let rows_per_task = 16;
        out.par_chunks_mut(rows_per_task * self.cols)
            .enumerate()
            .for_each(|(t, chunk)| self.dequantize_rows(t * rows_per_task, chunk));
        out
    }

    /// Rows `ids` as f32 `[ids.len(), cols]` (an embedding lookup).
    pub(crate) fn gather_rows(&self, ids: &[usize]) -> Vec<f32> {
        let mut out = vec![0.0; ids.len() * self.cols];
        for (&id, y) in ids.iter().zip(out.chunks_exact_mut(self.cols)) {
            if id < self.rows {
                self.dequantize_rows(id, y);
            }
        }
        out
    }
}

/// Dequantizes consecutive blocks into `out` (whole blocks), inside pulp's dispatch so the
/// fixed-size loops vectorize for the CPU at hand.
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

/// Blocks `first_block..` into `out` (whole blocks) with the reference dequantizer's arithmetic.
/// Inlined into a dispatched caller, its fixed-size loops vectorize.
#[inline(always)]
fn dequantize_blocks(blocks: &Blocks, first_block: usize, out: &mut [f32]) {
    let (ys, _) = out.as_chunks_mut::<BLOCK>();
    let range = first_block..first_block + ys.len();
    match blocks {
        Blocks::Q8_0 { d, qs } => {
            let d = d.get(range.clone()).unwrap_or_default();
            let qs = qs
                .get(range.start * BLOCK..range.end * BLOCK)
                .unwrap_or_default();
            let (qs, _) = qs.as_chunks::<BLOCK>();
            for ((y, q), &d) in ys.iter_mut().zip(qs).zip(d) {
                for (y, &q) in y.iter_mut().zip(q) {
                    *y = f32::from(q) * d;
                }
            }
        }
        Blocks::Q4_0 { d, qs } => {
            let d = d.get(range.clone()).unwrap_or_default();
            let qs = qs.get(range.start * 16..range.end * 16).unwrap_or_default();
            let (qs, _) = qs.as_chunks::<16>();
            for ((y, q), &d) in ys.iter_mut().zip(qs).zip(d) {
                // `q - 8` is exact in f32: this is the reference's `(q - 8) as f32 * d`.
                let (lo, hi) = y.split_at_mut(16);
                for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
                    *lo = (f32::from(q & 0x0F) - 8.0) * d;
                    *hi = (f32::from(q >> 4) - 8.0) * d;
                }
            }
        }
        Blocks::Q4_1 { d, m, qs } => {
            let d = d.get(range.clone()).unwrap_or_default();
            let m = m.get(range.clone()).unwrap_or_default();
            let qs = qs.get(range.start * 16..range.end * 16).unwrap_or_default();
            let (qs, _) = qs.as_chunks::<16>();
            for (((y, q), &d), &m) in ys.iter_mut().zip(qs).zip(d).zip(m) {
                let (lo, hi) = y.split_at_mut(16);
                for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
                    *lo = f32::from(q & 0x0F) * d + m;
                    *hi = f32::from(q >> 4) * d + m;
                }
            }
        }
    }
}

/// Instruction sets beyond what pulp's portable operations cover: widening bytes to f32 lanes,
/// which LLVM leaves scalar in the dequantization loops.
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

    /// [`dequantize_blocks`] with the CPU's widening conversions where it has them.
    #[inline(always)]
    fn dequantize_blocks(self, blocks: &Blocks, first_block: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = self.v3 {
            return x86::dequantize_blocks(v3, blocks, first_block, out);
        }
        dequantize_blocks(blocks, first_block, out);
    }
}

/// AVX2 dequantization: the same arithmetic as [`dequantize_blocks`] (a product and a sum per
/// value, never fused), eight values per instruction.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::{__m128i, __m256};

    use pulp::x86::V3;

    use super::{BLOCK, Blocks};

    /// A block's 16 bytes of nibbles as 4 vectors of 8 values: low nibbles (values 0..16) first.
    #[inline(always)]
    fn nibbles(simd: V3, q: &[u8; 16]) -> [__m256; 4] {
        let q: __m128i = bytemuck::cast(*q);
        let mask = simd.sse2._mm_set1_epi8(0x0F);
        let lo = simd.sse2._mm_and_si128(q, mask);
        let hi = simd
            .sse2
            ._mm_and_si128(simd.sse2._mm_srli_epi16::<4>(q), mask);
        let widen = |v: __m128i| {
            simd.avx
                ._mm256_cvtepi32_ps(simd.avx2._mm256_cvtepu8_epi32(v))
        };
        [
            widen(lo),
            widen(simd.sse2._mm_srli_si128::<8>(lo)),
            widen(hi),
            widen(simd.sse2._mm_srli_si128::<8>(hi)),
        ]
    }

    /// 32 signed bytes as 4 vectors of 8 values.
    #[inline(always)]
    fn bytes(simd: V3, q: &[i8; BLOCK]) -> [__m256; 4] {
        let [a, b]: [__m128i; 2] = bytemuck::cast(*q);
        let widen = |v: __m128i| {
            simd.avx
                ._mm256_cvtepi32_ps(simd.avx2._mm256_cvtepi8_epi32(v))
        };
        [
            widen(a),
            widen(simd.sse2._mm_srli_si128::<8>(a)),
            widen(b),
            widen(simd.sse2._mm_srli_si128::<8>(b)),
        ]
    }

    #[inline(always)]
    pub(super) fn dequantize_blocks(
        simd: V3,
        blocks: &Blocks,
        first_block: usize,
        out: &mut [f32],
    ) {
        let (ys, _) = out.as_chunks_mut::<BLOCK>();
        let range = first_block..first_block + ys.len();
        let avx = simd.avx;
        match blocks {
            Blocks::Q8_0 { d, qs } => {
                let d = d.get(range.clone()).unwrap_or_default();
                let qs = qs
                    .get(range.start * BLOCK..range.end * BLOCK)
                    .unwrap_or_default();
                let (qs, _) = qs.as_chunks::<BLOCK>();
                for ((y, q), &d) in ys.iter_mut().zip(qs).zip(d) {
                    let d = avx._mm256_set1_ps(d);
                    let mut v = bytes(simd, q);
                    for v in &mut v {
                        *v = avx._mm256_mul_ps(*v, d);
                    }
                    *y = bytemuck::cast(v);
                }
            }
            Blocks::Q4_0 { d, qs } => {
                let d = d.get(range.clone()).unwrap_or_default();
                let qs = qs.get(range.start * 16..range.end * 16).unwrap_or_default();
                let (qs, _) = qs.as_chunks::<16>();
                let eight = avx._mm256_set1_ps(-8.0);
                for ((y, q), &d) in ys.iter_mut().zip(qs).zip(d) {
                    let d = avx._mm256_set1_ps(d);
                    let mut v = nibbles(simd, q);
                    for v in &mut v {
                        *v = avx._mm256_mul_ps(avx._mm256_add_ps(*v, eight), d);
                    }
                    *y = bytemuck::cast(v);
                }
            }
            Blocks::Q4_1 { d, m, qs } => {
                let d = d.get(range.clone()).unwrap_or_default();
                let m = m.get(range.clone()).unwrap_or_default();
                let qs = qs.get(range.start * 16..range.end * 16).unwrap_or_default();
                let (qs, _) = qs.as_chunks::<16>();
                for (((y, q), &d), &m) in ys.iter_mut().zip(qs).zip(d).zip(m) {
                    let (d, m) = (avx._mm256_set1_ps(d), avx._mm256_set1_ps(m));
                    let mut v = nibbles(simd, q);
                    for v in &mut v {
                        *v = avx._mm256_add_ps(avx._mm256_mul_ps(*v, d), m);
                    }
                    *y = bytemuck::cast(v);
                }
            }
        }
    }
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
                    isa.dequantize_blocks(&p.blocks, r * (k / BLOCK), &mut buffer);
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

/// `Σ_i w_i x_i` for each of `N` rows `x`, each with four vector accumulators (enough
/// independent FMAs to hide their latency) summed in a fixed order: a row's result has the same
/// bits whatever `N` and whatever rows come with it.
#[inline(always)]
fn dots<S: Simd, const N: usize>(simd: S, w: &[f32], xs: [&[f32]; N]) -> [f32; N] {
    let (wv, wt) = S::as_simd_f32s(w);
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; 4]; N];
    let (w4, w_rest) = wv.as_chunks::<4>();
    let xv = xs.map(|x| S::as_simd_f32s(x).0);
    for (c, w) in w4.iter().enumerate() {
        for (acc, xv) in acc.iter_mut().zip(&xv) {
            if let Some(x) = xv.get(4 * c..4 * c + 4) {
                for j in 0..4 {
                    acc[j] = simd.mul_add_f32s(w[j], x[j], acc[j]);
                }
            }
        }
    }
    let rest = w4.len() * 4;
    for (j, &w) in w_rest.iter().enumerate() {
        for (acc, xv) in acc.iter_mut().zip(&xv) {
            if let Some(&x) = xv.get(rest + j) {
                acc[0] = simd.mul_add_f32s(w, x, acc[0]);
            }
        }
    }
    let mut out = [0.0f32; N];
    for ((o, acc), x) in out.iter_mut().zip(acc).zip(xs) {
        let sum = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
        *o = simd.reduce_sum_f32s(sum);
        let tail = x.get(x.len() - wt.len()..).unwrap_or_default();
        for (&a, &b) in wt.iter().zip(tail) {
            *o += a * b;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
