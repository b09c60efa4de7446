//! Rotary position embeddings in Hugging Face's `rotate_half` convention (GGUF `llama` q/k rows
//! are un-permuted at load so this one form serves every family). The frequencies — with any
//! scaling, see [`crate::RopeScaling`] — come from the config.

use burn::tensor::{DType, Device, Tensor, TensorData};

/// A model's rotary frequencies (`head_dim / 2` of them).
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    inv_freq: Vec<f32>,
}

/// One step's rotary tables: `cos` and `sin`, each `[positions, head_dim]`.
#[derive(Debug, Clone)]
pub(crate) struct RopeTables {
    cos: Tensor<2>,
    sin: Tensor<2>,
}

impl Rope {
    pub(crate) fn new(inv_freq: Vec<f32>) -> Self {
        Self { inv_freq }
    }

    /// The tables for `positions`, with the frequencies repeated over both halves as
    /// transformers builds them (in f32, on the host), stored in the compute dtype.
    pub(crate) fn tables(&self, positions: &[usize], device: &Device, dtype: DType) -> RopeTables {
        let head_dim = self.inv_freq.len() * 2;
        let mut cos = Vec::with_capacity(positions.len() * head_dim);
        let mut sin = Vec::with_capacity(positions.len() * head_dim);
        for &p in positions {
            for _ in 0..2 {
                for &f in &self.inv_freq {
                    let angle = p as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let shape = [positions.len(), head_dim];
        RopeTables {
            cos: Tensor::from_data(TensorData::new(cos, shape), (device, dtype)),
            sin: Tensor::from_data(TensorData::new(sin, shape), (device, dtype)),
        }
    }
}

impl RopeTables {
    /// Rotates `x` `[tokens, heads, head_dim]`: `x * cos + rotate_half(x) * sin`, where
    /// `rotate_half([a, b]) = [-b, a]`.
    pub(crate) fn apply(&self, x: Tensor<3>) -> Tensor<3> {
        let [tokens, heads, head_dim] = x.dims();
        let half = head_dim / 2;
        let first = x.clone().slice([0..tokens, 0..heads, 0..half]);
        let second = x.clone().slice([0..tokens, 0..heads, half..head_dim]);
        let rotated = Tensor::cat(vec![second.neg(), first], 2);
        let cos = self.cos.clone().unsqueeze_dim::<3>(1);
        let sin = self.sin.clone().unsqueeze_dim::<3>(1);
        x.mul(cos).add(rotated.mul(sin))
    }
}
