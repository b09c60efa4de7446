//! GGUF checkpoints: tensors found through the family's name map, matrices in the formats the
//! CPU kernels read kept in their blocks, everything else dequantized with the reference
//! dequantizer; rows llama.cpp's converter permuted for its interleaved RoPE put back in Hugging
//! Face order, so one RoPE (`rotate_half`) serves every checkpoint.

use std::path::PathBuf;

use kiln_gguf::GgufFile;

use super::{CheckpointFormat, HostTensor, RawTensor, TensorSource, check_shape};
use crate::LoadError;
use crate::config::ModelConfig;
use crate::kernels::PackedMatrix;

/// How a family's tensors are named and laid out in GGUF; each family defines its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GgufLayout {
    /// The GGUF name of a Hugging Face tensor name.
    pub(crate) name: fn(&str) -> String,
    /// The number of heads whose rows llama.cpp interleaved in this (Hugging Face named) tensor,
    /// or `None` when it is stored in Hugging Face order.
    pub(crate) permuted_heads: fn(&str, &ModelConfig) -> Option<usize>,
}

/// An open GGUF file read through a family's [`GgufLayout`].
#[derive(Debug)]
pub(crate) struct GgufSource {
    file: GgufFile,
    path: PathBuf,
    layout: GgufLayout,
    config: ModelConfig,
}

impl GgufSource {
    pub(crate) fn new(
        file: GgufFile,
        path: PathBuf,
        layout: GgufLayout,
        config: &ModelConfig,
    ) -> Self {
        Self {
            file,
            path,
            layout,
            config: config.clone(),
        }
    }
}

impl TensorSource for GgufSource {
    fn format(&self) -> CheckpointFormat {
        CheckpointFormat::Gguf
    }

    fn contains(&self, name: &str) -> bool {
        self.file.tensor(&(self.layout.name)(name)).is_some()
    }

    fn tensor(
        &self,
        name: &str,
        shape: &[usize],
        keep_packed: bool,
    ) -> Result<RawTensor, LoadError> {
        let (file, path) = (&self.file, &self.path);
        let gname = (self.layout.name)(name);
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
        let heads = (self.layout.permuted_heads)(name, &self.config);
        if keep_packed
            && let [rows, cols] = found[..]
            && PackedMatrix::supports(info.ggml_type, cols)
        {
            let mut packed =
                PackedMatrix::from_gguf(info.ggml_type, data, rows, cols).map_err(tensor_error)?;
            if let Some(order) = heads.and_then(|h| unpermute_order(rows, h)) {
                packed = packed.permute_rows(&order);
            }
            return Ok(RawTensor::Packed(packed));
        }
        let mut values =
            crate::quant::dequantize_to_vec(info.ggml_type, data, info.n_elements() as usize)
                .map_err(tensor_error)?;
        if let Some(h) = heads {
            values = unpermute_rows(&values, rows, h);
        }
        Ok(RawTensor::F32(HostTensor {
            shape: found,
            data: values,
        }))
    }
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
}
