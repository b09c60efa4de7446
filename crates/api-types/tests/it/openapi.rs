//! The OpenAPI document: version, paths, error responses, security, streaming content types,
//! limits, and that every `$ref` in it resolves inside it.

use kiln_api_types::{Limits, openapi, openapi_for};
use serde_json::Value;

fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref" {
                    out.push(v.as_str().expect("a $ref is a string"));
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn document_basics() {
    let doc = openapi();
    assert!(doc.is_object());
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Kiln");
    assert!(doc["info"]["version"].is_string());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"][0]["bearerAuth"], serde_json::json!([]));
}

#[test]
fn every_path_is_there() {
    let doc = openapi();
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/chat/completions", "post"),
        ("/v1/completions", "post"),
        ("/v1/models", "get"),
        ("/v1/models/{model}", "get"),
        ("/v1/ai/{deployment}/chat/completions", "post"),
        ("/v1/ai/{deployment}/completions", "post"),
        ("/v1/ai/{deployment}/models", "get"),
        ("/v1/ai/{deployment}/models/{model}", "get"),
        ("/health", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ] {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} missing");
        assert!(
            op["responses"]["200"].is_object(),
            "{method} {path} has no 200"
        );
        for param in path.split('{').skip(1) {
            let name = param.split('}').next().unwrap();
            let declared = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true);
            assert!(declared, "{method} {path} does not declare `{name}`");
        }
    }
    assert_eq!(paths.len(), 11);
}

#[test]
fn error_responses_use_the_envelope() {
    let doc = openapi();
    for path in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/ai/{deployment}/chat/completions",
    ] {
        let responses = &doc["paths"][path]["post"]["responses"];
        for status in ["400", "401", "404", "413", "429", "500", "503", "504"] {
            let reference = responses[status]["$ref"].as_str().unwrap();
            let name = reference.strip_prefix("#/components/responses/").unwrap();
            let schema =
                &doc["components"]["responses"][name]["content"]["application/json"]["schema"];
            assert_eq!(
                schema["$ref"], "#/components/schemas/ErrorEnvelope",
                "{path} {status}"
            );
        }
    }
    let body = &doc["components"]["schemas"]["ErrorBody"];
    let required: Vec<_> = body["required"].as_array().unwrap().iter().collect();
    for field in ["message", "type", "param", "code"] {
        assert!(required.iter().any(|r| *r == field), "{field} not required");
    }
}

#[test]
fn streaming_endpoints_offer_event_streams() {
    let doc = openapi();
    for path in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/ai/{deployment}/completions",
    ] {
        let content = &doc["paths"][path]["post"]["responses"]["200"]["content"];
        assert!(
            content["application/json"]["schema"]["$ref"].is_string(),
            "{path}"
        );
        // OpenAPI 3.1: an event stream's schema describes each event; `data` carries the chunk
        // as JSON (checked by schemathesis through contentSchema), or `[DONE]`.
        let event = &content["text/event-stream"]["schema"];
        assert_eq!(event["required"], serde_json::json!(["data"]), "{path}");
        let data = &event["properties"]["data"]["anyOf"];
        assert_eq!(data[0]["const"], "[DONE]", "{path}");
        assert_eq!(data[1]["contentMediaType"], "application/json", "{path}");
        let chunk = if path.ends_with("chat/completions") {
            "#/components/schemas/ChatCompletionChunk"
        } else {
            "#/components/schemas/Completion"
        };
        assert_eq!(
            data[1]["contentSchema"]["anyOf"][0]["$ref"], chunk,
            "{path}"
        );
    }
    let health = &doc["paths"]["/health"]["get"]["responses"];
    for status in ["200", "503"] {
        let schema = &health[status]["content"]["application/json"]["schema"];
        assert_eq!(schema["$ref"], "#/components/schemas/Health", "{status}");
    }
    let metrics = &doc["paths"]["/metrics"]["get"];
    assert!(metrics["responses"]["200"]["content"]["text/plain"].is_object());
    assert_eq!(metrics["security"], serde_json::json!([]));
}

#[test]
fn every_ref_resolves() {
    for doc in [
        openapi(),
        openapi_for(&Limits {
            max_images: 0,
            ..Limits::default()
        }),
    ] {
        refs_resolve(&doc);
    }
}

#[test]
fn text_only_servers_document_no_images() {
    let doc = openapi_for(&Limits {
        max_images: 0,
        ..Limits::default()
    });
    let schemas = &doc["components"]["schemas"];
    assert!(schemas.get("ImageUrl").is_none());
    assert!(!doc.to_string().contains("image_url"));
    let roles: Vec<&str> = schemas["ChatMessage"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["properties"]["role"]["enum"].as_array().unwrap())
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "system", "developer", "assistant", "tool"]);
    let with_images = openapi();
    let description = with_images["components"]["schemas"]["ChatMessage"]["description"]
        .as_str()
        .unwrap();
    assert!(description.contains("at most 12"), "{description}");
}

fn refs_resolve(doc: &Value) {
    let mut refs = Vec::new();
    collect_refs(doc, &mut refs);
    assert!(refs.len() > 20, "suspiciously few $refs: {}", refs.len());
    for reference in refs {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference} is not local"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{reference} does not resolve"
        );
    }
    assert!(!doc.to_string().contains("$defs"));
}

#[test]
fn request_schemas_state_the_constraints() {
    let doc = openapi();
    let chat = &doc["components"]["schemas"]["ChatCompletionRequest"];
    assert_eq!(chat["additionalProperties"], false);
    assert_eq!(chat["required"], serde_json::json!(["messages"]));
    let props = &chat["properties"];
    assert_eq!(props["temperature"]["minimum"], 0.0);
    assert_eq!(props["temperature"]["maximum"], 2.0);
    assert_eq!(props["top_p"]["maximum"], 1.0);
    assert_eq!(props["n"]["maximum"], 16);
    assert_eq!(props["top_logprobs"]["maximum"], 20);
    assert_eq!(props["messages"]["minItems"], 1);
    assert_eq!(props["tools"]["maxItems"], 128);
    assert_eq!(props["tool_choice"]["anyOf"][0]["enum"][2], "required");
    let stop = &doc["components"]["schemas"]["Stop"];
    assert_eq!(stop["anyOf"][1]["maxItems"], 4);
    assert_eq!(
        doc["components"]["schemas"]["StreamOptions"]["additionalProperties"],
        false
    );

    let completion = &doc["components"]["schemas"]["CompletionRequest"];
    assert_eq!(completion["required"], serde_json::json!(["prompt"]));
    assert_eq!(completion["properties"]["logprobs"]["maximum"], 5);
    assert_eq!(completion["properties"]["suffix"]["type"], "null");
    // One branch per stream_options case × (no best_of, n = 1, n = 2..=16).
    assert_eq!(completion["anyOf"].as_array().unwrap().len(), 2 * 17);
}

#[test]
fn limits_shape_the_document() {
    let limits = Limits {
        max_n: 4,
        max_images: 2,
        vocab_size: Some(49152),
    };
    let doc = openapi_for(&limits);
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["ChatCompletionRequest"]["properties"]["n"]["maximum"],
        4
    );
    assert_eq!(
        schemas["CompletionRequest"]["properties"]["n"]["maximum"],
        4
    );
    assert_eq!(
        schemas["CompletionRequest"]["properties"]["best_of"]["maximum"],
        4
    );
    assert_eq!(
        schemas["CompletionRequest"]["anyOf"]
            .as_array()
            .unwrap()
            .len(),
        2 * 5
    );
    let prompt = &schemas["CompletionRequest"]["properties"]["prompt"];
    assert_eq!(prompt["anyOf"][2]["items"]["maximum"], 49151);
    assert_eq!(prompt["anyOf"][3]["items"]["items"]["maximum"], 49151);
    let keys =
        schemas["ChatCompletionRequest"]["properties"]["logit_bias"]["propertyNames"]["pattern"]
            .as_str()
            .unwrap();
    assert!(keys.ends_with("|49151)$"), "{keys}");
    assert!(
        prompt["description"].is_string(),
        "rewriting kept the description"
    );
}
