//! OpenAI wire types and request validation (owned by the HTTP API issue; nothing here yet).
