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

    /// Whether `m` rows can stay on the host through [`forward_host`](Self::forward_host).
    pub(crate) fn on_host(&self, m: usize) -> bool {
        self.gate_up.on_host(m) && self.down.on_host(m)
    }

    /// [`forward`](Self::forward) on `m` rows already on the host: both projections on Kiln's
    /// CPU kernels and `silu(gate) * up` between them, with no tensor in between.
    pub(crate) fn forward_host(
        &self,
        xs: &[f32],
        m: usize,
    ) -> Option<Result<Vec<f32>, RuntimeError>> {
        if !self.down.on_host(m) {
            return None;
        }
        let both = match self.gate_up.forward_host(xs, m)? {
            Ok(both) => both,
            Err(e) => return Some(Err(e)),
        };
        let inter = both.len() / m.max(1) / 2;
        let mut act = Vec::with_capacity(m * inter);
        for row in both.chunks_exact(2 * inter) {
            let (gate, up) = row.split_at(inter);
            // silu(g) = g · sigmoid(g), as burn's `silu` computes it.
            act.extend(
                gate.iter()
                    .zip(up)
                    .map(|(&g, &u)| g * (1.0 / (1.0 + (-g).exp())) * u),
            );
        }
        self.down.forward_host(&act, m)
    }
}
