//! `GgufWriter`: serializes metadata and tensors into GGUF v3 bytes, for tests and for small
//! generated models. Its output is parsed back before it is returned, so it is always valid.

use std::fmt;
use std::path::Path;

use crate::file::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, alignment_from, parse};
use crate::value::{write_str, write_value};
use crate::{GgmlType, GgufError, Value};

/// Collects metadata and tensors, then lays them out as a GGUF v3 file.
///
/// Set `general.alignment` like any other key to change the data alignment.
#[derive(Clone, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

#[derive(Clone)]
struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

impl fmt::Debug for GgufWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The tensor data can be megabytes; list what is there, not the bytes.
        let keys: Vec<_> = self.metadata.iter().map(|(k, _)| k).collect();
        let tensors: Vec<_> = self.tensors.iter().map(|t| &t.name).collect();
        f.debug_struct("GgufWriter")
            .field("keys", &keys)
            .field("tensors", &tensors)
            .finish()
    }
}

fn pad(out: &mut Vec<u8>, alignment: usize) {
    out.resize(out.len().next_multiple_of(alignment), 0);
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata entry; entries are written in the order they were added.
    pub fn add(&mut self, key: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Adds a tensor. `dims` are in GGUF order (`dims[0]` fastest-varying); `data` must be
    /// exactly the tensor's size for a known type, and is written as-is for `Other`.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ggml_type: GgmlType,
        data: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.tensors.push(PendingTensor {
            name: name.into(),
            dims: dims.to_vec(),
            // `Other(0)` is F32 to any reader, so check it as F32.
            ggml_type: GgmlType::from_id(ggml_type.id()),
            data: data.into(),
        });
        self
    }

    /// The file's bytes; errors for anything the reader would reject, or a data-length mismatch.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let alignment = self
            .metadata
            .iter()
            .find(|(k, _)| k == ALIGNMENT_KEY)
            .map_or(Ok(DEFAULT_ALIGNMENT), |(_, v)| alignment_from(v))?;
        let align = usize::try_from(alignment).map_err(|_| GgufError::BadAlignment {
            found: alignment.to_string(),
        })?;
        for t in &self.tensors {
            let n_elements = t.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
            if let Some(expected) = n_elements.and_then(|n| t.ggml_type.n_bytes(n)) {
                let actual = t.data.len() as u64;
                if actual != expected {
                    return Err(GgufError::TensorDataLength {
                        name: t.name.clone(),
                        expected,
                        actual,
                    });
                }
            }
            // Dims the reader rejects (zero, too many, overflow) are caught by the parse below.
        }

        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_str(&mut out, key);
            write_value(&mut out, value);
        }
        let mut data_len = 0usize;
        for t in &self.tensors {
            let offset = data_len.next_multiple_of(align);
            data_len = offset + t.data.len();
            write_str(&mut out, &t.name);
            let n_dims = u32::try_from(t.dims.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&n_dims.to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
        }
        pad(&mut out, align);
        out.reserve(data_len.next_multiple_of(align));
        for t in &self.tensors {
            pad(&mut out, align);
            out.extend_from_slice(&t.data);
        }
        pad(&mut out, align);

        parse(&out)?;
        Ok(out)
    }

    /// Writes [`Self::to_bytes`] to `path`.
    pub fn write_to(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()?).map_err(|source| GgufError::Io {
            path: path.to_owned(),
            source,
        })
    }
}
