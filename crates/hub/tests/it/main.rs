//! kiln-hub's integration tests, one binary: fetching the real default model into the real cache.

mod fetch_default;
