//! `kiln generate`: greedy decoding of one prompt on the burn runtime, streamed to stdout, with
//! prefill and decode speed on stderr — the quickest end-to-end check of a model.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kiln_runtime::{DType, DeviceKind, LoadOptions, Model, SeqInput};

use crate::{Input, encode_input, load_tokenizer, resolve_model};

pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut model: Option<PathBuf> = None;
    let mut input: Option<Input> = None;
    let mut max_tokens = 256usize;
    let mut device = DeviceKind::Cpu;
    let mut dtype = DType::F32;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--model" => model = Some(PathBuf::from(value("--model")?)),
            "--prompt" => input = Some(Input::Prompt(value("--prompt")?)),
            "--chat" => input = Some(Input::Chat(value("--chat")?)),
            "--max-tokens" => {
                max_tokens = value("--max-tokens")?
                    .parse()
                    .context("--max-tokens must be a positive integer")?;
                if max_tokens == 0 {
                    bail!("--max-tokens must be a positive integer");
                }
            }
            "--device" => device = value("--device")?.parse().map_err(anyhow::Error::msg)?,
            "--dtype" => dtype = value("--dtype")?.parse().map_err(anyhow::Error::msg)?,
            other => bail!("unknown argument {other:?}; run `kiln help`"),
        }
    }
    let input = input.context("give --prompt TEXT or --chat TEXT")?;
    let path = resolve_model(model)?;
    let tokenizer = load_tokenizer(&path)?;
    let (_, prompt) = encode_input(&tokenizer, input)?;
    if prompt.is_empty() {
        bail!("the prompt encodes to no tokens");
    }

    let block_size = 16;
    let positions = prompt.len() + max_tokens;
    let options = LoadOptions {
        device,
        dtype,
        block_size,
        ..LoadOptions::default()
    };
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
    let blocks_needed = positions.div_ceil(block_size);
    if blocks_needed > model.num_blocks() {
        bail!(
            "{positions} positions need {blocks_needed} KV blocks; the cache has {}",
            model.num_blocks()
        );
    }
    // One sequence: its blocks are simply the first ones of the pool.
    let table: Vec<u32> = (0..blocks_needed as u32).collect();

    let mut detok = tokenizer.detokenizer(true);
    let mut stdout = std::io::stdout().lock();
    let started = Instant::now();
    let logits = model.forward(&[SeqInput {
        tokens: &prompt,
        start: 0,
        block_table: &table,
        all_logits: false,
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
