//! The layers every model family is built from, each written once: RMSNorm, RoPE, attention
//! (with its mask as a parameter), the gated MLPs, linear projections over any [`Placement`],
//! and the paged KV cache with attention over block tables. Norms and softmax run in f32
//! whatever the compute dtype, as transformers does.
//!
//! [`Placement`]: crate::device::Placement

mod attention;
mod kv;
mod linear;
mod mlp;
mod norm;
mod rope;

pub(crate) use attention::{Mask, attention};
pub(crate) use kv::{KvLayout, LayerKv, PagedKv, StepSlots};
pub(crate) use linear::{Embedding, Linear, host_f32};
pub(crate) use mlp::SwiGlu;
pub(crate) use norm::RmsNorm;
pub(crate) use rope::{Rope, RopeTables};

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
