//! Each token's bytes (what constrained decoding matches against): for byte-level BPE
//! (SmolLM2's `tokenizer.json`) and byte-fallback SentencePiece (the tiny fixtures' GGUFs), the
//! bytes of the ids a text encodes to are the text itself, awkward bytes included.

use kiln_tokenizer::{TokenBytes, Tokenizer};

const TEXTS: &[&str] = &[
    "Hello, world!",
    "  two leading spaces\nand a newline\ttab",
    "{\"name\": \"Ünïcödé\", \"n\": -12.5e3}",
    "emoji 🙂🚀 and CJK 漢字 and ÿ",
    "trailing space ",
];

fn testdata(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("../../testdata")
    .join(name)
}

fn spelled(tok: &Tokenizer, ids: &[u32]) -> Vec<u8> {
    let bytes = tok.token_bytes().unwrap();
    assert_eq!(bytes.len(), tok.vocab_size());
    ids.iter()
        .flat_map(|&id| match &bytes[id as usize] {
            TokenBytes::Text(b) => b.clone(),
            TokenBytes::Special(name) => panic!("text encoded to control token {name}"),
        })
        .collect()
}

#[test]
fn byte_level_tokens_spell_the_text() {
    let tok = Tokenizer::from_hf_dir(testdata("smollm2")).unwrap();
    for text in TEXTS {
        let ids = tok.encode(text, false, false).unwrap();
        assert_eq!(spelled(&tok, &ids), text.as_bytes(), "{text:?}");
    }
    let bytes = tok.token_bytes().unwrap();
    let end = tok.token_to_id("<|im_end|>").unwrap();
    assert_eq!(
        bytes[end as usize],
        TokenBytes::Special("<|im_end|>".into())
    );
}

#[test]
fn byte_fallback_tokens_spell_the_text() {
    for family in ["tiny-mistral", "tiny-gemma3"] {
        let tok = Tokenizer::from_gguf_path(testdata(family).join("model.gguf")).unwrap();
        for text in TEXTS {
            let ids = tok.encode(text, false, false).unwrap();
            let got = spelled(&tok, &ids);
            // SentencePiece may mark the start of the text as a word start (a space).
            let got = match got.split_first() {
                Some((b' ', rest)) if rest.len() == text.len() => rest,
                _ => &got[..],
            };
            assert_eq!(got, text.as_bytes(), "{family}: {text:?}");
        }
    }
}
