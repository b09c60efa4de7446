//! The OpenAPI 3.1 document of Kiln's HTTP API, with request and response schemas generated
//! from this crate's types (JSON Schema 2020-12, which OpenAPI 3.1 uses as is).
//!
//! The request schemas state what validation accepts, limits included, so a tool that generates
//! requests from them (schemathesis) gets requests that are served, and the response schemas
//! allow every `null` the server writes.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::chat::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest};
use crate::completions::{Completion, CompletionRequest};
use crate::error::ErrorEnvelope;
use crate::limits::Limits;
use crate::models::{Health, Model, ModelList};
use crate::schema::{Api, apply_request_limits, chat_message_for};

/// Where schemas live in the document.
const SCHEMAS: &str = "/components/schemas";

/// The document under the default [`Limits`].
pub fn openapi() -> Value {
    openapi_for(&Limits::default())
}

/// The document for a server running with `limits` (its `n`, `best_of`, token id and
/// `logit_bias` bounds follow them).
pub fn openapi_for(limits: &Limits) -> Value {
    let mut schemas = Map::new();
    // Requests are described as they are read and responses as they are written: the two
    // differ for optional fields (a response always writes `null`, a request may omit it).
    let mut requests = generator(SchemaSettings::draft2020_12().for_deserialize());
    let chat_request = schema_ref::<ChatCompletionRequest>(&mut requests);
    let completion_request = schema_ref::<CompletionRequest>(&mut requests);
    schemas.extend(requests.take_definitions(true));

    let mut responses = generator(SchemaSettings::draft2020_12().for_serialize());
    let refs = ResponseRefs {
        chat: schema_ref::<ChatCompletion>(&mut responses),
        chunk: schema_ref::<ChatCompletionChunk>(&mut responses),
        completion: schema_ref::<Completion>(&mut responses),
        model: schema_ref::<Model>(&mut responses),
        model_list: schema_ref::<ModelList>(&mut responses),
        error: schema_ref::<ErrorEnvelope>(&mut responses),
        health: schema_ref::<Health>(&mut responses),
    };
    for (name, schema) in responses.take_definitions(true) {
        // The two generators share no types today; if one ever appears in both, it must read and
        // write the same way to share one name.
        match schemas.get(&name) {
            Some(existing) if existing != &schema => {
                schemas.insert(format!("{name}Response"), schema);
            }
            _ => {
                schemas.insert(name, schema);
            }
        }
    }
    let image_url = json!({ "$ref": format!("#{SCHEMAS}/ImageUrl") });
    schemas.insert(
        "ChatMessage".to_owned(),
        chat_message_for(Some(&image_url), limits.max_images),
    );
    if limits.max_images == 0 {
        schemas.remove("ImageUrl");
        schemas.remove("ImageDetail");
    }
    for (name, api) in [
        ("ChatCompletionRequest", Api::Chat),
        ("CompletionRequest", Api::Completions),
    ] {
        if let Some(Value::Object(schema)) = schemas.get_mut(name) {
            apply_request_limits(schema, limits, api);
        }
    }

    let mut paths = Map::new();
    for prefix in ["/v1", "/v1/ai/{deployment}"] {
        let deployment = prefix.contains("{deployment}");
        paths.insert(
            format!("{prefix}/chat/completions"),
            json!({
                "post": generate_operation(
                    &operation_id("createChatCompletion", deployment),
                    "Creates a chat completion",
                    &chat_request,
                    &refs.chat,
                    &sse_event("ChatCompletionChunk", &refs.chunk, &refs.error),
                    deployment,
                )
            }),
        );
        paths.insert(
            format!("{prefix}/completions"),
            json!({
                "post": generate_operation(
                    &operation_id("createCompletion", deployment),
                    "Creates a completion (legacy API)",
                    &completion_request,
                    &refs.completion,
                    &sse_event("Completion", &refs.completion, &refs.error),
                    deployment,
                )
            }),
        );
        let prefix_parameters = || deployment.then(deployment_parameter).into_iter();
        paths.insert(
            format!("{prefix}/models"),
            json!({
                "get": get_operation(
                    &operation_id("listModels", deployment),
                    "Lists the served models",
                    &refs.model_list,
                    prefix_parameters().collect(),
                )
            }),
        );
        paths.insert(
            format!("{prefix}/models/{{model}}"),
            json!({
                "get": get_operation(
                    &operation_id("retrieveModel", deployment),
                    "Describes one served model",
                    &refs.model,
                    prefix_parameters()
                        .chain([json!({
                            "name": "model",
                            "in": "path",
                            "required": true,
                            "description": "The model's id.",
                            "schema": { "type": "string" }
                        })])
                        .collect(),
                )
            }),
        );
    }
    paths.insert(
        "/health".to_owned(),
        json!({
            "get": {
                "operationId": "health",
                "summary": "Whether the server can take requests",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The model is loaded: `{\"status\": \"ok\"}`.",
                        "content": { "application/json": { "schema": refs.health } }
                    },
                    "503": {
                        "description": "The model is still loading: `{\"status\": \"loading\"}`.",
                        "content": { "application/json": { "schema": refs.health } }
                    }
                }
            }
        }),
    );
    paths.insert(
        "/openapi.json".to_owned(),
        json!({
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document of the server.",
                        "content": { "application/json": { "schema": { "type": "object" } } }
                    }
                }
            }
        }),
    );
    paths.insert(
        "/metrics".to_owned(),
        json!({
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Metrics in the Prometheus text exposition format.",
                        "content": { "text/plain": { "schema": { "type": "string" } } }
                    }
                }
            }
        }),
    );

    let error_response = |description: &str| {
        json!({
            "description": description,
            "content": { "application/json": { "schema": refs.error } }
        })
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Kiln",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "An OpenAI-compatible LLM inference server.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" }
        },
        "security": [{ "bearerAuth": [] }],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The server's API key. A server started without one accepts any request."
                }
            },
            "responses": {
                "BadRequest": error_response("The request is invalid (`invalid_request_error`); `param` names the field."),
                "Unauthorized": error_response("The API key is missing or wrong (`authentication_error`)."),
                "NotFound": error_response("No such model or route (`not_found_error`)."),
                "PayloadTooLarge": error_response("The request body is too large (`invalid_request_error`)."),
                "UnsupportedMediaType": error_response("The request body is not `application/json` (`invalid_request_error`, `unsupported_media_type`)."),
                "TooManyRequests": error_response("The server is at capacity; retry later (`rate_limit_error`)."),
                "InternalError": error_response("The server failed (`server_error`)."),
                "ServiceUnavailable": error_response("The model is still loading, or the server is shutting down (`server_error`)."),
                "GatewayTimeout": error_response("A non-streamed request ran past the server's time limit (`server_error`).")
            }
        }
    })
}

struct ResponseRefs {
    chat: Value,
    chunk: Value,
    completion: Value,
    model: Value,
    model_list: Value,
    error: Value,
    health: Value,
}

fn generator(settings: SchemaSettings) -> SchemaGenerator {
    settings
        .with(|s| {
            s.definitions_path = SCHEMAS.into();
            s.meta_schema = None;
        })
        .into_generator()
}

fn schema_ref<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

fn operation_id(base: &str, deployment: bool) -> String {
    if deployment {
        format!("{base}ForDeployment")
    } else {
        base.to_owned()
    }
}

fn deployment_parameter() -> Value {
    json!({
        "name": "deployment",
        "in": "path",
        "required": true,
        "description": "A deployment name, for clients that put the model in the path (Azure style).",
        "schema": { "type": "string" }
    })
}

/// The error statuses every `/v1` operation may answer, and the generating ones (which take a
/// JSON body) also 415 and 504.
fn error_responses(generates: bool) -> Map<String, Value> {
    let timeout = generates.then_some(("504", "GatewayTimeout"));
    let media = generates.then_some(("415", "UnsupportedMediaType"));
    [
        ("400", "BadRequest"),
        ("401", "Unauthorized"),
        ("404", "NotFound"),
        ("413", "PayloadTooLarge"),
        ("429", "TooManyRequests"),
        ("500", "InternalError"),
        ("503", "ServiceUnavailable"),
    ]
    .into_iter()
    .chain(media)
    .chain(timeout)
    .map(|(status, name)| {
        (
            status.to_owned(),
            json!({ "$ref": format!("#/components/responses/{name}") }),
        )
    })
    .collect()
}

/// A POST that generates text: JSON in, JSON out, or server-sent events when `stream` is true.
/// One server-sent event of a stream (OpenAPI 3.1 reads an event-stream `schema` as describing
/// each event): `data` is a `chunk` as JSON, an error envelope if generation fails mid-stream, or
/// `[DONE]` last.
fn sse_event(chunk_name: &str, chunk: &Value, error: &Value) -> Value {
    json!({
        "type": "object",
        "description": format!(
            "One server-sent event: `data` is a `{chunk_name}` as JSON (an error envelope if generation fails mid-stream); the last event's `data` is `[DONE]`."
        ),
        "required": ["data"],
        "properties": {
            "data": {
                "anyOf": [
                    { "const": "[DONE]" },
                    {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": { "anyOf": [chunk, error] }
                    }
                ]
            }
        }
    })
}

fn generate_operation(
    id: &str,
    summary: &str,
    request: &Value,
    response: &Value,
    stream_event: &Value,
    deployment: bool,
) -> Value {
    let mut responses = Map::new();
    responses.insert(
        "200".to_owned(),
        json!({
            "description": "The completion, as one JSON object, or as a stream of events when `stream` is true.",
            "content": {
                "application/json": { "schema": response },
                "text/event-stream": { "schema": stream_event }
            }
        }),
    );
    responses.extend(error_responses(true));
    let mut operation = json!({
        "operationId": id,
        "summary": summary,
        "requestBody": {
            "required": true,
            "content": { "application/json": { "schema": request } }
        },
        "responses": responses
    });
    if deployment && let Value::Object(op) = &mut operation {
        op.insert("parameters".into(), json!([deployment_parameter()]));
    }
    operation
}

fn get_operation(id: &str, summary: &str, response: &Value, parameters: Vec<Value>) -> Value {
    let mut responses = Map::new();
    responses.insert(
        "200".to_owned(),
        json!({
            "description": summary,
            "content": { "application/json": { "schema": response } }
        }),
    );
    responses.extend(error_responses(false));
    let mut operation = json!({
        "operationId": id,
        "summary": summary,
        "responses": responses
    });
    if !parameters.is_empty()
        && let Value::Object(op) = &mut operation
    {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    operation
}
