//! The `kiln` binary: command-line entry point.
//!
//! `serve` runs the OpenAI-compatible server; `generate` (greedy decoding on the burn runtime,
//! for checking a model end to end) and `tokenize` (exactly what the model will see for a prompt
//! or a chat message) are tools around it.

mod generate;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kiln_tokenizer::{ChatMessage, ChatTemplateOptions, Tokenizer};

const USAGE: &str = "\
kiln — an OpenAI-compatible LLM inference server

USAGE:
    kiln serve [--model PATH] [--served-model-name NAME]... [--host 127.0.0.1] [--port 8000]
               [--api-key KEY]... [--device cpu|wgpu] [--dtype f32|f16] [--max-batched-tokens N]
               [--max-queue N] [--kv-cache-memory SIZE] [--config FILE] [...]
    kiln generate [--model PATH] (--prompt TEXT | --chat TEXT) [--max-tokens N]
                  [--device cpu|wgpu] [--dtype f32|f16]
    kiln tokenize [--model PATH] (--prompt TEXT | --chat TEXT) [--json]

COMMANDS:
{SERVE}
    generate    Greedy decoding: streams only the generated text to stdout, stopping at the
                model's end-of-sequence token or after --max-tokens (default 256), and prints
                prefill and decode speed to stderr. --model is a GGUF file or a Hugging Face
                directory (default: the default model). --chat sends TEXT as one user message
                through the model's chat template; --prompt feeds raw text.

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

fn usage() -> String {
    USAGE.replace("{SERVE}", &serve::usage())
}

fn run(args: Vec<String>) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        print!("{}", usage());
        return Ok(());
    };
    match command.as_str() {
        "serve" => serve::run(rest),
        "tokenize" => tokenize(rest),
        "generate" => generate::run(rest),
        "help" | "--help" | "-h" => {
            print!("{}", usage());
            Ok(())
        }
        other => bail!("unknown command {other:?}; run `kiln help`"),
    }
}

/// What to feed the model: raw text, or one user message through the chat template.
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
    let model = resolve_model(model)?;
    let tokenizer = load_tokenizer(&model)?;
    let (text, ids) = encode_input(&tokenizer, input)?;
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

/// The model to use: the one given, or the default model if it has been fetched.
fn resolve_model(model: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = model {
        return Ok(path);
    }
    let path = kiln_hub::default_model_path()?;
    if !path.exists() {
        bail!(
            "the default model is not at {}; run `cargo xtask fetch-model` or pass --model",
            path.display()
        );
    }
    Ok(path)
}

/// The prompt text the model sees and its ids.
fn encode_input(tokenizer: &Tokenizer, input: Input) -> Result<(String, Vec<u32>)> {
    Ok(match input {
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
    })
}

fn load_tokenizer(model: &std::path::Path) -> Result<Tokenizer> {
    let tokenizer = if model.is_dir() {
        Tokenizer::from_hf_dir(model)
    } else {
        Tokenizer::from_gguf_path(model)
    };
    tokenizer.with_context(|| format!("loading the tokenizer of {}", model.display()))
}
