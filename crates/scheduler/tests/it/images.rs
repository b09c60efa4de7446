//! Images through the engine, on the tiny random SmolVLM (`testdata/tiny-smolvlm`): the tower
//! runs when a request arrives, its rows fill the image's tokens across prefill chunks, and the
//! prefix cache keys image positions by the image — two different images behind the same
//! placeholder tokens never share KV blocks, the same image again does; preemption recomputes
//! with the same rows.

use std::sync::Arc;
use std::time::Duration;

use kiln_media::{DecodeLimits, Detail, ImageProcessor};
use kiln_runtime::{DType, KvCacheSize, LoadOptions, Model};
use kiln_scheduler::{Completion, Engine, EngineConfig, GenerationRequest, ImageInput};
use kiln_tokenizer::{ChatMessage, ChatTemplateOptions, Content, ContentPart, Tokenizer};
use prometheus::Registry;

use crate::common::{metric, run, run_all, testdata};

const BLOCK: usize = 16;

fn dir() -> std::path::PathBuf {
    testdata().join("tiny-smolvlm")
}

fn engine(blocks: usize, config: EngineConfig) -> (Engine, Arc<Tokenizer>, Registry) {
    let options = LoadOptions {
        block_size: BLOCK,
        kv_cache: KvCacheSize::Tokens(blocks * BLOCK),
        kv_dtype: DType::F32,
        ..Default::default()
    };
    let model = Model::load(&dir(), &options).unwrap();
    let tokenizer = Arc::new(Tokenizer::from_hf_dir(dir()).unwrap());
    let registry = Registry::new();
    let engine = Engine::start(model, tokenizer.clone(), config, &registry).unwrap();
    (engine, tokenizer, registry)
}

/// A greedy request for `text` after the image in `file`: its prompt as the gateway builds it.
fn request(tokenizer: &Tokenizer, file: &str, text: &str, max_tokens: usize) -> GenerationRequest {
    let processor = ImageProcessor::from_dir(&dir()).unwrap().unwrap();
    let bytes = std::fs::read(dir().join(file)).unwrap();
    let image = processor.process(
        &kiln_media::decode(&bytes, &DecodeLimits::default()).unwrap(),
        Detail::Auto,
    );
    let message = ChatMessage {
        role: "user".into(),
        content: Some(Content::Parts(vec![
            ContentPart::Image,
            ContentPart::Text { text: text.into() },
        ])),
        extra: serde_json::Map::new(),
    };
    let options = ChatTemplateOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    let prompt = tokenizer
        .apply_chat_template_with_images(
            &[message],
            &options,
            "<image>",
            std::slice::from_ref(&image.prompt),
        )
        .unwrap();
    let token = tokenizer.token_to_id("<image>").unwrap();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for (p, _) in prompt
        .ids
        .iter()
        .enumerate()
        .filter(|&(_, &id)| id == token)
    {
        match spans.last_mut() {
            Some((s, l)) if *s + *l == p => *l += 1,
            _ => spans.push((p, 1)),
        }
    }
    let mut r = GenerationRequest::greedy(prompt.ids, max_tokens);
    r.stop_at_eos = false;
    // The random model's greedy text barely depends on the image; its logprobs do.
    r.logprobs = Some(2);
    r.images = vec![ImageInput {
        tiles: image.tiles,
        hash: image.hash,
        spans,
    }];
    r
}

/// The largest difference between two completions' chosen-token logprobs, their tokens equal
/// (cached and chunked prefills sum in another order: ~1e-6 apart).
fn logprob_gap(a: &Completion, b: &Completion) -> f32 {
    assert_eq!(a.choices[0].tokens, b.choices[0].tokens);
    a.choices[0]
        .logprobs
        .iter()
        .zip(&b.choices[0].logprobs)
        .map(|(x, y)| (x.chosen.logprob - y.chosen.logprob).abs())
        .fold(0.0, f32::max)
}

#[test]
fn different_images_never_share_blocks_and_the_same_one_does() {
    let (cached, tokenizer, _) = engine(64, EngineConfig::default());
    let handle = cached.handle();
    let text = "What is in this picture? Tell me in detail, please.";
    // 20x14 and 50x50 images both become 3x3 tiles: the same tokens, different pixels.
    let small = request(&tokenizer, "small_20x14.png", text, 8);
    let rgba = request(&tokenizer, "rgba_50x50.png", text, 8);
    assert_eq!(small.prompt, rgba.prompt, "the same placeholder tokens");
    let first_image = small.images[0].spans[0].0;

    let a = run(&handle, small.clone());
    assert_eq!(a.usage.cached_tokens, 0);
    let b = run(&handle, rgba.clone());
    // Only the text before the image may come from the cache.
    assert!(
        b.usage.cached_tokens <= first_image / BLOCK * BLOCK,
        "{} cached tokens reach into the image at {first_image}",
        b.usage.cached_tokens
    );
    let again = run(&handle, small.clone());
    assert!(
        again.usage.cached_tokens > first_image + 16,
        "the same image again is served from the cache ({} tokens)",
        again.usage.cached_tokens
    );
    assert!(logprob_gap(&again, &a) < 1e-4);
    cached.shutdown(Duration::from_secs(5));

    // Without a cache: the same answers, so the hits above were right to take.
    let (fresh, _, _) = engine(
        64,
        EngineConfig {
            prefix_caching: false,
            ..EngineConfig::default()
        },
    );
    let handle = fresh.handle();
    assert!(logprob_gap(&run(&handle, small), &a) < 1e-4);
    assert!(logprob_gap(&run(&handle, rgba), &b) < 1e-4);
    assert!(
        logprob_gap(&a, &b) > 1e-2,
        "the image changes the distribution"
    );
    fresh.shutdown(Duration::from_secs(5));
}

#[test]
fn chunked_prefill_and_preemption_keep_the_image_rows() {
    let (roomy, tokenizer, _) = engine(64, EngineConfig::default());
    let requests = || -> Vec<GenerationRequest> {
        [
            "small_20x14.png",
            "nonsquare_70x40.png",
            "large_300x200.png",
            "rgba_50x50.png",
        ]
        .iter()
        .map(|f| request(&tokenizer, f, "Describe it.", 30))
        .collect()
    };
    let reference: Vec<_> = requests()
        .into_iter()
        .map(|r| run(&roomy.handle(), r))
        .collect();
    roomy.shutdown(Duration::from_secs(5));
    // Prefill chunks of 20 tokens cut through the images; 18 blocks cannot hold four
    // ~100-token sequences, so some are preempted and recomputed.
    let (tight, _, registry) = engine(
        18,
        EngineConfig {
            max_batched_tokens: 20,
            prefix_caching: false,
            ..EngineConfig::default()
        },
    );
    let out = run_all(&tight.handle(), requests());
    assert!(metric(&registry, "kiln_num_preemptions_total") > 0.0);
    // Four images, each through the tower once, whatever the preemptions.
    assert_eq!(metric(&registry, "kiln_image_encode_seconds"), 4.0);
    for (i, (a, b)) in reference.iter().zip(&out).enumerate() {
        let gap = logprob_gap(a, b);
        assert!(gap < 1e-4, "request {i}: logprobs {gap} apart");
    }
    tight.shutdown(Duration::from_secs(5));
}

#[test]
fn an_image_the_tower_cannot_take_fails_its_request_only() {
    let (engine, tokenizer, _) = engine(64, EngineConfig::default());
    let handle = engine.handle();
    let mut bad = request(&tokenizer, "small_20x14.png", "Hi", 4);
    bad.images[0].tiles[0].width = 16;
    let err = handle
        .submit(bad)
        .unwrap()
        .blocking_next()
        .expect("an event");
    assert!(
        matches!(&err, kiln_scheduler::Event::Error(e) if e.to_string().contains("tile where the vision tower takes")),
        "{err:?}"
    );
    let ok = run(&handle, request(&tokenizer, "small_20x14.png", "Hi", 4));
    assert_eq!(ok.choices[0].tokens.len(), 4);
    engine.shutdown(Duration::from_secs(5));
}
