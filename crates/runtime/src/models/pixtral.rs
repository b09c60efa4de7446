//! Pixtral — `LlavaForConditionalGeneration` with a `PixtralVisionModel` (mistral-community's
//! `pixtral-12b` layout) — read as candle's model files are: a vision tower over each image at its
//! own resolution (patch convolution without bias, RMSNorm `ln_pre`, RMSNorm layers with a 2D
//! RoPE over the patches' rows and columns and a SiLU-gated MLP, no final norm), LLaVA's
//! two-layer GELU projector, and a Mistral text model ([`Llama`]). The image's rows replace its
//! `[IMG]` tokens' embeddings; `[IMG_BREAK]` and `[IMG_END]` keep their own.

use burn::tensor::{Device, Tensor, TensorData};
use kiln_media::Tile;
use serde_json::Value;

use super::llama::{Llama, Projections};
use super::{CausalLm, Mmproj, TowerShape};
use crate::config::{Activation, ModelConfig};
use crate::nn::{
    Affine, GatedMlp, KvLayout, Linear, RmsNorm, RopeTables, VisionActivation, VisionEncoderLayer,
    VisionFfn, VisionMlp, VisionNorm, host_f32, patchify,
};
use crate::weights::{CheckpointFormat, GgufLayout, Loader, TensorSource};
use crate::{LoadError, RuntimeError};

/// Pixtral's norms: eps fixed in the model code, not in `config.json`.
const NORM_EPS: f32 = 1e-5;

/// The vision side of a LLaVA/Pixtral `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VisionConfig {
    pub(crate) shape: TowerShape,
    pub(crate) head_dim: usize,
    pub(crate) rope_theta: f32,
    pub(crate) activation: Activation,
    pub(crate) projector_bias: bool,
    pub(crate) image_token_id: u32,
}

impl VisionConfig {
    pub(crate) fn from_hf_json(json: &Value, origin: &str) -> Result<Self, LoadError> {
        let bad = |message: String| LoadError::Config {
            origin: origin.to_string(),
            message,
        };
        let v = &json["vision_config"];
        if v["model_type"].as_str() != Some("pixtral") {
            return Err(bad(format!(
                "a LLaVA model with a {} vision tower is not supported (Kiln runs Pixtral's)",
                v["model_type"]
            )));
        }
        match json["projector_hidden_act"].as_str().unwrap_or("gelu") {
            "gelu" => {}
            other => {
                return Err(bad(format!(
                    "projector_hidden_act {other:?} is not supported (gelu)"
                )));
            }
        }
        match json["vision_feature_layer"].as_i64().unwrap_or(-1) {
            -1 => {}
            other => {
                return Err(bad(format!(
                    "vision_feature_layer {other} is not supported (the last layer, -1)"
                )));
            }
        }
        match json["vision_feature_select_strategy"]
            .as_str()
            .unwrap_or("full")
        {
            "full" => {}
            other => {
                return Err(bad(format!(
                    "vision_feature_select_strategy {other:?} is not supported (full)"
                )));
            }
        }
        if json["spatial_merge_size"].as_u64().is_some_and(|m| m != 1) {
            return Err(bad(
                "spatial_merge_size (Mistral 3's patch merger) is not supported".into(),
            ));
        }
        let activation = match v["hidden_act"].as_str().unwrap_or("gelu") {
            "silu" => Activation::Silu,
            "gelu_pytorch_tanh" => Activation::GeluTanh,
            other => {
                return Err(bad(format!(
                    "vision_config.hidden_act {other:?} is not supported (silu, gelu_pytorch_tanh)"
                )));
            }
        };
        let shape = TowerShape::from_hf_json(v, origin)?;
        let rope_theta = v["rope_parameters"]["rope_theta"]
            .as_f64()
            .or(v["rope_theta"].as_f64())
            .unwrap_or(10_000.0) as f32;
        let c = Self {
            shape,
            head_dim: v["head_dim"]
                .as_u64()
                .map_or(shape.hidden_size / shape.num_heads, |d| d as usize),
            rope_theta,
            activation,
            projector_bias: json["multimodal_projector_bias"].as_bool().unwrap_or(true),
            image_token_id: json["image_token_index"]
                .as_u64()
                .or(json["image_token_id"].as_u64())
                .ok_or_else(|| bad("image_token_index is missing".into()))?
                as u32,
        };
        if c.head_dim * c.shape.num_heads != c.shape.hidden_size || !c.head_dim.is_multiple_of(4) {
            return Err(bad(format!(
                "vision_config: {} heads of {} do not make a hidden size of {} with a 2D RoPE",
                c.shape.num_heads, c.head_dim, c.shape.hidden_size
            )));
        }
        Ok(c)
    }

    /// The tower as llama.cpp's `mmproj` GGUF describes it (projector `pixtral`); the RoPE base
    /// is not in the file (llama.cpp fixes it at 10000, as Pixtral-12B has it) and the image
    /// token is the text model's `[IMG]`.
    pub(crate) fn from_gguf(m: &Mmproj<'_>) -> Result<Self, LoadError> {
        let image_token_id = m.token("[IMG]")?;
        let tower = m.tower;
        let shape = TowerShape::from_mmproj(m)?;
        Ok(Self {
            shape,
            head_dim: shape.hidden_size / shape.num_heads,
            rope_theta: 10_000.0,
            activation: if tower.opt_bool("clip.use_silu")?.unwrap_or(false) {
                Activation::Silu
            } else {
                Activation::GeluTanh
            },
            projector_bias: true,
            image_token_id,
        })
    }

    /// The 2D RoPE's `cos` and `sin` for a `rows` x `cols` grid of patches, `[rows·cols,
    /// head_dim]`: per patch the angles `r·f₀, r·f₂, … , c·f₁, c·f₃, …` (row frequencies first,
    /// then column ones), repeated over both halves, with `f_k = 1 / θ^(2k/d)` in f32 as
    /// transformers computes it.
    fn rope(&self, rows: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
        let d = self.head_dim;
        let freqs: Vec<f32> = (0..d / 2)
            .map(|k| 1.0 / self.rope_theta.powf((2 * k) as f32 / d as f32))
            .collect();
        let even: Vec<f32> = freqs.iter().step_by(2).copied().collect();
        let odd: Vec<f32> = freqs.iter().skip(1).step_by(2).copied().collect();
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for r in 0..rows {
            for c in 0..cols {
                let angles: Vec<f32> = even
                    .iter()
                    .map(|f| r as f32 * f)
                    .chain(odd.iter().map(|f| c as f32 * f))
                    .collect();
                for _ in 0..2 {
                    cos.extend(angles.iter().map(|a| a.cos()));
                    sin.extend(angles.iter().map(|a| a.sin()));
                }
            }
        }
        (cos, sin)
    }
}

/// Where a checkpoint keeps the text model: the Hub's older names (`language_model.model.…`,
/// `language_model.lm_head.…`) or transformers 5's in-memory ones (`model.language_model.…`).
const TEXT_OLD: &[(&str, &str)] = &[
    ("model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
];
const TEXT_NEW: &[(&str, &str)] = &[("model.", "model.language_model.")];
/// The tower and projector under transformers 5's in-memory names.
const VISION_NEW: &[(&str, &str)] = &[
    ("vision_tower.", "model.vision_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
];

/// How llama.cpp's converter names the tower and projector in an `mmproj` GGUF (its q/k rows
/// permuted as the text model's are: the source gets the tower's head counts as its config).
pub(crate) const MMPROJ_LAYOUT: GgufLayout = GgufLayout {
    name: mmproj_name,
    permuted_heads: |name, c| {
        (name.ends_with("attention.q_proj.weight") || name.ends_with("attention.k_proj.weight"))
            .then_some(c.num_heads)
    },
};

fn mmproj_name(hf: &str) -> String {
    match hf {
        "vision_tower.patch_conv.weight" => return "v.patch_embd.weight".into(),
        "vision_tower.ln_pre.weight" => return "v.pre_ln.weight".into(),
        _ => {}
    }
    if let Some(rest) = hf.strip_prefix("multi_modal_projector.linear_") {
        return format!("mm.{rest}");
    }
    let Some((layer, tail)) = hf
        .strip_prefix("vision_tower.transformer.layers.")
        .and_then(|rest| rest.split_once('.'))
    else {
        return hf.to_string();
    };
    let mapped = match tail {
        "attention.q_proj.weight" => "attn_q.weight",
        "attention.k_proj.weight" => "attn_k.weight",
        "attention.v_proj.weight" => "attn_v.weight",
        "attention.o_proj.weight" => "attn_out.weight",
        "attention_norm.weight" => "ln1.weight",
        "ffn_norm.weight" => "ln2.weight",
        "feed_forward.gate_proj.weight" => "ffn_gate.weight",
        "feed_forward.up_proj.weight" => "ffn_up.weight",
        "feed_forward.down_proj.weight" => "ffn_down.weight",
        other => other,
    };
    format!("v.blk.{layer}.{mapped}")
}

/// A Pixtral model: its text model with the KV cache, the tower and the projector.
#[derive(Debug)]
pub(crate) struct Pixtral {
    pub(crate) text: Llama,
    patch_conv: Linear,
    ln_pre: RmsNorm,
    layers: Vec<VisionEncoderLayer>,
    projector: VisionMlp,
    vision: VisionConfig,
    device: Device,
}

impl Pixtral {
    /// Reads the text model and the tower and projector (beside it, or from `tower`: an
    /// `mmproj` GGUF).
    pub(crate) fn load<'a>(
        (config, vision): (ModelConfig, VisionConfig),
        loader: &mut Loader<'a>,
        tower: Option<&'a dyn TensorSource>,
        kv: KvLayout,
    ) -> Result<Self, LoadError> {
        let nested = loader.format() == CheckpointFormat::Safetensors;
        if nested {
            loader.set_rename(if loader.contains("language_model.model.norm.weight") {
                TEXT_OLD
            } else {
                TEXT_NEW
            });
        }
        let text = Llama::load(config, loader, kv, Projections::Separate);
        loader.set_rename(&[]);
        let text = text?;
        if let Some(tower) = tower {
            loader.set_source(tower);
        } else if nested && !loader.contains("vision_tower.ln_pre.weight") {
            loader.set_rename(VISION_NEW);
        }
        let v = &vision;
        let (hidden, inter, p) = (
            v.shape.hidden_size,
            v.shape.intermediate_size,
            v.shape.patch_size,
        );
        let plain = |name: &str, shape: [usize; 2]| -> Result<Affine, LoadError> {
            Ok(Affine::new(loader.linear(&[(name, shape)])?, None))
        };
        let rms = |name: &str| -> Result<RmsNorm, LoadError> {
            Ok(RmsNorm::new(loader.vector(name, hidden)?, NORM_EPS))
        };
        let patch_conv =
            loader.linear_flat("vision_tower.patch_conv.weight", &[hidden, 3, p, p])?;
        let ln_pre = rms("vision_tower.ln_pre.weight")?;
        let mut layers = Vec::with_capacity(v.shape.num_layers);
        for i in 0..v.shape.num_layers {
            let l = format!("vision_tower.transformer.layers.{i}");
            let a = format!("{l}.attention");
            let f = format!("{l}.feed_forward");
            layers.push(VisionEncoderLayer {
                norm1: VisionNorm::Rms(rms(&format!("{l}.attention_norm.weight"))?),
                q: plain(&format!("{a}.q_proj.weight"), [hidden, hidden])?,
                k: plain(&format!("{a}.k_proj.weight"), [hidden, hidden])?,
                v: plain(&format!("{a}.v_proj.weight"), [hidden, hidden])?,
                out: plain(&format!("{a}.o_proj.weight"), [hidden, hidden])?,
                norm2: VisionNorm::Rms(rms(&format!("{l}.ffn_norm.weight"))?),
                ffn: VisionFfn::Gated(GatedMlp::new(
                    loader.linear(&[
                        (&format!("{f}.gate_proj.weight"), [inter, hidden]),
                        (&format!("{f}.up_proj.weight"), [inter, hidden]),
                    ])?,
                    loader.linear(&[(&format!("{f}.down_proj.weight"), [hidden, inter])])?,
                    v.activation,
                )),
                heads: v.shape.num_heads,
            });
        }
        let text_hidden = text.config().hidden_size;
        let projection = |i: usize, shape: [usize; 2]| -> Result<Affine, LoadError> {
            let name = format!("multi_modal_projector.linear_{i}");
            let bias = if v.projector_bias {
                Some(loader.vector(&format!("{name}.bias"), shape[0])?)
            } else {
                None
            };
            Ok(Affine::new(
                loader.linear(&[(&format!("{name}.weight"), shape)])?,
                bias,
            ))
        };
        let projector = VisionMlp::new(
            projection(1, [text_hidden, hidden])?,
            projection(2, [text_hidden, text_hidden])?,
            VisionActivation::Gelu,
        );
        loader.set_rename(&[]);
        Ok(Self {
            device: loader.device().clone(),
            text,
            patch_conv,
            ln_pre,
            layers,
            projector,
            vision,
        })
    }

    pub(crate) fn image_token_id(&self) -> u32 {
        self.vision.image_token_id
    }

    /// The rows that replace an image's `[IMG]` tokens, `[rows·cols, text hidden]` row-major:
    /// its one tile (the image at its own size, a multiple of the patch) through the tower and
    /// the projector.
    pub(crate) fn encode(&self, tiles: &[Tile]) -> Result<Vec<f32>, RuntimeError> {
        let v = &self.vision;
        let p = v.shape.patch_size;
        let mut out = Vec::new();
        for tile in tiles {
            let (w, h) = (tile.width as usize, tile.height as usize);
            // The 2D RoPE takes any grid (transformers uses the patch's row and column as they
            // are), so the processor's longest edge, not the tower's image size, bounds it.
            if !w.is_multiple_of(p)
                || !h.is_multiple_of(p)
                || w == 0
                || h == 0
                || tile.pixels.len() != 3 * w * h
            {
                return Err(RuntimeError::BadImage(format!(
                    "a {w}x{h} image where the vision tower takes multiples of {p}"
                )));
            }
            let (rows, cols) = (h / p, w / p);
            let n = rows * cols;
            let dtype = self.ln_pre_dtype();
            let x = Tensor::<2>::from_data(
                TensorData::new(patchify(tile, p), [n, 3 * p * p]),
                &self.device,
            );
            let x = crate::nn::to_dtype(x, dtype);
            let mut x = self.ln_pre.forward(self.patch_conv.forward(x)?);
            let rope = RopeTables::new(v.rope(rows, cols), [n, v.head_dim], &self.device, dtype);
            for layer in &self.layers {
                x = layer.forward(x, &[n], Some(&rope))?;
            }
            out.extend(host_f32(self.projector.forward(x)?)?);
        }
        Ok(out)
    }

    fn ln_pre_dtype(&self) -> burn::tensor::DType {
        self.text.compute_dtype()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_frequencies_are_transformers_f32_bits() {
        // transformers' inv_freq for head_dim 16, theta 1e4 (f32 bits from the fixture's spec).
        let want = [
            0x3f80_0000u32,
            0x3ea1_e89b,
            0x3dcc_cccd,
            0x3d01_86e3,
            0x3c23_d70a,
            0x3b4f_3e38,
            0x3a83_126f,
            0x39a5_cb60,
        ];
        let got: Vec<u32> = (0..8)
            .map(|k| (1.0f32 / 10_000f32.powf((2 * k) as f32 / 16.0)).to_bits())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn mmproj_names() {
        assert_eq!(
            mmproj_name("vision_tower.patch_conv.weight"),
            "v.patch_embd.weight"
        );
        assert_eq!(
            mmproj_name("multi_modal_projector.linear_2.bias"),
            "mm.2.bias"
        );
        assert_eq!(
            mmproj_name("vision_tower.transformer.layers.1.feed_forward.gate_proj.weight"),
            "v.blk.1.ffn_gate.weight"
        );
    }
}
