//! kiln-api-types' integration tests, one binary: parsing, validation, the wire shapes of
//! responses and the OpenAPI document through the crate's public API, and the shape of its
//! module graph.

#![allow(clippy::unwrap_used)]

mod common;
mod modules;
mod openapi;
mod parse;
mod validate;
mod wire;
