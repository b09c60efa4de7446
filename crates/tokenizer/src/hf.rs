//! Loading a Hugging Face tokenizer directory: `tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json`, `chat_template.jinja`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::template::ChatTemplate;
use crate::{Result, Specials, TokenRef, Tokenizer, TokenizerError};

pub(crate) fn load_dir(dir: &Path) -> Result<Tokenizer> {
    let tokenizer_path = dir.join("tokenizer.json");
    let bytes = read(&tokenizer_path)?;
    let inner =
        tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| invalid(&tokenizer_path, e))?;

    let config_path = dir.join("tokenizer_config.json");
    let config = read_json_opt(&config_path)?;
    let generation = read_json_opt(&dir.join("generation_config.json"))?;

    let mut specials = Specials::default();
    if let Some((config, path)) = config.as_ref().map(|c| (c, &config_path)) {
        specials.bos = token_ref(&inner, config.get("bos_token"), path, "bos_token")?;
        specials.eos = token_ref(&inner, config.get("eos_token"), path, "eos_token")?;
        specials.add_bos = config.get("add_bos_token").and_then(Value::as_bool);
        specials.add_eos = config.get("add_eos_token").and_then(Value::as_bool);
    }
    if let Some(generation) = &generation {
        match generation.get("eos_token_id") {
            Some(Value::Number(n)) => specials.eos_ids.extend(n.as_u64().map(|id| id as u32)),
            Some(Value::Array(ids)) => specials
                .eos_ids
                .extend(ids.iter().filter_map(Value::as_u64).map(|id| id as u32)),
            _ => {}
        }
        if specials.bos.is_none() {
            let id = generation.get("bos_token_id").and_then(Value::as_u64);
            specials.bos = id.and_then(|id| {
                let id = u32::try_from(id).ok()?;
                Some(TokenRef {
                    id,
                    text: inner.id_to_token(id)?,
                })
            });
        }
    }
    let vocab_size = inner.get_vocab_size(true);
    if let Some(&bad) = specials
        .eos_ids
        .iter()
        .find(|&&id| id as usize >= vocab_size)
    {
        return Err(TokenizerError::InvalidFile {
            path: dir.join("generation_config.json"),
            message: format!("eos_token_id {bad} is outside the vocabulary (size {vocab_size})"),
        });
    }

    // transformers 5 keeps the template in its own file; older exports keep it in the config,
    // either as one string or as a list of named templates.
    let jinja_path = dir.join("chat_template.jinja");
    let chat_template = if jinja_path.exists() {
        let source = String::from_utf8(read(&jinja_path)?).map_err(|e| invalid(&jinja_path, e))?;
        Some(ChatTemplate::new("chat_template.jinja", source)?)
    } else {
        match config.as_ref().and_then(|c| c.get("chat_template")) {
            // Vision models on the Hub keep the processor's template in `chat_template.json`.
            None | Some(Value::Null) => processor_template(dir)?,
            Some(Value::String(source)) => Some(ChatTemplate::new(
                "tokenizer_config.json chat_template",
                source.clone(),
            )?),
            Some(Value::Array(named)) => named_template(named, &config_path)?,
            Some(_) => {
                return Err(TokenizerError::InvalidFile {
                    path: config_path,
                    message: "chat_template must be a string or a list of {name, template}".into(),
                });
            }
        }
    };
    Tokenizer::assemble(inner, specials, chat_template)
}

/// `chat_template.json`'s `{"chat_template": "..."}`, if the folder has one.
fn processor_template(dir: &Path) -> Result<Option<ChatTemplate>> {
    let path = dir.join("chat_template.json");
    if !path.exists() {
        return Ok(None);
    }
    let json: Value = serde_json::from_slice(&read(&path)?).map_err(|e| invalid(&path, e))?;
    match json.get("chat_template") {
        Some(Value::String(source)) => Ok(Some(ChatTemplate::new(
            "chat_template.json",
            source.clone(),
        )?)),
        _ => Err(TokenizerError::InvalidFile {
            path,
            message: "chat_template must be a string".into(),
        }),
    }
}

/// Picks the `default` template from a list of named ones.
fn named_template(named: &[Value], path: &Path) -> Result<Option<ChatTemplate>> {
    let find = |wanted: &str| {
        named.iter().find_map(|entry| {
            (entry.get("name")?.as_str()? == wanted)
                .then(|| entry.get("template")?.as_str())
                .flatten()
        })
    };
    match find("default") {
        Some(source) => Ok(Some(ChatTemplate::new(
            "tokenizer_config.json chat_template (default)",
            source.to_string(),
        )?)),
        None => Err(TokenizerError::InvalidFile {
            path: path.to_path_buf(),
            message: "chat_template lists named templates but none is named `default`".into(),
        }),
    }
}

/// A special token given in `tokenizer_config.json` as a string or as an AddedToken object.
fn token_ref(
    inner: &tokenizers::Tokenizer,
    value: Option<&Value>,
    path: &Path,
    key: &str,
) -> Result<Option<TokenRef>> {
    let text = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => match o.get("content").and_then(Value::as_str) {
            Some(s) => s.to_string(),
            None => return Err(invalid(path, format!("{key} has no `content`"))),
        },
        Some(other) => return Err(invalid(path, format!("{key} is not a string: {other}"))),
    };
    match inner.token_to_id(&text) {
        Some(id) => Ok(Some(TokenRef { id, text })),
        None => Err(invalid(
            path,
            format!("{key} {text:?} is not in the vocabulary"),
        )),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read(path)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| invalid(path, e))
}

fn invalid(path: &Path, message: impl ToString) -> TokenizerError {
    TokenizerError::InvalidFile {
        path: PathBuf::from(path),
        message: message.to_string(),
    }
}
