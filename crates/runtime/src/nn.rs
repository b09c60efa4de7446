//! The building blocks of a Llama-family forward pass, each written once: RMSNorm, RoPE
//! (Hugging Face's `rotate_half` convention), grouped-query attention with a causal mask, and
//! the SwiGLU MLP.

use burn::tensor::activation::{silu, softmax};
use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::RuntimeError;
use crate::linear::Linear;

/// `x * rsqrt(mean(x²) + eps) * weight` over the last dimension, computed in f32 whatever the
/// compute dtype (as transformers does), then scaled in the compute dtype.
pub(crate) fn rms_norm(x: Tensor<2>, weight: &Tensor<1>, eps: f32) -> Tensor<2> {
    let dtype = x.dtype();
    let x = to_f32(x);
    let variance = x.clone().powf_scalar(2.0).mean_dim(1);
    let scale = variance.add_scalar(eps).sqrt().recip();
    let normed = x.mul(scale);
    let normed = if dtype == DType::F32 {
        normed
    } else {
        normed.cast(dtype)
    };
    normed.mul(weight.clone().unsqueeze_dim::<2>(0))
}

fn to_f32<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(DType::F32)
    }
}

/// Rotary tables for `positions`: `(cos, sin)`, each `[positions, head_dim]` with the
/// frequencies repeated over both halves, as transformers builds them (in f32, on the host),
/// then stored in the compute dtype.
pub(crate) fn rope_tables(
    positions: &[usize],
    inv_freq: &[f32],
    device: &Device,
    dtype: DType,
) -> (Tensor<2>, Tensor<2>) {
    let head_dim = inv_freq.len() * 2;
    let mut cos = Vec::with_capacity(positions.len() * head_dim);
    let mut sin = Vec::with_capacity(positions.len() * head_dim);
    for &p in positions {
        for _ in 0..2 {
            for &f in inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    let shape = [positions.len(), head_dim];
    (
        Tensor::from_data(TensorData::new(cos, shape), (device, dtype)),
        Tensor::from_data(TensorData::new(sin, shape), (device, dtype)),
    )
}

/// Applies RoPE to `x` `[tokens, heads, head_dim]` with tables `[tokens, head_dim]`:
/// `x * cos + rotate_half(x) * sin`, where `rotate_half([a, b]) = [-b, a]`.
pub(crate) fn apply_rope(x: Tensor<3>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<3> {
    let [tokens, heads, head_dim] = x.dims();
    let half = head_dim / 2;
    let first = x.clone().slice([0..tokens, 0..heads, 0..half]);
    let second = x.clone().slice([0..tokens, 0..heads, half..head_dim]);
    let rotated = Tensor::cat(vec![second.neg(), first], 2);
    let cos = cos.clone().unsqueeze_dim::<3>(1);
    let sin = sin.clone().unsqueeze_dim::<3>(1);
    x.mul(cos).add(rotated.mul(sin))
}

/// Causal grouped-query attention for one sequence.
///
/// `q` is `[new, heads, head_dim]` for the sequence's new tokens, which sit at positions
/// `start..start + new`; `k` and `v` are `[context, kv_heads, head_dim]` for positions
/// `0..start + new` (the cache, new tokens included). Returns `[new, heads * head_dim]`.
pub(crate) fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, start: usize) -> Tensor<2> {
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
    // Masking and softmax in f32, as transformers does, whatever the compute dtype.
    let mut scores = to_f32(q.matmul(k));
    if new > 1 {
        // Token i of the new ones may see positions 0..=start + i.
        let mut mask = vec![0.0f32; new * context];
        for i in 0..new {
            for j in (start + i + 1)..context {
                mask[i * context + j] = f32::NEG_INFINITY;
            }
        }
        let options = (&scores.device(), DType::F32);
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [new, context]), options)
            .repeat_dim(0, group)
            .unsqueeze_dim::<3>(0);
        scores = scores.add(mask);
    }
    let probs = softmax(scores, 2);
    let probs = if dtype == DType::F32 {
        probs
    } else {
        probs.cast(dtype)
    };
    probs
        .matmul(v)
        .reshape([heads, new, head_dim])
        .swap_dims(0, 1)
        .reshape([new, heads * head_dim])
}

/// SwiGLU: `down(silu(gate(x)) * up(x))`, with gate and up fused into one projection of
/// `2 * intermediate` outputs.
pub(crate) fn swiglu(
    x: Tensor<2>,
    gate_up: &Linear,
    down: &Linear,
) -> Result<Tensor<2>, RuntimeError> {
    let [tokens, _] = x.dims();
    let both = gate_up.forward(x)?;
    let [_, width] = both.dims();
    let inter = width / 2;
    let gate = both.clone().slice([0..tokens, 0..inter]);
    let up = both.slice([0..tokens, inter..width]);
    down.forward(silu(gate).mul(up))
}
