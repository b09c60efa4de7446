//! kiln-gateway's integration tests, one binary: the gateway over real HTTP on the tiny model.

#![allow(clippy::unwrap_used)]

mod http;
