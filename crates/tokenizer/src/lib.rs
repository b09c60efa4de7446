//! Tokenizers for Kiln: Hugging Face `tokenizer.json` or GGUF metadata in, token ids out; chat
//! templates rendered with Hugging Face semantics; a streaming detokenizer.
//!
//! One [`Tokenizer`] type serves both sources: a GGUF file's vocabulary is turned into the same
//! `tokenizers` pipeline that Hugging Face would build, so both give identical ids.
//!
//! Control tokens are only ever produced where the caller trusts the text: raw prompts
//! ([`Tokenizer::encode`] with `parse_special`) and a chat template's own markers. Text that came
//! from a user inside a chat message is always encoded literally, so typing `<|im_end|>` cannot end
//! a turn (see [`template`]).

mod bytes;
mod detokenizer;
mod gguf;
mod hf;
mod special;
pub mod template;

use std::path::PathBuf;

pub use bytes::TokenBytes;
pub use detokenizer::Detokenizer;
pub use template::{ChatMessage, ChatPrompt, ChatTemplateOptions, Content, ContentPart};

use special::SpecialSplitter;
use template::ChatTemplate;

/// Everything that can go wrong loading a tokenizer, encoding, decoding or rendering a template.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    InvalidFile { path: PathBuf, message: String },
    #[error(transparent)]
    Gguf(#[from] kiln_gguf::GgufError),
    #[error("GGUF tokenizer metadata: {0}")]
    InvalidMetadata(String),
    #[error("unsupported tokenizer: {0}")]
    Unsupported(String),
    #[error("tokenizer: {0}")]
    Tokenizers(String),
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    UnknownTokenId { id: u32, vocab_size: usize },
    #[error("the model has no chat template")]
    NoChatTemplate,
    /// A prompt that surely does not fit `limit` tokens, known from its length alone.
    #[error(
        "this model's maximum context length is {limit} tokens; the prompt's {bytes} bytes are \
         at least {at_least} tokens"
    )]
    PromptTooLong {
        bytes: usize,
        at_least: usize,
        limit: usize,
    },
    /// The template itself is broken (syntax error, bad filter, runaway loop): a model problem.
    #[error("chat template `{name}`: {message}")]
    Template { name: String, message: String },
    /// The template refused these messages (`raise_exception`), e.g. roles that do not
    /// alternate: the request's problem, not the model's.
    #[error("{message}")]
    TemplateRejected { name: String, message: String },
    /// The template placed a different number of images than the messages hold (it ignores
    /// image parts, or is not a vision template).
    #[error(
        "the chat template placed {found} image placeholder(s) (`{placeholder}`) for {images} \
         image(s) in the messages"
    )]
    ImagePlaceholders {
        placeholder: String,
        found: usize,
        images: usize,
    },
}

impl TokenizerError {
    fn tokenizers(err: tokenizers::Error) -> Self {
        Self::Tokenizers(err.to_string())
    }
}

pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

/// A model's tokenizer: vocabulary, special tokens, chat template.
#[derive(Debug)]
pub struct Tokenizer {
    /// Configured never to parse special tokens itself (`encode_special_tokens`): which text may
    /// contain control tokens is decided here, by [`SpecialSplitter`], not by the text.
    inner: tokenizers::Tokenizer,
    splitter: SpecialSplitter,
    /// Ids added around an encoded prompt when `add_special` is asked for (BOS, sometimes EOS).
    prefix_ids: Vec<u32>,
    suffix_ids: Vec<u32>,
    bos: Option<TokenRef>,
    eos: Option<TokenRef>,
    eos_ids: Vec<u32>,
    chat_template: Option<ChatTemplate>,
    vocab_size: usize,
    /// The most input bytes one token can stand for (the longest token's text, plus a margin
    /// for decoders that drop a leading space), when the tokenizer has no normalizer — so a
    /// text of `n` bytes is at least `n / max_token_bytes` tokens. `None` with a normalizer,
    /// which may shrink the text before it is split.
    max_token_bytes: Option<usize>,
}

/// A special token's id and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRef {
    pub id: u32,
    pub text: String,
}

/// What was read from a tokenizer source besides the vocabulary itself.
#[derive(Debug, Default)]
struct Specials {
    bos: Option<TokenRef>,
    eos: Option<TokenRef>,
    /// Every id that ends generation (generation_config may list several).
    eos_ids: Vec<u32>,
    add_bos: Option<bool>,
    add_eos: Option<bool>,
}

impl Tokenizer {
    /// Loads a Hugging Face tokenizer directory: `tokenizer.json`, and when present
    /// `tokenizer_config.json`, `generation_config.json` and `chat_template.jinja`.
    pub fn from_hf_dir(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        hf::load_dir(dir.as_ref())
    }

    /// Builds the tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &kiln_gguf::GgufFile) -> Result<Self> {
        gguf::build(file)
    }

    /// Opens a GGUF file and builds its tokenizer.
    pub fn from_gguf_path(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let file = kiln_gguf::GgufFile::open(path.as_ref())?;
        gguf::build(&file)
    }

    fn assemble(
        mut inner: tokenizers::Tokenizer,
        specials: Specials,
        chat_template: Option<ChatTemplate>,
    ) -> Result<Self> {
        // Learn what the post-processor adds around a sequence (e.g. Llama's BOS) before
        // removing it: segments are encoded one at a time and the ends are added once, here.
        let (mut prefix_ids, mut suffix_ids) = post_processor_ends(&inner)?;
        inner.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        inner.set_encode_special_tokens(true);
        match (specials.add_bos, &specials.bos) {
            (Some(true), Some(bos)) if prefix_ids.is_empty() => prefix_ids = vec![bos.id],
            (Some(false), _) => prefix_ids.clear(),
            _ => {}
        }
        match (specials.add_eos, &specials.eos) {
            (Some(true), Some(eos)) if suffix_ids.is_empty() => suffix_ids = vec![eos.id],
            (Some(false), _) => suffix_ids.clear(),
            _ => {}
        }
        let splitter = SpecialSplitter::new(&inner)?;
        let vocab_size = inner.get_vocab_size(true);
        let max_token_bytes = inner.get_normalizer().is_none().then(|| {
            (0..vocab_size as u32)
                .filter_map(|id| inner.decode(&[id], false).ok())
                .map(|t| t.len())
                .max()
                .unwrap_or(0)
                + 4
        });
        let mut eos_ids = specials.eos_ids;
        if let Some(eos) = &specials.eos {
            eos_ids.push(eos.id);
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();
        Ok(Self {
            inner,
            splitter,
            prefix_ids,
            suffix_ids,
            bos: specials.bos,
            eos: specials.eos,
            eos_ids,
            chat_template,
            vocab_size,
            max_token_bytes,
        })
    }

    /// A lower bound on the tokens `text` encodes to, without encoding it (0 when this
    /// tokenizer cannot bound it): a prompt that cannot fit is refused before the costly part.
    pub fn min_tokens(&self, text: &str) -> usize {
        self.max_token_bytes.map_or(0, |max| text.len() / max)
    }

    /// Fails with [`TokenizerError::PromptTooLong`] when `text` is surely more than `limit`
    /// tokens.
    fn check_bound(&self, text: &str, limit: Option<usize>) -> Result<()> {
        match limit {
            Some(limit) if self.min_tokens(text) > limit => Err(TokenizerError::PromptTooLong {
                bytes: text.len(),
                at_least: self.min_tokens(text),
                limit,
            }),
            _ => Ok(()),
        }
    }

    /// Encodes `text`. With `parse_special`, special-token strings in the text become their
    /// control tokens (what Hugging Face does by default; right for raw prompts from a trusted
    /// caller); without, every character is literal. `add_special` adds the model's BOS/EOS
    /// where its configuration asks for them.
    pub fn encode(&self, text: &str, parse_special: bool, add_special: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 4);
        if add_special {
            ids.extend_from_slice(&self.prefix_ids);
        }
        if parse_special {
            for segment in self.splitter.split(text) {
                match segment {
                    special::Segment::Text(t) => self.encode_literal_into(t, &mut ids)?,
                    special::Segment::Special(id) => ids.push(id),
                }
            }
        } else {
            self.encode_literal_into(text, &mut ids)?;
        }
        if add_special {
            ids.extend_from_slice(&self.suffix_ids);
        }
        Ok(ids)
    }

    fn encode_literal_into(&self, text: &str, ids: &mut Vec<u32>) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(TokenizerError::tokenizers)?;
        ids.extend_from_slice(encoding.get_ids());
        Ok(())
    }

    /// Decodes ids to text. `skip_special` drops control tokens (what a chat client wants).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(TokenizerError::UnknownTokenId {
                id,
                vocab_size: self.vocab_size,
            });
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(TokenizerError::tokenizers)
    }

    /// Renders `messages` with the model's chat template and encodes the result: template
    /// markers become control tokens, message text stays literal.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        options: &ChatTemplateOptions,
    ) -> Result<ChatPrompt> {
        let rendered = self.render(messages, options)?;
        self.encode_rendered(&rendered, options.max_prompt_tokens)
    }

    /// Like [`apply_chat_template`](Self::apply_chat_template) for messages with images: the
    /// template writes `placeholder` for each image part, and the `i`-th becomes
    /// `expansions[i]` (the image processor's text for that image, whose special-token strings
    /// become those tokens). Only the template's own placeholders count — a user who types the
    /// placeholder gets it as text.
    pub fn apply_chat_template_with_images(
        &self,
        messages: &[ChatMessage],
        options: &ChatTemplateOptions,
        placeholder: &str,
        expansions: &[String],
    ) -> Result<ChatPrompt> {
        let rendered = self.render(messages, options)?;
        let found = rendered.matches(placeholder).count();
        if found != expansions.len() || placeholder.is_empty() {
            return Err(TokenizerError::ImagePlaceholders {
                placeholder: placeholder.to_string(),
                found,
                images: expansions.len(),
            });
        }
        let mut expanded = String::with_capacity(rendered.len());
        let mut rest = rendered.as_str();
        for expansion in expansions {
            let Some(at) = rest.find(placeholder) else {
                break;
            };
            expanded.push_str(&rest[..at]);
            expanded.push_str(expansion);
            rest = &rest[at + placeholder.len()..];
        }
        expanded.push_str(rest);
        self.encode_rendered(&expanded, options.max_prompt_tokens)
    }

    /// The chat template's text for `messages`, caller strings escaped.
    fn render(&self, messages: &[ChatMessage], options: &ChatTemplateOptions) -> Result<String> {
        self.chat_template
            .as_ref()
            .ok_or(TokenizerError::NoChatTemplate)?
            .render(self, messages, options)
    }

    /// A rendered template to ids: its special-token strings become those tokens, escaped
    /// caller text stays literal. With a `limit`, text that surely exceeds it is refused
    /// before any of it is encoded.
    fn encode_rendered(&self, rendered: &str, limit: Option<usize>) -> Result<ChatPrompt> {
        let mut text = String::with_capacity(rendered.len());
        let mut pieces = Vec::new();
        for segment in self.splitter.split(rendered) {
            match segment {
                special::Segment::Text(t) => {
                    let literal = self.splitter.unescape(t);
                    text.push_str(&literal);
                    pieces.push(Ok(literal));
                }
                special::Segment::Special(id) => {
                    text.push_str(self.splitter.content(id).unwrap_or_default());
                    pieces.push(Err(id));
                }
            }
        }
        self.check_bound(&text, limit)?;
        let mut ids = Vec::with_capacity(rendered.len() / 3 + 4);
        for piece in pieces {
            match piece {
                Ok(literal) => self.encode_literal_into(&literal, &mut ids)?,
                Err(id) => ids.push(id),
            }
        }
        Ok(ChatPrompt { text, ids })
    }

    /// Replaces the model's chat template (e.g. with one given on the command line); `name` says
    /// where it came from, for error messages.
    pub fn with_chat_template(mut self, name: &str, source: impl Into<String>) -> Result<Self> {
        self.chat_template = Some(ChatTemplate::new(name, source.into())?);
        Ok(self)
    }

    /// The chat template's source, if the model has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_ref().map(ChatTemplate::source)
    }

    /// Vocabulary size including added tokens: every valid id is below it.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Ids that end generation (EOS and, where the model declares them, end-of-turn ids).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn bos(&self) -> Option<&TokenRef> {
        self.bos.as_ref()
    }

    pub fn eos(&self) -> Option<&TokenRef> {
        self.eos.as_ref()
    }

    /// The vocabulary entry for `id` (its raw form, e.g. `Ġthe`), if any.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Whether `id` is a control token (dropped by `decode(.., skip_special = true)`).
    pub fn is_special(&self, id: u32) -> bool {
        self.splitter.content(id).is_some()
    }

    /// A streaming detokenizer over this tokenizer.
    pub fn detokenizer(&self, skip_special: bool) -> Detokenizer<'_> {
        Detokenizer::new(self, skip_special)
    }
}

/// The ids the post-processor puts before and after a sequence, found by encoding one word with
/// and without it.
fn post_processor_ends(inner: &tokenizers::Tokenizer) -> Result<(Vec<u32>, Vec<u32>)> {
    let probe = "a";
    let bare = inner
        .encode_fast(probe, false)
        .map_err(TokenizerError::tokenizers)?;
    let full = inner
        .encode_fast(probe, true)
        .map_err(TokenizerError::tokenizers)?;
    let (bare, full) = (bare.get_ids(), full.get_ids());
    match (0..=full.len().saturating_sub(bare.len()))
        .find(|&i| full.get(i..i + bare.len()) == Some(bare))
    {
        Some(start) => Ok((
            full.get(..start).unwrap_or_default().to_vec(),
            full.get(start + bare.len()..).unwrap_or_default().to_vec(),
        )),
        None => Err(TokenizerError::Unsupported(
            "the post-processor changes the encoded text itself, not only its ends".into(),
        )),
    }
}
