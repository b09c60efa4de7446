//! The burn model runtime: token ids and KV block tables in, logits out (owned by the runtime issue; nothing here yet).
