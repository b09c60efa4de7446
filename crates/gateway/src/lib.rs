//! The hyper HTTP front: routes, SSE, auth, OpenAI errors (owned by the HTTP API issue; nothing here yet).
