//! kiln-runtime's integration tests, one binary: dequantization against gguf-py, the tiny
//! random Llama against transformers (CI runs `tiny_llama::` again on wgpu), and SmolLM2 and
//! Gemma 3 270M (real GGUFs) against their float32 references, tiny Mistral and Phi-3 from
//! safetensors and GGUF against transformers; the tiny random SmolVLM (Idefics3) with its
//! images, processor and prompt expansion against transformers, and the tiny random Pixtral
//! likewise — both from safetensors and from GGUF + mmproj.

// Helpers outside #[test] fns unwrap too: a test should fail loudly.
#![allow(clippy::unwrap_used)]

mod common;
mod families;
mod gemma3;
mod pixtral;
mod quant;
mod smollm2;
mod smolvlm;
mod tiny_llama;
