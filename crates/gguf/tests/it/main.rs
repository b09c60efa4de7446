//! kiln-gguf's integration tests, one binary: property tests on arbitrary bytes, facts about the
//! real default model, and that model's header truncated and bit-flipped. `common` holds the
//! shared helpers (including the allocation-tracking global allocator).

mod arbitrary_bytes;
mod common;
mod real_model;
mod real_model_robustness;
