//! A Llama-family model's shape and hyper-parameters, read from a Hugging Face `config.json` or
//! from GGUF metadata, validated once so the model code can trust it.

use serde_json::Value;

use crate::LoadError;

/// Which family's tensor names and details apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 2/3, SmolLM2, Mistral (no sliding window).
    Llama,
    /// Qwen2: Llama with biases on the q/k/v projections.
    Qwen2,
}

/// RoPE frequency scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
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
    /// The context length: positions at or past it are refused.
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v (Qwen2).
    pub attention_bias: bool,
}

impl ModelConfig {
    /// Reads a Hugging Face `config.json` (already parsed). `origin` names the file for errors.
    pub fn from_hf_json(json: &Value, origin: &str) -> Result<Self, LoadError> {
        let bad = |message: String| LoadError::Config {
            origin: origin.to_string(),
            message,
        };
        let usize_of = |key: &str| -> Result<Option<usize>, LoadError> {
            match json.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| bad(format!("`{key}` must be a non-negative integer, got {v}"))),
            }
        };
        let f32_of = |v: &Value, key: &str| -> Result<f32, LoadError> {
            v.as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| bad(format!("`{key}` must be a number, got {v}")))
        };
        let required = |key: &str| -> Result<usize, LoadError> {
            usize_of(key)?.ok_or_else(|| bad(format!("`{key}` is missing")))
        };

        let model_type = json
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("llama");
        let architecture = match model_type {
            "llama" | "mistral" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            other => {
                return Err(bad(format!(
                    "model_type {other:?} is not supported (Kiln runs llama, mistral, qwen2)"
                )));
            }
        };
        if let Some(act) = json
            .get("hidden_act")
            .and_then(Value::as_str)
            .filter(|act| *act != "silu")
        {
            return Err(bad(format!(
                "hidden_act {act:?} is not supported (only silu)"
            )));
        }
        let hidden_size = required("hidden_size")?;
        let num_heads = required("num_attention_heads")?;
        let head_dim = match usize_of("head_dim")? {
            Some(d) => d,
            None if num_heads > 0 => hidden_size / num_heads,
            None => 0,
        };

        // transformers 5 nests RoPE settings in `rope_parameters`; older files use `rope_theta`
        // and `rope_scaling` at the top level.
        let rope = json
            .get("rope_parameters")
            .filter(|v| v.is_object())
            .or_else(|| json.get("rope_scaling").filter(|v| v.is_object()));
        let rope_theta = match rope
            .and_then(|r| r.get("rope_theta"))
            .or(json.get("rope_theta"))
        {
            Some(v) => f32_of(v, "rope_theta")?,
            None => 10_000.0,
        };
        let rope_scaling = match rope {
            None => None,
            Some(r) => {
                let kind = r
                    .get("rope_type")
                    .or_else(|| r.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                let field = |key: &str| -> Result<f32, LoadError> {
                    r.get(key)
                        .ok_or_else(|| bad(format!("rope scaling `{kind}` needs `{key}`")))
                        .and_then(|v| f32_of(v, key))
                };
                match kind {
                    "default" => None,
                    "llama3" => Some(RopeScaling::Llama3 {
                        factor: field("factor")?,
                        low_freq_factor: field("low_freq_factor")?,
                        high_freq_factor: field("high_freq_factor")?,
                        original_max_position_embeddings: field(
                            "original_max_position_embeddings",
                        )?,
                    }),
                    "linear" => Some(RopeScaling::Linear {
                        factor: field("factor")?,
                    }),
                    other => {
                        return Err(bad(format!("rope scaling {other:?} is not supported")));
                    }
                }
            }
        };
        let config = Self {
            architecture,
            vocab_size: required("vocab_size")?,
            hidden_size,
            intermediate_size: required("intermediate_size")?,
            num_layers: required("num_hidden_layers")?,
            num_heads,
            num_kv_heads: usize_of("num_key_value_heads")?.unwrap_or(num_heads),
            head_dim,
            rms_norm_eps: match json.get("rms_norm_eps") {
                Some(v) => f32_of(v, "rms_norm_eps")?,
                None => 1e-6,
            },
            rope_theta,
            rope_scaling,
            max_position_embeddings: usize_of("max_position_embeddings")?.unwrap_or(2048),
            tie_word_embeddings: json
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            attention_bias: json
                .get("attention_bias")
                .and_then(Value::as_bool)
                .unwrap_or(architecture == Architecture::Qwen2),
        };
        config.validate().map_err(bad)?;
        Ok(config)
    }

    /// Reads GGUF metadata (`general.architecture` = `llama` or `qwen2`, then `<arch>.*`).
    /// Whether the output layer is tied is decided by the tensors present, not here.
    pub fn from_gguf(meta: &kiln_gguf::Metadata) -> Result<Self, LoadError> {
        let arch = meta.get_str("general.architecture")?;
        let architecture = match arch {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            other => {
                return Err(LoadError::Config {
                    origin: "GGUF metadata".into(),
                    message: format!(
                        "general.architecture {other:?} is not supported (Kiln runs llama, qwen2)"
                    ),
                });
            }
        };
        let key = |name: &str| format!("{arch}.{name}");
        let get =
            |name: &str| -> Result<usize, LoadError> { Ok(meta.get_u64(&key(name))? as usize) };
        let num_heads = get("attention.head_count")?;
        let hidden_size = get("embedding_length")?;
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
                return Err(LoadError::Config {
                    origin: "GGUF metadata".into(),
                    message: format!("rope scaling {other:?} is not supported"),
                });
            }
        };
        let config = Self {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size: get("feed_forward_length")?,
            num_layers: get("block_count")?,
            num_heads,
            num_kv_heads: match meta.opt_u64(&key("attention.head_count_kv"))? {
                Some(n) => n as usize,
                None => num_heads,
            },
            head_dim,
            rms_norm_eps: meta.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: meta.opt_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: get("context_length")?,
            tie_word_embeddings: false,
            attention_bias: architecture == Architecture::Qwen2,
        };
        config.validate().map_err(|message| LoadError::Config {
            origin: "GGUF metadata".into(),
            message,
        })?;
        Ok(config)
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
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!(
                "rms_norm_eps ({}) must be positive",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!("rope_theta ({}) must be positive", self.rope_theta));
        }
        Ok(())
    }

    /// RoPE inverse frequencies (`head_dim / 2` of them), with any scaling applied, exactly as
    /// transformers computes them.
    pub fn inv_freq(&self) -> Vec<f32> {
        let half = self.head_dim / 2;
        let base: Vec<f32> = (0..half)
            .map(|i| {
                let exponent = (2 * i) as f32 / self.head_dim as f32;
                1.0 / self.rope_theta.powf(exponent)
            })
            .collect();
        match self.rope_scaling {
            None => base,
            Some(RopeScaling::Linear { factor }) => base.into_iter().map(|f| f / factor).collect(),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_context,
            }) => {
                let low_freq_wavelen = old_context / low_freq_factor;
                let high_freq_wavelen = old_context / high_freq_factor;
                base.into_iter()
                    .map(|freq| {
                        let wavelen = 2.0 * std::f32::consts::PI / freq;
                        if wavelen > low_freq_wavelen {
                            freq / factor
                        } else if wavelen < high_freq_wavelen {
                            freq
                        } else {
                            let smooth = (old_context / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * freq / factor + smooth * freq
                        }
                    })
                    .collect()
            }
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
