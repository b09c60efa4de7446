//! The limits a request is held to, and their defaults. A leaf: the wire types, their schemas,
//! validation and the OpenAPI document all read these, and this module reads none of them, so
//! the modules depend on each other one way only.

/// The most stop sequences a request may give (OpenAI's limit).
pub const MAX_STOP: usize = 4;

/// The most prompts one legacy completion request may hold.
pub const MAX_PROMPTS: usize = 64;

/// `max_tokens` of a legacy completion that gives none (OpenAI's default there).
pub const LEGACY_DEFAULT_MAX_TOKENS: u32 = 16;

/// The most `top_logprobs` a chat request may ask for.
pub const MAX_TOP_LOGPROBS: u8 = 20;

/// The most `logprobs` a legacy completion request may ask for.
pub const MAX_LEGACY_LOGPROBS: u8 = 5;

/// [`Limits::max_n`] by default.
pub const DEFAULT_MAX_N: u32 = 16;

/// [`Limits::max_images`] by default.
pub const DEFAULT_MAX_IMAGES: usize = 12;

/// Server limits that validation enforces (and that the OpenAPI document states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most choices per request (per prompt for legacy completions).
    pub max_n: u32,
    /// The most images in one chat request, over all messages; 0 for a model without vision,
    /// which rejects image parts (and leaves them out of the OpenAPI document).
    pub max_images: usize,
    /// The served model's vocabulary size: token ids in prompts and `logit_bias` must be below
    /// it. `None` checks only that ids fit `u32`, leaving the vocabulary check to the caller.
    pub vocab_size: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_n: DEFAULT_MAX_N,
            max_images: DEFAULT_MAX_IMAGES,
            vocab_size: None,
        }
    }
}
