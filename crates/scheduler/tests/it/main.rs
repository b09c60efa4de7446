//! kiln-scheduler's integration tests, one binary: the engine driven through its public API on
//! real models, text and images.
#![allow(clippy::unwrap_used)]

mod common;
mod engine;
mod grammar;
mod images;
