//! The engine end to end on real models (the tiny random Llama with SmolLM2's tokenizer, and
//! SmolLM2, Gemma 3 and the tiny Mistral): batch invariance, preemption, cancellation, seeds,
//! stop strings, n > 1, logprobs, the queue limit, the prefix cache, sliding-window block
//! freeing, limits and shutdown.

use std::sync::Arc;
use std::time::Duration;

use kiln_runtime::{DType, KvCacheSize, LoadOptions, Model};
use kiln_scheduler::{
    Completion, Engine, EngineConfig, Event, FinishReason, GenerationRequest, SamplingParams,
    SchedulerError,
};
use kiln_tokenizer::Tokenizer;
use prometheus::Registry;

use crate::common::{metric, prompt, run, run_all, testdata, tiny, tokenizer, wait_for};

fn greedy_requests() -> Vec<GenerationRequest> {
    (0..16)
        .map(|i| GenerationRequest::greedy(prompt(3 + i * 5, i), 12 + i))
        .collect()
}

#[test]
fn concurrent_greedy_requests_match_each_run_alone() {
    let (engine, registry) = tiny(256, EngineConfig::default());
    let handle = engine.handle();
    let alone: Vec<Completion> = greedy_requests()
        .into_iter()
        .map(|r| run(&handle, r))
        .collect();
    let together = run_all(&handle, greedy_requests());
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a.choices, t.choices, "request {i}");
        // (The second run may be served partly from the prefix cache: only that may differ.)
        assert_eq!(a.usage.prompt_tokens, t.usage.prompt_tokens, "request {i}");
        assert_eq!(a.usage.completion_tokens, t.usage.completion_tokens);
        assert_eq!(a.choices[0].tokens.len(), a.usage.completion_tokens);
    }
    // Something was generated, and each request's usage adds up.
    assert!(alone.iter().all(|c| !c.choices[0].tokens.is_empty()));
    assert_eq!(metric(&registry, "kiln_e2e_request_latency_seconds"), 32.0);
    assert!(metric(&registry, "kiln_prefix_cache_hits_total") > 0.0);
    assert!(metric(&registry, "kiln_generation_tokens_total") > 100.0);
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn a_starved_kv_pool_preempts_without_changing_outputs() {
    let requests = || -> Vec<GenerationRequest> {
        (0..8)
            .map(|i| {
                let mut r = GenerationRequest::greedy(prompt(20 + i, i), 40);
                r.stop_at_eos = false;
                r
            })
            .collect()
    };
    let (roomy, _) = tiny(256, EngineConfig::default());
    let reference = run_all(&roomy.handle(), requests());
    roomy.shutdown(Duration::from_secs(5));

    // Each request needs 4 blocks by its end; 10 blocks cannot hold 8 of them.
    let (starved, registry) = tiny(10, EngineConfig::default());
    let out = run_all(&starved.handle(), requests());
    assert!(metric(&registry, "kiln_num_preemptions_total") > 0.0);
    for (i, (a, b)) in reference.iter().zip(&out).enumerate() {
        assert_eq!(a.choices, b.choices, "request {i}");
        assert_eq!(b.choices[0].tokens.len(), 40);
    }
    wait_for("all blocks to be free", || {
        metric(&registry, "kiln_kv_cache_usage_ratio") == 0.0
    });
    starved.shutdown(Duration::from_secs(5));
}

#[test]
fn dropping_a_stream_cancels_it_and_frees_its_blocks() {
    let config = EngineConfig {
        max_running: 1,
        ..EngineConfig::default()
    };
    let (engine, registry) = tiny(64, config);
    let handle = engine.handle();
    let mut long = GenerationRequest::greedy(prompt(40, 1), 200);
    long.stop_at_eos = false;
    let mut running = handle.submit(long.clone()).unwrap();
    // A second one waits behind it (one running sequence at a time).
    let waiting = handle.submit(long).unwrap();
    for _ in 0..3 {
        assert!(matches!(running.blocking_next(), Some(Event::Token { .. })));
    }
    assert!(metric(&registry, "kiln_kv_cache_usage_ratio") > 0.0);
    let resident = metric(&registry, "kiln_kv_cache_resident_bytes");
    assert!(resident > 0.0);
    assert_eq!(handle.waiting(), 1);
    drop(waiting);
    wait_for("the waiting request to leave the queue", || {
        handle.waiting() == 0
    });
    drop(running);
    wait_for("all blocks to be free", || {
        metric(&registry, "kiln_kv_cache_usage_ratio") == 0.0
            && metric(&registry, "kiln_num_requests_running") == 0.0
    });
    // The pool's written part stays resident: it does not shrink when the request ends.
    assert!(metric(&registry, "kiln_kv_cache_resident_bytes") >= resident);
    // The engine still serves.
    let c = run(&handle, GenerationRequest::greedy(prompt(5, 2), 3));
    assert_eq!(c.choices[0].tokens.len(), 3);
    engine.shutdown(Duration::from_secs(5));
}

fn sampled(seed: Option<u64>, n: usize) -> GenerationRequest {
    GenerationRequest {
        sampling: SamplingParams {
            temperature: 1.0,
            seed,
            ..SamplingParams::default()
        },
        n,
        stop_at_eos: false,
        ..GenerationRequest::greedy(prompt(10, 3), 24)
    }
}

#[test]
fn a_seed_reproduces_whatever_else_is_running() {
    let (engine, _) = tiny(256, EngineConfig::default());
    let handle = engine.handle();
    let alone = run(&handle, sampled(Some(42), 1));
    let mut batch = greedy_requests();
    batch.insert(3, sampled(Some(42), 1));
    batch.push(sampled(Some(7), 1));
    let together = run_all(&handle, batch);
    assert_eq!(together[3].choices, alone.choices);
    assert_ne!(together[17].choices[0].tokens, alone.choices[0].tokens);
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn n_choices_share_the_prompt_and_each_is_a_full_answer() {
    let (engine, _) = tiny(256, EngineConfig::default());
    let handle = engine.handle();
    // Greedy choices must all equal the single greedy answer, whether the prompt ends inside a
    // block (the forks recompute its tail) or exactly on a block boundary.
    for len in [21, 32] {
        let single = run(&handle, GenerationRequest::greedy(prompt(len, 4), 20));
        let three = run(
            &handle,
            GenerationRequest {
                n: 3,
                ..GenerationRequest::greedy(prompt(len, 4), 20)
            },
        );
        assert_eq!(three.choices.len(), 3);
        for c in &three.choices {
            assert_eq!(c, &single.choices[0], "prompt of {len}");
        }
        assert_eq!(three.usage.prompt_tokens, len);
        assert_eq!(
            three.usage.completion_tokens,
            3 * single.usage.completion_tokens
        );
    }
    // Sampled choices differ from each other, and replay with their seed.
    let a = run(&handle, sampled(Some(5), 3));
    let b = run(&handle, sampled(Some(5), 3));
    assert_eq!(a, b);
    assert_ne!(a.choices[0].tokens, a.choices[1].tokens);
    assert_ne!(a.choices[1].tokens, a.choices[2].tokens);
    assert!(
        a.choices
            .iter()
            .all(|c| c.finish_reason == Some(FinishReason::Length) && c.tokens.len() == 24)
    );
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn stop_strings_across_token_boundaries_end_the_text_before_them() {
    let (engine, _) = tiny(256, EngineConfig::default());
    let handle = engine.handle();
    let mut base = GenerationRequest::greedy(prompt(12, 5), 40);
    base.stop_at_eos = false;
    let full = run(&handle, base.clone());
    let tokens = &full.choices[0].tokens;
    let tok = tokenizer();
    // A stop string from the middle of one token's text into the next one's.
    let mut cut = None;
    for k in 4..tokens.len() - 1 {
        let before = tok.decode(&tokens[..k], true).unwrap();
        let a = tok.decode(&tokens[..=k], true).unwrap();
        let b = tok.decode(&tokens[..k + 2], true).unwrap();
        let (ta, tb) = (&a[before.len()..], &b[a.len()..]);
        if ta.chars().count() >= 2 && !tb.is_empty() {
            let start = a.len() - ta.chars().last().unwrap().len_utf8();
            let stop = format!("{}{}", &a[start..], tb.chars().next().unwrap());
            cut = Some((stop, start));
            break;
        }
    }
    let (stop, _) = cut.expect("no two adjacent multi-character tokens");
    let expected = &full.choices[0].text[..full.choices[0].text.find(&stop).unwrap()];

    let mut request = base.clone();
    request.stop = vec![stop.clone(), "\u{0}never".into()];
    let mut stream = handle.submit(request.clone()).unwrap();
    let mut streamed = String::new();
    let mut finish = None;
    while let Some(event) = stream.blocking_next() {
        match event {
            Event::Token { text, .. } => streamed.push_str(&text),
            Event::Finished { text, reason, .. } => {
                streamed.push_str(&text);
                finish = Some(reason);
            }
            Event::Done { .. } => break,
            Event::Error(e) => panic!("{e}"),
        }
        // Nothing released so far may contain the stop string or run into it.
        assert!(
            expected.starts_with(&streamed),
            "{streamed:?} vs {expected:?}"
        );
    }
    assert_eq!(streamed, expected);
    assert_eq!(finish, Some(FinishReason::Stop));
    let collected = run(&handle, request);
    assert_eq!(collected.choices[0].text, expected);
    assert_eq!(collected.choices[0].finish_reason, Some(FinishReason::Stop));
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn greedy_logprobs_are_the_top_logprobs() {
    let (engine, _) = tiny(256, EngineConfig::default());
    let handle = engine.handle();
    let mut r = GenerationRequest::greedy(prompt(9, 6), 10);
    r.logprobs = Some(5);
    let c = run(&handle, r);
    let choice = &c.choices[0];
    assert_eq!(choice.logprobs.len(), choice.tokens.len());
    for (lp, &id) in choice.logprobs.iter().zip(&choice.tokens) {
        assert_eq!(lp.chosen.id, id);
        assert_eq!(lp.top.len(), 5);
        assert_eq!(lp.top[0].id, id);
        assert_eq!(lp.top[0].logprob, lp.chosen.logprob);
        assert!(lp.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
        assert!(lp.chosen.logprob <= 0.0);
    }
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn a_full_queue_answers_overloaded_at_once() {
    let config = EngineConfig {
        max_running: 1,
        max_waiting: 2,
        ..EngineConfig::default()
    };
    let (engine, _) = tiny(64, config);
    let handle = engine.handle();
    let mut long = GenerationRequest::greedy(prompt(8, 7), 200);
    long.stop_at_eos = false;
    let mut first = handle.submit(long.clone()).unwrap();
    assert!(matches!(first.blocking_next(), Some(Event::Token { .. })));
    let _a = handle.submit(long.clone()).unwrap();
    let _b = handle.submit(long.clone()).unwrap();
    assert!(matches!(
        handle.submit(long),
        Err(SchedulerError::Overloaded { waiting: 2 })
    ));
    engine.shutdown(Duration::ZERO);
}

#[test]
fn the_prefix_cache_hits_and_changes_no_output() {
    let shared = prompt(48, 8);
    let requests = || -> Vec<GenerationRequest> {
        (0..3)
            .map(|i| {
                let mut p = shared.clone();
                p.extend(prompt(5, 20 + i));
                GenerationRequest::greedy(p, 16)
            })
            .collect()
    };
    let (cold, _) = tiny(
        256,
        EngineConfig {
            prefix_caching: false,
            ..EngineConfig::default()
        },
    );
    let reference: Vec<Completion> = requests()
        .into_iter()
        .map(|r| run(&cold.handle(), r))
        .collect();
    cold.shutdown(Duration::from_secs(5));

    let (engine, registry) = tiny(256, EngineConfig::default());
    let out: Vec<Completion> = requests()
        .into_iter()
        .map(|r| run(&engine.handle(), r))
        .collect();
    for (a, b) in reference.iter().zip(&out) {
        assert_eq!(a.choices, b.choices);
    }
    assert_eq!(out[0].usage.cached_tokens, 0);
    assert_eq!(out[1].usage.cached_tokens, 48);
    assert_eq!(out[2].usage.cached_tokens, 48);
    assert_eq!(metric(&registry, "kiln_prefix_cache_hits_total"), 96.0);
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn max_model_len_bounds_the_served_context() {
    let config = EngineConfig {
        max_model_len: Some(32),
        ..EngineConfig::default()
    };
    let (engine, _) = tiny(64, config);
    let handle = engine.handle();
    assert_eq!(handle.model_info().context_length, 32);
    assert!(matches!(
        handle
            .submit(GenerationRequest::greedy(prompt(20, 1), 13))
            .unwrap_err(),
        SchedulerError::ContextLengthExceeded {
            prompt_tokens: 20,
            max_tokens: 13,
            context_length: 32
        }
    ));
    // Without max_tokens a request fills what is left of the served context, not the model's.
    let mut open = GenerationRequest::greedy(prompt(20, 1), 1);
    open.max_tokens = None;
    open.stop_at_eos = false;
    let out = run(&handle, open);
    assert_eq!(out.choices[0].tokens.len(), 12);
    assert_eq!(out.choices[0].finish_reason, Some(FinishReason::Length));
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn impossible_requests_are_refused_before_any_work() {
    let (engine, _) = tiny(8, EngineConfig::default());
    let handle = engine.handle();
    let err = |r: GenerationRequest| handle.submit(r).unwrap_err();
    // Context 256.
    assert!(matches!(
        err(GenerationRequest::greedy(prompt(200, 1), 100)),
        SchedulerError::ContextLengthExceeded {
            prompt_tokens: 200,
            max_tokens: 100,
            context_length: 256
        }
    ));
    // 8 blocks of 16 = 128 positions.
    assert!(matches!(
        err(GenerationRequest::greedy(prompt(100, 1), 100)),
        SchedulerError::ExceedsKvCache { .. }
    ));
    assert_eq!(
        err(GenerationRequest::greedy(vec![], 1)),
        SchedulerError::EmptyPrompt
    );
    assert!(matches!(
        err(GenerationRequest::greedy(vec![1, 600], 1)),
        SchedulerError::BadPromptToken { id: 600, .. }
    ));
    let mut bad_bias = GenerationRequest::greedy(prompt(4, 1), 4);
    bad_bias.sampling.logit_bias = vec![(9999, 1.0)];
    assert!(matches!(
        err(bad_bias),
        SchedulerError::BadLogitBias { id: 9999, .. }
    ));
    // Without max_tokens, a request fills what the cache can hold.
    let mut open = GenerationRequest::greedy(prompt(100, 1), 1);
    open.max_tokens = None;
    open.stop_at_eos = false;
    let c = run(&handle, open);
    assert_eq!(c.choices[0].tokens.len(), 29);
    assert_eq!(c.choices[0].finish_reason, Some(FinishReason::Length));
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn logit_bias_bans_and_forces_tokens() {
    let (engine, _) = tiny(64, EngineConfig::default());
    let handle = engine.handle();
    let plain = run(&handle, GenerationRequest::greedy(prompt(6, 9), 8));
    let first = plain.choices[0].tokens[0];
    let mut banned = GenerationRequest::greedy(prompt(6, 9), 8);
    banned.sampling.logit_bias = vec![(first, -100.0)];
    let c = run(&handle, banned);
    assert!(!c.choices[0].tokens.contains(&first));
    let mut forced = GenerationRequest::greedy(prompt(6, 9), 8);
    forced.sampling.logit_bias = vec![(300, 100.0)];
    forced.stop_at_eos = false;
    assert_eq!(run(&handle, forced).choices[0].tokens, vec![300; 8]);
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn shutdown_refuses_new_work_and_ends_in_flight_streams() {
    let (engine, _) = tiny(64, EngineConfig::default());
    let handle = engine.handle();
    let mut long = GenerationRequest::greedy(prompt(8, 7), 240);
    long.stop_at_eos = false;
    let mut stream = handle.submit(long.clone()).unwrap();
    assert!(matches!(stream.blocking_next(), Some(Event::Token { .. })));
    engine.shutdown(Duration::ZERO);
    assert_eq!(
        handle.submit(long).unwrap_err(),
        SchedulerError::ShuttingDown
    );
    let last = std::iter::from_fn(|| stream.blocking_next()).last();
    assert!(matches!(
        last,
        Some(Event::Error(SchedulerError::ShuttingDown) | Event::Done { .. })
    ));
    assert!(!handle.is_running());
}

/// SmolLM2 through the engine: the four golden prompts at once give transformers' greedy ids.
#[test]
fn smollm2_golden_prompts_concurrently_give_the_reference_greedy_ids() {
    let path = kiln_hub::default_model_path().unwrap();
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask fetch-model`",
        path.display()
    );
    let model = Model::load(
        &path,
        // The served default: f16 K/V. Greedy output must still be transformers' (f32).
        &LoadOptions {
            kv_cache: KvCacheSize::Bytes(64 << 20),
            kv_dtype: DType::F16,
            ..Default::default()
        },
    )
    .unwrap();
    let tokenizer = Arc::new(Tokenizer::from_gguf_path(&path).unwrap());
    let engine = Engine::start(
        model,
        tokenizer.clone(),
        EngineConfig::default(),
        &Registry::new(),
    )
    .unwrap();
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(testdata().join("smollm2/golden_smollm2.json")).unwrap(),
    )
    .unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let cases: Vec<(Vec<u32>, Vec<u32>)> = golden["prompts"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| (ids(&c["token_ids"]), ids(&c["greedy_ids"])))
        .collect();
    let requests = cases
        .iter()
        .map(|(prompt, expected)| {
            let mut r = GenerationRequest::greedy(prompt.clone(), expected.len());
            r.stop_at_eos = false;
            r
        })
        .collect();
    let out = run_all(&engine.handle(), requests);
    for ((_, expected), c) in cases.iter().zip(&out) {
        assert_eq!(&c.choices[0].tokens, expected);
        assert_eq!(
            c.choices[0].text,
            tokenizer.decode(expected, true).unwrap(),
            "streamed text is the decode of the ids"
        );
    }
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn the_default_config_is_the_named_defaults() {
    let c = EngineConfig::default();
    assert_eq!(
        (c.max_batched_tokens, c.max_running, c.max_waiting, c.max_n),
        (
            kiln_scheduler::DEFAULT_MAX_BATCHED_TOKENS,
            kiln_scheduler::DEFAULT_MAX_RUNNING,
            kiln_scheduler::DEFAULT_MAX_WAITING,
            kiln_scheduler::DEFAULT_MAX_N
        )
    );
    assert_eq!(c.prefix_caching, kiln_scheduler::DEFAULT_PREFIX_CACHING);
    assert_eq!(c.max_model_len, None);
}

/// The tiny random Mistral (`testdata/tiny-mistral`: every layer attends within a window of 8)
/// with a pool of `blocks` blocks of 4 positions.
fn tiny_mistral(blocks: usize) -> (Engine, Registry) {
    let options = LoadOptions {
        block_size: 4,
        kv_cache: KvCacheSize::Tokens(blocks * 4),
        kv_dtype: DType::F32,
        ..Default::default()
    };
    let model = Model::load(&testdata().join("tiny-mistral"), &options).unwrap();
    assert_eq!(model.kv_groups().windows, [Some(8)]);
    let registry = Registry::new();
    let engine = Engine::start(model, tokenizer(), EngineConfig::default(), &registry).unwrap();
    (engine, registry)
}

/// Blocks that slid out of every layer's window are given back as sequences advance: the
/// output is transformers' (and each request's alone), and requests that would need 17 blocks
/// each by their end run three at a time in a pool of 24 without a single preemption.
#[test]
fn blocks_outside_the_sliding_window_are_freed_and_change_no_output() {
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(testdata().join("tiny-mistral").join("golden.json")).unwrap(),
    )
    .unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let request = |prompt: Vec<u32>, max_tokens: usize| {
        let mut r = GenerationRequest::greedy(prompt, max_tokens);
        r.stop_at_eos = false;
        r
    };
    let (engine, registry) = tiny_mistral(24);
    let handle = engine.handle();
    let golden_prompt = ids(&golden["greedy_prompt"]);
    let out = run(&handle, request(golden_prompt.clone(), 16));
    assert_eq!(out.choices[0].tokens, ids(&golden["greedy_ids"]));
    assert!(metric(&registry, "kiln_kv_blocks_freed_by_window_total") > 0.0);
    // The prefix cache still serves the golden prompt (its early blocks were given back to
    // the cache, not lost), with the same output.
    let again = run(&handle, request(golden_prompt, 16));
    assert_eq!(again.choices[0].tokens, ids(&golden["greedy_ids"]));
    assert!(metric(&registry, "kiln_prefix_cache_hits_total") >= 20.0);

    // 24-token prompts and 44 generated tokens: 68 positions, 17 blocks each without freeing.
    let prompts: Vec<Vec<u32>> = (0..3).map(|i| prompt(24, i)).collect();
    let alone: Vec<Completion> = prompts
        .iter()
        .map(|p| run(&handle, request(p.clone(), 44)))
        .collect();
    let together = run_all(
        &handle,
        prompts.iter().map(|p| request(p.clone(), 44)).collect(),
    );
    assert_eq!(metric(&registry, "kiln_num_preemptions_total"), 0.0);
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a.choices, b.choices, "request {i}");
        assert_eq!(b.choices[0].tokens.len(), 44);
    }
    wait_for("all blocks to be free", || {
        metric(&registry, "kiln_kv_cache_usage_ratio") == 0.0
    });
    engine.shutdown(Duration::from_secs(5));
}

/// Gemma 3 270M (real Q4_K_M GGUF: five sliding layers of window 512 to each global one, in
/// six KV groups of three layers) through the engine: the golden prompts run concurrently give
/// transformers' greedy ids (the 958-token one prefilled in chunks across the window) while
/// the sliding groups give back the pages that slid out, and a prefix hit (the global group's
/// pages, the sliding groups' inside the window) with two choices sharing the prompt changes
/// no output.
#[test]
fn gemma3_golden_prompts_concurrently_and_from_the_prefix_cache() {
    let path = kiln_hub::model_path(&kiln_hub::GEMMA3_270M).unwrap();
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask fetch-model --model gemma3-270m`",
        path.display()
    );
    let options = LoadOptions {
        block_size: 16,
        kv_cache: KvCacheSize::Tokens(512 * 16),
        kv_dtype: DType::F32,
        ..Default::default()
    };
    let model = Model::load(&path, &options).unwrap();
    let tokenizer = Arc::new(Tokenizer::from_gguf_path(&path).unwrap());
    let registry = Registry::new();
    let config = EngineConfig {
        // Chunks of 256: the long prompt's later chunks start past the window.
        max_batched_tokens: 256,
        ..EngineConfig::default()
    };
    let engine = Engine::start(model, tokenizer, config.clone(), &registry).unwrap();
    let handle = engine.handle();

    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(testdata().join("gemma3").join("golden_gemma3.json")).unwrap(),
    )
    .unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let names = ["english", "code", "unicode", "long_sliding_window"];
    let request = |name: &str, n: usize| {
        let mut r = GenerationRequest::greedy(ids(&golden[name]["token_ids"]), 32);
        r.stop_at_eos = false;
        r.n = n;
        r
    };
    let out = run_all(&handle, names.iter().map(|n| request(n, 1)).collect());
    for (name, c) in names.iter().zip(&out) {
        assert_eq!(
            c.choices[0].tokens,
            ids(&golden[name]["greedy_ids"]),
            "{name}"
        );
    }
    // 958 + 32 positions: each of the five sliding groups needs only the last 512 of them
    // and gave back its pages of the 29 blocks before.
    let freed = metric(&registry, "kiln_kv_blocks_freed_by_window_total");
    assert!(freed >= 5.0 * 29.0, "freed {freed}");
    let again = run(&handle, request("long_sliding_window", 2));
    for choice in &again.choices {
        assert_eq!(
            choice.tokens,
            ids(&golden["long_sliding_window"]["greedy_ids"])
        );
    }
    assert!(metric(&registry, "kiln_prefix_cache_hits_total") >= 900.0);
    engine.shutdown(Duration::from_secs(5));

    // 990 positions in 62 blocks would take 372 pages with every group keeping every one; the
    // global group needs 62, each sliding group at most 50 at once (its window and a chunk):
    // 330 pages serve the long prompt, without a preemption, with the same output.
    let small = LoadOptions {
        kv_cache: KvCacheSize::Tokens(55 * 16),
        ..options
    };
    let model = Model::load(&path, &small).unwrap();
    assert_eq!(model.num_blocks(), 330);
    let tokenizer = Arc::new(Tokenizer::from_gguf_path(&path).unwrap());
    let registry = Registry::new();
    let engine = Engine::start(model, tokenizer, config, &registry).unwrap();
    let long = run(&engine.handle(), request("long_sliding_window", 1));
    assert_eq!(
        long.choices[0].tokens,
        ids(&golden["long_sliding_window"]["greedy_ids"])
    );
    assert_eq!(metric(&registry, "kiln_num_preemptions_total"), 0.0);
    // What it cannot hold is refused at once, not left waiting: 62 + 5 x 50 pages fit in 330
    // up to 80 blocks of positions (1,280); 958 + 400 do not.
    let mut too_long = request("long_sliding_window", 1);
    too_long.max_tokens = Some(400);
    match engine.handle().submit(too_long) {
        Err(SchedulerError::ExceedsKvCache {
            capacity_tokens, ..
        }) => assert_eq!(capacity_tokens, 1280),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a request the pool cannot hold was accepted"),
    }
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn engines_of_two_models_share_a_registry_by_their_model_label() {
    let registry = Registry::new();
    let options = LoadOptions {
        kv_cache: KvCacheSize::Tokens(64 * 16),
        ..Default::default()
    };
    let start = |name: &str| {
        let model = Model::load(&testdata().join("tiny-llama"), &options).unwrap();
        let config = EngineConfig {
            model_name: name.into(),
            ..EngineConfig::default()
        };
        Engine::start(model, tokenizer(), config, &registry).unwrap()
    };
    let a = start("model-a");
    let b = start("model-b");
    // The same name twice is refused: its series would collide.
    let model = Model::load(&testdata().join("tiny-llama"), &options).unwrap();
    let twice = EngineConfig {
        model_name: "model-a".into(),
        ..EngineConfig::default()
    };
    assert!(Engine::start(model, tokenizer(), twice, &registry).is_err());

    let done = run(&a.handle(), GenerationRequest::greedy(prompt(5, 1), 7));
    let by_model = |name: &str| -> Vec<(String, f64)> {
        let family = registry
            .gather()
            .into_iter()
            .find(|f| f.name() == name)
            .unwrap_or_else(|| panic!("no metric {name}"));
        family
            .get_metric()
            .iter()
            .map(|m| {
                let label = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "model")
                    .map(|l| l.value().to_string())
                    .unwrap_or_default();
                (label, m.get_counter().get_value())
            })
            .collect()
    };
    assert_eq!(
        by_model("kiln_generation_tokens_total"),
        vec![
            ("model-a".to_string(), done.usage.completion_tokens as f64),
            ("model-b".to_string(), 0.0)
        ]
    );
    a.shutdown(Duration::from_secs(5));
    b.shutdown(Duration::from_secs(5));
}
