//! Each token's bytes: what a grammar engine matches output against, token by token.
//!
//! A byte-level BPE vocabulary (GPT-2's) spells bytes as printable characters; a SentencePiece
//! one spells a space as `▁` and keeps `<0xNN>` pieces for bytes with no piece of their own.
//! Which spelling a vocabulary uses is read from its decoder, as llguidance's own Hugging Face
//! adapter does (`toktrie_hf_tokenizers`, which Kiln does not use: it pins another `tokenizers`).

use tokenizers::DecoderWrapper;

use crate::{Tokenizer, TokenizerError};

/// One vocabulary entry as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenBytes {
    /// Ordinary text: these bytes.
    Text(Vec<u8>),
    /// A control token (`<|im_end|>`…): never part of generated text; its name.
    Special(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spelling {
    ByteLevel,
    /// `▁` (or what the decoder replaces by a space) for spaces, `<0xNN>` for bytes.
    ByteFallback {
        space: char,
    },
}

/// GPT-2's printable stand-ins for the bytes: printable Latin-1 for themselves, the others
/// from U+0100 on, in byte order.
fn byte_level_char_map() -> std::collections::HashMap<char, u8> {
    let mut map = std::collections::HashMap::new();
    let mut next = 0x100u32;
    for byte in 0..=255u8 {
        let c = char::from(byte);
        if matches!(c, '!'..='~' | '\u{A1}'..='\u{AC}' | '\u{AE}'..='\u{FF}') {
            map.insert(c, byte);
        } else {
            map.insert(char::from_u32(next).unwrap_or(c), byte);
            next += 1;
        }
    }
    map
}

fn spelling(decoder: Option<&DecoderWrapper>) -> Option<Spelling> {
    fn visit(d: &DecoderWrapper, level: &mut bool, fallback: &mut bool, space: &mut char) {
        match d {
            DecoderWrapper::ByteLevel(_) => *level = true,
            DecoderWrapper::ByteFallback(_) => *fallback = true,
            DecoderWrapper::Replace(r) => {
                // The pattern is private: read it back from the decoder's JSON.
                let v = serde_json::to_value(r).unwrap_or_default();
                let mut chars = v["pattern"]["String"].as_str().unwrap_or("").chars();
                if v["content"] == " "
                    && let (Some(c), None) = (chars.next(), chars.next())
                {
                    *space = c;
                }
            }
            DecoderWrapper::Metaspace(m) => *space = m.get_replacement(),
            DecoderWrapper::Sequence(seq) => {
                for d in seq.get_decoders() {
                    visit(d, level, fallback, space);
                }
            }
            _ => {}
        }
    }
    let (mut level, mut fallback, mut space) = (false, false, '\u{2581}');
    visit(decoder?, &mut level, &mut fallback, &mut space);
    if level {
        Some(Spelling::ByteLevel)
    } else if fallback {
        Some(Spelling::ByteFallback { space })
    } else {
        None
    }
}

impl Tokenizer {
    /// Every id's bytes, in id order (`vocab_size` entries; an id the vocabulary skips is an
    /// empty `Text`). An error for a vocabulary whose decoder spells bytes some other way.
    pub fn token_bytes(&self) -> Result<Vec<TokenBytes>, TokenizerError> {
        let spelling = spelling(self.inner.get_decoder()).ok_or_else(|| {
            TokenizerError::Unsupported(
                "this vocabulary's decoder is neither byte-level nor byte-fallback, so its \
                 tokens' bytes are unknown"
                    .into(),
            )
        })?;
        let added = self.inner.get_added_tokens_decoder();
        let map = byte_level_char_map();
        let mut out = Vec::with_capacity(self.vocab_size);
        for id in 0..self.vocab_size as u32 {
            let Some(piece) = self.inner.id_to_token(id) else {
                out.push(TokenBytes::Text(Vec::new()));
                continue;
            };
            if self.is_special(id) {
                out.push(TokenBytes::Special(piece));
                continue;
            }
            // Added tokens that are not control tokens are literal text.
            if added.contains_key(&id) {
                out.push(TokenBytes::Text(piece.into_bytes()));
                continue;
            }
            let bytes = match spelling {
                Spelling::ByteLevel => piece
                    .chars()
                    .map(|c| map.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .unwrap_or_else(|| piece.clone().into_bytes()),
                Spelling::ByteFallback { space } => byte_piece(&piece)
                    .map_or_else(|| piece.replace(space, " ").into_bytes(), |b| vec![b]),
            };
            out.push(TokenBytes::Text(bytes));
        }
        Ok(out)
    }
}

/// `<0xNN>` → the byte NN.
fn byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_pieces_and_the_byte_level_map() {
        assert_eq!(byte_piece("<0x0A>"), Some(b'\n'));
        assert_eq!(byte_piece("<0xFF>"), Some(0xFF));
        assert_eq!(byte_piece("<0x1>"), None);
        assert_eq!(byte_piece("<s>"), None);
        let map = byte_level_char_map();
        assert_eq!(map.len(), 256);
        assert_eq!(map[&'\u{120}'], b' '); // Ġ
        assert_eq!(map[&'\u{10A}'], b'\n'); // Ċ
        assert_eq!(map[&'a'], b'a');
    }
}
