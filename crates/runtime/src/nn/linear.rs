//! Projections and the embedding table, one variant per [`Placement`]: on a GPU (or in f16),
//! burn tensors and burn's matmul; on the CPU in f32, Kiln's kernels ([`crate::kernels`]) over
//! GGUF blocks kept packed or f32 rows for steps of up to `GEMV_MAX_ROWS` rows (decode, batched
//! decode, prompts of up to 256 tokens), burn's matmul for larger ones (long prefills); on a GPU
//! with GGUF blocks, Kiln's CubeCL kernel over the blocks on the device.
//!
//! [`Placement`]: crate::device::Placement

use std::sync::Arc;

use burn::backend::Flex;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::RuntimeError;
#[cfg(feature = "wgpu")]
use crate::kernels::gpu::GpuMatrix;
use crate::kernels::{Dense, GEMV_MAX_ROWS, PackedMatrix, Weight, matmul_t};

/// `y = x Wᵀ` for a weight `W` of `[out, in]` (transformers' layout); the variant is the
/// matrix's [`Placement`](crate::device::Placement).
#[derive(Debug, Clone)]
pub(crate) enum Linear {
    /// `Wᵀ` (`[in, out]`, contiguous) on the device: one burn matmul.
    Device(Tensor<2>),
    /// `W` in f32 on the CPU (burn's flex backend): Kiln's kernel reads its rows in place for a
    /// few rows of `x`; burn's matmul takes the transposed view for more.
    CpuF32(Tensor<2>),
    /// `W` in GGUF blocks on the host: Kiln's kernel, which decodes each block once per tile of
    /// rows of `x`, for up to `GEMV_MAX_ROWS` rows; for more (prefill), the matrix is
    /// dequantized for the call into burn's GEMM, which is still faster there.
    CpuPacked(Arc<PackedMatrix>),
    /// `W` in GGUF blocks on a GPU: Kiln's CubeCL kernel for any number of rows.
    #[cfg(feature = "wgpu")]
    GpuPacked(Arc<GpuMatrix>),
}

impl Linear {
    pub(crate) fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>, RuntimeError> {
        let [m, _] = x.dims();
        if self.on_host(m) {
            let device = x.device();
            let xs = host_f32(x)?;
            let y = self.forward_host(&xs, m).unwrap_or_else(|| {
                Err(RuntimeError::Backend(
                    "a host projection refused its rows".into(),
                ))
            })?;
            let n = y.len() / m.max(1);
            return Ok(Tensor::from_data(TensorData::new(y, [m, n]), &device));
        }
        match self {
            Self::Device(w) => Ok(x.matmul(w.clone())),
            Self::CpuF32(w) => Ok(x.matmul(w.clone().transpose())),
            Self::CpuPacked(p) => {
                check_width(x.dims()[1], p.cols)?;
                // Prefill: burn's GEMM over this matrix dequantized for the call is still
                // faster than the packed kernel's tiles at this size (docs/perf.md).
                let w = TensorData::new(p.dequantize(), [p.rows, p.cols]);
                let w = Tensor::<2>::from_data(w, &x.device()).transpose();
                Ok(x.matmul(w))
            }
            #[cfg(feature = "wgpu")]
            Self::GpuPacked(w) => {
                check_width(x.dims()[1], w.cols())?;
                Ok(w.forward(x))
            }
        }
    }

    /// Whether `m` rows go through Kiln's CPU kernels (so [`forward_host`](Self::forward_host)
    /// takes them).
    pub(crate) fn on_host(&self, m: usize) -> bool {
        m <= GEMV_MAX_ROWS && matches!(self, Self::CpuF32(_) | Self::CpuPacked(_))
    }

    /// `y = x Wᵀ` for `m` rows of `x` already on the host (row-major), through Kiln's CPU
    /// kernels; `None` when this projection does not run there at `m` rows
    /// ([`on_host`](Self::on_host)).
    pub(crate) fn forward_host(
        &self,
        xs: &[f32],
        m: usize,
    ) -> Option<Result<Vec<f32>, RuntimeError>> {
        if !self.on_host(m) {
            return None;
        }
        let k = xs.len() / m.max(1);
        Some(match self {
            Self::CpuF32(w) => {
                let [n, cols] = w.dims();
                check_width(k, cols).and_then(|()| {
                    let w = w
                        .clone()
                        .try_into_primitive::<Flex>()
                        .map_err(|e| RuntimeError::Backend(format!("CPU weight: {e:?}")))?;
                    let data = w.as_slice::<f32>().ok_or_else(|| {
                        RuntimeError::Backend("CPU weight is not contiguous f32".into())
                    })?;
                    let rows = Dense {
                        data,
                        rows: n,
                        cols,
                    };
                    Ok(matmul_t(Weight::F32(rows), xs, m))
                })
            }
            Self::CpuPacked(p) => {
                check_width(k, p.cols).map(|()| matmul_t(Weight::Packed(p), xs, m))
            }
            _ => return None,
        })
    }
}

/// The token embedding table `[vocab, hidden]`.
#[derive(Debug, Clone)]
// One per model: boxing the tensor would only add an indirection to every lookup.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Embedding {
    Device(Tensor<2>),
    /// GGUF blocks on the host; looked-up rows are dequantized exactly.
    CpuPacked(Arc<PackedMatrix>),
}

impl Embedding {
    /// Rows `ids` (already checked against the vocabulary) as `[ids.len(), hidden]`.
    pub(crate) fn forward(&self, ids: &[u32], device: &Device) -> Tensor<2> {
        match self {
            Self::Device(table) => {
                let ids: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
                let n = ids.len();
                table.clone().select(
                    0,
                    Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), device),
                )
            }
            Self::CpuPacked(p) => {
                let ids: Vec<usize> = ids.iter().map(|&t| t as usize).collect();
                let rows = p.gather_rows(&ids);
                Tensor::from_data(TensorData::new(rows, [ids.len(), p.cols]), device)
            }
        }
    }
}

fn check_width(x: usize, w: usize) -> Result<(), RuntimeError> {
    if x == w {
        Ok(())
    } else {
        Err(RuntimeError::Backend(format!(
            "a projection of width {w} got rows of width {x}"
        )))
    }
}

/// A few rows of activations, read back to the host as f32.
pub(crate) fn host_f32(x: Tensor<2>) -> Result<Vec<f32>, RuntimeError> {
    x.try_into_vec_as::<f32>()
        .map_err(|e| RuntimeError::Backend(format!("reading activations: {e:?}")))
}
