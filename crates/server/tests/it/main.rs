//! kiln-server's integration tests, one binary: `cli` runs the real `kiln` binary's command line
//! (help, where each setting comes from, errors); `e2e` drives the real server with the official
//! OpenAI Python client (the pytest suite in `tests/e2e/`).

mod cli;
mod e2e;
