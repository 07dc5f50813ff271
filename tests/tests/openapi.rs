//! The OpenAPI document (`docs/openapi.json`) against the real server: the server serves
//! it, every documented operation answers one of its documented statuses, and what the
//! server really sends (events accepted, decided, listed, refused) validates against the
//! documented schemas. A field added to a response without the document fails here.

use std::path::PathBuf;

use flywheel_tests::fixtures;
use flywheel_tests::plugins;
use flywheel_tests::server::{Options, Server, StagedPlugin, examples_without_sampling};
use serde_json::{Value, json};

const INGEST: &str = "ingest-token-0123456789";
const REVIEWER: &str = "reviewer-token-0123456789";
const ADMIN: &str = "admin-token-0123456789abc";

fn document() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let text = std::fs::read_to_string(&path).expect("read docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// Checks bodies against the document's response schemas.
struct Spec {
    doc: Value,
}

impl Spec {
    /// The schema documented for `method path` answering `status`.
    fn response_schema(&self, method: &str, path: &str, status: u16) -> Value {
        let response = &self.doc["paths"][path][method]["responses"][status.to_string()];
        assert!(
            !response.is_null(),
            "{method} {path} answered {status}, which is not documented"
        );
        response["content"]["application/json"]["schema"].clone()
    }

    /// Validate `body` as the documented answer of `method path` with `status`.
    fn check(&self, method: &str, path: &str, status: u16, body: &Value) {
        let mut schema = self.response_schema(method, path, status);
        assert!(
            !schema.is_null(),
            "{method} {path} {status} has no JSON schema"
        );
        // The component schemas are referenced as `#/components/...`: give them the
        // same place in the schema being compiled.
        schema["components"] = self.doc["components"].clone();
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&schema)
            .unwrap_or_else(|e| panic!("the schema of {method} {path} {status} compiles: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status} does not match the document:\n{}\nbody: {body:#}",
            errors.join("\n")
        );
    }
}

fn server() -> Server {
    Server::start(Options {
        // hostile-error fails every call (fail-open): calls with an error are documented.
        plugins: [
            examples_without_sampling(),
            vec![StagedPlugin::from(plugins::HOSTILE_ERROR)],
        ]
        .concat(),
        config: format!(
            "[limits]\nmax-body-bytes = 262144\n\
             [[tokens]]\nname = \"app\"\nrole = \"ingest\"\ntoken = \"{INGEST}\"\n\
             [[tokens]]\nname = \"expert\"\nrole = \"reviewer\"\ntoken = \"{REVIEWER}\"\n\
             [[tokens]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{ADMIN}\"\n"
        ),
        ..Options::default()
    })
    .with_token(INGEST)
}

#[test]
fn the_server_serves_the_document_and_it_is_openapi_3_1() {
    let server = server();
    let (status, served) = server.get_as("/v1/openapi.json", None);
    assert_eq!(status, 200);
    let doc = document();
    assert_eq!(served, doc, "the binary serves docs/openapi.json as built");
    assert_eq!(doc["openapi"], "3.1.0");
    // Every `$ref` points at something that exists.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').expect("local refs only");
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
}

#[test]
fn every_documented_operation_answers_a_documented_status() {
    let server = server();
    let doc = document();
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/v1/events") && paths.contains_key("/v1/events/{id}"));
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            let url = server.url(&path.replace("{id}", "no-such-event"));
            let request = match method.as_str() {
                "get" => server.client.get(url),
                // An empty body: the answer must still be a documented error.
                "post" => server.client.post(url),
                "delete" => server.client.delete(url),
                other => panic!("{other} {path}: extend this test"),
            };
            let response = request.bearer_auth(INGEST).send().expect("request");
            let status = response.status().as_u16();
            let responses = &item[method]["responses"];
            assert!(
                responses.get(status.to_string()).is_some(),
                "{method} {path} answered {status}; documented: {:?}",
                responses.as_object().map(|r| r.keys().collect::<Vec<_>>())
            );
        }
    }
}

#[test]
fn real_answers_match_the_documented_schemas() {
    let server = server();
    let spec = Spec { doc: document() };

    // Single events: accepted, duplicate, decided now.
    let event = fixtures::json("event_thumbs_down_ungrounded");
    let (status, body) = server.post("/v1/events", &event);
    spec.check("post", "/v1/events", status, &body);
    let (status, body) = server.post("/v1/events?wait=true", &event);
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")));
    spec.check("post", "/v1/events", status, &body);
    let (status, body) = server.post(
        "/v1/events?wait=true",
        &fixtures::json("event_pii_email_card"),
    );
    assert_eq!(body["outcome"]["route"]["action"], "review", "{body}");
    spec.check("post", "/v1/events", status, &body);

    // Batches: per item, with an invalid one; decided now; none valid.
    let correction = json!({
        "id": "with-correction", "input": "q", "output": "a",
        "feedback": {"type": "correction", "text": "the better answer"},
        "metadata": {"app": "helpdesk", "attempt": 2, "beta": true}
    });
    let batch = json!({"events": [
        fixtures::json("event_rating_four_of_five"),
        {"input": "q", "output": "a", "feedback": {"type": "rating", "value": 9, "scale": 5}},
        correction,
    ]});
    let (status, body) = server.post("/v1/events", &batch);
    assert_eq!((status, body["invalid"].as_u64()), (202, Some(1)), "{body}");
    spec.check("post", "/v1/events", status, &body);
    let (status, body) = server.post(
        "/v1/events?wait=true",
        &json!({"events": [fixtures::json("event_clarification"), fixtures::json("event_medical_advice")]}),
    );
    assert_eq!(status, 200, "{body}");
    spec.check("post", "/v1/events", status, &body);
    let (status, body) = server.post("/v1/events", &json!({"events": [{"input": 1}]}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_batch"))
    );
    spec.check("post", "/v1/events", status, &body);

    // Each class of refusal.
    for bad in [
        json!({"output": "a", "feedback": {"type": "none"}}),
        json!({"input": "q", "output": "a", "feedback": {"type": "stars"}}),
        json!({"input": "q", "output": "a", "feedback": {"type": "none"}, "colour": "red"}),
    ] {
        let (status, body) = server.post("/v1/events", &bad);
        assert_eq!(status, 400, "{body}");
        spec.check("post", "/v1/events", status, &body);
    }
    let (status, body) = server.post_raw("/v1/events", b"{not json".to_vec(), "application/json");
    spec.check("post", "/v1/events", status, &body);
    let huge = json!({"input": "q".repeat(300_000), "output": "a", "feedback": {"type": "none"}});
    let (status, body) = server.post("/v1/events", &huge);
    assert_eq!(status, 413);
    spec.check("post", "/v1/events", status, &body);
    for (encoding, bytes) in [("br", b"{}".to_vec()), ("gzip", b"not gzip".to_vec())] {
        let response = server
            .client
            .post(server.url("/v1/events"))
            .bearer_auth(INGEST)
            .header("content-encoding", encoding)
            .body(bytes)
            .send()
            .expect("POST");
        let status = response.status().as_u16();
        let body: Value = response.json().expect("JSON error");
        assert!(status == 415 || status == 400, "{status} {body}");
        spec.check("post", "/v1/events", status, &body);
    }
    let (status, body) = server.post_as("/v1/events", &event, Some("wrong-token-0123456789"));
    assert_eq!(status, 401);
    spec.check("post", "/v1/events", status, &body);
    let (status, body) = server.post_as("/v1/events", &event, Some(REVIEWER));
    assert_eq!(status, 403);
    spec.check("post", "/v1/events", status, &body);

    // Reading back: one event (processed, with a failed call and a correction), a page,
    // a pending filter, a bad query, an unknown id.
    for id in ["thumbs-down-ungrounded", "with-correction"] {
        let record = server.wait_processed(id);
        spec.check("get", "/v1/events/{id}", 200, &record);
    }
    let record = server.wait_processed("with-correction");
    assert_eq!(record["correction"]["source"], "feedback", "{record}");
    let failed = record["outcome"]["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .any(|c| c["error"]["class"] == "plugin_error");
    assert!(failed, "{record}");
    for query in [
        "",
        "?limit=2",
        "?route=label",
        "?route=pending&feedback=thumbs",
    ] {
        let (status, body) = server.get(&format!("/v1/events{query}"));
        assert_eq!(status, 200, "{body}");
        spec.check("get", "/v1/events", status, &body);
    }
    let (status, body) = server.get("/v1/events?limit=0");
    assert_eq!(status, 400);
    spec.check("get", "/v1/events", status, &body);
    let (status, body) = server.get("/v1/events/no-such-event");
    assert_eq!(status, 404);
    spec.check("get", "/v1/events/{id}", status, &body);

    // Erasing: one event, by filter, refusals.
    let (status, body) = server.delete_as("/v1/events/with-correction", Some(ADMIN));
    assert_eq!(status, 200, "{body}");
    spec.check("delete", "/v1/events/{id}", status, &body);
    for (path, token, want) in [
        ("/v1/events/with-correction", ADMIN, 404),
        ("/v1/events/thumbs-down-ungrounded", INGEST, 403),
        (
            "/v1/events/thumbs-down-ungrounded",
            "wrong-token-0123456789",
            401,
        ),
    ] {
        let (status, body) = server.delete_as(path, Some(token));
        assert_eq!(status, want, "{path}: {body}");
        spec.check("delete", "/v1/events/{id}", status, &body);
    }
    for (query, want) in [
        ("?feedback=thumbs&route=label", 200),
        ("", 400),
        ("?limit=3&model=x", 400),
    ] {
        let (status, body) = server.delete_as(&format!("/v1/events{query}"), Some(ADMIN));
        assert_eq!(status, want, "{query}: {body}");
        spec.check("delete", "/v1/events", status, &body);
    }

    // Operations and identity.
    for (path, token) in [
        ("/readyz", None),
        ("/healthz", None),
        ("/v1/whoami", Some(REVIEWER)),
    ] {
        let (status, body) = server.get_as(path, token);
        assert_eq!(status, 200, "{path}: {body}");
        spec.check("get", path, status, &body);
    }

    // A backup: its summary header is a documented `BackupInfo`, its refusals errors.
    let resp = server.get_response("/v1/backup", Some(ADMIN));
    assert_eq!(resp.status().as_u16(), 200);
    spec.response_schema("get", "/v1/backup", 200);
    let summary: Value = resp
        .headers()
        .get("x-flywheel-backup")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| serde_json::from_str(v).ok())
        .expect("X-Flywheel-Backup");
    let mut schema = json!({"$ref": "#/components/schemas/BackupInfo"});
    schema["components"] = spec.doc["components"].clone();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .expect("the BackupInfo schema compiles");
    assert!(validator.is_valid(&summary), "{summary}");
    let (status, body) = server.get_as("/v1/backup", Some(REVIEWER));
    assert_eq!(status, 403, "{body}");
    spec.check("get", "/v1/backup", status, &body);
}
