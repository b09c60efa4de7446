//! The layers of vision towers, written once for the vision families: LayerNorm, projections
//! with biases, plain MLPs (a tower's, or a projector into the text model), an encoder layer
//! (pre-norm bidirectional attention over each image's patches, 2D RoPE where the tower has it,
//! and a pre-norm MLP, each added to the residual), and patchifying a tile for a patch
//! embedding — a convolution whose kernel equals its stride is a matmul over the flattened
//! patches.

use burn::tensor::Tensor;
use kiln_media::Tile;

use super::mlp::activate;
use super::{GatedMlp, Linear, Mask, RmsNorm, RopeTables, attention, to_dtype, to_f32};
use crate::{Activation, RuntimeError};

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension, in f32.
#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f32,
}

impl LayerNorm {
    pub(crate) fn new(weight: Tensor<1>, bias: Tensor<1>, eps: f32) -> Self {
        Self { weight, bias, eps }
    }

    pub(crate) fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let dtype = x.dtype();
        let x = to_f32(x);
        let centered = x.clone().sub(x.mean_dim(1));
        let variance = centered.clone().powf_scalar(2.0).mean_dim(1);
        let normed = centered.mul(variance.add_scalar(self.eps).sqrt().recip());
        to_dtype(normed, dtype)
            .mul(self.weight.clone().unsqueeze_dim::<2>(0))
            .add(self.bias.clone().unsqueeze_dim::<2>(0))
    }
}

/// `x Wᵀ + b` (the bias optional).
#[derive(Debug, Clone)]
pub(crate) struct Affine {
    linear: Linear,
    bias: Option<Tensor<1>>,
}

impl Affine {
    pub(crate) fn new(linear: Linear, bias: Option<Tensor<1>>) -> Self {
        Self { linear, bias }
    }

    pub(crate) fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>, RuntimeError> {
        let y = self.linear.forward(x)?;
        Ok(match &self.bias {
            Some(b) => y.add(b.clone().unsqueeze_dim::<2>(0)),
            None => y,
        })
    }
}

/// A vision MLP's activation: the text models' ([`Activation`]) or GELU's exact erf form
/// (LLaVA's projector, `gelu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VisionActivation {
    Text(Activation),
    Gelu,
}

/// `fc2(act(fc1(x)))`: a vision tower's plain MLP, or a projector into the text model.
#[derive(Debug, Clone)]
pub(crate) struct VisionMlp {
    fc1: Affine,
    fc2: Affine,
    activation: VisionActivation,
}

impl VisionMlp {
    pub(crate) fn new(fc1: Affine, fc2: Affine, activation: VisionActivation) -> Self {
        Self {
            fc1,
            fc2,
            activation,
        }
    }

    pub(crate) fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>, RuntimeError> {
        let h = self.fc1.forward(x)?;
        let h = match self.activation {
            VisionActivation::Text(a) => activate(h, a),
            VisionActivation::Gelu => burn::tensor::activation::gelu(h),
        };
        self.fc2.forward(h)
    }
}

/// A tower's norm: SigLIP's LayerNorm or Pixtral's RMSNorm.
#[derive(Debug, Clone)]
// A few per layer of a model's tower: boxing would only add an indirection per call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum VisionNorm {
    Layer(LayerNorm),
    Rms(RmsNorm),
}

impl VisionNorm {
    pub(crate) fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Self::Layer(n) => n.forward(x),
            Self::Rms(n) => n.forward(x),
        }
    }
}

/// A tower's feed-forward block: SigLIP's plain MLP or Pixtral's gated one.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum VisionFfn {
    Plain(VisionMlp),
    Gated(GatedMlp),
}

/// One encoder layer of a vision tower: norm → attention (with the patches' 2D RoPE where the
/// tower has one) → residual, norm → MLP → residual. The attention is bidirectional within each
/// image and never across images.
#[derive(Debug, Clone)]
pub(crate) struct VisionEncoderLayer {
    pub(crate) norm1: VisionNorm,
    pub(crate) q: Affine,
    pub(crate) k: Affine,
    pub(crate) v: Affine,
    pub(crate) out: Affine,
    pub(crate) norm2: VisionNorm,
    pub(crate) ffn: VisionFfn,
    pub(crate) heads: usize,
}

impl VisionEncoderLayer {
    /// `x` is `[rows, hidden]`: images of `images[i]` rows each, in order; `rope` rotates q and
    /// k of every row.
    pub(crate) fn forward(
        &self,
        x: Tensor<2>,
        images: &[usize],
        rope: Option<&RopeTables>,
    ) -> Result<Tensor<2>, RuntimeError> {
        let [rows, hidden] = x.dims();
        let head_dim = hidden / self.heads;
        let scale = (head_dim as f32).powf(-0.5);
        let h = self.norm1.forward(x.clone());
        let heads = |t: Tensor<2>| t.reshape([rows, self.heads, head_dim]);
        let mut q = heads(self.q.forward(h.clone())?);
        let mut k = heads(self.k.forward(h.clone())?);
        let v = heads(self.v.forward(h)?);
        if let Some(rope) = rope {
            q = rope.apply(q);
            k = rope.apply(k);
        }
        let mut attended = Vec::with_capacity(images.len());
        let mut start = 0;
        for &n in images {
            let span = start..start + n;
            let part = |t: &Tensor<3>| t.clone().slice([span.clone(), 0..self.heads, 0..head_dim]);
            attended.push(attention(part(&q), part(&k), part(&v), Mask::Full, scale));
            start += n;
        }
        let x = x.add(self.out.forward(Tensor::cat(attended, 0))?);
        let h = self.norm2.forward(x.clone());
        let y = match &self.ffn {
            VisionFfn::Plain(mlp) => mlp.forward(h)?,
            VisionFfn::Gated(mlp) => mlp.forward(h)?,
        };
        Ok(x.add(y))
    }
}

/// A tile's `patch` x `patch` patches as rows `[patches, 3 * patch * patch]`, patches row by
/// row and each row's values in the convolution weight's order (channel, y, x).
pub(crate) fn patchify(tile: &Tile, patch: usize) -> Vec<f32> {
    let (w, h) = (tile.width as usize, tile.height as usize);
    let (pw, ph) = (w / patch, h / patch);
    let plane = w * h;
    let mut out = Vec::with_capacity(pw * ph * 3 * patch * patch);
    for py in 0..ph {
        for px in 0..pw {
            for c in 0..3 {
                for y in 0..patch {
                    let row = c * plane + (py * patch + y) * w + px * patch;
                    out.extend_from_slice(&tile.pixels[row..row + patch]);
                }
            }
        }
    }
    out
}
