//! kiln-gateway's integration tests, one binary: the gateway over real HTTP on the tiny model
//! (`http`), and tool calling on it with a tools-aware template (`tools`).

#![allow(clippy::unwrap_used)]

mod http;
mod tools;
