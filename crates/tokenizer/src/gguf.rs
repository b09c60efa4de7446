//! Building a tokenizer from a GGUF file's `tokenizer.ggml.*` metadata: the same `tokenizers`
//! pipeline Hugging Face's own `tokenizer.json` describes, so both sources give identical ids.
//!
//! `gpt2` vocabularies are byte-level BPE whose pre-tokenizer is named by `tokenizer.ggml.pre`;
//! `llama` vocabularies are SentencePiece BPE with scores and byte fallback, whose merges are
//! derived from the scores exactly as transformers' converter does — except Gemma's, whose
//! merges follow the file's token order and whose blank tokens are respelled (see
//! [`gemma_bpe`]).

use std::collections::HashMap;

use kiln_gguf::GgufFile;
use serde_json::{Value, json};

use crate::template::ChatTemplate;
use crate::{Result, Specials, TokenRef, Tokenizer, TokenizerError};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

pub(crate) fn build(file: &GgufFile) -> Result<Tokenizer> {
    let file = file.metadata();
    let model = file.get_str("tokenizer.ggml.model")?;
    let tokens = file.get_str_array("tokenizer.ggml.tokens")?;
    let types = match file.opt_i32_array("tokenizer.ggml.token_type")? {
        Some(types) if types.len() != tokens.len() => {
            return Err(bad(format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        Some(types) => types,
        None => vec![1; tokens.len()],
    };
    let token = |key: &str| -> Result<Option<TokenRef>> {
        let Some(id) = file.opt_u32(key)? else {
            return Ok(None);
        };
        match tokens.get(id as usize) {
            Some(text) => Ok(Some(TokenRef {
                id,
                text: text.clone(),
            })),
            None => Err(bad(format!(
                "{key} = {id} is outside the vocabulary ({} tokens)",
                tokens.len()
            ))),
        }
    };
    let unk = token("tokenizer.ggml.unknown_token_id")?;
    let mut specials = Specials {
        bos: token("tokenizer.ggml.bos_token_id")?,
        eos: token("tokenizer.ggml.eos_token_id")?,
        ..Specials::default()
    };
    for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
        specials.eos_ids.extend(token(key)?.map(|t| t.id));
    }
    let added_tokens = added_tokens(tokens, &types);

    let config = match model {
        "gpt2" => {
            let merges = file.get_str_array("tokenizer.ggml.merges")?;
            let pre = file.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
            specials.add_bos = Some(
                file.opt_bool("tokenizer.ggml.add_bos_token")?
                    .unwrap_or(false),
            );
            byte_level_bpe(tokens, merges, pre, added_tokens)?
        }
        "llama" if is_gemma(file.get_str("general.architecture")?) => {
            specials.add_bos = Some(
                file.opt_bool("tokenizer.ggml.add_bos_token")?
                    .unwrap_or(true),
            );
            gemma_bpe(tokens, &types, unk.as_ref())
        }
        "llama" => {
            let scores = file.get_f32_array("tokenizer.ggml.scores")?;
            if scores.len() != tokens.len() {
                return Err(bad(format!(
                    "tokenizer.ggml.scores has {} entries for {} tokens",
                    scores.len(),
                    tokens.len()
                )));
            }
            let add_space_prefix = file
                .opt_bool("tokenizer.ggml.add_space_prefix")?
                .unwrap_or(true);
            specials.add_bos = Some(
                file.opt_bool("tokenizer.ggml.add_bos_token")?
                    .unwrap_or(true),
            );
            sentencepiece_bpe(
                tokens,
                &scores,
                unk.as_ref(),
                add_space_prefix,
                added_tokens,
            )
        }
        other => {
            return Err(TokenizerError::Unsupported(format!(
                "tokenizer.ggml.model {other:?} (Kiln reads \"gpt2\" and \"llama\")"
            )));
        }
    };
    specials.add_eos = Some(
        file.opt_bool("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false),
    );

    let inner = tokenizers::Tokenizer::from_bytes(config.to_string().as_bytes()).map_err(|e| {
        bad(format!(
            "the vocabulary does not form a valid tokenizer: {e}"
        ))
    })?;
    let chat_template = match file.opt_str("tokenizer.chat_template")? {
        Some(source) => Some(ChatTemplate::new(
            "GGUF tokenizer.chat_template",
            source.to_string(),
        )?),
        None => None,
    };
    Tokenizer::assemble(inner, specials, chat_template)
}

/// Gemma 1–3 files: their SentencePiece vocabulary is read the Gemma way ([`gemma_bpe`]).
fn is_gemma(architecture: &str) -> bool {
    matches!(architecture, "gemma" | "gemma2" | "gemma3")
}

fn bad(message: String) -> TokenizerError {
    TokenizerError::InvalidMetadata(message)
}

/// Control and unknown tokens are special (never produced from user text); user-defined ones
/// are added tokens matched in any text, as llama.cpp and transformers both treat them.
fn added_tokens(tokens: &[String], types: &[i32]) -> Vec<Value> {
    tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (_, t))| matches!(**t, TYPE_UNKNOWN | TYPE_CONTROL | TYPE_USER_DEFINED))
        .map(|(id, (content, t))| {
            json!({
                "id": id,
                "content": content,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": *t != TYPE_USER_DEFINED,
            })
        })
        .collect()
}

fn vocab(tokens: &[String]) -> serde_json::Map<String, Value> {
    tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), json!(id)))
        .collect()
}

/// The pre-tokenizer regexes llama.cpp names in `tokenizer.ggml.pre`, as the matching Hugging
/// Face `tokenizer.json` files spell them.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level_bpe(
    tokens: &[String],
    merges: &[String],
    pre: &str,
    added_tokens: Vec<Value>,
) -> Result<Value> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |regex: &str| json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
    let sequence = |steps: Vec<Value>| json!({"type": "Sequence", "pretokenizers": steps});
    let mut normalizer = Value::Null;
    let mut ignore_merges = false;
    let pre_tokenizer = match pre {
        "default" | "gpt2" | "gpt-2" | "mpt" | "olmo" => byte_level(true),
        "smollm" | "starcoder" | "refact" => sequence(vec![
            json!({"type": "Digits", "individual_digits": true}),
            byte_level(true),
        ]),
        // llama.cpp reads Pixtral's as Llama 3's (LLAMA_VOCAB_PRE_TYPE_LLAMA3): its
        // tokenizer.json splits with the Llama 3 pattern, not tekken's.
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => {
            ignore_merges = true;
            sequence(vec![split(LLAMA3_SPLIT), byte_level(false)])
        }
        "qwen2" | "deepseek-r1-qwen" => {
            normalizer = json!({"type": "NFC"});
            sequence(vec![split(QWEN2_SPLIT), byte_level(false)])
        }
        "tekken" => sequence(vec![split(TEKKEN_SPLIT), byte_level(false)]),
        other => {
            return Err(TokenizerError::Unsupported(format!(
                "tokenizer.ggml.pre {other:?}: Kiln knows default, gpt-2, mpt, olmo, smollm, \
                 starcoder, refact, llama3, llama-bpe, falcon3, pixtral, qwen2, deepseek-r1-qwen, tekken"
            )));
        }
    };
    let mut pairs = Vec::with_capacity(merges.len());
    for merge in merges {
        match merge.split_once(' ') {
            Some((a, b)) => pairs.push(json!([a, b])),
            None => {
                return Err(bad(format!(
                    "tokenizer.ggml.merges entry {merge:?} has no space"
                )));
            }
        }
    }
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": ignore_merges,
            "vocab": vocab(tokens),
            "merges": pairs,
        },
    }))
}

/// SentencePiece BPE as transformers' `LlamaConverter` writes it (the legacy layout Llama 2 and
/// Mistral ship): `▁` for spaces, a `▁` prepended when `add_space_prefix`, byte fallback.
fn sentencepiece_bpe(
    tokens: &[String],
    scores: &[f32],
    unk: Option<&TokenRef>,
    add_space_prefix: bool,
    added_tokens: Vec<Value>,
) -> Value {
    let replace_space =
        json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    let normalizer = if add_space_prefix {
        json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"},
            replace_space,
        ]})
    } else {
        replace_space
    };
    let mut decoders = sentencepiece_decoders();
    if add_space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": normalizer,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": sentencepiece_model(unk, vocab(tokens), sentencepiece_merges(tokens, scores)),
    })
}

/// The `▁`-to-space, byte-fallback, fuse decoders every SentencePiece vocabulary starts with.
fn sentencepiece_decoders() -> Vec<Value> {
    vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ]
}

/// A SentencePiece vocabulary as `tokenizers`' BPE model: unknown pieces fused, bytes falling
/// back to `<0xNN>` pieces.
fn sentencepiece_model(
    unk: Option<&TokenRef>,
    vocab: serde_json::Map<String, Value>,
    merges: Vec<Value>,
) -> Value {
    json!({
        "type": "BPE",
        "dropout": null,
        "unk_token": unk.map(|t| t.text.clone()),
        "continuing_subword_prefix": null,
        "end_of_word_suffix": null,
        "fuse_unk": true,
        "byte_fallback": true,
        "ignore_merges": false,
        "vocab": vocab,
        "merges": merges,
    })
}

/// transformers' `SentencePieceExtractor`: every split of a piece into two pieces that are both
/// in the vocabulary is a merge, ranked by the merged piece's score (highest first), ties kept in
/// vocabulary order of the merged piece and then of the left and right halves.
fn sentencepiece_merges(tokens: &[String], scores: &[f32]) -> Vec<Value> {
    let ids: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut merges: Vec<(f32, usize, usize)> = Vec::new();
    for (merged, piece) in tokens.iter().enumerate() {
        let mut local: Vec<(usize, usize)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let left = ids.get(piece.get(..at)?)?;
                let right = ids.get(piece.get(at..)?)?;
                Some((*left, *right))
            })
            .collect();
        local.sort_unstable();
        let score = scores.get(merged).copied().unwrap_or(f32::NEG_INFINITY);
        merges.extend(local.into_iter().map(|(l, r)| (score, l, r)));
    }
    // A stable sort keeps the extraction order among equal scores, as Python's `sorted` does.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges
        .into_iter()
        .filter_map(|(_, l, r)| Some(json!([tokens.get(l)?, tokens.get(r)?])))
        .collect()
}

/// Gemma's SentencePiece BPE as transformers 5 builds it from a GGUF (`gemma_tokenizer` in
/// `integrations/gguf/gguf_tokenizer_mapping.py`, then `GemmaTokenizer`):
/// - a token of two or more blanks is stored as real spaces but looked up as `▁`s, so it is
///   respelled;
/// - the file has no merges and Gemma's scores do not follow its merge order; the file's token
///   order does, so merges are ranked by the merged piece's position (earlier first), then
///   longer left half first;
/// - spaces become `▁` (no prefix space), then a split on spaces that never fires (there are
///   none left) — kept so the pipeline is exactly transformers';
/// - control tokens are special; user-defined ones (`\n`, `\n\n`, …, `[multimodal]`) are plain
///   added tokens, matched whole in any text — those whose spelling was respelled are not (the
///   blank runs are found by the merges instead).
fn gemma_bpe(tokens: &[String], types: &[i32], unk: Option<&TokenRef>) -> Value {
    let respelled: Vec<String> = tokens
        .iter()
        .map(|t| {
            if t.contains(' ') && t.trim().is_empty() {
                "\u{2581}".repeat(t.chars().count())
            } else {
                t.clone()
            }
        })
        .collect();
    let vocab = vocab(&respelled);
    let added: Vec<Value> = tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (content, t))| {
            **t == TYPE_CONTROL
                || (**t == TYPE_USER_DEFINED && vocab.contains_key(content.as_str()))
        })
        .map(|(id, (content, t))| {
            json!({
                "id": id,
                "content": content,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": *t == TYPE_CONTROL,
            })
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"},
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false},
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": sentencepiece_decoders()},
        "model": sentencepiece_model(unk, vocab, merges_in_token_order(&respelled)),
    })
}

/// transformers' `generate_merges(vocab, vocab_scores={token: -index})`: every split of a
/// token into two tokens is a merge; merges are ranked by the merged token's position (earlier
/// first), ties by the left half's length and then the right half's, longer first (a stable
/// sort, so equal keys keep the order of extraction: by token, then by the halves' ids).
fn merges_in_token_order(tokens: &[String]) -> Vec<Value> {
    let ids: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    // (merged position, left chars, right chars, left id, right id)
    let mut merges: Vec<(usize, usize, usize, usize, usize)> = Vec::new();
    for (position, piece) in tokens.iter().enumerate() {
        let mut local: Vec<(usize, usize, usize, usize, usize)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (l, r) = (piece.get(..at)?, piece.get(at..)?);
                Some((
                    position,
                    l.chars().count(),
                    r.chars().count(),
                    *ids.get(l)?,
                    *ids.get(r)?,
                ))
            })
            .collect();
        local.sort_unstable_by_key(|&(_, _, _, l, r)| (l, r));
        merges.extend(local);
    }
    // Score -position descending is position ascending; lengths descending.
    merges.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
    merges
        .into_iter()
        .filter_map(|(_, _, _, l, r)| Some(json!([tokens.get(l)?, tokens.get(r)?])))
        .collect()
}
