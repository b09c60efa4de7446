//! The self-attention block every family shares: q, k and v fused into one projection (with
//! Qwen2's biases, or Gemma's q/k norms, where a family has them), RoPE, the KV cache write and
//! attention over the sequence's context (within the layer's sliding window, if any), and the
//! output projection.

use burn::tensor::{Device, Tensor, TensorData};

use super::{LayerKv, Linear, RmsNorm, RopeTables, StepSlots, host_f32, host_vector, off_host};
use crate::{ModelConfig, RuntimeError};

/// What a layer's attention reads and writes in a step: its RoPE tables, its K/V pools and
/// the step's slots for its attention kind.
pub(crate) type LayerCache<'a> = (&'a RopeTables, &'a mut LayerKv, &'a StepSlots);

/// Self-attention: `qkv` has `(heads + 2 * kv_heads) * head_dim` outputs, q first.
#[derive(Debug)]
pub(crate) struct SelfAttention {
    qkv: Linear,
    qkv_bias: Option<Tensor<1>>,
    /// `qkv_bias` on the host, for the host path.
    qkv_bias_host: Option<Vec<f32>>,
    /// RMSNorms over each head of q and of k, before RoPE (Gemma 3).
    qk_norms: Option<(RmsNorm, RmsNorm)>,
    o_proj: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f32,
}

impl SelfAttention {
    /// The block of a model shaped as `c` (heads, head_dim, the `q·k` scale).
    pub(crate) fn new(qkv: Linear, o_proj: Linear, c: &ModelConfig) -> Self {
        Self {
            qkv,
            qkv_bias: None,
            qkv_bias_host: None,
            qk_norms: None,
            o_proj,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            scale: c.attention_scale,
        }
    }

    /// With biases on the fused projection (Qwen2).
    pub(crate) fn with_bias(mut self, bias: Tensor<1>) -> Self {
        self.qkv_bias_host = host_vector(&bias);
        self.qkv_bias = Some(bias);
        self
    }

    /// With RMSNorms over each head of q and k (Gemma 3).
    pub(crate) fn with_qk_norms(mut self, q: RmsNorm, k: RmsNorm) -> Self {
        self.qk_norms = Some((q, k));
        self
    }

    /// `x` `[tokens, hidden]` (normed) → attention output `[tokens, hidden]`; this layer's K/V
    /// are stored in the cache at the step's slots.
    pub(crate) fn forward(
        &self,
        x: Tensor<2>,
        cache: LayerCache<'_>,
    ) -> Result<Tensor<2>, RuntimeError> {
        let mut qkv = self.qkv.forward(x)?;
        if let Some(bias) = &self.qkv_bias {
            qkv = qkv.add(bias.clone().unsqueeze_dim::<2>(0));
        }
        self.o_proj.forward(self.attend(qkv, cache))
    }

    /// Whether `m` rows can stay on the host through [`forward_host`](Self::forward_host).
    pub(crate) fn on_host(&self, m: usize) -> bool {
        self.qkv.on_host(m)
            && self.o_proj.on_host(m)
            && self.qkv_bias.is_some() == self.qkv_bias_host.is_some()
    }

    /// [`forward`](Self::forward) on `m` normed rows on the host: the projections on Kiln's
    /// CPU kernels, only the norms, RoPE and attention over the cache as tensors.
    pub(crate) fn forward_host(
        &self,
        h: &[f32],
        m: usize,
        cache: LayerCache<'_>,
        device: &Device,
    ) -> Result<Vec<f32>, RuntimeError> {
        let mut qkv = self.qkv.forward_host(h, m).ok_or_else(off_host)??;
        if let Some(bias) = &self.qkv_bias_host {
            for row in qkv.chunks_exact_mut(bias.len()) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        }
        let width = qkv.len() / m.max(1);
        let qkv = Tensor::from_data(TensorData::new(qkv, [m, width]), device);
        let attended = host_f32(self.attend(qkv, cache))?;
        self.o_proj
            .forward_host(&attended, m)
            .ok_or_else(off_host)?
    }

    /// Splits the projected `qkv` `[tokens, q + 2 kv]`, norms and rotates q and k, stores k and
    /// v at the step's slots and attends: `[tokens, heads * head_dim]`.
    fn attend(&self, qkv: Tensor<2>, (rope, kv, step): LayerCache<'_>) -> Tensor<2> {
        let [total, _] = qkv.dims();
        let (heads, kv_heads, head_dim) = (self.heads, self.kv_heads, self.head_dim);
        let (q_dim, kv_dim) = (heads * head_dim, kv_heads * head_dim);
        let mut q = qkv.clone().slice([0..total, 0..q_dim]);
        let mut k = qkv.clone().slice([0..total, q_dim..q_dim + kv_dim]);
        let v = qkv.slice([0..total, q_dim + kv_dim..q_dim + 2 * kv_dim]);
        if let Some((q_norm, k_norm)) = &self.qk_norms {
            // Each head's vector is one row of the norm.
            q = q_norm
                .forward(q.reshape([total * heads, head_dim]))
                .reshape([total, q_dim]);
            k = k_norm
                .forward(k.reshape([total * kv_heads, head_dim]))
                .reshape([total, kv_dim]);
        }
        let q = rope.apply(q.reshape([total, heads, head_dim]));
        let k = rope
            .apply(k.reshape([total, kv_heads, head_dim]))
            .reshape([total, kv_dim]);
        kv.attend(step, (q, k, v), self.scale)
    }
}
