//! kiln-tokenizer's integration tests, one binary: SmolLM2 against transformers' references
//! (`golden`), chat-template semantics (`templates`), a SentencePiece vocabulary from GGUF
//! metadata (`gguf_sentencepiece`), Gemma 3's from the real model's GGUF against transformers
//! (`gemma3`), the tiny fixtures' vocabularies against SentencePiece (`tiny_sentencepiece`)
//! the streaming detokenizer (`detokenizer`) and each token's bytes (`bytes`).

// Helpers outside #[test] fns unwrap too: a test should fail loudly.
#![allow(clippy::unwrap_used)]

mod bytes;
mod common;
mod detokenizer;
mod gemma3;
mod gguf_sentencepiece;
mod golden;
mod templates;
mod tiny_sentencepiece;
