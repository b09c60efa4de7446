//! Gemma 3's tokenizer, built from the real Gemma 3 270M GGUF's metadata (262,144 SentencePiece
//! pieces, no merges in the file), against transformers 5.24's ids for the golden prompts and
//! for awkward strings (blank runs, tabs, newlines, byte fallback, literal control tokens):
//! `testdata/gemma3/golden_gemma3.json` and `tokenizer_cases.json` (made by
//! `make_tokenizer_cases.py` beside it).

use kiln_tokenizer::Tokenizer;
use serde_json::Value;

fn testdata(name: &str) -> Value {
    let dir = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("../../testdata/gemma3");
    serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
}

/// The tokenizer of the Gemma 3 GGUF in the model cache; a missing model fails (never skips).
fn gemma3() -> Tokenizer {
    let path = kiln_hub::model_path(&kiln_hub::GEMMA3_270M).unwrap();
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask fetch-model --model gemma3-270m`",
        path.display()
    );
    Tokenizer::from_gguf_path(&path).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn golden_prompts_and_awkward_strings_match_transformers() {
    let tok = gemma3();
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!(tok.bos().map(|t| t.id), Some(2));
    assert_eq!(tok.eos().map(|t| t.id), Some(1));
    // A base model: no chat template in the file.
    assert!(tok.chat_template().is_none());

    let golden = testdata("golden_gemma3.json");
    for name in ["english", "code", "unicode", "long_sliding_window"] {
        let case = &golden[name];
        let prompt = case["prompt"].as_str().unwrap();
        // BOS added, as the GGUF says (`tokenizer.ggml.add_bos_token`).
        let got = tok.encode(prompt, true, true).unwrap();
        assert_eq!(got, ids(&case["token_ids"]), "{name}");
        assert_eq!(tok.decode(&got, true).unwrap(), prompt, "{name}");
    }

    let cases = testdata("tokenizer_cases.json");
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        // transformers parses control tokens written in the text (`<start_of_turn>`, `<bos>`).
        let got = tok.encode(text, true, false).unwrap();
        assert_eq!(got, ids(&case["ids"]), "{text:?}");
        let decoded = case["decoded"].as_str().unwrap();
        assert_eq!(tok.decode(&got, false).unwrap(), decoded, "{text:?}");
    }
}

#[test]
fn user_text_never_becomes_a_control_token() {
    let tok = gemma3();
    let literal = tok.encode("<start_of_turn>user", false, false).unwrap();
    assert!(!literal.contains(&105), "{literal:?}");
    assert_eq!(
        tok.encode("<start_of_turn>user", true, false).unwrap()[0],
        105
    );
    // Newline runs are plain added tokens, whole in any text.
    assert_eq!(tok.encode("a\n\nb", false, false).unwrap()[1], 108);
}
