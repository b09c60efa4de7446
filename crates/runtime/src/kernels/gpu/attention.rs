//! Paged attention on a GPU: each new token's query reads its keys and values straight from the
//! KV pool through the step's slot table (no gathered K/V, no score tensor), grouped-query
//! without repeating K/V, its mask as a run of visible keys per token (causal, sliding window).
//! One CubeCL kernel, a burn backend extension op like the packed matmul.
//!
//! One cube per (token, head); its units take the token's keys in turn with an online softmax
//! (running max, sum and weighted values in registers), then merge their partial results in
//! shared memory (flash-decoding's split over keys, within one cube). Scores, softmax and sums
//! run in f32 whatever the compute and pool dtypes, so results agree with the tensor path to
//! rounding.

use std::ops::Range;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor, tensor::IntTensor};
use burn::tensor::{DType as BurnDType, Device, Int, Shape, Tensor, TensorData};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::prelude::{CubeCount, CubeDim};

/// Shared memory the kernel's partial sums may take, in f32 values (8 KiB: half of WebGPU's
/// guaranteed workgroup storage).
const SHARED_VALUES: usize = 2048;
/// Units per cube at most.
const MAX_UNITS: usize = 32;
/// Tokens along the grid's y before it wraps to z (WebGPU's per-dimension limit is 65535).
const GRID_Y: usize = 32768;

/// One step's tables for the kernel, uploaded once and read by every layer of a KV group.
#[derive(Debug, Clone)]
pub(crate) struct PagedTables {
    /// The pool slots each sequence reads, sequences one after another.
    slots: Tensor<1, Int>,
    /// Per new token: where its sequence's slots start in `slots`, then its visible keys'
    /// run (start, end) within them.
    keys: Tensor<1, Int>,
    tokens: usize,
}

impl PagedTables {
    /// `contexts[s]` is sequence `s`'s slots in order; `runs` gives each new token (all
    /// sequences' tokens in order) its sequence and the run of its context it sees.
    pub(crate) fn upload(
        contexts: &[Vec<usize>],
        runs: impl Iterator<Item = (usize, Range<usize>)>,
        device: &Device,
    ) -> Self {
        let mut starts = Vec::with_capacity(contexts.len());
        let mut slots = Vec::new();
        for context in contexts {
            starts.push(slots.len());
            slots.extend(context.iter().map(|&s| s as i32));
        }
        let mut keys = Vec::new();
        for (seq, run) in runs {
            let start = starts.get(seq).copied().unwrap_or(0);
            keys.extend([start, run.start, run.end].map(|v| v as i32));
        }
        let tokens = keys.len() / 3;
        // The kernel indexes both; an empty step still uploads one entry.
        slots.push(0);
        keys.extend([0, 0, 0]);
        let int = |v: Vec<i32>| {
            let n = v.len();
            Tensor::from_data(TensorData::new(v, [n]), (device, BurnDType::I32))
        };
        Self {
            slots: int(slots),
            keys: int(keys),
            tokens,
        }
    }
}

/// Attention of `q` (`[tokens, heads, head_dim]`, rotated, unscaled) over the pool's `k` and
/// `v` (`[slots, kv_heads * head_dim]`) through `tables`; `[tokens, heads * head_dim]` in `q`'s
/// dtype.
pub(crate) fn paged_attention(
    q: Tensor<3>,
    (k, v): (&Tensor<2>, &Tensor<2>),
    tables: &PagedTables,
    kv_heads: usize,
    scale: f32,
) -> Tensor<2> {
    let [tokens, heads, head_dim] = q.dims();
    debug_assert_eq!(tokens, tables.tokens);
    let out = Dispatch::paged_attention(
        q.into_dispatch(),
        k.clone().into_dispatch(),
        v.clone().into_dispatch(),
        tables.slots.clone().into_dispatch(),
        tables.keys.clone().into_dispatch(),
        scale,
        heads / kv_heads.max(1),
    );
    let out: Tensor<3> = Tensor::from_dispatch(out);
    out.reshape([tokens, heads * head_dim])
}

/// The kernel's output shape: `q`'s.
fn same_shape(q: &Shape) -> Shape {
    q.clone()
}

/// Paged attention as a backend op.
#[backend_extension(Cube, Fusion)]
pub(crate) trait PagedOps: Backend {
    /// `out[t, h] = softmax(q[t, h]·K[keys of t] · scale) V[keys of t]`, `[tokens, heads,
    /// head_dim]`; query head `h` reads kv head `h / group`.
    #[fusion(dtype = q, shape = same_shape(q))]
    fn paged_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slots: IntTensor<Self>,
        keys: IntTensor<Self>,
        scale: f32,
        group: usize,
    ) -> FloatTensor<Self>;
}

impl PagedOps for CubeBackend {
    fn paged_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        slots: IntTensor<Self>,
        keys: IntTensor<Self>,
        scale: f32,
        group: usize,
    ) -> FloatTensor<Self> {
        let q = into_contiguous(q);
        let (k, v) = (into_contiguous(k), into_contiguous(v));
        let shape = q.meta.shape().clone();
        let (tokens, heads, head_dim) = (shape[0], shape[1], shape[2]);
        let dtype = q.dtype;
        let out = empty_device_dtype(q.client.clone(), q.device.clone(), shape.clone(), dtype);
        if tokens == 0 || heads == 0 || head_dim == 0 {
            return out;
        }
        let units = (SHARED_VALUES / head_dim).clamp(1, MAX_UNITS);
        let pool = k.dtype;
        // SAFETY: cubes past the last token leave at once; the tables index only the pool's rows (slots of the step's checked block
        // tables) and runs within each sequence's slots; `q`, `k`, `v` are contiguous with the
        // shapes the kernel reads (`head_dim` and the group from `q`'s and the pool's shapes);
        // the output has `q`'s shape.
        #[allow(unsafe_code)]
        unsafe {
            cube::paged_attention_kernel::launch_unchecked(
                &out.client,
                CubeCount::Static(
                    heads as u32,
                    tokens.min(GRID_Y) as u32,
                    tokens.div_ceil(GRID_Y) as u32,
                ),
                CubeDim::new_1d(units as u32),
                q.into_tensor_arg(),
                k.into_tensor_arg(),
                v.into_tensor_arg(),
                slots.into_tensor_arg(),
                keys.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                scale,
                head_dim,
                group,
                units,
                [
                    burn::backend::cubecl::dtype_to_storage_type(dtype),
                    burn::backend::cubecl::dtype_to_storage_type(pool),
                ],
            );
        }
        out
    }
}

/// The kernel, in CubeCL.
mod cube {
    use cubecl::prelude::*;

    #[cube(launch_unchecked)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn paged_attention_kernel<F: Float, P: Float>(
        q: &Tensor<F>,
        k: &Tensor<P>,
        v: &Tensor<P>,
        slots: &Tensor<i32>,
        keys: &Tensor<i32>,
        out: &mut Tensor<F>,
        scale: f32,
        #[comptime] head_dim: usize,
        #[comptime] group: usize,
        #[comptime] units: usize,
        #[define(F, P)] _dtypes: [ElemType; 2],
    ) {
        let heads = q.shape(1);
        let h = CUBE_POS_X as usize;
        let t = (CUBE_POS_Z * CUBE_COUNT_Y + CUBE_POS_Y) as usize;
        // Uniform across the cube: it leaves whole, before any barrier.
        if t >= q.shape(0) {
            terminate!();
        }
        let u = UNIT_POS as usize;
        let width = k.shape(1);
        let kv = (h / group) * head_dim;
        let start = u32::cast_from(keys[t * 3]) as usize;
        let lo = u32::cast_from(keys[t * 3 + 1]) as usize;
        let hi = u32::cast_from(keys[t * 3 + 2]) as usize;
        let at = (t * heads + h) * head_dim;

        let mut qs = Array::<f32>::new(head_dim);
        let mut acc = Array::<f32>::new(head_dim);
        #[unroll]
        for d in 0..head_dim {
            qs[d] = f32::cast_from(q[at + d]) * scale;
            acc[d] = 0.0f32;
        }
        // Below any score, and finite (so `max - max` is 0 before the first key).
        let mut max = f32::new(-1.0e30f32);
        let mut sum = 0.0f32;
        let mut j = lo + u;
        while j < hi {
            let row = (u32::cast_from(slots[start + j]) as usize) * width + kv;
            let mut s = 0.0f32;
            #[unroll]
            for d in 0..head_dim {
                s += qs[d] * f32::cast_from(k[row + d]);
            }
            let next = f32::max(max, s);
            let rescale = f32::exp(max - next);
            let p = f32::exp(s - next);
            sum = sum * rescale + p;
            #[unroll]
            for d in 0..head_dim {
                acc[d] = acc[d] * rescale + p * f32::cast_from(v[row + d]);
            }
            max = next;
            j += units;
        }

        // Merge the units' partial softmaxes.
        let mut stats = Shared::new_slice(comptime![units * 2]);
        let mut partial = Shared::new_slice(comptime![units * head_dim]);
        stats[u * 2] = max;
        stats[u * 2 + 1] = sum;
        #[unroll]
        for d in 0..head_dim {
            partial[u * head_dim + d] = acc[d];
        }
        sync_cube();
        let mut top = f32::new(-1.0e30f32);
        for w in 0..units {
            top = f32::max(top, stats[w * 2]);
        }
        let mut total = 0.0f32;
        for w in 0..units {
            total += stats[w * 2 + 1] * f32::exp(stats[w * 2] - top);
        }
        let mut d = u;
        while d < head_dim {
            let mut o = 0.0f32;
            for w in 0..units {
                o += partial[w * head_dim + d] * f32::exp(stats[w * 2] - top);
            }
            // A token always sees itself; the guard keeps a malformed run from writing NaN.
            out[at + d] = F::cast_from(select(total > 0.0f32, o / total, 0.0f32));
            d += units;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceKind;
    use crate::nn::{Mask, attention};

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 2003.0 - 0.5) * 2.0)
            .collect()
    }

    /// One sequence of a step: its context's pool slots, its new tokens' first position, how
    /// many there are, and the first position the slots hold.
    struct Seq {
        slots: Vec<usize>,
        start: usize,
        new: usize,
        first: usize,
    }

    /// Paged attention against the tensor path (`nn::attention` over gathered K/V) for `seqs`
    /// in one step.
    fn check(
        seqs: &[Seq],
        (heads, kv_heads, head_dim): (usize, usize, usize),
        pool: BurnDType,
        window: Option<usize>,
    ) {
        let device = DeviceKind::Wgpu.burn().unwrap();
        let slots = 40;
        let width = kv_heads * head_dim;
        let pool_tensor = |seed| {
            let t = Tensor::<2>::from_data(
                TensorData::new(values(slots * width, seed), [slots, width]),
                &device,
            );
            crate::nn::to_dtype(t, pool)
        };
        let (k, v) = (pool_tensor(1), pool_tensor(2));
        let tokens: usize = seqs.iter().map(|s| s.new).sum();
        let q = Tensor::<3>::from_data(
            TensorData::new(
                values(tokens * heads * head_dim, 3),
                [tokens, heads, head_dim],
            ),
            &device,
        );
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut expected = Vec::new();
        let mut runs = Vec::new();
        let mut offset = 0;
        for (s, seq) in seqs.iter().enumerate() {
            let mask = Mask::Causal {
                start: seq.start,
                first: seq.first,
                window,
            };
            let ids: Vec<i64> = seq.slots.iter().map(|&x| x as i64).collect();
            let n = ids.len();
            let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), &device);
            let read = |pool: &Tensor<2>| {
                crate::nn::to_f32(pool.clone().select(0, ids.clone()))
                    .reshape([n, kv_heads, head_dim])
            };
            let q_seq = q
                .clone()
                .slice([offset..offset + seq.new, 0..heads, 0..head_dim]);
            expected.push(attention(q_seq, read(&k), read(&v), mask, scale));
            runs.extend((0..seq.new).map(|i| (s, mask.keys(i, n))));
            offset += seq.new;
        }
        let expected = Tensor::cat(expected, 0)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        let contexts: Vec<Vec<usize>> = seqs.iter().map(|s| s.slots.clone()).collect();
        let tables = PagedTables::upload(&contexts, runs.into_iter(), &device);
        let got = paged_attention(q, (&k, &v), &tables, kv_heads, scale);
        assert_eq!(got.dims(), [tokens, heads * head_dim]);
        let got = got
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
            assert!((a - b).abs() <= 2e-5, "at {i}: {a} against {b}");
        }
    }

    fn seqs() -> Vec<Seq> {
        vec![
            // A prefill of 5 tokens over scattered slots.
            Seq {
                slots: vec![5, 9, 2, 7, 11],
                start: 0,
                new: 5,
                first: 0,
            },
            // Two new tokens after 6 cached positions.
            Seq {
                slots: vec![20, 21, 22, 23, 30, 31, 1, 0],
                start: 6,
                new: 2,
                first: 0,
            },
            // One decode token after 11 (long enough for every unit to take keys).
            Seq {
                slots: (12..24).chain(24..36).collect(),
                start: 23,
                new: 1,
                first: 0,
            },
        ]
    }

    #[test]
    fn causal_steps_match_the_tensor_path() {
        check(&seqs(), (4, 4, 16), BurnDType::F32, None);
    }

    #[test]
    fn grouped_queries_and_head_sizes_with_tails() {
        check(&seqs(), (6, 2, 20), BurnDType::F32, None);
        check(&seqs(), (8, 2, 64), BurnDType::F32, None);
        check(&seqs(), (2, 1, 256), BurnDType::F32, None);
    }

    #[test]
    fn f16_pools_are_read_as_they_are() {
        check(&seqs(), (4, 2, 32), BurnDType::F16, None);
    }

    #[test]
    fn more_tokens_than_one_grid_dimension_holds() {
        // Each token sees one key, its own: the output is that key's value row.
        let device = DeviceKind::Wgpu.burn().unwrap();
        let tokens = GRID_Y + 5;
        let (heads, head_dim) = (2, 4);
        let width = heads * head_dim;
        let pool = |seed| {
            let data = TensorData::new(values(tokens * width, seed), [tokens, width]);
            Tensor::<2>::from_data(data, &device)
        };
        let (k, v) = (pool(1), pool(2));
        let q = Tensor::<3>::from_data(
            TensorData::new(values(tokens * width, 3), [tokens, heads, head_dim]),
            &device,
        );
        // The slots in reverse, so token t reads row tokens - 1 - t.
        let slots: Vec<usize> = (0..tokens).rev().collect();
        let tables = PagedTables::upload(&[slots], (0..tokens).map(|t| (0, t..t + 1)), &device);
        let got = paged_attention(q, (&k, &v), &tables, heads, 0.5);
        let got = got.into_data().try_to_vec::<f32>().unwrap();
        let v = values(tokens * width, 2);
        for t in [0, 1, GRID_Y - 1, GRID_Y, tokens - 1] {
            let row = tokens - 1 - t;
            assert_eq!(
                got[t * width..(t + 1) * width],
                v[row * width..(row + 1) * width],
                "token {t}"
            );
        }
    }

    #[test]
    fn a_sliding_window_hides_what_slid_out() {
        // Window 3: the decode token at position 9 sees 7..=9, the slots from position 7 on.
        let seqs = vec![
            Seq {
                slots: vec![3, 4, 5],
                start: 9,
                new: 1,
                first: 7,
            },
            Seq {
                slots: vec![10, 11, 12, 13, 14, 15],
                start: 0,
                new: 6,
                first: 0,
            },
        ];
        check(&seqs, (4, 2, 16), BurnDType::F32, Some(3));
    }
}
