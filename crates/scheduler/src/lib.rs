//! The batching engine: continuous batching, sampling, stop rules, metrics (owned by the scheduler issue; nothing here yet).
