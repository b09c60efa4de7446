//! The tiny fixtures' SentencePiece vocabularies (512 pieces, byte fallback; `testdata/tiny-*`)
//! read from the GGUFs llama.cpp's converter wrote — as Mistral's (`llama`), Phi-3's and
//! Gemma 3's — against SentencePiece's own ids for the same texts (`tokenizer_samples` in each
//! fixture's `golden.json`, made with the sentencepiece library).

use kiln_tokenizer::Tokenizer;
use serde_json::Value;

fn check(family: &str) {
    let dir = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("../../testdata")
    .join(family);
    let tok = Tokenizer::from_gguf_path(dir.join("model.gguf")).unwrap();
    let golden: Value =
        serde_json::from_slice(&std::fs::read(dir.join("golden.json")).unwrap()).unwrap();
    let samples = golden["tokenizer_samples"].as_array().unwrap();
    assert!(!samples.is_empty());
    for sample in samples {
        let text = sample["text"].as_str().unwrap();
        let want: Vec<u32> = sample["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, false, false).unwrap();
        assert_eq!(got, want, "{family}: {text:?}");
    }
}

#[test]
fn tiny_vocabularies_encode_as_sentencepiece_does() {
    for family in ["tiny-mistral", "tiny-phi3", "tiny-gemma3"] {
        check(family);
    }
}
