//! Phi-3 — `Phi3ForCausalLM`, GGUF `phi3` — is Llama's wiring over projections the checkpoint
//! stores fused (`qkv_proj`, `gate_up_proj` with gate first), with partial RoPE, `longrope`
//! scaling and a sliding window, all of which are data in [`ModelConfig`]. This file reads the
//! checkpoint into a [`Llama`].

use super::llama::{self, Llama, Projections};
use crate::LoadError;
use crate::config::ModelConfig;
use crate::nn::KvLayout;
use crate::weights::{GgufLayout, Loader};

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

/// The GGUF name of a Hugging Face Phi-3 tensor name: Llama's, with the fused projections'.
fn gguf_name(hf: &str) -> String {
    let renamed = hf
        .strip_prefix("model.layers.")
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(layer, tail)| {
            let mapped = match tail {
                "self_attn.qkv_proj.weight" => "attn_qkv.weight",
                "mlp.gate_up_proj.weight" => "ffn_up.weight",
                _ => return None,
            };
            Some(format!("blk.{layer}.{mapped}"))
        });
    renamed.unwrap_or_else(|| llama::gguf_name(hf))
}
