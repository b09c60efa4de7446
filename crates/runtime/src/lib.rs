//! The burn model runtime: token ids and KV block tables in, logits out.
//!
//! The public API is burn-free, so the scheduler above never sees a tensor: a [`Model`] is
//! loaded from a GGUF file or a Hugging Face directory onto a [`DeviceKind`], and each
//! [`Model::forward`] runs a ragged batch of sequences — each with its new tokens, its start
//! position and its KV block table — returning logits per sequence.

mod config;
mod device;
mod error;
pub mod kernels;
mod models;
mod nn;
pub mod quant;
mod weights;

use std::path::Path;

pub use config::{
    Activation, Architecture, KvGroups, LayerAttention, ModelConfig, RopeFrequencies, RopeScaling,
};
pub use device::{DType, DeviceKind, GpuAdapter, GpuDevice, gpu_adapters, gpu_device};
pub use error::{LoadError, RuntimeError};
/// Bytes this process may still allocate (what a KV budget is checked against).
pub use nn::memory_available;
pub use quant::{QuantError, dequantize, dequantize_to_vec};
pub use weights::read_safetensors;

/// A block-table entry for a page given back: allowed only where its group no longer reads —
/// before a sliding group's window ([`KvGroups`]) — which a step never touches.
pub const FREED_BLOCK: u32 = u32::MAX;

/// Positions per KV block unless told otherwise.
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// Positions a running sequence holds on average in a KV cache sized by [`KvCacheSize::Auto`].
/// A long sequence borrows from short ones; when the pool is full the scheduler waits or
/// preempts, so this bounds memory, not any one request.
pub const KV_TOKENS_PER_SEQUENCE: usize = 1024;

/// Share of the memory available at load that an automatically sized KV cache may take.
pub const KV_AUTO_MEMORY_FRACTION: f64 = 0.25;

/// How big the KV cache is. Its blocks are allocated once at load; pages the kernel has not yet
/// handed out cost nothing until a sequence writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCacheSize {
    /// This many bytes.
    Bytes(usize),
    /// Room for this many positions, all sequences together.
    Tokens(usize),
    /// Sized from the model: `running` sequences of [`KV_TOKENS_PER_SEQUENCE`] positions each
    /// and at least one whole context (`context`, at most the model's; the model's when
    /// `None`), in at most [`KV_AUTO_MEMORY_FRACTION`] of the memory available at load.
    Auto {
        running: usize,
        context: Option<usize>,
    },
}

impl Default for KvCacheSize {
    /// One sequence of the model's whole context (a server passes its `--max-running`).
    fn default() -> Self {
        Self::Auto {
            running: 1,
            context: None,
        }
    }
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: DeviceKind,
    /// The compute dtype.
    pub dtype: DType,
    /// Positions per KV block.
    pub block_size: usize,
    /// How many blocks the KV cache has (derived once at load).
    pub kv_cache: KvCacheSize,
    /// The dtype K and V are stored in. f16 halves the cache; f32 keeps a step's results
    /// bit-identical to an f32 reference.
    pub kv_dtype: DType,
    /// A GGUF model's vision tower and projector, in llama.cpp's `mmproj` GGUF.
    pub mmproj: Option<std::path::PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: DeviceKind::Cpu,
            dtype: DType::F32,
            block_size: DEFAULT_BLOCK_SIZE,
            kv_cache: KvCacheSize::default(),
            kv_dtype: DType::F16,
            mmproj: None,
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
    /// The KV pages holding positions `0..start + tokens.len()`: for each block of positions
    /// in order, one page per KV group ([`Model::kv_groups`]; one group for most models), so
    /// entry `block * groups + group`. A sliding group's pages wholly before
    /// `start + 1 - window` may be [`FREED_BLOCK`]: it reads them no more.
    pub block_table: &'a [u32],
    /// Logits at every new position (for prompt logprobs and tests), not only the last.
    pub all_logits: bool,
    /// Rows that replace the embeddings of some of `tokens` (an image's tokens); empty for
    /// text.
    pub embeds: &'a [Embeds<'a>],
}

/// Embedding rows for consecutive new tokens of a step, from [`Model::encode_image`]: they
/// replace the token embeddings of `tokens[at..at + rows.len() / hidden]`.
#[derive(Debug, Clone, Copy)]
pub struct Embeds<'a> {
    pub at: usize,
    pub rows: &'a [f32],
}

/// What a vision model takes: the token its image rows replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisionInfo {
    pub image_token_id: u32,
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
    inner: models::Family,
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
        Ok(Self {
            inner: models::Family::load(path, options, progress)?,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        self.inner.config()
    }

    /// How the layers share the KV pages: a table holds one page per block per group.
    pub fn kv_groups(&self) -> &KvGroups {
        self.inner.kv().groups()
    }

    /// Pages in the KV pool (fixed at load); each holds a block of positions of one KV group.
    pub fn num_blocks(&self) -> usize {
        self.inner.kv().num_blocks()
    }

    /// Positions per KV block.
    pub fn block_size(&self) -> usize {
        self.inner.kv().block_size()
    }

    /// The dtype the KV cache stores.
    pub fn kv_dtype(&self) -> DType {
        self.inner.kv().dtype()
    }

    /// Bytes of the KV pool (fixed at load).
    pub fn kv_cache_bytes(&self) -> usize {
        self.inner.kv().bytes()
    }

    /// The model's vision input, if it takes images.
    pub fn vision(&self) -> Option<VisionInfo> {
        self.inner.vision()
    }

    /// An image's processed tiles through the vision tower and projector: the rows, `[tokens,
    /// hidden]` row-major, that replace its image tokens' embeddings ([`SeqInput::embeds`]).
    pub fn encode_image(&self, tiles: &[kiln_media::Tile]) -> Result<Vec<f32>, RuntimeError> {
        self.inner.encode_image(tiles)
    }

    /// Runs one step over a ragged batch. A sequence's logits do not depend on what else is in
    /// the batch.
    pub fn forward(&mut self, batch: &[SeqInput<'_>]) -> Result<Vec<SeqLogits>, RuntimeError> {
        let inner = &mut self.inner;
        on_pool(|| inner.forward(batch))
    }

    /// Runs one step like [`forward`](Self::forward) — the KV cache is written the same way —
    /// and returns every sequence's hidden states instead of logits (for checking a model
    /// against a reference layer by layer).
    pub fn hidden_states(
        &mut self,
        batch: &[SeqInput<'_>],
    ) -> Result<Vec<SeqHiddenStates>, RuntimeError> {
        let inner = &mut self.inner;
        on_pool(|| inner.hidden_states(batch))
    }
}

/// Runs a step on one of the CPU kernels' pool workers, so each of its ~120 kernel calls is
/// split from inside the pool: the calling worker takes its share at once and the others
/// steal the rest. Called from outside, every call would wake a worker and then put the
/// caller to sleep until the last share is done — two context switches per call, ~10% of a
/// one-row decode step in the profile.
fn on_pool<R: Send>(step: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| step())
}
