//! kiln-gateway's integration tests, one binary: the gateway over real HTTP on the tiny model
//! (`http`), tool calling on it with a tools-aware template (`tools`), and failures underneath:
//! a broken model, a client that stops reading (`overload`).

#![allow(clippy::unwrap_used)]

mod http;
mod overload;
mod tools;
