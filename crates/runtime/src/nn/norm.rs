//! RMSNorm: `x * rsqrt(mean(x²) + eps) * weight`, normalized in f32 whatever the compute dtype.

use burn::tensor::Tensor;

use super::{to_dtype, to_f32};

/// An RMSNorm layer: its weight and epsilon.
#[derive(Debug, Clone)]
pub(crate) struct RmsNorm {
    weight: Tensor<1>,
    eps: f32,
}

impl RmsNorm {
    pub(crate) fn new(weight: Tensor<1>, eps: f32) -> Self {
        Self { weight, eps }
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
}
