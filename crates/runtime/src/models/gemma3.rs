//! Gemma 3 (text) — `Gemma3ForCausalLM`, GGUF `gemma3` — read as candle's model files are:
//! config → weights (names as in the Hugging Face checkpoint) → forward. What differs from
//! Llama: the embedding is scaled by √hidden; every norm multiplies by `1 + w`; attention and
//! MLP each sit between a pre-norm and a post-norm; q and k are normed per head before RoPE and
//! `q·k` is scaled by `1/√query_pre_attn_scalar`; the MLP is GeGLU; five sliding-window layers
//! (their own RoPE base) alternate with one global layer; the output layer is the embedding.

use burn::tensor::{DType as BurnDType, Device, Tensor};

use super::{CausalLm, DecoderLayer, LayerRopes, decode_layers};
use crate::config::{LayerAttention, ModelConfig};
use crate::nn::{
    Embedding, GatedMlp, KvLayout, LayerCache, Linear, PagedKv, RmsNorm, SelfAttention, add_host,
    off_host, to_dtype,
};
use crate::weights::{CheckpointFormat, GgufLayout, Loader};
use crate::{LoadError, RuntimeError, SeqInput};

/// How llama.cpp's converter names this family's tensors (no q/k permutation: Gemma's RoPE is
/// `rotate_half` in llama.cpp too).
pub(crate) const GGUF_LAYOUT: GgufLayout = GgufLayout {
    name: gguf_name,
    permuted_heads: |_, _| None,
};

/// A Gemma norm: `x / rms(x) · (1 + w)`. A Hugging Face checkpoint stores `w`; llama.cpp's
/// converter stores `1 + w` already, so the GGUF value is used as it is.
fn norm(loader: &Loader<'_>, name: &str, len: usize, eps: f32) -> Result<RmsNorm, LoadError> {
    let w = loader.vector(name, len)?;
    let w = match loader.format() {
        CheckpointFormat::Safetensors => w.add_scalar(1.0),
        CheckpointFormat::Gguf => w,
    };
    Ok(RmsNorm::new(w, eps))
}

/// One decoder layer: attention and the MLP, each between a pre-norm and a post-norm, each
/// added to the residual.
#[derive(Debug)]
struct Layer {
    input_layernorm: RmsNorm,
    self_attn: SelfAttention,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    mlp: GatedMlp,
    post_feedforward_layernorm: RmsNorm,
    attention: LayerAttention,
}

impl Layer {
    fn load(loader: &Loader<'_>, i: usize, c: &ModelConfig) -> Result<Self, LoadError> {
        let p = format!("model.layers.{i}");
        let (hidden, inter, eps) = (c.hidden_size, c.intermediate_size, c.rms_norm_eps);
        let (q_dim, kv_dim) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        let a = format!("{p}.self_attn");
        let qkv = loader.linear(&[
            (&format!("{a}.q_proj.weight"), [q_dim, hidden]),
            (&format!("{a}.k_proj.weight"), [kv_dim, hidden]),
            (&format!("{a}.v_proj.weight"), [kv_dim, hidden]),
        ])?;
        let o_proj = loader.linear(&[(&format!("{a}.o_proj.weight"), [hidden, q_dim])])?;
        let self_attn = SelfAttention::new(qkv, o_proj, c).with_qk_norms(
            norm(loader, &format!("{a}.q_norm.weight"), c.head_dim, eps)?,
            norm(loader, &format!("{a}.k_norm.weight"), c.head_dim, eps)?,
        );
        let layer_norm = |name: &str| norm(loader, &format!("{p}.{name}.weight"), hidden, eps);
        Ok(Self {
            input_layernorm: layer_norm("input_layernorm")?,
            self_attn,
            post_attention_layernorm: layer_norm("post_attention_layernorm")?,
            pre_feedforward_layernorm: layer_norm("pre_feedforward_layernorm")?,
            mlp: GatedMlp::new(
                loader.linear(&[
                    (&format!("{p}.mlp.gate_proj.weight"), [inter, hidden]),
                    (&format!("{p}.mlp.up_proj.weight"), [inter, hidden]),
                ])?,
                loader.linear(&[(&format!("{p}.mlp.down_proj.weight"), [hidden, inter])])?,
                c.activation,
            ),
            post_feedforward_layernorm: layer_norm("post_feedforward_layernorm")?,
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
        let h = self.self_attn.forward(h, cache)?;
        let x = x.add(self.post_attention_layernorm.forward(h));
        let h = self.pre_feedforward_layernorm.forward(x.clone());
        let h = self.mlp.forward(h)?;
        Ok(x.add(self.post_feedforward_layernorm.forward(h)))
    }

    /// Whether `m` rows can go through the layer on the host ([`forward_host`](Self::forward_host)).
    fn on_host(&self, m: usize) -> bool {
        [
            &self.input_layernorm,
            &self.post_attention_layernorm,
            &self.pre_feedforward_layernorm,
            &self.post_feedforward_layernorm,
        ]
        .iter()
        .all(|n| n.on_host())
            && self.self_attn.on_host(m)
            && self.mlp.on_host(m)
    }

    /// [`forward`](Self::forward) on `m` rows on the host: the norms, the projections, GeGLU
    /// and the residual adds without a tensor between them (only the q/k norms, RoPE and
    /// attention over the cache are tensors).
    fn forward_host(
        &self,
        x: &[f32],
        m: usize,
        cache: LayerCache<'_>,
        device: &Device,
    ) -> Result<Vec<f32>, RuntimeError> {
        let norm = |n: &RmsNorm, xs: &[f32]| n.forward_host(xs).ok_or_else(off_host);
        let h = norm(&self.input_layernorm, x)?;
        let h = self.self_attn.forward_host(&h, m, cache, device)?;
        let x = add_host(x, &norm(&self.post_attention_layernorm, &h)?);
        let h = norm(&self.pre_feedforward_layernorm, &x)?;
        let h = self.mlp.forward_host(&h, m).ok_or_else(off_host)??;
        Ok(add_host(&x, &norm(&self.post_feedforward_layernorm, &h)?))
    }
}

/// A Gemma 3 model with its KV cache.
#[derive(Debug)]
pub(crate) struct Gemma3 {
    config: ModelConfig,
    device: Device,
    dtype: BurnDType,
    embed_tokens: Embedding,
    /// √hidden, as transformers rounds it (a Python float made an f32 tensor).
    embed_scale: f32,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    ropes: LayerRopes,
    kv: PagedKv,
}

impl Gemma3 {
    /// Reads the weights through `loader` (shapes from `config`) and allocates a KV pool laid
    /// out as `kv`.
    pub(crate) fn load(
        config: ModelConfig,
        loader: &mut Loader<'_>,
        kv: KvLayout,
    ) -> Result<Self, LoadError> {
        let c = &config;
        let hidden = c.hidden_size;
        let untied_head = loader.contains("lm_head.weight") && !c.tie_word_embeddings;
        loader.expect_groups(2 + c.num_layers + usize::from(untied_head));
        let (embed_tokens, tied_head) =
            loader.embedding("model.embed_tokens.weight", [c.vocab_size, hidden])?;
        loader.group_loaded();
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            layers.push(Layer::load(loader, i, c)?);
            loader.group_loaded();
        }
        let final_norm = norm(loader, "model.norm.weight", hidden, c.rms_norm_eps)?;
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
            embed_scale: (hidden as f64).sqrt() as f32,
            ropes: LayerRopes::new(&config),
            device: loader.device().clone(),
            dtype: loader.dtype(),
            config,
            embed_tokens,
            layers,
            norm: final_norm,
            lm_head,
            kv,
        })
    }
}

impl CausalLm for Gemma3 {
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
        let x = self.embed_tokens.forward(ids, &self.device);
        to_dtype(x.mul_scalar(self.embed_scale), self.dtype)
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
        let logits = self.lm_head.forward(h)?;
        Ok(match self.config.final_logit_softcapping {
            Some(cap) => logits.div_scalar(cap).tanh().mul_scalar(cap),
            None => logits,
        })
    }
}

/// The GGUF name of a Hugging Face Gemma 3 tensor name: Llama's names, plus the q/k norms and
/// the sandwich norms.
fn gguf_name(hf: &str) -> String {
    super::llama::gguf_name_with(hf, |tail| {
        Some(match tail {
            "self_attn.q_norm.weight" => "attn_q_norm.weight",
            "self_attn.k_norm.weight" => "attn_k_norm.weight",
            "post_attention_layernorm.weight" => "post_attention_norm.weight",
            "pre_feedforward_layernorm.weight" => "ffn_norm.weight",
            "post_feedforward_layernorm.weight" => "post_ffw_norm.weight",
            _ => return None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names() {
        assert_eq!(gguf_name("model.embed_tokens.weight"), "token_embd.weight");
        assert_eq!(
            gguf_name("model.layers.3.post_attention_layernorm.weight"),
            "blk.3.post_attention_norm.weight"
        );
        assert_eq!(
            gguf_name("model.layers.0.pre_feedforward_layernorm.weight"),
            "blk.0.ffn_norm.weight"
        );
        assert_eq!(
            gguf_name("model.layers.17.self_attn.k_norm.weight"),
            "blk.17.attn_k_norm.weight"
        );
        assert_eq!(
            gguf_name("model.layers.2.self_attn.q_proj.weight"),
            "blk.2.attn_q.weight"
        );
    }
}
