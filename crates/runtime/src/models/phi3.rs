//! Phi-3 — `Phi3ForCausalLM`, GGUF `phi3` — is Llama's wiring over projections the checkpoint
//! stores fused (`qkv_proj`, `gate_up_proj` with gate first), with partial RoPE, `longrope`
//! scaling and a sliding window, all of which are data in [`ModelConfig`]. This file reads the
//! checkpoint into a [`Llama`].

use kiln_gguf::GgufFile;

use super::llama::{self, Llama, Projections};
use crate::config::{ModelConfig, RopeScaling};
use crate::nn::KvLayout;
use crate::weights::{GgufLayout, Loader};
use crate::{LoadError, QuantError};

/// How llama.cpp's converter names Phi-3's tensors (no q/k permutation: its Phi-3 RoPE is
/// `rotate_half` too).
pub(crate) const GGUF_LAYOUT: GgufLayout = GgufLayout {
    name: gguf_name,
    permuted_heads: |_, _| None,
};

pub(crate) fn load(
    config: ModelConfig,
    loader: &mut Loader<'_>,
    kv: KvLayout,
) -> Result<Llama, LoadError> {
    Llama::load(config, loader, kv, Projections::Fused)
}

/// A Phi-3 GGUF keeps `longrope`'s factors as tensors (`rope_factors_long.weight`,
/// `rope_factors_short.weight`) and its context and attention factor as metadata; this puts
/// them into `config` (which metadata alone cannot fill).
pub(crate) fn with_gguf_rope(
    mut config: ModelConfig,
    file: &GgufFile,
) -> Result<ModelConfig, LoadError> {
    let factors = |name: &str| -> Result<Option<Vec<f32>>, LoadError> {
        let Some(info) = file.tensor(name) else {
            return Ok(None);
        };
        let values = crate::quant::dequantize_to_vec(
            info.ggml_type,
            file.tensor_data(info)?,
            info.n_elements() as usize,
        )
        .map_err(|e: QuantError| LoadError::Config {
            origin: "GGUF".into(),
            message: format!("{name}: {e}"),
        })?;
        Ok(Some(values))
    };
    let (Some(long_factor), Some(short_factor)) = (
        factors("rope_factors_long.weight")?,
        factors("rope_factors_short.weight")?,
    ) else {
        return Ok(config);
    };
    let meta = file.metadata();
    let original = meta
        .opt_u64("phi3.rope.scaling.original_context_length")?
        .map_or(config.max_position_embeddings, |n| n as usize);
    let attention_factor = meta
        .opt_f32("phi3.rope.scaling.attn_factor")?
        .unwrap_or(1.0);
    config.rope_scaling = Some(RopeScaling::LongRope {
        short_factor,
        long_factor,
        original_max_position_embeddings: original,
        attention_factor,
    });
    config.revalidate("GGUF metadata")?;
    Ok(config)
}

/// The GGUF name of a Hugging Face Phi-3 tensor name: Llama's, with the fused projections'.
fn gguf_name(hf: &str) -> String {
    llama::gguf_name_with(hf, |tail| {
        Some(match tail {
            "self_attn.qkv_proj.weight" => "attn_qkv.weight",
            "mlp.gate_up_proj.weight" => "ffn_up.weight",
            _ => return None,
        })
    })
}
