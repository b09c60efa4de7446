//! Streaming detokenization: ids in one at a time, text out in valid UTF-8 pieces whose
//! concatenation is exactly the decode of all the ids.
//!
//! Decoding token by token is wrong for byte-level and byte-fallback vocabularies (an emoji may
//! span several tokens) and for decoders that look at neighbours (SentencePiece's leading-space
//! strip). So, as vLLM and TGI do, each step decodes a short window twice — up to the last
//! emitted token and up to the new one — and emits the difference, holding text back while it
//! ends in an incomplete character (U+FFFD).

use crate::{Result, Tokenizer};

#[derive(Debug)]
pub struct Detokenizer<'a> {
    tokenizer: &'a Tokenizer,
    skip_special: bool,
    ids: Vec<u32>,
    /// Start of the window decoded each step: one token before the text already emitted, so that
    /// context-dependent decoders see the same neighbour in both decodes.
    prefix_offset: usize,
    /// Ids before this index have been emitted as text.
    read_offset: usize,
}

impl<'a> Detokenizer<'a> {
    pub(crate) fn new(tokenizer: &'a Tokenizer, skip_special: bool) -> Self {
        Self {
            tokenizer,
            skip_special,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    /// Adds one id; returns the text it completes (often empty while a character is partial).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let (prefix, full) = self.window()?;
        if full.len() <= prefix.len() || full.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let delta = new_text(&prefix, &full);
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(delta)
    }

    /// Returns whatever is still held back (an incomplete character at the end of the stream is
    /// emitted as U+FFFD, as a full decode would show it).
    pub fn flush(&mut self) -> Result<String> {
        if self.read_offset == self.ids.len() {
            return Ok(String::new());
        }
        let (prefix, full) = self.window()?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(new_text(&prefix, &full))
    }

    /// Every id pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    fn window(&self) -> Result<(String, String)> {
        let window = self.ids.get(self.prefix_offset..).unwrap_or_default();
        let emitted = self
            .ids
            .get(self.prefix_offset..self.read_offset)
            .unwrap_or_default();
        let prefix = self.tokenizer.decode(emitted, self.skip_special)?;
        let full = self.tokenizer.decode(window, self.skip_special)?;
        Ok((prefix, full))
    }
}

/// The part of `full` after `prefix`. Both decode the same ids' start, so `full` normally
/// extends `prefix`; if a decoder rewrote the shared part, fall back to the longest common
/// prefix at a character boundary rather than lose text.
fn new_text(prefix: &str, full: &str) -> String {
    if let Some(rest) = full.strip_prefix(prefix) {
        return rest.to_string();
    }
    let common = prefix
        .char_indices()
        .zip(full.chars())
        .take_while(|((_, a), b)| a == b)
        .last()
        .map_or(0, |((i, c), _)| i + c.len_utf8());
    full.get(common..).unwrap_or_default().to_string()
}
