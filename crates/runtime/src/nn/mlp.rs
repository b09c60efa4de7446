//! The gated MLP, `down(act(gate(x)) * up(x))`, with gate and up fused into one projection so a
//! step reads `x` once: SwiGLU (`silu`: Llama, Qwen2, Mistral, Phi-3) and GeGLU (GELU's tanh
//! form: Gemma).

use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use super::Linear;
use crate::{Activation, RuntimeError};

/// `sqrt(2 / pi)`, as torch's tanh GELU spells it (`M_SQRT2 * M_2_SQRTPI * 0.5`).
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_CUBIC: f32 = 0.044_715;

/// A gated MLP with gate and up fused: `gate_up` has `2 * intermediate` outputs, gate first.
#[derive(Debug, Clone)]
pub(crate) struct GatedMlp {
    gate_up: Linear,
    down: Linear,
    activation: Activation,
}

/// torch's `gelu(x, approximate="tanh")` on one value.
fn gelu_tanh(x: f32) -> f32 {
    let inner = SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
    0.5 * x * (1.0 + inner.tanh())
}

/// `activation` on every value of `x` (shared with the vision towers' plain MLPs).
pub(crate) fn activate(x: Tensor<2>, activation: Activation) -> Tensor<2> {
    match activation {
        Activation::Silu => silu(x),
        Activation::GeluTanh => {
            let cube = x.clone().mul(x.clone()).mul(x.clone());
            let inner = x
                .clone()
                .add(cube.mul_scalar(GELU_CUBIC))
                .mul_scalar(SQRT_2_OVER_PI);
            x.mul_scalar(0.5).mul(inner.tanh().add_scalar(1.0))
        }
    }
}

impl GatedMlp {
    pub(crate) fn new(gate_up: Linear, down: Linear, activation: Activation) -> Self {
        Self {
            gate_up,
            down,
            activation,
        }
    }

    fn act(&self, gate: Tensor<2>) -> Tensor<2> {
        activate(gate, self.activation)
    }

    pub(crate) fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>, RuntimeError> {
        let [tokens, _] = x.dims();
        let both = self.gate_up.forward(x)?;
        let [_, width] = both.dims();
        let inter = width / 2;
        let gate = both.clone().slice([0..tokens, 0..inter]);
        let up = both.slice([0..tokens, inter..width]);
        self.down.forward(self.act(gate).mul(up))
    }

    /// Whether `m` rows can stay on the host through [`forward_host`](Self::forward_host).
    pub(crate) fn on_host(&self, m: usize) -> bool {
        self.gate_up.on_host(m) && self.down.on_host(m)
    }

    /// [`forward`](Self::forward) on `m` rows already on the host: both projections on Kiln's
    /// CPU kernels and `act(gate) * up` between them, with no tensor in between.
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
            match self.activation {
                // silu(g) = g · sigmoid(g), as burn's `silu` computes it.
                Activation::Silu => act.extend(
                    gate.iter()
                        .zip(up)
                        .map(|(&g, &u)| g * (1.0 / (1.0 + (-g).exp())) * u),
                ),
                Activation::GeluTanh => {
                    act.extend(gate.iter().zip(up).map(|(&g, &u)| gelu_tanh(g) * u));
                }
            }
        }
        self.down.forward_host(&act, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_tanh_matches_torch() {
        // torch.nn.functional.gelu(torch.tensor([...]), approximate="tanh"), float32.
        let cases = [
            (-3.0f32, -0.003_637_433_f32),
            (-1.0, -0.158_808),
            (-0.1, -0.046_017_25),
            (0.0, 0.0),
            (0.5, 0.345_714),
            (1.0, 0.841_192),
            (2.5, 2.484_915_7),
        ];
        for (x, want) in cases {
            let got = gelu_tanh(x);
            assert!(
                (got - want).abs() < 1e-6,
                "gelu_tanh({x}) = {got}, torch {want}"
            );
        }
    }
}
