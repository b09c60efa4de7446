//! The Llama family — Llama 2/3, SmolLM2, Mistral (sliding window, Nemo's explicit head_dim),
//! Qwen2 (q/k/v biases) — read as candle's model files are: config → weights (names as in the
//! Hugging Face checkpoint) → forward. The layers come from [`crate::nn`]; this file only says
//! how they are wired. Phi-3 is this wiring too, with its projections fused in the checkpoint
//! (`models/phi3.rs` loads it into [`Llama`]).

use burn::tensor::{DType as BurnDType, Device, Tensor};

use super::{CausalLm, DecoderLayer, LayerRopes, decode_layers};
use crate::config::{Architecture, LayerAttention, ModelConfig};
use crate::nn::{
    Embedding, GatedMlp, KvLayout, LayerCache, Linear, PagedKv, RmsNorm, SelfAttention, add_host,
    off_host, to_dtype,
};
use crate::weights::{GgufLayout, Loader};
use crate::{LoadError, RuntimeError, SeqInput};

/// How llama.cpp's converter names and lays out this family's tensors.
pub(crate) const GGUF_LAYOUT: GgufLayout = GgufLayout {
    name: gguf_name,
    permuted_heads,
};

/// The projections of one layer as a checkpoint stores them: separate (Llama) or fused
/// (Phi-3's `qkv_proj` and `gate_up_proj`). Either way the layer holds them fused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Projections {
    Separate,
    Fused,
}

/// One decoder layer: pre-norm attention and a pre-norm gated MLP, each added to the residual.
#[derive(Debug)]
pub(crate) struct Layer {
    input_layernorm: RmsNorm,
    self_attn: SelfAttention,
    post_attention_layernorm: RmsNorm,
    mlp: GatedMlp,
    attention: LayerAttention,
}

impl Layer {
    pub(crate) fn load(
        loader: &Loader<'_>,
        i: usize,
        c: &ModelConfig,
        projections: Projections,
    ) -> Result<Self, LoadError> {
        let p = format!("model.layers.{i}");
        let (hidden, inter) = (c.hidden_size, c.intermediate_size);
        let (q_dim, kv_dim) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        let norm = |name: &str| -> Result<RmsNorm, LoadError> {
            Ok(RmsNorm::new(
                loader.vector(&format!("{p}.{name}.weight"), hidden)?,
                c.rms_norm_eps,
            ))
        };
        let a = format!("{p}.self_attn");
        let (qkv, gate_up) = match projections {
            Projections::Separate => (
                loader.linear(&[
                    (&format!("{a}.q_proj.weight"), [q_dim, hidden]),
                    (&format!("{a}.k_proj.weight"), [kv_dim, hidden]),
                    (&format!("{a}.v_proj.weight"), [kv_dim, hidden]),
                ])?,
                loader.linear(&[
                    (&format!("{p}.mlp.gate_proj.weight"), [inter, hidden]),
                    (&format!("{p}.mlp.up_proj.weight"), [inter, hidden]),
                ])?,
            ),
            Projections::Fused => (
                loader.linear(&[(
                    &format!("{a}.qkv_proj.weight"),
                    [q_dim + 2 * kv_dim, hidden],
                )])?,
                loader.linear(&[(&format!("{p}.mlp.gate_up_proj.weight"), [2 * inter, hidden])])?,
            ),
        };
        let o_proj = loader.linear(&[(&format!("{a}.o_proj.weight"), [hidden, q_dim])])?;
        let mut self_attn = SelfAttention::new(qkv, o_proj, c);
        if c.attention_bias {
            self_attn = self_attn.with_bias(loader.vectors(&[
                (&format!("{a}.q_proj.bias"), q_dim),
                (&format!("{a}.k_proj.bias"), kv_dim),
                (&format!("{a}.v_proj.bias"), kv_dim),
            ])?);
        }
        Ok(Self {
            input_layernorm: norm("input_layernorm")?,
            self_attn,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            mlp: GatedMlp::new(
                gate_up,
                loader.linear(&[(&format!("{p}.mlp.down_proj.weight"), [hidden, inter])])?,
                c.activation,
            ),
            attention: c.layer_attention[i],
        })
    }
}

impl DecoderLayer for Layer {
    fn attention(&self) -> LayerAttention {
        self.attention
    }

    fn forward(&self, x: Tensor<2>, cache: LayerCache<'_>) -> Result<Tensor<2>, RuntimeError> {
        let h = self.input_layernorm.forward(x.clone());
        let x = x.add(self.self_attn.forward(h, cache)?);
        let h = self.post_attention_layernorm.forward(x.clone());
        Ok(x.add(self.mlp.forward(h)?))
    }

    /// Whether `m` rows can go through the layer on the host ([`forward_host`](Self::forward_host)).
    fn on_host(&self, m: usize) -> bool {
        self.input_layernorm.on_host()
            && self.post_attention_layernorm.on_host()
            && self.self_attn.on_host(m)
            && self.mlp.on_host(m)
    }

    /// [`forward`](Self::forward) on `m` rows on the host (a decode step's few rows on the CPU):
    /// the norms, the projections, SwiGLU and the residual adds without a tensor between them —
    /// each of burn's small ops allocated and dispatched, ~30 of them per layer.
    fn forward_host(
        &self,
        x: &[f32],
        m: usize,
        cache: LayerCache<'_>,
        device: &Device,
    ) -> Result<Vec<f32>, RuntimeError> {
        let h = self.input_layernorm.forward_host(x).ok_or_else(off_host)?;
        let attended = self.self_attn.forward_host(&h, m, cache, device)?;
        let x = add_host(x, &attended);
        let h = self
            .post_attention_layernorm
            .forward_host(&x)
            .ok_or_else(off_host)?;
        let y = self.mlp.forward_host(&h, m).ok_or_else(off_host)??;
        Ok(add_host(&x, &y))
    }
}

/// A Llama-family model with its KV cache.
#[derive(Debug)]
pub(crate) struct Llama {
    config: ModelConfig,
    device: Device,
    dtype: BurnDType,
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    ropes: LayerRopes,
    kv: PagedKv,
}

impl Llama {
    /// Reads the weights through `loader` (shapes from `config`, projections stored as
    /// `projections` says) and allocates a KV pool laid out as `kv`.
    pub(crate) fn load(
        config: ModelConfig,
        loader: &mut Loader<'_>,
        kv: KvLayout,
        projections: Projections,
    ) -> Result<Self, LoadError> {
        let c = &config;
        let hidden = c.hidden_size;
        // A tied output layer reuses the embedding; GGUF marks it by omitting `output.weight`.
        let untied_head = loader.contains("lm_head.weight") && !c.tie_word_embeddings;
        loader.expect_groups(2 + c.num_layers + usize::from(loader.contains("lm_head.weight")));
        let (embed_tokens, tied_head) =
            loader.embedding("model.embed_tokens.weight", [c.vocab_size, hidden])?;
        loader.group_loaded();
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            layers.push(Layer::load(loader, i, c, projections)?);
            loader.group_loaded();
        }
        let norm = RmsNorm::new(loader.vector("model.norm.weight", hidden)?, c.rms_norm_eps);
        loader.group_loaded();
        let lm_head = if untied_head {
            let head = loader.linear(&[("lm_head.weight", [c.vocab_size, hidden])])?;
            loader.group_loaded();
            head
        } else {
            tied_head
        };
        let kv = PagedKv::new(
            c.kv_groups(),
            (c.num_kv_heads, c.head_dim),
            kv,
            loader.device(),
        );
        Ok(Self {
            ropes: LayerRopes::new(&config),
            device: loader.device().clone(),
            dtype: loader.dtype(),
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
            kv,
        })
    }
}

impl Llama {
    /// The dtype activations are computed in.
    pub(crate) fn compute_dtype(&self) -> BurnDType {
        self.dtype
    }
}

impl CausalLm for Llama {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn kv(&self) -> &PagedKv {
        &self.kv
    }

    fn embed(&self, ids: &[u32]) -> Tensor<2> {
        to_dtype(self.embed_tokens.forward(ids, &self.device), self.dtype)
    }

    fn decode(
        &mut self,
        batch: &[SeqInput<'_>],
        x: Tensor<2>,
        capture: Option<&mut Vec<Tensor<2>>>,
    ) -> Result<Tensor<2>, RuntimeError> {
        let step = self
            .ropes
            .step(&self.config, &self.kv, batch, (&self.device, self.dtype));
        decode_layers(
            &self.layers,
            (&mut self.kv, &step),
            x,
            capture,
            (&self.device, self.config.hidden_size),
        )
    }

    fn final_norm(&self, x: Tensor<2>) -> Tensor<2> {
        self.norm.forward(x)
    }

    fn lm_head(&self, h: Tensor<2>) -> Result<Tensor<2>, RuntimeError> {
        self.lm_head.forward(h)
    }
}

/// The GGUF name of a layer tensor whose Hugging Face name ends in a tail `rename` maps
/// (`model.layers.3.self_attn.q_norm.weight` → `blk.3.attn_q_norm.weight`); else Llama's.
pub(super) fn gguf_name_with(hf: &str, rename: fn(&str) -> Option<&'static str>) -> String {
    let renamed = hf
        .strip_prefix("model.layers.")
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(layer, tail)| Some(format!("blk.{layer}.{}", rename(tail)?)));
    renamed.unwrap_or_else(|| gguf_name(hf))
}

/// The GGUF name of a Hugging Face Llama/Qwen2 tensor name.
pub(super) fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let Some(rest) = hf.strip_prefix("model.layers.") else {
        return hf.to_string();
    };
    let Some((layer, tail)) = rest.split_once('.') else {
        return hf.to_string();
    };
    let mapped = match tail {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => return format!("blk.{layer}.{other}"),
    };
    format!("blk.{layer}.{mapped}")
}

/// llama.cpp permutes q/k rows (weights and biases) for its interleaved RoPE on `llama` models
/// only.
fn permuted_heads(name: &str, c: &ModelConfig) -> Option<usize> {
    if c.architecture != Architecture::Llama {
        None
    } else if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
        Some(c.num_heads)
    } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
        Some(c.num_kv_heads)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names() {
        assert_eq!(gguf_name("model.embed_tokens.weight"), "token_embd.weight");
        assert_eq!(
            gguf_name("model.layers.12.self_attn.o_proj.weight"),
            "blk.12.attn_output.weight"
        );
        assert_eq!(
            gguf_name("model.layers.0.mlp.down_proj.weight"),
            "blk.0.ffn_down.weight"
        );
    }
}
