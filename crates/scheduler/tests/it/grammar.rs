//! Constrained decoding through the engine, on the tiny random Llama (SmolLM2's vocabulary):
//! whatever a random model would say, every sampled choice is JSON valid against its schema
//! and ends when the JSON does; the others in the batch are untouched; logprobs are those of
//! the masked distribution; schemas the engine cannot enforce are refused.

use std::time::Duration;

use kiln_scheduler::{
    EngineConfig, FinishReason, GenerationRequest, OutputFormat, SamplingParams, SchedulerError,
};
use serde_json::{Value, json};

use crate::common::{prompt, run, run_all, tiny, tokenizer};

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "tags": {"type": "array", "items": {"enum": ["a", "bb", "ccc"]}, "maxItems": 3},
            "ok": {"type": "boolean"},
            "nick": {"type": ["string", "null"], "maxLength": 4}
        },
        "required": ["name", "age", "tags", "ok"],
        "additionalProperties": false
    })
}

/// Checks `v` against [`person_schema`] by hand (the test must not trust the engine's own
/// validator).
fn is_person(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    let keys_ok = o
        .keys()
        .all(|k| ["name", "age", "tags", "ok", "nick"].contains(&k.as_str()));
    let name_ok = o["name"].as_str().is_some_and(|s| s.chars().count() <= 6);
    let age_ok = o["age"].as_i64().is_some_and(|a| (0..=120).contains(&a));
    let tags_ok = o["tags"].as_array().is_some_and(|t| {
        t.len() <= 3
            && t.iter()
                .all(|x| ["a", "bb", "ccc"].contains(&x.as_str().unwrap_or("")))
    });
    let ok_ok = o["ok"].is_boolean();
    let nick_ok = o
        .get("nick")
        .is_none_or(|n| n.is_null() || n.as_str().is_some_and(|s| s.chars().count() <= 4));
    keys_ok && name_ok && age_ok && tags_ok && ok_ok && nick_ok
}

fn sampled(seed: u64, n: usize) -> GenerationRequest {
    GenerationRequest {
        sampling: SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            ..SamplingParams::default()
        },
        n,
        ..GenerationRequest::greedy(prompt(12, seed as usize), 200)
    }
}

#[test]
fn every_sampled_choice_is_valid_json_for_its_schema() {
    let (engine, _) = tiny(512, EngineConfig::default());
    let handle = engine.handle();
    let grammar = handle
        .compile(&OutputFormat::JsonSchema(person_schema()), "schema")
        .unwrap();
    let mut requests: Vec<GenerationRequest> = (0..20)
        .map(|seed| GenerationRequest {
            grammar: Some(grammar.clone()),
            ..sampled(seed, 1)
        })
        .collect();
    // n > 1: each choice has its own matcher.
    requests.push(GenerationRequest {
        grammar: Some(grammar.clone()),
        ..sampled(99, 3)
    });
    let out = run_all(&handle, requests);
    let mut texts = Vec::new();
    for (i, c) in out.iter().flat_map(|c| &c.choices).enumerate() {
        assert_eq!(
            c.finish_reason,
            Some(FinishReason::Stop),
            "choice {i}: {}",
            c.text
        );
        let v: Value = serde_json::from_str(&c.text)
            .unwrap_or_else(|e| panic!("choice {i} is not JSON ({e}): {}", c.text));
        assert!(is_person(&v), "choice {i} breaks the schema: {}", c.text);
        texts.push(c.text.clone());
    }
    assert_eq!(texts.len(), 23);
    // Sampled, not one forced answer.
    texts.sort();
    texts.dedup();
    assert!(texts.len() > 10, "{texts:?}");
    // A seed replays exactly, alone as in the batch.
    let again = run(
        &handle,
        GenerationRequest {
            grammar: Some(grammar),
            ..sampled(3, 1)
        },
    );
    assert_eq!(again.choices, out[3].choices);
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn the_grammar_ends_the_choice_even_without_eos_and_leaves_the_batch_alone() {
    let (engine, _) = tiny(512, EngineConfig::default());
    let handle = engine.handle();
    let plain: Vec<GenerationRequest> = (0..6)
        .map(|i| GenerationRequest::greedy(prompt(5 + i * 7, i), 30))
        .collect();
    let alone = run_all(&handle, plain.clone());
    let object = handle.compile(&OutputFormat::JsonObject, "rf").unwrap();
    let mut mixed = plain;
    for i in 0..4 {
        mixed.insert(
            i * 2,
            GenerationRequest {
                grammar: Some(object.clone()),
                // Only the grammar can end these.
                stop_at_eos: false,
                ..sampled(i as u64, 1)
            },
        );
    }
    let together = run_all(&handle, mixed);
    let (constrained, others): (Vec<_>, Vec<_>) = together
        .iter()
        .enumerate()
        .partition(|(i, _)| *i % 2 == 0 && *i < 8);
    for (i, c) in constrained {
        let text = &c.choices[0].text;
        assert_eq!(
            c.choices[0].finish_reason,
            Some(FinishReason::Stop),
            "{i}: {text}"
        );
        assert!(
            serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object()),
            "{text}"
        );
    }
    for ((_, t), a) in others.into_iter().zip(&alone) {
        assert_eq!(t.choices, a.choices);
    }
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn logprobs_are_those_of_the_masked_distribution() {
    let (engine, _) = tiny(256, EngineConfig::default());
    let handle = engine.handle();
    let grammar = handle
        .compile(
            &OutputFormat::JsonSchema(json!({"enum": ["alpha", "beta", "gamma"]})),
            "rf",
        )
        .unwrap();
    let c = run(
        &handle,
        GenerationRequest {
            grammar: Some(grammar),
            logprobs: Some(5),
            ..GenerationRequest::greedy(prompt(9, 1), 20)
        },
    );
    let choice = &c.choices[0];
    assert!(
        ["\"alpha\"", "\"beta\"", "\"gamma\""].contains(&choice.text.as_str()),
        "{}",
        choice.text
    );
    let tok = tokenizer();
    let first = &choice.logprobs[0];
    // Every alternative the first step offers starts a quoted word; their probabilities,
    // renormalised over what the grammar allows, add up to at most 1 (and the greedy choice
    // is the best of them).
    let total: f32 = first.top.iter().map(|t| t.logprob.exp()).sum();
    assert!(total <= 1.0 + 1e-4, "{total}");
    for t in first.top.iter().filter(|t| t.logprob.is_finite()) {
        let text = tok.decode(&[t.id], false).unwrap();
        assert!(text.starts_with('"'), "{text:?} is not allowed first");
    }
    assert_eq!(first.top[0].id, first.chosen.id);
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn schemas_that_cannot_be_enforced_are_refused_naming_the_keyword() {
    let (engine, _) = tiny(16, EngineConfig::default());
    let handle = engine.handle();
    let refuse = |schema: Value| match handle.compile(&OutputFormat::JsonSchema(schema), "p") {
        Err(SchedulerError::InvalidParameter { param, message }) => {
            assert_eq!(param, "p");
            message
        }
        other => panic!("{other:?}"),
    };
    assert!(refuse(json!({"type": "array", "uniqueItems": true})).contains("uniqueItems"));
    for keyword in ["not", "contains", "propertyNames"] {
        let message = refuse(json!({"type": "object", keyword: {"type": "string"}}));
        assert!(message.contains(keyword), "{message}");
    }
    assert!(refuse(json!({"type": "integer", "minimum": 5, "maximum": 3})).contains("minimum"));
    let regex = refuse(json!({"type": "string", "pattern": "[unclosed"}));
    assert!(regex.contains("regex") && !regex.contains('\n'), "{regex}");
    engine.shutdown(Duration::from_secs(5));
}
