//! A `llama` (SentencePiece BPE) vocabulary in GGUF metadata: merges derived from scores, the
//! `▁` space prefix, byte fallback, BOS, and streaming decode — on a small hand-made vocabulary.

use kiln_gguf::{GgufFile, GgufWriter};
use kiln_tokenizer::{ChatMessage, ChatTemplateOptions, Tokenizer, TokenizerError};

const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const BYTE: i32 = 6;

/// Pieces after the 256 byte tokens, with scores: a merge's rank is its result's score.
const PIECES: &[(&str, f32)] = &[
    ("\u{2581}", -1.0),
    ("h", -2.0),
    ("e", -3.0),
    ("l", -4.0),
    ("o", -5.0),
    ("\u{2581}h", -6.0),
    ("ll", -7.0),
    ("\u{2581}he", -8.0),
    ("llo", -9.0),
    ("\u{2581}hello", -10.0),
    ("[INST]", -11.0),
];

fn writer(template: Option<&str>, eos: u32) -> GgufWriter {
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut scores = vec![0.0f32; 3];
    let mut types = vec![UNKNOWN, CONTROL, CONTROL];
    for byte in 0..=255u8 {
        tokens.push(format!("<0x{byte:02X}>"));
        scores.push(0.0);
        types.push(BYTE);
    }
    for (piece, score) in PIECES {
        tokens.push((*piece).to_string());
        scores.push(*score);
        types.push(NORMAL);
    }
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama")
        .add("tokenizer.ggml.model", "llama")
        .add(
            "tokenizer.ggml.tokens",
            tokens.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .add("tokenizer.ggml.scores", scores)
        .add("tokenizer.ggml.token_type", types)
        .add("tokenizer.ggml.bos_token_id", 1u32)
        .add("tokenizer.ggml.eos_token_id", eos)
        .add("tokenizer.ggml.unknown_token_id", 0u32);
    if let Some(template) = template {
        w.add("tokenizer.chat_template", template);
    }
    w
}

fn tokenizer(template: Option<&str>) -> Tokenizer {
    let file = GgufFile::from_bytes(writer(template, 2).to_bytes().unwrap()).unwrap();
    Tokenizer::from_gguf(&file).unwrap()
}

fn id(piece: &str) -> u32 {
    259 + PIECES.iter().position(|(p, _)| *p == piece).unwrap() as u32
}

#[test]
fn merges_follow_scores_and_bos_is_added() {
    let tok = tokenizer(None);
    assert_eq!(
        tok.encode("hello", true, true).unwrap(),
        vec![1, id("\u{2581}hello")]
    );
    assert_eq!(
        tok.encode("hello hello", true, false).unwrap(),
        vec![id("\u{2581}hello"), id("\u{2581}hello")]
    );
    // Without a leading space "llo" cannot become "▁hello".
    assert_eq!(
        tok.encode("hello", false, false).unwrap(),
        vec![id("\u{2581}hello")]
    );
    assert_eq!(
        tok.decode(&[1, id("\u{2581}hello")], true).unwrap(),
        "hello"
    );
    assert_eq!(tok.eos_ids(), &[2]);
}

#[test]
fn unknown_characters_fall_back_to_bytes() {
    let tok = tokenizer(None);
    // "é" is not a piece: its UTF-8 bytes C3 A9 are the byte tokens 3 + 0xC3 and 3 + 0xA9.
    let ids = tok.encode("hé", false, false).unwrap();
    assert_eq!(ids, vec![id("\u{2581}h"), 3 + 0xC3, 3 + 0xA9]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "hé");
    // Streaming holds the first byte back until the character is complete.
    let mut detok = tok.detokenizer(true);
    assert_eq!(detok.push(ids[0]).unwrap(), "h");
    assert_eq!(detok.push(ids[1]).unwrap(), "");
    assert_eq!(detok.push(ids[2]).unwrap(), "é");
    assert_eq!(detok.flush().unwrap(), "");
}

#[test]
fn streaming_keeps_spaces_between_words() {
    let tok = tokenizer(None);
    let ids = tok.encode("hello hello hé", false, false).unwrap();
    let mut detok = tok.detokenizer(true);
    let mut text: String = ids.iter().map(|&i| detok.push(i).unwrap()).collect();
    text.push_str(&detok.flush().unwrap());
    assert_eq!(text, "hello hello hé");
}

#[test]
fn template_markers_are_special_and_user_text_is_not() {
    let tok = tokenizer(Some(
        "{{ bos_token }}[INST] {{ messages[0]['content'] }} [/INST]",
    ));
    let prompt = tok
        .apply_chat_template(
            &[ChatMessage::text("user", "hello</s><s>")],
            &ChatTemplateOptions::default(),
        )
        .unwrap();
    assert_eq!(prompt.text, "<s>[INST] hello</s><s> [/INST]");
    assert_eq!(prompt.ids.first(), Some(&1));
    assert_eq!(prompt.ids.iter().filter(|&&i| i == 1 || i == 2).count(), 1);
}

#[test]
fn malformed_vocabularies_are_clear_errors() {
    let file = GgufFile::from_bytes(writer(None, 9999).to_bytes().unwrap()).unwrap();
    let err = Tokenizer::from_gguf(&file).unwrap_err();
    assert!(err.to_string().contains("eos_token_id = 9999"), "{err}");

    let mut w = GgufWriter::new();
    w.add("tokenizer.ggml.model", "bert")
        .add("tokenizer.ggml.tokens", vec!["a"]);
    let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let err = Tokenizer::from_gguf(&file).unwrap_err();
    assert!(matches!(err, TokenizerError::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("bert"));

    let mut w = GgufWriter::new();
    w.add("tokenizer.ggml.model", "llama");
    let file = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let err = Tokenizer::from_gguf(&file).unwrap_err();
    assert!(err.to_string().contains("tokenizer.ggml.tokens"), "{err}");
}
