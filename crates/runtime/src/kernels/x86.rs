//! The x86-64 lanes: AVX-512 (one 512-bit register per 16 lanes) and AVX2 (two 256-bit halves),
//! through pulp's safe intrinsics. Each op is the IEEE operation [`Scalar`](super::lanes::Scalar)
//! does per lane, and [`Lanes::sum`] folds register halves in the reference tree's order, so both
//! give the reference bits. Chosen at run time ([`super::Isa::available`]).

use core::arch::x86_64::{__m128, __m128i, __m256, __m256i, __m512, __m512i};

use pulp::x86::{V3, V4};

/// The AVX2 path: pulp's x86-64-v3 set plus F16C, whose `vcvtph2ps` converts a block's f16
/// scales in one instruction. v3 leaves F16C out, and the integer conversion in its place
/// (branches on the exponent, twice per Q4_1 block) cost more than the rest of the block's
/// decode: Q4_1 ran at 4 GiB/s against Q8_0's 9 (one scale per block). Every CPU with AVX2 has
/// F16C (Haswell, Zen 1 and later), but it is checked, never assumed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Avx2(V3);

impl core::ops::Deref for Avx2 {
    type Target = V3;
    fn deref(&self) -> &V3 {
        &self.0
    }
}

impl Avx2 {
    pub(super) fn try_new() -> Option<Self> {
        if !std::arch::is_x86_feature_detected!("f16c") {
            return None;
        }
        V3::try_new().map(Self)
    }

    /// Runs `f` compiled for this path's instructions (pulp's `vectorize`, F16C added).
    #[inline(always)]
    pub(super) fn vectorize<R>(self, f: impl FnOnce() -> R) -> R {
        #[target_feature(
            enable = "sse,sse2,fxsr,sse3,ssse3,sse4.1,sse4.2,popcnt,avx,avx2,bmi1,bmi2,fma,lzcnt,f16c"
        )]
        #[inline]
        fn imp<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[allow(unsafe_code)]
        // SAFETY: an `Avx2` is only made by `try_new`, after the CPU was found to have V3's
        // features and F16C: every feature `imp` is compiled with.
        unsafe {
            imp(f)
        }
    }
}

use super::lanes::Lanes;

/// The last three steps of the reference tree on four lanes: `j + 2`, then `j + 1`.
#[inline(always)]
fn sum4(simd: V3, s4: __m128) -> f32 {
    let sse = simd.sse;
    let s2 = sse._mm_add_ps(s4, sse._mm_movehl_ps(s4, s4));
    let s1 = sse._mm_add_ss(s2, simd.sse3._mm_movehdup_ps(s2));
    sse._mm_cvtss_f32(s1)
}

/// Eight lanes of 32-bit values, for the AVX2 halves.
#[inline(always)]
fn sum8(simd: V3, s8: __m256) -> f32 {
    let avx = simd.avx;
    let s4 = simd.sse._mm_add_ps(
        avx._mm256_castps256_ps128(s8),
        avx._mm256_extractf128_ps::<1>(s8),
    );
    sum4(simd, s4)
}

impl Lanes for V4 {
    type F = __m512;
    type I = __m512i;
    const MAX_TILE: usize = 8;
    const LOOKUP: bool = true;

    #[inline(always)]
    fn splat(self, v: f32) -> Self::F {
        self.avx512f._mm512_set1_ps(v)
    }
    #[inline(always)]
    fn load(self, x: &[f32; 16]) -> Self::F {
        bytemuck::cast(*x)
    }
    #[inline(always)]
    fn store(self, v: Self::F) -> [f32; 16] {
        bytemuck::cast(v)
    }
    #[inline(always)]
    fn add(self, a: Self::F, b: Self::F) -> Self::F {
        self.avx512f._mm512_add_ps(a, b)
    }
    #[inline(always)]
    fn sub(self, a: Self::F, b: Self::F) -> Self::F {
        self.avx512f._mm512_sub_ps(a, b)
    }
    #[inline(always)]
    fn mul(self, a: Self::F, b: Self::F) -> Self::F {
        self.avx512f._mm512_mul_ps(a, b)
    }
    #[inline(always)]
    fn fma(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F {
        self.avx512f._mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    fn widen_u8(self, b: &[u8; 16]) -> Self::I {
        self.avx512f
            ._mm512_cvtepu8_epi32(bytemuck::cast::<[u8; 16], __m128i>(*b))
    }
    #[inline(always)]
    fn widen_i8(self, b: &[u8; 16]) -> Self::I {
        self.avx512f
            ._mm512_cvtepi8_epi32(bytemuck::cast::<[u8; 16], __m128i>(*b))
    }
    #[inline(always)]
    fn splat_i(self, v: i32) -> Self::I {
        self.avx512f._mm512_set1_epi32(v)
    }
    #[inline(always)]
    fn and(self, a: Self::I, b: Self::I) -> Self::I {
        self.avx512f._mm512_and_si512(a, b)
    }
    #[inline(always)]
    fn or(self, a: Self::I, b: Self::I) -> Self::I {
        self.avx512f._mm512_or_si512(a, b)
    }
    #[inline(always)]
    fn or16_where(self, a: Self::I, mask: u16) -> Self::I {
        let sixteen = self.avx512f._mm512_set1_epi32(16);
        self.avx512f._mm512_mask_or_epi32(a, mask, a, sixteen)
    }
    #[inline(always)]
    fn sub_i(self, a: Self::I, b: Self::I) -> Self::I {
        self.avx512f._mm512_sub_epi32(a, b)
    }
    #[inline(always)]
    fn shr_v(self, a: Self::I, n: Self::I) -> Self::I {
        self.avx512f._mm512_srlv_epi32(a, n)
    }
    #[inline(always)]
    fn shl_v(self, a: Self::I, n: Self::I) -> Self::I {
        self.avx512f._mm512_sllv_epi32(a, n)
    }
    #[inline(always)]
    fn to_f32(self, a: Self::I) -> Self::F {
        self.avx512f._mm512_cvtepi32_ps(a)
    }
    #[inline(always)]
    fn iota(self) -> Self::I {
        bytemuck::cast([0i32, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15])
    }
    #[inline(always)]
    fn lookup16(self, table: Self::F, idx: Self::I) -> Self::F {
        // `vpermps` reads the low four bits of each index.
        self.avx512f._mm512_permutexvar_ps(idx, table)
    }
    #[inline(always)]
    fn f16(self, h: u16) -> f32 {
        // `vcvtph2ps` (AVX-512F's form: F16C's is not in this path's feature set) on lane 0.
        let v = self
            .avx512f
            ._mm512_cvtph_ps(self.avx._mm256_set1_epi16(h.cast_signed()));
        self.sse
            ._mm_cvtss_f32(self.avx512f._mm512_castps512_ps128(v))
    }
    #[inline(always)]
    fn f16_splat(self, h: u16) -> Self::F {
        // Converted in every lane at once: no trip through a scalar and back.
        self.avx512f
            ._mm512_cvtph_ps(self.avx._mm256_set1_epi16(h.cast_signed()))
    }
    #[inline(always)]
    fn f16_pair(self, pair: u32) -> [Self::F; 2] {
        // One conversion of `d, m, d, m, …`, then the even and the odd lanes duplicated.
        let v = self
            .avx512f
            ._mm512_cvtph_ps(self.avx._mm256_set1_epi32(pair.cast_signed()));
        [
            self.avx512f._mm512_moveldup_ps(v),
            self.avx512f._mm512_movehdup_ps(v),
        ]
    }
    #[inline(always)]
    fn sum(self, a: Self::F, b: Self::F) -> f32 {
        let s16 = self.avx512f._mm512_add_ps(a, b);
        let s8 = self.avx._mm256_add_ps(
            self.avx512f._mm512_castps512_ps256(s16),
            self.avx512dq._mm512_extractf32x8_ps::<1>(s16),
        );
        sum8(*self, s8)
    }
}

impl Avx2 {
    /// `vcvtph2ps` of the two f16 in `pair` (low first) into lanes 0 and 1.
    #[inline(always)]
    fn cvtph(self, pair: u32) -> __m128 {
        let h = self.sse2._mm_cvtsi32_si128(pair.cast_signed());
        #[allow(unsafe_code)]
        // SAFETY: an `Avx2` proves the CPU has F16C (`Avx2::try_new`); the kernels run it
        // inside `Avx2::vectorize`, compiled with F16C, where this is one instruction.
        unsafe {
            core::arch::x86_64::_mm_cvtph_ps(h)
        }
    }
}

/// Two AVX2 registers: lanes 0..8 and 8..16.
type Pair<T> = [T; 2];

impl Lanes for Avx2 {
    type F = Pair<__m256>;
    type I = Pair<__m256i>;
    // Four rows take 16 registers of accumulators: all there are, so the tile stops at two.
    const MAX_TILE: usize = 2;
    // With tiles of two rows a block's decode (~20 operations for 32 values) is paid once per
    // two rows against their 8 FMAs; from a buffer it is paid once per weight row.
    const BUFFER_FROM_ROWS: usize = 4;

    #[inline(always)]
    fn splat(self, v: f32) -> Self::F {
        [self.avx._mm256_set1_ps(v); 2]
    }
    #[inline(always)]
    fn load(self, x: &[f32; 16]) -> Self::F {
        bytemuck::cast(*x)
    }
    #[inline(always)]
    fn store(self, v: Self::F) -> [f32; 16] {
        bytemuck::cast(v)
    }
    #[inline(always)]
    fn add(self, a: Self::F, b: Self::F) -> Self::F {
        [
            self.avx._mm256_add_ps(a[0], b[0]),
            self.avx._mm256_add_ps(a[1], b[1]),
        ]
    }
    #[inline(always)]
    fn sub(self, a: Self::F, b: Self::F) -> Self::F {
        [
            self.avx._mm256_sub_ps(a[0], b[0]),
            self.avx._mm256_sub_ps(a[1], b[1]),
        ]
    }
    #[inline(always)]
    fn mul(self, a: Self::F, b: Self::F) -> Self::F {
        [
            self.avx._mm256_mul_ps(a[0], b[0]),
            self.avx._mm256_mul_ps(a[1], b[1]),
        ]
    }
    #[inline(always)]
    fn fma(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F {
        [
            self.fma._mm256_fmadd_ps(a[0], b[0], c[0]),
            self.fma._mm256_fmadd_ps(a[1], b[1], c[1]),
        ]
    }
    #[inline(always)]
    fn widen_u8(self, b: &[u8; 16]) -> Self::I {
        let q: __m128i = bytemuck::cast(*b);
        [
            self.avx2._mm256_cvtepu8_epi32(q),
            self.avx2
                ._mm256_cvtepu8_epi32(self.sse2._mm_srli_si128::<8>(q)),
        ]
    }
    #[inline(always)]
    fn widen_i8(self, b: &[u8; 16]) -> Self::I {
        let q: __m128i = bytemuck::cast(*b);
        [
            self.avx2._mm256_cvtepi8_epi32(q),
            self.avx2
                ._mm256_cvtepi8_epi32(self.sse2._mm_srli_si128::<8>(q)),
        ]
    }
    #[inline(always)]
    fn splat_i(self, v: i32) -> Self::I {
        [self.avx._mm256_set1_epi32(v); 2]
    }
    #[inline(always)]
    fn and(self, a: Self::I, b: Self::I) -> Self::I {
        [
            self.avx2._mm256_and_si256(a[0], b[0]),
            self.avx2._mm256_and_si256(a[1], b[1]),
        ]
    }
    #[inline(always)]
    fn or(self, a: Self::I, b: Self::I) -> Self::I {
        [
            self.avx2._mm256_or_si256(a[0], b[0]),
            self.avx2._mm256_or_si256(a[1], b[1]),
        ]
    }
    #[inline(always)]
    fn sub_i(self, a: Self::I, b: Self::I) -> Self::I {
        [
            self.avx2._mm256_sub_epi32(a[0], b[0]),
            self.avx2._mm256_sub_epi32(a[1], b[1]),
        ]
    }
    #[inline(always)]
    fn shr_v(self, a: Self::I, n: Self::I) -> Self::I {
        [
            self.avx2._mm256_srlv_epi32(a[0], n[0]),
            self.avx2._mm256_srlv_epi32(a[1], n[1]),
        ]
    }
    #[inline(always)]
    fn shl_v(self, a: Self::I, n: Self::I) -> Self::I {
        [
            self.avx2._mm256_sllv_epi32(a[0], n[0]),
            self.avx2._mm256_sllv_epi32(a[1], n[1]),
        ]
    }
    #[inline(always)]
    fn to_f32(self, a: Self::I) -> Self::F {
        [
            self.avx._mm256_cvtepi32_ps(a[0]),
            self.avx._mm256_cvtepi32_ps(a[1]),
        ]
    }
    #[inline(always)]
    fn iota(self) -> Self::I {
        bytemuck::cast([0i32, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15])
    }
    #[inline(always)]
    fn lookup16(self, table: Self::F, idx: Self::I) -> Self::F {
        // Not a single instruction here (`LOOKUP` is false, the decoders compute instead):
        // each half's entries 0..8 and 8..16 by `vpermps` (low three bits), picked by bit 3.
        let half = |i: __m256i| {
            let low = self.avx2._mm256_permutevar8x32_ps(table[0], i);
            let high = self.avx2._mm256_permutevar8x32_ps(table[1], i);
            let bit3 = self
                .avx
                ._mm256_castsi256_ps(self.avx2._mm256_slli_epi32::<28>(i));
            self.avx._mm256_blendv_ps(low, high, bit3)
        };
        [half(idx[0]), half(idx[1])]
    }
    #[inline(always)]
    fn f16(self, h: u16) -> f32 {
        self.sse._mm_cvtss_f32(self.cvtph(u32::from(h)))
    }
    #[inline(always)]
    fn f16_splat(self, h: u16) -> Self::F {
        [self.avx2._mm256_broadcastss_ps(self.cvtph(u32::from(h))); 2]
    }
    #[inline(always)]
    fn f16_pair(self, pair: u32) -> [Self::F; 2] {
        // One conversion of `d, m`, then each broadcast.
        let v = self.cvtph(pair);
        let m = self.sse3._mm_movehdup_ps(v);
        [
            [self.avx2._mm256_broadcastss_ps(v); 2],
            [self.avx2._mm256_broadcastss_ps(m); 2],
        ]
    }
    #[inline(always)]
    fn sum(self, a: Self::F, b: Self::F) -> f32 {
        let avx = self.avx;
        // Lanes j and j + 16 are the same half of `a` and `b`; then the halves (j + 8) fold.
        let s16 = [avx._mm256_add_ps(a[0], b[0]), avx._mm256_add_ps(a[1], b[1])];
        sum8(self.0, avx._mm256_add_ps(s16[0], s16[1]))
    }
}
