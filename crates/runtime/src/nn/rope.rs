//! Rotary position embeddings in Hugging Face's `rotate_half` convention (GGUF `llama` q/k rows
//! are un-permuted at load so this one form serves every family). The frequencies — with any
//! scaling, see [`crate::RopeScaling`] — come from the config; a partial RoPE rotates the first
//! `rotary_dim` dimensions of each head and passes the rest through (Phi-3, Phi-4).

use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::RopeFrequencies;

/// A layer kind's rotary frequencies (`rotary_dim / 2` of them) and the factor cos and sin are
/// scaled by (1 but for `longrope`).
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    inv_freq: Vec<f32>,
    attention_factor: f32,
}

/// One step's rotary tables: `cos` and `sin`, each `[positions, rotary_dim]`.
#[derive(Debug, Clone)]
pub(crate) struct RopeTables {
    cos: Tensor<2>,
    sin: Tensor<2>,
}

impl Rope {
    pub(crate) fn new(frequencies: RopeFrequencies) -> Self {
        Self {
            inv_freq: frequencies.inv_freq,
            attention_factor: frequencies.attention_factor,
        }
    }

    /// The tables for `positions`, with the frequencies repeated over both halves as
    /// transformers builds them (in f32, on the host), stored in the compute dtype.
    pub(crate) fn tables(&self, positions: &[usize], device: &Device, dtype: DType) -> RopeTables {
        let rotary_dim = self.inv_freq.len() * 2;
        let mut cos = Vec::with_capacity(positions.len() * rotary_dim);
        let mut sin = Vec::with_capacity(positions.len() * rotary_dim);
        let scaled = self.attention_factor != 1.0;
        for &p in positions {
            for _ in 0..2 {
                for &f in &self.inv_freq {
                    let angle = p as f32 * f;
                    // transformers multiplies by the factor only when it has one.
                    if scaled {
                        cos.push(angle.cos() * self.attention_factor);
                        sin.push(angle.sin() * self.attention_factor);
                    } else {
                        cos.push(angle.cos());
                        sin.push(angle.sin());
                    }
                }
            }
        }
        let shape = [positions.len(), rotary_dim];
        RopeTables {
            cos: Tensor::from_data(TensorData::new(cos, shape), (device, dtype)),
            sin: Tensor::from_data(TensorData::new(sin, shape), (device, dtype)),
        }
    }
}

impl RopeTables {
    /// Tables from their values, `[rows, dim]` each, row-major (a vision tower's 2D positions).
    pub(crate) fn new(
        (cos, sin): (Vec<f32>, Vec<f32>),
        shape: [usize; 2],
        device: &Device,
        dtype: DType,
    ) -> Self {
        Self {
            cos: Tensor::from_data(TensorData::new(cos, shape), (device, dtype)),
            sin: Tensor::from_data(TensorData::new(sin, shape), (device, dtype)),
        }
    }

    /// Rotates `x` `[tokens, heads, head_dim]`: `x * cos + rotate_half(x) * sin` over the first
    /// `rotary_dim` dimensions, where `rotate_half([a, b]) = [-b, a]`; the rest unchanged.
    pub(crate) fn apply(&self, x: Tensor<3>) -> Tensor<3> {
        let [tokens, heads, head_dim] = x.dims();
        let [_, rotary_dim] = self.cos.dims();
        if rotary_dim < head_dim {
            let rotated = self.rotate(x.clone().slice([0..tokens, 0..heads, 0..rotary_dim]));
            let passed = x.slice([0..tokens, 0..heads, rotary_dim..head_dim]);
            return Tensor::cat(vec![rotated, passed], 2);
        }
        self.rotate(x)
    }

    fn rotate(&self, x: Tensor<3>) -> Tensor<3> {
        let [tokens, heads, dim] = x.dims();
        let half = dim / 2;
        let first = x.clone().slice([0..tokens, 0..heads, 0..half]);
        let second = x.clone().slice([0..tokens, 0..heads, half..dim]);
        let rotated = Tensor::cat(vec![second.neg(), first], 2);
        let cos = self.cos.clone().unsqueeze_dim::<3>(1);
        let sin = self.sin.clone().unsqueeze_dim::<3>(1);
        x.mul(cos).add(rotated.mul(sin))
    }
}
