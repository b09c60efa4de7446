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
            let tensors = SafeTensors::deserialize(&map).map_err(|e| LoadError::Format {
                path: path.clone(),
                message: e.to_string(),
            })?;
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
        let tensors = SafeTensors::deserialize(&shard.map).map_err(|e| LoadError::Format {
            path: shard.path.clone(),
            message: e.to_string(),
        })?;
        let view = tensors.tensor(name).map_err(|e| LoadError::Tensor {
            name: name.to_string(),
            path: shard.path.clone(),
            message: e.to_string(),
        })?;
        check_shape(name, &shard.path, view.shape(), shape)?;
        let data = to_f32(view.dtype(), view.data()).ok_or_else(|| LoadError::Tensor {
            name: name.to_string(),
            path: shard.path.clone(),
            message: format!(
                "dtype {:?} is not supported (F32, F16, BF16 are)",
                view.dtype()
            ),
        })?;
        Ok(RawTensor::F32(HostTensor {
            shape: view.shape().to_vec(),
            data,
        }))
    }
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
