//! The portable path: a scalar block decoder that LLVM vectorizes as far as it can, and the dot
//! products written over pulp's portable SIMD vectors (whatever width the CPU has).

use pulp::Simd;

use super::BLOCK;
use super::packed::BlockDecoder;

/// Decodes blocks with plain f32 arithmetic: the reference's operations, in its order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Portable;

impl BlockDecoder for Portable {
    #[inline(always)]
    fn q8_0(self, d: f32, q: &[i8; BLOCK], y: &mut [f32; BLOCK]) {
        for (y, &q) in y.iter_mut().zip(q) {
            *y = f32::from(q) * d;
        }
    }

    #[inline(always)]
    fn q4_0(self, d: f32, q: &[u8; 16], y: &mut [f32; BLOCK]) {
        // `q - 8` is exact in f32: this is the reference's `(q - 8) as f32 * d`.
        let (lo, hi) = y.split_at_mut(16);
        for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
            *lo = (f32::from(q & 0x0F) - 8.0) * d;
            *hi = (f32::from(q >> 4) - 8.0) * d;
        }
    }

    #[inline(always)]
    fn q4_1(self, d: f32, m: f32, q: &[u8; 16], y: &mut [f32; BLOCK]) {
        let (lo, hi) = y.split_at_mut(16);
        for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
            *lo = f32::from(q & 0x0F) * d + m;
            *hi = f32::from(q >> 4) * d + m;
        }
    }
}

/// `Σ_i w_i x_i` for each of `N` rows `x`, each with four vector accumulators (enough
/// independent FMAs to hide their latency) summed in a fixed order: a row's result has the same
/// bits whatever `N` and whatever rows come with it.
#[inline(always)]
pub(super) fn dots<S: Simd, const N: usize>(simd: S, w: &[f32], xs: [&[f32]; N]) -> [f32; N] {
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
