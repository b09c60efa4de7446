//! The one error type of the crate: every way a GGUF file (or a metadata lookup) can be wrong.

use std::path::PathBuf;

/// Everything that can go wrong reading, querying or writing a GGUF file.
///
/// Offsets are absolute byte offsets into the file, so a message can be checked with a hex dump.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "GGUF file truncated: reading {what} at offset {offset} needs {needed} bytes, only {available} remain"
    )]
    Truncated {
        what: String,
        offset: u64,
        /// Saturates at `u64::MAX` when a length field is absurd.
        needed: u64,
        available: u64,
    },

    #[error("not a GGUF file: magic at offset 0 is {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },

    #[error("unsupported GGUF version {version} (only versions 2 and 3 are supported)")]
    UnsupportedVersion { version: u32 },

    #[error("big-endian GGUF is not supported (version field reads {raw:#010x})")]
    BigEndian { raw: u32 },

    #[error("invalid UTF-8 in {what} at offset {offset}")]
    InvalidUtf8 { what: String, offset: u64 },

    #[error("unknown value type {type_id} for {what} at offset {offset}")]
    UnknownValueType {
        what: String,
        type_id: u32,
        offset: u64,
    },

    #[error("invalid bool byte {byte} for {what} at offset {offset} (must be 0 or 1)")]
    InvalidBool { what: String, byte: u8, offset: u64 },

    #[error("arrays nested deeper than {max} levels in {what} at offset {offset}")]
    NestingTooDeep {
        what: String,
        max: usize,
        offset: u64,
    },

    #[error("duplicate metadata key {key:?} at offset {offset}")]
    DuplicateKey { key: String, offset: u64 },

    #[error("duplicate tensor name {name:?} at offset {offset}")]
    DuplicateTensor { name: String, offset: u64 },

    #[error(
        "invalid general.alignment {found}: must be a nonzero power of two given as an unsigned integer"
    )]
    BadAlignment { found: String },

    #[error("tensor {name:?}: {n_dims} dimensions, expected 1 to {max}")]
    BadDimCount { name: String, n_dims: u32, max: u32 },

    #[error("tensor {name:?}: dimension {index} is {value}, expected 1 to {max}")]
    BadDimension {
        name: String,
        index: usize,
        value: u64,
        max: u64,
    },

    #[error("tensor {name:?}: element count of dims {dims:?} overflows")]
    ElementCountOverflow { name: String, dims: Vec<u64> },

    #[error(
        "tensor {name:?}: ne[0] = {ne0} is not a multiple of the {ggml_type} block size {block_size}"
    )]
    NotBlockMultiple {
        name: String,
        ggml_type: &'static str,
        ne0: u64,
        block_size: u64,
    },

    #[error(
        "tensor {name:?}: data offset {offset} (within the data section) is not a multiple of the alignment {alignment}"
    )]
    UnalignedTensor {
        name: String,
        offset: u64,
        alignment: u64,
    },

    #[error(
        "tensor {name:?}: data at offset {start} ({n_bytes} bytes) lies past the end of the {file_len}-byte file"
    )]
    TensorOutOfBounds {
        name: String,
        /// Absolute offset of the first byte, saturating at `u64::MAX` when it overflows.
        start: u64,
        n_bytes: u64,
        file_len: u64,
    },

    #[error("tensor {name:?} has ggml type {type_id}, which this reader does not know")]
    UnsupportedTensorType { name: String, type_id: u32 },

    #[error("metadata key {key:?} is missing")]
    MissingKey { key: String },

    #[error("metadata key {key:?} is {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },

    #[error("metadata key {key:?}: value {value} does not fit in {target}")]
    OutOfRange {
        key: String,
        value: String,
        target: &'static str,
    },

    #[error("tensor {name:?}: got {actual} data bytes, its dims and type need {expected}")]
    TensorDataLength {
        name: String,
        expected: u64,
        actual: u64,
    },
}
