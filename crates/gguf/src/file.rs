//! `GgufFile`: parsing and validating the header (metadata and tensor index) of a mapped or owned
//! GGUF file, and handing out tensor data as slices of it.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::reader::{Field, Reader};
use crate::value::read_value;
use crate::{GgmlType, GgufError, Metadata, Value};

/// The metadata key that overrides [`DEFAULT_ALIGNMENT`].
pub const ALIGNMENT_KEY: &str = "general.alignment";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most this many dimensions.
pub const MAX_DIMS: u32 = 4;
/// ggml counts elements in `int64_t`, so anything larger cannot be a real tensor.
const MAX_ELEMENTS: u64 = i64::MAX as u64;

/// The smallest possible metadata entry: an empty key, a type tag and a one-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// The smallest possible tensor info: an empty name, n_dims, one dim, the type and the offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

/// One entry of the tensor index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF (ggml) order: `dims[0]` is the fastest-varying dimension, i.e. the row length.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute offset of the data in the file.
    pub offset: u64,
    /// Size of the data; `None` when `ggml_type` is [`GgmlType::Other`].
    pub n_bytes: Option<u64>,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }
}

/// Everything the header says, parsed and validated against the file's length.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) version: u32,
    pub(crate) metadata: Metadata,
    pub(crate) tensors: Vec<TensorInfo>,
    pub(crate) tensor_index: HashMap<String, usize>,
    pub(crate) alignment: u64,
    pub(crate) data_offset: u64,
}

/// The alignment `value` of `general.alignment` asks for.
pub(crate) fn alignment_from(value: &Value) -> Result<u64, GgufError> {
    let alignment = match *value {
        Value::U8(a) => a.into(),
        Value::U16(a) => a.into(),
        Value::U32(a) => a.into(),
        Value::U64(a) => a,
        _ => {
            return Err(GgufError::BadAlignment {
                found: format!("{value:?}"),
            });
        }
    };
    if !alignment.is_power_of_two() {
        return Err(GgufError::BadAlignment {
            found: alignment.to_string(),
        });
    }
    Ok(alignment)
}

/// Parses the header of a whole GGUF file and checks every tensor's data lies inside `bytes`.
pub(crate) fn parse(bytes: &[u8]) -> Result<Header, GgufError> {
    let mut r = Reader::new(bytes);
    let magic: [u8; 4] = r.array(Field::Magic)?;
    if &magic != b"GGUF" {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = r.u32(Field::Version)?;
    match version {
        2 | 3 => {}
        // Big-endian writers swap the version too, which is how we can tell.
        raw if matches!(raw.swap_bytes(), 1..=3) => return Err(GgufError::BigEndian { raw }),
        version => return Err(GgufError::UnsupportedVersion { version }),
    }
    let tensor_count = r.u64(Field::TensorCount)?;
    let kv_count = r.u64(Field::KvCount)?;

    let n_kv = r.check_count(kv_count, MIN_KV_BYTES, Field::Entries { count: kv_count })?;
    let mut metadata = Metadata::with_capacity(n_kv);
    for index in 0..kv_count {
        let offset = r.offset();
        let (key_offset, key) = r.len_prefixed(Field::Key { index })?;
        let key = std::str::from_utf8(key).map_err(|_| GgufError::InvalidUtf8 {
            what: format!("metadata key {:?}", String::from_utf8_lossy(key)),
            offset: key_offset,
        })?;
        let value = read_value(&mut r, key)?;
        metadata
            .insert(key.to_owned(), value)
            .map_err(|key| GgufError::DuplicateKey { key, offset })?;
    }

    let alignment = metadata
        .get(ALIGNMENT_KEY)
        .map_or(Ok(DEFAULT_ALIGNMENT), alignment_from)?;

    let n_tensors = r.check_count(
        tensor_count,
        MIN_TENSOR_INFO_BYTES,
        Field::TensorInfos {
            count: tensor_count,
        },
    )?;
    let mut tensors = Vec::with_capacity(n_tensors);
    let mut tensor_index = HashMap::with_capacity(n_tensors);
    for index in 0..tensor_count {
        let offset = r.offset();
        let name = r.string(Field::TensorName { index })?;
        if tensor_index.contains_key(&name) {
            return Err(GgufError::DuplicateTensor { name, offset });
        }
        let info = read_tensor_info(&mut r, name, alignment)?;
        tensor_index.insert(info.name.clone(), tensors.len());
        tensors.push(info);
    }

    let header_end = r.offset();
    let data_offset = header_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| GgufError::BadAlignment {
            found: alignment.to_string(),
        })?;
    let file_len = bytes.len() as u64;
    for info in &mut tensors {
        let start = data_offset.checked_add(info.offset);
        // Unknown types have no known size; at least their start must be in the file.
        let end = start.and_then(|s| s.checked_add(info.n_bytes.unwrap_or(0)));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => info.offset = start,
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    name: info.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    n_bytes: info.n_bytes.unwrap_or(0),
                    file_len,
                });
            }
        }
    }

    Ok(Header {
        version,
        metadata,
        tensors,
        tensor_index,
        alignment,
        data_offset,
    })
}

/// Reads the rest of one tensor info; the returned offset is still relative to the data section.
fn read_tensor_info(
    r: &mut Reader<'_>,
    name: String,
    alignment: u64,
) -> Result<TensorInfo, GgufError> {
    let part = |part| Field::Tensor { name: &name, part };
    let n_dims = r.u32(part("dimension count"))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(GgufError::BadDimCount {
            name,
            n_dims,
            max: MAX_DIMS,
        });
    }
    let mut dims = Vec::with_capacity(MAX_DIMS as usize);
    for index in 0..n_dims as usize {
        let value = r.u64(part("dimensions"))?;
        if value == 0 || value > MAX_ELEMENTS {
            return Err(GgufError::BadDimension {
                name,
                index,
                value,
                max: MAX_ELEMENTS,
            });
        }
        dims.push(value);
    }
    let ggml_type = GgmlType::from_id(r.u32(part("ggml type"))?);
    let offset = r.u64(part("data offset"))?;

    let n_elements = dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS);
    let Some(n_elements) = n_elements else {
        return Err(GgufError::ElementCountOverflow { name, dims });
    };
    let mut n_bytes = None;
    if let (Some(block_size), Some(&ne0)) = (ggml_type.block_size(), dims.first()) {
        if !ne0.is_multiple_of(block_size) {
            return Err(GgufError::NotBlockMultiple {
                name,
                ggml_type: ggml_type.name(),
                ne0,
                block_size,
            });
        }
        n_bytes = ggml_type.n_bytes(n_elements);
        if n_bytes.is_none() {
            return Err(GgufError::ElementCountOverflow { name, dims });
        }
    }
    if !offset.is_multiple_of(alignment) {
        return Err(GgufError::UnalignedTensor {
            name,
            offset,
            alignment,
        });
    }
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        n_bytes,
    })
}

enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file. The header is parsed once up front; tensor data stays in the (mapped)
/// file and is handed out as slices.
pub struct GgufFile {
    bytes: Bytes,
    header: Header,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("len", &self.len())
            .field("version", &self.header.version)
            .field("metadata_entries", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .field("alignment", &self.header.alignment)
            .field("data_offset", &self.header.data_offset)
            .finish()
    }
}

/// The only unsafe in the crate, kept to one small function.
#[allow(unsafe_code)]
fn map(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: `Mmap::map` is unsafe because the mapped bytes can change underneath us if another
    // process writes to or truncates the file while it is mapped (a truncation shows up as SIGBUS
    // on access). We map read-only, never write through the mapping, and treat model files as
    // immutable for the life of the process, as every mmap-based model loader does; all our
    // reads are bounds-checked against the length captured at map time.
    unsafe { Mmap::map(file) }
}

impl GgufFile {
    /// Memory-maps and parses the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // Mapping zero bytes fails on some platforms; an empty file is simply truncated.
        let bytes = if file.metadata().map_err(io)?.len() == 0 {
            Bytes::Owned(Vec::new())
        } else {
            Bytes::Mapped(map(&file).map_err(io)?)
        };
        Self::new(bytes)
    }

    /// Parses a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::new(Bytes::Owned(bytes))
    }

    fn new(bytes: Bytes) -> Result<Self, GgufError> {
        let header = parse(bytes.as_slice())?;
        Ok(Self { bytes, header })
    }

    /// 2 or 3.
    pub fn version(&self) -> u32 {
        self.header.version
    }

    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }

    /// The tensor index in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let &i = self.header.tensor_index.get(name)?;
        self.header.tensors.get(i)
    }

    /// The data of `info`, a slice of the file.
    pub fn tensor_data(&self, info: &TensorInfo) -> Result<&[u8], GgufError> {
        let n_bytes = info
            .n_bytes
            .ok_or_else(|| GgufError::UnsupportedTensorType {
                name: info.name.clone(),
                type_id: info.ggml_type.id(),
            })?;
        let range = usize::try_from(info.offset)
            .ok()
            .zip(usize::try_from(n_bytes).ok())
            .and_then(|(start, n)| Some(start..start.checked_add(n)?));
        range
            .and_then(|range| self.as_bytes().get(range))
            .ok_or_else(|| GgufError::TensorOutOfBounds {
                name: info.name.clone(),
                start: info.offset,
                n_bytes,
                file_len: self.len(),
            })
    }

    /// The alignment of tensor data: `general.alignment`, or 32.
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Where the data section starts: the end of the header rounded up to the alignment.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.as_bytes().len() as u64
    }

    /// Always false for a file that parsed; here because `len` is.
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }
}
