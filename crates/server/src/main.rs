//! The `kiln` binary: command-line entry point.
//!
//! Today it offers `tokenize`, which shows exactly what the model will see for a prompt or a
//! chat message; `serve` and `generate` arrive with the runtime, scheduler and gateway.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_tokenizer::{ChatMessage, ChatTemplateOptions, Tokenizer};

const USAGE: &str = "\
kiln — an OpenAI-compatible LLM inference server (in construction)

USAGE:
    kiln tokenize [--model PATH] (--prompt TEXT | --chat TEXT) [--json]

COMMANDS:
    tokenize    Print the token ids (and, for --chat, the rendered prompt) the model would see.
                --model is a GGUF file or a Hugging Face directory (default: the default model,
                fetched by `cargo xtask fetch-model`). --prompt encodes raw text (special-token
                strings are parsed); --chat sends TEXT as one user message through the model's
                chat template (user text is always literal). --json prints one JSON object.

    help        Print this message.
";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kiln: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    match command.as_str() {
        "tokenize" => tokenize(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}; run `kiln help`"),
    }
}

enum Input {
    Prompt(String),
    Chat(String),
}

fn tokenize(args: &[String]) -> Result<()> {
    let mut model: Option<PathBuf> = None;
    let mut input: Option<Input> = None;
    let mut as_json = false;
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
            "--json" => as_json = true,
            other => bail!("unknown argument {other:?}; run `kiln help`"),
        }
    }
    let input = input.context("give --prompt TEXT or --chat TEXT")?;
    let model = match model {
        Some(path) => path,
        None => {
            let path = kiln_hub::default_model_path()?;
            if !path.exists() {
                bail!(
                    "the default model is not at {}; run `cargo xtask fetch-model` or pass --model",
                    path.display()
                );
            }
            path
        }
    };
    let tokenizer = load(&model)?;
    let (text, ids) = match input {
        Input::Prompt(text) => {
            let ids = tokenizer.encode(&text, true, true)?;
            (text, ids)
        }
        Input::Chat(text) => {
            let options = ChatTemplateOptions {
                add_generation_prompt: true,
                ..Default::default()
            };
            let prompt =
                tokenizer.apply_chat_template(&[ChatMessage::text("user", text)], &options)?;
            (prompt.text, prompt.ids)
        }
    };
    if as_json {
        let out = serde_json::json!({"text": text, "ids": ids, "n_tokens": ids.len()});
        println!("{out}");
    } else {
        println!("{text}");
        println!("{ids:?}");
        eprintln!("{} tokens", ids.len());
    }
    Ok(())
}

fn load(model: &std::path::Path) -> Result<Tokenizer> {
    let tokenizer = if model.is_dir() {
        Tokenizer::from_hf_dir(model)
    } else {
        Tokenizer::from_gguf_path(model)
    };
    tokenizer.with_context(|| format!("loading the tokenizer of {}", model.display()))
}
