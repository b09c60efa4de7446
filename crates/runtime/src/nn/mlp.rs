//! The gated MLPs. SwiGLU (Llama, Qwen2, Mistral): `down(silu(gate(x)) * up(x))`, with gate and
//! up fused into one projection so a step reads `x` once.

use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use super::Linear;
use crate::RuntimeError;

/// SwiGLU with gate and up fused: `gate_up` has `2 * intermediate` outputs, gate first.
#[derive(Debug, Clone)]
pub(crate) struct SwiGlu {
    gate_up: Linear,
    down: Linear,
}

impl SwiGlu {
    pub(crate) fn new(gate_up: Linear, down: Linear) -> Self {
        Self { gate_up, down }
    }

    pub(crate) fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>, RuntimeError> {
        let [tokens, _] = x.dims();
        let both = self.gate_up.forward(x)?;
        let [_, width] = both.dims();
        let inter = width / 2;
        let gate = both.clone().slice([0..tokens, 0..inter]);
        let up = both.slice([0..tokens, inter..width]);
        self.down.forward(silu(gate).mul(up))
    }
}
