//! Host-side weights: named tensors in Hugging Face naming and layout, read from a GGUF file
//! (dequantized, or kept in the block formats the CPU kernels read; llama.cpp's q/k row
//! permutation undone) or from safetensors (single or sharded;
//! F32, F16, BF16). Every tensor is checked against the shape the config implies before use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kiln_gguf::GgufFile;
use safetensors::{Dtype, SafeTensors};

use crate::LoadError;
use crate::config::{Architecture, ModelConfig};
use crate::kernels::PackedMatrix;

/// A weight on the host, row-major, in Hugging Face layout (`[out, in]` for projections).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostTensor {
    pub(crate) shape: Vec<usize>,
    pub(crate) data: Vec<f32>,
}

/// A weight as the loader hands it over: f32 values, or GGUF blocks the CPU kernels read as they
/// are.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawTensor {
    F32(HostTensor),
    Packed(PackedMatrix),
}

/// Where the weights come from.
#[derive(Debug)]
pub(crate) enum Weights {
    Gguf {
        file: GgufFile,
        path: PathBuf,
        /// llama.cpp permutes q/k rows for its interleaved RoPE on `llama` models only.
        unpermute: bool,
    },
    Safetensors {
        shards: Vec<Shard>,
        /// Tensor name → index into `shards`.
        index: HashMap<String, usize>,
    },
}

#[derive(Debug)]
pub(crate) struct Shard {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl Weights {
    pub(crate) fn gguf(file: GgufFile, path: PathBuf, config: &ModelConfig) -> Self {
        Self::Gguf {
            file,
            path,
            unpermute: config.architecture == Architecture::Llama,
        }
    }

    /// Opens `model.safetensors`, or the shards `model.safetensors.index.json` lists.
    pub(crate) fn safetensors(dir: &Path) -> Result<Self, LoadError> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index_path.exists() {
            let bytes = std::fs::read(&index_path).map_err(LoadError::io(&index_path))?;
            let index: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| LoadError::Format {
                    path: index_path.clone(),
                    message: e.to_string(),
                })?;
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
        Ok(Self::Safetensors { shards, index })
    }

    /// Whether the source has a tensor of this Hugging Face name.
    pub(crate) fn contains(&self, name: &str) -> bool {
        match self {
            Self::Gguf { file, .. } => file.tensor(&gguf_name(name)).is_some(),
            Self::Safetensors { index, .. } => index.contains_key(name),
        }
    }

    /// The tensor `name` (Hugging Face naming) as f32, checked to have `shape`.
    pub(crate) fn get(
        &self,
        name: &str,
        shape: &[usize],
        config: &ModelConfig,
    ) -> Result<HostTensor, LoadError> {
        match self.get_raw(name, shape, config, false)? {
            RawTensor::F32(t) => Ok(t),
            RawTensor::Packed(p) => Ok(HostTensor {
                shape: vec![p.rows, p.cols],
                data: p.dequantize(),
            }),
        }
    }

    /// Like [`get`](Self::get), but with `keep_packed` a GGUF matrix in a format the CPU kernels
    /// read (Q8_0, Q4_0, Q4_1) stays in its blocks.
    pub(crate) fn get_raw(
        &self,
        name: &str,
        shape: &[usize],
        config: &ModelConfig,
        keep_packed: bool,
    ) -> Result<RawTensor, LoadError> {
        let tensor = match self {
            Self::Gguf {
                file,
                path,
                unpermute,
            } => {
                let gname = gguf_name(name);
                let info = file
                    .tensor(&gname)
                    .ok_or_else(|| LoadError::MissingTensor {
                        name: gname.clone(),
                        path: path.clone(),
                    })?;
                // GGUF lists dims fastest-varying first: the reverse of the row-major shape.
                let found: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
                check_shape(&gname, path, &found, shape)?;
                let data = file.tensor_data(info)?;
                let tensor_error = |source: crate::quant::QuantError| LoadError::Tensor {
                    name: gname.clone(),
                    path: path.clone(),
                    message: source.to_string(),
                };
                let rows = found.first().copied().unwrap_or(0);
                let heads = if !*unpermute {
                    None
                } else if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
                    Some(config.num_heads)
                } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
                    Some(config.num_kv_heads)
                } else {
                    None
                };
                if keep_packed
                    && let [rows, cols] = found[..]
                    && PackedMatrix::supports(info.ggml_type)
                    && cols.is_multiple_of(32)
                {
                    let mut packed = PackedMatrix::from_gguf(info.ggml_type, data, rows, cols)
                        .map_err(tensor_error)?;
                    if let Some(order) = heads.and_then(|h| unpermute_order(rows, h)) {
                        packed = packed.permute_rows(&order);
                    }
                    return Ok(RawTensor::Packed(packed));
                }
                let mut values = crate::quant::dequantize_to_vec(
                    info.ggml_type,
                    data,
                    info.n_elements() as usize,
                )
                .map_err(tensor_error)?;
                if let Some(h) = heads {
                    values = unpermute_rows(&values, rows, h);
                }
                HostTensor {
                    shape: found,
                    data: values,
                }
            }
            Self::Safetensors { shards, index } => {
                let shard = index
                    .get(name)
                    .and_then(|&i| shards.get(i))
                    .ok_or_else(|| LoadError::MissingTensor {
                        name: name.to_string(),
                        path: shards.first().map(|s| s.path.clone()).unwrap_or_default(),
                    })?;
                let tensors =
                    SafeTensors::deserialize(&shard.map).map_err(|e| LoadError::Format {
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
                HostTensor {
                    shape: view.shape().to_vec(),
                    data,
                }
            }
        };
        Ok(RawTensor::F32(tensor))
    }
}

#[allow(unsafe_code)]
fn map_file(path: &Path) -> Result<memmap2::Mmap, LoadError> {
    let file = std::fs::File::open(path).map_err(LoadError::io(path))?;
    // SAFETY: the map is read-only and Kiln never writes model files; as with any mmap, another
    // process truncating the file while it is mapped would fault, which we accept for weights.
    unsafe { memmap2::Mmap::map(&file) }.map_err(LoadError::io(path))
}

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

/// The GGUF name of a Hugging Face Llama/Qwen2 tensor name.
fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let Some(rest) = hf.strip_prefix("model.layers.") else {
        return hf.to_string();
    };
    let Some((layer, tail)) = rest.split_once('.') else {
        return hf.to_string();
    };
    let mapped = match tail {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => return format!("blk.{layer}.{other}"),
    };
    format!("blk.{layer}.{mapped}")
}

/// Undoes llama.cpp's `permute(w, n_head)`: within each head, GGUF row `2j + s` is Hugging Face
/// row `s * head_dim / 2 + j` (the halves `rotate_half` expects). Works for weights (rows of
/// `len / rows` values) and biases (rows of one value).
fn unpermute_rows(values: &[f32], rows: usize, n_heads: usize) -> Vec<f32> {
    let Some(order) = unpermute_order(rows, n_heads) else {
        return values.to_vec();
    };
    if !values.len().is_multiple_of(rows) {
        return values.to_vec();
    }
    let width = values.len() / rows;
    order
        .iter()
        .flat_map(|&r| values.get(r * width..(r + 1) * width).unwrap_or_default())
        .copied()
        .collect()
}

/// For [`unpermute_rows`]: Hugging Face row `i` is GGUF row `order[i]`; `None` when `rows` is not
/// whole heads of even size (the tensor is then left as it is).
fn unpermute_order(rows: usize, n_heads: usize) -> Option<Vec<usize>> {
    if rows == 0 || n_heads == 0 || !rows.is_multiple_of(2 * n_heads) {
        return None;
    }
    let head_dim = rows / n_heads;
    let half = head_dim / 2;
    let mut order = vec![0; rows];
    for h in 0..n_heads {
        for s in 0..2 {
            for j in 0..half {
                order[h * head_dim + s * half + j] = h * head_dim + 2 * j + s;
            }
        }
    }
    Some(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's permute, written the way its converter does, to check the inverse.
    fn permute(values: &[f32], rows: usize, n_heads: usize) -> Vec<f32> {
        let width = values.len() / rows;
        let head_dim = rows / n_heads;
        let half = head_dim / 2;
        let mut out = vec![0.0; values.len()];
        for h in 0..n_heads {
            for s in 0..2 {
                for j in 0..half {
                    let src = (h * head_dim + s * half + j) * width;
                    let dst = (h * head_dim + 2 * j + s) * width;
                    out[dst..dst + width].copy_from_slice(&values[src..src + width]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let (rows, width, heads) = (24, 5, 3);
        let original: Vec<f32> = (0..rows * width).map(|i| i as f32).collect();
        let permuted = permute(&original, rows, heads);
        assert_ne!(permuted, original);
        assert_eq!(unpermute_rows(&permuted, rows, heads), original);
        let bias: Vec<f32> = (0..rows).map(|i| i as f32).collect();
        assert_eq!(
            unpermute_rows(&permute(&bias, rows, heads), rows, heads),
            bias
        );
    }

    #[test]
    fn gguf_names() {
        assert_eq!(gguf_name("model.embed_tokens.weight"), "token_embd.weight");
        assert_eq!(
            gguf_name("model.layers.12.self_attn.o_proj.weight"),
            "blk.12.attn_output.weight"
        );
        assert_eq!(
            gguf_name("model.layers.0.mlp.down_proj.weight"),
            "blk.0.ffn_down.weight"
        );
    }
}
