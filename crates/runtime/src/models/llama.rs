//! The Llama family — Llama 2/3, SmolLM2, Mistral (no sliding window), Qwen2 (q/k/v biases) —
//! read as candle's model files are: config → weights (names as in the Hugging Face checkpoint)
//! → forward. The layers come from [`crate::nn`]; this file only says how they are wired.

use burn::tensor::{DType as BurnDType, Device, Tensor, TensorData};

use super::CausalLm;
use crate::config::{Architecture, ModelConfig};
use crate::nn::{
    Embedding, KvLayout, LayerKv, Linear, PagedKv, RmsNorm, Rope, RopeTables, StepSlots, SwiGlu,
    host_f32, host_vector, to_dtype,
};
use crate::weights::{GgufLayout, Loader};
use crate::{LoadError, RuntimeError, SeqInput};

/// How llama.cpp's converter names and lays out this family's tensors.
pub(crate) const GGUF_LAYOUT: GgufLayout = GgufLayout {
    name: gguf_name,
    permuted_heads,
};

/// Self-attention: q, k and v fused into one projection of `(heads + 2 * kv_heads) * head_dim`
/// outputs (and biases, for Qwen2), then the output projection.
#[derive(Debug)]
struct SelfAttention {
    qkv: Linear,
    qkv_bias: Option<Tensor<1>>,
    /// `qkv_bias` on the host, for the host path.
    qkv_bias_host: Option<Vec<f32>>,
    o_proj: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn load(loader: &Loader<'_>, p: &str, c: &ModelConfig) -> Result<Self, LoadError> {
        let (hidden, q_dim, kv_dim) = (
            c.hidden_size,
            c.num_heads * c.head_dim,
            c.num_kv_heads * c.head_dim,
        );
        let qkv = loader.linear(&[
            (&format!("{p}.q_proj.weight"), [q_dim, hidden]),
            (&format!("{p}.k_proj.weight"), [kv_dim, hidden]),
            (&format!("{p}.v_proj.weight"), [kv_dim, hidden]),
        ])?;
        let qkv_bias = if c.attention_bias {
            Some(loader.vectors(&[
                (&format!("{p}.q_proj.bias"), q_dim),
                (&format!("{p}.k_proj.bias"), kv_dim),
                (&format!("{p}.v_proj.bias"), kv_dim),
            ])?)
        } else {
            None
        };
        Ok(Self {
            qkv,
            qkv_bias_host: qkv_bias.as_ref().and_then(host_vector),
            qkv_bias,
            o_proj: loader.linear(&[(&format!("{p}.o_proj.weight"), [hidden, q_dim])])?,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
        })
    }

    /// `x` `[tokens, hidden]` (normed) → attention output `[tokens, hidden]`; this layer's K/V
    /// are stored in `kv` at the step's slots.
    fn forward(
        &self,
        x: Tensor<2>,
        rope: &RopeTables,
        kv: &mut LayerKv,
        step: &StepSlots,
    ) -> Result<Tensor<2>, RuntimeError> {
        let mut qkv = self.qkv.forward(x)?;
        if let Some(bias) = &self.qkv_bias {
            qkv = qkv.add(bias.clone().unsqueeze_dim::<2>(0));
        }
        self.o_proj.forward(self.attend(qkv, rope, kv, step))
    }

    /// Whether `m` rows can stay on the host through [`forward_host`](Self::forward_host).
    fn on_host(&self, m: usize) -> bool {
        self.qkv.on_host(m)
            && self.o_proj.on_host(m)
            && self.qkv_bias.is_some() == self.qkv_bias_host.is_some()
    }

    /// [`forward`](Self::forward) on `m` normed rows on the host: the projections on Kiln's
    /// CPU kernels, only RoPE and attention over the cache as tensors.
    fn forward_host(
        &self,
        h: &[f32],
        m: usize,
        (rope, kv, step): (&RopeTables, &mut LayerKv, &StepSlots),
        device: &Device,
    ) -> Result<Vec<f32>, RuntimeError> {
        let mut qkv = self.qkv.forward_host(h, m).ok_or_else(off_host)??;
        if let Some(bias) = &self.qkv_bias_host {
            for row in qkv.chunks_exact_mut(bias.len()) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        }
        let width = qkv.len() / m.max(1);
        let qkv = Tensor::from_data(TensorData::new(qkv, [m, width]), device);
        let attended = host_f32(self.attend(qkv, rope, kv, step))?;
        self.o_proj
            .forward_host(&attended, m)
            .ok_or_else(off_host)?
    }

    /// Splits the projected `qkv` `[tokens, q + 2 kv]`, rotates q and k, stores k and v at the
    /// step's slots and attends: `[tokens, heads * head_dim]`.
    fn attend(
        &self,
        qkv: Tensor<2>,
        rope: &RopeTables,
        kv: &mut LayerKv,
        step: &StepSlots,
    ) -> Tensor<2> {
        let [total, _] = qkv.dims();
        let (heads, kv_heads, head_dim) = (self.heads, self.kv_heads, self.head_dim);
        let (q_dim, kv_dim) = (heads * head_dim, kv_heads * head_dim);
        let q = qkv
            .clone()
            .slice([0..total, 0..q_dim])
            .reshape([total, heads, head_dim]);
        let k = qkv
            .clone()
            .slice([0..total, q_dim..q_dim + kv_dim])
            .reshape([total, kv_heads, head_dim]);
        let v = qkv.slice([0..total, q_dim + kv_dim..q_dim + 2 * kv_dim]);
        let q = rope.apply(q);
        let k = rope.apply(k).reshape([total, kv_dim]);
        kv.attend(step, q, k, v)
    }
}

/// The error a host path gives where a layer it was promised would run on the host does not
/// (a bug: [`Layer::on_host`] is checked first).
fn off_host() -> RuntimeError {
    RuntimeError::Backend("a layer's host path met a projection off the host".into())
}

/// One decoder layer: pre-norm attention and pre-norm SwiGLU, each added to the residual.
#[derive(Debug)]
struct Layer {
    input_layernorm: RmsNorm,
    self_attn: SelfAttention,
    post_attention_layernorm: RmsNorm,
    mlp: SwiGlu,
}

impl Layer {
    fn load(loader: &Loader<'_>, i: usize, c: &ModelConfig) -> Result<Self, LoadError> {
        let p = format!("model.layers.{i}");
        let (hidden, inter) = (c.hidden_size, c.intermediate_size);
        let norm = |name: &str| -> Result<RmsNorm, LoadError> {
            Ok(RmsNorm::new(
                loader.vector(&format!("{p}.{name}.weight"), hidden)?,
                c.rms_norm_eps,
            ))
        };
        Ok(Self {
            input_layernorm: norm("input_layernorm")?,
            self_attn: SelfAttention::load(loader, &format!("{p}.self_attn"), c)?,
            post_attention_layernorm: norm("post_attention_layernorm")?,
            mlp: SwiGlu::new(
                loader.linear(&[
                    (&format!("{p}.mlp.gate_proj.weight"), [inter, hidden]),
                    (&format!("{p}.mlp.up_proj.weight"), [inter, hidden]),
                ])?,
                loader.linear(&[(&format!("{p}.mlp.down_proj.weight"), [hidden, inter])])?,
            ),
        })
    }

    fn forward(
        &self,
        x: Tensor<2>,
        rope: &RopeTables,
        kv: &mut LayerKv,
        step: &StepSlots,
    ) -> Result<Tensor<2>, RuntimeError> {
        let h = self.input_layernorm.forward(x.clone());
        let x = x.add(self.self_attn.forward(h, rope, kv, step)?);
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
        cache: (&RopeTables, &mut LayerKv, &StepSlots),
        device: &Device,
    ) -> Result<Vec<f32>, RuntimeError> {
        let h = self.input_layernorm.forward_host(x).ok_or_else(off_host)?;
        let attended = self.self_attn.forward_host(&h, m, cache, device)?;
        let x: Vec<f32> = x.iter().zip(&attended).map(|(a, b)| a + b).collect();
        let h = self
            .post_attention_layernorm
            .forward_host(&x)
            .ok_or_else(off_host)?;
        let y = self.mlp.forward_host(&h, m).ok_or_else(off_host)??;
        Ok(x.iter().zip(&y).map(|(a, b)| a + b).collect())
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
    rope: Rope,
    kv: PagedKv,
}

impl Llama {
    /// Reads the weights through `loader` (shapes from `config`) and allocates a KV pool of
    /// `num_blocks` blocks of `block_size` positions.
    pub(crate) fn load(
        config: ModelConfig,
        loader: &mut Loader<'_>,
        kv: KvLayout,
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
            layers.push(Layer::load(loader, i, c)?);
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
            c.num_layers,
            (c.num_kv_heads, c.head_dim),
            kv,
            loader.device(),
        );
        Ok(Self {
            rope: Rope::new(config.inv_freq()),
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
        mut x: Tensor<2>,
        mut capture: Option<&mut Vec<Tensor<2>>>,
    ) -> Result<Tensor<2>, RuntimeError> {
        let positions: Vec<usize> = batch
            .iter()
            .flat_map(|seq| seq.start..seq.start + seq.tokens.len())
            .collect();
        let step = self.kv.slots(batch, &self.device);
        let rope = self.rope.tables(&positions, &self.device, self.dtype);
        let total = positions.len();
        if self.layers.iter().all(|layer| layer.on_host(total)) {
            let hidden = self.config.hidden_size;
            let on_device = |xs: Vec<f32>| {
                Tensor::<2>::from_data(TensorData::new(xs, [total, hidden]), &self.device)
            };
            let mut xs = host_f32(x)?;
            for (layer, kv) in self.layers.iter().zip(self.kv.layers_mut()) {
                if let Some(states) = capture.as_deref_mut() {
                    states.push(on_device(xs.clone()));
                }
                xs = layer.forward_host(&xs, total, (&rope, kv, &step), &self.device)?;
            }
            return Ok(on_device(xs));
        }
        for (layer, kv) in self.layers.iter().zip(self.kv.layers_mut()) {
            if let Some(states) = capture.as_deref_mut() {
                states.push(x.clone());
            }
            x = layer.forward(x, &rope, kv, &step)?;
        }
        Ok(x)
    }

    fn final_norm(&self, x: Tensor<2>) -> Tensor<2> {
        self.norm.forward(x)
    }

    fn lm_head(&self, h: Tensor<2>) -> Result<Tensor<2>, RuntimeError> {
        self.lm_head.forward(h)
    }
}

/// The GGUF name of a Hugging Face Llama/Qwen2 tensor name.
fn gguf_name(hf: &str) -> String {
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
