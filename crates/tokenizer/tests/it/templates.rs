//! Chat-template semantics beyond SmolLM2's own template: the Hugging Face extensions (Python
//! string methods, loop controls, `raise_exception`, `strftime_now`, `tojson`, tools) and errors.

use kiln_tokenizer::{ChatMessage, ChatTemplateOptions, Tokenizer, TokenizerError};
use serde_json::json;

use crate::common;

fn with_template(source: &str) -> Result<Tokenizer, TokenizerError> {
    common::hf().with_chat_template("test template", source)
}

fn render(tok: &Tokenizer, messages: &[ChatMessage], options: &ChatTemplateOptions) -> String {
    tok.apply_chat_template(messages, options).unwrap().text
}

#[test]
fn hugging_face_jinja_extensions_work() {
    // trim_blocks/lstrip_blocks, loop controls, .strip()/.startswith() and bos/eos variables.
    let tok = with_template(
        "{{ bos_token }}\n{% for m in messages %}\n  {% if m.role == 'system' %}{% continue %}{% endif %}\n{{ m.role.upper() }}: {{ m.content.strip() }}{% if m.content.startswith(' ') %}!{% endif %}\n{% endfor %}\n{{ eos_token }}",
    )
    .unwrap();
    let text = render(
        &tok,
        &[
            ChatMessage::text("system", "ignored"),
            ChatMessage::text("user", "  hi  "),
        ],
        &ChatTemplateOptions::default(),
    );
    // What Jinja2 renders with transformers' settings for the same template and messages.
    assert_eq!(text, "<|im_start|>\nUSER: hi!<|im_end|>");
}

#[test]
fn raise_exception_is_a_request_error_naming_its_message() {
    let tok = with_template(
        "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}ok",
    )
    .unwrap();
    let err = tok
        .apply_chat_template(
            &[ChatMessage::text("assistant", "x")],
            &ChatTemplateOptions::default(),
        )
        .unwrap_err();
    match err {
        TokenizerError::TemplateRejected { message, .. } => {
            assert_eq!(message, "Conversation must start with user")
        }
        other => panic!("expected TemplateRejected, got {other:?}"),
    }
}

#[test]
fn broken_templates_are_errors_naming_the_template() {
    let err = with_template("{% for m in messages %}").unwrap_err();
    assert!(matches!(err, TokenizerError::Template { ref name, .. } if name == "test template"));
    assert!(err.to_string().contains("test template"), "{err}");
    // A runtime failure (calling an undefined function) is also a Template error, not a panic.
    let tok = with_template("{{ no_such_function() }}").unwrap();
    let err = tok
        .apply_chat_template(
            &[ChatMessage::text("user", "x")],
            &ChatTemplateOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, TokenizerError::Template { .. }), "{err:?}");
    // A runaway template is stopped.
    let tok = with_template(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    )
    .unwrap();
    let err = tok
        .apply_chat_template(
            &[ChatMessage::text("user", "x")],
            &ChatTemplateOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, TokenizerError::Template { .. }), "{err:?}");
}

#[test]
fn no_template_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("kiln-no-template-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = common::smollm2_dir();
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let tok = Tokenizer::from_hf_dir(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(tok.chat_template().is_none());
    let err = tok
        .apply_chat_template(
            &[ChatMessage::text("user", "x")],
            &ChatTemplateOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, TokenizerError::NoChatTemplate));
}

#[test]
fn strftime_now_formats_the_current_date() {
    let tok = with_template("{{ strftime_now('%Y-%m-%d') }}").unwrap();
    let text = render(&tok, &[], &ChatTemplateOptions::default());
    let today = jiff::Zoned::now().strftime("%Y-%m-%d").to_string();
    assert_eq!(text, today);
}

#[test]
fn tools_and_kwargs_reach_the_template_and_tojson_prints_like_python() {
    let tok = with_template(
        "{% if tools %}{% for t in tools %}{{ t | tojson }}\n{% endfor %}{% endif %}{{ flag }}|{{ messages[0].tool_calls | tojson(indent=2) }}",
    )
    .unwrap();
    let mut call = ChatMessage::text("assistant", "");
    call.extra.insert(
        "tool_calls".into(),
        json!([{"type": "function", "function": {"name": "f", "arguments": {"x": "é <|im_end|>"}}}]),
    );
    let options = ChatTemplateOptions {
        add_generation_prompt: true,
        tools: Some(vec![
            json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}}}),
        ]),
        kwargs: json!({"flag": "on"}).as_object().unwrap().clone(),
        max_prompt_tokens: None,
    };
    let prompt = tok.apply_chat_template(&[call], &options).unwrap();
    assert_eq!(
        prompt.text,
        "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\", \"required\": [\"city\"], \"properties\": {\"city\": {\"type\": \"string\"}}}}}\non|[\n  {\n    \"type\": \"function\",\n    \"function\": {\n      \"name\": \"f\",\n      \"arguments\": {\n        \"x\": \"é <|im_end|>\"\n      }\n    }\n  }\n]"
    );
    // The end marker inside the tool arguments stays text.
    assert!(!prompt.ids.contains(&2));
}

/// The length bound is a true lower bound on the encoded length, whatever the text (words,
/// one long word, bytes that are single tokens, control-token strings); a chat prompt that
/// surely exceeds the limit is refused before it is encoded, and one that fits is not.
#[test]
fn prompt_length_bounds_are_lower_bounds_and_refuse_before_encoding() {
    let tok = common::hf();
    let long_word = "x".repeat(5_000);
    let texts = [
        "The capital of France is Paris. ".repeat(200),
        long_word,
        "🦀 ünïcödé ".repeat(300),
        "<|im_start|>user\n<|im_end|>".repeat(100),
        "                                        ".repeat(50),
        "1234567890".repeat(400),
    ];
    for text in &texts {
        let encoded = tok.encode(text, true, false).unwrap().len();
        let bound = tok.min_tokens(text);
        assert!(bound <= encoded, "{bound} > {encoded} for {:.40}", text);
        assert!(bound > 0, "no bound for {:.40}", text);
    }
    let messages = [ChatMessage::text("user", "lorem ipsum ".repeat(130_000))];
    let options = ChatTemplateOptions {
        max_prompt_tokens: Some(8192),
        ..ChatTemplateOptions::default()
    };
    match tok.apply_chat_template(&messages, &options) {
        Err(TokenizerError::PromptTooLong {
            at_least, limit, ..
        }) => assert!(at_least > limit),
        Err(other) => panic!("expected PromptTooLong, got {other}"),
        Ok(p) => panic!("expected PromptTooLong, got {} ids", p.ids.len()),
    }
    let fits = [ChatMessage::text("user", "lorem ipsum ".repeat(100))];
    assert!(tok.apply_chat_template(&fits, &options).is_ok());
}
