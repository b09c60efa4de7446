//! Encoding speed: a 4,000-token chat through the template and the tokenizer, and its raw text.
//! The tokenizer is the bench model's (`KILN_BENCH_MODEL`, see `kiln_benches`) or, for random
//! weights, SmolLM2's from `testdata/`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_tokenizer::{ChatMessage, ChatTemplateOptions, Tokenizer};

fn long_chat(tok: &Tokenizer, target_tokens: usize) -> Vec<ChatMessage> {
    let paragraph = "The quick brown fox jumps over the lazy dog while 42 engineers debug \
        a KV cache; émigré café naïveté, 数学 の テスト and 👩‍👩‍👧‍👦 keep the byte-level \
        paths honest. Continuous batching keeps every request moving.\n";
    let mut messages = vec![ChatMessage::text("system", "You are a terse assistant.")];
    let mut turn = 0;
    loop {
        let role = if turn % 2 == 0 { "user" } else { "assistant" };
        messages.push(ChatMessage::text(role, paragraph.repeat(3)));
        turn += 1;
        let n = tok
            .apply_chat_template(&messages, &ChatTemplateOptions::default())
            .map(|p| p.ids.len())
            .unwrap_or(usize::MAX);
        if n >= target_tokens {
            return messages;
        }
    }
}

fn tokenizer() -> Tokenizer {
    let (path, what) = kiln_benches::model_path();
    let loaded = if path.is_file() {
        Tokenizer::from_gguf_path(&path)
    } else if path.join("tokenizer.json").exists() {
        Tokenizer::from_hf_dir(&path)
    } else {
        let dir = std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
        )
        .join("../testdata/smollm2");
        eprintln!("{what} has no tokenizer: benchmarking SmolLM2's from testdata/");
        Tokenizer::from_hf_dir(dir)
    };
    loaded.unwrap_or_else(|e| panic!("loading the tokenizer: {e}"))
}

fn bench(c: &mut Criterion) {
    let tok = tokenizer();
    let messages = long_chat(&tok, 4000);
    let options = ChatTemplateOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    let n_tokens = tok
        .apply_chat_template(&messages, &options)
        .map(|p| p.ids.len())
        .unwrap_or(0);
    let mut group = c.benchmark_group("tokenizer");
    group.throughput(Throughput::Elements(n_tokens as u64));
    group.bench_function("chat_template_4k", |b| {
        b.iter(|| tok.apply_chat_template(&messages, &options))
    });
    let text = tok
        .apply_chat_template(&messages, &options)
        .map(|p| p.text)
        .unwrap_or_default();
    group.bench_function("encode_4k", |b| b.iter(|| tok.encode(&text, true, false)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
