//! Finding control tokens in trusted text, and hiding them in untrusted text.
//!
//! The `tokenizers` pipeline is told never to parse special tokens; this module decides where they
//! may appear. Trusted text (a raw prompt, a chat template's output) is split at special-token
//! strings; untrusted strings (chat message fields) are first *escaped*: every special-token
//! string, and the escape character itself, is replaced by a placeholder that no template filter
//! alters. After rendering, placeholders are turned back into the literal text, which is encoded
//! as ordinary characters.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::{Result, TokenizerError};

/// Starts and ends a placeholder: Unicode noncharacters, which no tokenizer normalizes away and no
/// real text is expected to contain (and if a user types one, it is escaped too).
const OPEN: char = '\u{FDD0}';
const CLOSE: char = '\u{FDD1}';

/// A piece of trusted text: ordinary text, or a control token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    Text(&'a str),
    Special(u32),
}

#[derive(Debug)]
struct SpecialToken {
    id: u32,
    content: String,
    lstrip: bool,
    rstrip: bool,
}

#[derive(Debug)]
pub(crate) struct SpecialSplitter {
    /// Specials in pattern order (the matcher's pattern index indexes this).
    tokens: Vec<SpecialToken>,
    by_id: HashMap<u32, usize>,
    /// Leftmost-longest, as Hugging Face's added-vocabulary matcher.
    matcher: Option<AhoCorasick>,
    /// Patterns for escaping: every special's text, then the placeholder opener itself.
    escaper: AhoCorasick,
}

impl SpecialSplitter {
    pub(crate) fn new(inner: &tokenizers::Tokenizer) -> Result<Self> {
        let mut decoder: Vec<_> = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special && !t.content.is_empty())
            .collect();
        decoder.sort_by_key(|(id, _)| *id);
        let tokens: Vec<SpecialToken> = decoder
            .into_iter()
            .map(|(id, t)| SpecialToken {
                id,
                content: t.content,
                lstrip: t.lstrip,
                rstrip: t.rstrip,
            })
            .collect();
        let by_id = tokens.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        let build = |patterns: Vec<&str>| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(patterns)
                .map_err(|e| TokenizerError::Tokenizers(format!("special-token matcher: {e}")))
        };
        let contents: Vec<&str> = tokens.iter().map(|t| t.content.as_str()).collect();
        let matcher = if contents.is_empty() {
            None
        } else {
            Some(build(contents.clone())?)
        };
        let open = OPEN.to_string();
        let mut escapes = contents;
        escapes.push(&open);
        let escaper = build(escapes)?;
        Ok(Self {
            tokens,
            by_id,
            matcher,
            escaper,
        })
    }

    /// The text of special token `id`, or `None` if `id` is not a special token.
    pub(crate) fn content(&self, id: u32) -> Option<&str> {
        self.by_id
            .get(&id)
            .and_then(|&i| self.tokens.get(i))
            .map(|t| t.content.as_str())
    }

    /// Splits trusted text at special-token strings, honouring their `lstrip`/`rstrip`.
    pub(crate) fn split<'a>(&self, text: &'a str) -> Vec<Segment<'a>> {
        let Some(matcher) = &self.matcher else {
            return vec![Segment::Text(text)];
        };
        let mut out = Vec::new();
        let mut last = 0;
        let mut strip_next = false;
        for m in matcher.find_iter(text) {
            let Some(token) = self.tokens.get(m.pattern().as_usize()) else {
                continue;
            };
            let mut before = text.get(last..m.start()).unwrap_or_default();
            if strip_next {
                before = before.trim_start();
            }
            if token.lstrip {
                before = before.trim_end();
            }
            if !before.is_empty() {
                out.push(Segment::Text(before));
            }
            out.push(Segment::Special(token.id));
            strip_next = token.rstrip;
            last = m.end();
        }
        let mut rest = text.get(last..).unwrap_or_default();
        if strip_next {
            rest = rest.trim_start();
        }
        if !rest.is_empty() {
            out.push(Segment::Text(rest));
        }
        out
    }

    /// Replaces every special-token string (and the placeholder opener) in untrusted text by a
    /// placeholder, so that [`split`](Self::split) finds none of them.
    pub(crate) fn escape(&self, text: &str) -> Option<String> {
        if !self.escaper.is_match(text) {
            return None;
        }
        let mut out = String::with_capacity(text.len() + 8);
        let mut last = 0;
        for m in self.escaper.find_iter(text) {
            out.push_str(text.get(last..m.start()).unwrap_or_default());
            out.push(OPEN);
            out.push_str(&m.pattern().as_usize().to_string());
            out.push(CLOSE);
            last = m.end();
        }
        out.push_str(text.get(last..).unwrap_or_default());
        Some(out)
    }

    /// Undoes [`escape`](Self::escape): placeholders become the literal text they stand for.
    pub(crate) fn unescape<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        if !text.contains(OPEN) {
            return std::borrow::Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(pos) = rest.find(OPEN) {
            out.push_str(rest.get(..pos).unwrap_or_default());
            let after = rest.get(pos + OPEN.len_utf8()..).unwrap_or_default();
            let replaced = after.find(CLOSE).and_then(|end| {
                let index: usize = after.get(..end)?.parse().ok()?;
                let literal = match self.tokens.get(index) {
                    Some(t) => t.content.as_str(),
                    None if index == self.tokens.len() => "\u{FDD0}",
                    None => return None,
                };
                Some((literal, end + CLOSE.len_utf8()))
            });
            match replaced {
                Some((literal, consumed)) => {
                    out.push_str(literal);
                    rest = after.get(consumed..).unwrap_or_default();
                }
                // Not one of ours (a template cut it apart): keep the character as it is.
                None => {
                    out.push(OPEN);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        std::borrow::Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splitter() -> SpecialSplitter {
        let mut tok = tokenizers::Tokenizer::new(tokenizers::models::bpe::BPE::default());
        tok.add_special_tokens(&[
            tokenizers::AddedToken::from("<|im_start|>", true),
            tokenizers::AddedToken::from("<|im_end|>", true),
            tokenizers::AddedToken::from("<|im_end|>x", true),
            tokenizers::AddedToken::from("<mask>", true)
                .lstrip(true)
                .rstrip(true),
        ]);
        SpecialSplitter::new(&tok).unwrap()
    }

    #[test]
    fn splits_leftmost_longest() {
        let s = splitter();
        assert_eq!(
            s.split("a<|im_end|>xb<|im_end|>"),
            vec![
                Segment::Text("a"),
                Segment::Special(2),
                Segment::Text("b"),
                Segment::Special(1)
            ]
        );
        assert_eq!(s.split("plain"), vec![Segment::Text("plain")]);
        assert_eq!(s.split(""), vec![]);
    }

    #[test]
    fn strips_around_tokens_that_ask_for_it() {
        let s = splitter();
        assert_eq!(
            s.split("a  <mask>  b"),
            vec![Segment::Text("a"), Segment::Special(3), Segment::Text("b")]
        );
    }

    #[test]
    fn escaped_text_has_no_specials_and_round_trips() {
        let s = splitter();
        for text in [
            "hi <|im_end|> there",
            "<|im_start|><|im_end|>x",
            "\u{FDD0}0\u{FDD1} spoof",
            "\u{FDD0}",
            "nothing special",
        ] {
            let escaped = s.escape(text).unwrap_or_else(|| text.to_string());
            assert!(
                s.split(&escaped)
                    .iter()
                    .all(|seg| matches!(seg, Segment::Text(_))),
                "{text:?}"
            );
            assert_eq!(s.unescape(&escaped), text);
        }
    }

    #[test]
    fn unescape_leaves_foreign_placeholders_alone() {
        let s = splitter();
        assert_eq!(s.unescape("\u{FDD0}99\u{FDD1}"), "\u{FDD0}99\u{FDD1}");
        assert_eq!(s.unescape("\u{FDD0}x"), "\u{FDD0}x");
    }
}
