//! Hugging Face safetensors checkpoints: `model.safetensors` or the shards
//! `model.safetensors.index.json` lists, memory-mapped; F32, F16 and BF16 read as f32.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::{
    CheckpointFormat, HostTensor, RawTensor, TensorSource, check_shape, map_file, read_json,
};
use crate::LoadError;

/// A safetensors checkpoint (one file or shards).
#[derive(Debug)]
pub(crate) struct SafetensorsSource {
    shards: Vec<Shard>,
    /// Tensor name → index into `shards`.
    index: HashMap<String, usize>,
}

#[derive(Debug)]
struct Shard {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl SafetensorsSource {
    /// Opens `model.safetensors`, or the shards `model.safetensors.index.json` lists.
    pub(crate) fn open(dir: &Path) -> Result<Self, LoadError> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index_path.exists() {
            let index = read_json(&index_path)?;
            let map = index
                .get("weight_map")
                .and_then(serde_json::Value::as_object)
                .ok_or_else(|| LoadError::Format {
                    path: index_path.clone(),
                    message: "no `weight_map` object".into(),
                })?;
            let mut files: Vec<PathBuf> = Vec::new();
            for file in map.values() {
                let name = file.as_str().ok_or_else(|| LoadError::Format {
                    path: index_path.clone(),
                    message: format!("weight_map value {file} is not a file name"),
                })?;
                let path = dir.join(name);
                if !files.contains(&path) {
                    files.push(path);
                }
            }
            files
        } else {
            return Err(LoadError::Format {
                path: dir.to_path_buf(),
                message: "no model.safetensors or model.safetensors.index.json".into(),
            });
        };
        let mut shards = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        for (i, path) in files.into_iter().enumerate() {
            let map = map_file(&path)?;
            let tensors = deserialize(&map, &path)?;
            for name in tensors.names() {
                index.insert(name.to_string(), i);
            }
            drop(tensors);
            shards.push(Shard { path, map });
        }
        Ok(Self { shards, index })
    }
}

impl TensorSource for SafetensorsSource {
    fn format(&self) -> CheckpointFormat {
        CheckpointFormat::Safetensors
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Safetensors values are always f32 here: no block format to keep.
    fn tensor(
        &self,
        name: &str,
        shape: &[usize],
        _keep_packed: bool,
    ) -> Result<RawTensor, LoadError> {
        let shard = self
            .index
            .get(name)
            .and_then(|&i| self.shards.get(i))
            .ok_or_else(|| LoadError::MissingTensor {
                name: name.to_string(),
                path: self
                    .shards
                    .first()
                    .map(|s| s.path.clone())
                    .unwrap_or_default(),
            })?;
        let tensors = deserialize(&shard.map, &shard.path)?;
        let view = view(&tensors, name, &shard.path)?;
        check_shape(name, &shard.path, view.shape(), shape)?;
        Ok(RawTensor::F32(values(&view, name, &shard.path)?))
    }
}

fn deserialize<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>, LoadError> {
    SafeTensors::deserialize(bytes).map_err(|e| LoadError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn view<'a>(
    tensors: &'a SafeTensors<'a>,
    name: &str,
    path: &Path,
) -> Result<safetensors::tensor::TensorView<'a>, LoadError> {
    tensors.tensor(name).map_err(|e| LoadError::Tensor {
        name: name.to_string(),
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A tensor's values as f32, or the error naming its unsupported dtype.
fn values(
    view: &safetensors::tensor::TensorView<'_>,
    name: &str,
    path: &Path,
) -> Result<HostTensor, LoadError> {
    let data = to_f32(view.dtype(), view.data()).ok_or_else(|| LoadError::Tensor {
        name: name.to_string(),
        path: path.to_path_buf(),
        message: format!(
            "dtype {:?} is not supported (F32, F16, BF16 are)",
            view.dtype()
        ),
    })?;
    Ok(HostTensor {
        shape: view.shape().to_vec(),
        data,
    })
}

/// Reads every tensor of a safetensors file's bytes as a load does (header, then each
/// tensor's values as f32); their names and shapes, in the header's order. (Public for the
/// fuzzer, which feeds it mutated checkpoints.)
pub fn read_all(bytes: &[u8]) -> Result<Vec<(String, Vec<usize>)>, LoadError> {
    let path = Path::new("<bytes>");
    let tensors = deserialize(bytes, path)?;
    let mut out = Vec::new();
    for (name, view) in tensors.iter() {
        let host = values(&view, name, path)?;
        if host.data.len() != host.shape.iter().product::<usize>() {
            return Err(LoadError::Tensor {
                name: name.to_string(),
                path: path.to_path_buf(),
                message: format!("{} values for shape {:?}", host.data.len(), host.shape),
            });
        }
        out.push((name.to_string(), host.shape));
    }
    Ok(out)
}

/// Little-endian F32/F16/BF16 bytes to f32; `None` for other dtypes.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    match dtype {
        Dtype::F32 => Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        Dtype::F16 => Some(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        Dtype::BF16 => Some(
            bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        ),
        _ => None,
    }
}
