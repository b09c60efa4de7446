//! Weights on the host, from either checkpoint format behind one small trait: a
//! [`TensorSource`] maps a checkpoint tensor name (Hugging Face naming) to its values, checked
//! against the shape the family's config implies; the [`Loader`] turns those into the model's
//! layers on the device, fusing row-stacked projections and choosing each matrix's
//! [`Placement`](crate::device::Placement).
//!
//! Sources: GGUF ([`gguf`]: dequantized, or kept in the block formats the CPU kernels read, with
//! each family's name map and llama.cpp's q/k row permutation undone) and safetensors
//! ([`safetensors`]: single or sharded; F32, F16, BF16).

mod gguf;
mod loader;
mod safetensors;

use std::path::{Path, PathBuf};

pub(crate) use gguf::{GgufLayout, GgufSource};
pub(crate) use loader::Loader;
pub(crate) use safetensors::SafetensorsSource;
pub use safetensors::read_all as read_safetensors;

use crate::LoadError;
use crate::kernels::PackedMatrix;

/// A weight on the host, row-major, in Hugging Face layout (`[out, in]` for projections).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostTensor {
    pub(crate) shape: Vec<usize>,
    pub(crate) data: Vec<f32>,
}

/// A weight as a source hands it over: f32 values, or GGUF blocks the CPU kernels read as they
/// are.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawTensor {
    F32(HostTensor),
    Packed(PackedMatrix),
}

impl RawTensor {
    /// The values as f32 (packed blocks dequantized exactly).
    pub(crate) fn into_host(self) -> HostTensor {
        match self {
            Self::F32(t) => t,
            Self::Packed(p) => HostTensor {
                shape: vec![p.rows, p.cols],
                data: p.dequantize(),
            },
        }
    }
}

/// Which kind of file a checkpoint is. A few families' GGUF tensors are not the Hugging Face
/// values (llama.cpp's converter adds 1 to Gemma's norm weights), so a family may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckpointFormat {
    Gguf,
    Safetensors,
}

/// A checkpoint's tensors by name.
pub(crate) trait TensorSource: std::fmt::Debug {
    fn format(&self) -> CheckpointFormat;

    /// Whether the checkpoint has a tensor of this (Hugging Face) name.
    fn contains(&self, name: &str) -> bool;

    /// The tensor `name`, checked to have `shape` (row-major). With `keep_packed`, a matrix
    /// stored in a block format the CPU kernels read stays in its blocks.
    fn tensor(
        &self,
        name: &str,
        shape: &[usize],
        keep_packed: bool,
    ) -> Result<RawTensor, LoadError>;
}

#[allow(unsafe_code)]
fn map_file(path: &Path) -> Result<memmap2::Mmap, LoadError> {
    let file = std::fs::File::open(path).map_err(LoadError::io(path))?;
    // SAFETY: the map is read-only and Kiln never writes model files; as with any mmap, another
    // process truncating the file while it is mapped would fault, which we accept for weights.
    unsafe { memmap2::Mmap::map(&file) }.map_err(LoadError::io(path))
}

/// The one shape check every source runs: the checkpoint's shape must be what the config says.
fn check_shape(
    name: &str,
    path: &Path,
    found: &[usize],
    expected: &[usize],
) -> Result<(), LoadError> {
    if found == expected {
        Ok(())
    } else {
        Err(LoadError::Shape {
            name: name.to_string(),
            path: path.to_path_buf(),
            expected: expected.to_vec(),
            found: found.to_vec(),
        })
    }
}

/// A JSON file (a config or a shard index), parsed.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, LoadError> {
    let bytes = std::fs::read(path).map_err(LoadError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| LoadError::Format {
        path: PathBuf::from(path),
        message: e.to_string(),
    })
}
