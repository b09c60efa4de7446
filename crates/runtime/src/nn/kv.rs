//! The paged KV cache: K and V for every layer in fixed-size blocks, written in place at the
//! slots a step's block tables name, and attention over each sequence's blocks. The block
//! *allocator* is the scheduler's; this type only checks tables, stores and reads.

use std::collections::HashSet;

use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};
use half::f16;

use super::attention::{PoolRows, attention_host};
use super::{Mask, attention, to_dtype};
use crate::{
    DType, KV_AUTO_MEMORY_FRACTION, KV_TOKENS_PER_SEQUENCE, KvCacheSize, KvGroups, RuntimeError,
    SeqInput,
};

/// A zeroed `shape` tensor built from a zero-initialised `Vec` (burn's own `zeros` copies its
/// buffer once to align it, which writes every page of a pool that may be gigabytes).
fn zeroed(shape: [usize; 2], dtype: DType, device: &Device) -> Tensor<2> {
    let n = shape[0] * shape[1];
    let data = match dtype {
        DType::F32 => TensorData::new(vec![0.0f32; n], shape),
        // `vec![0u16; n]` is a zeroed allocation; `f16` has the same layout, so no copy.
        DType::F16 => TensorData::new(
            bytemuck::allocation::cast_vec::<u16, f16>(vec![0u16; n]),
            shape,
        ),
    };
    // The dtype is named: given only a device, `from_data` converts to the default float type.
    Tensor::from_data(data, (device, dtype.burn()))
}

/// Slot `page * block_size + offset` of a `[slots, kv_heads * head_dim]` tensor holds one
/// position of one sequence for one layer. Layers are grouped ([`KvGroups`]); the layers at
/// the same place in every group share one pair of tensors, so a page is one group's block of
/// positions, and which group owns it is the tables' business. The pool is allocated once; a
/// step never reallocates it.
#[derive(Debug)]
pub(crate) struct PagedKv {
    /// One K/V pair per place in a group.
    places: Vec<LayerKv>,
    groups: KvGroups,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    num_blocks: usize,
    dtype: DType,
}

/// Casts `x` to `dtype`. On the CPU an f16 ↔ f32 cast goes through `half`'s slice conversion
/// (F16C, detected once per call) rather than burn's, which converts one value per call with
/// its own CPU check each time: for the context a decode step reads back from an f16 cache,
/// that was a quarter of the step.
fn cast(x: Tensor<2>, dtype: burn::tensor::DType) -> Tensor<2> {
    use burn::tensor::DType as B;
    use half::slice::HalfFloatSliceExt as _;
    let (from, device) = (x.dtype(), x.device());
    if from == dtype || device != Device::flex() {
        return to_dtype(x, dtype);
    }
    let shape = x.dims();
    let data = x.into_data();
    let converted = match (from, dtype, data.as_slice::<f16>(), data.as_slice::<f32>()) {
        (B::F16, B::F32, Ok(src), _) => {
            let mut out = vec![0.0f32; src.len()];
            src.convert_to_f32_slice(&mut out);
            TensorData::new(out, shape)
        }
        (B::F32, B::F16, _, Ok(src)) => {
            let mut out = vec![f16::ZERO; src.len()];
            out.convert_from_f32_slice(src);
            TensorData::new(out, shape)
        }
        _ => return to_dtype(Tensor::from_data(data, (&device, from)), dtype),
    };
    Tensor::from_data(converted, (&device, dtype))
}

/// One layer's K and V pools, `[slots, kv_heads * head_dim]` each.
#[derive(Debug)]
pub(crate) struct LayerKv {
    k: Tensor<2>,
    v: Tensor<2>,
}

/// Where one step's tokens go and what each sequence reads back, computed once per step and
/// shared by every layer of one KV group (full, or within one sliding window).
#[derive(Debug)]
pub(crate) struct StepSlots {
    /// The slot of every new token, batch order.
    write: Tensor<1, Int>,
    /// Per sequence: the slots of the positions its new tokens may see, `first..start + new`
    /// (its whole context, or the part a sliding window keeps). Empty on a GPU, which reads
    /// them through `paged`.
    contexts: Vec<Tensor<1, Int>>,
    /// The same slots and each new token's visible run, for the GPU's paged attention kernel.
    #[cfg(feature = "wgpu")]
    paged: Option<crate::kernels::gpu::PagedTables>,
    /// `contexts` on the host, for attention there.
    context_slots: Vec<Vec<usize>>,
    /// Per sequence: its new tokens' count, the position of the first, and `first`.
    spans: Vec<(usize, usize, usize)>,
    /// The sliding window these layers attend within, if any.
    window: Option<usize>,
    kv_heads: usize,
    head_dim: usize,
}

/// The shape of a pool: how many blocks of how many positions, stored in which dtype.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KvLayout {
    pub(crate) num_blocks: usize,
    pub(crate) block_size: usize,
    pub(crate) dtype: DType,
}

impl KvLayout {
    /// The layout `size` asks for, for a model whose layers share pages in `groups` groups of
    /// `group_size` layers ([`KvGroups`]) of `kv_dim` K (and V) values per position, and
    /// `context` positions. A page is one group's block; a count of positions gets a page per
    /// block per group (room for them however little a sliding group gives back). An automatic
    /// size takes at most its share of `memory` (bytes; `None`: unbounded): the host's available
    /// memory for a pool on the CPU, a GPU's for a pool there.
    pub(crate) fn within(
        size: KvCacheSize,
        ((group_size, groups), kv_dim, context): ((usize, usize), usize, usize),
        (block_size, dtype): (usize, DType),
        memory: Option<usize>,
    ) -> Result<Self, crate::LoadError> {
        let per_position = 2 * group_size * kv_dim * dtype.size();
        let per_block = (per_position * block_size).max(1);
        let groups = groups.max(1);
        // A count of positions is rounded up to whole blocks; a byte budget is not exceeded.
        let num_blocks = match size {
            KvCacheSize::Bytes(bytes) => bytes / per_block,
            KvCacheSize::Tokens(tokens) => tokens.div_ceil(block_size) * groups,
            KvCacheSize::Auto {
                running,
                context: served,
            } => {
                let context = served.map_or(context, |c| c.min(context));
                let tokens =
                    context.max(running.saturating_mul(context.min(KV_TOKENS_PER_SEQUENCE)));
                let cap = memory.map_or(usize::MAX, |available| {
                    (available as f64 * KV_AUTO_MEMORY_FRACTION) as usize / per_block
                });
                (tokens.div_ceil(block_size) * groups).min(cap).max(1)
            }
        };
        if num_blocks == 0 {
            return Err(crate::LoadError::Unsupported(format!(
                "a KV cache of {size:?} holds no block of {block_size} positions ({per_block} bytes each)"
            )));
        }
        Ok(Self {
            num_blocks,
            block_size,
            dtype,
        })
    }
}

/// Bytes this process may still allocate: the system's available memory, and the cgroup's
/// limit less its usage when there is one (a container's limit is what the OOM killer
/// enforces). `None` where neither can be read.
pub fn memory_available() -> Option<usize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = meminfo_kib(&meminfo, "MemAvailable")? * 1024;
    Some(cgroup_headroom().map_or(available, |room| room.min(available)))
}

/// A `/proc/meminfo` field in KiB.
fn meminfo_kib(meminfo: &str, field: &str) -> Option<usize> {
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The cgroup v2 `memory.max` less `memory.current` of this process's cgroup ("max": none).
fn cgroup_headroom() -> Option<usize> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|line| line.strip_prefix("0::"))?;
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let max: usize = read("memory.max")?.trim().parse().ok()?;
    let current: usize = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

impl PagedKv {
    /// A zeroed pool laid out as `layout` for layers grouped as `groups`. The zeros are fresh
    /// pages from the allocator, so memory is only committed as positions are written.
    pub(crate) fn new(
        groups: KvGroups,
        (kv_heads, head_dim): (usize, usize),
        layout: KvLayout,
        device: &Device,
    ) -> Self {
        let slots = layout.num_blocks * layout.block_size;
        let kv_dim = kv_heads * head_dim;
        let zeros = || zeroed([slots, kv_dim], layout.dtype, device);
        Self {
            places: (0..groups.size)
                .map(|_| LayerKv {
                    k: zeros(),
                    v: zeros(),
                })
                .collect(),
            groups,
            kv_heads,
            head_dim,
            block_size: layout.block_size,
            num_blocks: layout.num_blocks,
            dtype: layout.dtype,
        }
    }

    /// The dtype K and V are stored in.
    pub(crate) fn dtype(&self) -> DType {
        self.dtype
    }

    /// Bytes of the whole pool.
    pub(crate) fn bytes(&self) -> usize {
        2 * self.places.len()
            * self.num_blocks
            * self.block_size
            * self.kv_heads
            * self.head_dim
            * self.dtype.size()
    }

    /// How the layers share pages.
    pub(crate) fn groups(&self) -> &KvGroups {
        &self.groups
    }

    /// Layer `layer`'s group and its K/V tensors.
    pub(crate) fn layer_mut(&mut self, layer: usize) -> (usize, &mut LayerKv) {
        let (group, place) = self.groups.layers[layer];
        (group, &mut self.places[place])
    }

    pub(crate) fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    pub(crate) fn block_size(&self) -> usize {
        self.block_size
    }

    /// Checks sequence `sequence` of a step: its table holds a page of the pool per block of
    /// `0..start + new` per group (a sliding group's pages wholly before its window may be
    /// freed: it reads them no more), and no slot it writes was written by an earlier sequence
    /// of the step (`written`; groups share the pool's tensors, so one set for all).
    pub(crate) fn check(
        &self,
        sequence: usize,
        seq: &SeqInput<'_>,
        written: &mut HashSet<(u32, usize)>,
    ) -> Result<(), RuntimeError> {
        let (bs, groups) = (self.block_size, self.groups.windows.len());
        let end = seq.start + seq.tokens.len();
        let needed = end.div_ceil(bs) * groups;
        if seq.block_table.len() < needed {
            return Err(RuntimeError::BlockTableTooShort {
                sequence,
                needed,
                given: seq.block_table.len(),
            });
        }
        for (group, window) in self.groups.windows.iter().enumerate() {
            let first = window.map_or(0, |w| (seq.start + 1).saturating_sub(w)) / bs;
            for b in first..end.div_ceil(bs) {
                let block = seq.block_table[b * groups + group];
                if block as usize >= self.num_blocks {
                    return Err(RuntimeError::BadBlock {
                        block,
                        num_blocks: self.num_blocks,
                    });
                }
            }
            for pos in seq.start..end {
                let block = seq.block_table[pos / bs * groups + group];
                if !written.insert((block, pos % bs)) {
                    return Err(RuntimeError::SharedWrite { block });
                }
            }
        }
        Ok(())
    }

    /// The slots of a checked step for the layers of group `group` (which attend within its
    /// window, or to the whole context). Positions that slid out of every new token's window
    /// are not read — their pages may hold anything.
    pub(crate) fn slots(&self, batch: &[SeqInput<'_>], device: &Device, group: usize) -> StepSlots {
        let (bs, groups) = (self.block_size, self.groups.windows.len());
        let window = self.groups.windows[group];
        let slot = |seq: &SeqInput<'_>, pos: usize| {
            (seq.block_table[pos / bs * groups + group] as usize * bs + pos % bs) as i64
        };
        let write: Vec<i64> = batch
            .iter()
            .flat_map(|seq| (seq.start..seq.start + seq.tokens.len()).map(move |p| (seq, p)))
            .map(|(seq, pos)| slot(seq, pos))
            .collect();
        let total = write.len();
        // Each sequence reads back what its first new token may see onwards, new tokens
        // included: its whole context, or the last `window` positions before it.
        let first = |seq: &SeqInput<'_>| window.map_or(0, |w| (seq.start + 1).saturating_sub(w));
        let context_slots: Vec<Vec<usize>> = batch
            .iter()
            .map(|seq| {
                let end = seq.start + seq.tokens.len();
                (first(seq)..end)
                    .map(|pos| slot(seq, pos) as usize)
                    .collect()
            })
            .collect();
        // A GPU reads the pool through the paged kernel's tables; the tensor path (CPU in f16)
        // gathers each sequence's slots.
        #[cfg(feature = "wgpu")]
        let paged = (*device != Device::flex()).then(|| {
            let runs =
                batch
                    .iter()
                    .zip(&context_slots)
                    .enumerate()
                    .flat_map(|(s, (seq, slots))| {
                        let mask = Mask::Causal {
                            start: seq.start,
                            first: first(seq),
                            window,
                        };
                        (0..seq.tokens.len()).map(move |i| (s, mask.keys(i, slots.len())))
                    });
            crate::kernels::gpu::PagedTables::upload(&context_slots, runs, device)
        });
        #[cfg(feature = "wgpu")]
        let gathered = paged.is_none();
        #[cfg(not(feature = "wgpu"))]
        let gathered = true;
        let contexts = context_slots
            .iter()
            .filter(|_| gathered)
            .map(|s| {
                let s: Vec<i64> = s.iter().map(|&slot| slot as i64).collect();
                let n = s.len();
                Tensor::from_data(TensorData::new(s, [n]), device)
            })
            .collect();
        StepSlots {
            write: Tensor::from_data(TensorData::new(write, [total]), device),
            contexts,
            #[cfg(feature = "wgpu")]
            paged,
            context_slots,
            spans: batch
                .iter()
                .map(|s| (s.tokens.len(), s.start, first(s)))
                .collect(),
            window,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
        }
    }
}

impl LayerKv {
    /// Stores this layer's new `k` and `v` (`[tokens, kv_heads * head_dim]`, rotated) at the
    /// step's slots, then runs causal attention of each sequence's queries (`q`:
    /// `[tokens, heads, head_dim]`, `q·k` scaled by `scale`) over its context (within the
    /// step's window). Returns `[tokens, heads * head_dim]`.
    pub(crate) fn attend(
        &mut self,
        step: &StepSlots,
        (q, k, v): (Tensor<3>, Tensor<2>, Tensor<2>),
        scale: f32,
    ) -> Tensor<2> {
        let write = &step.write;
        let compute = q.dtype();
        let (k_cache, v_cache) = (&mut self.k, &mut self.v);
        let (k, v) = (cast(k, k_cache.dtype()), cast(v, v_cache.dtype()));
        k_cache.inplace(|cache| cache.select_assign(0, write.clone(), k, IndexingUpdateOp::Assign));
        v_cache.inplace(|cache| cache.select_assign(0, write.clone(), v, IndexingUpdateOp::Assign));
        let [_, heads, head_dim] = q.dims();
        let (kv_heads, kv_head_dim) = (step.kv_heads, step.head_dim);
        if compute == burn::tensor::DType::F32
            && q.device() == Device::flex()
            && let Some(out) = self.attend_host(step, q.clone(), (heads, head_dim), scale)
        {
            return out;
        }
        #[cfg(feature = "wgpu")]
        if let Some(tables) = &step.paged {
            debug_assert_eq!(head_dim, kv_head_dim);
            let pool = (&self.k, &self.v);
            return crate::kernels::gpu::paged_attention(q, pool, tables, kv_heads, scale);
        }
        let (k_cache, v_cache) = (&self.k, &self.v);
        let mut outputs = Vec::with_capacity(step.contexts.len());
        let mut offset = 0;
        for (context, &(n, start, first)) in step.contexts.iter().zip(&step.spans) {
            let [ctx] = context.dims();
            let q_seq = q.clone().slice([offset..offset + n, 0..heads, 0..head_dim]);
            let read = |cache: &Tensor<2>| {
                cast(cache.clone().select(0, context.clone()), compute).reshape([
                    ctx,
                    kv_heads,
                    kv_head_dim,
                ])
            };
            let mask = Mask::Causal {
                start,
                first,
                window: step.window,
            };
            outputs.push(attention(q_seq, read(k_cache), read(v_cache), mask, scale));
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

    /// [`attend`](Self::attend)'s attention on the CPU in f32, straight from the pool's
    /// storage ([`attention_host`]): no gathered K/V tensors, no score tensors (at a
    /// 961-token prefill those were 33 MB a layer, fresh pages every call). `None` when the
    /// pool's storage cannot be read in place.
    fn attend_host(
        &self,
        step: &StepSlots,
        q: Tensor<3>,
        (heads, head_dim): (usize, usize),
        scale: f32,
    ) -> Option<Tensor<2>> {
        use burn::backend::Flex;
        use burn::tensor::DType as B;
        let device = q.device();
        let [total, _, _] = q.dims();
        let q = q.try_into_vec_as::<f32>().ok()?;
        let k = self.k.clone().try_into_primitive::<Flex>().ok()?;
        let v = self.v.clone().try_into_primitive::<Flex>().ok()?;
        let (k, v) = match self.k.dtype() {
            B::F32 => (PoolRows::F32(k.as_slice()?), PoolRows::F32(v.as_slice()?)),
            B::F16 => (PoolRows::F16(k.as_slice()?), PoolRows::F16(v.as_slice()?)),
            _ => return None,
        };
        let width = heads * head_dim;
        let mut out = Vec::with_capacity(total * width);
        let mut offset = 0;
        for (slots, &(n, start, first)) in step.context_slots.iter().zip(&step.spans) {
            let mask = Mask::Causal {
                start,
                first,
                window: step.window,
            };
            let q = q.get(offset * width..(offset + n) * width)?;
            let shape = (heads, step.kv_heads, step.head_dim);
            attention_host(q, (k, v, slots), shape, (mask, scale), &mut out);
            offset += n;
        }
        Some(Tensor::from_data(
            TensorData::new(out, [total, width]),
            &device,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 30 layers of 192 K values (SmolLM2-135M), 8192 positions, blocks of 16.
    const SMOLLM2: ((usize, usize), usize, usize) = ((30, 1), 192, 8192);

    fn blocks(size: KvCacheSize, dtype: DType) -> usize {
        KvLayout::within(size, SMOLLM2, (16, dtype), memory_available())
            .unwrap()
            .num_blocks
    }

    #[test]
    fn a_budget_is_bytes_or_positions() {
        // One position: K and V of 30 layers x 192 values.
        let per_position = 2 * 30 * 192;
        assert_eq!(
            blocks(KvCacheSize::Bytes(per_position * 2 * 16 * 10), DType::F16),
            10
        );
        assert_eq!(
            blocks(KvCacheSize::Bytes(per_position * 2 * 16 * 10), DType::F32),
            5
        );
        // Positions are rounded up to whole blocks, whatever the dtype.
        assert_eq!(blocks(KvCacheSize::Tokens(57), DType::F16), 4);
        assert_eq!(blocks(KvCacheSize::Tokens(64), DType::F32), 4);
        assert!(
            KvLayout::within(KvCacheSize::Bytes(100), SMOLLM2, (16, DType::F32), None).is_err()
        );
        assert!(KvLayout::within(KvCacheSize::Tokens(0), SMOLLM2, (16, DType::F32), None).is_err());
    }

    #[test]
    fn an_automatic_budget_takes_its_share_of_the_memory_it_is_given() {
        let auto = KvCacheSize::Auto {
            running: 64,
            context: None,
        };
        // 2 (K, V) x 30 layers x 192 values x 2 bytes x 16 positions a block.
        let block = 2 * 30 * 192 * 2 * 16;
        let within = |memory| {
            KvLayout::within(auto, SMOLLM2, (16, DType::F16), memory)
                .unwrap()
                .num_blocks
        };
        assert_eq!(within(Some(100 * block * 4)), 100);
        assert_eq!(within(None), 64 * KV_TOKENS_PER_SEQUENCE / 16);
    }

    #[test]
    fn an_automatic_budget_follows_the_running_sequences_and_the_context() {
        let auto = |running, context| KvCacheSize::Auto { running, context };
        let cap = memory_available().map_or(usize::MAX, |a| {
            (a as f64 * KV_AUTO_MEMORY_FRACTION) as usize / (2 * 30 * 192 * 2 * 16)
        });
        // One sequence: the whole context. Many: KV_TOKENS_PER_SEQUENCE each.
        assert_eq!(blocks(auto(1, None), DType::F16), (8192 / 16).min(cap));
        assert_eq!(
            blocks(auto(64, None), DType::F16),
            (64 * KV_TOKENS_PER_SEQUENCE / 16).min(cap)
        );
        // A served context shorter than the model's bounds both.
        assert_eq!(blocks(auto(1, Some(100)), DType::F16), 7.min(cap));
        assert_eq!(
            blocks(auto(4, Some(256)), DType::F16),
            (4 * 256 / 16).min(cap)
        );
        // Longer than the model's: the model's.
        assert_eq!(
            blocks(auto(1, Some(1 << 20)), DType::F16),
            (8192 / 16).min(cap)
        );
    }

    #[test]
    fn a_page_is_one_groups_block() {
        // Gemma 3 270M: six groups of 3 layers, 256 K values per position.
        let gemma = ((3, 6), 256, 32768);
        let pages = |size| {
            KvLayout::within(size, gemma, (16, DType::F16), memory_available())
                .unwrap()
                .num_blocks
        };
        // Room for 64 positions: 4 blocks, a page each per group.
        assert_eq!(pages(KvCacheSize::Tokens(64)), 24);
        // A page: K and V of 3 layers for 16 positions, in f16.
        let page = 2 * 3 * 256 * 2 * 16;
        assert_eq!(pages(KvCacheSize::Bytes(page * 10)), 10);
    }

    #[test]
    fn meminfo_fields_read_in_kib() {
        let text = "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(meminfo_kib(text, "MemAvailable"), Some(20_000_000));
        assert_eq!(meminfo_kib(text, "MemFree"), Some(100));
        assert_eq!(meminfo_kib(text, "Mem"), None);
        assert_eq!(meminfo_kib(text, "SwapTotal"), None);
        // This machine has a /proc/meminfo.
        assert!(memory_available().is_some_and(|bytes| bytes > 0));
    }
}
