//! The loader a family's `load` reads its weights through (the role of candle's `VarBuilder`):
//! checkpoint names and config-derived shapes in, layers on the device out. It fuses
//! row-stacked projections (q/k/v, gate/up) into one [`Linear`], chooses every matrix's
//! [`Placement`], casts to the compute dtype once, and reports progress.

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};

use super::{HostTensor, RawTensor, TensorSource};
use crate::device::{DType, DeviceKind, Placement};
use crate::kernels::PackedMatrix;
use crate::nn::{Embedding, Linear, to_dtype};
use crate::{LoadError, LoadProgress};

/// Reads one checkpoint onto one device.
pub(crate) struct Loader<'a> {
    source: &'a dyn TensorSource,
    device: Device,
    kind: DeviceKind,
    dtype: DType,
    progress: &'a mut dyn FnMut(LoadProgress),
    progress_at: LoadProgress,
    /// Prefixes read as others (a text model nested in a multimodal checkpoint:
    /// `model.layers.0…` is `model.text_model.layers.0…`): the first `(from, to)` whose `from`
    /// starts a name applies.
    rename: &'static [(&'static str, &'static str)],
}

impl std::fmt::Debug for Loader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("source", &self.source)
            .field("kind", &self.kind)
            .field("dtype", &self.dtype)
            .finish_non_exhaustive()
    }
}

impl<'a> Loader<'a> {
    pub(crate) fn new(
        source: &'a dyn TensorSource,
        (kind, dtype): (DeviceKind, DType),
        device: Device,
        progress: &'a mut dyn FnMut(LoadProgress),
    ) -> Self {
        Self {
            source,
            device,
            kind,
            dtype,
            progress,
            progress_at: LoadProgress { done: 0, total: 0 },
            rename: &[],
        }
    }

    /// From now on, weights come from `source` (a vision tower in its own `mmproj` file).
    pub(crate) fn set_source(&mut self, source: &'a dyn TensorSource) {
        self.source = source;
    }

    /// From now on, a name starting with a `from` of `rename` is read with that `to` in its
    /// place (empty: names as they are).
    pub(crate) fn set_rename(&mut self, rename: &'static [(&'static str, &'static str)]) {
        self.rename = rename;
    }

    fn name<'n>(&self, name: &'n str) -> std::borrow::Cow<'n, str> {
        match self.rename.iter().find(|(from, _)| name.starts_with(from)) {
            Some((from, to)) => std::borrow::Cow::Owned(format!("{to}{}", &name[from.len()..])),
            None => std::borrow::Cow::Borrowed(name),
        }
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// The compute dtype as burn's.
    pub(crate) fn dtype(&self) -> burn::tensor::DType {
        self.dtype.burn()
    }

    /// The kind of file the weights come from.
    pub(crate) fn format(&self) -> super::CheckpointFormat {
        self.source.format()
    }

    /// Whether the checkpoint has this tensor (an optional weight, such as an untied head).
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.source.contains(&self.name(name))
    }

    /// Says how many groups of weights the family will load, for progress reports.
    pub(crate) fn expect_groups(&mut self, total: usize) {
        self.progress_at.total = total;
    }

    /// Reports one more group of weights on the device.
    pub(crate) fn group_loaded(&mut self) {
        self.progress_at.done += 1;
        (self.progress)(self.progress_at);
    }

    /// A vector (a norm weight, a bias) of `len` values.
    pub(crate) fn vector(&self, name: &str, len: usize) -> Result<Tensor<1>, LoadError> {
        self.vectors(&[(name, len)])
    }

    /// Vectors concatenated in order (the biases of fused projections).
    pub(crate) fn vectors(&self, parts: &[(&str, usize)]) -> Result<Tensor<1>, LoadError> {
        let mut data = Vec::new();
        for &(name, len) in parts {
            data.extend(
                self.source
                    .tensor(&self.name(name), &[len], false)?
                    .into_host()
                    .data,
            );
        }
        let len = data.len();
        Ok(self.upload(TensorData::new(data, [len])))
    }

    /// The projection `y = x Wᵀ` whose `W` is the checkpoint matrices `parts` (`[out_i, in]`
    /// each) stacked by rows: packed when every part is packed (each in its own format) and the
    /// placement keeps blocks, else dense.
    pub(crate) fn linear(&self, parts: &[(&str, [usize; 2])]) -> Result<Linear, LoadError> {
        let keep_packed = self.keeps_blocks();
        let raws = parts
            .iter()
            .map(|(name, shape)| self.source.tensor(&self.name(name), shape, keep_packed))
            .collect::<Result<Vec<_>, _>>()?;
        let raws = match stack_packed(raws) {
            Ok(packed) => return Ok(self.packed(Arc::new(packed))),
            Err(raws) => raws,
        };
        let host = concat_rows(raws.into_iter().map(RawTensor::into_host).collect());
        Ok(self.dense(self.matrix(host)))
    }

    /// A projection stored with more dimensions than two — a patch embedding's convolution,
    /// `[out, channels, k, k]` — with everything after the first flattened into `in`.
    pub(crate) fn linear_flat(&self, name: &str, shape: &[usize]) -> Result<Linear, LoadError> {
        let host = self
            .source
            .tensor(&self.name(name), shape, false)?
            .into_host();
        Ok(self.dense(self.matrix(host)))
    }

    /// A matrix used as a table (a position embedding), dense, in the compute dtype.
    pub(crate) fn table(&self, name: &str, shape: [usize; 2]) -> Result<Tensor<2>, LoadError> {
        let host = self
            .source
            .tensor(&self.name(name), &shape, false)?
            .into_host();
        Ok(self.matrix(host))
    }

    /// The token embedding `[vocab, hidden]` and the output layer that shares it (for tied
    /// embeddings): packed blocks are looked up and multiplied as they are.
    pub(crate) fn embedding(
        &self,
        name: &str,
        shape: [usize; 2],
    ) -> Result<(Embedding, Linear), LoadError> {
        Ok(
            match self
                .source
                .tensor(&self.name(name), &shape, self.keeps_blocks())?
            {
                // Looked up on the host in either placement: a lookup is a few rows, and the
                // table stays in its blocks.
                RawTensor::Packed(m) => {
                    let m = Arc::new(m);
                    (Embedding::CpuPacked(m.clone()), self.packed(m))
                }
                RawTensor::F32(t) => {
                    let table = self.matrix(t);
                    (Embedding::Device(table.clone()), self.dense(table))
                }
            },
        )
    }

    /// Whether packed matrices stay in their blocks on this device (so are read packed).
    fn keeps_blocks(&self) -> bool {
        Placement::choose(self.kind, self.dtype, true).keeps_blocks()
    }

    /// A packed `W` as the projection its placement asks for: on the host, or its blocks on
    /// the GPU.
    fn packed(&self, m: Arc<PackedMatrix>) -> Linear {
        match Placement::choose(self.kind, self.dtype, true) {
            #[cfg(feature = "wgpu")]
            Placement::GpuPacked => Linear::GpuPacked(crate::kernels::gpu::GpuMatrix::upload(
                &m,
                &self.device,
                self.dtype.burn(),
            )),
            // Blocks are only kept where a kernel reads them (`keeps_blocks`).
            _ => Linear::CpuPacked(m),
        }
    }

    /// A dense `W` (`[out, in]`) as the projection its placement asks for.
    fn dense(&self, w: Tensor<2>) -> Linear {
        if Placement::choose(self.kind, self.dtype, false) == Placement::CpuF32 {
            Linear::CpuF32(w)
        } else {
            Linear::Device(contiguous(w.transpose()))
        }
    }

    /// A host matrix on the device in the compute dtype.
    fn matrix(&self, t: HostTensor) -> Tensor<2> {
        let shape = [
            t.shape.first().copied().unwrap_or(1),
            t.shape.iter().skip(1).product(),
        ];
        self.upload(TensorData::new(t.data, shape))
    }

    fn upload<const D: usize>(&self, data: TensorData) -> Tensor<D> {
        to_dtype(Tensor::from_data(data, &self.device), self.dtype.burn())
    }
}

/// Stacks packed parts (of any formats: a `Q4_K_M` file mixes them) into one matrix, or gives
/// the parts back when one is dense or the widths differ.
fn stack_packed(parts: Vec<RawTensor>) -> Result<PackedMatrix, Vec<RawTensor>> {
    let cols = |p: &RawTensor| match p {
        RawTensor::Packed(m) => Some(m.cols),
        RawTensor::F32(_) => None,
    };
    let first = parts.first().and_then(cols);
    if first.is_none() || !parts.iter().all(|p| cols(p) == first) {
        return Err(parts);
    }
    // Moved, not copied: every part is packed and of one width, so the stack cannot fail.
    let matrices = parts.into_iter().filter_map(|p| match p {
        RawTensor::Packed(m) => Some(m),
        RawTensor::F32(_) => None,
    });
    PackedMatrix::concat_rows(matrices.collect()).ok_or_else(Vec::new)
}

/// Stacks `[rows_i, cols]` host tensors into one `[sum rows_i, cols]`.
fn concat_rows(parts: Vec<HostTensor>) -> HostTensor {
    let cols: usize = parts
        .first()
        .map_or(1, |p| p.shape.iter().skip(1).product());
    let rows: usize = parts
        .iter()
        .map(|p| p.shape.first().copied().unwrap_or(1))
        .sum();
    let mut data = Vec::with_capacity(rows * cols);
    for p in parts {
        data.extend(p.data);
    }
    HostTensor {
        shape: vec![rows, cols],
        data,
    }
}

/// Materializes a transposed weight once at load, so each step's matmul reads it contiguously.
fn contiguous(t: Tensor<2>) -> Tensor<2> {
    let dtype = t.dtype();
    let device = t.device();
    Tensor::<2>::from_data(t.into_data(), (&device, dtype))
}
