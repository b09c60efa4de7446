//! Kiln's GPU kernels (CubeCL, through wgpu): the packed matmul here and paged attention
//! ([`attention`]).
//!
//! GGUF blocks on a GPU: a packed matrix's bytes uploaded as they are (as 32-bit words) and
//! multiplied by a CubeCL kernel that decodes each 32-value group in registers, so a Q4 model
//! takes its file size in device memory instead of 4-8x it. The kernel is one backend extension
//! op (`PackedOps::packed_matmul`) on burn's CubeCL backend, registered with fusion as an opaque
//! op, so it runs in the same stream as the rest of the forward.
//!
//! The decode is the reference dequantizer's ([`crate::quant`], ggml's `dequantize_row_*`): the
//! same integer unpacking and scale products, then `q·scale + offset`; products accumulate in
//! f32 whatever the compute dtype. Sums run in another order than the CPU kernels' (a tree over
//! the cube's units), so results agree with them to rounding, not bit for bit.
//!
//! Work split: one cube per output feature (a row of `W`) and tile of [`TILE`] rows of `x`;
//! its [`UNITS`] units take the row's groups in turn (adjacent units read adjacent blocks), each
//! decoded once for the whole tile, then a tree sum in shared memory. Decode (one row of `x`)
//! is a GEMV over every weight once; prefill re-reads each weight row once per tile.

use std::borrow::Cow;
use std::sync::Arc;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor, tensor::IntTensor};
use burn::tensor::{DType as BurnDType, Device, Int, Shape, Tensor, TensorData};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::prelude::{CubeCount, CubeDim};

use super::GgmlType;
use super::packed::{PackedMatrix, Part};

mod attention;
pub(crate) use attention::{PagedTables, paged_attention};

/// Units per cube (a power of two: the tree sum halves it).
const UNITS: usize = 64;
/// Rows of `x` per cube: each decoded group serves this many rows.
const TILE: usize = 4;
/// Cubes along x before the grid wraps to y (WebGPU's per-dimension limit is 65535).
const GRID_X: usize = 32768;

/// A block format the GPU kernel decodes, as its comptime code.
// The formats keep ggml's names (Q4_K, not Q4K), as GgmlType does.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GpuFormat {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4_K,
    Q6_K,
}

// The comptime codes the kernel branches on.
const Q4_0: u32 = 0;
const Q4_1: u32 = 1;
const Q5_0: u32 = 2;
const Q5_1: u32 = 3;
const Q8_0: u32 = 4;
const Q4_K: u32 = 5;
const Q6_K: u32 = 6;

impl GpuFormat {
    /// The format of `ty`, if the kernel decodes it (the others are dequantized at load).
    pub(crate) fn of(ty: GgmlType) -> Option<Self> {
        Some(match ty {
            GgmlType::Q4_0 => Self::Q4_0,
            GgmlType::Q4_1 => Self::Q4_1,
            GgmlType::Q5_0 => Self::Q5_0,
            GgmlType::Q5_1 => Self::Q5_1,
            GgmlType::Q8_0 => Self::Q8_0,
            GgmlType::Q4_K => Self::Q4_K,
            GgmlType::Q6_K => Self::Q6_K,
            _ => return None,
        })
    }

    fn code(self) -> u32 {
        match self {
            Self::Q4_0 => Q4_0,
            Self::Q4_1 => Q4_1,
            Self::Q5_0 => Q5_0,
            Self::Q5_1 => Q5_1,
            Self::Q8_0 => Q8_0,
            Self::Q4_K => Q4_K,
            Self::Q6_K => Q6_K,
        }
    }
}

/// One run of rows of a matrix on the device.
#[derive(Debug, Clone)]
enum GpuPart {
    /// The blocks as little-endian 32-bit words (i32 tensor, bits as they are), one spare word
    /// at the end so an unaligned read never passes the buffer.
    Blocks {
        words: Tensor<1, Int>,
        format: GpuFormat,
        rows: usize,
    },
    /// A format the kernel does not decode: dequantized at load, `Wᵀ` (`[in, out]`) in the
    /// compute dtype.
    Dense(Tensor<2>),
}

/// A weight matrix `[rows, cols]` kept in GGUF blocks on a GPU.
#[derive(Debug, Clone)]
pub(crate) struct GpuMatrix {
    parts: Vec<GpuPart>,
    cols: usize,
}

impl GpuMatrix {
    /// Uploads `m`'s parts to `device`: blocks as they are where the kernel decodes the format,
    /// else dequantized into `dtype`.
    /// A part bigger than [`MAX_BUFFER`] goes up in runs of rows that fit.
    pub(crate) fn upload(m: &PackedMatrix, device: &Device, dtype: BurnDType) -> Arc<Self> {
        Self::upload_in(m, device, dtype, MAX_BUFFER)
    }

    /// [`upload`](Self::upload) with parts of at most `max_buffer` bytes.
    fn upload_in(
        m: &PackedMatrix,
        device: &Device,
        dtype: BurnDType,
        max_buffer: usize,
    ) -> Arc<Self> {
        let parts = m
            .parts
            .iter()
            .flat_map(|part| split(part, m.cols, dtype, max_buffer))
            .map(|part| match GpuFormat::of(part.ty) {
                Some(format) => GpuPart::Blocks {
                    words: words(&part.data, device),
                    format,
                    rows: part.rows,
                },
                None => GpuPart::Dense(dense_t(&part, m.cols, device, dtype)),
            })
            .collect();
        Arc::new(Self {
            parts,
            cols: m.cols,
        })
    }

    /// The input width.
    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    /// `y = x Wᵀ` for `x` of `[m, cols]` in the compute dtype.
    pub(crate) fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let mut outs: Vec<Tensor<2>> = self
            .parts
            .iter()
            .map(|part| match part {
                GpuPart::Blocks {
                    words,
                    format,
                    rows,
                } => packed_matmul(x.clone(), words.clone(), *format, *rows),
                GpuPart::Dense(w) => x.clone().matmul(w.clone()),
            })
            .collect();
        if outs.len() == 1 {
            outs.remove(0)
        } else {
            Tensor::cat(outs, 1)
        }
    }
}

/// The started device's name and memory, as CubeCL reports them.
pub(crate) fn properties(device: &Device) -> (String, Option<u64>) {
    match device.as_dispatch() {
        burn::backend::DispatchDevice::Cube(cube) => {
            let client = cube.client();
            let properties = client.properties();
            // The adapter's own name, and the runtime driving it (`wgpu<spirv>`).
            let name = format!("{} ({})", properties.identity.name, client.name());
            (name, properties.memory.max_memory())
        }
        #[allow(unreachable_patterns)]
        _ => ("not a CubeCL device".into(), None),
    }
}

/// The most bytes one uploaded part takes: WebGPU guarantees storage bindings of 128 MiB and
/// no more (lavapipe refuses a 170 MB buffer: Gemma 3's Q8_0 embedding), so a big matrix (an
/// output layer, an 8B model's embedding) is several parts, their outputs concatenated.
const MAX_BUFFER: usize = 64 << 20;

/// `part` as runs of whole rows of at most `max_buffer` bytes each on the device (its blocks,
/// or its dequantized values in `dtype` for a format the kernel does not decode).
fn split(part: &Part, cols: usize, dtype: BurnDType, max_buffer: usize) -> Vec<Cow<'_, Part>> {
    let row_bytes = part.data.len() / part.rows.max(1);
    let device_row = match GpuFormat::of(part.ty) {
        Some(_) => row_bytes,
        None => cols * dtype.size(),
    };
    let rows_per = (max_buffer / device_row.max(1)).max(1);
    if part.rows <= rows_per {
        return vec![Cow::Borrowed(part)];
    }
    part.data
        .chunks(rows_per * row_bytes)
        .map(|data| {
            Cow::Owned(Part {
                ty: part.ty,
                rows: data.len() / row_bytes.max(1),
                data: data.to_vec(),
            })
        })
        .collect()
}

/// `bytes` as device words (little-endian), plus one spare.
fn words(bytes: &[u8], device: &Device) -> Tensor<1, Int> {
    let mut w: Vec<i32> = bytes
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            i32::from_le_bytes(b)
        })
        .collect();
    w.push(0);
    let n = w.len();
    Tensor::from_data(TensorData::new(w, [n]), (device, BurnDType::I32))
}

/// A part dequantized by the reference dequantizer, as `Wᵀ` (`[cols, rows]`, transposed on the
/// host so each step's matmul reads it in order) in `dtype`.
fn dense_t(part: &Part, cols: usize, device: &Device, dtype: BurnDType) -> Tensor<2> {
    let n = part.rows * cols;
    let mut values = vec![0.0f32; n];
    // The lengths were checked when the part was made.
    let _ = crate::quant::dequantize(part.ty, &part.data, n, &mut values);
    let mut wt = vec![0.0f32; n];
    for (r, row) in values.chunks_exact(cols.max(1)).enumerate() {
        for (c, &x) in row.iter().enumerate() {
            wt[c * part.rows + r] = x;
        }
    }
    let wt = Tensor::<2>::from_data(TensorData::new(wt, [cols, part.rows]), device);
    crate::nn::to_dtype(wt, dtype)
}

/// `x Wᵀ` for one part of `rows` rows in `format`.
fn packed_matmul(x: Tensor<2>, words: Tensor<1, Int>, format: GpuFormat, rows: usize) -> Tensor<2> {
    let out = Dispatch::packed_matmul(
        x.into_dispatch(),
        words.into_dispatch(),
        format.code(),
        rows,
    );
    Tensor::from_dispatch(out)
}

/// The output shape of `packed_matmul`: `[m, rows]`.
fn out_shape(x: &Shape, rows: &usize) -> Shape {
    Shape::new([x[0], *rows])
}

/// The packed product as a backend op.
#[backend_extension(Cube, Fusion)]
pub(crate) trait PackedOps: Backend {
    /// `x Wᵀ` for `x` `[m, k]` and `W` `[rows, k]` in blocks of `format` (a code) as words.
    #[fusion(dtype = x, shape = out_shape(x, rows))]
    fn packed_matmul(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        format: u32,
        rows: usize,
    ) -> FloatTensor<Self>;
}

impl PackedOps for CubeBackend {
    fn packed_matmul(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        format: u32,
        rows: usize,
    ) -> FloatTensor<Self> {
        let x = into_contiguous(x);
        let m = x.meta.shape()[0];
        let dtype = x.dtype;
        let out = empty_device_dtype(
            x.client.clone(),
            x.device.clone(),
            Shape::new([m, rows]),
            dtype,
        );
        if m == 0 || rows == 0 {
            return out;
        }
        let grid_x = rows.min(GRID_X);
        let grid_y = rows.div_ceil(GRID_X);
        // Decode's one row of x gets a kernel without the tile's other three.
        let tile = if m == 1 { 1 } else { TILE };
        let count = CubeCount::Static(grid_x as u32, grid_y as u32, m.div_ceil(tile) as u32);
        // No more units than the row has groups (a power of two, for the tree sum), but one per
        // row of the tile at least: unit `u` writes row `u` of it.
        let k = x.meta.shape()[1];
        let units = (k / 32).next_power_of_two().clamp(tile, UNITS);
        // SAFETY: every index the kernel makes is in bounds: the words hold `rows` rows of
        // whole blocks (checked when the matrix was made) and a spare word for unaligned reads,
        // `x` is contiguous `[m, k]` with `k` the matrix's width (checked by `Linear`), `out` is
        // `[m, rows]`, and rows of `x` past `m` read row `m - 1`.
        #[allow(unsafe_code)]
        unsafe {
            cube::packed_matmul_kernel::launch_unchecked(
                &out.client,
                count,
                CubeDim::new_1d(units as u32),
                x.into_tensor_arg(),
                words.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                format,
                tile,
                burn::backend::cubecl::dtype_to_storage_type(dtype),
            );
        }
        out
    }
}

/// The kernel and its decoders, in CubeCL.
mod cube {
    // Each decoder assigns its result in exactly one comptime (or runtime) branch.
    #![allow(unused_assignments)]

    use cubecl::prelude::*;

    use super::{Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q6_K, Q8_0, UNITS};

    /// The little-endian u32 at byte `at`, aligned or not (the spare word at the end keeps the
    /// second load in the buffer).
    #[cube]
    fn u32_at(w: &Tensor<u32>, at: usize) -> u32 {
        let word = at / 4;
        let shift = ((at % 4) * 8) as u32;
        let lo = w[word] >> shift;
        // A shift by 32 is undefined in WGSL and SPIR-V: the aligned case takes no high part.
        let hi = select(shift == 0, 0u32, w[word + 1] << (32 - shift));
        lo | hi
    }

    /// An f16's bits as the f32 of the same value (exact).
    #[cube]
    fn f16_to_f32(h: u32) -> f32 {
        let sign = (h >> 15) << 31;
        let e = (h >> 10) & 0x1F;
        let mant = h & 0x3FF;
        let mut out = 0.0f32;
        if e == 0 {
            // Zero or subnormal: mant · 2^-24, exact in f32.
            let v = f32::cast_from(mant) * 5.960_464_5e-8f32;
            out = select(sign != 0, -v, v);
        } else if e == 31 {
            out = f32::reinterpret(sign | 0x7F80_0000u32 | (mant << 13));
        } else {
            out = f32::reinterpret(sign | ((e + 112) << 23) | (mant << 13));
        }
        out
    }

    /// The f16 at even byte `at`, as f32 (never straddles a word).
    #[cube]
    fn half(w: &Tensor<u32>, at: usize) -> f32 {
        f16_to_f32((w[at / 4] >> (((at % 4) * 8) as u32)) & 0xFFFF)
    }

    /// Byte `at`.
    #[cube]
    fn byte(w: &Tensor<u32>, at: usize) -> u32 {
        (w[at / 4] >> (((at % 4) * 8) as u32)) & 0xFF
    }

    /// Values of a block of `format`.
    pub(super) fn block_values(format: u32) -> usize {
        if format == Q4_K || format == Q6_K {
            256
        } else {
            32
        }
    }

    /// Bytes of a block of `format`.
    pub(super) fn block_bytes(format: u32) -> usize {
        match format {
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q4_K => 144,
            _ => 210,
        }
    }

    /// Q4_K's 6-bit scale (`min == false`) or min of sub-block `j` (ggml's
    /// `get_scale_min_k4`), for a block at byte `base`.
    #[cube]
    fn scale_min_k4(w: &Tensor<u32>, base: usize, j: usize, #[comptime] min: bool) -> u32 {
        let q = base + 4;
        let mut out = 0u32;
        if j < 4 {
            if min {
                out = byte(w, q + j + 4) & 63;
            } else {
                out = byte(w, q + j) & 63;
            }
        } else if min {
            out = (byte(w, q + j + 4) >> 4) | ((byte(w, q + j) >> 6) << 4);
        } else {
            out = (byte(w, q + j + 4) & 0xF) | ((byte(w, q + j - 4) >> 6) << 4);
        }
        out
    }

    /// The scale of half `h` (16 values) of group `j` of the block at byte `base`.
    #[cube]
    fn group_scale(
        w: &Tensor<u32>,
        base: usize,
        j: usize,
        h: usize,
        #[comptime] format: u32,
    ) -> f32 {
        let mut s = 0.0f32;
        if comptime![format == Q4_K] {
            s = half(w, base) * f32::cast_from(scale_min_k4(w, base, j, false));
        } else if comptime![format == Q6_K] {
            let sc = byte(w, base + 192 + (j / 4) * 8 + h + 2 * (j % 4));
            let sc = f32::cast_from(sc) - select(sc >= 128, 256.0f32, 0.0f32);
            s = half(w, base + 208) * sc;
        } else {
            s = half(w, base);
        }
        s
    }

    /// What is added to `q · scale` in group `j` (Q4_1/Q5_1's min, Q4_K's negated min, else
    /// 0).
    #[cube]
    fn group_offset(w: &Tensor<u32>, base: usize, j: usize, #[comptime] format: u32) -> f32 {
        let mut o = 0.0f32;
        if comptime![format == Q4_1 || format == Q5_1] {
            o = half(w, base + 2);
        } else if comptime![format == Q4_K] {
            o = -(half(w, base + 2) * f32::cast_from(scale_min_k4(w, base, j, true)));
        }
        o
    }

    /// Q5_0/Q5_1's 32 fifth bits of the block (0 for the other formats).
    #[cube]
    fn group_bits(w: &Tensor<u32>, base: usize, #[comptime] format: u32) -> u32 {
        let mut bits = 0u32;
        if comptime![format == Q5_0] {
            bits = u32_at(w, base + 2);
        } else if comptime![format == Q5_1] {
            bits = u32_at(w, base + 4);
        }
        bits
    }

    /// The word holding the (low) quants of values `v0..v0 + 4` of group `j`: a byte each, the
    /// value in its low or high nibble.
    #[cube]
    fn low_word(w: &Tensor<u32>, base: usize, j: usize, v0: usize, #[comptime] format: u32) -> u32 {
        let mut at = 0usize;
        if comptime![format == Q4_0] {
            at = base + 2 + v0 % 16;
        } else if comptime![format == Q4_1] {
            at = base + 4 + v0 % 16;
        } else if comptime![format == Q5_0] {
            at = base + 6 + v0 % 16;
        } else if comptime![format == Q5_1] {
            at = base + 8 + v0 % 16;
        } else if comptime![format == Q8_0] {
            at = base + 2 + v0;
        } else if comptime![format == Q4_K] {
            at = base + 16 + (j / 2) * 32 + v0;
        } else {
            // Q6_K: group j is quarter j % 4 of half j / 4 of the super-block.
            at = base + (j / 4) * 64 + v0 + (j % 2) * 32;
        }
        u32_at(w, at)
    }

    /// Q6_K's word of high bits for values `v0..v0 + 4` of group `j` (0 for the others).
    #[cube]
    fn high_word(
        w: &Tensor<u32>,
        base: usize,
        j: usize,
        v0: usize,
        #[comptime] format: u32,
    ) -> u32 {
        let mut word = 0u32;
        if comptime![format == Q6_K] {
            word = u32_at(w, base + 128 + (j / 4) * 32 + v0);
        }
        word
    }

    /// The quant of value `v` (byte `t` of its words) of group `j`, as f32 less the format's
    /// zero point.
    #[cube]
    fn quant(
        low: u32,
        high: u32,
        bits: u32,
        t: u32,
        v: u32,
        j: u32,
        #[comptime] format: u32,
    ) -> f32 {
        let nibble = (v / 16) * 4;
        let mut q = 0.0f32;
        if comptime![format == Q4_0] {
            q = f32::cast_from((low >> (8 * t + nibble)) & 0xF) - 8.0f32;
        } else if comptime![format == Q4_1] {
            q = f32::cast_from((low >> (8 * t + nibble)) & 0xF);
        } else if comptime![format == Q5_0] {
            let hi = (bits >> v) & 1;
            q = f32::cast_from(((low >> (8 * t + nibble)) & 0xF) | (hi << 4)) - 16.0f32;
        } else if comptime![format == Q5_1] {
            let hi = (bits >> v) & 1;
            q = f32::cast_from(((low >> (8 * t + nibble)) & 0xF) | (hi << 4));
        } else if comptime![format == Q8_0] {
            let b = (low >> (8 * t)) & 0xFF;
            q = f32::cast_from(b) - select(b >= 128, 256.0f32, 0.0f32);
        } else if comptime![format == Q4_K] {
            q = f32::cast_from((low >> (8 * t + (j % 2) * 4)) & 0xF);
        } else {
            let k = j % 4;
            let lo = (low >> (8 * t + (k / 2) * 4)) & 0xF;
            let hi = (high >> (8 * t + 2 * k)) & 3;
            q = f32::cast_from(lo | (hi << 4)) - 32.0f32;
        }
        q
    }

    /// `out = x Wᵀ`: `x` `[m, k]`, `W` `[n, k]` in `format`'s blocks (`words`), `out` `[m, n]`;
    /// each cube takes one row of `W` and `tile` (1 or 4) rows of `x`.
    #[cube(launch_unchecked)]
    pub(super) fn packed_matmul_kernel<F: Float>(
        x: &Tensor<F>,
        words: &Tensor<u32>,
        out: &mut Tensor<F>,
        #[comptime] format: u32,
        #[comptime] tile: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let m = x.shape(0);
        let k = x.shape(1);
        let n = out.shape(1);
        let col = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
        // Uniform across the cube: it leaves whole, before any barrier.
        if col >= n {
            terminate!();
        }
        let bytes = comptime![block_bytes(format)];
        let per_block = comptime![block_values(format) / 32];
        let row_bytes = (k / comptime![block_values(format)]) * bytes;
        let r0 = CUBE_POS_Z as usize * tile;
        // Rows past the end read the last row; their sums are not written.
        let last = m - 1;
        let x0 = select(r0 < m, r0, last) * k;
        let x1 = select(r0 + 1 < m, r0 + 1, last) * k;
        let x2 = select(r0 + 2 < m, r0 + 2, last) * k;
        let x3 = select(r0 + 3 < m, r0 + 3, last) * k;
        let mut a0 = 0.0f32;
        let mut a1 = 0.0f32;
        let mut a2 = 0.0f32;
        let mut a3 = 0.0f32;
        let units = CUBE_DIM as usize;
        let mut g = UNIT_POS as usize;
        while g < k / 32 {
            let base = col * row_bytes + (g / per_block) * bytes;
            let j = g % per_block;
            let offset = group_offset(words, base, j, format);
            let bits = group_bits(words, base, format);
            for h in 0..2usize {
                let scale = group_scale(words, base, j, h, format);
                for quad in 0..4usize {
                    let v0 = h * 16 + quad * 4;
                    let low = low_word(words, base, j, v0, format);
                    let high = high_word(words, base, j, v0, format);
                    #[unroll]
                    for t in 0..4usize {
                        let v = v0 + t;
                        let q = quant(low, high, bits, t as u32, v as u32, j as u32, format);
                        let wv = q * scale + offset;
                        let at = g * 32 + v;
                        a0 += wv * f32::cast_from(x[x0 + at]);
                        if comptime![tile > 1] {
                            a1 += wv * f32::cast_from(x[x1 + at]);
                            a2 += wv * f32::cast_from(x[x2 + at]);
                            a3 += wv * f32::cast_from(x[x3 + at]);
                        }
                    }
                }
            }
            g += units;
        }
        let mut sums = Shared::new_slice(comptime![UNITS * 4]);
        let u = UNIT_POS as usize;
        sums[u * 4] = a0;
        sums[u * 4 + 1] = a1;
        sums[u * 4 + 2] = a2;
        sums[u * 4 + 3] = a3;
        sync_cube();
        let mut half_units = units / 2;
        while half_units > 0 {
            if u < half_units {
                let o = (u + half_units) * 4;
                #[unroll]
                for r in 0..4usize {
                    let theirs = sums[o + r];
                    let mine = sums[u * 4 + r];
                    sums[u * 4 + r] = mine + theirs;
                }
            }
            sync_cube();
            half_units /= 2;
        }
        if u < tile && r0 + u < m {
            out[(r0 + u) * n + col] = F::cast_from(sums[u]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceKind;
    use crate::kernels::synthetic_blocks;

    fn device() -> Device {
        DeviceKind::Wgpu.burn().unwrap()
    }

    /// `x` `[m, k]`: small values of both signs, no two rows alike.
    fn activations(m: usize, k: usize) -> Vec<f32> {
        (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 61.0 + (i / k) as f32 * 0.01)
            .collect()
    }

    /// The reference: the dequantized matrix times `x` in f64, and the scale to compare at
    /// (the sum of |w·x| per output).
    fn reference(m: &PackedMatrix, x: &[f32], rows: usize) -> (Vec<f64>, Vec<f64>) {
        let w = m.dequantize();
        let k = m.cols;
        let mut y = vec![0.0; rows * m.rows];
        let mut scale = vec![0.0; rows * m.rows];
        for r in 0..rows {
            for n in 0..m.rows {
                for c in 0..k {
                    let p = f64::from(w[n * k + c]) * f64::from(x[r * k + c]);
                    y[r * m.rows + n] += p;
                    scale[r * m.rows + n] += p.abs();
                }
            }
        }
        (y, scale)
    }

    fn check(m: &PackedMatrix, rows: usize, dtype: BurnDType, tolerance: f64) {
        let device = device();
        let x = activations(rows, m.cols);
        let gpu = GpuMatrix::upload(m, &device, dtype);
        let xt =
            Tensor::<2>::from_data(TensorData::new(x.clone(), [rows, m.cols]), (&device, dtype));
        let y = gpu.forward(xt);
        assert_eq!(y.dims(), [rows, m.rows]);
        let y = y
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        let (want, scale) = reference(m, &x, rows);
        for (i, (&got, (&want, &scale))) in y.iter().zip(want.iter().zip(&scale)).enumerate() {
            let err = (f64::from(got) - want).abs();
            assert!(
                err <= tolerance * scale.max(1e-3),
                "{:?} at {i} of [{rows}, {}]: {got} against {want} (scale {scale})",
                m.ggml_types().collect::<Vec<_>>(),
                m.rows
            );
        }
    }

    fn matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> PackedMatrix {
        let values = usize::try_from(ty.block_size().unwrap()).unwrap();
        let data = synthetic_blocks(ty, rows * cols / values, seed).unwrap();
        PackedMatrix::from_gguf(ty, &data, rows, cols).unwrap()
    }

    const DECODED: [GgmlType; 7] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ];

    #[test]
    fn every_decoded_format_matches_the_reference_dequantizer() {
        for ty in DECODED {
            assert!(GpuFormat::of(ty).is_some());
            // Odd row counts, one and several tiles of x, rows past a tile's end.
            for (rows, cols) in [(37, 512), (5, 256)] {
                let m = matrix(ty, rows, cols, 7 + rows as u64);
                for xs in [1, 3, 4, 9] {
                    check(&m, xs, BurnDType::F32, 1e-5);
                }
            }
        }
    }

    #[test]
    fn short_rows_leave_units_idle_and_still_sum_right() {
        // 3 groups of 32 for 64 units.
        for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
            check(&matrix(ty, 11, 96, 3), 2, BurnDType::F32, 1e-5);
        }
        // Rows of one and two groups: fewer groups than a tile has rows of x.
        for cols in [32, 64] {
            for xs in [2, 3, 4, 9] {
                check(
                    &matrix(GgmlType::Q8_0, 7, cols, 5),
                    xs,
                    BurnDType::F32,
                    1e-5,
                );
            }
        }
    }

    #[test]
    fn formats_without_a_decoder_and_mixed_parts_work() {
        let q5k = matrix(GgmlType::Q5_K, 9, 256, 1);
        assert!(GpuFormat::of(GgmlType::Q5_K).is_none());
        check(&q5k, 2, BurnDType::F32, 1e-5);
        // A Q4_K_M file's fused projection: parts in different formats, one dense.
        let mixed = PackedMatrix::concat_rows(vec![
            matrix(GgmlType::Q4_K, 7, 256, 2),
            q5k,
            matrix(GgmlType::Q6_K, 5, 256, 3),
        ])
        .unwrap();
        check(&mixed, 3, BurnDType::F32, 1e-5);
    }

    #[test]
    fn big_matrices_go_up_in_parts_that_fit_a_binding() {
        // 37 rows of 16 Q4_1 blocks (320 bytes): 3 rows a part under 1000 bytes.
        let m = matrix(GgmlType::Q4_1, 37, 512, 4);
        let parts = split(&m.parts[0], 512, BurnDType::F32, 1000);
        assert_eq!(
            parts.iter().map(|p| p.rows).collect::<Vec<_>>()[..2],
            [3, 3]
        );
        assert_eq!(parts.iter().map(|p| p.rows).sum::<usize>(), 37);
        assert_eq!(parts.len(), 13);
        // A dense part is sized by its dequantized rows: 256 f32 values a row.
        let q5k = matrix(GgmlType::Q5_K, 9, 256, 1);
        let dense = split(&q5k.parts[0], 256, BurnDType::F32, 2048);
        assert_eq!(
            dense.iter().map(|p| p.rows).collect::<Vec<_>>(),
            [2, 2, 2, 2, 1]
        );
        // And the product over the parts is the whole matrix's.
        let device = device();
        for (m, limit) in [(&m, 1000), (&q5k, 2048)] {
            let gpu = GpuMatrix::upload_in(m, &device, BurnDType::F32, limit);
            assert!(gpu.parts.len() > 1);
            let x = activations(2, m.cols);
            let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [2, m.cols]), &device);
            let y = gpu
                .forward(xt)
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap();
            let (want, scale) = reference(m, &x, 2);
            for ((&got, &want), &scale) in y.iter().zip(&want).zip(&scale) {
                assert!((f64::from(got) - want).abs() <= 1e-5 * scale.max(1e-3));
            }
        }
    }

    #[test]
    fn more_rows_than_one_grid_dimension_holds() {
        check(
            &matrix(GgmlType::Q8_0, GRID_X + 3, 32, 5),
            1,
            BurnDType::F32,
            1e-5,
        );
    }

    #[test]
    fn f16_activations_accumulate_in_f32() {
        for ty in [GgmlType::Q4_0, GgmlType::Q4_K] {
            check(&matrix(ty, 13, 512, 9), 3, BurnDType::F16, 3e-3);
        }
    }
}
