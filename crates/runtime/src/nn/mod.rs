//! The layers every model family is built from, each written once: RMSNorm, RoPE (full or
//! partial), attention (with its mask — causal, sliding window — as a parameter) and the
//! self-attention block around it, the gated MLPs (SwiGLU, GeGLU), linear projections over any
//! [`Placement`], the paged KV cache with attention over block tables, and the vision towers'
//! layers (LayerNorm, biased projections, bidirectional attention over an image's patches). Norms and softmax run
//! in f32 whatever the compute dtype, as transformers does.
//!
//! [`Placement`]: crate::device::Placement

mod attention;
mod kv;
mod linear;
mod mlp;
mod norm;
mod rope;
mod self_attention;
mod vision;

pub(crate) use attention::{Mask, attention};
pub use kv::memory_available;
pub(crate) use kv::{KvLayout, LayerKv, PagedKv, StepSlots};
pub(crate) use linear::{Embedding, Linear, host_f32};
pub(crate) use mlp::GatedMlp;
pub(crate) use norm::RmsNorm;
pub(crate) use rope::{Rope, RopeTables};
pub(crate) use self_attention::{LayerCache, SelfAttention};
pub(crate) use vision::{
    Affine, LayerNorm, VisionActivation, VisionEncoderLayer, VisionFfn, VisionMlp, VisionNorm,
    patchify,
};

use crate::RuntimeError;

use burn::tensor::{DType, Device, Tensor};

/// `x` in f32 (a no-op when it already is).
pub(crate) fn to_f32<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    to_dtype(x, DType::F32)
}

/// `x` in `dtype` (a no-op when it already is).
pub(crate) fn to_dtype<const D: usize>(x: Tensor<D>, dtype: DType) -> Tensor<D> {
    if x.dtype() == dtype { x } else { x.cast(dtype) }
}

/// An f32 vector on the CPU, copied to the host for the layers' host paths; `None` for any
/// other dtype or device.
pub(crate) fn host_vector(v: &Tensor<1>) -> Option<Vec<f32>> {
    if v.dtype() == DType::F32 && v.device() == Device::flex() {
        v.to_data().try_to_vec::<f32>().ok()
    } else {
        None
    }
}

/// The error a host path gives where a layer it was promised would run on the host does not
/// (a bug: `on_host` is checked first).
pub(crate) fn off_host() -> RuntimeError {
    RuntimeError::Backend("a layer's host path met a projection off the host".into())
}

/// `a + b`, value by value (the residual adds of the host paths).
pub(crate) fn add_host(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}
