//! RMSNorm: `x * rsqrt(mean(x²) + eps) * weight`, normalized in f32 whatever the compute dtype.

use burn::tensor::Tensor;

use super::{host_vector, to_dtype, to_f32};

/// An RMSNorm layer: its weight and epsilon (and, for an f32 weight on the CPU, the weight on
/// the host for [`RmsNorm::forward_host`]).
#[derive(Debug, Clone)]
pub(crate) struct RmsNorm {
    weight: Tensor<1>,
    host: Option<Vec<f32>>,
    eps: f32,
}

impl RmsNorm {
    pub(crate) fn new(weight: Tensor<1>, eps: f32) -> Self {
        let host = host_vector(&weight);
        Self { weight, host, eps }
    }

    /// Normalizes over the last dimension in f32 (as transformers does), then scales in the
    /// compute dtype.
    pub(crate) fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let dtype = x.dtype();
        let x = to_f32(x);
        let variance = x.clone().powf_scalar(2.0).mean_dim(1);
        let scale = variance.add_scalar(self.eps).sqrt().recip();
        to_dtype(x.mul(scale), dtype).mul(self.weight.clone().unsqueeze_dim::<2>(0))
    }

    /// Whether [`forward_host`](Self::forward_host) can run.
    pub(crate) fn on_host(&self) -> bool {
        self.host.is_some()
    }

    /// [`forward`](Self::forward) on rows already on the host (f32, row-major), the same
    /// operations per value (the mean's sum in row order); `None` without a host weight.
    pub(crate) fn forward_host(&self, xs: &[f32]) -> Option<Vec<f32>> {
        let weight = self.host.as_deref()?;
        let width = weight.len();
        let mut out = vec![0.0f32; xs.len()];
        for (row, out) in xs.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
            let mean = row.iter().map(|v| v * v).sum::<f32>() / width as f32;
            let scale = (mean + self.eps).sqrt().recip();
            for ((o, &x), &w) in out.iter_mut().zip(row).zip(weight) {
                *o = (x * scale) * w;
            }
        }
        Some(out)
    }
}
