//! The fuzz targets: each parser Kiln runs on what a client (or a model file) hands it, with
//! its seeds (real inputs), a dictionary, and the property checked on every input beyond "no
//! panic": user text never becomes a control token, the streaming detokenizer agrees with a
//! whole decode, the tool-call parser reads the same calls whatever the chunking.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_api_types::{
    ChatCompletionChunk, ChatCompletionChunkChoice, ChatCompletionChunkObject, ChatCompletionDelta,
    FunctionCallDelta, Limits, ToolCallDelta, parse_chat_request, parse_completion_request,
};
use kiln_gateway::{ToolCallParser, ToolCallPiece, ToolSyntax, sse_event};
use kiln_gguf::GgufFile;
use kiln_media::DecodeLimits;
use kiln_scheduler::{Grammars, OutputFormat};
use kiln_tokenizer::{ChatMessage, ChatTemplateOptions, Tokenizer};
use serde_json::{Value, json};

use crate::mutate::{Mutator, Rng};

/// What a target checks on one input: `Err` is a broken property (a panic is caught apart);
/// `Ok(true)` says the input got past the first gate (it parsed), which makes it worth
/// mutating further.
pub type Check = Box<dyn Fn(&[u8]) -> Result<bool, String> + Send + Sync>;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    pub seeds: Vec<Vec<u8>>,
    pub(crate) mutator: Mutator,
    pub check: Check,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("seeds", &self.seeds.len())
            .finish_non_exhaustive()
    }
}

/// The names of every target, in the order they run.
pub const NAMES: &[&str] = &[
    "chat_request",
    "completion_request",
    "chat_template",
    "detokenizer",
    "tool_calls",
    "sse",
    "gguf",
    "safetensors",
    "image",
    "json_schema",
];

/// The repository's `testdata/`.
fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

fn words(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

fn binary(words: &[&[u8]]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.to_vec()).collect()
}

/// JSON's punctuation, edge numbers and OpenAI's field names.
fn json_words() -> Vec<Vec<u8>> {
    words(&[
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        "null",
        "true",
        "false",
        "0",
        "-0",
        "1e309",
        "-1",
        "9007199254740993",
        "18446744073709551616",
        "0.5",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "\"role\"",
        "\"user\"",
        "\"assistant\"",
        "\"tool\"",
        "\"system\"",
        "\"content\"",
        "\"messages\"",
        "\"tools\"",
        "\"tool_choice\"",
        "\"tool_calls\"",
        "\"tool_call_id\"",
        "\"function\"",
        "\"name\"",
        "\"arguments\"",
        "\"parameters\"",
        "\"required\"",
        "\"response_format\"",
        "\"json_schema\"",
        "\"schema\"",
        "\"type\"",
        "\"image_url\"",
        "\"url\"",
        "\"data:image/png;base64,\"",
        "\"stream\"",
        "\"n\"",
        "\"stop\"",
        "\"logit_bias\"",
        "\"max_tokens\"",
        "\"prompt\"",
        "\"logprobs\"",
        "[[[[[[[[",
        "{\"a\":{\"a\":{\"a\":",
    ])
}

/// Field names a structural mutant may add to a chat request (or to any object inside one).
const CHAT_KEYS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "name",
    "tools",
    "tool_choice",
    "tool_calls",
    "tool_call_id",
    "function",
    "arguments",
    "parameters",
    "type",
    "text",
    "image_url",
    "url",
    "detail",
    "response_format",
    "json_schema",
    "schema",
    "strict",
    "n",
    "stop",
    "stream",
    "stream_options",
    "include_usage",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "user",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "modalities",
    "store",
    "metadata",
];

const COMPLETION_KEYS: &[&str] = &[
    "model",
    "prompt",
    "max_tokens",
    "n",
    "best_of",
    "echo",
    "logprobs",
    "suffix",
    "stop",
    "stream",
    "stream_options",
    "seed",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "logit_bias",
    "response_format",
    "user",
];

const SCHEMA_KEYS: &[&str] = &[
    "type",
    "properties",
    "required",
    "items",
    "prefixItems",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "$defs",
    "definitions",
    "pattern",
    "format",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "additionalProperties",
    "patternProperties",
    "minProperties",
    "maxProperties",
    "x-guidance",
    "not",
    "if",
    "then",
    "uniqueItems",
    "contains",
    "propertyNames",
];

fn request_seeds(kind: &str) -> Vec<Vec<u8>> {
    let weather = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
    let bodies = match kind {
        "chat" => vec![
            json!({"model": "m", "messages": [{"role": "user", "content": "Hello"}]}),
            json!({"messages": [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
                "stream": true, "stream_options": {"include_usage": true}, "n": 2,
                "temperature": 0.7, "top_p": 0.9, "stop": ["\n"], "logit_bias": {"42": -5},
                "logprobs": true, "top_logprobs": 3, "seed": -1, "max_completion_tokens": 10}),
            json!({"messages": [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                    "type": "function", "function": {"name": "get_weather",
                    "arguments": "{\"city\": \"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
                "tools": [weather], "tool_choice": "required", "parallel_tool_calls": false}),
            json!({"messages": [{"role": "user", "content": "json"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "x",
                    "schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
                    "strict": true}}}),
        ],
        _ => vec![
            json!({"model": "m", "prompt": "Once upon a time", "max_tokens": 5}),
            json!({"prompt": [[1, 2, 3], [4, 5]], "n": 2, "best_of": 2, "echo": true,
                "logprobs": 2, "stream": true, "response_format": {"type": "json_object"}}),
            json!({"prompt": ["a", "b"], "stop": "x", "seed": 3, "top_k": 5, "min_p": 0.1}),
        ],
    };
    bodies.iter().map(|b| b.to_string().into_bytes()).collect()
}

fn chat_request() -> Target {
    Target {
        name: "chat_request",
        seeds: request_seeds("chat"),
        mutator: Mutator {
            dictionary: json_words(),
            region: None,
            max_len: 1 << 16,
            json_keys: Some(CHAT_KEYS.to_vec()),
        },
        check: Box::new(|input| {
            let Ok(req) = parse_chat_request(input) else {
                return Ok(false);
            };
            let _ = req.validate(&Limits {
                vocab_size: Some(49_152),
                ..Limits::default()
            });
            Ok(true)
        }),
    }
}

fn completion_request() -> Target {
    Target {
        name: "completion_request",
        seeds: request_seeds("completions"),
        mutator: Mutator {
            dictionary: json_words(),
            region: None,
            max_len: 1 << 16,
            json_keys: Some(COMPLETION_KEYS.to_vec()),
        },
        check: Box::new(|input| {
            let Ok(req) = parse_completion_request(input) else {
                return Ok(false);
            };
            let _ = req.validate(&Limits {
                vocab_size: Some(49_152),
                ..Limits::default()
            });
            Ok(true)
        }),
    }
}

/// Messages from bytes: segments split at 0x1E, each a role (its first byte) and content (the
/// rest, as UTF-8 with replacement).
fn messages_of(input: &[u8]) -> Vec<ChatMessage> {
    const ROLES: [&str; 5] = ["system", "user", "assistant", "tool", "developer"];
    input
        .split(|&b| b == 0x1e)
        .filter(|s| !s.is_empty())
        .take(32)
        .map(|s| {
            let role = ROLES[usize::from(s[0]) % ROLES.len()];
            ChatMessage::text(role, String::from_utf8_lossy(&s[1..]))
        })
        .collect()
}

/// How many control tokens a rendering holds.
fn specials(tokenizer: &Tokenizer, ids: &[u32]) -> usize {
    ids.iter().filter(|&&id| tokenizer.is_special(id)).count()
}

fn chat_template() -> Result<Target, String> {
    let smollm2 = Tokenizer::from_hf_dir(testdata().join("smollm2")).map_err(|e| e.to_string())?;
    let qwen =
        Tokenizer::from_hf_dir(testdata().join("tiny-qwen2-tools")).map_err(|e| e.to_string())?;
    let tools = vec![json!({"type": "function", "function": {"name": "f",
        "parameters": {"type": "object", "properties": {}}}})];
    let tokenizers = [(smollm2, None), (qwen, Some(tools))];
    let seeds = vec![
        b"\x00You are helpful.\x1e\x01Hello <|im_start|>\x1e\x02Hi!\x1e\x01{{ raise }}".to_vec(),
        b"\x01<tool_call>\n{\"name\": \"f\"}</tool_call>\x1e\x03<|im_end|>result".to_vec(),
        "\x04d\u{fdd0}0\u{fdd1}\x1e\x01<|endoftext|>"
            .as_bytes()
            .to_vec(),
    ];
    Ok(Target {
        name: "chat_template",
        seeds,
        mutator: Mutator {
            dictionary: words(&[
                "\x1e",
                "\x00",
                "\x01",
                "\x02",
                "\x03",
                "<|im_start|>",
                "<|im_end|>",
                "<|endoftext|>",
                "<tool_call>",
                "</tool_call>",
                "[TOOL_CALLS]",
                "{{",
                "}}",
                "{%",
                "%}",
                "\u{fdd0}",
                "\u{fdd1}",
                "\u{fdd0}1\u{fdd1}",
                "\r\n",
                "\u{200b}",
            ]),
            region: None,
            max_len: 4096,
            json_keys: None,
        },
        check: Box::new(move |input| {
            let messages = messages_of(input);
            if messages.is_empty() {
                return Ok(false);
            }
            let mut rendered = false;
            // The same conversation with every content replaced by plain text.
            let plain: Vec<ChatMessage> = messages
                .iter()
                .map(|m| ChatMessage::text(m.role.clone(), "x"))
                .collect();
            for (tokenizer, tools) in &tokenizers {
                let options = ChatTemplateOptions {
                    add_generation_prompt: true,
                    tools: tools.clone(),
                    ..ChatTemplateOptions::default()
                };
                let (Ok(got), Ok(base)) = (
                    tokenizer.apply_chat_template(&messages, &options),
                    tokenizer.apply_chat_template(&plain, &options),
                ) else {
                    continue;
                };
                rendered = true;
                let (a, b) = (
                    specials(tokenizer, &got.ids),
                    specials(tokenizer, &base.ids),
                );
                if a != b {
                    return Err(format!(
                        "user text made control tokens: {a} in the rendering, {b} with plain text"
                    ));
                }
            }
            Ok(rendered)
        }),
    })
}

fn detokenizer() -> Result<Target, String> {
    let tokenizer =
        Tokenizer::from_hf_dir(testdata().join("smollm2")).map_err(|e| e.to_string())?;
    let text = "Héllo, wörld! 你好 🎉\n<|im_start|>user\nfn main() { println!(\"x\"); }";
    let ids = tokenizer
        .encode(text, true, false)
        .map_err(|e| e.to_string())?;
    let seed: Vec<u8> = ids
        .iter()
        .flat_map(|&id| (id as u16).to_le_bytes())
        .collect();
    Ok(Target {
        name: "detokenizer",
        seeds: vec![seed],
        mutator: Mutator {
            dictionary: Vec::new(),
            region: None,
            max_len: 1024,
            json_keys: None,
        },
        check: Box::new(move |input| {
            let vocab = tokenizer.vocab_size() as u32;
            let ids: Vec<u32> = input
                .chunks(2)
                .map(|c| u32::from(u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)])) % vocab)
                .collect();
            for skip in [true, false] {
                let mut detok = tokenizer.detokenizer(skip);
                let mut streamed = String::new();
                for &id in &ids {
                    streamed.push_str(&detok.push(id).map_err(|e| e.to_string())?);
                }
                streamed.push_str(&detok.flush().map_err(|e| e.to_string())?);
                let whole = tokenizer.decode(&ids, skip).map_err(|e| e.to_string())?;
                // Broken UTF-8 in the middle is replaced differently once split; whole
                // characters must agree.
                if !whole.contains('\u{fffd}') && streamed != whole {
                    return Err(format!("streamed {streamed:?} but decoded {whole:?}"));
                }
            }
            Ok(true)
        }),
    })
}

fn tool_calls() -> Target {
    let seeds = vec![
        "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>".as_bytes().to_vec(),
        "[TOOL_CALLS] [{\"name\": \"add\", \"arguments\": {\"a\": 1}, \"id\": \"abc123def\"}]".as_bytes().to_vec(),
        "<|python_tag|>{\"name\": \"add\", \"parameters\": {\"a\": \"}\\\"\"}}; {\"name\": \"get_weather\", \"parameters\": {}}".as_bytes().to_vec(),
    ];
    Target {
        name: "tool_calls",
        seeds,
        mutator: Mutator {
            dictionary: words(&[
                "<tool_call>",
                "</tool_call>",
                "[TOOL_CALLS]",
                "<|python_tag|>",
                "{",
                "}",
                "[",
                "]",
                "\"",
                "\\",
                ",",
                ";",
                "\"name\": ",
                "\"arguments\": ",
                "\"parameters\": ",
                "\"add\"",
                "\"get_weather\"",
                "\n",
                " ",
                "é",
                "🎉",
            ]),
            region: None,
            max_len: 4096,
            json_keys: None,
        },
        check: Box::new(|input| {
            let text = String::from_utf8_lossy(input);
            let names = vec!["get_weather".to_string(), "add".to_string()];
            // Chunk boundaries from the input itself, so a finding replays exactly.
            let mut rng = Rng::new(
                input
                    .iter()
                    .fold(0u64, |h, &b| h.rotate_left(5) ^ u64::from(b)),
            );
            let mut any_call = false;
            for syntax in ToolSyntax::ALL {
                let mut whole = ToolCallParser::new(syntax, names.clone());
                let mut expected = whole.push(&text);
                expected.extend(whole.finish());
                let mut chunked = ToolCallParser::new(syntax, names.clone());
                let mut got = Vec::new();
                let mut rest: &str = &text;
                while !rest.is_empty() {
                    let mut cut = 1 + rng.below(rest.len().min(9));
                    while !rest.is_char_boundary(cut) {
                        cut += 1;
                    }
                    got.extend(chunked.push(&rest[..cut]));
                    rest = &rest[cut..];
                }
                got.extend(chunked.finish());
                if fold(&got) != fold(&expected) {
                    return Err(format!(
                        "{syntax}: chunked {:?} but whole {:?}",
                        fold(&got),
                        fold(&expected)
                    ));
                }
                // Nothing is lost: what is not a call is content, verbatim or trimmed only
                // of whitespace next to calls.
                let (content, calls) = fold(&expected);
                if calls.is_empty() && content != text {
                    return Err(format!(
                        "{syntax}: no calls, but content {content:?} is not the text"
                    ));
                }
                any_call |= !calls.is_empty();
            }
            Ok(any_call)
        }),
    }
}

fn sse() -> Target {
    let seeds = vec![
        "Hello\n\ndata: [DONE]\n\n".as_bytes().to_vec(),
        "\r\n\u{2028}\u{2029}\u{0}\u{1b}[31m é 🎉 \\\""
            .as_bytes()
            .to_vec(),
        b"\xff\xfe\n\r\r\n".to_vec(),
    ];
    Target {
        name: "sse",
        seeds,
        mutator: Mutator {
            dictionary: words(&[
                "\n", "\r", "\r\n", "\n\n", "data: ", "[DONE]", "\u{2028}", "\0",
            ]),
            region: None,
            max_len: 4096,
            json_keys: None,
        },
        check: Box::new(|input| {
            let text = String::from_utf8_lossy(input).into_owned();
            let chunk = ChatCompletionChunk {
                id: text.clone(),
                object: ChatCompletionChunkObject::Value,
                created: 0,
                model: text.clone(),
                system_fingerprint: None,
                choices: vec![ChatCompletionChunkChoice {
                    index: 0,
                    delta: ChatCompletionDelta {
                        role: None,
                        content: Some(text.clone()),
                        tool_calls: Some(vec![ToolCallDelta {
                            index: 0,
                            id: None,
                            kind: None,
                            function: Some(FunctionCallDelta {
                                name: Some(text.clone()),
                                arguments: Some(text.clone()),
                            }),
                        }]),
                    },
                    logprobs: None,
                    finish_reason: None,
                }],
                usage: None,
            };
            let event = sse_event(&chunk).ok_or("the chunk does not serialize")?;
            let event = std::str::from_utf8(&event).map_err(|e| e.to_string())?;
            let Some(json) = event
                .strip_prefix("data: ")
                .and_then(|e| e.strip_suffix("\n\n"))
            else {
                return Err(format!("not one data event: {event:?}"));
            };
            // One line: a client splitting at line breaks sees one event.
            if json.contains(['\n', '\r']) {
                return Err(format!("a line break inside the event: {event:?}"));
            }
            let back: ChatCompletionChunk =
                serde_json::from_str(json).map_err(|e| format!("does not parse back: {e}"))?;
            if back != chunk {
                return Err("the event parses back to another chunk".into());
            }
            Ok(true)
        }),
    }
}

/// Pieces as content and (name, arguments) per call.
fn fold(pieces: &[ToolCallPiece]) -> (String, Vec<(String, String)>) {
    let mut content = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    for piece in pieces {
        match piece {
            ToolCallPiece::Content(t) => content.push_str(t),
            ToolCallPiece::Call { name, .. } => calls.push((name.clone(), String::new())),
            ToolCallPiece::Arguments { index, text } => {
                if let Some(call) = calls.get_mut(*index) {
                    call.1.push_str(text);
                }
            }
        }
    }
    (content, calls)
}

fn gguf() -> Result<Target, String> {
    let seeds = vec![
        read(&testdata().join("tiny-mistral/model.gguf"))?,
        read(&testdata().join("tiny-gemma3/model.gguf"))?,
    ];
    Ok(Target {
        name: "gguf",
        seeds,
        mutator: Mutator {
            dictionary: binary(&[b"GGUF", b"\x03\x00\x00\x00", b"\xff\xff\xff\xff"]),
            // The header (metadata, tensor table) is where the parsing is.
            region: Some(24 << 10),
            max_len: 4 << 20,
            json_keys: None,
        },
        check: Box::new(|input| {
            let Ok(file) = GgufFile::from_bytes(input.to_vec()) else {
                return Ok(false);
            };
            let _ = file.metadata();
            for info in file.tensors() {
                let _ = info.n_elements();
                let _ = file.tensor_data(info);
            }
            let _ = Tokenizer::from_gguf(&file);
            Ok(true)
        }),
    })
}

fn safetensors() -> Result<Target, String> {
    let seeds = vec![
        read(&testdata().join("tiny-llama/model.safetensors"))?,
        read(&testdata().join("tiny-phi3/model.safetensors"))?,
    ];
    Ok(Target {
        name: "safetensors",
        seeds,
        mutator: Mutator {
            dictionary: words(&[
                "\"dtype\":\"F32\"",
                "\"dtype\":\"F16\"",
                "\"dtype\":\"BF16\"",
                "\"dtype\":\"I64\"",
                "\"shape\":[",
                "\"data_offsets\":[",
                "\"__metadata__\":{",
                "18446744073709551615",
                "4294967296",
                "],[",
                "{}",
            ]),
            // The 8-byte length and the JSON header are where the parsing is.
            region: Some(4 << 10),
            max_len: 2 << 20,
            json_keys: None,
        },
        check: Box::new(|input| Ok(kiln_runtime::read_safetensors(input).is_ok())),
    })
}

fn image() -> Result<Target, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/image");
    let mut seeds = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        seeds.push(read(&path)?);
    }
    seeds.push(read(&testdata().join("media/cmyk_8x8.jpg"))?);
    Ok(Target {
        name: "image",
        seeds,
        mutator: Mutator {
            dictionary: binary(&[
                b"\x89PNG\r\n\x1a\n",
                b"IHDR",
                b"IDAT",
                b"IEND",
                b"\xff\xd8\xff",
                b"GIF89a",
                b"RIFF",
                b"WEBP",
                b"VP8 ",
                b"VP8L",
                b"Exif",
            ]),
            region: None,
            max_len: 1 << 16,
            json_keys: None,
        },
        check: Box::new(|input| {
            let limits = DecodeLimits {
                max_side: 4096,
                max_pixels: 4 << 20,
            };
            Ok(kiln_media::decode(input, &limits).is_ok())
        }),
    })
}

fn json_schema() -> Result<Target, String> {
    let tokenizer =
        Tokenizer::from_hf_dir(testdata().join("tiny-qwen2-tools")).map_err(|e| e.to_string())?;
    let vocab = tokenizer.vocab_size();
    let grammars = Grammars::new(Arc::new(tokenizer), vocab);
    let seeds: Vec<Vec<u8>> = [
        json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 10},
            "age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name"]}),
        json!({"type": "array", "items": {"enum": ["a", "b", 3, null]}, "minItems": 1,
            "maxItems": 4}),
        json!({"anyOf": [{"type": "string", "pattern": "^[a-z]+$"}, {"type": "number",
            "exclusiveMinimum": 0}], "$defs": {"x": {"$ref": "#/$defs/x"}}}),
        json!({"type": "object", "additionalProperties": {"type": "boolean"},
            "patternProperties": {"^x": {"const": 1}}, "minProperties": 1}),
        json!({"type": "string", "format": "date-time"}),
    ]
    .iter()
    .map(|v| v.to_string().into_bytes())
    .collect();
    Ok(Target {
        name: "json_schema",
        seeds,
        mutator: Mutator {
            dictionary: [
                json_words(),
                words(&[
                    "\"$ref\"",
                    "\"#/$defs/x\"",
                    "\"anyOf\"",
                    "\"allOf\"",
                    "\"oneOf\"",
                    "\"items\"",
                    "\"prefixItems\"",
                    "\"pattern\"",
                    "\"(a|b)*c{2,}\"",
                    "\"minLength\"",
                    "\"maxLength\"",
                    "\"minimum\"",
                    "\"maximum\"",
                    "\"multipleOf\"",
                    "\"enum\"",
                    "\"const\"",
                    "\"properties\"",
                    "\"additionalProperties\"",
                    "\"format\"",
                    "\"x-guidance\"",
                    "\"uniqueItems\"",
                ]),
            ]
            .concat(),
            region: None,
            max_len: 4096,
            json_keys: Some(SCHEMA_KEYS.to_vec()),
        },
        check: Box::new(move |input| {
            let Ok(schema) = serde_json::from_slice::<Value>(input) else {
                return Ok(false);
            };
            Ok(grammars
                .compile(&OutputFormat::JsonSchema(schema), "fuzz")
                .is_ok())
        }),
    })
}

/// Builds the target `name`.
pub fn target(name: &str) -> Result<Target, String> {
    match name {
        "chat_request" => Ok(chat_request()),
        "completion_request" => Ok(completion_request()),
        "chat_template" => chat_template(),
        "detokenizer" => detokenizer(),
        "tool_calls" => Ok(tool_calls()),
        "sse" => Ok(sse()),
        "gguf" => gguf(),
        "safetensors" => safetensors(),
        "image" => image(),
        "json_schema" => json_schema(),
        other => Err(format!(
            "unknown fuzz target {other:?} (the targets: {})",
            NAMES.join(", ")
        )),
    }
}
