//! Every GGUF block format the kernels read in place, decoded into [`Lanes`] registers with the
//! arithmetic of the reference dequantizer ([`crate::quant`], ggml's `dequantize_row_*`): the
//! same integer unpacking, the same scale products in the same order, then one f32 product and
//! at most one sum per value. So a value decoded here has exactly the bits `quant` gives it, on
//! every instruction set, and a kernel's result is a plain dot product of the dequantized row.
//!
//! A format hands its block to the kernel 32 values at a time (a *group*: two 16-lane vectors,
//! values `0..16` and `16..32` of the group) in order; a K-quant's 256-value super-block is eight
//! groups.

// The formats keep ggml's names (Q4_K, not Q4K), as GgmlType does.
#![allow(non_camel_case_types)]

use super::lanes::Lanes;
use crate::quant::{q3_k_scales, scale_min_k4};

/// Values per group.
pub(super) const GROUP: usize = 32;

/// One block format.
pub(super) trait Format {
    /// One block's bytes.
    type Block: bytemuck::Pod;
    /// Values per block: a multiple of [`GROUP`].
    const VALUES: usize;
    /// Whether decoding costs more than loading: f32 rows are read in place, never buffered.
    const DECODES: bool = true;

    /// Calls `emit` once per group of the block, in order, with the group's values.
    fn decode<L: Lanes>(l: L, b: &Self::Block, emit: impl FnMut([L::F; 2]));
}

/// The f16 at byte `at` of a block.
#[inline(always)]
fn half<L: Lanes>(l: L, b: &[u8], at: usize) -> f32 {
    match b.get(at..at + 2) {
        Some(&[lo, hi]) => l.f16(u16::from_le_bytes([lo, hi])),
        _ => 0.0,
    }
}

/// Bytes `at..at + 16` of a block (the blocks are fixed arrays: the compiler sees the bounds).
#[inline(always)]
fn bytes16(b: &[u8], at: usize) -> [u8; 16] {
    let mut out = [0; 16];
    if let Some(src) = b.get(at..at + 16) {
        out.copy_from_slice(src);
    }
    out
}

#[inline(always)]
fn u32_at(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// `[f(0), f(1)]`. Not `array::map`: it is not always inlined, and a closure left out of line
/// runs without the path's instructions (each intrinsic becomes a call).
#[inline(always)]
fn two<T>(mut f: impl FnMut(usize) -> T) -> [T; 2] {
    [f(0), f(1)]
}

/// `d * q` for each lane of `q`, `d` broadcast.
#[inline(always)]
fn scaled<L: Lanes>(l: L, q: L::I, d: f32) -> L::F {
    l.mul(l.to_f32(q), l.splat(d))
}

/// `q * d + m`, a product and a sum (ggml's Q4_1/Q5_1).
#[inline(always)]
fn affine<L: Lanes>(l: L, q: L::I, d: f32, m: f32) -> L::F {
    l.add(scaled(l, q, d), l.splat(m))
}

/// `d * q - m` (the K-quants' scale and min).
#[inline(always)]
fn scaled_less<L: Lanes>(l: L, q: L::I, d: f32, m: f32) -> L::F {
    l.sub(scaled(l, q, d), l.splat(m))
}

/// The 16 values a 4-bit index can take, `value(i)` computed once per block (or group) for
/// [`Lanes::lookup16`]: the same operations on `i` as on each value, so the same bits.
#[inline(always)]
fn table<L: Lanes>(l: L, value: impl FnOnce(L::I) -> L::F) -> L::F {
    value(l.iota())
}

/// A block's 16 bytes of nibbles as the two vectors of a group: low nibbles, then high.
#[inline(always)]
fn nibbles<L: Lanes>(l: L, b: &[u8; 16]) -> [L::I; 2] {
    let q = l.widen_u8(b);
    [l.mask(q, 0x0F), l.shr(q, 4)]
}

pub(super) struct Q4_0;
impl Format for Q4_0 {
    type Block = [u8; 18];
    const VALUES: usize = 32;
    #[inline(always)]
    fn decode<L: Lanes>(l: L, b: &Self::Block, mut emit: impl FnMut([L::F; 2])) {
        let eight = l.splat_i(8);
        if L::LOOKUP {
            let d = l.f16_splat(u32_at(b, 0) as u16);
            let t = table(
                l,
                #[inline(always)]
                |i| l.mul(l.to_f32(l.sub_i(i, eight)), d),
            );
            let q = l.widen_u8(&bytes16(b, 2));
            emit([l.lookup16(t, q), l.lookup16(t, l.shr(q, 4))]);
            return;
        }
        let d = half(l, b, 0);
        let q = nibbles(l, &bytes16(b, 2));
        emit(two(
            #[inline(always)]
            |h| scaled(l, l.sub_i(q[h], eight), d),
        ));
    }
}

pub(super) struct Q4_1;
impl Format for Q4_1 {
    type Block = [u8; 20];
    const VALUES: usize = 32;
    #[inline(always)]
    fn decode<L: Lanes>(l: L, b: &Self::Block, mut emit: impl FnMut([L::F; 2])) {
        if L::LOOKUP {
            let [d, m] = l.f16_pair(u32_at(b, 0));
            let t = table(
                l,
                #[inline(always)]
                |i| l.add(l.mul(l.to_f32(i), d), m),
            );
            let q = l.widen_u8(&bytes16(b, 4));
            emit([l.lookup16(t, q), l.lookup16(t, l.shr(q, 4))]);
            return;
        }
        let (d, m) = (half(l, b, 0), half(l, b, 2));
        let q = nibbles(l, &bytes16(b, 4));
        emit(two(
            #[inline(always)]
            |h| affine(l, q[h], d, m),
        ));
    }
}

/// Q5's values: nibbles with bit `j` of `qh` as the fifth bit of value `j`.
#[inline(always)]
fn five_bits<L: Lanes>(l: L, qs: &[u8; 16], qh: u32) -> [L::I; 2] {
    let [lo, hi] = nibbles(l, qs);
    [
        l.or16_where(lo, qh as u16),
        l.or16_where(hi, (qh >> 16) as u16),
    ]
}

pub(super) struct Q5_0;
impl Format for Q5_0 {
    type Block = [u8; 22];
    const VALUES: usize = 32;
    #[inline(always)]
    fn decode<L: Lanes>(l: L, b: &Self::Block, mut emit: impl FnMut([L::F; 2])) {
        let d = half(l, b, 0);
        let sixteen = l.splat_i(16);
        let q = five_bits(l, &bytes16(b, 6), u32_at(b, 2));
        emit(two(
            #[inline(always)]
            |h| scaled(l, l.sub_i(q[h], sixteen), d),
        ));
    }
}

pub(super) struct Q5_1;
impl Format for Q5_1 {
    type Block = [u8; 24];
    const VALUES: usize = 32;
    #[inline(always)]
    fn decode<L: Lanes>(l: L, b: &Self::Block, mut emit: impl FnMut([L::F; 2])) {
        let (d, m) = (half(l, b, 0), half(l, b, 2));
        let q = five_bits(l, &bytes16(b, 8), u32_at(b, 4));
        emit(two(
            #[inline(always)]
            |h| affine(l, q[h], d, m),
        ));
    }
}

pub(super) struct Q8_0;
impl Format for Q8_0 {
    type Block = [u8; 34];
    const VALUES: usize = 32;
    #[inline(always)]
    fn decode<L: Lanes>(l: L, b: &Self::Block, mut emit: impl FnMut([L::F; 2])) {
        let d = half(l, b, 0);
        emit(two(
            #[inline(always)]
            |h| scaled(l, l.widen_i8(&bytes16(b, 2 + 16 * h)), d),
        ));
    }
}

pub(super) struct Q2_K;
impl Format for Q2_K {
    type Block = [u8; 84];
    const VALUES: usize = 256;
    #[inline(always)]
    fn decode<L: Lanes>(l: L, b: &Self::Block, mut emit: impl FnMut([L::F; 2])) {
        let (d, min) = (half(l, b, 80), half(l, b, 82));
        for n in 0..2 {
            let q = two(
                #[inline(always)]
                |h| l.widen_u8(&bytes16(b, 16 + 32 * n + 16 * h)),
            );
            for j in 0..4 {
                emit(two(
                    #[inline(always)]
                    |h| {
                        let sc = b[8 * n + 2 * j + h];
                        let dl = d * f32::from(sc & 0x0F);
                        let ml = min * f32::from(sc >> 4);
                        scaled_less(l, l.mask(l.shr(q[h], 2 * j as u32), 3), dl, ml)
                    },
                ));
            }
        }
    }
}

pub(super) struct Q3_K;
impl Format for Q3_K {
    type Block = [u8; 110];
    const VALUES: usize = 256;
    #[inline(always)]
    fn decode<L: Lanes>(l: L, b: &Self::Block, mut emit: impl FnMut([L::F; 2])) {
        let d_all = half(l, b, 108);
        let mut packed = [0u8; 12];
        packed.copy_from_slice(&b[96..108]);
        let scales = q3_k_scales(&packed);
        let hmask = two(
            #[inline(always)]
            |h| l.widen_u8(&bytes16(b, 16 * h)),
        );
        let four = l.splat_i(4);
        for n in 0..2 {
            let q = two(
                #[inline(always)]
                |h| l.widen_u8(&bytes16(b, 32 + 32 * n + 16 * h)),
            );
            for j in 0..4 {
                emit(two(
                    #[inline(always)]
                    |h| {
                        let dl = d_all * f32::from(scales[8 * n + 2 * j + h]);
                        let low = l.mask(l.shr(q[h], 2 * j as u32), 3);
                        let high = l.mask(l.shr(hmask[h], (4 * n + j) as u32), 1);
                        // `low - 4` where the hmask bit is clear: `(low | high << 2) - 4`.
                        let x = l.sub_i(l.or(low, l.shl(high, 2)), four);
                        scaled(l, x, dl)
                    },
                ));
            }
        }
    }
}

/// Q4_K/Q5_K's per-32 scale and min for groups `2k` and `2k + 1` of a super-block.
#[inline(always)]
fn k_scales(d: f32, min: f32, scales: &[u8; 12], k: usize) -> [(f32, f32); 2] {
    two(|h| {
        let (sc, m) = scale_min_k4(2 * k + h, scales);
        (d * f32::from(sc), min * f32::from(m))
    })
}

pub(super) struct Q4_K;
impl Format for Q4_K {
    type Block = [u8; 144];
    const VALUES: usize = 256;
    #[inline(always)]
    fn decode<L: Lanes>(l: L, b: &Self::Block, mut emit: impl FnMut([L::F; 2])) {
        let (d, min) = (half(l, b, 0), half(l, b, 2));
        let mut scales = [0u8; 12];
        scales.copy_from_slice(&b[4..16]);
        for k in 0..4 {
            let [(d1, m1), (d2, m2)] = k_scales(d, min, &scales, k);
            let q = two(
                #[inline(always)]
                |h| l.widen_u8(&bytes16(b, 16 + 32 * k + 16 * h)),
            );
            if L::LOOKUP {
                let t1 = table(
                    l,
                    #[inline(always)]
                    |i| scaled_less(l, i, d1, m1),
                );
                emit([l.lookup16(t1, q[0]), l.lookup16(t1, q[1])]);
                let t2 = table(
                    l,
                    #[inline(always)]
                    |i| scaled_less(l, i, d2, m2),
                );
                emit([
                    l.lookup16(t2, l.shr(q[0], 4)),
                    l.lookup16(t2, l.shr(q[1], 4)),
                ]);
                continue;
            }
            emit(two(
                #[inline(always)]
                |h| scaled_less(l, l.mask(q[h], 0x0F), d1, m1),
            ));
            emit(two(
                #[inline(always)]
                |h| scaled_less(l, l.shr(q[h], 4), d2, m2),
            ));
        }
    }
}

/// Bit `bit` of each lane of `qh`, as 16 or 0.
#[inline(always)]
fn fifth_bit<L: Lanes>(l: L, qh: L::I, bit: usize) -> L::I {
    l.shl(l.mask(l.shr(qh, bit as u32), 1), 4)
}

pub(super) struct Q5_K;
impl Format for Q5_K {
    type Block = [u8; 176];
    const VALUES: usize = 256;
    #[inline(always)]
    fn decode<L: Lanes>(l: L, b: &Self::Block, mut emit: impl FnMut([L::F; 2])) {
        let (d, min) = (half(l, b, 0), half(l, b, 2));
        let mut scales = [0u8; 12];
        scales.copy_from_slice(&b[4..16]);
        let qh = two(
            #[inline(always)]
            |h| l.widen_u8(&bytes16(b, 16 + 16 * h)),
        );
        for k in 0..4 {
            let [(d1, m1), (d2, m2)] = k_scales(d, min, &scales, k);
            let q = two(
                #[inline(always)]
                |h| l.widen_u8(&bytes16(b, 48 + 32 * k + 16 * h)),
            );
            // ggml adds 16 where the bit is set; the nibble is below 16, so an `or` is the sum.
            let fifth = |h: usize, bit: usize| fifth_bit(l, qh[h], bit);
            emit(two(
                #[inline(always)]
                |h| scaled_less(l, l.or(l.mask(q[h], 0x0F), fifth(h, 2 * k)), d1, m1),
            ));
            emit(two(
                #[inline(always)]
                |h| scaled_less(l, l.or(l.shr(q[h], 4), fifth(h, 2 * k + 1)), d2, m2),
            ));
        }
    }
}

pub(super) struct Q6_K;
impl Format for Q6_K {
    type Block = [u8; 210];
    const VALUES: usize = 256;
    #[inline(always)]
    fn decode<L: Lanes>(l: L, b: &Self::Block, mut emit: impl FnMut([L::F; 2])) {
        let d = half(l, b, 208);
        let thirty_two = l.splat_i(32);
        for n in 0..2 {
            // ql[64n + 16i ..] for i in 0..4, qh[32n + 16h ..] for h in 0..2.
            let ql = [0, 1, 2, 3].map(|i| bytes16(b, 64 * n + 16 * i));
            let ql = [
                l.widen_u8(&ql[0]),
                l.widen_u8(&ql[1]),
                l.widen_u8(&ql[2]),
                l.widen_u8(&ql[3]),
            ];
            let qh = two(
                #[inline(always)]
                |h| l.widen_u8(&bytes16(b, 128 + 32 * n + 16 * h)),
            );
            // Group g of these 128 values: nibble `g / 2` of ql bytes `32 * (g % 2) + l`, the
            // high bits at `2g` of qh bytes `l`, scale `sc[2g + h]`.
            for g in 0..4 {
                emit(two(
                    #[inline(always)]
                    |h| {
                        let low = ql[2 * (g % 2) + h];
                        let low = if g < 2 {
                            l.mask(low, 0x0F)
                        } else {
                            l.shr(low, 4)
                        };
                        let high = l.mask(l.shr(qh[h], 2 * g as u32), 3);
                        let q = l.sub_i(l.or(low, l.shl(high, 4)), thirty_two);
                        let sc = b[192 + 8 * n + 2 * g + h].cast_signed();
                        scaled(l, q, d * f32::from(sc))
                    },
                ));
            }
        }
    }
}

/// Dense f32 rows (a checkpoint's f32 or dequantized weights): a "block" is one group.
pub(super) struct F32;
impl Format for F32 {
    type Block = [f32; 32];
    const VALUES: usize = 32;
    const DECODES: bool = false;
    #[inline(always)]
    fn decode<L: Lanes>(l: L, b: &Self::Block, mut emit: impl FnMut([L::F; 2])) {
        let (lo, hi) = b.split_at(16);
        let lanes = |v: &[f32]| {
            let mut out = [0.0; 16];
            out.copy_from_slice(v);
            l.load(&out)
        };
        emit([lanes(lo), lanes(hi)]);
    }
}
