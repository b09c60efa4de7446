//! The paged KV cache: K and V for every layer in fixed-size blocks, written in place at the
//! slots a step's block tables name, and attention over each sequence's blocks. The block
//! *allocator* is the scheduler's; this type only checks tables, stores and reads.

use std::collections::HashSet;

use burn::tensor::{DType, Device, IndexingUpdateOp, Int, Tensor, TensorData};

use super::{Mask, attention};
use crate::{RuntimeError, SeqInput};

/// Slot `block * block_size + offset` of a layer's `[slots, kv_heads * head_dim]` tensor holds
/// one position of one sequence. The pool is allocated once; a step never reallocates it.
#[derive(Debug)]
pub(crate) struct PagedKv {
    layers: Vec<LayerKv>,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    num_blocks: usize,
}

/// One layer's K and V pools, `[slots, kv_heads * head_dim]` each.
#[derive(Debug)]
pub(crate) struct LayerKv {
    k: Tensor<2>,
    v: Tensor<2>,
}

/// Where one step's tokens go and what each sequence reads back, computed once per step and
/// shared by every layer.
#[derive(Debug)]
pub(crate) struct StepSlots {
    /// The slot of every new token, batch order.
    write: Tensor<1, Int>,
    /// Per sequence: the slots of positions `0..start + new` (its whole context).
    contexts: Vec<Tensor<1, Int>>,
    /// Per sequence: its new tokens' count and the position of the first.
    spans: Vec<(usize, usize)>,
    kv_heads: usize,
    head_dim: usize,
}

impl PagedKv {
    /// Blocks of `block_size` positions that `bytes` hold for `layers` layers of `kv_heads`
    /// heads of `head_dim` values in `dtype_size`-byte values, K and V.
    pub(crate) fn blocks_in(
        bytes: usize,
        layers: usize,
        kv_dim: usize,
        block_size: usize,
        dtype_size: usize,
    ) -> Result<usize, crate::LoadError> {
        let per_block = 2 * layers * kv_dim * block_size * dtype_size;
        let num_blocks = bytes / per_block.max(1);
        if num_blocks == 0 {
            return Err(crate::LoadError::Unsupported(format!(
                "a KV cache of {bytes} bytes holds no block of {block_size} positions ({per_block} bytes each)"
            )));
        }
        Ok(num_blocks)
    }

    /// A zeroed pool of `num_blocks` blocks for `layers` layers.
    pub(crate) fn new(
        layers: usize,
        (kv_heads, head_dim): (usize, usize),
        num_blocks: usize,
        block_size: usize,
        (device, dtype): (&Device, DType),
    ) -> Self {
        let slots = num_blocks * block_size;
        let kv_dim = kv_heads * head_dim;
        let zeros = || Tensor::zeros([slots, kv_dim], (device, dtype));
        Self {
            layers: (0..layers)
                .map(|_| LayerKv {
                    k: zeros(),
                    v: zeros(),
                })
                .collect(),
            kv_heads,
            head_dim,
            block_size,
            num_blocks,
        }
    }

    /// Each layer's pools, in layer order.
    pub(crate) fn layers_mut(&mut self) -> impl Iterator<Item = &mut LayerKv> {
        self.layers.iter_mut()
    }

    pub(crate) fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    pub(crate) fn block_size(&self) -> usize {
        self.block_size
    }

    /// Checks sequence `sequence` of a step: its table covers `0..start + new` with blocks of
    /// the pool, and no slot it writes was written by an earlier sequence of the step
    /// (`written`).
    pub(crate) fn check(
        &self,
        sequence: usize,
        seq: &SeqInput<'_>,
        written: &mut HashSet<(u32, usize)>,
    ) -> Result<(), RuntimeError> {
        let end = seq.start + seq.tokens.len();
        let needed = end.div_ceil(self.block_size);
        if seq.block_table.len() < needed {
            return Err(RuntimeError::BlockTableTooShort {
                sequence,
                needed,
                given: seq.block_table.len(),
            });
        }
        for &block in &seq.block_table[..needed] {
            if block as usize >= self.num_blocks {
                return Err(RuntimeError::BadBlock {
                    block,
                    num_blocks: self.num_blocks,
                });
            }
        }
        for pos in seq.start..end {
            let block = seq.block_table[pos / self.block_size];
            if !written.insert((block, pos % self.block_size)) {
                return Err(RuntimeError::SharedWrite { block });
            }
        }
        Ok(())
    }

    /// The slots of a checked step.
    pub(crate) fn slots(&self, batch: &[SeqInput<'_>], device: &Device) -> StepSlots {
        let bs = self.block_size;
        let slot = |seq: &SeqInput<'_>, pos: usize| {
            (seq.block_table[pos / bs] as usize * bs + pos % bs) as i64
        };
        let write: Vec<i64> = batch
            .iter()
            .flat_map(|seq| (seq.start..seq.start + seq.tokens.len()).map(move |p| (seq, p)))
            .map(|(seq, pos)| slot(seq, pos))
            .collect();
        let total = write.len();
        // Each sequence reads its whole context back from the cache, new tokens included.
        let contexts = batch
            .iter()
            .map(|seq| {
                let end = seq.start + seq.tokens.len();
                let s: Vec<i64> = (0..end).map(|pos| slot(seq, pos)).collect();
                Tensor::from_data(TensorData::new(s, [end]), device)
            })
            .collect();
        StepSlots {
            write: Tensor::from_data(TensorData::new(write, [total]), device),
            contexts,
            spans: batch.iter().map(|s| (s.tokens.len(), s.start)).collect(),
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
        }
    }
}

impl LayerKv {
    /// Stores this layer's new `k` and `v` (`[tokens, kv_heads * head_dim]`, rotated) at the
    /// step's slots, then runs causal attention of each sequence's queries (`q`:
    /// `[tokens, heads, head_dim]`) over its context. Returns `[tokens, heads * head_dim]`.
    pub(crate) fn attend(
        &mut self,
        step: &StepSlots,
        q: Tensor<3>,
        k: Tensor<2>,
        v: Tensor<2>,
    ) -> Tensor<2> {
        let write = &step.write;
        let (k_cache, v_cache) = (&mut self.k, &mut self.v);
        k_cache.inplace(|cache| cache.select_assign(0, write.clone(), k, IndexingUpdateOp::Assign));
        v_cache.inplace(|cache| cache.select_assign(0, write.clone(), v, IndexingUpdateOp::Assign));
        let [_, heads, head_dim] = q.dims();
        let (kv_heads, kv_head_dim) = (step.kv_heads, step.head_dim);
        let mut outputs = Vec::with_capacity(step.contexts.len());
        let mut offset = 0;
        for (context, &(n, start)) in step.contexts.iter().zip(&step.spans) {
            let [ctx] = context.dims();
            let q_seq = q.clone().slice([offset..offset + n, 0..heads, 0..head_dim]);
            let read = |cache: &Tensor<2>| {
                cache
                    .clone()
                    .select(0, context.clone())
                    .reshape([ctx, kv_heads, kv_head_dim])
            };
            outputs.push(attention(
                q_seq,
                read(k_cache),
                read(v_cache),
                Mask::Causal { start },
            ));
            offset += n;
        }
        // One sequence (the common decode-alone case) needs no concatenation.
        if outputs.len() == 1
            && let Some(only) = outputs.pop()
        {
            return only;
        }
        Tensor::cat(outputs, 0)
    }
}
