//! Scaled dot-product attention for one sequence, grouped-query (query heads share kv heads),
//! with its mask as a parameter so families with other masks (sliding windows, bidirectional
//! image tokens) reuse it. Scores, mask and softmax run in f32 whatever the compute dtype.

use std::ops::Range;

use burn::tensor::activation::softmax;
use burn::tensor::{DType, Tensor, TensorData};
use half::f16;
use half::slice::HalfFloatSliceExt as _;
use rayon::prelude::*;

use super::{to_dtype, to_f32};
use crate::kernels::{Isa, Query};

/// Which context positions each new token may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mask {
    /// New token `i` is at position `start + i`; context row `j` holds position `first + j`.
    /// A token sees the positions up to its own and, with a `window`, only the last `window`
    /// of them (itself included: transformers' `kv_idx > q_idx - window`).
    Causal {
        start: usize,
        first: usize,
        window: Option<usize>,
    },
    /// Every token sees every other (a vision tower's patches of one image).
    Full,
}

impl Mask {
    /// The context rows new token `i` sees (of `context`): one run, since a window only cuts
    /// its start.
    pub(crate) fn keys(self, i: usize, context: usize) -> Range<usize> {
        let Self::Causal {
            start,
            first,
            window,
        } = self
        else {
            return 0..context;
        };
        let query = start + i;
        // Keys from `query + 1 - window` (transformers' `kv_idx > q_idx - window`) to `query`.
        let lo = window.map_or(0, |w| (query + 1).saturating_sub(w));
        let end = (query + 1).saturating_sub(first).min(context);
        lo.saturating_sub(first).min(end)..end
    }

    /// The additive mask `[new, context]` (0 or -inf), or `None` when nothing is masked.
    fn values(self, new: usize, context: usize) -> Option<Vec<f32>> {
        if self == Self::Full {
            return None;
        }
        let visible = |i: usize, j: usize| self.keys(i, context).contains(&j);
        // Nothing hidden (a decode step's one token over exactly what it may see): no mask.
        // The corners decide: the first token sees least of the end, the last least of the
        // start.
        if new == 0
            || context == 0
            || (visible(0, context - 1) && visible(new - 1, 0) && visible(0, 0))
        {
            return None;
        }
        let mut mask = vec![0.0f32; new * context];
        for i in 0..new {
            for j in 0..context {
                if !visible(i, j) {
                    mask[i * context + j] = f32::NEG_INFINITY;
                }
            }
        }
        Some(mask)
    }
}

/// Attention for one sequence: `q` is `[new, heads, head_dim]` for its new tokens; `k` and `v`
/// are `[context, kv_heads, head_dim]` for every position it may attend to (the cache, new
/// tokens included); `scale` multiplies `q·k`. Returns `[new, heads * head_dim]`.
pub(crate) fn attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    mask: Mask,
    scale: f32,
) -> Tensor<2> {
    let [new, heads, head_dim] = q.dims();
    let [context, kv_heads, _] = k.dims();
    let group = heads / kv_heads;
    // Query heads h*group..(h+1)*group share kv head h: fold the group into the rows.
    let q = q
        .swap_dims(0, 1)
        .reshape([kv_heads, group * new, head_dim])
        .mul_scalar(scale);
    let k = k.swap_dims(0, 1).swap_dims(1, 2);
    let v = v.swap_dims(0, 1);
    let dtype = q.dtype();
    let mut scores = to_f32(q.matmul(k));
    if let Some(mask) = mask.values(new, context) {
        let options = (&scores.device(), DType::F32);
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [new, context]), options)
            .repeat_dim(0, group)
            .unsqueeze_dim::<3>(0);
        scores = scores.add(mask);
    }
    to_dtype(softmax(scores, 2), dtype)
        .matmul(v)
        .reshape([heads, new, head_dim])
        .swap_dims(0, 1)
        .reshape([new, heads * head_dim])
}

/// K or V of a cache on the host, `[slots, kv_heads * head_dim]` in the pool's dtype.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PoolRows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl PoolRows<'_> {
    /// The rows at `slots` (each `width` wide), in order, as f32.
    fn gather(self, slots: &[usize], width: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; slots.len() * width];
        for (&slot, dst) in slots.iter().zip(out.chunks_exact_mut(width.max(1))) {
            let rows = slot * width..(slot + 1) * width;
            match self {
                Self::F32(pool) => {
                    if let Some(src) = pool.get(rows) {
                        dst.copy_from_slice(src);
                    }
                }
                Self::F16(pool) => {
                    if let Some(src) = pool.get(rows) {
                        src.convert_to_f32_slice(dst);
                    }
                }
            }
        }
        out
    }
}

/// One sequence's attention on the host, as [`attention`] computes it (`q` scaled, scores,
/// softmax, the weighted sum of V), without its `[heads, new, context]` score tensor: each
/// (token, head) pair reads its keys' run ([`Mask::keys`]) and nothing it may not see. `q` is
/// `[new, heads, head_dim]` (rotated, unscaled), K and V come from the pool at `slots` (the
/// context in order); the result is `[new, heads * head_dim]`, added to `out`'s end. A pair's
/// result depends only on its own query and keys, so not on the batch or the thread count.
pub(crate) fn attention_host(
    q: &[f32],
    (k, v, slots): (PoolRows<'_>, PoolRows<'_>, &[usize]),
    (heads, kv_heads, head_dim): (usize, usize, usize),
    (mask, scale): (Mask, f32),
    out: &mut Vec<f32>,
) {
    let width = kv_heads * head_dim;
    let (keys, values) = (k.gather(slots, width), v.gather(slots, width));
    let group = (heads / kv_heads.max(1)).max(1);
    let context = slots.len();
    let at = out.len();
    out.resize(at + q.len(), 0.0);
    let rows = out.get_mut(at..).unwrap_or_default();
    let q: Vec<f32> = q.iter().map(|x| x * scale).collect();
    let isa = Isa::active();
    rows.par_chunks_mut(head_dim.max(1))
        .zip(q.par_chunks(head_dim.max(1)))
        .enumerate()
        .for_each_init(Vec::new, |scores, (pair, (o, q))| {
            let (i, kv_head) = (pair / heads, pair % heads / group);
            let run = mask.keys(i, context);
            let query = Query {
                q,
                keys: &keys,
                values: &values,
                rows: (run.start, run.end),
                width,
                offset: kv_head * head_dim,
            };
            isa.attend(query, scores, o);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causal(start: usize) -> Mask {
        Mask::Causal {
            start,
            first: 0,
            window: None,
        }
    }

    #[test]
    fn a_causal_mask_hides_only_later_positions() {
        // Two new tokens at positions 3 and 4 of a 5-position context.
        let mask = causal(3).values(2, 5).unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(mask, [0.0, 0.0, 0.0, 0.0, inf, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(causal(7).values(1, 8), None);
    }

    #[test]
    fn a_window_hides_positions_that_slid_out() {
        let inf = f32::NEG_INFINITY;
        // Window 2, context from position 0: positions 2 and 3 each see themselves and one back.
        let mask = Mask::Causal {
            start: 2,
            first: 0,
            window: Some(2),
        };
        assert_eq!(
            mask.values(2, 4).unwrap(),
            [inf, 0.0, 0.0, inf, inf, inf, 0.0, 0.0]
        );
        // The context starts where the first new token's window does: one token needs no mask.
        let mask = Mask::Causal {
            start: 9,
            first: 7,
            window: Some(3),
        };
        assert_eq!(mask.values(1, 3), None);
        // Two tokens at 9 and 10 over positions 8..=10, window 3: 10 sees 8..=10, 9 sees 8..=9.
        let mask = Mask::Causal {
            start: 9,
            first: 8,
            window: Some(3),
        };
        assert_eq!(mask.values(2, 3).unwrap(), [0.0, 0.0, inf, 0.0, 0.0, 0.0]);
    }

    /// Values in (-1, 1) from a fixed sequence (no dependency for a handful of numbers).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The host attention against the tensor one on the same numbers: K/V scattered over a pool
    /// (in f32 and in f16), grouped query heads, a head size with a tail past the last 16
    /// values, masks causal, windowed and full.
    #[test]
    fn host_attention_is_the_tensor_attention() {
        let device = burn::tensor::Device::flex();
        let (heads, kv_heads, head_dim) = (6, 2, 20);
        let (new, context) = (3, 7);
        let width = kv_heads * head_dim;
        // Context row j lives at pool slot slots[j]; the pool has other rows between.
        let slots: Vec<usize> = (0..context).map(|j| (j * 5 + 3) % 11).collect();
        let pool_k = values(11 * width, 1);
        let pool_v = values(11 * width, 2);
        let q = values(new * heads * head_dim, 3);
        let rows = |pool: &[f32]| -> Vec<f32> {
            slots
                .iter()
                .flat_map(|&s| pool[s * width..(s + 1) * width].to_vec())
                .collect()
        };
        let host = |k: PoolRows<'_>, v: PoolRows<'_>, mask, out: &mut Vec<f32>| {
            let shape = (heads, kv_heads, head_dim);
            attention_host(&q, (k, v, &slots[..]), shape, (mask, 0.3), out);
        };
        let tensor = |v: Vec<f32>, shape: [usize; 3]| {
            Tensor::<3>::from_data(TensorData::new(v, shape), &device)
        };
        let masks = [
            Mask::Causal {
                start: 4,
                first: 0,
                window: None,
            },
            Mask::Causal {
                start: 6,
                first: 2,
                window: Some(4),
            },
            Mask::Full,
        ];
        for mask in masks {
            let expected: Vec<f32> = attention(
                tensor(q.clone(), [new, heads, head_dim]),
                tensor(rows(&pool_k), [context, kv_heads, head_dim]),
                tensor(rows(&pool_v), [context, kv_heads, head_dim]),
                mask,
                0.3,
            )
            .try_into_vec_as::<f32>()
            .unwrap();
            let mut got = vec![1.0];
            host(
                PoolRows::F32(&pool_k),
                PoolRows::F32(&pool_v),
                mask,
                &mut got,
            );
            assert_eq!(got.len(), 1 + expected.len());
            assert_eq!(got[0], 1.0, "what was in `out` stays");
            for (g, e) in got[1..].iter().zip(&expected) {
                assert!((g - e).abs() < 1e-5, "{mask:?}: {g} against {e}");
            }
            // An f16 pool reads as its f32 values.
            let half = |p: &[f32]| p.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
            let (k16, v16) = (half(&pool_k), half(&pool_v));
            let widened = |p: &[f16]| p.iter().map(|x| x.to_f32()).collect::<Vec<_>>();
            let (k32, v32) = (widened(&k16), widened(&v16));
            let (mut a, mut b) = (Vec::new(), Vec::new());
            host(PoolRows::F16(&k16), PoolRows::F16(&v16), mask, &mut a);
            host(PoolRows::F32(&k32), PoolRows::F32(&v32), mask, &mut b);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn keys_are_the_run_a_mask_leaves_visible() {
        let mask = Mask::Causal {
            start: 9,
            first: 8,
            window: Some(3),
        };
        assert_eq!(mask.keys(0, 3), 0..2);
        assert_eq!(mask.keys(1, 3), 0..3);
        assert_eq!(Mask::Full.keys(0, 5), 0..5);
        assert_eq!(causal(3).keys(1, 5), 0..5);
        assert_eq!(causal(3).keys(0, 5), 0..4);
    }
}
