//! Sixteen f32 and i32 lanes: the few operations the kernels are written in, once, over every
//! instruction set. [`Scalar`] implements them on plain arrays and *is* the reference: each lane
//! op is one IEEE operation (a fused multiply-add is `f32::mul_add`), so a SIMD implementation
//! that does the same lane-wise operations gives the same bits, and the kernels written over this
//! trait give the same result on every path. The one cross-lane operation, [`Lanes::sum`], is a
//! fixed pairwise tree, spelled out here and followed by each implementation.

/// One instruction set's 16-lane vectors. Every method is lane-wise except [`Lanes::sum`].
pub(super) trait Lanes: Copy {
    /// 16 × f32.
    type F: Copy;
    /// 16 × i32.
    type I: Copy;
    /// Rows of `x` one kernel call keeps in registers at once (its accumulators must fit).
    const MAX_TILE: usize;
    /// Whether [`Lanes::lookup16`] is a single instruction here (AVX-512's `vpermps`): the
    /// 4-bit formats then decode through a 16-entry table of their block's values instead of
    /// converting and scaling every value. Both ways give the same bits.
    const LOOKUP: bool = false;
    /// The fewest rows of `x` from which a weight row is decoded once into an L1 buffer and
    /// read from there by every tile, rather than decoded again in registers for each tile.
    /// Both ways do the same operations on each lane, so the same bits; which is faster is a
    /// matter of the path's registers (measured, `benches/kernels.rs`).
    const BUFFER_FROM_ROWS: usize = usize::MAX;

    fn splat(self, v: f32) -> Self::F;
    fn load(self, x: &[f32; 16]) -> Self::F;
    fn store(self, v: Self::F) -> [f32; 16];
    fn add(self, a: Self::F, b: Self::F) -> Self::F;
    fn sub(self, a: Self::F, b: Self::F) -> Self::F;
    fn mul(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a * b + c`, rounded once.
    fn fma(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F;

    /// Bytes zero-extended to lanes.
    fn widen_u8(self, b: &[u8; 16]) -> Self::I;
    /// Bytes sign-extended to lanes.
    fn widen_i8(self, b: &[u8; 16]) -> Self::I;
    fn splat_i(self, v: i32) -> Self::I;
    fn and(self, a: Self::I, b: Self::I) -> Self::I;
    fn or(self, a: Self::I, b: Self::I) -> Self::I;
    fn sub_i(self, a: Self::I, b: Self::I) -> Self::I;
    /// Logical shift right of each lane by the matching lane of `n` (each below 32).
    fn shr_v(self, a: Self::I, n: Self::I) -> Self::I;
    fn shl_v(self, a: Self::I, n: Self::I) -> Self::I;
    /// Lanes as f32 (exact: the kernels' integers are small).
    fn to_f32(self, a: Self::I) -> Self::F;
    /// `[0, 1, …, 15]`.
    fn iota(self) -> Self::I;
    /// Lane `j` is `table[idx[j] & 15]`: only the low four bits of an index count.
    fn lookup16(self, table: Self::F, idx: Self::I) -> Self::F;

    /// The sum of the 32 lanes of `a` (lanes 0..16) and `b` (lanes 16..32) as the tree
    /// [`tree_sum`] spells out.
    fn sum(self, a: Self::F, b: Self::F) -> f32;

    /// An f16 scale's value, exactly ([`f16_to_f32`] unless the path has an instruction).
    #[inline(always)]
    fn f16(self, h: u16) -> f32 {
        f16_to_f32(h)
    }

    /// [`Lanes::f16`] of `h` in every lane.
    #[inline(always)]
    fn f16_splat(self, h: u16) -> Self::F {
        self.splat(self.f16(h))
    }

    /// [`Lanes::f16_splat`] of the low and of the high half of `pair` (a block's `d` and `m`
    /// side by side).
    #[inline(always)]
    fn f16_pair(self, pair: u32) -> [Self::F; 2] {
        [
            self.f16_splat(pair as u16),
            self.f16_splat((pair >> 16) as u16),
        ]
    }

    /// Logical shift right by `n` in every lane.
    #[inline(always)]
    fn shr(self, a: Self::I, n: u32) -> Self::I {
        self.shr_v(a, self.splat_i(n.cast_signed()))
    }

    #[inline(always)]
    fn shl(self, a: Self::I, n: u32) -> Self::I {
        self.shl_v(a, self.splat_i(n.cast_signed()))
    }

    /// `a & mask` with a constant mask.
    #[inline(always)]
    fn mask(self, a: Self::I, mask: i32) -> Self::I {
        self.and(a, self.splat_i(mask))
    }

    /// Lane `j` is bit `first + j` of `bits` (0 or 1).
    #[inline(always)]
    fn bits(self, bits: u32, first: u32) -> Self::I {
        let lanes = self.shr_v(self.splat_i(bits.cast_signed()), self.iota());
        self.mask(self.shr(lanes, first), 1)
    }

    /// `a` with 16 or-ed into lane `j` where bit `j` of `mask` is set (a Q5 value's fifth
    /// bit). A path with lane masks (AVX-512) does it in one instruction.
    #[inline(always)]
    fn or16_where(self, a: Self::I, mask: u16) -> Self::I {
        self.or(a, self.shl(self.bits(u32::from(mask), 0), 4))
    }
}

/// An f16's value, exactly (`half`'s `to_f32`, F16C's `vcvtph2ps`: a NaN keeps its payload and
/// comes out quiet) in a few integer operations. `half` checks the CPU for F16C on every call
/// outside a target-feature context, which cost more than the rest of a block's decode.
#[inline(always)]
pub(super) fn f16_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let exp = (h >> 10) & 0x1F;
    let mant = h & 0x3FF;
    let bits = match exp {
        // Zero or subnormal: mant × 2^-24, exact in f32.
        0 => {
            let v = mant as f32 * f32::from_bits(0x3380_0000);
            return if sign == 0 { v } else { -v };
        }
        0x1F if mant == 0 => sign | 0x7F80_0000,
        0x1F => sign | 0x7FC0_0000 | (mant << 13),
        _ => sign | ((exp + 112) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

/// The reference order of [`Lanes::sum`]: lanes `j` and `j + 16` first, then halves of what is
/// left (`j + 8`, `j + 4`, `j + 2`, `j + 1`) — the order a SIMD register's halves fold in.
#[inline(always)]
pub(super) fn tree_sum(lanes: &[f32; 32]) -> f32 {
    let s16: [f32; 16] = std::array::from_fn(|j| lanes[j] + lanes[j + 16]);
    let s8: [f32; 8] = std::array::from_fn(|j| s16[j] + s16[j + 8]);
    let s4: [f32; 4] = std::array::from_fn(|j| s8[j] + s8[j + 4]);
    let s2: [f32; 2] = std::array::from_fn(|j| s4[j] + s4[j + 2]);
    s2[0] + s2[1]
}

/// The reference implementation, and the path for CPUs without AVX2.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scalar;

#[inline(always)]
fn map<T: Copy, U>(a: [T; 16], f: impl Fn(T) -> U) -> [U; 16] {
    a.map(f)
}

#[inline(always)]
fn zip<T: Copy, U>(a: [T; 16], b: [T; 16], f: impl Fn(T, T) -> U) -> [U; 16] {
    std::array::from_fn(|j| f(a[j], b[j]))
}

impl Lanes for Scalar {
    type F = [f32; 16];
    type I = [i32; 16];
    const MAX_TILE: usize = 8;

    #[inline(always)]
    fn splat(self, v: f32) -> Self::F {
        [v; 16]
    }
    #[inline(always)]
    fn load(self, x: &[f32; 16]) -> Self::F {
        *x
    }
    #[inline(always)]
    fn store(self, v: Self::F) -> [f32; 16] {
        v
    }
    #[inline(always)]
    fn add(self, a: Self::F, b: Self::F) -> Self::F {
        zip(a, b, |a, b| a + b)
    }
    #[inline(always)]
    fn sub(self, a: Self::F, b: Self::F) -> Self::F {
        zip(a, b, |a, b| a - b)
    }
    #[inline(always)]
    fn mul(self, a: Self::F, b: Self::F) -> Self::F {
        zip(a, b, |a, b| a * b)
    }
    #[inline(always)]
    fn fma(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F {
        std::array::from_fn(|j| a[j].mul_add(b[j], c[j]))
    }
    #[inline(always)]
    fn widen_u8(self, b: &[u8; 16]) -> Self::I {
        map(*b, i32::from)
    }
    #[inline(always)]
    fn widen_i8(self, b: &[u8; 16]) -> Self::I {
        map(*b, |b| i32::from(b.cast_signed()))
    }
    #[inline(always)]
    fn splat_i(self, v: i32) -> Self::I {
        [v; 16]
    }
    #[inline(always)]
    fn and(self, a: Self::I, b: Self::I) -> Self::I {
        zip(a, b, |a, b| a & b)
    }
    #[inline(always)]
    fn or(self, a: Self::I, b: Self::I) -> Self::I {
        zip(a, b, |a, b| a | b)
    }
    #[inline(always)]
    fn sub_i(self, a: Self::I, b: Self::I) -> Self::I {
        zip(a, b, i32::wrapping_sub)
    }
    #[inline(always)]
    fn shr_v(self, a: Self::I, n: Self::I) -> Self::I {
        zip(a, n, |a, n| (a.cast_unsigned() >> (n & 31)).cast_signed())
    }
    #[inline(always)]
    fn shl_v(self, a: Self::I, n: Self::I) -> Self::I {
        zip(a, n, |a, n| (a.cast_unsigned() << (n & 31)).cast_signed())
    }
    #[inline(always)]
    fn to_f32(self, a: Self::I) -> Self::F {
        // The kernels' integers are below 2^24 in magnitude: exact.
        map(a, |a| a as f32)
    }
    #[inline(always)]
    fn iota(self) -> Self::I {
        std::array::from_fn(|j| j as i32)
    }
    #[inline(always)]
    fn lookup16(self, table: Self::F, idx: Self::I) -> Self::F {
        map(idx, |i| table[(i & 15) as usize])
    }
    #[inline(always)]
    fn sum(self, a: Self::F, b: Self::F) -> f32 {
        let mut lanes = [0.0; 32];
        lanes[..16].copy_from_slice(&a);
        lanes[16..].copy_from_slice(&b);
        tree_sum(&lanes)
    }
}
