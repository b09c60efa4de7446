//! The runtime's errors: loading a model, and running a step.

use std::path::{Path, PathBuf};

/// Why a model could not be loaded. Every variant names the file (and tensor) at fault.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error(transparent)]
    Gguf(#[from] kiln_gguf::GgufError),
    #[error("{origin}: {message}")]
    Config { origin: String, message: String },
    #[error("{}: tensor `{name}` is missing", path.display())]
    MissingTensor { name: String, path: PathBuf },
    #[error("{}: tensor `{name}` has shape {found:?}, expected {expected:?}", path.display())]
    Shape {
        name: String,
        path: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{}: tensor `{name}`: {message}", path.display())]
    Tensor {
        name: String,
        path: PathBuf,
        message: String,
    },
    #[error("{0}")]
    Unsupported(String),
}

impl LoadError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why a forward step could not run. The step's inputs are rejected before any work is done,
/// so the KV cache is unchanged by a failed step.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuntimeError {
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    BadTokenId { id: u32, vocab_size: usize },
    #[error("position {position} is past the model's context length {context_length}")]
    ContextExceeded {
        position: usize,
        context_length: usize,
    },
    #[error("sequence {sequence} needs {needed} KV blocks but its block table has {given}")]
    BlockTableTooShort {
        sequence: usize,
        needed: usize,
        given: usize,
    },
    #[error("KV block {block} does not exist (the pool has {num_blocks})")]
    BadBlock { block: u32, num_blocks: usize },
    #[error("sequence {sequence} has no new tokens")]
    EmptySequence { sequence: usize },
    #[error("the batch is empty")]
    EmptyBatch,
    #[error("two sequences in one step write the same KV slot (block {block})")]
    SharedWrite { block: u32 },
    #[error("image input refused: {0}")]
    BadImage(String),
    #[error(
        "sequence {sequence}'s image rows do not fit its new tokens (rows of width {hidden} \
         from token {at}, {tokens} tokens)"
    )]
    BadEmbeds {
        sequence: usize,
        at: usize,
        hidden: usize,
        tokens: usize,
    },
    #[error("the compute backend failed: {0}")]
    Backend(String),
}
