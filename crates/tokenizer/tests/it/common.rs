//! Helpers shared by the integration tests: SmolLM2's reference files (`testdata/smollm2`, made
//! with transformers) and its tokenizer built from them or from the default model's GGUF.

use std::path::PathBuf;

use kiln_tokenizer::Tokenizer;

/// `testdata/smollm2`: `tokenizer.json`, `tokenizer_config.json` and the golden JSON files.
pub(crate) fn smollm2_dir() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("../../testdata/smollm2")
}

/// SmolLM2's tokenizer from its Hugging Face files.
pub(crate) fn hf() -> Tokenizer {
    Tokenizer::from_hf_dir(smollm2_dir()).unwrap()
}

/// SmolLM2's tokenizer from the default model's GGUF; a missing model fails (never skips).
pub(crate) fn gguf() -> Tokenizer {
    let path = kiln_hub::default_model_path().unwrap();
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask fetch-model`",
        path.display()
    );
    Tokenizer::from_gguf_path(&path).unwrap()
}
