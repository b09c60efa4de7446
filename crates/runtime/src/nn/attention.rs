//! Scaled dot-product attention for one sequence, grouped-query (query heads share kv heads),
//! with its mask as a parameter so families with other masks (sliding windows, bidirectional
//! image tokens) reuse it. Scores, mask and softmax run in f32 whatever the compute dtype.

use burn::tensor::activation::softmax;
use burn::tensor::{DType, Tensor, TensorData};

use super::{to_dtype, to_f32};

/// Which context positions each new token may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mask {
    /// New token `i` (at position `start + i`) sees positions `0..=start + i`.
    Causal { start: usize },
}

impl Mask {
    /// The additive mask `[new, context]` (0 or -inf), or `None` when nothing is masked.
    fn values(self, new: usize, context: usize) -> Option<Vec<f32>> {
        match self {
            // A single new token at the end of its context sees all of it.
            Self::Causal { .. } if new <= 1 => None,
            Self::Causal { start } => {
                let mut mask = vec![0.0f32; new * context];
                for i in 0..new {
                    for j in (start + i + 1)..context {
                        mask[i * context + j] = f32::NEG_INFINITY;
                    }
                }
                Some(mask)
            }
        }
    }
}

/// Attention for one sequence: `q` is `[new, heads, head_dim]` for its new tokens; `k` and `v`
/// are `[context, kv_heads, head_dim]` for every position it may attend to (the cache, new
/// tokens included). Returns `[new, heads * head_dim]`.
pub(crate) fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, mask: Mask) -> Tensor<2> {
    let [new, heads, head_dim] = q.dims();
    let [context, kv_heads, _] = k.dims();
    let group = heads / kv_heads;
    // Query heads h*group..(h+1)*group share kv head h: fold the group into the rows.
    let q = q
        .swap_dims(0, 1)
        .reshape([kv_heads, group * new, head_dim])
        .mul_scalar(1.0 / (head_dim as f32).sqrt());
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

    #[test]
    fn a_causal_mask_hides_only_later_positions() {
        // Two new tokens at positions 3 and 4 of a 5-position context.
        let mask = Mask::Causal { start: 3 }.values(2, 5).unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(mask, [0.0, 0.0, 0.0, 0.0, inf, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(Mask::Causal { start: 7 }.values(1, 8), None);
    }
}
