//! The x86-64 path: AVX2 block decoding (pulp's safe `V3` intrinsics), eight values per
//! instruction with the same arithmetic as the portable decoder — a product and a sum per value,
//! never fused — so both give the reference dequantizer's bits. Chosen at run time by
//! [`super::Isa::detect`]; AVX-512 machines run it too (the dot products already use the widest
//! vectors through pulp).

use core::arch::x86_64::{__m128i, __m256};

use pulp::x86::V3;

use super::BLOCK;
use super::packed::BlockDecoder;

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

impl BlockDecoder for V3 {
    #[inline(always)]
    fn q8_0(self, d: f32, q: &[i8; BLOCK], y: &mut [f32; BLOCK]) {
        let avx = self.avx;
        let d = avx._mm256_set1_ps(d);
        let mut v = bytes(self, q);
        for v in &mut v {
            *v = avx._mm256_mul_ps(*v, d);
        }
        *y = bytemuck::cast(v);
    }

    #[inline(always)]
    fn q4_0(self, d: f32, q: &[u8; 16], y: &mut [f32; BLOCK]) {
        let avx = self.avx;
        let (d, eight) = (avx._mm256_set1_ps(d), avx._mm256_set1_ps(-8.0));
        let mut v = nibbles(self, q);
        for v in &mut v {
            *v = avx._mm256_mul_ps(avx._mm256_add_ps(*v, eight), d);
        }
        *y = bytemuck::cast(v);
    }

    #[inline(always)]
    fn q4_1(self, d: f32, m: f32, q: &[u8; 16], y: &mut [f32; BLOCK]) {
        let avx = self.avx;
        let (d, m) = (avx._mm256_set1_ps(d), avx._mm256_set1_ps(m));
        let mut v = nibbles(self, q);
        for v in &mut v {
            *v = avx._mm256_add_ps(avx._mm256_mul_ps(*v, d), m);
        }
        *y = bytemuck::cast(v);
    }
}
