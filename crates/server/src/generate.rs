//! `kiln generate`: greedy decoding of one prompt (with `--image`s for a vision model) on the
//! burn runtime, streamed to stdout, with prefill and decode speed on stderr — the quickest
//! end-to-end check of a model.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use kiln_runtime::{DType, DeviceKind, KvCacheSize, LoadOptions, Model, SeqInput};

use crate::config::{device_name, dtype_name, positive};
use crate::{InputArgs, TemplateArgs, encode_input, load_tokenizer, resolve_model};

#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// GGUF file or Hugging Face directory [default: the default model]
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) input: InputArgs,
    #[command(flatten)]
    template: TemplateArgs,
    /// Most tokens to generate
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = positive)]
    max_tokens: usize,
    /// cpu | wgpu
    #[arg(long, default_value = device_name(LoadOptions::default().device))]
    device: DeviceKind,
    /// f32 | f16
    #[arg(long, default_value = dtype_name(LoadOptions::default().dtype))]
    dtype: DType,
    /// f16 | f32: what K and V are stored in
    #[arg(long, value_name = "DTYPE", default_value = dtype_name(LoadOptions::default().kv_dtype))]
    kv_cache_dtype: DType,
    /// An image for a vision model, before --chat's text: a file, or an https/http/data URL
    /// (fetched as `serve` fetches, public addresses only); repeat for more
    #[arg(long, value_name = "PATH_OR_URL")]
    image: Vec<String>,
    /// llama.cpp's mmproj GGUF: the vision tower of a GGUF model
    #[arg(long, value_name = "FILE")]
    mmproj: Option<PathBuf>,
}

/// The images of `kiln generate --image`, read (a file) or fetched (a URL) and processed.
fn read_images(
    sources: &[String],
    processor: &kiln_media::ImageProcessor,
) -> Result<Vec<kiln_media::ProcessedImage>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let policy = kiln_gateway::fetch::MediaPolicy::default();
    sources
        .iter()
        .map(|source| {
            let is_url = ["http://", "https://", "data:"]
                .iter()
                .any(|p| source.len() >= p.len() && source[..p.len()].eq_ignore_ascii_case(p));
            let bytes = if is_url {
                runtime
                    .block_on(kiln_gateway::fetch::load(source, &policy))
                    .map_err(|e| anyhow::anyhow!("--image: {e}"))?
            } else {
                std::fs::read(source).with_context(|| format!("reading --image {source}"))?
            };
            let image = kiln_media::decode(&bytes, &kiln_media::DecodeLimits::default())
                .with_context(|| format!("--image {source}"))?;
            Ok(processor.process(&image, kiln_media::Detail::Auto))
        })
        .collect()
}

pub(crate) fn run(args: GenerateArgs) -> Result<()> {
    let GenerateArgs {
        model,
        input,
        template,
        max_tokens,
        device,
        dtype,
        kv_cache_dtype,
        image,
        mmproj,
    } = args;
    let input = input.input()?;
    let path = resolve_model(model)?;
    let tokenizer = load_tokenizer(&path, template.chat_template.as_deref())?;
    // With images: the user message is the images, then the text; each image's tokens are
    // where the processor's text put them.
    let (prompt, images) = match (&input, image.is_empty()) {
        (crate::Input::Chat(text), false) => {
            let processor = match &mmproj {
                Some(file) => kiln_media::ImageProcessor::from_mmproj(
                    kiln_gguf::GgufFile::open(file)?.metadata(),
                )?,
                None => kiln_media::ImageProcessor::from_dir(&path)?.with_context(|| {
                    format!(
                        "{} has no image processor (not a vision model?)",
                        path.display()
                    )
                })?,
            };
            let processed = read_images(&image, &processor)?;
            let mut parts = vec![kiln_tokenizer::ContentPart::Image; processed.len()];
            parts.push(kiln_tokenizer::ContentPart::Text { text: text.clone() });
            let message = kiln_tokenizer::ChatMessage {
                role: "user".into(),
                content: Some(kiln_tokenizer::Content::Parts(parts)),
                extra: serde_json::Map::new(),
            };
            let expansions: Vec<String> = processed.iter().map(|p| p.prompt.clone()).collect();
            let options = kiln_tokenizer::ChatTemplateOptions {
                add_generation_prompt: true,
                ..Default::default()
            };
            let prompt = tokenizer.apply_chat_template_with_images(
                &[message],
                &options,
                processor.placeholder(),
                &expansions,
            )?;
            let token = tokenizer
                .token_to_id(processor.placeholder())
                .with_context(|| format!("the vocabulary has no {}", processor.placeholder()))?;
            let spans = kiln_gateway::image_spans(&prompt.ids, token, &processed)
                .context("the prompt's image tokens do not match its images")?;
            (
                prompt.ids,
                processed.into_iter().zip(spans).collect::<Vec<_>>(),
            )
        }
        (crate::Input::Prompt(_), false) => {
            bail!("--image goes with --chat (the images come before its text in a user message)")
        }
        _ => (encode_input(&tokenizer, input)?.1, Vec::new()),
    };
    if prompt.is_empty() {
        bail!("the prompt encodes to no tokens");
    }

    let options = LoadOptions {
        device,
        dtype,
        // Room for this one generation (the runtime caps it at the model's context).
        kv_cache: KvCacheSize::Auto {
            running: 1,
            context: Some(prompt.len() + max_tokens),
        },
        kv_dtype: kv_cache_dtype,
        mmproj,
        ..LoadOptions::default()
    };
    let block_size = options.block_size;
    let positions = prompt.len() + max_tokens;
    let started = Instant::now();
    let mut model = Model::load_with_progress(&path, &options, &mut |p| {
        eprint!("\rloading {}: {}/{}", path.display(), p.done, p.total);
    })
    .with_context(|| format!("loading {}", path.display()))?;
    eprintln!(" ({:.1} s)", started.elapsed().as_secs_f64());
    let context = model.config().max_position_embeddings;
    if prompt.len() >= context {
        bail!(
            "the prompt has {} tokens; the model's context is {context}",
            prompt.len()
        );
    }
    let positions = positions.min(context);
    // A page per block of positions per KV group (Gemma 3's sliding layers have their own).
    let blocks_needed = positions.div_ceil(block_size) * model.kv_groups().windows.len();
    if blocks_needed > model.num_blocks() {
        bail!(
            "{positions} positions need {blocks_needed} KV blocks; the cache has {}",
            model.num_blocks()
        );
    }
    // One sequence: its pages are simply the first ones of the pool.
    let table: Vec<u32> = (0..blocks_needed as u32).collect();

    let mut detok = tokenizer.detokenizer(true);
    let mut stdout = std::io::stdout().lock();
    let started = Instant::now();
    let rows = images
        .iter()
        .map(|(image, _)| model.encode_image(&image.tiles))
        .collect::<Result<Vec<_>, _>>()?;
    let hidden = model.config().hidden_size;
    let mut embeds = Vec::new();
    for ((_, spans), rows) in images.iter().zip(&rows) {
        let mut row = 0;
        for &(at, len) in spans {
            embeds.push(kiln_runtime::Embeds {
                at,
                rows: &rows[row * hidden..(row + len) * hidden],
            });
            row += len;
        }
    }
    let logits = model.forward(&[SeqInput {
        tokens: &prompt,
        start: 0,
        block_table: &table,
        all_logits: false,
        embeds: &embeds,
    }])?;
    let prefill = started.elapsed();
    let mut next = argmax(logits.first().map(|l| l.last()).unwrap_or_default());
    let started = Instant::now();
    let mut generated = 0usize;
    loop {
        if tokenizer.eos_ids().contains(&next) {
            break;
        }
        write!(stdout, "{}", detok.push(next)?)?;
        stdout.flush()?;
        generated += 1;
        let position = prompt.len() + generated - 1;
        if generated >= max_tokens || position + 1 >= positions {
            break;
        }
        let logits = model.forward(&[SeqInput {
            tokens: &[next],
            start: position,
            block_table: &table,
            all_logits: false,
            embeds: &[],
        }])?;
        next = argmax(logits.first().map(|l| l.last()).unwrap_or_default());
    }
    writeln!(stdout, "{}", detok.flush()?)?;
    let decode = started.elapsed();
    eprintln!(
        "prefill: {} tokens in {:.3} s ({:.1} tok/s); decode: {} tokens in {:.3} s ({:.1} tok/s)",
        prompt.len(),
        prefill.as_secs_f64(),
        prompt.len() as f64 / prefill.as_secs_f64().max(1e-9),
        generated,
        decode.as_secs_f64(),
        generated.saturating_sub(1) as f64 / decode.as_secs_f64().max(1e-9),
    );
    Ok(())
}

/// The index of the largest logit (the first one on ties, as torch's argmax).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best as u32
}
