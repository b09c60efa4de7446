//! Idefics3 / SmolVLM — `Idefics3ForConditionalGeneration` — read as candle's model files are:
//! a SigLIP vision tower (patch embedding, learned positions, LayerNorm encoder layers,
//! post-LayerNorm), a connector (pixel shuffle, then a projection into the text model's width)
//! and a Llama text model ([`Llama`], SmolVLM's being SmolLM2). The image's rows replace the
//! `<image>` tokens' embeddings; everything after that is the text model's step.

use burn::tensor::{Device, Int, Tensor, TensorData};
use kiln_media::Tile;
use serde_json::Value;

use super::llama::{Llama, Projections};
use super::{CausalLm, Mmproj, TowerShape};
use crate::config::{Activation, ModelConfig};
use crate::nn::{
    Affine, KvLayout, LayerNorm, Linear, VisionActivation, VisionEncoderLayer, VisionFfn,
    VisionMlp, VisionNorm, host_f32, patchify,
};
use crate::weights::{CheckpointFormat, GgufLayout, Loader, TensorSource};
use crate::{LoadError, RuntimeError};

/// The vision side of an Idefics3 `config.json`: `vision_config`, `scale_factor` and
/// `image_token_id`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VisionConfig {
    pub(crate) shape: TowerShape,
    /// The tile's side: the position table covers `(image_size / patch_size)²` patches.
    pub(crate) image_size: usize,
    pub(crate) eps: f32,
    pub(crate) activation: Activation,
    /// The pixel shuffle's factor: `scale_factor²` patches become one token.
    pub(crate) scale_factor: usize,
    pub(crate) image_token_id: u32,
}

impl VisionConfig {
    pub(crate) fn from_hf_json(json: &Value, origin: &str) -> Result<Self, LoadError> {
        let bad = |message: String| LoadError::Config {
            origin: origin.to_string(),
            message,
        };
        let v = &json["vision_config"];
        let shape = TowerShape::from_hf_json(v, origin)?;
        let activation = match v["hidden_act"].as_str().unwrap_or("gelu_pytorch_tanh") {
            "gelu_pytorch_tanh" => Activation::GeluTanh,
            other => {
                return Err(bad(format!(
                    "vision_config.hidden_act {other:?} is not supported (gelu_pytorch_tanh)"
                )));
            }
        };
        let c =
            Self {
                shape,
                image_size: v["image_size"].as_u64().filter(|&n| n > 0).ok_or_else(|| {
                    bad("vision_config.image_size must be a positive integer".into())
                })? as usize,
                eps: v["layer_norm_eps"].as_f64().unwrap_or(1e-6) as f32,
                activation,
                scale_factor: json["scale_factor"].as_u64().unwrap_or(2) as usize,
                image_token_id: json["image_token_id"]
                    .as_u64()
                    .ok_or_else(|| bad("image_token_id is missing".into()))?
                    as u32,
            };
        let side = c.image_size / c.shape.patch_size;
        if !c.shape.hidden_size.is_multiple_of(c.shape.num_heads)
            || !c.image_size.is_multiple_of(c.shape.patch_size)
            || c.scale_factor == 0
            || !side.is_multiple_of(c.scale_factor)
        {
            return Err(bad(format!(
                "vision_config does not fit together (hidden {} over {} heads, image {} in patches \
                 of {}, pixel shuffle by {})",
                c.shape.hidden_size,
                c.shape.num_heads,
                c.image_size,
                c.shape.patch_size,
                c.scale_factor
            )));
        }
        Ok(c)
    }

    /// The tower as llama.cpp's `mmproj` GGUF describes it (`clip.*`, projector `idefics3`);
    /// the image token is the text model's `<image>`.
    pub(crate) fn from_gguf(m: &Mmproj<'_>) -> Result<Self, LoadError> {
        let projector = m.tower.opt_str("clip.projector_type")?.unwrap_or_default();
        if projector != "idefics3" {
            return Err(m.bad(format!(
                "clip.projector_type {projector:?} is not one Kiln runs (idefics3)"
            )));
        }
        let image_token_id = m.token("<image>")?;
        let tower = m.tower;
        Ok(Self {
            shape: TowerShape::from_mmproj(m)?,
            image_size: m.num("image_size")?,
            eps: tower
                .opt_f32("clip.vision.attention.layer_norm_epsilon")?
                .unwrap_or(1e-6),
            activation: Activation::GeluTanh,
            scale_factor: tower
                .opt_u64("clip.vision.projector.scale_factor")?
                .unwrap_or(2) as usize,
            image_token_id,
        })
    }

    /// Patches per side of a full tile.
    fn side(&self) -> usize {
        self.image_size / self.shape.patch_size
    }
}

/// How llama.cpp's converter names the tower and connector in an `mmproj` GGUF (every tensor
/// the Hugging Face values, nothing permuted).
pub(crate) const MMPROJ_LAYOUT: GgufLayout = GgufLayout {
    name: mmproj_name,
    permuted_heads: |_, _| None,
};

fn mmproj_name(hf: &str) -> String {
    let fixed = match hf {
        "model.vision_model.embeddings.patch_embedding.weight" => "v.patch_embd.weight",
        "model.vision_model.embeddings.patch_embedding.bias" => "v.patch_embd.bias",
        "model.vision_model.embeddings.position_embedding.weight" => "v.position_embd.weight",
        "model.vision_model.post_layernorm.weight" => "v.post_ln.weight",
        "model.vision_model.post_layernorm.bias" => "v.post_ln.bias",
        "model.connector.modality_projection.proj.weight" => "mm.model.fc.weight",
        _ => "",
    };
    if !fixed.is_empty() {
        return fixed.to_string();
    }
    let Some((layer, tail)) = hf
        .strip_prefix("model.vision_model.encoder.layers.")
        .and_then(|rest| rest.split_once('.'))
    else {
        return hf.to_string();
    };
    let (module, kind) = tail.rsplit_once('.').unwrap_or((tail, ""));
    let mapped = match module {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.out_proj" => "attn_out",
        "layer_norm1" => "ln1",
        "layer_norm2" => "ln2",
        "mlp.fc1" => "ffn_up",
        "mlp.fc2" => "ffn_down",
        other => other,
    };
    format!("v.blk.{layer}.{mapped}.{kind}")
}

/// The SigLIP tower.
#[derive(Debug)]
struct Tower {
    patch_embedding: Affine,
    /// `[(image_size / patch)², hidden]`.
    position_embedding: Tensor<2>,
    layers: Vec<VisionEncoderLayer>,
    post_layernorm: LayerNorm,
}

/// An Idefics3 model: its text model with the KV cache, the tower and the connector.
#[derive(Debug)]
pub(crate) struct Idefics3 {
    pub(crate) text: Llama,
    tower: Tower,
    connector: Linear,
    vision: VisionConfig,
    device: Device,
}

impl Idefics3 {
    /// Reads the text model (in a Hugging Face folder, under `model.text_model.`) and the tower
    /// and connector (beside it, or from `tower`: an `mmproj` GGUF).
    pub(crate) fn load<'a>(
        (config, vision): (ModelConfig, VisionConfig),
        loader: &mut Loader<'a>,
        tower: Option<&'a dyn TensorSource>,
        kv: KvLayout,
    ) -> Result<Self, LoadError> {
        let nested = loader.format() == CheckpointFormat::Safetensors;
        if nested {
            loader.set_rename(&[("model.", "model.text_model.")]);
        }
        let text = Llama::load(config, loader, kv, Projections::Separate);
        loader.set_rename(&[]);
        let text = text?;
        if let Some(tower) = tower {
            loader.set_source(tower);
        }
        let v = &vision;
        let (hidden, inter) = (v.shape.hidden_size, v.shape.intermediate_size);
        let affine = |name: &str, shape: [usize; 2]| -> Result<Affine, LoadError> {
            Ok(Affine::new(
                loader.linear(&[(&format!("{name}.weight"), shape)])?,
                Some(loader.vector(&format!("{name}.bias"), shape[0])?),
            ))
        };
        let layer_norm = |name: &str| -> Result<LayerNorm, LoadError> {
            Ok(LayerNorm::new(
                loader.vector(&format!("{name}.weight"), hidden)?,
                loader.vector(&format!("{name}.bias"), hidden)?,
                v.eps,
            ))
        };
        let e = "model.vision_model.embeddings";
        let p = v.shape.patch_size;
        let patch_embedding = Affine::new(
            loader.linear_flat(&format!("{e}.patch_embedding.weight"), &[hidden, 3, p, p])?,
            Some(loader.vector(&format!("{e}.patch_embedding.bias"), hidden)?),
        );
        let position_embedding = loader.table(
            &format!("{e}.position_embedding.weight"),
            [v.side() * v.side(), hidden],
        )?;
        let mut layers = Vec::with_capacity(v.shape.num_layers);
        for i in 0..v.shape.num_layers {
            let l = format!("model.vision_model.encoder.layers.{i}");
            let a = format!("{l}.self_attn");
            layers.push(VisionEncoderLayer {
                norm1: VisionNorm::Layer(layer_norm(&format!("{l}.layer_norm1"))?),
                q: affine(&format!("{a}.q_proj"), [hidden, hidden])?,
                k: affine(&format!("{a}.k_proj"), [hidden, hidden])?,
                v: affine(&format!("{a}.v_proj"), [hidden, hidden])?,
                out: affine(&format!("{a}.out_proj"), [hidden, hidden])?,
                norm2: VisionNorm::Layer(layer_norm(&format!("{l}.layer_norm2"))?),
                ffn: VisionFfn::Plain(VisionMlp::new(
                    affine(&format!("{l}.mlp.fc1"), [inter, hidden])?,
                    affine(&format!("{l}.mlp.fc2"), [hidden, inter])?,
                    VisionActivation::Text(v.activation),
                )),
                heads: v.shape.num_heads,
            });
        }
        let post_layernorm = layer_norm("model.vision_model.post_layernorm")?;
        let text_hidden = text.config().hidden_size;
        let connector = loader.linear(&[(
            "model.connector.modality_projection.proj.weight",
            [text_hidden, hidden * v.scale_factor * v.scale_factor],
        )])?;
        Ok(Self {
            device: loader.device().clone(),
            text,
            tower: Tower {
                patch_embedding,
                position_embedding,
                layers,
                post_layernorm,
            },
            connector,
            vision,
        })
    }

    pub(crate) fn image_token_id(&self) -> u32 {
        self.vision.image_token_id
    }

    /// The rows that replace an image's `<image>` tokens, `[tokens, text hidden]` row-major:
    /// each tile through the tower, pixel-shuffled and projected, tiles in order.
    pub(crate) fn encode(&self, tiles: &[Tile]) -> Result<Vec<f32>, RuntimeError> {
        let v = &self.vision;
        let p = v.shape.patch_size;
        // The processor's tiles are usually the tower's image size; a smaller or larger square
        // tile takes its positions from the table by transformers' bucketing.
        let size = tiles.first().map_or(v.image_size, |t| t.width as usize);
        let side = size / p;
        if size == 0 || !size.is_multiple_of(p) || !side.is_multiple_of(v.scale_factor) {
            return Err(RuntimeError::BadImage(format!(
                "{size}-pixel tiles do not make whole {p}-pixel patches in groups of {}",
                v.scale_factor
            )));
        }
        let mut rows = Vec::new();
        let mut positions = Vec::new();
        for tile in tiles {
            let (tw, th) = (tile.width as usize, tile.height as usize);
            if tw != size || th != size || tile.pixels.len() != 3 * tw * th {
                return Err(RuntimeError::BadImage(format!(
                    "a {tw}x{th} tile where the vision tower takes {size}x{size} ones"
                )));
            }
            rows.extend(patchify(tile, p));
            positions.extend(position_ids(side, side, v.side()));
        }
        let patches = side * side;
        let n = tiles.len() * patches;
        if n == 0 {
            return Ok(Vec::new());
        }
        let x = Tensor::<2>::from_data(TensorData::new(rows, [n, 3 * p * p]), &self.device);
        let x = crate::nn::to_dtype(x, self.tower.position_embedding.dtype());
        let ids = Tensor::<1, Int>::from_data(TensorData::new(positions, [n]), &self.device);
        let mut x = self
            .tower
            .patch_embedding
            .forward(x)?
            .add(self.tower.position_embedding.clone().select(0, ids));
        let images = vec![patches; tiles.len()];
        for layer in &self.tower.layers {
            x = layer.forward(x, &images, None)?;
        }
        let x = host_f32(self.tower.post_layernorm.forward(x))?;
        let shuffled = pixel_shuffle(&x, (tiles.len(), side, v.shape.hidden_size), v.scale_factor);
        let s2 = v.scale_factor * v.scale_factor;
        let tokens = n / s2;
        let y = Tensor::<2>::from_data(
            TensorData::new(shuffled, [tokens, v.shape.hidden_size * s2]),
            &self.device,
        );
        let y = crate::nn::to_dtype(y, self.tower.position_embedding.dtype());
        host_f32(self.connector.forward(y)?)
    }
}

/// Idefics3VisionEmbeddings' position ids for a tile of `rows` x `cols` patches: each patch's
/// fractional coordinate bucketed into the `side` x `side` table, in torch's f32 arithmetic
/// (for a full tile, simply `0..side²`).
fn position_ids(rows: usize, cols: usize, side: usize) -> Vec<i64> {
    // torch.arange(1/side, 1.0, 1/side): start + i·step in f64, stored as f32.
    let step = 1.0 / side as f64;
    let count = ((1.0 - step) / step).ceil().max(0.0) as usize;
    let boundaries: Vec<f32> = (0..count)
        .map(|i| (step + i as f64 * step) as f32)
        .collect();
    let bucket = |i: usize, n: usize| -> i64 {
        let frac = (i as f32 * (1.0 / n as f32)).min(1.0 - 1e-6);
        boundaries.iter().filter(|&&b| b <= frac).count() as i64
    };
    let mut ids = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            ids.push(bucket(r, rows) * side as i64 + bucket(c, cols));
        }
    }
    ids
}

/// Idefics3Connector's pixel shuffle on the host: per tile, `side²` rows of `hidden` become
/// `(side/s)²` rows of `s²·hidden`; output row `(h2, w2)` holds, at `(hs·s + ws)·hidden + e`,
/// input row `(h2·s + hs, w2·s + ws)`'s value `e`.
fn pixel_shuffle(x: &[f32], (tiles, side, hidden): (usize, usize, usize), s: usize) -> Vec<f32> {
    let out_side = side / s;
    let mut out = Vec::with_capacity(x.len());
    for t in 0..tiles {
        let tile = &x[t * side * side * hidden..(t + 1) * side * side * hidden];
        for h2 in 0..out_side {
            for w2 in 0..out_side {
                for hs in 0..s {
                    for ws in 0..s {
                        let row = (h2 * s + hs) * side + (w2 * s + ws);
                        out.extend_from_slice(&tile[row * hidden..(row + 1) * hidden]);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_tiles_use_the_table_in_order() {
        for side in [4, 26, 32] {
            let ids = position_ids(side, side, side);
            assert_eq!(
                ids,
                (0..(side * side) as i64).collect::<Vec<_>>(),
                "side {side}"
            );
        }
        // A 2x2 patch tile of a 4x4 table spreads over it.
        assert_eq!(position_ids(2, 2, 4), vec![0, 2, 8, 10]);
    }

    #[test]
    fn pixel_shuffle_matches_the_reshapes() {
        // One 4x4 tile, hidden 1, values = row index: output row 0 holds rows 0, 1, 4, 5.
        let x: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let out = pixel_shuffle(&x, (1, 4, 1), 2);
        assert_eq!(
            out,
            vec![
                0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.
            ]
        );
    }
}
