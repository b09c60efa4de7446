//! The burn model runtime: token ids and KV block tables in, logits out.
//!
//! The public API is burn-free, so the scheduler above never sees a tensor: a [`Model`] is
//! loaded from a GGUF file or a Hugging Face directory onto a [`DeviceKind`], and each
//! [`Model::forward`] runs a ragged batch of sequences — each with its new tokens, its start
//! position and its KV block table — returning logits per sequence.

mod config;
mod error;
mod kernels;
mod linear;
mod llama;
mod nn;
pub mod quant;
mod weights;

use std::path::Path;

pub use config::{Architecture, ModelConfig, RopeScaling};
pub use error::{LoadError, RuntimeError};
pub use quant::{QuantError, dequantize, dequantize_to_vec};

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// burn's `flex` CPU backend (SIMD, rayon).
    #[default]
    Cpu,
    /// A GPU (or a software Vulkan driver) through wgpu; needs the `wgpu` cargo feature.
    Wgpu,
}

impl std::str::FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            other => Err(format!("unknown device {other:?} (cpu or wgpu)")),
        }
    }
}

/// The compute dtype: weights are cast to it once at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DType {
    #[default]
    F32,
    F16,
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            other => Err(format!("unknown dtype {other:?} (f32 or f16)")),
        }
    }
}

impl DType {
    fn burn(self) -> burn::tensor::DType {
        match self {
            Self::F32 => burn::tensor::DType::F32,
            Self::F16 => burn::tensor::DType::F16,
        }
    }

    fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
        }
    }
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: DeviceKind,
    pub dtype: DType,
    /// Positions per KV block.
    pub block_size: usize,
    /// Memory for the KV cache, in bytes; the number of blocks is derived from it once.
    pub kv_cache_bytes: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: DeviceKind::Cpu,
            dtype: DType::F32,
            block_size: 16,
            kv_cache_bytes: 256 << 20,
        }
    }
}

/// Loading progress: `done` of `total` weight groups are on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadProgress {
    pub done: usize,
    pub total: usize,
}

/// One sequence's part of a step.
#[derive(Debug, Clone, Copy)]
pub struct SeqInput<'a> {
    /// The new tokens: a prefill chunk, or one decode token.
    pub tokens: &'a [u32],
    /// The position of `tokens[0]`; positions before it are already in the cache.
    pub start: usize,
    /// The KV blocks holding positions `0..start + tokens.len()`, in order.
    pub block_table: &'a [u32],
    /// Logits at every new position (for prompt logprobs and tests), not only the last.
    pub all_logits: bool,
}

/// Logits for one sequence: `rows` rows of `vocab` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqLogits {
    pub rows: usize,
    pub vocab: usize,
    pub data: Vec<f32>,
}

impl SeqLogits {
    /// The last row: the distribution of the next token.
    pub fn last(&self) -> &[f32] {
        let start = self.rows.saturating_sub(1) * self.vocab;
        self.data.get(start..start + self.vocab).unwrap_or_default()
    }

    pub fn row(&self, i: usize) -> Option<&[f32]> {
        self.data.get(i * self.vocab..(i + 1) * self.vocab)
    }
}

/// Hidden states of one sequence's new positions, in transformers' `output_hidden_states` order:
/// the embedding output, the output of every layer but the last, and the last layer's output
/// after the final norm — `num_layers + 1` matrices of `rows × hidden`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqHiddenStates {
    pub rows: usize,
    pub hidden: usize,
    pub states: Vec<Vec<f32>>,
}

/// A loaded model with its KV cache.
#[derive(Debug)]
pub struct Model {
    inner: llama::Llama,
}

impl Model {
    /// Loads a GGUF file or a Hugging Face directory (`config.json` + safetensors).
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Self, LoadError> {
        Self::load_with_progress(path, options, &mut |_| {})
    }

    /// Like [`load`](Self::load), reporting progress as weights reach the device.
    pub fn load_with_progress(
        path: &Path,
        options: &LoadOptions,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Self, LoadError> {
        if options.block_size == 0 {
            return Err(LoadError::Unsupported("block_size must be positive".into()));
        }
        let (config, weights) = if path.is_dir() {
            let config_path = path.join("config.json");
            let bytes = std::fs::read(&config_path).map_err(LoadError::io(&config_path))?;
            let json: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| LoadError::Format {
                    path: config_path.clone(),
                    message: e.to_string(),
                })?;
            let config = ModelConfig::from_hf_json(&json, &config_path.display().to_string())?;
            (config, weights::Weights::safetensors(path)?)
        } else {
            let file = kiln_gguf::GgufFile::open(path)?;
            let config = ModelConfig::from_gguf(file.metadata())?;
            let weights = weights::Weights::gguf(file, path.to_path_buf(), &config);
            (config, weights)
        };
        let device = device(options.device)?;
        let per_block = 2
            * config.num_layers
            * config.num_kv_heads
            * config.head_dim
            * options.block_size
            * options.dtype.size();
        let num_blocks = options.kv_cache_bytes / per_block.max(1);
        if num_blocks == 0 {
            return Err(LoadError::Unsupported(format!(
                "a KV cache of {} bytes holds no block of {} positions ({per_block} bytes each)",
                options.kv_cache_bytes, options.block_size
            )));
        }
        let inner = llama::Llama::load(
            config,
            &weights,
            &device,
            options.dtype,
            options.device == DeviceKind::Cpu && options.dtype == DType::F32,
            num_blocks,
            options.block_size,
            progress,
        )?;
        Ok(Self { inner })
    }

    pub fn config(&self) -> &ModelConfig {
        self.inner.config()
    }

    /// Blocks in the KV pool (fixed at load).
    pub fn num_blocks(&self) -> usize {
        self.inner.num_blocks()
    }

    /// Positions per KV block.
    pub fn block_size(&self) -> usize {
        self.inner.block_size()
    }

    /// Runs one step over a ragged batch. A sequence's logits do not depend on what else is in
    /// the batch.
    pub fn forward(&mut self, batch: &[SeqInput<'_>]) -> Result<Vec<SeqLogits>, RuntimeError> {
        self.inner.forward(batch)
    }

    /// Runs one step like [`forward`](Self::forward) — the KV cache is written the same way —
    /// and returns every sequence's hidden states instead of logits (for checking a model
    /// against a reference layer by layer).
    pub fn hidden_states(
        &mut self,
        batch: &[SeqInput<'_>],
    ) -> Result<Vec<SeqHiddenStates>, RuntimeError> {
        self.inner.hidden_states(batch)
    }
}

fn device(kind: DeviceKind) -> Result<burn::tensor::Device, LoadError> {
    match kind {
        DeviceKind::Cpu => Ok(burn::tensor::Device::flex()),
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => Ok(burn::tensor::Device::wgpu(Default::default())),
        #[cfg(not(feature = "wgpu"))]
        DeviceKind::Wgpu => Err(LoadError::Unsupported(
            "this build has no wgpu support (build with `--features wgpu`)".into(),
        )),
    }
}
