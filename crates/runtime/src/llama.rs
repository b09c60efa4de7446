//! The Llama family (Llama 2/3, SmolLM2, Mistral, Qwen2) on burn: weights on the device, a paged
//! KV cache, and one forward over a ragged batch of sequences.

use std::sync::Arc;

use burn::tensor::{DType as BurnDType, Device, IndexingUpdateOp, Int, Tensor, TensorData};

use crate::config::ModelConfig;
use crate::kernels::PackedMatrix;
use crate::linear::{Embedding, Linear};
use crate::nn::{apply_rope, attention, rms_norm, rope_tables, swiglu};
use crate::weights::{HostTensor, RawTensor, Weights};
use crate::{DType, LoadError, LoadProgress, RuntimeError, SeqHiddenStates, SeqInput, SeqLogits};

/// One decoder layer's weights.
#[derive(Debug)]
struct Layer {
    attn_norm: Tensor<1>,
    /// q, k and v fused: `(heads + 2 * kv_heads) * head_dim` outputs.
    qkv: Linear,
    qkv_bias: Option<Tensor<1>>,
    out: Linear,
    ffn_norm: Tensor<1>,
    /// gate and up fused: `2 * intermediate` outputs.
    gate_up: Linear,
    down: Linear,
}

/// K and V for every layer, in fixed-size blocks: slot `block * block_size + offset` of a
/// layer's `[slots, kv_heads * head_dim]` tensor holds one position of one sequence.
#[derive(Debug)]
struct KvCache {
    k: Vec<Tensor<2>>,
    v: Vec<Tensor<2>>,
    block_size: usize,
    num_blocks: usize,
}

#[derive(Debug)]
pub(crate) struct Llama {
    config: ModelConfig,
    device: Device,
    dtype: BurnDType,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: Tensor<1>,
    lm_head: Linear,
    inv_freq: Vec<f32>,
    cache: KvCache,
}

impl Llama {
    /// With `cpu_kernels` (the CPU in f32), projections stay `[out, in]` for Kiln's kernels and
    /// Q8_0/Q4_0/Q4_1 GGUF weights stay in their blocks; otherwise everything is dequantized
    /// to the compute dtype and stored for burn's matmul.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn load(
        config: ModelConfig,
        weights: &Weights,
        device: &Device,
        dtype: DType,
        cpu_kernels: bool,
        num_blocks: usize,
        block_size: usize,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Self, LoadError> {
        let c = &config;
        let (hidden, inter) = (c.hidden_size, c.intermediate_size);
        let q_dim = c.num_heads * c.head_dim;
        let kv_dim = c.num_kv_heads * c.head_dim;
        let total = 2 + c.num_layers + usize::from(weights.contains("lm_head.weight"));
        let mut done = 0;
        let mut step = |progress: &mut dyn FnMut(LoadProgress)| {
            done += 1;
            progress(LoadProgress { done, total });
        };
        let burn_dtype = dtype.burn();
        let upload = |t: HostTensor| -> Tensor<2> {
            let shape = [
                t.shape.first().copied().unwrap_or(1),
                t.shape.iter().skip(1).product(),
            ];
            to_dtype(
                Tensor::from_data(TensorData::new(t.data, shape), device),
                burn_dtype,
            )
        };
        let upload1 = |t: HostTensor| -> Tensor<1> {
            let len = t.data.len();
            to_dtype(
                Tensor::from_data(TensorData::new(t.data, [len]), device),
                burn_dtype,
            )
        };
        let get = |name: &str, shape: &[usize]| weights.get(name, shape, c);
        let raw = |name: &str, shape: &[usize]| weights.get_raw(name, shape, c, cpu_kernels);
        // Row-stacked projections (q/k/v, gate/up) as one linear layer: packed when every part
        // is packed in the same format, f32 otherwise.
        let linear = |parts: Vec<RawTensor>| -> Linear {
            let packed_type = |p: &RawTensor| match p {
                RawTensor::Packed(m) => Some(m.ggml_type()),
                RawTensor::F32(_) => None,
            };
            let first = parts.first().and_then(packed_type);
            if first.is_some() && parts.iter().all(|p| packed_type(p) == first) {
                let matrices: Vec<PackedMatrix> = parts
                    .iter()
                    .filter_map(|p| match p {
                        RawTensor::Packed(m) => Some(m.clone()),
                        RawTensor::F32(_) => None,
                    })
                    .collect();
                if let Some(m) = PackedMatrix::concat_rows(matrices) {
                    return Linear::CpuPacked(Arc::new(m));
                }
            }
            let host = concat_rows(parts.into_iter().map(into_host).collect());
            if cpu_kernels {
                Linear::CpuF32(upload(host))
            } else {
                Linear::Device(contiguous(upload(host).transpose()))
            }
        };

        let (embed, tied_head) = match raw("model.embed_tokens.weight", &[c.vocab_size, hidden])? {
            RawTensor::Packed(m) => {
                let m = Arc::new(m);
                (Embedding::CpuPacked(m.clone()), Linear::CpuPacked(m))
            }
            RawTensor::F32(t) => {
                let table = upload(t);
                let head = if cpu_kernels {
                    Linear::CpuF32(table.clone())
                } else {
                    Linear::Device(contiguous(table.clone().transpose()))
                };
                (Embedding::Device(table), head)
            }
        };
        step(progress);
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("model.layers.{i}");
            let qkv = linear(vec![
                raw(&format!("{p}.self_attn.q_proj.weight"), &[q_dim, hidden])?,
                raw(&format!("{p}.self_attn.k_proj.weight"), &[kv_dim, hidden])?,
                raw(&format!("{p}.self_attn.v_proj.weight"), &[kv_dim, hidden])?,
            ]);
            let qkv_bias = if c.attention_bias {
                let q = get(&format!("{p}.self_attn.q_proj.bias"), &[q_dim])?;
                let k = get(&format!("{p}.self_attn.k_proj.bias"), &[kv_dim])?;
                let v = get(&format!("{p}.self_attn.v_proj.bias"), &[kv_dim])?;
                Some(upload1(concat_rows(vec![q, k, v])))
            } else {
                None
            };
            layers.push(Layer {
                attn_norm: upload1(get(&format!("{p}.input_layernorm.weight"), &[hidden])?),
                qkv,
                qkv_bias,
                out: linear(vec![raw(
                    &format!("{p}.self_attn.o_proj.weight"),
                    &[hidden, q_dim],
                )?]),
                ffn_norm: upload1(get(
                    &format!("{p}.post_attention_layernorm.weight"),
                    &[hidden],
                )?),
                gate_up: linear(vec![
                    raw(&format!("{p}.mlp.gate_proj.weight"), &[inter, hidden])?,
                    raw(&format!("{p}.mlp.up_proj.weight"), &[inter, hidden])?,
                ]),
                down: linear(vec![raw(
                    &format!("{p}.mlp.down_proj.weight"),
                    &[hidden, inter],
                )?]),
            });
            step(progress);
        }
        let norm = upload1(get("model.norm.weight", &[hidden])?);
        step(progress);
        // A tied output layer reuses the embedding; GGUF marks it by omitting `output.weight`.
        let lm_head = if weights.contains("lm_head.weight") && !c.tie_word_embeddings {
            let head = linear(vec![raw("lm_head.weight", &[c.vocab_size, hidden])?]);
            step(progress);
            head
        } else {
            tied_head
        };
        let slots = num_blocks * block_size;
        let cache = KvCache {
            k: (0..c.num_layers)
                .map(|_| Tensor::zeros([slots, kv_dim], (device, burn_dtype)))
                .collect(),
            v: (0..c.num_layers)
                .map(|_| Tensor::zeros([slots, kv_dim], (device, burn_dtype)))
                .collect(),
            block_size,
            num_blocks,
        };
        Ok(Self {
            inv_freq: config.inv_freq(),
            config,
            device: device.clone(),
            dtype: burn_dtype,
            embed,
            layers,
            norm,
            lm_head,
            cache,
        })
    }

    pub(crate) fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub(crate) fn num_blocks(&self) -> usize {
        self.cache.num_blocks
    }

    pub(crate) fn block_size(&self) -> usize {
        self.cache.block_size
    }

    /// Checks a batch against the vocabulary, the context length and the KV pool before any
    /// work, so a rejected step leaves the cache as it was.
    fn validate(&self, batch: &[SeqInput<'_>]) -> Result<(), RuntimeError> {
        if batch.is_empty() {
            return Err(RuntimeError::EmptyBatch);
        }
        let mut written = std::collections::HashSet::new();
        for (sequence, seq) in batch.iter().enumerate() {
            if seq.tokens.is_empty() {
                return Err(RuntimeError::EmptySequence { sequence });
            }
            if let Some(&id) = seq
                .tokens
                .iter()
                .find(|&&id| id as usize >= self.config.vocab_size)
            {
                return Err(RuntimeError::BadTokenId {
                    id,
                    vocab_size: self.config.vocab_size,
                });
            }
            let end = seq.start + seq.tokens.len();
            if end > self.config.max_position_embeddings {
                return Err(RuntimeError::ContextExceeded {
                    position: end - 1,
                    context_length: self.config.max_position_embeddings,
                });
            }
            let needed = end.div_ceil(self.cache.block_size);
            if seq.block_table.len() < needed {
                return Err(RuntimeError::BlockTableTooShort {
                    sequence,
                    needed,
                    given: seq.block_table.len(),
                });
            }
            for &block in &seq.block_table[..needed] {
                if block as usize >= self.cache.num_blocks {
                    return Err(RuntimeError::BadBlock {
                        block,
                        num_blocks: self.cache.num_blocks,
                    });
                }
            }
            for pos in seq.start..end {
                let block = seq.block_table[pos / self.cache.block_size];
                if !written.insert((block, pos % self.cache.block_size)) {
                    return Err(RuntimeError::SharedWrite { block });
                }
            }
        }
        Ok(())
    }

    /// Runs one step: every sequence's new tokens, at their positions, through the model;
    /// their K/V land in the cache slots their block tables name.
    pub(crate) fn forward(
        &mut self,
        batch: &[SeqInput<'_>],
    ) -> Result<Vec<SeqLogits>, RuntimeError> {
        let x = self.trunk(batch, None)?;
        let c = &self.config;
        let device = &self.device;
        // Only the rows someone asked for go through the (large) output layer.
        let mut rows = Vec::new();
        let mut offset = 0;
        for seq in batch {
            let n = seq.tokens.len();
            if seq.all_logits {
                rows.extend((offset..offset + n).map(|r| r as i64));
            } else {
                rows.push((offset + n - 1) as i64);
            }
            offset += n;
        }
        let n_rows = rows.len();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [n_rows]), device);
        let h = rms_norm(x.select(0, rows), &self.norm, c.rms_norm_eps);
        let data = read_f32(self.lm_head.forward(h)?, "logits")?;
        let vocab = c.vocab_size;
        let mut out = Vec::with_capacity(batch.len());
        let mut at = 0;
        for seq in batch {
            let n = if seq.all_logits { seq.tokens.len() } else { 1 };
            out.push(SeqLogits {
                rows: n,
                vocab,
                data: data
                    .get(at * vocab..(at + n) * vocab)
                    .unwrap_or_default()
                    .to_vec(),
            });
            at += n;
        }
        Ok(out)
    }

    /// Like [`forward`](Self::forward) (the cache is written the same way), returning the hidden
    /// states at every new position instead of logits, in transformers' `output_hidden_states`
    /// order: the embedding output, each layer's output but the last, and the last layer's
    /// output after the final norm.
    pub(crate) fn hidden_states(
        &mut self,
        batch: &[SeqInput<'_>],
    ) -> Result<Vec<SeqHiddenStates>, RuntimeError> {
        let mut captured = Vec::with_capacity(self.config.num_layers + 1);
        let x = self.trunk(batch, Some(&mut captured))?;
        captured.push(rms_norm(x, &self.norm, self.config.rms_norm_eps));
        let hidden = self.config.hidden_size;
        let mut out: Vec<SeqHiddenStates> = batch
            .iter()
            .map(|seq| SeqHiddenStates {
                rows: seq.tokens.len(),
                hidden,
                states: Vec::with_capacity(captured.len()),
            })
            .collect();
        for state in captured {
            let data = read_f32(state, "hidden states")?;
            let mut at = 0;
            for seq in &mut out {
                let len = seq.rows * hidden;
                seq.states
                    .push(data.get(at..at + len).unwrap_or_default().to_vec());
                at += len;
            }
        }
        Ok(out)
    }

    /// The decoder stack over a batch: validates it, writes its K/V into the cache and returns
    /// the last layer's output `[total new tokens, hidden]` (before the final norm). With
    /// `capture`, also keeps the embedding output and every layer's output but the last.
    fn trunk(
        &mut self,
        batch: &[SeqInput<'_>],
        mut capture: Option<&mut Vec<Tensor<2>>>,
    ) -> Result<Tensor<2>, RuntimeError> {
        self.validate(batch)?;
        let c = &self.config;
        let bs = self.cache.block_size;
        let slot =
            |seq: &SeqInput<'_>, pos: usize| seq.block_table[pos / bs] as usize * bs + pos % bs;
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        let mut slots = Vec::new();
        for seq in batch {
            ids.extend_from_slice(seq.tokens);
            for (i, _) in seq.tokens.iter().enumerate() {
                let pos = seq.start + i;
                positions.push(pos);
                slots.push(slot(seq, pos) as i64);
            }
        }
        let total = ids.len();
        let device = &self.device;
        let slots = Tensor::<1, Int>::from_data(TensorData::new(slots, [total]), device);
        // Each sequence reads its whole context back from the cache, new tokens included.
        let contexts: Vec<Tensor<1, Int>> = batch
            .iter()
            .map(|seq| {
                let end = seq.start + seq.tokens.len();
                let s: Vec<i64> = (0..end).map(|pos| slot(seq, pos) as i64).collect();
                Tensor::from_data(TensorData::new(s, [end]), device)
            })
            .collect();
        let (cos, sin) = rope_tables(&positions, &self.inv_freq, device, self.dtype);
        let (heads, kv_heads, head_dim) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let (q_dim, kv_dim) = (heads * head_dim, kv_heads * head_dim);

        let mut x = to_dtype(self.embed.forward(&ids, device), self.dtype);
        for (layer, (k_cache, v_cache)) in self
            .layers
            .iter()
            .zip(self.cache.k.iter_mut().zip(self.cache.v.iter_mut()))
        {
            // A layer's input is the embedding output or the previous layer's output.
            if let Some(states) = capture.as_deref_mut() {
                states.push(x.clone());
            }
            let h = rms_norm(x.clone(), &layer.attn_norm, c.rms_norm_eps);
            let mut qkv = layer.qkv.forward(h)?;
            if let Some(bias) = &layer.qkv_bias {
                qkv = qkv.add(bias.clone().unsqueeze_dim::<2>(0));
            }
            let q = qkv
                .clone()
                .slice([0..total, 0..q_dim])
                .reshape([total, heads, head_dim]);
            let k = qkv
                .clone()
                .slice([0..total, q_dim..q_dim + kv_dim])
                .reshape([total, kv_heads, head_dim]);
            let v = qkv.slice([0..total, q_dim + kv_dim..q_dim + 2 * kv_dim]);
            let q = apply_rope(q, &cos, &sin);
            let k = apply_rope(k, &cos, &sin).reshape([total, kv_dim]);
            k_cache.inplace(|cache| {
                cache.select_assign(0, slots.clone(), k, IndexingUpdateOp::Assign)
            });
            v_cache.inplace(|cache| {
                cache.select_assign(0, slots.clone(), v, IndexingUpdateOp::Assign)
            });

            let mut outputs = Vec::with_capacity(batch.len());
            let mut offset = 0;
            for (seq, context) in batch.iter().zip(&contexts) {
                let n = seq.tokens.len();
                let [ctx] = context.dims();
                let q_seq = q.clone().slice([offset..offset + n, 0..heads, 0..head_dim]);
                let k_seq = k_cache
                    .clone()
                    .select(0, context.clone())
                    .reshape([ctx, kv_heads, head_dim]);
                let v_seq = v_cache
                    .clone()
                    .select(0, context.clone())
                    .reshape([ctx, kv_heads, head_dim]);
                outputs.push(attention(q_seq, k_seq, v_seq, seq.start));
                offset += n;
            }
            let attn = if outputs.len() == 1 {
                outputs
                    .pop()
                    .unwrap_or_else(|| Tensor::zeros([total, q_dim], device))
            } else {
                Tensor::cat(outputs, 0)
            };
            x = x.add(layer.out.forward(attn)?);
            let h = rms_norm(x.clone(), &layer.ffn_norm, c.rms_norm_eps);
            x = x.add(swiglu(h, &layer.gate_up, &layer.down)?);
        }

        Ok(x)
    }
}

/// Reads a tensor back to the host as f32, whatever its dtype.
fn read_f32(t: Tensor<2>, what: &str) -> Result<Vec<f32>, RuntimeError> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| RuntimeError::Backend(format!("reading {what}: {e:?}")))
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
    let shape = if cols == 1 && data.len() == rows {
        vec![rows]
    } else {
        vec![rows, cols]
    };
    HostTensor { shape, data }
}

fn to_dtype<const D: usize>(t: Tensor<D>, dtype: BurnDType) -> Tensor<D> {
    if t.dtype() == dtype { t } else { t.cast(dtype) }
}

/// A loaded weight as f32 values.
fn into_host(raw: RawTensor) -> HostTensor {
    match raw {
        RawTensor::F32(t) => t,
        RawTensor::Packed(p) => HostTensor {
            shape: vec![p.rows, p.cols],
            data: p.dequantize(),
        },
    }
}

/// Materializes a transposed weight once at load, so each step's matmul reads it contiguously.
fn contiguous(t: Tensor<2>) -> Tensor<2> {
    let dtype = t.dtype();
    let device = t.device();
    Tensor::<2>::from_data(t.into_data(), (&device, dtype))
}
