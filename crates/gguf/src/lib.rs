//! A bounds-checked GGUF (v2/v3) reader, plus a small writer for making test models.
//!
//! [`GgufFile::open`] memory-maps a file and parses its header: the metadata (a [`Metadata`] with
//! typed getters) and the tensor index ([`TensorInfo`]). Tensor data is never copied;
//! [`GgufFile::tensor_data`] returns a slice of the mapping.
//!
//! Every length and count in the file is checked against the bytes that remain before anything
//! is allocated for it, so a corrupt or hostile file gives a [`GgufError`] naming what was wrong
//! and where, never a panic or a huge allocation.
//!
//! ```
//! use kiln_gguf::{GgmlType, GgufFile, GgufWriter};
//!
//! let bytes = GgufWriter::new()
//!     .add("general.architecture", "llama")
//!     .add_tensor("norm.weight", &[4], GgmlType::F32, vec![0u8; 16])
//!     .to_bytes()?;
//! let file = GgufFile::from_bytes(bytes)?;
//! assert_eq!(file.metadata().get_str("general.architecture")?, "llama");
//! let norm = file.tensor("norm.weight").expect("written above");
//! assert_eq!(file.tensor_data(norm)?.len(), 16);
//! # Ok::<(), kiln_gguf::GgufError>(())
//! ```

mod error;
mod file;
mod ggml_type;
mod metadata;
mod reader;
mod value;
mod write;

pub use error::GgufError;
pub use file::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GgufFile, MAX_DIMS, TensorInfo};
pub use ggml_type::GgmlType;
pub use metadata::Metadata;
pub use value::{Array, MAX_ARRAY_DEPTH, Value, ValueType};
pub use write::GgufWriter;

#[cfg(test)]
mod tests;
