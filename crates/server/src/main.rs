//! The `kiln` binary: command-line entry point.
//!
//! `serve` runs the OpenAI-compatible server; `generate` (greedy decoding on the burn runtime,
//! for checking a model end to end) and `tokenize` (exactly what the model will see for a prompt
//! or a chat message) and `devices` (what `--device` can run on) are tools around it. Every command's flags are one clap-derived struct.

mod alloc;
mod config;
mod devices;
mod generate;
mod serve;
mod tokenize;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use kiln_tokenizer::{ChatMessage, ChatTemplateOptions, Tokenizer};

use crate::config::ServeConfig;
use crate::devices::DevicesArgs;
use crate::generate::GenerateArgs;
use crate::tokenize::TokenizeArgs;

/// kiln — an OpenAI-compatible LLM inference server
#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    disable_help_subcommand = true,
    args_override_self = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Commands>,
}

#[derive(Debug, Subcommand)]
// One per process, parsed once: boxing `serve`'s many settings buys nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Commands {
    /// Serve the OpenAI-compatible API
    ///
    /// Every flag is also an environment variable (KILN_MODEL, KILN_API_KEY, …) and a key in
    /// --config FILE (TOML, the flag with `_`: `max_batched_tokens = 1024`). A flag beats the
    /// environment, which beats the file.
    Serve(ServeConfig),
    /// Greedy decoding of one prompt, with prefill and decode speed
    ///
    /// Streams only the generated text to stdout, stopping at the model's end-of-sequence token
    /// or after --max-tokens, and prints prefill and decode speed to stderr. --chat sends TEXT as
    /// one user message through the model's chat template; --prompt feeds raw text.
    Generate(GenerateArgs),
    /// Print the token ids (and, for --chat, the rendered prompt) the model would see
    ///
    /// --prompt encodes raw text (special-token strings are parsed); --chat sends TEXT as one
    /// user message through the model's chat template (user text is always literal). --json
    /// prints one JSON object.
    Tokenize(TokenizeArgs),
    /// List what --device can run on: the CPU and every GPU adapter wgpu sees
    ///
    /// Names the adapter `--device wgpu` starts, with its memory, or says why it cannot start
    /// one. --json prints one JSON object.
    Devices(DevicesArgs),
    /// Print this message (every command and its flags), or one command's
    Help {
        /// The command to describe
        command: Option<String>,
    },
}

/// What to feed the model: raw text, or one user message through the chat template.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct InputArgs {
    /// Raw text (special-token strings are parsed)
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// One user message, through the model's chat template
    #[arg(long, value_name = "TEXT")]
    chat: Option<String>,
}

/// A chat template file replacing the model's own, for `--chat`.
#[derive(Debug, Args)]
pub(crate) struct TemplateArgs {
    /// Jinja chat template file for --chat, replacing the model's own (a base model has none)
    #[arg(long, value_name = "FILE")]
    pub(crate) chat_template: Option<PathBuf>,
}

/// What to feed the model, once clap has made sure exactly one of the two was given.
pub(crate) enum Input {
    Prompt(String),
    Chat(String),
}

impl InputArgs {
    pub(crate) fn input(self) -> Result<Input> {
        match (self.prompt, self.chat) {
            (Some(text), None) => Ok(Input::Prompt(text)),
            (None, Some(text)) => Ok(Input::Chat(text)),
            _ => bail!("give --prompt TEXT or --chat TEXT"),
        }
    }
}

fn main() -> ExitCode {
    match parse(std::env::args_os()).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // clap's own errors (and --help) print as clap formats them, with its exit code.
            if let Some(err) = err.downcast_ref::<clap::Error>() {
                err.exit();
            }
            eprintln!("kiln: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line, whose help (`kiln help`, `kiln --help`) goes on to every command's own,
/// flags, environment variables and defaults included.
fn command() -> clap::Command {
    let mut full = Cli::command();
    full.build();
    let mut details = String::new();
    for sub in full.get_subcommands_mut() {
        if sub.get_name() != "help" {
            details.push_str(&format!("\n{}", sub.render_long_help()));
        }
    }
    Cli::command().after_help(details)
}

/// Parses the command line. For `serve --config FILE` it parses twice: the file's settings
/// become the defaults of a second parse, so clap's flag > environment > default order puts
/// the file between the environment and the built-in defaults.
pub(crate) fn parse<I, T>(args: I) -> Result<Cli>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut matches = command().try_get_matches_from(&args)?;
    let mut file_models = Vec::new();
    if let Some(("serve", serve)) = matches.subcommand()
        && let Some(path) = serve.get_one::<PathBuf>("config")
    {
        let path = path.clone();
        let command = command();
        let file = config::read_config(
            command
                .find_subcommand("serve")
                .context("kiln has no serve command")?,
            &path,
        )?;
        file_models = file.models;
        matches = command
            .mut_subcommand("serve", |serve| {
                config::with_file_defaults(serve, file.settings)
            })
            .try_get_matches_from(&args)?;
    }
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let (Some(Commands::Serve(config)), Some(("serve", serve))) =
        (&mut cli.command, matches.subcommand())
    {
        config.file_models = file_models;
        config.split_env_lists(serve);
        config.settle_kv_cache_size(serve)?;
    }
    Ok(cli)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Commands::Serve(config)) => serve::run(config),
        Some(Commands::Generate(args)) => generate::run(args),
        Some(Commands::Tokenize(args)) => tokenize::run(args),
        Some(Commands::Devices(args)) => devices::run(args),
        Some(Commands::Help { command: None }) | None => {
            command().print_long_help()?;
            Ok(())
        }
        Some(Commands::Help {
            command: Some(name),
        }) => {
            let mut full = command();
            full.build();
            let Some(sub) = full.find_subcommand_mut(&name) else {
                bail!("unknown command {name:?}; run `kiln help`");
            };
            sub.print_long_help()?;
            Ok(())
        }
    }
}

/// The model to use: the one given, or the default model if it has been fetched.
pub(crate) fn resolve_model(model: Option<PathBuf>) -> Result<PathBuf> {
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
pub(crate) fn encode_input(tokenizer: &Tokenizer, input: Input) -> Result<(String, Vec<u32>)> {
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
            let prompt = tokenizer
                .apply_chat_template(&[ChatMessage::text("user", text)], &options)
                .map_err(|e| match e {
                    kiln_tokenizer::TokenizerError::NoChatTemplate => anyhow::anyhow!(
                        "the model has no chat template (a base model?): pass \
                         --chat-template FILE, or --prompt TEXT for raw text"
                    ),
                    other => other.into(),
                })?;
            (prompt.text, prompt.ids)
        }
    })
}

/// The image side of a vision model: its processor (from the model folder's processor
/// configs) and image token; `None` for a text model.
pub(crate) fn vision(
    model: &kiln_runtime::Model,
    path: &std::path::Path,
    mmproj: Option<&std::path::Path>,
) -> Result<Option<kiln_gateway::Vision>> {
    let Some(info) = model.vision() else {
        return Ok(None);
    };
    let processor = match mmproj {
        Some(mmproj) => {
            let file = kiln_gguf::GgufFile::open(mmproj)
                .with_context(|| format!("reading {}", mmproj.display()))?;
            Some(
                kiln_media::ImageProcessor::from_mmproj(file.metadata())
                    .with_context(|| format!("the image processor of {}", mmproj.display()))?,
            )
        }
        None if path.is_dir() => kiln_media::ImageProcessor::from_dir(path)
            .with_context(|| format!("the image processor of {}", path.display()))?,
        None => None,
    };
    let Some(processor) = processor else {
        bail!(
            "{} is a vision model but has no image processor configuration \
             (preprocessor_config.json or processor_config.json, or an --mmproj file)",
            path.display()
        );
    };
    Ok(Some(kiln_gateway::Vision {
        processor,
        image_token_id: info.image_token_id,
    }))
}

/// The model's tokenizer, with `chat_template` (a Jinja file) replacing the model's own.
pub(crate) fn load_tokenizer(
    model: &std::path::Path,
    chat_template: Option<&std::path::Path>,
) -> Result<Tokenizer> {
    let tokenizer = if model.is_dir() {
        Tokenizer::from_hf_dir(model)
    } else {
        Tokenizer::from_gguf_path(model)
    };
    let tokenizer =
        tokenizer.with_context(|| format!("loading the tokenizer of {}", model.display()))?;
    let Some(file) = chat_template else {
        return Ok(tokenizer);
    };
    let source = std::fs::read_to_string(file)
        .with_context(|| format!("reading the chat template {}", file.display()))?;
    tokenizer
        .with_chat_template(&file.display().to_string(), source)
        .with_context(|| format!("the chat template {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        // clap's own checks (ids, groups, defaults that parse); cheap to run, loud when broken.
        command().debug_assert();
    }

    #[test]
    fn help_covers_every_command_and_flag() {
        let help = command().render_long_help().to_string();
        for needle in [
            "kiln serve",
            "kiln generate",
            "kiln tokenize",
            "--kv-cache-memory",
            "[env: KILN_KV_CACHE_MEMORY=",
            "--kv-cache-tokens",
            "--kv-cache-dtype",
            "--max-tokens",
            "--json",
        ] {
            assert!(help.contains(needle), "{needle:?} in\n{help}");
        }
    }

    #[test]
    fn prompt_and_chat_are_one_of_two() {
        assert!(parse(["kiln", "tokenize"]).is_err());
        assert!(parse(["kiln", "tokenize", "--prompt", "a", "--chat", "b"]).is_err());
        let Some(Commands::Generate(args)) =
            parse(["kiln", "generate", "--chat", "hi"]).unwrap().command
        else {
            panic!("not generate");
        };
        assert!(matches!(args.input.input().unwrap(), Input::Chat(t) if t == "hi"));
        assert!(parse(["kiln", "generate", "--prompt", "a", "--max-tokens", "0"]).is_err());
        assert!(parse(["kiln", "nope"]).is_err());
    }
}
