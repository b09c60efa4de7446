//! The GGUF block formats the CPU kernels read as they are (Q8_0, Q4_0, Q4_1): a matrix kept in
//! its blocks with the f16 scales widened once at load, and the one walk over blocks that every
//! instruction set's [`BlockDecoder`] plugs into, so dequantization is written once.

use half::f16;
use kiln_gguf::GgmlType;
use rayon::prelude::*;

use super::{BLOCK, Isa};
use crate::quant::QuantError;

/// A weight matrix `[rows, cols]` (rows are output features) kept in a GGUF block format, with the
/// f16 scales widened to f32 once at load.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PackedMatrix {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(super) blocks: Blocks,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Blocks {
    /// `d * q`, one signed byte per value.
    Q8_0 { d: Vec<f32>, qs: Vec<i8> },
    /// `d * (q - 8)`: byte `j` of a block holds value `j` (low nibble) and `j + 16` (high).
    Q4_0 { d: Vec<f32>, qs: Vec<u8> },
    /// `d * q + m`, nibbles as Q4_0.
    Q4_1 {
        d: Vec<f32>,
        m: Vec<f32>,
        qs: Vec<u8>,
    },
}

impl PackedMatrix {
    /// Whether [`from_gguf`](Self::from_gguf) keeps this type packed (others are dequantized).
    pub(crate) fn supports(ggml_type: GgmlType) -> bool {
        matches!(ggml_type, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1)
    }

    /// Repacks a GGUF tensor's blocks (`rows * cols` values, rows whole blocks).
    pub(crate) fn from_gguf(
        ggml_type: GgmlType,
        data: &[u8],
        rows: usize,
        cols: usize,
    ) -> Result<Self, QuantError> {
        let n_elements = rows.saturating_mul(cols);
        if !cols.is_multiple_of(BLOCK) {
            return Err(QuantError::NotBlockMultiple {
                ggml_type,
                n_elements: cols,
                block_size: BLOCK,
            });
        }
        let bytes = match ggml_type {
            GgmlType::Q8_0 => 34,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            other => return Err(QuantError::UnsupportedType(other)),
        };
        let n_blocks = n_elements / BLOCK;
        let expected = n_blocks.saturating_mul(bytes);
        if data.len() != expected {
            return Err(QuantError::DataLength {
                ggml_type,
                n_elements,
                expected,
                actual: data.len(),
            });
        }
        let scale = |b: &[u8], at: usize| {
            f16::from_le_bytes([
                b.get(at).copied().unwrap_or(0),
                b.get(at + 1).copied().unwrap_or(0),
            ])
            .to_f32()
        };
        let blocks = data.chunks_exact(bytes);
        let blocks = match ggml_type {
            GgmlType::Q8_0 => Blocks::Q8_0 {
                d: blocks.clone().map(|b| scale(b, 0)).collect(),
                qs: blocks
                    .flat_map(|b| b.iter().skip(2).map(|q| q.cast_signed()))
                    .collect(),
            },
            GgmlType::Q4_0 => Blocks::Q4_0 {
                d: blocks.clone().map(|b| scale(b, 0)).collect(),
                qs: blocks.flat_map(|b| b.iter().skip(2).copied()).collect(),
            },
            _ => Blocks::Q4_1 {
                d: blocks.clone().map(|b| scale(b, 0)).collect(),
                m: blocks.clone().map(|b| scale(b, 2)).collect(),
                qs: blocks.flat_map(|b| b.iter().skip(4).copied()).collect(),
            },
        };
        Ok(Self { rows, cols, blocks })
    }

    /// The format the blocks came in.
    pub(crate) fn ggml_type(&self) -> GgmlType {
        match self.blocks {
            Blocks::Q8_0 { .. } => GgmlType::Q8_0,
            Blocks::Q4_0 { .. } => GgmlType::Q4_0,
            Blocks::Q4_1 { .. } => GgmlType::Q4_1,
        }
    }

    /// Stacks matrices of one format and width, rows of the first first.
    pub(crate) fn concat_rows(parts: Vec<Self>) -> Option<Self> {
        let mut parts = parts.into_iter();
        let mut out = parts.next()?;
        for p in parts {
            if p.cols != out.cols {
                return None;
            }
            match (&mut out.blocks, p.blocks) {
                (Blocks::Q4_0 { d, qs }, Blocks::Q4_0 { d: d2, qs: q2 }) => {
                    d.extend(d2);
                    qs.extend(q2);
                }
                (Blocks::Q8_0 { d, qs }, Blocks::Q8_0 { d: d2, qs: q2 }) => {
                    d.extend(d2);
                    qs.extend(q2);
                }
                (
                    Blocks::Q4_1 { d, m, qs },
                    Blocks::Q4_1 {
                        d: d2,
                        m: m2,
                        qs: q2,
                    },
                ) => {
                    d.extend(d2);
                    m.extend(m2);
                    qs.extend(q2);
                }
                _ => return None,
            }
            out.rows += p.rows;
        }
        Some(out)
    }

    /// Applies a row permutation: row `i` of the result is row `order[i]` of `self`.
    pub(crate) fn permute_rows(&self, order: &[usize]) -> Self {
        let per_row = self.cols / BLOCK;
        fn gather<T: Copy>(v: &[T], order: &[usize], width: usize) -> Vec<T> {
            order
                .iter()
                .flat_map(|&r| v.get(r * width..(r + 1) * width).unwrap_or_default())
                .copied()
                .collect()
        }
        let blocks = match &self.blocks {
            Blocks::Q8_0 { d, qs } => Blocks::Q8_0 {
                d: gather(d, order, per_row),
                qs: gather(qs, order, self.cols),
            },
            Blocks::Q4_0 { d, qs } => Blocks::Q4_0 {
                d: gather(d, order, per_row),
                qs: gather(qs, order, self.cols / 2),
            },
            Blocks::Q4_1 { d, m, qs } => Blocks::Q4_1 {
                d: gather(d, order, per_row),
                m: gather(m, order, per_row),
                qs: gather(qs, order, self.cols / 2),
            },
        };
        Self {
            rows: order.len(),
            cols: self.cols,
            blocks,
        }
    }

    /// Rows `first..first + out.len() / cols` as f32, with the reference dequantizer's arithmetic
    /// (bit for bit: a product and a sum, never fused).
    fn dequantize_rows(&self, first: usize, out: &mut [f32]) {
        super::dequantize_into(&self.blocks, first * self.cols / BLOCK, out);
    }

    /// The whole matrix as f32 `[rows, cols]`, row-major (on every core).
    pub(crate) fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        let rows_per_task = 16;
        out.par_chunks_mut(rows_per_task * self.cols)
            .enumerate()
            .for_each(|(t, chunk)| self.dequantize_rows(t * rows_per_task, chunk));
        out
    }

    /// Rows `ids` as f32 `[ids.len(), cols]` (an embedding lookup).
    pub(crate) fn gather_rows(&self, ids: &[usize]) -> Vec<f32> {
        let mut out = vec![0.0; ids.len() * self.cols];
        for (&id, y) in ids.iter().zip(out.chunks_exact_mut(self.cols)) {
            if id < self.rows {
                self.dequantize_rows(id, y);
            }
        }
        out
    }

    /// Dequantizes row `r` into `out` (`cols` values) with the decoder `isa` picked.
    #[inline(always)]
    pub(super) fn dequantize_row_with(&self, isa: Isa, r: usize, out: &mut [f32]) {
        isa.dequantize_blocks(&self.blocks, r * (self.cols / BLOCK), out);
    }
}

/// One instruction set's way of turning one block into its 32 values, with the reference
/// dequantizer's arithmetic (a product and a sum per value, never fused).
pub(super) trait BlockDecoder: Copy {
    fn q8_0(self, d: f32, q: &[i8; BLOCK], y: &mut [f32; BLOCK]);
    fn q4_0(self, d: f32, q: &[u8; 16], y: &mut [f32; BLOCK]);
    fn q4_1(self, d: f32, m: f32, q: &[u8; 16], y: &mut [f32; BLOCK]);
}

/// Blocks `first_block..` into `out` (whole blocks): the walk over a format's arrays, written
/// once; `decoder` does each block. Inlined into a dispatched caller, so a decoder's fixed-size
/// loops vectorize for the CPU at hand.
#[inline(always)]
pub(super) fn dequantize_blocks<D: BlockDecoder>(
    decoder: D,
    blocks: &Blocks,
    first_block: usize,
    out: &mut [f32],
) {
    let (ys, _) = out.as_chunks_mut::<BLOCK>();
    let range = first_block..first_block + ys.len();
    match blocks {
        Blocks::Q8_0 { d, qs } => {
            let d = d.get(range.clone()).unwrap_or_default();
            let qs = qs
                .get(range.start * BLOCK..range.end * BLOCK)
                .unwrap_or_default();
            let (qs, _) = qs.as_chunks::<BLOCK>();
            for ((y, q), &d) in ys.iter_mut().zip(qs).zip(d) {
                decoder.q8_0(d, q, y);
            }
        }
        Blocks::Q4_0 { d, qs } => {
            let d = d.get(range.clone()).unwrap_or_default();
            let qs = qs.get(range.start * 16..range.end * 16).unwrap_or_default();
            let (qs, _) = qs.as_chunks::<16>();
            for ((y, q), &d) in ys.iter_mut().zip(qs).zip(d) {
                decoder.q4_0(d, q, y);
            }
        }
        Blocks::Q4_1 { d, m, qs } => {
            let d = d.get(range.clone()).unwrap_or_default();
            let m = m.get(range.clone()).unwrap_or_default();
            let qs = qs.get(range.start * 16..range.end * 16).unwrap_or_default();
            let (qs, _) = qs.as_chunks::<16>();
            for (((y, q), &d), &m) in ys.iter_mut().zip(qs).zip(d).zip(m) {
                decoder.q4_1(d, m, q, y);
            }
        }
    }
}
