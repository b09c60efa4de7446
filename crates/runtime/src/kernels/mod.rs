//! Kiln's CPU kernels for the products decode and prefill spend their time in: `y = x Wᵀ` for
//! any number of rows of `x`, reading `W` in place — GGUF blocks of every common format
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K…Q6_K) or f32 rows — on every core with the widest SIMD
//! the CPU has.
//!
//! Decode multiplies a few rows by every weight, so it is bound by reading the weights: kept in
//! their 2.6–8.5-bit blocks they are 4–12x fewer bytes than f32. Each block is decoded into
//! registers ([`formats`]) with the reference dequantizer's arithmetic and used at once for every
//! row of the tile of `x` in flight (up to [`Lanes::MAX_TILE`] rows: the decode is paid once per
//! tile, then one FMA per 16 values per row). Where a path's registers hold only short tiles
//! (AVX2: two rows), a batch of [`Lanes::BUFFER_FROM_ROWS`] or more decodes each weight row once
//! into an L1 buffer that every tile reads instead. Activations stay f32, so logits are those of
//! a dequantized f32 model up to the order of additions.
//!
//! That order is fixed: an output element accumulates position `c` of each 32-value group into
//! lane `c % 32` (one fused multiply-add per value, groups in order), then folds the 32 lanes
//! by [`lanes::tree_sum`]. [`lanes::Scalar`] does exactly that on arrays and is the reference;
//! the AVX-512 and AVX2 paths do the same lane-wise operations, so every path, tile size, batch
//! size, row position and thread count gives the same bits, and a sequence's logits do not
//! depend on what else is in the batch or which machine ran it.
//!
//! Why not `d·Σqᵢxᵢ + m·Σxᵢ` with `Σxᵢ` shared: folding `d` and `m` into the decoded values costs
//! two operations per 16 values once per tile, while the factored form adds a scale FMA per
//! block *per row*; and the dequantized values keep the reference's bits, which the factored
//! form would round differently.
//!
//! On a GPU the kernels are CubeCL's, in `gpu` (the `wgpu` feature): the packed matmul over
//! blocks on the device and paged attention.
//!
//! Rooms: [`lanes`] (the operations, and the reference), `x86` (AVX-512 and AVX2 lanes),
//! [`formats`] (one decoder per block format, written once over [`Lanes`]), [`packed`] (the
//! matrices). This file is the one dispatch point: [`Isa::active`] picks the path at run time —
//! never assumed at compile time, capped by `KILN_CPU_ISA` — and the work is split by rows of
//! `W` over rayon's pool.

mod attention;
mod formats;
#[cfg(feature = "wgpu")]
pub(crate) mod gpu;
mod lanes;
mod packed;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

pub use kiln_gguf::GgmlType;
use rayon::prelude::*;

pub(crate) use attention::Query;
use formats::{Format, GROUP};
use lanes::{Lanes, Scalar, tree_sum};
use packed::Part;
pub use packed::{PackedMatrix, synthetic_blocks};

/// The most rows of `x` `nn::Linear` sends through the kernel, prompts of up to 256 tokens
/// included; beyond, burn's GEMM over f32 (dequantized for the call when packed). Under
/// `kiln serve`'s allocator settings of the time (a 1 MiB mmap threshold; 8 MiB since) that
/// per-call copy was fresh pages every call: a 130-token prefill took 1.07 s on burn's GEMM
/// against 0.57 s here (AVX2, the default model); at 510 rows the kernel's `x` no longer stays
/// in L2 and burn's GEMM wins (2.4 s against 3.5; docs/perf.md). Not measured again since.
pub(crate) const GEMV_MAX_ROWS: usize = 256;

/// The environment variable that caps the instruction set: `avx512`, `avx2` or `scalar`.
pub const ISA_ENV: &str = "KILN_CPU_ISA";

/// An instruction set the kernels have a path for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsaKind {
    Scalar,
    Avx2,
    Avx512,
}

impl IsaKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Scalar, Self::Avx2, Self::Avx512]
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
    }
}

/// A path the kernels can run on this CPU: holding one proves the CPU has its instructions.
#[derive(Debug, Clone, Copy)]
pub struct Isa(IsaImpl);

#[derive(Debug, Clone, Copy)]
enum IsaImpl {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2(x86::Avx2),
    #[cfg(target_arch = "x86_64")]
    Avx512(pulp::x86::V4),
}

impl Isa {
    /// Every path this CPU can run, widest last.
    pub fn available() -> Vec<Self> {
        let mut all = vec![Self(IsaImpl::Scalar)];
        #[cfg(target_arch = "x86_64")]
        {
            all.extend(x86::Avx2::try_new().map(|s| Self(IsaImpl::Avx2(s))));
            all.extend(pulp::x86::V4::try_new().map(|s| Self(IsaImpl::Avx512(s))));
        }
        all
    }

    /// The widest path at most `cap`.
    pub fn best(cap: Option<IsaKind>) -> Self {
        let cap = cap.unwrap_or(IsaKind::Avx512);
        Self::available()
            .into_iter()
            .rfind(|isa| isa.kind() as u8 <= cap as u8)
            .unwrap_or(Self(IsaImpl::Scalar))
    }

    /// The process's path: the widest the CPU has, capped by `KILN_CPU_ISA` (read once; a value
    /// [`requested`](Self::requested) rejects caps nothing).
    pub fn active() -> Self {
        static ACTIVE: OnceLock<Isa> = OnceLock::new();
        *ACTIVE.get_or_init(|| Self::best(Self::requested().ok().flatten()))
    }

    /// The cap `KILN_CPU_ISA` asks for, or why its value means nothing (the server reports it).
    pub fn requested() -> Result<Option<IsaKind>, String> {
        match std::env::var(ISA_ENV) {
            Err(_) => Ok(None),
            Ok(v) => IsaKind::parse(&v)
                .map(Some)
                .ok_or_else(|| format!("{ISA_ENV}={v:?} is not scalar, avx2 or avx512")),
        }
    }

    pub fn kind(self) -> IsaKind {
        match self.0 {
            IsaImpl::Scalar => IsaKind::Scalar,
            #[cfg(target_arch = "x86_64")]
            IsaImpl::Avx2(_) => IsaKind::Avx2,
            #[cfg(target_arch = "x86_64")]
            IsaImpl::Avx512(_) => IsaKind::Avx512,
        }
    }

    /// `y = x Wᵀ` for `m` rows of `x` (`[m, cols]` row-major): returns `[m, rows]` row-major.
    /// The caller checks the shapes; a mismatch gives zeros, not a panic.
    pub fn matmul_t(self, w: Weight<'_>, x: &[f32], m: usize) -> Vec<f32> {
        let (n, k) = w.dims();
        if m == 0 || x.len() != m * k || k == 0 {
            return vec![0.0; m * n];
        }
        // Results are gathered `[rows, m]` (a task owns whole rows of W) and transposed.
        let mut out_t = vec![0.0f32; n * m];
        let threads = rayon::current_num_threads().max(1);
        let rows_per_task = n.div_ceil(threads * 8).max(4);
        let mut tasks = Vec::new();
        let mut rest = out_t.as_mut_slice();
        let parts: Vec<Rows<'_>> = match w {
            Weight::F32(dense) => vec![Rows::F32(dense)],
            Weight::Packed(p) => p.parts.iter().map(Rows::Packed).collect(),
        };
        for rows in parts {
            let (here, later) = rest.split_at_mut((rows.count() * m).min(rest.len()));
            rest = later;
            for (t, out) in here.chunks_mut(rows_per_task * m).enumerate() {
                tasks.push(Task {
                    rows,
                    first: t * rows_per_task,
                    out,
                });
            }
        }
        let tiles = XTile::split(x, m, k, self.max_tile());
        tasks
            .into_par_iter()
            .for_each(|task| self.run(task, (x, &tiles), m, k));
        if m == 1 {
            return out_t;
        }
        // In blocks of 16 weight rows, so each row of `out` is written 16 values at a time
        // (element by element, every write landed on another cache line).
        let mut out = vec![0.0f32; m * n];
        for (b, block) in out_t.chunks(16 * m).enumerate() {
            let r0 = b * 16;
            for (i, out_row) in out.chunks_exact_mut(n).enumerate() {
                let dst = out_row.get_mut(r0..).unwrap_or_default();
                for (o, vals) in dst.iter_mut().zip(block.chunks_exact(m)) {
                    *o = vals[i];
                }
            }
        }
        out
    }

    /// Rows of `x` this path's kernel keeps in registers at once.
    fn max_tile(self) -> usize {
        match self.0 {
            IsaImpl::Scalar => <Scalar as Lanes>::MAX_TILE,
            #[cfg(target_arch = "x86_64")]
            IsaImpl::Avx2(_) => <x86::Avx2 as Lanes>::MAX_TILE,
            #[cfg(target_arch = "x86_64")]
            IsaImpl::Avx512(_) => <pulp::x86::V4 as Lanes>::MAX_TILE,
        }
    }

    /// Runs `op` on this path: its generic code, compiled for the path's instructions.
    fn dispatch<Op: OnLanes>(self, op: Op) -> Op::Output {
        match self.0 {
            IsaImpl::Scalar => op.run(Scalar),
            #[cfg(target_arch = "x86_64")]
            IsaImpl::Avx2(simd) => simd.vectorize(
                #[inline(always)]
                || op.run(simd),
            ),
            #[cfg(target_arch = "x86_64")]
            IsaImpl::Avx512(simd) => simd.vectorize(
                #[inline(always)]
                || op.run(simd),
            ),
        }
    }

    /// Runs one task on this path.
    fn run(self, task: Task<'_>, x: (&[f32], &[XTile]), m: usize, k: usize) {
        self.dispatch(TaskOnX { task, x, m, k });
    }
}

/// Work written once over [`Lanes`], for [`Isa::dispatch`] (a closure cannot be generic over
/// the lanes).
trait OnLanes {
    type Output;
    fn run<L: Lanes>(self, l: L) -> Self::Output;
}

/// A [`Task`] with the rows of `x` it multiplies.
struct TaskOnX<'a, 'x> {
    task: Task<'a>,
    x: (&'x [f32], &'x [XTile]),
    m: usize,
    k: usize,
}

impl OnLanes for TaskOnX<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn run<L: Lanes>(self, l: L) {
        self.task.run(l, self.x, self.m, self.k);
    }
}

/// `y = x Wᵀ` on the process's path ([`Isa::active`]).
pub fn matmul_t(w: Weight<'_>, x: &[f32], m: usize) -> Vec<f32> {
    Isa::active().matmul_t(w, x, m)
}

/// A dense f32 matrix `[rows, cols]`, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Dense<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
}

/// The weights a kernel call reads: f32 rows, or packed blocks.
#[derive(Debug, Clone, Copy)]
pub enum Weight<'a> {
    F32(Dense<'a>),
    Packed(&'a PackedMatrix),
}

impl Weight<'_> {
    fn dims(&self) -> (usize, usize) {
        match self {
            Self::F32(d) => (d.rows, d.cols),
            Self::Packed(p) => (p.rows, p.cols),
        }
    }
}

/// A run of rows of `W` in one format: a dense matrix, or one part of a packed one.
#[derive(Debug, Clone, Copy)]
enum Rows<'a> {
    F32(Dense<'a>),
    Packed(&'a Part),
}

impl Rows<'_> {
    fn count(&self) -> usize {
        match self {
            Self::F32(d) => d.rows,
            Self::Packed(p) => p.rows,
        }
    }
}

/// Rows `first..` of one run, with their results `[rows, m]` in `out`.
#[derive(Debug)]
struct Task<'a> {
    rows: Rows<'a>,
    first: usize,
    out: &'a mut [f32],
}

impl Task<'_> {
    #[inline(always)]
    fn run<L: Lanes>(self, l: L, x: (&[f32], &[XTile]), m: usize, k: usize) {
        let Self { rows, first, out } = self;
        match rows {
            Rows::F32(Dense { data, cols, .. }) => {
                let full = cols / GROUP * GROUP;
                let row = |r: usize| {
                    let row = data.get(r * cols..(r + 1) * cols).unwrap_or_default();
                    let (body, tail) = row.split_at(full.min(row.len()));
                    (body.as_chunks::<GROUP>().0, tail)
                };
                tiles::<L, formats::F32>(l, row, first, x, m, k, out);
            }
            Rows::Packed(part) => {
                use GgmlType as T;
                let data = part.data.as_slice();
                match part.ty {
                    T::Q4_0 => packed_rows::<L, formats::Q4_0>(l, data, first, x, m, k, out),
                    T::Q4_1 => packed_rows::<L, formats::Q4_1>(l, data, first, x, m, k, out),
                    T::Q5_0 => packed_rows::<L, formats::Q5_0>(l, data, first, x, m, k, out),
                    T::Q5_1 => packed_rows::<L, formats::Q5_1>(l, data, first, x, m, k, out),
                    T::Q8_0 => packed_rows::<L, formats::Q8_0>(l, data, first, x, m, k, out),
                    T::Q2_K => packed_rows::<L, formats::Q2_K>(l, data, first, x, m, k, out),
                    T::Q3_K => packed_rows::<L, formats::Q3_K>(l, data, first, x, m, k, out),
                    T::Q4_K => packed_rows::<L, formats::Q4_K>(l, data, first, x, m, k, out),
                    T::Q5_K => packed_rows::<L, formats::Q5_K>(l, data, first, x, m, k, out),
                    T::Q6_K => packed_rows::<L, formats::Q6_K>(l, data, first, x, m, k, out),
                    // A part is only ever made of the formats above (`packed::block_shape`).
                    _ => {}
                }
            }
        }
    }
}

/// `$body` with `$m` the const generic for a tile of `$size` rows (one of the sizes
/// [`XTile::split`] makes), so each tile size runs code compiled for it.
macro_rules! by_tile_size {
    ($size:expr, $m:ident => $body:expr) => {
        match $size {
            8 => {
                const $m: usize = 8;
                $body
            }
            4 => {
                const $m: usize = 4;
                $body
            }
            2 => {
                const $m: usize = 2;
                $body
            }
            _ => {
                const $m: usize = 1;
                $body
            }
        }
    };
}

/// [`tiles`] over rows of blocks of format `Fm`.
#[inline(always)]
fn packed_rows<L: Lanes, Fm: Format>(
    l: L,
    data: &[u8],
    first: usize,
    x: (&[f32], &[XTile]),
    m: usize,
    k: usize,
    out: &mut [f32],
) {
    let blocks: &[Fm::Block] = bytemuck::try_cast_slice(data).unwrap_or_default();
    let per_row = k / Fm::VALUES;
    let row = |r: usize| {
        let row: &[Fm::Block] = blocks
            .get(r * per_row..(r + 1) * per_row)
            .unwrap_or_default();
        (row, &[][..])
    };
    tiles::<L, Fm>(l, row, first, x, m, k, out);
}

/// Bytes of `x` a tile keeps in the L1 cache while a stretch of every weight row of a task
/// goes through it: longer rows are done in stretches of columns (the accumulators wait in
/// memory between stretches; the order of operations per lane does not change).
const L1_TILE_BYTES: usize = 16 << 10;

/// One group of 32 values of `x`, as the two halves the lanes load.
type XGroup = [[f32; 16]; 2];

/// Rows `first..` of `W` (`row(r)` gives row `r`'s blocks and any f32 tail past the last whole
/// group) times every row of `x`, into `out` (`[rows, m]`): the rows of `x` go in `tiles` (of
/// at most `L::MAX_TILE`), each weight block decoded once per tile. A row of `x` gets the same
/// operations whatever tile it lands in.
#[inline(always)]
fn tiles<'w, L: Lanes, Fm: Format>(
    l: L,
    row: impl Fn(usize) -> (&'w [Fm::Block], &'w [f32]),
    first: usize,
    (x, tiles): (&[f32], &[XTile]),
    m: usize,
    k: usize,
    out: &mut [f32],
) where
    Fm::Block: 'w,
{
    if Fm::DECODES && m >= L::BUFFER_FROM_ROWS {
        return buffered::<L, Fm>(l, row, first, (x, tiles), m, k, out);
    }
    for tile in tiles {
        let task = TileRows {
            first,
            start: tile.start,
            m,
            k,
            xs: tile.rows_of(x, k),
        };
        let packed = tile.packed.as_slice();
        by_tile_size!(tile.size, M => task.run::<L, Fm, M>(l, &row, packed, out));
    }
}

/// [`tiles`] for many rows of `x`: each weight row is decoded once, whole, into a buffer that
/// every tile then reads (in L1 for rows up to 4,096 values), instead of once per tile. Each
/// lane still accumulates the row's groups in order, so the bits are [`tiles`]'s.
#[inline(always)]
fn buffered<'w, L: Lanes, Fm: Format>(
    l: L,
    row: impl Fn(usize) -> (&'w [Fm::Block], &'w [f32]),
    first: usize,
    (x, tiles): (&[f32], &[XTile]),
    m: usize,
    k: usize,
    out: &mut [f32],
) where
    Fm::Block: 'w,
{
    let zero = l.splat(0.0);
    let mut decoded: Vec<[L::F; 2]> = vec![[zero; 2]; k / GROUP];
    for r in 0..out.len() / m {
        let (blocks, tail) = row(first + r);
        let mut g = 0;
        for b in blocks {
            Fm::decode(
                l,
                b,
                #[inline(always)]
                |w| {
                    if let Some(slot) = decoded.get_mut(g) {
                        *slot = w;
                    }
                    g += 1;
                },
            );
        }
        let w = decoded.get(..g).unwrap_or_default();
        let out_row = out.get_mut(r * m..(r + 1) * m).unwrap_or_default();
        for tile in tiles {
            let xs = (tail, tile.rows_of(x, k), k);
            let packed = tile.packed.as_slice();
            let dst = out_row
                .get_mut(tile.start..tile.start + tile.size)
                .unwrap_or_default();
            by_tile_size!(tile.size, M => dot_decoded::<L, M>(l, w, packed, xs, dst));
        }
    }
}

/// One decoded weight row `w` (its groups) times a tile of `M` rows of `x` (`packed` by group,
/// `xs` as given, for the f32 `tail`): the `M` sums into `out`.
#[inline(always)]
fn dot_decoded<L: Lanes, const M: usize>(
    l: L,
    w: &[[L::F; 2]],
    packed: &[XGroup],
    (tail, xs, k): (&[f32], &[f32], usize),
    out: &mut [f32],
) {
    let zero = l.splat(0.0);
    let (x_groups, _) = packed.as_chunks::<M>();
    let mut acc = [[zero; 2]; M];
    for (w, xg) in w.iter().zip(x_groups) {
        for (acc, [x0, x1]) in acc.iter_mut().zip(xg) {
            acc[0] = l.fma(w[0], l.load(x0), acc[0]);
            acc[1] = l.fma(w[1], l.load(x1), acc[1]);
        }
    }
    let sums = finish::<L, M>(l, &acc, tail, xs, k, w.len() * GROUP);
    if let Some(out) = out.get_mut(..M) {
        out.copy_from_slice(&sums);
    }
}

/// Rows `start..start + size` of `x` interleaved by group (`[group][row]`): one bounds check
/// and one base pointer per group for all the rows of a tile, and a stretch of columns
/// contiguous. Made once per call and shared by every task.
#[derive(Debug)]
struct XTile {
    start: usize,
    size: usize,
    packed: Vec<XGroup>,
}

impl XTile {
    /// This tile's rows of `x` (`[m, k]`), as given.
    fn rows_of<'x>(&self, x: &'x [f32], k: usize) -> &'x [f32] {
        x.get(self.start * k..(self.start + self.size) * k)
            .unwrap_or_default()
    }

    /// `x` (`[m, k]`) in tiles of at most `max` rows.
    fn split(x: &[f32], m: usize, k: usize, max: usize) -> Vec<Self> {
        let groups = k / GROUP;
        let mut tiles = Vec::new();
        let mut start = 0;
        while start < m {
            let size = [8, 4, 2, 1]
                .into_iter()
                .find(|&t| t <= max && t <= m - start)
                .unwrap_or(1);
            let mut packed = vec![[[0.0; 16]; 2]; groups * size];
            for i in 0..size {
                let row = x
                    .get((start + i) * k..(start + i + 1) * k)
                    .unwrap_or_default();
                for (g, values) in row.as_chunks::<GROUP>().0.iter().enumerate() {
                    if let Some(slot) = packed.get_mut(g * size + i) {
                        *slot = bytemuck::cast(*values);
                    }
                }
            }
            tiles.push(Self {
                start,
                size,
                packed,
            });
            start += size;
        }
        tiles
    }
}

/// One tile of rows of `x` (`start..start + M` of `m`, values `xs`) against a task's rows of W.
struct TileRows<'a> {
    first: usize,
    start: usize,
    m: usize,
    k: usize,
    xs: &'a [f32],
}

impl TileRows<'_> {
    #[inline(always)]
    fn run<'w, L: Lanes, Fm: Format, const M: usize>(
        self,
        l: L,
        row: &impl Fn(usize) -> (&'w [Fm::Block], &'w [f32]),
        packed: &[XGroup],
        out: &mut [f32],
    ) where
        Fm::Block: 'w,
    {
        let Self {
            first,
            start,
            m,
            k,
            xs,
        } = self;
        let (x_groups, _) = packed.as_chunks::<M>();
        let n_rows = out.len() / m;
        // Columns per stretch: whole blocks, as many as keep the tile's x in L1.
        let per_stretch = (L1_TILE_BYTES / (M * GROUP * 4) / (Fm::VALUES / GROUP)).max(1);
        let n_blocks = k / Fm::VALUES;
        let zero = l.splat(0.0);
        let mut waiting: Vec<[[L::F; 2]; M]> = Vec::new();
        if n_blocks > per_stretch {
            waiting.resize(n_rows, [[zero; 2]; M]);
        }
        // Weight rows of a 32-value format go `per_pass` at a time when the tile is short: their
        // accumulators are independent chains of FMAs, which one row's two would leave waiting
        // on latency. A K-quant block is eight groups: its own chains are long enough, and two
        // rows' decodes at once measured slower.
        let per_pass = if Fm::VALUES == GROUP {
            (L::MAX_TILE / M).clamp(1, 4)
        } else {
            1
        };
        let pass = Pass {
            first,
            start,
            m,
            k,
            xs,
            x_groups,
        };
        let mut b0 = 0;
        loop {
            let b1 = (b0 + per_stretch).min(n_blocks);
            let stretch = (b0, b1, b1 >= n_blocks);
            let mut r = 0;
            while r < n_rows {
                let count = if r + per_pass <= n_rows { per_pass } else { 1 };
                match count {
                    4 => pass.rows::<L, Fm, 4>(l, row, r, stretch, &mut waiting, out),
                    2 => pass.rows::<L, Fm, 2>(l, row, r, stretch, &mut waiting, out),
                    _ => pass.rows::<L, Fm, 1>(l, row, r, stretch, &mut waiting, out),
                }
                r += count;
            }
            if stretch.2 {
                break;
            }
            b0 = b1;
        }
    }
}

/// What every pass over a few weight rows of one tile shares.
struct Pass<'a, const M: usize> {
    first: usize,
    start: usize,
    m: usize,
    k: usize,
    xs: &'a [f32],
    x_groups: &'a [[XGroup; M]],
}

impl<const M: usize> Pass<'_, M> {
    /// Weight rows `r..r + R` (of the task) over blocks `b0..b1` (`stretch`; `last` says the
    /// row ends there): accumulators from `waiting` unless this is the first stretch, back to it
    /// unless the last, where the sums go to `out`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn rows<'w, L: Lanes, Fm: Format, const R: usize>(
        &self,
        l: L,
        row: &impl Fn(usize) -> (&'w [Fm::Block], &'w [f32]),
        r: usize,
        (b0, b1, last): (usize, usize, bool),
        waiting: &mut [[[L::F; 2]; M]],
        out: &mut [f32],
    ) where
        Fm::Block: 'w,
    {
        let zero = l.splat(0.0);
        let mut rows: [(&[Fm::Block], &[f32]); R] = [(&[], &[]); R];
        let mut acc = [[[zero; 2]; M]; R];
        for (i, (rows, acc)) in rows.iter_mut().zip(&mut acc).enumerate() {
            *rows = row(self.first + r + i);
            if b0 > 0
                && let Some(w) = waiting.get(r + i)
            {
                *acc = *w;
            }
        }
        let groups_per_block = Fm::VALUES / GROUP;
        for bi in b0..b1 {
            for ((blocks, _), acc) in rows.iter().zip(&mut acc) {
                let Some(b) = blocks.get(bi) else { continue };
                let mut g = bi * groups_per_block;
                Fm::decode(
                    l,
                    b,
                    #[inline(always)]
                    |w| {
                        if let Some(xg) = self.x_groups.get(g) {
                            for (acc, [x0, x1]) in acc.iter_mut().zip(xg) {
                                acc[0] = l.fma(w[0], l.load(x0), acc[0]);
                                acc[1] = l.fma(w[1], l.load(x1), acc[1]);
                            }
                        }
                        g += 1;
                    },
                );
            }
        }
        let n_blocks = self.k / Fm::VALUES;
        for (i, ((_, tail), acc)) in rows.iter().zip(&acc).enumerate() {
            if !last {
                if let Some(slot) = waiting.get_mut(r + i) {
                    *slot = *acc;
                }
                continue;
            }
            let sums = finish::<L, M>(l, acc, tail, self.xs, self.k, n_blocks * Fm::VALUES);
            let at = (r + i) * self.m + self.start;
            if let Some(out) = out.get_mut(at..at + M) {
                out.copy_from_slice(&sums);
            }
        }
    }
}

/// The tile's sums from its accumulators, with the f32 `tail` past column `done` (its values
/// take lanes 0.. as they would in a group) folded in first.
#[inline(always)]
fn finish<L: Lanes, const M: usize>(
    l: L,
    acc: &[[L::F; 2]; M],
    tail: &[f32],
    xs: &[f32],
    k: usize,
    done: usize,
) -> [f32; M] {
    let mut sums = [0.0f32; M];
    for (i, (sum, acc)) in sums.iter_mut().zip(acc).enumerate() {
        *sum = if tail.is_empty() {
            l.sum(acc[0], acc[1])
        } else {
            let mut lanes = [0.0f32; 32];
            let (lo, hi) = lanes.split_at_mut(16);
            lo.copy_from_slice(&l.store(acc[0]));
            hi.copy_from_slice(&l.store(acc[1]));
            let x_tail = xs.get(i * k + done..(i + 1) * k).unwrap_or_default();
            for ((lane, &w), &x) in lanes.iter_mut().zip(tail).zip(x_tail) {
                *lane = w.mul_add(x, *lane);
            }
            tree_sum(&lanes)
        };
    }
    sums
}

#[cfg(test)]
mod tests {
    use kiln_gguf::GgmlType;

    use super::*;
    use crate::quant::QuantError;

    const ALL: [GgmlType; 10] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    fn blocks(ty: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
        packed::synthetic_blocks(ty, n_blocks, seed).unwrap()
    }

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        // Q8_0's quants are plain random bytes; its scales are not read here.
        packed::synthetic_blocks(GgmlType::Q8_0, n.div_ceil(34), seed).unwrap()[..n].to_vec()
    }

    fn cols_for(ty: GgmlType) -> usize {
        let (values, _) = packed::block_shape(ty).unwrap();
        // Several blocks — more than one stretch of columns for tiles of 4 and 8 rows — and for
        // the 32-value formats an odd number of them.
        if values == 256 { 1280 } else { 1184 }
    }

    fn x_values(m: usize, k: usize, seed: u64) -> Vec<f32> {
        bytes(m * k, seed)
            .into_iter()
            .map(|b| (f32::from(b) - 127.5) / 64.0)
            .collect()
    }

    /// `x Wᵀ` in f64, and for each element the sum of its terms' magnitudes (the scale of an
    /// f32 sum's rounding).
    fn reference_product(w: &[f32], x: &[f32], n: usize, k: usize, m: usize) -> Vec<(f32, f64)> {
        let mut out = vec![(0.0f32, 0.0f64); m * n];
        for i in 0..m {
            for r in 0..n {
                let (mut s, mut size) = (0.0f64, 0.0f64);
                for c in 0..k {
                    let t = f64::from(w[r * k + c]) * f64::from(x[i * k + c]);
                    s += t;
                    size += t.abs();
                }
                out[i * n + r] = (s as f32, size);
            }
        }
        out
    }

    /// Within f32 rounding of a sum of terms of total magnitude `size`.
    fn close(got: f32, (want, size): (f32, f64)) -> bool {
        f64::from((got - want).abs()) <= 1e-6 * (1.0 + size)
    }

    fn scalar() -> Isa {
        Isa(IsaImpl::Scalar)
    }

    /// Every block of `data` through `Fm`'s decoder on `l`.
    fn decode_all<L: Lanes, Fm: Format>(l: L, data: &[u8]) -> Vec<f32> {
        let blocks: &[Fm::Block] = bytemuck::cast_slice(data);
        let mut out = Vec::new();
        for b in blocks {
            Fm::decode(
                l,
                b,
                #[inline(always)]
                |w| {
                    out.extend(l.store(w[0]));
                    out.extend(l.store(w[1]));
                },
            );
        }
        out
    }

    fn decode_on<L: Lanes>(l: L, ty: GgmlType, data: &[u8]) -> Vec<f32> {
        use GgmlType as T;
        match ty {
            T::Q4_0 => decode_all::<L, formats::Q4_0>(l, data),
            T::Q4_1 => decode_all::<L, formats::Q4_1>(l, data),
            T::Q5_0 => decode_all::<L, formats::Q5_0>(l, data),
            T::Q5_1 => decode_all::<L, formats::Q5_1>(l, data),
            T::Q8_0 => decode_all::<L, formats::Q8_0>(l, data),
            T::Q2_K => decode_all::<L, formats::Q2_K>(l, data),
            T::Q3_K => decode_all::<L, formats::Q3_K>(l, data),
            T::Q4_K => decode_all::<L, formats::Q4_K>(l, data),
            T::Q5_K => decode_all::<L, formats::Q5_K>(l, data),
            _ => decode_all::<L, formats::Q6_K>(l, data),
        }
    }

    fn decode(isa: Isa, ty: GgmlType, data: &[u8]) -> Vec<f32> {
        match isa.0 {
            IsaImpl::Scalar => decode_on(Scalar, ty, data),
            #[cfg(target_arch = "x86_64")]
            IsaImpl::Avx2(s) => s.vectorize(|| decode_on(s, ty, data)),
            #[cfg(target_arch = "x86_64")]
            IsaImpl::Avx512(s) => s.vectorize(|| decode_on(s, ty, data)),
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn every_path_decodes_every_format_to_the_reference_dequantizers_bits() {
        for ty in ALL {
            let (values, _) = packed::block_shape(ty).unwrap();
            let data = blocks(ty, 6, 7);
            let reference = crate::quant::dequantize_to_vec(ty, &data, 6 * values).unwrap();
            for isa in Isa::available() {
                let got = decode(isa, ty, &data);
                assert_eq!(bits(&got), bits(&reference), "{ty} on {:?}", isa.kind());
            }
        }
    }

    #[test]
    fn the_scalar_reference_is_the_dot_product_of_the_dequantized_rows() {
        for ty in ALL {
            let (n, k) = (13, cols_for(ty));
            let data = blocks(ty, n * k / packed::block_shape(ty).unwrap().0, 11);
            let dense = crate::quant::dequantize_to_vec(ty, &data, n * k).unwrap();
            let packed = PackedMatrix::from_gguf(ty, &data, n, k).unwrap();
            for m in [1, 3, 9] {
                let x = x_values(m, k, 99);
                let want = reference_product(&dense, &x, n, k, m);
                let got = scalar().matmul_t(Weight::Packed(&packed), &x, m);
                for (&g, &w) in got.iter().zip(&want) {
                    assert!(close(g, w), "{ty} m={m}: {g} vs {w:?}");
                }
            }
        }
    }

    #[test]
    fn every_path_and_batch_size_gives_the_scalar_references_bits() {
        for ty in ALL {
            let (n, k) = (19, cols_for(ty));
            let data = blocks(ty, n * k / packed::block_shape(ty).unwrap().0, 5);
            let packed = PackedMatrix::from_gguf(ty, &data, n, k).unwrap();
            let x = x_values(70, k, 3);
            let reference = scalar().matmul_t(Weight::Packed(&packed), &x, 70);
            for isa in Isa::available() {
                for m in [1, 2, 3, 5, 8, 9, 16, 17, 33, 64, 70] {
                    let got = isa.matmul_t(Weight::Packed(&packed), &x[..m * k], m);
                    assert_eq!(
                        bits(&got),
                        bits(&reference[..m * n]),
                        "{ty} on {:?}, m={m}",
                        isa.kind()
                    );
                }
                // A row alone is the same row among others.
                let alone = isa.matmul_t(Weight::Packed(&packed), &x[40 * k..41 * k], 1);
                assert_eq!(bits(&alone), bits(&reference[40 * n..41 * n]));
            }
        }
    }

    /// `tiles` and `buffered` on the reference lanes, whichever a path would choose.
    fn both_ways<Fm: Format>(
        data: &[u8],
        n: usize,
        k: usize,
        x: &[f32],
        m: usize,
    ) -> [Vec<u32>; 2] {
        let blocks: &[Fm::Block] = bytemuck::cast_slice(data);
        let per_row = k / Fm::VALUES;
        let row = |r: usize| (&blocks[r * per_row..(r + 1) * per_row], &[][..]);
        let split = XTile::split(x, m, k, <Scalar as Lanes>::MAX_TILE);
        let mut in_registers = vec![0.0; n * m];
        let mut from_buffer = vec![0.0; n * m];
        tiles::<Scalar, Fm>(Scalar, row, 0, (x, &split), m, k, &mut in_registers);
        buffered::<Scalar, Fm>(Scalar, row, 0, (x, &split), m, k, &mut from_buffer);
        [bits(&in_registers), bits(&from_buffer)]
    }

    #[test]
    fn a_row_decoded_once_into_a_buffer_gives_the_bits_of_one_decoded_per_tile() {
        use GgmlType as T;
        // The reference lanes never buffer (`BUFFER_FROM_ROWS`): here both ways are forced.
        assert_eq!(<Scalar as Lanes>::BUFFER_FROM_ROWS, usize::MAX);
        for ty in ALL {
            let (n, k) = (7, cols_for(ty));
            let data = blocks(ty, n * k / packed::block_shape(ty).unwrap().0, 11);
            for m in [1, 3, 4, 13] {
                let x = x_values(m, k, 6);
                let [a, b] = match ty {
                    T::Q4_0 => both_ways::<formats::Q4_0>(&data, n, k, &x, m),
                    T::Q4_1 => both_ways::<formats::Q4_1>(&data, n, k, &x, m),
                    T::Q5_0 => both_ways::<formats::Q5_0>(&data, n, k, &x, m),
                    T::Q5_1 => both_ways::<formats::Q5_1>(&data, n, k, &x, m),
                    T::Q8_0 => both_ways::<formats::Q8_0>(&data, n, k, &x, m),
                    T::Q2_K => both_ways::<formats::Q2_K>(&data, n, k, &x, m),
                    T::Q3_K => both_ways::<formats::Q3_K>(&data, n, k, &x, m),
                    T::Q4_K => both_ways::<formats::Q4_K>(&data, n, k, &x, m),
                    T::Q5_K => both_ways::<formats::Q5_K>(&data, n, k, &x, m),
                    _ => both_ways::<formats::Q6_K>(&data, n, k, &x, m),
                };
                assert_eq!(a, b, "{ty}, m={m}");
            }
        }
    }

    #[test]
    fn the_thread_count_does_not_change_a_bit() {
        let ty = GgmlType::Q4_K;
        let (n, k) = (300, 512);
        let data = blocks(ty, n * k / 256, 9);
        let packed = PackedMatrix::from_gguf(ty, &data, n, k).unwrap();
        let x = x_values(5, k, 1);
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| matmul_t(Weight::Packed(&packed), &x, 5))
        };
        let one = run(1);
        for threads in [2, 3, 7] {
            assert_eq!(bits(&run(threads)), bits(&one), "{threads} threads");
        }
    }

    #[test]
    fn f32_rows_of_any_width_match_on_every_path() {
        for (n, k) in [(3, 13), (5, 32), (7, 45), (4, 100)] {
            let w: Vec<f32> = (0..n * k).map(|i| (i % 17) as f32 * 0.25 - 2.0).collect();
            let weight = Weight::F32(Dense {
                data: &w,
                rows: n,
                cols: k,
            });
            let x = x_values(11, k, 4);
            let want = reference_product(&w, &x, n, k, 11);
            let reference = scalar().matmul_t(weight, &x, 11);
            for (&g, &w) in reference.iter().zip(&want) {
                assert!(close(g, w), "{n}x{k}: {g} vs {w:?}");
            }
            for isa in Isa::available() {
                for m in [1, 2, 11] {
                    let got = isa.matmul_t(weight, &x[..m * k], m);
                    assert_eq!(bits(&got), bits(&reference[..m * n]), "{n}x{k} m={m}");
                }
            }
        }
    }

    #[test]
    fn a_stack_of_formats_is_its_parts_one_after_another() {
        let k = 256;
        let parts: Vec<PackedMatrix> = [
            (GgmlType::Q4_K, 5),
            (GgmlType::Q6_K, 3),
            (GgmlType::Q8_0, 4),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (ty, rows))| {
            let values = packed::block_shape(ty).unwrap().0;
            PackedMatrix::from_gguf(ty, &blocks(ty, rows * k / values, i as u64 + 1), rows, k)
                .unwrap()
        })
        .collect();
        let stacked = PackedMatrix::concat_rows(parts.clone()).unwrap();
        assert_eq!(stacked.rows, 12);
        assert_eq!(
            stacked.ggml_types().collect::<Vec<_>>(),
            [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0]
        );
        let dense: Vec<f32> = parts.iter().flat_map(PackedMatrix::dequantize).collect();
        assert_eq!(bits(&stacked.dequantize()), bits(&dense));
        assert_eq!(
            bits(&stacked.gather_rows(&[6, 0, 11])),
            bits(&[&dense[6 * k..7 * k], &dense[..k], &dense[11 * k..]].concat())
        );
        let x = x_values(3, k, 8);
        let got = matmul_t(Weight::Packed(&stacked), &x, 3);
        let by_part: Vec<Vec<f32>> = parts
            .iter()
            .map(|p| matmul_t(Weight::Packed(p), &x, 3))
            .collect();
        for i in 0..3 {
            let row: Vec<f32> = by_part
                .iter()
                .zip([5, 3, 4])
                .flat_map(|(p, rows)| p[i * rows..(i + 1) * rows].to_vec())
                .collect();
            assert_eq!(bits(&got[i * 12..(i + 1) * 12]), bits(&row));
        }
        // A permutation moves whole rows, across parts too.
        let order = [11, 0, 5, 6, 1];
        let permuted = stacked.permute_rows(&order);
        let want: Vec<f32> = order
            .iter()
            .flat_map(|&r| dense[r * k..(r + 1) * k].to_vec())
            .collect();
        assert_eq!(bits(&permuted.dequantize()), bits(&want));
        let other =
            PackedMatrix::from_gguf(GgmlType::Q8_0, &blocks(GgmlType::Q8_0, 4, 1), 1, 128).unwrap();
        assert!(PackedMatrix::concat_rows(vec![stacked, other]).is_none());
    }

    #[test]
    fn a_table_lookup_reads_the_low_four_bits_on_every_path() {
        let table: [f32; 16] = std::array::from_fn(|i| i as f32 * -1.5 + 0.25);
        // Indices with bits above the low four set (a byte, a shifted byte), in every lane.
        for seed in 0..64i32 {
            let idx: [i32; 16] = std::array::from_fn(|j| (seed * 37 + j as i32 * 101) & 0xFF);
            let want = Scalar.lookup16(table, idx);
            assert_eq!(want, idx.map(|i| table[(i & 15) as usize]));
            for isa in Isa::available() {
                let got = match isa.0 {
                    IsaImpl::Scalar => want,
                    #[cfg(target_arch = "x86_64")]
                    IsaImpl::Avx2(s) => {
                        s.vectorize(|| s.store(s.lookup16(s.load(&table), bytemuck::cast(idx))))
                    }
                    #[cfg(target_arch = "x86_64")]
                    IsaImpl::Avx512(s) => {
                        s.vectorize(|| s.store(s.lookup16(s.load(&table), bytemuck::cast(idx))))
                    }
                };
                assert_eq!(bits(&got), bits(&want), "seed {seed} on {:?}", isa.kind());
            }
        }
    }

    #[test]
    fn f16_scales_convert_exactly_as_half_does() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32();
            assert_eq!(lanes::f16_to_f32(h).to_bits(), want.to_bits(), "{h:#06x}");
            // A pair: `h` low, another value high.
            let pair = u32::from(h) | u32::from(h.rotate_left(5) ^ 0x8001) << 16;
            let high = half::f16::from_bits((pair >> 16) as u16).to_f32();
            for isa in Isa::available() {
                // The scalar, every lane of the splat, and every lane of the pair's halves.
                fn all<L: Lanes>(l: L, h: u16, pair: u32) -> (f32, [f32; 16], [[f32; 16]; 2]) {
                    let [lo, hi] = l.f16_pair(pair);
                    (
                        l.f16(h),
                        l.store(l.f16_splat(h)),
                        [l.store(lo), l.store(hi)],
                    )
                }
                let (got, splat, [lo, hi]) = match isa.0 {
                    IsaImpl::Scalar => all(Scalar, h, pair),
                    #[cfg(target_arch = "x86_64")]
                    IsaImpl::Avx2(s) => s.vectorize(|| all(s, h, pair)),
                    #[cfg(target_arch = "x86_64")]
                    IsaImpl::Avx512(s) => s.vectorize(|| all(s, h, pair)),
                };
                assert_eq!(bits(&splat), bits(&[want; 16]), "{h:#06x} splat");
                assert_eq!(bits(&lo), bits(&[want; 16]), "{pair:#010x} low");
                assert_eq!(bits(&hi), bits(&[high; 16]), "{pair:#010x} high");
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{h:#06x} on {:?}",
                    isa.kind()
                );
            }
        }
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
            PackedMatrix::from_gguf(GgmlType::Q4_K, &[0; 144], 1, 128),
            Err(QuantError::NotBlockMultiple { .. })
        ));
        assert!(matches!(
            PackedMatrix::from_gguf(GgmlType::F16, &[0; 64], 1, 32),
            Err(QuantError::UnsupportedType(_))
        ));
        assert!(!PackedMatrix::supports(GgmlType::Q6_K, 576));
        assert!(PackedMatrix::supports(GgmlType::Q6_K, 512));
        assert!(PackedMatrix::supports(GgmlType::Q5_0, 576));
    }

    #[test]
    fn the_isa_cap_is_parsed_and_never_exceeds_the_cpu() {
        assert_eq!(IsaKind::parse(" AVX2 "), Some(IsaKind::Avx2));
        assert_eq!(IsaKind::parse("neon"), None);
        assert_eq!(Isa::best(Some(IsaKind::Scalar)).kind(), IsaKind::Scalar);
        let widest = Isa::available().last().unwrap().kind();
        assert_eq!(Isa::best(None).kind(), widest);
        assert!(Isa::best(Some(IsaKind::Avx2)).kind() as u8 <= IsaKind::Avx2 as u8);
    }
}
