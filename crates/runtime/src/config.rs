//! A model's shape and hyper-parameters, read from a Hugging Face `config.json` or from GGUF
//! metadata, validated once so the model code can trust it. Every family Kiln runs is read
//! here into one [`ModelConfig`]; what differs between them is data (which layers slide, which
//! RoPE base each uses, the activation), not code paths.

use serde_json::Value;

use crate::LoadError;

/// Which family's tensor names and wiring apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 2/3, SmolLM2, Mistral (with its sliding window) and Mistral-Nemo shapes.
    Llama,
    /// Qwen2: Llama with biases on the q/k/v projections.
    Qwen2,
    /// Gemma 3 (text): scaled embedding, `(1 + w)` norms around attention and MLP, q/k norms,
    /// GeGLU, interleaved sliding-window and global layers.
    Gemma3,
    /// Phi-3: fused qkv and gate/up projections, partial and `longrope` RoPE, a sliding window.
    Phi3,
}

/// The families, as the unsupported-architecture errors list them.
const FAMILIES: &str = "llama, mistral, qwen2, gemma3, phi3";

/// Which context positions a layer attends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerAttention {
    /// Every earlier position.
    Full,
    /// The last [`ModelConfig::sliding_window`] positions (itself included).
    Sliding,
}

/// The gated MLP's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU (`silu`).
    Silu,
    /// GeGLU with the tanh approximation of GELU (`gelu_pytorch_tanh`).
    GeluTanh,
}

/// RoPE frequency scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
    /// Positions divided by `factor`.
    Linear { factor: f32 },
    /// Phi-3's `longrope`: each frequency divided by its own factor — the long ones when the
    /// model's context exceeds the context it was trained at (llama.cpp's rule; transformers
    /// switches by the length of each forward, so the two agree on prompts longer than
    /// `original_max_position_embeddings`) — and cos/sin scaled by `attention_factor`.
    LongRope {
        short_factor: Vec<f32>,
        long_factor: Vec<f32>,
        original_max_position_embeddings: usize,
        attention_factor: f32,
    },
}

/// How the layers share the KV cache's pages (vLLM's hybrid allocator, in small): layers are
/// split into groups of equal size, each group's layers attending alike (all full, or all within
/// one window). A page holds `block_size` positions of K and V for one group — one slot in
/// each of the group's layers — so a sequence holds a page per block per group, and a sliding
/// group's pages that slid out of its window go back to the pool while the full groups keep
/// every position. A model whose layers all attend alike is one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvGroups {
    /// Per group: the window its layers attend within (`None`: every earlier position).
    pub windows: Vec<Option<usize>>,
    /// Per layer: its group, and its place in the group (which of the pool's per-place K/V
    /// tensors it uses).
    pub layers: Vec<(usize, usize)>,
    /// Layers per group.
    pub size: usize,
}

impl KvGroups {
    /// Groups of `gcd(full, sliding)` layers (Gemma 3 270M: 3 full and 15 sliding layers make
    /// one full group and five sliding ones of 3), full groups first, layers in order.
    fn of(c: &ModelConfig) -> Self {
        let kinds = &c.layer_attention;
        let full = kinds.iter().filter(|k| **k == LayerAttention::Full).count();
        let sliding = kinds.len() - full;
        let size = gcd(full, sliding).max(1);
        let mut windows = Vec::new();
        let mut layers = vec![(0, 0); kinds.len()];
        for kind in [LayerAttention::Full, LayerAttention::Sliding] {
            let members: Vec<usize> = (0..kinds.len()).filter(|&i| kinds[i] == kind).collect();
            for chunk in members.chunks(size) {
                for (place, &layer) in chunk.iter().enumerate() {
                    layers[layer] = (windows.len(), place);
                }
                windows.push(c.window(kind));
            }
        }
        Self {
            windows,
            layers,
            size,
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// One layer kind's rotary embedding: inverse frequencies (`rotary_dim / 2`) and the factor
/// cos and sin are scaled by.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeFrequencies {
    pub inv_freq: Vec<f32>,
    pub attention_factor: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: Option<RopeScaling>,
    /// The RoPE base of sliding layers when it is their own (Gemma 3's local layers, which are
    /// never scaled); `None`: every layer uses `rope_theta` and `rope_scaling`.
    pub rope_local_theta: Option<f32>,
    /// The dimensions of each head that rotate (partial RoPE); the rest pass through.
    pub rotary_dim: usize,
    /// The context length: positions at or past it are refused.
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v (Qwen2).
    pub attention_bias: bool,
    /// Positions a [`LayerAttention::Sliding`] layer sees, itself included.
    pub sliding_window: Option<usize>,
    /// Each layer's attention, `num_layers` of them.
    pub layer_attention: Vec<LayerAttention>,
    /// What multiplies `q·k`: `1/√head_dim`, or `1/√query_pre_attn_scalar` (Gemma).
    pub attention_scale: f32,
    pub activation: Activation,
    /// `cap · tanh(logits / cap)` on the output (Gemma 2-style); `None` for most.
    pub final_logit_softcapping: Option<f32>,
}

/// Reads typed values out of a Hugging Face `config.json`, naming the file in errors.
struct HfJson<'a> {
    json: &'a Value,
    origin: &'a str,
}

impl HfJson<'_> {
    fn bad(&self, message: String) -> LoadError {
        LoadError::Config {
            origin: self.origin.to_string(),
            message,
        }
    }

    fn usize(&self, key: &str) -> Result<Option<usize>, LoadError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.bad(format!("`{key}` must be a non-negative integer, got {v}"))
                }),
        }
    }

    fn required(&self, key: &str) -> Result<usize, LoadError> {
        self.usize(key)?
            .ok_or_else(|| self.bad(format!("`{key}` is missing")))
    }

    fn number(&self, v: &Value, key: &str) -> Result<f32, LoadError> {
        v.as_f64()
            .map(|x| x as f32)
            .ok_or_else(|| self.bad(format!("`{key}` must be a number, got {v}")))
    }

    fn f32(&self, key: &str) -> Result<Option<f32>, LoadError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.number(v, key).map(Some),
        }
    }

    fn f32_list(&self, r: &Value, key: &str) -> Result<Vec<f32>, LoadError> {
        r.get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| self.bad(format!("rope scaling needs a list `{key}`")))?
            .iter()
            .map(|v| self.number(v, key))
            .collect()
    }

    fn bool(&self, key: &str) -> Option<bool> {
        self.json.get(key).and_then(Value::as_bool)
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.json.get(key).and_then(Value::as_str)
    }

    /// `rope_scaling` (or transformers 5's `rope_parameters` entry `r`) as Kiln's type.
    fn rope_scaling(
        &self,
        r: &Value,
        max_position_embeddings: usize,
    ) -> Result<Option<RopeScaling>, LoadError> {
        let kind = r
            .get("rope_type")
            .or_else(|| r.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let field = |key: &str| -> Result<f32, LoadError> {
            r.get(key)
                .ok_or_else(|| self.bad(format!("rope scaling `{kind}` needs `{key}`")))
                .and_then(|v| self.number(v, key))
        };
        Ok(match kind {
            "default" => None,
            "llama3" => Some(RopeScaling::Llama3 {
                factor: field("factor")?,
                low_freq_factor: field("low_freq_factor")?,
                high_freq_factor: field("high_freq_factor")?,
                original_max_position_embeddings: field("original_max_position_embeddings")?,
            }),
            "linear" => Some(RopeScaling::Linear {
                factor: field("factor")?,
            }),
            "longrope" => {
                let original = match r.get("original_max_position_embeddings") {
                    Some(v) => self.number(v, "original_max_position_embeddings")? as usize,
                    None => self
                        .usize("original_max_position_embeddings")?
                        .ok_or_else(|| {
                            self.bad("longrope needs `original_max_position_embeddings`".into())
                        })?,
                };
                let attention_factor = match r.get("attention_factor").filter(|v| !v.is_null()) {
                    Some(v) => self.number(v, "attention_factor")?,
                    None => longrope_attention_factor(max_position_embeddings, original),
                };
                Some(RopeScaling::LongRope {
                    short_factor: self.f32_list(r, "short_factor")?,
                    long_factor: self.f32_list(r, "long_factor")?,
                    original_max_position_embeddings: original,
                    attention_factor,
                })
            }
            other => {
                return Err(self.bad(format!(
                    "rope scaling {other:?} is not supported (Kiln reads default, linear, llama3, longrope)"
                )));
            }
        })
    }
}

/// transformers' default `longrope` attention factor: `√(1 + ln(s) / ln(original))` with
/// `s = context / original`, 1 when the context is not extended.
fn longrope_attention_factor(context: usize, original: usize) -> f32 {
    let scale = context as f64 / original as f64;
    if scale <= 1.0 || original <= 1 {
        1.0
    } else {
        (1.0 + scale.ln() / (original as f64).ln()).sqrt() as f32
    }
}

/// Gemma 3's layer pattern when a file does not list it: every `pattern`-th layer is global.
fn every_nth_global(layers: usize, pattern: usize) -> Vec<LayerAttention> {
    (0..layers)
        .map(|i| {
            if pattern > 0 && (i + 1) % pattern == 0 {
                LayerAttention::Full
            } else {
                LayerAttention::Sliding
            }
        })
        .collect()
}

impl ModelConfig {
    /// Reads a Hugging Face `config.json` (already parsed). `origin` names the file for errors.
    pub fn from_hf_json(json: &Value, origin: &str) -> Result<Self, LoadError> {
        let top = HfJson { json, origin };
        let model_type = top.str("model_type").unwrap_or("llama");
        let architecture = match model_type {
            "llama" | "mistral" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            "gemma3_text" => Architecture::Gemma3,
            "phi3" => Architecture::Phi3,
            "gemma3" => {
                return Err(top.bad(
                    "model_type \"gemma3\" is Gemma 3 with its vision tower; Kiln runs the text \
                     model (`Gemma3ForCausalLM`, model_type \"gemma3_text\") for now"
                        .into(),
                ));
            }
            other => {
                return Err(top.bad(format!(
                    "model_type {other:?} is not supported (Kiln runs {FAMILIES})"
                )));
            }
        };
        let gemma = architecture == Architecture::Gemma3;
        let activation_key = if gemma {
            "hidden_activation"
        } else {
            "hidden_act"
        };
        let activation = match top.str(activation_key).or(top.str("hidden_act")) {
            None if gemma => Activation::GeluTanh,
            None | Some("silu") => Activation::Silu,
            Some("gelu_pytorch_tanh") => Activation::GeluTanh,
            Some(act) => {
                return Err(top.bad(format!(
                    "{activation_key} {act:?} is not supported (Kiln runs silu, gelu_pytorch_tanh)"
                )));
            }
        };
        if let Some(cap) = top.f32("attn_logit_softcapping")? {
            return Err(top.bad(format!(
                "attn_logit_softcapping ({cap}) is not supported (Gemma 2's; Gemma 3 has none)"
            )));
        }
        let hidden_size = top.required("hidden_size")?;
        let num_heads = top.required("num_attention_heads")?;
        let num_layers = top.required("num_hidden_layers")?;
        let head_dim = match top.usize("head_dim")? {
            Some(d) => d,
            None if num_heads > 0 => hidden_size / num_heads,
            None => 0,
        };
        let max_position_embeddings = top.usize("max_position_embeddings")?.unwrap_or(2048);

        // transformers 5 nests RoPE settings in `rope_parameters` (for Gemma 3, one entry per
        // layer kind); older files use `rope_theta` and `rope_scaling` at the top level.
        let parameters = json.get("rope_parameters").filter(|v| v.is_object());
        let (global, local) = match parameters {
            Some(p) if p.get("full_attention").is_some() => {
                (p.get("full_attention"), p.get("sliding_attention"))
            }
            Some(p) => (Some(p), None),
            None => (json.get("rope_scaling").filter(|v| v.is_object()), None),
        };
        let theta_of = |r: Option<&Value>| -> Result<Option<f32>, LoadError> {
            match r.and_then(|r| r.get("rope_theta")) {
                Some(v) => top.number(v, "rope_theta").map(Some),
                None => Ok(None),
            }
        };
        let rope_theta = match theta_of(global)? {
            Some(t) => t,
            None => top.f32("rope_theta")?.unwrap_or(10_000.0),
        };
        let rope_scaling = match global {
            Some(r) => top.rope_scaling(r, max_position_embeddings)?,
            None => None,
        };
        let rope_local_theta = match (theta_of(local)?, top.f32("rope_local_base_freq")?) {
            (Some(t), _) | (None, Some(t)) => Some(t),
            (None, None) if gemma => Some(10_000.0),
            (None, None) => None,
        };
        let rotary_dim = match top.f32("partial_rotary_factor")? {
            Some(f) if f > 0.0 && f < 1.0 => (head_dim as f32 * f) as usize,
            _ => head_dim,
        };

        let sliding_window = match (architecture, top.usize("sliding_window")?) {
            // Qwen2 lists a window it only uses when told to.
            (Architecture::Qwen2, _) if top.bool("use_sliding_window") != Some(true) => None,
            (_, window) => window,
        };
        let layer_attention = match json.get("layer_types").and_then(Value::as_array) {
            Some(types) => types
                .iter()
                .map(|t| match t.as_str() {
                    Some("full_attention") => Ok(LayerAttention::Full),
                    Some("sliding_attention") => Ok(LayerAttention::Sliding),
                    _ => Err(top.bad(format!("layer_types: {t} is not a layer type Kiln runs"))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            None if gemma => every_nth_global(
                num_layers,
                top.usize("sliding_window_pattern")?
                    .or(top.usize("_sliding_window_pattern")?)
                    .unwrap_or(6),
            ),
            None if architecture == Architecture::Qwen2 && sliding_window.is_some() => {
                let first = top.usize("max_window_layers")?.unwrap_or(0);
                (0..num_layers)
                    .map(|i| {
                        if i >= first {
                            LayerAttention::Sliding
                        } else {
                            LayerAttention::Full
                        }
                    })
                    .collect()
            }
            None if sliding_window.is_some() => vec![LayerAttention::Sliding; num_layers],
            None => vec![LayerAttention::Full; num_layers],
        };
        let attention_scale = match top.f32("query_pre_attn_scalar")? {
            Some(s) if gemma => 1.0 / s.sqrt(),
            _ => 1.0 / (head_dim as f32).sqrt(),
        };

        let config = Self {
            architecture,
            vocab_size: top.required("vocab_size")?,
            hidden_size,
            intermediate_size: top.required("intermediate_size")?,
            num_layers,
            num_heads,
            num_kv_heads: top.usize("num_key_value_heads")?.unwrap_or(num_heads),
            head_dim,
            rms_norm_eps: top.f32("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            rope_local_theta,
            rotary_dim,
            max_position_embeddings,
            tie_word_embeddings: top.bool("tie_word_embeddings").unwrap_or(gemma),
            attention_bias: top
                .bool("attention_bias")
                .unwrap_or(architecture == Architecture::Qwen2),
            sliding_window,
            layer_attention,
            attention_scale,
            activation,
            final_logit_softcapping: top.f32("final_logit_softcapping")?,
        };
        config.validate().map_err(|m| top.bad(m))?;
        Ok(config)
    }

    /// Reads GGUF metadata (`general.architecture`, then `<arch>.*`). Whether the output layer
    /// is tied is decided by the tensors present, not here; so are Phi-3's `longrope` factors
    /// (tensors in GGUF), which [`crate::models`] reads into [`RopeScaling::LongRope`].
    pub fn from_gguf(meta: &kiln_gguf::Metadata) -> Result<Self, LoadError> {
        let bad = |message: String| LoadError::Config {
            origin: "GGUF metadata".into(),
            message,
        };
        let arch = meta.get_str("general.architecture")?;
        let architecture = match arch {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            "gemma3" => Architecture::Gemma3,
            "phi3" => Architecture::Phi3,
            other => {
                return Err(bad(format!(
                    "general.architecture {other:?} is not supported (Kiln runs {FAMILIES})"
                )));
            }
        };
        let gemma = architecture == Architecture::Gemma3;
        let key = |name: &str| format!("{arch}.{name}");
        let get =
            |name: &str| -> Result<usize, LoadError> { Ok(meta.get_u64(&key(name))? as usize) };
        let num_heads = get("attention.head_count")?;
        let hidden_size = get("embedding_length")?;
        let num_layers = get("block_count")?;
        let vocab_size = match meta.opt_u64(&key("vocab_size"))? {
            Some(n) => n as usize,
            None => meta.get_str_array("tokenizer.ggml.tokens")?.len(),
        };
        let head_dim = match meta.opt_u64(&key("attention.key_length"))? {
            Some(n) => n as usize,
            None if num_heads > 0 => hidden_size / num_heads,
            None => 0,
        };
        let rope_scaling = match meta.opt_str(&key("rope.scaling.type"))? {
            None | Some("none") => None,
            Some("linear") => Some(RopeScaling::Linear {
                factor: meta.get_f32(&key("rope.scaling.factor"))?,
            }),
            Some(other) => {
                return Err(bad(format!("rope scaling {other:?} is not supported")));
            }
        };
        let rotary_dim = match meta.opt_u64(&key("rope.dimension_count"))? {
            Some(n) if (n as usize) < head_dim && !gemma => n as usize,
            _ => head_dim,
        };
        let sliding_window = meta
            .opt_u64(&key("attention.sliding_window"))?
            .map(|n| n as usize)
            // Phi-4 writes 0 for "none".
            .filter(|&n| n > 0);
        let pattern_key = key("attention.sliding_window_pattern");
        let layer_attention = match (sliding_window, meta.get(&pattern_key)) {
            (None, _) => vec![LayerAttention::Full; num_layers],
            // llama.cpp's pattern: every n-th layer is global, or a flag per layer (true:
            // sliding).
            (Some(_), Some(kiln_gguf::Value::Array(kiln_gguf::Array::Bool(flags)))) => flags
                .iter()
                .map(|&sliding| {
                    if sliding {
                        LayerAttention::Sliding
                    } else {
                        LayerAttention::Full
                    }
                })
                .collect(),
            (Some(_), Some(_)) => {
                let n = meta.get_u64(&pattern_key)? as usize;
                every_nth_global(num_layers, n)
            }
            // llama.cpp's Gemma 3 without the key: every sixth layer is global.
            (Some(_), None) if gemma => every_nth_global(num_layers, 6),
            (Some(_), None) => vec![LayerAttention::Sliding; num_layers],
        };
        let attention_scale = if gemma && num_layers == 62 {
            // llama.cpp's rule for Gemma 3 27B, whose query_pre_attn_scalar is hidden / heads.
            1.0 / ((hidden_size / num_heads.max(1)) as f32).sqrt()
        } else {
            1.0 / (head_dim as f32).sqrt()
        };
        let config = Self {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size: get("feed_forward_length")?,
            num_layers,
            num_heads,
            num_kv_heads: match meta.opt_u64(&key("attention.head_count_kv"))? {
                Some(n) => n as usize,
                None => num_heads,
            },
            head_dim,
            rms_norm_eps: meta.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: meta.opt_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_scaling,
            rope_local_theta: match meta.opt_f32(&key("rope.freq_base_swa"))? {
                Some(t) => Some(t),
                // llama.cpp's default for Gemma 3's local layers.
                None if gemma => Some(10_000.0),
                None => None,
            },
            rotary_dim,
            max_position_embeddings: get("context_length")?,
            tie_word_embeddings: false,
            attention_bias: architecture == Architecture::Qwen2,
            sliding_window,
            layer_attention,
            attention_scale,
            activation: if gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            final_logit_softcapping: meta.opt_f32(&key("final_logit_softcapping"))?,
        };
        config.validate().map_err(bad)?;
        Ok(config)
    }

    /// Checks a config a family completed after reading it (Phi-3's GGUF RoPE factors).
    pub(crate) fn revalidate(&self, origin: &str) -> Result<(), LoadError> {
        self.validate().map_err(|message| LoadError::Config {
            origin: origin.into(),
            message,
        })
    }

    /// Rejects shapes the model code could not run (zero sizes, heads that do not divide).
    fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head_dim ({}) must be even for RoPE",
                self.head_dim
            ));
        }
        if self.rotary_dim == 0
            || !self.rotary_dim.is_multiple_of(2)
            || self.rotary_dim > self.head_dim
        {
            return Err(format!(
                "the rotary dimension ({}) must be even and at most head_dim ({})",
                self.rotary_dim, self.head_dim
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!(
                "rms_norm_eps ({}) must be positive",
                self.rms_norm_eps
            ));
        }
        for (name, theta) in [
            ("rope_theta", Some(self.rope_theta)),
            ("the local RoPE base", self.rope_local_theta),
        ] {
            if let Some(t) = theta
                && !(t.is_finite() && t > 0.0)
            {
                return Err(format!("{name} ({t}) must be positive"));
            }
        }
        if self.layer_attention.len() != self.num_layers {
            return Err(format!(
                "layer_types lists {} layers for num_hidden_layers {}",
                self.layer_attention.len(),
                self.num_layers
            ));
        }
        let slides = self.layer_attention.contains(&LayerAttention::Sliding);
        if slides && self.sliding_window.is_none_or(|w| w == 0) {
            return Err("sliding layers need a positive sliding_window".into());
        }
        if let Some(RopeScaling::LongRope {
            short_factor,
            long_factor,
            ..
        }) = &self.rope_scaling
        {
            let half = self.rotary_dim / 2;
            if short_factor.len() != half || long_factor.len() != half {
                return Err(format!(
                    "longrope factors must have rotary_dim / 2 = {half} entries (short {}, long {})",
                    short_factor.len(),
                    long_factor.len()
                ));
            }
        }
        if let Some(cap) = self.final_logit_softcapping
            && !(cap.is_finite() && cap > 0.0)
        {
            return Err(format!("final_logit_softcapping ({cap}) must be positive"));
        }
        Ok(())
    }

    /// How the layers share the KV cache's pages ([`KvGroups`]).
    pub fn kv_groups(&self) -> KvGroups {
        KvGroups::of(self)
    }

    /// The window a layer of this kind attends within (`None`: the whole context).
    pub fn window(&self, attention: LayerAttention) -> Option<usize> {
        match attention {
            LayerAttention::Full => None,
            LayerAttention::Sliding => self.sliding_window,
        }
    }

    /// The rotary frequencies of every layer of the global kind, exactly as transformers
    /// computes them.
    pub fn inv_freq(&self) -> Vec<f32> {
        self.rope(LayerAttention::Full).inv_freq
    }

    /// The rotary embedding of a layer kind: Gemma 3's sliding layers use their own base,
    /// unscaled; every other layer `rope_theta` with `rope_scaling`.
    pub fn rope(&self, attention: LayerAttention) -> RopeFrequencies {
        let (theta, scaling) = match (attention, self.rope_local_theta) {
            (LayerAttention::Sliding, Some(local)) => (local, None),
            _ => (self.rope_theta, self.rope_scaling.as_ref()),
        };
        let dim = self.rotary_dim;
        let exponent = |i: usize| (2 * i) as f32 / dim as f32;
        let base: Vec<f32> = (0..dim / 2)
            .map(|i| 1.0 / theta.powf(exponent(i)))
            .collect();
        let inv_freq = match scaling {
            None => base,
            Some(RopeScaling::Linear { factor }) => base.into_iter().map(|f| f / factor).collect(),
            Some(RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                ..
            }) => {
                let factors = if self.max_position_embeddings > *original_max_position_embeddings {
                    long_factor
                } else {
                    short_factor
                };
                // transformers: 1 / (factor · base^(2i/dim)).
                (0..dim / 2)
                    .map(|i| 1.0 / (factors[i] * theta.powf(exponent(i))))
                    .collect()
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_context,
            }) => {
                let (factor, low, high, old) =
                    (*factor, *low_freq_factor, *high_freq_factor, *old_context);
                let low_freq_wavelen = old / low;
                let high_freq_wavelen = old / high;
                base.into_iter()
                    .map(|freq| {
                        let wavelen = 2.0 * std::f32::consts::PI / freq;
                        if wavelen > low_freq_wavelen {
                            freq / factor
                        } else if wavelen < high_freq_wavelen {
                            freq
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * freq / factor + smooth * freq
                        }
                    })
                    .collect()
            }
        };
        let attention_factor = match scaling {
            Some(RopeScaling::LongRope {
                attention_factor, ..
            }) => *attention_factor,
            _ => 1.0,
        };
        RopeFrequencies {
            inv_freq,
            attention_factor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama31(rope_in_parameters: bool) -> ModelConfig {
        let rope = serde_json::json!({
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192
        });
        let mut json = serde_json::json!({
            "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
            "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "rms_norm_eps": 1e-5, "max_position_embeddings": 131072
        });
        let key = if rope_in_parameters {
            "rope_parameters"
        } else {
            json["rope_theta"] = 500000.0.into();
            "rope_scaling"
        };
        json[key] = rope;
        match ModelConfig::from_hf_json(&json, "config.json") {
            Ok(config) => config,
            Err(err) => panic!("{err}"),
        }
    }

    /// transformers' `_compute_llama3_parameters`, in f64: high frequencies kept, low ones
    /// divided by the factor, the band between interpolated.
    fn reference_llama3(head_dim: usize) -> Vec<f64> {
        let (theta, factor, low, high, old) = (500000.0f64, 8.0, 1.0, 4.0, 8192.0);
        (0..head_dim / 2)
            .map(|i| {
                let freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                if wavelen < old / high {
                    freq
                } else if wavelen > old / low {
                    freq / factor
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    (1.0 - smooth) * freq / factor + smooth * freq
                }
            })
            .collect()
    }

    #[test]
    fn llama3_rope_scaling_matches_transformers() {
        for nested in [false, true] {
            let config = llama31(nested);
            assert_eq!(config.head_dim, 128);
            assert_eq!(config.rope_theta, 500000.0);
            let ours = config.inv_freq();
            let reference = reference_llama3(128);
            assert_eq!(ours.len(), 64);
            let mut bands = [0; 3];
            for (i, (&a, &b)) in ours.iter().zip(&reference).enumerate() {
                let rel = (f64::from(a) - b).abs() / b;
                assert!(rel < 1e-5, "inv_freq[{i}]: {a} vs {b}");
                let unscaled = 1.0 / 500000f64.powf((2 * i) as f64 / 128.0);
                let band = if (b - unscaled).abs() / unscaled < 1e-9 {
                    0
                } else if (b - unscaled / 8.0).abs() / unscaled < 1e-9 {
                    2
                } else {
                    1
                };
                bands[band] += 1;
            }
            // Llama 3.1's table has all three bands; a test that missed one would prove less.
            assert!(bands.iter().all(|&n| n > 0), "bands {bands:?}");
        }
    }

    #[test]
    fn an_unsupported_family_is_refused_naming_every_family_kiln_runs() {
        let json = serde_json::json!({
            "model_type": "falcon", "vocab_size": 10, "hidden_size": 8,
            "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2
        });
        let err = ModelConfig::from_hf_json(&json, "config.json")
            .unwrap_err()
            .to_string();
        for family in ["llama", "mistral", "qwen2", "gemma3", "phi3", "falcon"] {
            assert!(err.contains(family), "{err}");
        }
    }

    #[test]
    fn gemma3_reads_its_layer_kinds_windows_and_rope_bases() {
        // transformers 5's spelling (rope_parameters per layer kind) and the older one.
        let nested = serde_json::json!({
            "model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 640,
            "intermediate_size": 2048, "num_hidden_layers": 6, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 256, "query_pre_attn_scalar": 256,
            "sliding_window": 512, "max_position_embeddings": 32768,
            "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention",
                "sliding_attention", "sliding_attention", "full_attention"],
            "rope_parameters": {
                "full_attention": {"rope_theta": 1000000.0, "rope_type": "default"},
                "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}
            }
        });
        let older = serde_json::json!({
            "model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 640,
            "intermediate_size": 2048, "num_hidden_layers": 6, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 256, "query_pre_attn_scalar": 256,
            "sliding_window": 512, "max_position_embeddings": 32768,
            "sliding_window_pattern": 6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0
        });
        for json in [nested, older] {
            let c = ModelConfig::from_hf_json(&json, "config.json").unwrap();
            assert_eq!(c.architecture, Architecture::Gemma3);
            assert_eq!(c.activation, Activation::GeluTanh);
            assert!(c.tie_word_embeddings);
            assert_eq!(c.layer_attention[5], LayerAttention::Full);
            assert_eq!(c.layer_attention[..5], [LayerAttention::Sliding; 5]);
            assert_eq!((c.rope_theta, c.rope_local_theta), (1e6, Some(1e4)));
            assert_eq!(c.attention_scale, 1.0 / 16.0);
            // The two kinds' frequencies differ; the local ones are 10,000^(-2i/256).
            let (full, local) = (
                c.rope(LayerAttention::Full),
                c.rope(LayerAttention::Sliding),
            );
            assert_ne!(full.inv_freq, local.inv_freq);
            assert_eq!(local.inv_freq[1], 1.0 / 10_000f32.powf(2.0 / 256.0));
            // gcd(1, 5) = 1 layer per group: the global layer's, then one per sliding layer.
            let groups = c.kv_groups();
            assert_eq!(
                groups.windows,
                [None, Some(512), Some(512), Some(512), Some(512), Some(512)]
            );
            assert_eq!(groups.size, 1);
            assert_eq!(groups.layers[5], (0, 0));
            assert_eq!(groups.layers[0], (1, 0));
            assert_eq!(groups.layers[4], (5, 0));
        }
    }

    #[test]
    fn mistral_slides_in_every_layer_with_nemo_shapes() {
        let mistral = serde_json::json!({
            "model_type": "mistral", "vocab_size": 32768, "hidden_size": 5120,
            "intermediate_size": 14336, "num_hidden_layers": 2, "num_attention_heads": 32,
            "num_key_value_heads": 8, "head_dim": 128, "sliding_window": 4096
        });
        let c = ModelConfig::from_hf_json(&mistral, "config.json").unwrap();
        // Mistral-Nemo: head_dim is given, not hidden / heads (160).
        assert_eq!((c.head_dim, c.rotary_dim), (128, 128));
        let groups = c.kv_groups();
        assert_eq!((groups.windows, groups.size), (vec![Some(4096)], 2));
        let mut no_window = mistral.clone();
        no_window["sliding_window"] = serde_json::Value::Null;
        let c = ModelConfig::from_hf_json(&no_window, "config.json").unwrap();
        assert_eq!(c.kv_groups().windows, [None]);
        assert_eq!(c.layer_attention, [LayerAttention::Full; 2]);
    }

    #[test]
    fn qwen2_has_qkv_biases_unless_told_otherwise() {
        let mut json = serde_json::json!({
            "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896,
            "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "max_position_embeddings": 32768, "tie_word_embeddings": true
        });
        let config = ModelConfig::from_hf_json(&json, "config.json").ok();
        assert!(config.as_ref().is_some_and(|c| c.attention_bias));
        assert_eq!(config.map(|c| c.architecture), Some(Architecture::Qwen2));
        json["attention_bias"] = false.into();
        let config = ModelConfig::from_hf_json(&json, "config.json").ok();
        assert!(config.is_some_and(|c| !c.attention_bias));
    }
}
