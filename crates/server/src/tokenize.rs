//! `kiln tokenize`: the token ids (and, for a chat message, the rendered prompt) the model would
//! see for an input — the way to check a tokenizer or a chat template by hand.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::{InputArgs, TemplateArgs, encode_input, load_tokenizer, resolve_model};

#[derive(Debug, Args)]
pub(crate) struct TokenizeArgs {
    /// GGUF file or Hugging Face directory [default: the default model]
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    #[command(flatten)]
    input: InputArgs,
    #[command(flatten)]
    template: TemplateArgs,
    /// Print one JSON object ({"text", "ids", "n_tokens"})
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: TokenizeArgs) -> Result<()> {
    let input = args.input.input()?;
    let model = resolve_model(args.model)?;
    let tokenizer = load_tokenizer(&model, args.template.chat_template.as_deref())?;
    let (text, ids) = encode_input(&tokenizer, input)?;
    if args.json {
        let out = serde_json::json!({"text": text, "ids": ids, "n_tokens": ids.len()});
        println!("{out}");
    } else {
        println!("{text}");
        println!("{ids:?}");
        eprintln!("{} tokens", ids.len());
    }
    Ok(())
}
