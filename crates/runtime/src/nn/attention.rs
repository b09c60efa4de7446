//! Scaled dot-product attention for one sequence, grouped-query (query heads share kv heads),
//! with its mask as a parameter so families with other masks (sliding windows, bidirectional
//! image tokens) reuse it. Scores, mask and softmax run in f32 whatever the compute dtype.

use burn::tensor::activation::softmax;
use burn::tensor::{DType, Tensor, TensorData};

use super::{to_dtype, to_f32};

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
    /// The additive mask `[new, context]` (0 or -inf), or `None` when nothing is masked.
    fn values(self, new: usize, context: usize) -> Option<Vec<f32>> {
        let Self::Causal {
            start,
            first,
            window,
        } = self
        else {
            return None;
        };
        let visible = |i: usize, j: usize| {
            let (query, key) = (start + i, first + j);
            key <= query && window.is_none_or(|w| query - key < w)
        };
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
}
