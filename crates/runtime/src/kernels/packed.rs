//! Weight matrices kept in their GGUF blocks: the file's bytes as they are (no widening, no
//! reordering inside a block), so a K-quant model takes its file size in memory, not 8x it. A
//! matrix is a stack of parts, each a run of rows in one format, because a fused projection (q, k
//! and v; gate and up) mixes formats in a `Q4_K_M` file. The reference dequantizer
//! ([`crate::quant`]) unpacks them where f32 values are needed (embedding rows, a dense copy).

use kiln_gguf::GgmlType;

use crate::quant::QuantError;

/// A weight matrix `[rows, cols]` (rows are output features) in GGUF blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedMatrix {
    pub rows: usize,
    pub cols: usize,
    pub(super) parts: Vec<Part>,
}

/// Consecutive rows in one format: `rows * row_bytes` bytes of whole blocks.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Part {
    pub(super) ty: GgmlType,
    pub(super) rows: usize,
    pub(super) data: Vec<u8>,
}

/// The block shape (values, bytes) of a format the kernels read packed.
pub(super) fn block_shape(ty: GgmlType) -> Option<(usize, usize)> {
    use GgmlType as T;
    let packable = matches!(
        ty,
        T::Q4_0
            | T::Q4_1
            | T::Q5_0
            | T::Q5_1
            | T::Q8_0
            | T::Q2_K
            | T::Q3_K
            | T::Q4_K
            | T::Q5_K
            | T::Q6_K
    );
    if !packable {
        return None;
    }
    let values = usize::try_from(ty.block_size()?).ok()?;
    let bytes = usize::try_from(ty.block_bytes()?).ok()?;
    Some((values, bytes))
}

impl Part {
    fn row_bytes(&self, cols: usize) -> usize {
        block_shape(self.ty).map_or(0, |(values, bytes)| cols / values * bytes)
    }
}

impl PackedMatrix {
    /// Whether [`from_gguf`](Self::from_gguf) keeps a `[_, cols]` tensor of this type packed:
    /// a quantized format whose blocks do not straddle rows.
    pub fn supports(ggml_type: GgmlType, cols: usize) -> bool {
        block_shape(ggml_type).is_some_and(|(values, _)| cols > 0 && cols.is_multiple_of(values))
    }

    /// Keeps a GGUF tensor's blocks (`rows * cols` values, each row whole blocks).
    pub fn from_gguf(
        ggml_type: GgmlType,
        data: &[u8],
        rows: usize,
        cols: usize,
    ) -> Result<Self, QuantError> {
        let (values, bytes) =
            block_shape(ggml_type).ok_or(QuantError::UnsupportedType(ggml_type))?;
        let n_elements = rows.saturating_mul(cols);
        if !cols.is_multiple_of(values) {
            return Err(QuantError::NotBlockMultiple {
                ggml_type,
                n_elements: cols,
                block_size: values,
            });
        }
        let expected = (n_elements / values).saturating_mul(bytes);
        if data.len() != expected {
            return Err(QuantError::DataLength {
                ggml_type,
                n_elements,
                expected,
                actual: data.len(),
            });
        }
        Ok(Self {
            rows,
            cols,
            parts: vec![Part {
                ty: ggml_type,
                rows,
                data: data.to_vec(),
            }],
        })
    }

    /// The formats of the parts, top to bottom.
    pub fn ggml_types(&self) -> impl Iterator<Item = GgmlType> + '_ {
        self.parts.iter().map(|p| p.ty)
    }

    /// Bytes the blocks take.
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.data.len()).sum()
    }

    /// Stacks matrices of one width, rows of the first first; `None` if the widths differ.
    pub(crate) fn concat_rows(parts: Vec<Self>) -> Option<Self> {
        let mut parts = parts.into_iter();
        let mut out = parts.next()?;
        for p in parts {
            if p.cols != out.cols {
                return None;
            }
            out.rows += p.rows;
            for part in p.parts {
                out.push_rows(part.ty, part.rows, &part.data);
            }
        }
        Some(out)
    }

    /// Appends rows to the last part when it has their format, else as a new part.
    fn push_rows(&mut self, ty: GgmlType, rows: usize, data: &[u8]) {
        match self.parts.last_mut() {
            Some(last) if last.ty == ty => {
                last.rows += rows;
                last.data.extend_from_slice(data);
            }
            _ => self.parts.push(Part {
                ty,
                rows,
                data: data.to_vec(),
            }),
        }
    }

    /// Row `r`: its part's format and bytes.
    fn row(&self, mut r: usize) -> Option<(GgmlType, &[u8])> {
        for part in &self.parts {
            if r < part.rows {
                let width = part.row_bytes(self.cols);
                return Some((part.ty, part.data.get(r * width..(r + 1) * width)?));
            }
            r -= part.rows;
        }
        None
    }

    /// Applies a row permutation: row `i` of the result is row `order[i]` of `self` (indices
    /// past the end are skipped).
    pub(crate) fn permute_rows(&self, order: &[usize]) -> Self {
        let mut out = Self {
            rows: 0,
            cols: self.cols,
            parts: Vec::new(),
        };
        for &r in order {
            if let Some((ty, bytes)) = self.row(r) {
                out.push_rows(ty, 1, bytes);
                out.rows += 1;
            }
        }
        out
    }

    /// The whole matrix as f32 `[rows, cols]`, row-major, by the reference dequantizer.
    pub(crate) fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        let mut rest = out.as_mut_slice();
        for part in &self.parts {
            let n = part.rows * self.cols;
            let (here, later) = rest.split_at_mut(n.min(rest.len()));
            // The lengths were checked when the part was made.
            let _ = crate::quant::dequantize(part.ty, &part.data, n, here);
            rest = later;
        }
        out
    }

    /// Rows `ids` as f32 `[ids.len(), cols]` (an embedding lookup); an id past the end gives
    /// zeros.
    pub(crate) fn gather_rows(&self, ids: &[usize]) -> Vec<f32> {
        let mut out = vec![0.0; ids.len() * self.cols];
        for (&id, y) in ids.iter().zip(out.chunks_exact_mut(self.cols)) {
            if let Some((ty, bytes)) = self.row(id) {
                let _ = crate::quant::dequantize(ty, bytes, self.cols, y);
            }
        }
        out
    }
}

/// `n_blocks` blocks of `ty` with pseudo-random quants and sub-scales and small f16 scales (and
/// mins of both signs): weights of a real format's shape for tests and benches (random bytes
/// would put NaNs and infinities in the scales). `None` for a format not kept packed.
pub fn synthetic_blocks(ty: GgmlType, n_blocks: usize, seed: u64) -> Option<Vec<u8>> {
    use GgmlType as T;
    let (_, size) = block_shape(ty)?;
    // Byte offsets of the f16 scale and, where there is one, the min.
    let scales: &[usize] = match ty {
        T::Q4_1 | T::Q5_1 | T::Q4_K | T::Q5_K => &[0, 2],
        T::Q2_K => &[80, 82],
        T::Q3_K => &[108],
        T::Q6_K => &[208],
        _ => &[0],
    };
    let mut state = seed | 1;
    let mut data: Vec<u8> = (0..n_blocks * size)
        .map(|_| {
            // xorshift: deterministic, and no dependency.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    for (i, block) in data.chunks_exact_mut(size).enumerate() {
        for (s, &at) in scales.iter().enumerate() {
            let v = 0.002 + ((i * 7 + s * 3) % 13) as f32 * 0.0007;
            let v = if s == 1 && i % 2 == 0 { -v * 3.0 } else { v };
            if let Some(field) = block.get_mut(at..at + 2) {
                field.copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
        }
    }
    Some(data)
}
