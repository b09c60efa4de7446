//! Constrained decoding: what a request's output must be (any JSON object, JSON valid against a
//! schema, or a Lark grammar such as a tool call's syntax around its arguments' schemas)
//! compiled by llguidance into a token mask per step.
//!
//! A request's [`Grammar`] is compiled once, at the edge, so a bad schema is a 400 before
//! anything is queued; each choice then runs its own [`Constrained`] matcher. The mask of the
//! next step is computed while the model runs the current forward (on another thread, see
//! `engine.rs`), so the batch does not wait for it; sequences without a grammar pay nothing.

use std::sync::{Arc, OnceLock};

use kiln_tokenizer::{TokenBytes, Tokenizer};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory, TokenParser};
use serde_json::{Value, json};

use crate::SchedulerError;

/// What the output must be.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON valid against this schema (draft 2020-12, the keywords llguidance implements).
    JsonSchema(Value),
    /// Text in llguidance's Lark dialect, where `%json {…}` embeds a schema (write it with
    /// [`OutputFormat::embedded_schema`] to get the same JSON layout) and `<[id]>` a token.
    Lark(String),
}

/// How JSON is laid out: one space after `,` and `:` and no other whitespace, as Python's
/// `json.dumps` writes it. Bounded layout keeps a sampled model from wandering into
/// whitespace; a schema's own `x-guidance` options win over these.
fn layout() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

impl OutputFormat {
    /// `schema` with Kiln's JSON layout, for a `%json` inside a Lark grammar.
    pub fn embedded_schema(schema: &Value) -> Value {
        let mut schema = schema.clone();
        with_layout(&mut schema);
        schema
    }

    fn grammar(&self) -> TopLevelGrammar {
        let schema = match self {
            Self::JsonObject => json!({"type": "object"}),
            Self::JsonSchema(schema) => schema.clone(),
            Self::Lark(lark) => return TopLevelGrammar::from_lark(lark.clone()),
        };
        TopLevelGrammar::from_json_schema(Self::embedded_schema(&schema))
    }
}

/// Sets the layout options on a schema, keeping any the schema sets itself.
fn with_layout(schema: &mut Value) {
    if let Some(map) = schema.as_object_mut() {
        let mut options = layout();
        if let (Some(ours), Some(Value::Object(theirs))) =
            (options.as_object_mut(), map.get("x-guidance"))
        {
            ours.extend(theirs.clone());
        }
        map.insert("x-guidance".into(), options);
    }
}

/// A compiled output format, ready to start a matcher per choice.
#[derive(Clone)]
pub struct Grammar {
    parser: TokenParser,
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Grammar")
    }
}

/// One model's grammar compiler: its vocabulary as llguidance sees it, built on first use (a
/// trie over every token's bytes: a fraction of a second, paid only by servers that use it).
/// The engine keeps one per model (`EngineHandle::compile`); public for tools such as the
/// fuzzer, which compile without an engine.
pub struct Grammars {
    tokenizer: Arc<Tokenizer>,
    vocab_size: usize,
    factory: OnceLock<Result<ParserFactory, String>>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars")
            .field("vocab_size", &self.vocab_size)
            .finish_non_exhaustive()
    }
}

impl Grammars {
    /// `vocab_size`: the model's logits per position (may exceed the tokenizer's vocabulary).
    pub fn new(tokenizer: Arc<Tokenizer>, vocab_size: usize) -> Self {
        Self {
            tokenizer,
            vocab_size,
            factory: OnceLock::new(),
        }
    }

    fn factory(&self) -> Result<&ParserFactory, SchedulerError> {
        self.factory
            .get_or_init(|| {
                let env = KilnTokEnv::new(&self.tokenizer, self.vocab_size)?;
                let env: TokEnv = Arc::new(env);
                let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
                factory.quiet();
                Ok(factory)
            })
            .as_ref()
            .map_err(|message| SchedulerError::InvalidParameter {
                param: "response_format",
                message: format!("this model's output cannot be constrained: {message}"),
            })
    }

    /// Compiles `format`; an unsupported or unsatisfiable schema is an error naming the
    /// keyword, for the field `param`.
    pub fn compile(
        &self,
        format: &OutputFormat,
        param: &'static str,
    ) -> Result<Grammar, SchedulerError> {
        let grammar = format.grammar();
        let parser = self.factory()?.create_parser(grammar).map_err(|e| {
            SchedulerError::InvalidParameter {
                param,
                message: schema_error(&e.to_string()),
            }
        })?;
        Ok(Grammar { parser })
    }
}

/// llguidance's message, in the words of the API: it names what it does not implement
/// ("Unimplemented keys: [\"patternProperties\"]").
fn schema_error(message: &str) -> String {
    // Regex errors come on several lines, with a caret under the fault: one line here.
    let mut text: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.len() > 500 {
        let cut = (0..=500)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    format!("the schema cannot be enforced: {text}")
}

/// Kiln's vocabulary for llguidance: every token's bytes (control tokens marked as llguidance
/// expects) and every EOS id of the model.
struct KilnTokEnv {
    trie: TokTrie,
}

impl KilnTokEnv {
    fn new(tokenizer: &Tokenizer, vocab_size: usize) -> Result<Self, String> {
        let mut words: Vec<Vec<u8>> = tokenizer
            .token_bytes()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|t| match t {
                TokenBytes::Text(bytes) => bytes,
                TokenBytes::Special(name) => {
                    let mut bytes = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    bytes.extend(name.into_bytes());
                    bytes
                }
            })
            .collect();
        // Ids the model has no logit for can never be sampled (a tokenizer larger than the
        // model's head); logits past the vocabulary (padded embeddings) are ids no text needs.
        words.truncate(vocab_size);
        while words.len() < vocab_size {
            let mut name = format!(".<[{}]>", words.len()).into_bytes();
            name[0] = TokTrie::SPECIAL_TOKEN_MARKER;
            words.push(name);
        }
        let eos: Vec<u32> = tokenizer
            .eos_ids()
            .iter()
            .copied()
            .filter(|&id| (id as usize) < vocab_size)
            .collect();
        let first = *eos
            .first()
            .ok_or("the model declares no end-of-sequence token")?;
        let info = TokRxInfo::new(words.len() as u32, first);
        let mut trie = TokTrie::from(&info, &words);
        if eos.len() > 1 {
            trie = trie.with_eos_tokens(&eos);
        }
        Ok(Self { trie })
    }
}

impl TokenizerEnv for KilnTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// Only forced text would be tokenized here, which Kiln does not use: the trie's greedy
    /// split has the right bytes, if not always the canonical ids.
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }
}

/// One choice's matcher (or why it was lost) and the mask of its next token, once computed.
pub(crate) struct Constrained {
    matcher: Result<Matcher, String>,
    mask: Option<Result<SimpleVob, String>>,
}

impl Constrained {
    pub(crate) fn new(grammar: &Grammar) -> Self {
        Self {
            matcher: Ok(Matcher::new(Ok(grammar.parser.deep_clone()))),
            mask: None,
        }
    }

    /// A matcher that fails at its next step (its state was lost).
    pub(crate) fn broken(why: &str) -> Self {
        Self {
            matcher: Err(why.to_string()),
            mask: None,
        }
    }

    /// Computes the next mask unless it is known (the state changes only when a token is
    /// committed). Safe to call on another thread: it touches only this choice.
    pub(crate) fn prepare(&mut self) {
        if self.mask.is_none() {
            self.mask = Some(match &mut self.matcher {
                Ok(m) => m.compute_mask_or_eos().map_err(|e| e.to_string()),
                Err(why) => Err(why.clone()),
            });
        }
    }

    pub(crate) fn needs_mask(&self) -> bool {
        self.mask.is_none()
    }

    /// Sets every token the grammar does not allow next to −∞.
    pub(crate) fn apply(&mut self, logits: &mut [f32]) -> Result<(), String> {
        self.prepare();
        let Some(mask) = &self.mask else {
            return Err("no mask was computed".into());
        };
        let mask = mask.as_ref().map_err(Clone::clone)?;
        for (id, l) in logits.iter_mut().enumerate() {
            if !mask.is_allowed(id as TokenId) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advances past `token` (which the mask allowed).
    pub(crate) fn commit(&mut self, token: u32) -> Result<(), String> {
        self.mask = None;
        let matcher = self.matcher.as_mut().map_err(|why| why.clone())?;
        // A complete grammar's mask is EOS alone, and a stopped matcher takes nothing more.
        if matcher.is_stopped() {
            return Ok(());
        }
        matcher.consume_token(token).map_err(|e| e.to_string())
    }

    /// The grammar is complete and admits nothing more: the choice ends here.
    pub(crate) fn is_finished(&self) -> bool {
        self.matcher.as_ref().is_ok_and(Matcher::is_stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_layout_unless_the_schema_says_otherwise() {
        let s = OutputFormat::embedded_schema(&json!({"type": "object"}));
        assert_eq!(s["type"], "object");
        assert_eq!(s["x-guidance"]["whitespace_flexible"], false);
        let s = OutputFormat::embedded_schema(&json!({
            "type": "array",
            "x-guidance": {"whitespace_flexible": true}
        }));
        assert_eq!(s["x-guidance"]["whitespace_flexible"], true);
        assert_eq!(s["x-guidance"]["item_separator"], ", ");
    }
}
