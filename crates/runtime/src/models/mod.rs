//! Model families, one file each, and what every family shares: opening a checkpoint, checking
//! a step before any work, and turning the decoder's output into logits or hidden states.
//!
//! A family implements [`CausalLm`] (embed, decode over the paged KV cache, final norm, output
//! layer); [`Family`] is the enum of them that [`crate::Model`] wraps. To add one: a file here
//! with its config → weights → forward, its [`GgufLayout`], a variant, and an arm in
//! [`Family::load`].

mod gemma3;
mod idefics3;
mod llama;
mod phi3;
mod pixtral;

use std::collections::HashSet;
use std::path::Path;

use burn::tensor::{DType as BurnDType, Device, Int, Tensor, TensorData};

use crate::config::{Architecture, LayerAttention, ModelConfig};
use crate::nn::{KvLayout, LayerCache, PagedKv, Rope, RopeTables, StepSlots, host_f32};
use crate::weights::{GgufLayout, GgufSource, Loader, SafetensorsSource, TensorSource};
use crate::{
    LoadError, LoadOptions, LoadProgress, RuntimeError, SeqHiddenStates, SeqInput, SeqLogits,
    VisionInfo,
};
use gemma3::Gemma3;
use idefics3::Idefics3;
use llama::{Llama, Projections};
use pixtral::Pixtral;

/// What the shared step logic needs of a family.
pub(crate) trait CausalLm: std::fmt::Debug + Send {
    fn config(&self) -> &ModelConfig;
    fn device(&self) -> &Device;
    fn kv(&self) -> &PagedKv;
    /// The embedding of a step's tokens `[tokens, hidden]`, in the compute dtype. Separate from
    /// [`decode`](Self::decode) so other embeddings (images) can be spliced in between.
    fn embed(&self, ids: &[u32]) -> Tensor<2>;
    /// The decoder stack over a checked batch whose embeddings are `x`: writes its K/V into the
    /// cache and returns the last layer's output `[tokens, hidden]` (before the final norm).
    /// With `capture`, also keeps each layer's input (the embedding output and every layer's
    /// output but the last).
    fn decode(
        &mut self,
        batch: &[SeqInput<'_>],
        x: Tensor<2>,
        capture: Option<&mut Vec<Tensor<2>>>,
    ) -> Result<Tensor<2>, RuntimeError>;
    fn final_norm(&self, x: Tensor<2>) -> Tensor<2>;
    /// Logits `[rows, vocab]` of final-normed rows.
    fn lm_head(&self, h: Tensor<2>) -> Result<Tensor<2>, RuntimeError>;
}

/// Every family Kiln runs. Phi-3 runs as [`Llama`] (the same wiring; `phi3.rs` reads its
/// fused checkpoint and its RoPE).
#[derive(Debug)]
pub(crate) enum Family {
    Llama(Llama),
    Gemma3(Gemma3),
    Idefics3(Box<Idefics3>),
    Pixtral(Box<Pixtral>),
}

/// A vision family's tower, as its config describes it.
enum Tower {
    Idefics3(idefics3::VisionConfig),
    Pixtral(pixtral::VisionConfig),
}

/// Each attention kind's RoPE (Gemma 3's sliding layers have their own base).
#[derive(Debug)]
pub(crate) struct LayerRopes {
    full: Rope,
    sliding: Rope,
}

/// One step's RoPE tables for each attention kind the model's layers use and KV slots for each
/// KV group, made once and shared by the layers of that kind and group.
#[derive(Debug)]
pub(crate) struct Step {
    tokens: usize,
    full: Option<RopeTables>,
    sliding: Option<RopeTables>,
    groups: Vec<StepSlots>,
}

impl LayerRopes {
    pub(crate) fn new(c: &ModelConfig) -> Self {
        Self {
            full: Rope::new(c.rope(LayerAttention::Full)),
            sliding: Rope::new(c.rope(LayerAttention::Sliding)),
        }
    }

    /// The tables and slots of a checked batch for the kinds `c`'s layers use and every KV
    /// group of `kv`.
    pub(crate) fn step(
        &self,
        c: &ModelConfig,
        kv: &PagedKv,
        batch: &[SeqInput<'_>],
        (device, dtype): (&Device, BurnDType),
    ) -> Step {
        let positions: Vec<usize> = batch
            .iter()
            .flat_map(|seq| seq.start..seq.start + seq.tokens.len())
            .collect();
        let kind = |attention: LayerAttention, rope: &Rope| {
            c.layer_attention
                .contains(&attention)
                .then(|| rope.tables(&positions, device, dtype))
        };
        Step {
            tokens: positions.len(),
            full: kind(LayerAttention::Full, &self.full),
            sliding: kind(LayerAttention::Sliding, &self.sliding),
            groups: (0..kv.groups().windows.len())
                .map(|group| kv.slots(batch, device, group))
                .collect(),
        }
    }
}

impl Step {
    /// New tokens in the step, all sequences together.
    pub(crate) fn tokens(&self) -> usize {
        self.tokens
    }

    /// The tables of a layer of kind `attention` and the slots of its KV group (made by
    /// [`LayerRopes::step`] for every kind and group the model has).
    pub(crate) fn get(&self, attention: LayerAttention, group: usize) -> (&RopeTables, &StepSlots) {
        let kind = match attention {
            LayerAttention::Full => &self.full,
            LayerAttention::Sliding => &self.sliding,
        };
        let rope = kind
            .as_ref()
            .or(self.full.as_ref())
            .or(self.sliding.as_ref());
        match (rope, self.groups.get(group)) {
            (Some(rope), Some(slots)) => (rope, slots),
            // `step` makes every kind in `layer_attention` and every group of the pool.
            _ => unreachable!("a layer of a kind or group the step did not make"),
        }
    }
}

/// A decoder layer as [`decode_layers`] runs it: on burn tensors, or on rows kept on the host.
pub(crate) trait DecoderLayer {
    /// Whether it attends to everything or within the window.
    fn attention(&self) -> LayerAttention;
    /// Whether `m` rows can go through it on the host ([`forward_host`](Self::forward_host)).
    fn on_host(&self, m: usize) -> bool;
    /// `x` `[tokens, hidden]` through the layer; its K/V land in the cache.
    fn forward(&self, x: Tensor<2>, cache: LayerCache<'_>) -> Result<Tensor<2>, RuntimeError>;
    /// [`forward`](Self::forward) on `m` rows on the host (a decode step's few rows on the
    /// CPU): no tensor between the norms, the kernels, the MLP and the residual adds.
    fn forward_host(
        &self,
        x: &[f32],
        m: usize,
        cache: LayerCache<'_>,
        device: &Device,
    ) -> Result<Vec<f32>, RuntimeError>;
}

/// Runs a family's decoder stack over a checked step: on the host when every layer can take
/// the step's rows there, else on tensors. With `capture`, keeps each layer's input.
pub(crate) fn decode_layers<L: DecoderLayer>(
    layers: &[L],
    (kv, step): (&mut PagedKv, &Step),
    mut x: Tensor<2>,
    mut capture: Option<&mut Vec<Tensor<2>>>,
    (device, hidden): (&Device, usize),
) -> Result<Tensor<2>, RuntimeError> {
    let total = step.tokens();
    if layers.iter().all(|layer| layer.on_host(total)) {
        let on_device =
            |xs: Vec<f32>| Tensor::<2>::from_data(TensorData::new(xs, [total, hidden]), device);
        let mut xs = host_f32(x)?;
        for (i, layer) in layers.iter().enumerate() {
            if let Some(states) = capture.as_deref_mut() {
                states.push(on_device(xs.clone()));
            }
            let (group, layer_kv) = kv.layer_mut(i);
            let (rope, slots) = step.get(layer.attention(), group);
            xs = layer.forward_host(&xs, total, (rope, layer_kv, slots), device)?;
        }
        return Ok(on_device(xs));
    }
    for (i, layer) in layers.iter().enumerate() {
        if let Some(states) = capture.as_deref_mut() {
            states.push(x.clone());
        }
        let (group, layer_kv) = kv.layer_mut(i);
        let (rope, slots) = step.get(layer.attention(), group);
        x = layer.forward(x, (rope, layer_kv, slots))?;
    }
    Ok(x)
}

/// A vision tower's shape, which both vision families' configs give the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TowerShape {
    pub(crate) hidden_size: usize,
    pub(crate) intermediate_size: usize,
    pub(crate) num_layers: usize,
    pub(crate) num_heads: usize,
    pub(crate) patch_size: usize,
}

impl TowerShape {
    /// From a Hugging Face `vision_config`.
    pub(crate) fn from_hf_json(v: &serde_json::Value, origin: &str) -> Result<Self, LoadError> {
        let num = |key: &str| -> Result<usize, LoadError> {
            v[key]
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| LoadError::Config {
                    origin: origin.to_string(),
                    message: format!("vision_config.{key} must be a positive integer"),
                })
        };
        Ok(Self {
            hidden_size: num("hidden_size")?,
            intermediate_size: num("intermediate_size")?,
            num_layers: num("num_hidden_layers")?,
            num_heads: num("num_attention_heads")?,
            patch_size: num("patch_size")?,
        })
    }

    /// From an `mmproj` GGUF's `clip.vision.*`.
    pub(crate) fn from_mmproj(m: &Mmproj<'_>) -> Result<Self, LoadError> {
        Ok(Self {
            hidden_size: m.num("embedding_length")?,
            intermediate_size: m.num("feed_forward_length")?,
            num_layers: m.num("block_count")?,
            num_heads: m.num("attention.head_count")?,
            patch_size: m.num("patch_size")?,
        })
    }
}

/// What a vision family reads from llama.cpp's `mmproj` GGUF (`clip.vision.*`) and from the
/// text model's GGUF (its image token), naming the mmproj file in errors.
pub(crate) struct Mmproj<'a> {
    pub(crate) tower: &'a kiln_gguf::Metadata,
    pub(crate) text: &'a kiln_gguf::Metadata,
    pub(crate) origin: &'a str,
}

impl Mmproj<'_> {
    pub(crate) fn bad(&self, message: String) -> LoadError {
        LoadError::Config {
            origin: self.origin.to_string(),
            message,
        }
    }

    /// `clip.vision.{key}`, which must be positive.
    pub(crate) fn num(&self, key: &str) -> Result<usize, LoadError> {
        let v = self.tower.get_u64(&format!("clip.vision.{key}"))? as usize;
        if v == 0 {
            return Err(self.bad(format!("clip.vision.{key} is 0")));
        }
        Ok(v)
    }

    /// The id of the text model's `token` (the image placeholder).
    pub(crate) fn token(&self, token: &str) -> Result<u32, LoadError> {
        self.text
            .get_str_array("tokenizer.ggml.tokens")?
            .iter()
            .position(|t| t == token)
            .map(|id| id as u32)
            .ok_or_else(|| {
                self.bad(format!(
                    "the text model's vocabulary has no `{token}` token"
                ))
            })
    }
}

/// A checkpoint opened far enough to read its config.
enum Checkpoint<'a> {
    Gguf(kiln_gguf::GgufFile, &'a Path),
    Safetensors(&'a Path),
}

impl Checkpoint<'_> {
    /// Its tensors, named through `layout` when the checkpoint is GGUF.
    fn source(
        self,
        layout: GgufLayout,
        config: &ModelConfig,
    ) -> Result<Box<dyn TensorSource>, LoadError> {
        Ok(match self {
            Self::Gguf(file, path) => {
                Box::new(GgufSource::new(file, path.to_path_buf(), layout, config))
            }
            Self::Safetensors(dir) => Box::new(SafetensorsSource::open(dir)?),
        })
    }
}

impl Family {
    /// Opens a GGUF file or a Hugging Face directory (`config.json` + safetensors) and loads the
    /// family its config names.
    pub(crate) fn load(
        path: &Path,
        options: &LoadOptions,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Self, LoadError> {
        if options.block_size == 0 {
            return Err(LoadError::Unsupported("block_size must be positive".into()));
        }
        if options.mmproj.is_some() && path.is_dir() {
            return Err(LoadError::Unsupported(
                "--mmproj goes with a GGUF model; a Hugging Face folder has its vision tower \
                 inside"
                    .into(),
            ));
        }
        let mut vision = None;
        let mut tower_file = None;
        let (config, checkpoint) = if path.is_dir() {
            let config_path = path.join("config.json");
            let json = crate::weights::read_json(&config_path)?;
            let origin = config_path.display().to_string();
            vision = match json["model_type"].as_str() {
                // SmolVLM 2 names the same model `smolvlm`.
                Some("idefics3" | "smolvlm") => Some(Tower::Idefics3(
                    idefics3::VisionConfig::from_hf_json(&json, &origin)?,
                )),
                Some("llava") => Some(Tower::Pixtral(pixtral::VisionConfig::from_hf_json(
                    &json, &origin,
                )?)),
                _ => None,
            };
            let config = if vision.is_some() {
                ModelConfig::from_hf_json(&json["text_config"], &format!("{origin} text_config"))?
            } else {
                ModelConfig::from_hf_json(&json, &origin)?
            };
            (config, Checkpoint::Safetensors(path))
        } else {
            let file = kiln_gguf::GgufFile::open(path)?;
            let mut config = ModelConfig::from_gguf(file.metadata())?;
            if let Some(mmproj) = &options.mmproj {
                let tower = kiln_gguf::GgufFile::open(mmproj)?;
                let origin = mmproj.display().to_string();
                let m = Mmproj {
                    tower: tower.metadata(),
                    text: file.metadata(),
                    origin: &origin,
                };
                let projector = m.tower.opt_str("clip.projector_type")?.unwrap_or_default();
                vision = Some(match projector {
                    "idefics3" => Tower::Idefics3(idefics3::VisionConfig::from_gguf(&m)?),
                    "pixtral" => Tower::Pixtral(pixtral::VisionConfig::from_gguf(&m)?),
                    other => {
                        return Err(m.bad(format!(
                            "clip.projector_type {other:?} is not one Kiln runs (idefics3, pixtral)"
                        )));
                    }
                });
                tower_file = Some(tower);
            }
            if config.architecture == Architecture::Phi3 {
                config = phi3::with_gguf_rope(config, &file)?;
            }
            (config, Checkpoint::Gguf(file, path))
        };
        let layout = match config.architecture {
            Architecture::Llama | Architecture::Qwen2 => llama::GGUF_LAYOUT,
            Architecture::Gemma3 => gemma3::GGUF_LAYOUT,
            Architecture::Phi3 => phi3::GGUF_LAYOUT,
        };
        let source = checkpoint.source(layout, &config)?;
        let device = options.device.burn()?;
        let groups = config.kv_groups();
        // An automatic KV budget is a share of the memory the pool lives in: the GPU's where
        // it reports its size, else the host's.
        let memory = match options.device {
            crate::DeviceKind::Wgpu => crate::gpu_device()
                .ok()
                .and_then(|gpu| gpu.memory)
                .and_then(|m| usize::try_from(m).ok())
                .or_else(crate::memory_available),
            crate::DeviceKind::Cpu => crate::memory_available(),
        };
        let kv = KvLayout::within(
            options.kv_cache,
            (
                (groups.size, groups.windows.len()),
                config.num_kv_heads * config.head_dim,
                config.max_position_embeddings,
            ),
            (options.block_size, options.kv_dtype),
            memory,
        )?;
        let mut loader = Loader::new(&*source, (options.device, options.dtype), device, progress);
        if let Some(vision) = vision {
            let tower = tower_file.map(|file| {
                let path = options.mmproj.clone().unwrap_or_default();
                match &vision {
                    Tower::Idefics3(_) => {
                        GgufSource::new(file, path, idefics3::MMPROJ_LAYOUT, &config)
                    }
                    // The layout reads the head counts of its q/k permutation from the config
                    // it is given: the tower's.
                    Tower::Pixtral(v) => {
                        let heads = ModelConfig {
                            num_heads: v.shape.num_heads,
                            num_kv_heads: v.shape.num_heads,
                            ..config.clone()
                        };
                        GgufSource::new(file, path, pixtral::MMPROJ_LAYOUT, &heads)
                    }
                }
            });
            let tower = tower.as_ref().map(|t| t as &dyn TensorSource);
            return Ok(match vision {
                Tower::Idefics3(v) => Self::Idefics3(Box::new(Idefics3::load(
                    (config, v),
                    &mut loader,
                    tower,
                    kv,
                )?)),
                Tower::Pixtral(v) => Self::Pixtral(Box::new(Pixtral::load(
                    (config, v),
                    &mut loader,
                    tower,
                    kv,
                )?)),
            });
        }
        Ok(match config.architecture {
            Architecture::Llama | Architecture::Qwen2 => {
                Self::Llama(Llama::load(config, &mut loader, kv, Projections::Separate)?)
            }
            Architecture::Gemma3 => Self::Gemma3(Gemma3::load(config, &mut loader, kv)?),
            Architecture::Phi3 => Self::Llama(phi3::load(config, &mut loader, kv)?),
        })
    }

    fn lm(&self) -> &dyn CausalLm {
        match self {
            Self::Llama(m) => m,
            Self::Gemma3(m) => m,
            Self::Idefics3(m) => &m.text,
            Self::Pixtral(m) => &m.text,
        }
    }

    fn lm_mut(&mut self) -> &mut dyn CausalLm {
        match self {
            Self::Llama(m) => m,
            Self::Gemma3(m) => m,
            Self::Idefics3(m) => &mut m.text,
            Self::Pixtral(m) => &mut m.text,
        }
    }

    pub(crate) fn vision(&self) -> Option<VisionInfo> {
        match self {
            Self::Idefics3(m) => Some(VisionInfo {
                image_token_id: m.image_token_id(),
            }),
            Self::Pixtral(m) => Some(VisionInfo {
                image_token_id: m.image_token_id(),
            }),
            Self::Llama(_) | Self::Gemma3(_) => None,
        }
    }

    pub(crate) fn encode_image(
        &self,
        tiles: &[kiln_media::Tile],
    ) -> Result<Vec<f32>, RuntimeError> {
        match self {
            Self::Idefics3(m) => m.encode(tiles),
            Self::Pixtral(m) => m.encode(tiles),
            Self::Llama(_) | Self::Gemma3(_) => Err(RuntimeError::BadImage(
                "this model has no vision tower".into(),
            )),
        }
    }

    pub(crate) fn config(&self) -> &ModelConfig {
        self.lm().config()
    }

    pub(crate) fn kv(&self) -> &PagedKv {
        self.lm().kv()
    }

    /// Runs one step: every sequence's new tokens, at their positions, through the model;
    /// their K/V land in the cache slots their block tables name.
    pub(crate) fn forward(
        &mut self,
        batch: &[SeqInput<'_>],
    ) -> Result<Vec<SeqLogits>, RuntimeError> {
        let x = self.trunk(batch, None)?;
        let lm = self.lm();
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
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [n_rows]), lm.device());
        let h = lm.final_norm(x.select(0, rows));
        let data = read_f32(lm.lm_head(h)?, "logits")?;
        let vocab = lm.config().vocab_size;
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
        let layers = self.config().num_layers;
        let mut captured = Vec::with_capacity(layers + 1);
        let x = self.trunk(batch, Some(&mut captured))?;
        captured.push(self.lm().final_norm(x));
        let hidden = self.config().hidden_size;
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

    /// Checks the batch, embeds it and runs the decoder stack.
    fn trunk(
        &mut self,
        batch: &[SeqInput<'_>],
        capture: Option<&mut Vec<Tensor<2>>>,
    ) -> Result<Tensor<2>, RuntimeError> {
        self.validate(batch)?;
        let ids: Vec<u32> = batch
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        let mut x = self.lm().embed(&ids);
        if batch.iter().any(|s| !s.embeds.is_empty()) {
            x = self.splice(x, batch)?;
        }
        self.lm_mut().decode(batch, x, capture)
    }

    /// The step's token embeddings `x` with each sequence's image rows in place of its image
    /// tokens' (on the host: a prefill chunk's rows, once per image chunk).
    fn splice(&self, x: Tensor<2>, batch: &[SeqInput<'_>]) -> Result<Tensor<2>, RuntimeError> {
        let dtype = x.dtype();
        let [tokens, hidden] = x.dims();
        let mut xs = read_f32(x, "embeddings")?;
        let mut offset = 0;
        for seq in batch {
            for e in seq.embeds {
                let start = (offset + e.at) * hidden;
                xs[start..start + e.rows.len()].copy_from_slice(e.rows);
            }
            offset += seq.tokens.len();
        }
        let x = Tensor::<2>::from_data(TensorData::new(xs, [tokens, hidden]), self.lm().device());
        Ok(crate::nn::to_dtype(x, dtype))
    }

    /// Checks a batch against the vocabulary, the context length and the KV pool before any
    /// work, so a rejected step leaves the cache as it was.
    fn validate(&self, batch: &[SeqInput<'_>]) -> Result<(), RuntimeError> {
        if batch.is_empty() {
            return Err(RuntimeError::EmptyBatch);
        }
        let config = self.config();
        let mut written = HashSet::new();
        for (sequence, seq) in batch.iter().enumerate() {
            if seq.tokens.is_empty() {
                return Err(RuntimeError::EmptySequence { sequence });
            }
            if let Some(&id) = seq
                .tokens
                .iter()
                .find(|&&id| id as usize >= config.vocab_size)
            {
                return Err(RuntimeError::BadTokenId {
                    id,
                    vocab_size: config.vocab_size,
                });
            }
            let end = seq.start + seq.tokens.len();
            if end > config.max_position_embeddings {
                return Err(RuntimeError::ContextExceeded {
                    position: end - 1,
                    context_length: config.max_position_embeddings,
                });
            }
            let hidden = config.hidden_size;
            for e in seq.embeds {
                if e.rows.len() % hidden != 0 || e.at + e.rows.len() / hidden > seq.tokens.len() {
                    return Err(RuntimeError::BadEmbeds {
                        sequence,
                        at: e.at,
                        hidden,
                        tokens: seq.tokens.len(),
                    });
                }
            }
            self.kv().check(sequence, seq, &mut written)?;
        }
        Ok(())
    }
}

/// Reads a tensor back to the host as f32, whatever its dtype.
fn read_f32(t: Tensor<2>, what: &str) -> Result<Vec<f32>, RuntimeError> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| RuntimeError::Backend(format!("reading {what}: {e:?}")))
}
