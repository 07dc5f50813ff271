//! Ingestion against the real server: submit, batch, idempotency, every class of bad
//! input, auth by role, the pipeline's decisions, plugin failures under each failure
//! mode, and health and metrics.

use flywheel_tests::fixtures;
use flywheel_tests::plugins;
use flywheel_tests::server::{Options, Server, StagedPlugin, examples_without_sampling};
use serde_json::{Value, json};

fn without_id(name: &str) -> Value {
    let mut v = fixtures::json(name);
    v.as_object_mut().expect("object").remove("id");
    v
}

#[test]
fn a_single_event_is_stored_processed_and_readable() {
    let server = Server::with_examples();
    let (status, body) = server.post("/v1/events", &without_id("event_thumbs_up_grounded"));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted");
    let id = body["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 26, "a ULID is assigned: {id}");

    let record = server.wait_processed(&id);
    assert_eq!(
        record["input"],
        "How many days do I have to return a laptop?"
    );
    assert_eq!(record["metadata"]["app"], "helpdesk");
    let outcome = &record["outcome"];
    assert_eq!(outcome["route"]["action"], "accept", "{outcome}");
    let names: Vec<&str> = outcome["scores"]
        .as_array()
        .expect("scores")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    for expected in ["satisfaction", "groundedness", "sensitive"] {
        assert!(names.contains(&expected), "{names:?}");
    }
    let calls = outcome["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 4, "three scorers and one router: {outcome}");
    for call in calls {
        assert_eq!(
            call["plugin"]["hash"].as_str().map(str::len),
            Some(64),
            "{call}"
        );
        assert!(call["duration_us"].is_u64());
        assert!(call.get("error").is_none(), "{call}");
    }
    assert_eq!(outcome["votes"][0]["plugin"], "hitl-router");
    assert_eq!(outcome["plugins"].as_array().map(Vec::len), Some(4));

    let (status, missing) = server.get("/v1/events/nope");
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "not_found");
}

#[test]
fn wait_returns_the_decision_for_accept_label_and_review() {
    let server = Server::with_examples();
    let cases = [
        ("event_thumbs_up_grounded", "accept", None),
        ("event_thumbs_down_ungrounded", "label", Some("labeling")),
        ("event_clarification", "label", Some("labeling")),
        ("event_pii_email_card", "review", Some("compliance")),
    ];
    for (fixture, action, queue) in cases {
        let event = fixtures::json(fixture);
        let (status, body) = server.post("/v1/events?wait=true", &event);
        assert_eq!(status, 200, "{fixture}: {body}");
        assert_eq!(body["id"], event["id"]);
        let route = &body["outcome"]["route"];
        assert_eq!(route["action"], action, "{fixture}: {body}");
        if let Some(q) = queue {
            assert_eq!(route["queue"], q, "{fixture}");
            assert!(route["reason"].as_str().is_some_and(|r| !r.is_empty()));
        }
        // The stored result is the same decision.
        let stored = server.wait_processed(event["id"].as_str().expect("id"));
        assert_eq!(&stored["outcome"]["route"], route);
    }
    // Label and review routes put an item on the named queue.
    let (_, listed) = server.get("/v1/events?queue=compliance");
    let ids: Vec<&str> = listed["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids, ["pii-email-card"]);
    let (_, labeled) = server.get("/v1/events?route=label");
    assert_eq!(labeled["events"].as_array().map(Vec::len), Some(2));
}

#[test]
fn a_batch_reports_each_item_and_one_bad_item_sinks_nothing() {
    let server = Server::with_examples();
    let good = without_id("event_rating_four_of_five");
    let mut bad = good.clone();
    bad["feedback"] = json!({"type": "rating", "value": 9, "scale": 5});
    let mut dup = good.clone();
    dup["id"] = json!("batch-dup");
    let batch = json!({"events": [good, bad, dup.clone(), dup]});
    let (status, body) = server.post("/v1/events", &batch);
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (
            body["accepted"].as_u64(),
            body["duplicates"].as_u64(),
            body["invalid"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{body}"
    );
    let results = body["results"].as_array().expect("results");
    assert_eq!(results[0]["status"], "accepted");
    assert_eq!(results[1]["status"], "invalid");
    assert_eq!(results[1]["error"]["code"], "out_of_range");
    assert!(
        results[1]["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("events[1].feedback.value")
    );
    assert_eq!(results[2]["status"], "accepted");
    assert_eq!(results[3]["status"], "duplicate");
    assert_eq!(results[3]["id"], "batch-dup");
    for r in [&results[0], &results[2]] {
        server.wait_processed(r["id"].as_str().expect("id"));
    }

    let too_many = json!({"events": vec![without_id("event_no_feedback"); 1001]});
    let (status, body) = server.post("/v1/events", &too_many);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("batch_too_large")),
        "{body}"
    );

    let all_bad = json!({"events": [{"input": "q"}]});
    let (status, body) = server.post("/v1/events", &all_bad);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["results"][0]["error"]["code"], "missing_field");
}

#[test]
fn resubmitting_an_id_is_idempotent() {
    let server = Server::with_examples();
    let event = fixtures::json("event_correction_too_long");
    let (s1, first) = server.post("/v1/events", &event);
    assert_eq!((s1, first["status"].as_str()), (202, Some("accepted")));
    let original = server.wait_processed("correction-too-long");

    let mut changed = event.clone();
    changed["output"] = json!("a different answer");
    let (s2, second) = server.post("/v1/events", &changed);
    assert_eq!(
        (s2, second["status"].as_str(), second["id"].as_str()),
        (202, Some("duplicate"), Some("correction-too-long"))
    );
    let after = server.wait_processed("correction-too-long");
    assert_eq!(after, original, "the original is kept unchanged");
    let (_, page) = server.get("/v1/events");
    assert_eq!(page["events"].as_array().map(Vec::len), Some(1));
}

#[test]
fn bad_input_gets_a_clear_error_naming_the_field() {
    let server = Server::start(Options {
        plugins: examples_without_sampling(),
        config: "[limits]\nmax-body-bytes = 200000\nmax-text-bytes = 1000\n".into(),
        ..Options::default()
    });
    let (status, body) =
        server.post_raw("/v1/events", b"{\"input\": ".to_vec(), "application/json");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("malformed_json")),
        "{body}"
    );

    let base = without_id("event_no_feedback");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            with(&|v| {
                v.as_object_mut().expect("o").remove("output");
            }),
            "missing_field",
            "`output`",
        ),
        (
            with(&|v| {
                v.as_object_mut().expect("o").remove("feedback");
            }),
            "missing_field",
            "`feedback`",
        ),
        (with(&|v| v["input"] = json!(42)), "invalid_type", "`input`"),
        (
            with(&|v| v["context"] = json!("one passage")),
            "invalid_type",
            "`context`",
        ),
        (
            with(&|v| v["feedback"] = json!({"type": "emoji", "value": ":)"})),
            "unknown_feedback_type",
            "emoji",
        ),
        (
            with(&|v| v["feedback"] = json!({"type": "rating", "value": 0, "scale": 5})),
            "out_of_range",
            "feedback.value",
        ),
        (
            with(&|v| v["feedback"] = json!({"type": "thumbs", "value": "sideways"})),
            "invalid_value",
            "feedback.value",
        ),
        (
            with(&|v| v["output"] = json!("x".repeat(1001))),
            "too_long",
            "`output`",
        ),
        (
            with(&|v| v["mood"] = json!("happy")),
            "unknown_field",
            "mood",
        ),
    ];
    for (event, code, needle) in cases {
        let (status, body) = server.post("/v1/events", &event);
        assert_eq!(status, 400, "{code}: {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(needle), "{code}: {message}");
    }
    let huge = with(&|v| v["context"] = json!(vec!["y".repeat(900); 250]));
    let (status, body) = server.post("/v1/events", &huge);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );

    // Nothing was stored by any of that.
    let (_, page) = server.get("/v1/events");
    assert_eq!(page["events"].as_array().map(Vec::len), Some(0));
}

#[test]
fn tokens_decide_who_may_do_what() {
    let ingest = "ingest-token-0123456789";
    let reviewer = "reviewer-token-0123456789";
    let admin = "admin-token-0123456789abc";
    let server = Server::start(Options {
        plugins: examples_without_sampling(),
        config: format!(
            "[[tokens]]\nname = \"app\"\nrole = \"ingest\"\ntoken = \"{ingest}\"\n\
             [[tokens]]\nname = \"expert\"\nrole = \"reviewer\"\ntoken = \"{reviewer}\"\n\
             [[tokens]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{admin}\"\n"
        ),
        ..Options::default()
    });
    let event = without_id("event_no_feedback");
    let (status, body) = server.post_as("/v1/events", &event, None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = server.post_as("/v1/events", &event, Some("wrong-token-0123456789"));
    assert_eq!(status, 401);
    let (status, body) = server.post_as("/v1/events", &event, Some(reviewer));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, body) = server.post_as("/v1/events", &event, Some(ingest));
    assert_eq!(status, 202, "{body}");
    let (status, _) = server.post_as("/v1/events", &event, Some(admin));
    assert_eq!(status, 202);
    let id = body["id"].as_str().expect("id");
    for token in [ingest, reviewer, admin] {
        let (status, _) = server.get_as(&format!("/v1/events/{id}"), Some(token));
        assert_eq!(status, 200);
    }
    let (status, _) = server.get_as("/healthz", None);
    assert_eq!(status, 200, "health needs no token");
}

#[test]
fn an_open_server_refuses_a_public_address() {
    let out = std::process::Command::new(flywheel_tests::server::flywheel_bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(tempfile::tempdir().expect("tmp").path())
        .output()
        .expect("run flywheel");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no tokens configured") && stderr.contains("loopback"),
        "{stderr}"
    );
}

#[test]
fn a_failing_plugin_never_loses_the_event() {
    // hostile-error fails every call. Fail-open: its vote is ignored.
    let open = Server::start(Options {
        plugins: [
            examples_without_sampling(),
            vec![StagedPlugin::from(plugins::HOSTILE_ERROR)],
        ]
        .concat(),
        ..Options::default()
    });
    let (status, body) = open.post(
        "/v1/events?wait=true",
        &fixtures::json("event_thumbs_up_grounded"),
    );
    assert_eq!(status, 200, "{body}");
    let outcome = &body["outcome"];
    assert_eq!(outcome["route"]["action"], "accept", "{outcome}");
    let failed: Vec<&Value> = outcome["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter(|c| c.get("error").is_some())
        .collect();
    assert_eq!(failed.len(), 1, "{outcome}");
    assert_eq!(failed[0]["plugin"]["name"], "hostile-error");
    assert_eq!(failed[0]["error"]["class"], "plugin_error");
    assert_eq!(failed[0]["failure_mode"], "fail-open");

    // hostile-panic as fail-closed: the event goes to review, with the error recorded.
    let closed = Server::start(Options {
        plugins: [
            examples_without_sampling(),
            vec![
                StagedPlugin::from(plugins::HOSTILE_PANIC)
                    .fail_closed()
                    .config("spare-ids-with-prefix", "smoke-"),
            ],
        ]
        .concat(),
        ..Options::default()
    });
    let (status, body) = closed.post(
        "/v1/events?wait=true",
        &fixtures::json("event_thumbs_up_grounded"),
    );
    assert_eq!(status, 200, "{body}");
    let outcome = &body["outcome"];
    assert_eq!(outcome["route"]["action"], "review", "{outcome}");
    assert_eq!(outcome["route"]["queue"], "review");
    let imposed = outcome["votes"]
        .as_array()
        .expect("votes")
        .iter()
        .find(|v| v["imposed"] == true)
        .expect("imposed vote");
    assert_eq!(imposed["plugin"], "hostile-panic");
    let call = outcome["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .find(|c| c["plugin"]["name"] == "hostile-panic")
        .expect("call");
    assert_eq!(call["error"]["class"], "trap");
    assert_eq!(call["failure_mode"], "fail-closed");
    // The host is fine: the next event is processed too.
    let (status, _) = closed.post("/v1/events?wait=true", &fixtures::json("event_no_feedback"));
    assert_eq!(status, 200);
}

#[test]
fn a_looping_plugin_is_stopped_and_the_server_stays_up() {
    let server = Server::start(Options {
        plugins: [
            examples_without_sampling(),
            vec![
                StagedPlugin::from(plugins::HOSTILE_LOOP).config("spare-ids-with-prefix", "smoke-"),
                StagedPlugin::from(plugins::HOSTILE_MEMORY)
                    .config("spare-ids-with-prefix", "smoke-"),
            ],
        ]
        .concat(),
        ..Options::default()
    });
    for i in 0..3 {
        let mut e = fixtures::json("event_no_feedback");
        e["id"] = json!(format!("loop-{i}"));
        let (status, body) = server.post("/v1/events?wait=true", &e);
        assert_eq!(status, 200, "{body}");
        let classes: Vec<&str> = body["outcome"]["calls"]
            .as_array()
            .expect("calls")
            .iter()
            .filter_map(|c| c["error"]["class"].as_str())
            .collect();
        assert_eq!(classes, ["timeout", "out_of_memory"], "{body}");
    }
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 200);
}

#[test]
fn health_readiness_and_metrics() {
    let server = Server::with_examples();
    let (status, ready) = server.get("/readyz");
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["plugins"].as_array().map(Vec::len), Some(5));
    server.post(
        "/v1/events?wait=true",
        &fixtures::json("event_pii_email_card"),
    );
    server.post("/v1/events", &json!({"input": 1}));
    let (status, text) = server.get_text("/metrics");
    assert_eq!(status, 200);
    for name in [
        "flywheel_events_accepted_total",
        "flywheel_events_rejected_total",
        "flywheel_pipeline_seconds_bucket",
        "flywheel_plugin_calls_total",
        "flywheel_plugin_call_seconds_bucket",
        "flywheel_queue_depth{queue=\"compliance\"} 1",
    ] {
        assert!(text.contains(name), "missing {name} in:\n{text}");
    }
}

#[test]
fn a_full_backlog_refuses_new_events_until_the_pipeline_catches_up() {
    // hostile-loop spins until its 200 ms deadline, so each event takes that long to
    // decide: a batch of 16 keeps the two workers busy for over a second.
    let server = Server::start(Options {
        plugins: vec![
            StagedPlugin::from(plugins::HOSTILE_LOOP).config("spare-ids-with-prefix", "smoke-"),
        ],
        config: "[pipeline]\nmax-backlog = 4\nquarantine-after = 1000\n".into(),
        ..Options::default()
    });
    let (_, ready) = server.get("/readyz");
    assert_eq!(ready["plugins"][0]["name"], "hostile-loop", "{ready}");
    let slow: Vec<Value> = (0..16)
        .map(|i| {
            let mut e = without_id("event_thumbs_up_grounded");
            e["id"] = json!(format!("slow-{i}"));
            e
        })
        .collect();
    let (status, body) = server.post("/v1/events", &json!({ "events": slow }));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 16, "{body}");
    let (_, ready) = server.get("/readyz");
    assert!(
        ready["pipeline_backlog"].as_u64() >= Some(4),
        "the batch is not processed yet: {ready}"
    );

    // Refused whole, with a hint when to retry, and nothing stored.
    let refused = server
        .client
        .post(server.url("/v1/events"))
        .json(&fixtures::json("event_rating_four_of_five"))
        .send()
        .expect("POST");
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(
        refused.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body: Value = refused.json().expect("JSON error");
    assert_eq!(body["error"]["code"], "backlog_full", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max-backlog")),
        "{body}"
    );
    let id = fixtures::json("event_rating_four_of_five")["id"].clone();
    let (status, _) = server.get(&format!("/v1/events/{}", id.as_str().expect("id")));
    assert_eq!(status, 404);

    // `?wait=true` is decided inline, adding nothing to the backlog: still admitted.
    let (status, body) = server.post(
        "/v1/events?wait=true",
        &without_id("event_thumbs_up_grounded"),
    );
    assert_eq!(status, 200, "{body}");

    // Once the pipeline catches up, events are admitted again.
    let backlog_below = |n: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (_, ready) = server.get("/readyz");
            if ready["pipeline_backlog"].as_u64() < Some(n) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{ready}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    backlog_below(4);
    let (status, body) = server.post("/v1/events", &fixtures::json("event_rating_four_of_five"));
    assert_eq!(status, 202, "{body}");
    backlog_below(1);
    let (_, text) = server.get_text("/metrics");
    for line in [
        "flywheel_events_rejected_total{code=\"backlog_full\"} 1",
        "flywheel_pipeline_backlog 0",
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
}

#[test]
fn gzip_bodies_are_accepted_and_a_compressed_bomb_is_refused() {
    use std::io::Write;
    let gzip = |bytes: &[u8]| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).expect("gzip");
        encoder.finish().expect("gzip")
    };
    let server = Server::with_examples();
    let post = |body: Vec<u8>, encoding: &str| {
        let response = server
            .client
            .post(server.url("/v1/events"))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(body)
            .send()
            .expect("POST");
        let status = response.status().as_u16();
        (status, response.json::<Value>().expect("JSON body"))
    };

    let batch = json!({"events": [
        fixtures::json("event_rating_four_of_five"),
        fixtures::json("event_clarification"),
    ]});
    let (status, body) = post(gzip(batch.to_string().as_bytes()), "gzip");
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(2)),
        "{body}"
    );
    server.wait_processed("rating-four-of-five");

    let (status, body) = post(b"\x1f\x8b not really gzip".to_vec(), "gzip");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_body")),
        "{body}"
    );
    let (status, body) = post(batch.to_string().into_bytes(), "br");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported_encoding")),
        "{body}"
    );
    // 17 MiB of JSON in a few KiB: the 16 MiB limit holds after decompression.
    let bomb = format!(
        r#"{{"input": "{}", "output": "a", "feedback": {{"type": "none"}}}}"#,
        "a".repeat(17 << 20)
    );
    let (status, body) = post(gzip(bomb.as_bytes()), "gzip");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
}

#[test]
fn listing_filters_and_pages() {
    let server = Server::with_examples();
    let mut batch = Vec::new();
    for i in 0..30 {
        let fixture = if i % 3 == 0 {
            "event_thumbs_down_ungrounded"
        } else {
            "event_rating_four_of_five"
        };
        let mut e = fixtures::json(fixture);
        e["id"] = json!(format!("list-{i:02}"));
        e["user_id"] = json!(format!("user-{}", i % 2));
        e["session_id"] = json!(format!("session-{}", i / 10));
        batch.push(e);
    }
    let (status, _) = server.post("/v1/events?wait=true", &json!({"events": batch}));
    assert_eq!(status, 200);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/events?limit=7&cursor={c}"),
            None => "/v1/events?limit=7".to_string(),
        };
        let (status, page) = server.get(&path);
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["id"].as_str().expect("id").to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 30);
    let (_, thumbs) = server.get("/v1/events?feedback=thumbs&limit=100");
    assert_eq!(thumbs["events"].as_array().map(Vec::len), Some(10));
    // A misspelt type is an error, not an empty page.
    let (status, typo) = server.get("/v1/events?feedback=thumb");
    assert_eq!(
        (status, &typo["error"]["code"]),
        (400, &json!("invalid_value")),
        "{typo}"
    );
    // axum's own rejections answer in the API's shape too.
    let (status, bad_path) = server.get("/v1/events/%FF%FE");
    assert_eq!(
        (status, &bad_path["error"]["code"]),
        (400, &json!("invalid_request")),
        "{bad_path}"
    );
    let (status, bad_query) = server.get("/v1/plugins/satisfaction/shadow/report?limit=-1");
    assert_eq!(
        (status, &bad_query["error"]["code"]),
        (400, &json!("invalid_query")),
        "{bad_query}"
    );
    let (_, v4) = server.get("/v1/events?prompt=support-answer&prompt_version=4&limit=100");
    assert_eq!(v4["events"].as_array().map(Vec::len), Some(20));
    let (_, model) = server.get("/v1/events?model=gpt-4o-mini&limit=100");
    assert_eq!(model["events"].as_array().map(Vec::len), Some(10));
    let (_, user) = server.get("/v1/events?user_id=user-1&session_id=session-2&limit=100");
    let ids: Vec<&str> = user["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids, ["list-29", "list-27", "list-25", "list-23", "list-21"]);
    let (status, body) = server.get("/v1/events?limit=0");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("out_of_range"))
    );
    let (status, body) = server.get("/v1/events?colour=red");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_query")),
        "{body}"
    );
}

#[test]
fn a_client_that_hangs_up_leaves_no_event_unprocessed() {
    use std::io::Write;
    let server = Server::with_examples();
    let addr = server.base.trim_start_matches("http://").to_string();
    // Send whole requests and close at once, so the server often sees the client gone
    // while its handler waits for the group commit. Whether a hung-up request is stored
    // at all is a race; repeat the burst until some are, so the check below is not empty.
    let stored = || {
        let (_, all) = server.get("/v1/events?limit=500");
        all["events"].as_array().map_or(0, Vec::len)
    };
    for round in 0..20 {
        for i in 0..200 {
            let mut e = fixtures::json("event_thumbs_down_ungrounded");
            e["id"] = json!(format!("hangup-{round}-{i}"));
            let body = e.to_string();
            let request = format!(
                "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
            stream.write_all(request.as_bytes()).expect("write");
            drop(stream);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        if stored() > 0 {
            break;
        }
    }
    // Whatever was stored gets processed: nothing stays pending.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, pending) = server.get("/v1/events?route=pending&limit=5");
        if stored() > 0 && pending["events"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events left pending after clients hung up: {pending}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Reads from a raw connection until the server closes it or answers; returns what it
/// sent (empty: closed without a word). Fails if neither happens within `within`.
fn read_until_closed(stream: &mut std::net::TcpStream, within: std::time::Duration) -> String {
    use std::io::Read;
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server kept a slow connection open past {within:?}: {e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn slow_and_idle_clients_are_cut_off_and_the_server_stays_up() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::Duration;
    let server = Server::start(Options {
        config: "[limits]\nheader-timeout-ms = 1000\nbody-timeout-ms = 1000\nmax-connections = 4\nmax-body-bytes = 4096\n".into(),
        ..Options::default()
    });
    let addr = server.base.trim_start_matches("http://").to_string();
    // Far beyond the configured second, so a slow machine cannot fail the test; what is
    // checked is that the server closes at all (by default hyper waits for ever).
    let patience = Duration::from_secs(20);

    // Four connections that send nothing fill the limit; the server closes them, so a
    // fifth client (the test's own, on a fresh connection) is still answered.
    let mut idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 200);
    for stream in &mut idle {
        assert_eq!(read_until_closed(stream, patience), "");
    }

    // Headers that never end: closed without an answer.
    let mut slow_head = TcpStream::connect(&addr).expect("connect");
    slow_head
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
        .expect("write");
    assert_eq!(read_until_closed(&mut slow_head, patience), "");

    // A body that stops arriving: 408 with the API's JSON error, and nothing stored.
    let mut slow_body = TcpStream::connect(&addr).expect("connect");
    slow_body
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"input\": \"a")
        .expect("write");
    let answer = read_until_closed(&mut slow_body, patience);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: Value = serde_json::from_str(body).expect("a JSON error body");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");

    // A body that arrives slowly but steadily, each piece well inside the timeout, is fine.
    let event = without_id("event_thumbs_down_ungrounded").to_string();
    let mut steady = TcpStream::connect(&addr).expect("connect");
    write!(
        steady,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        event.len()
    )
    .expect("write");
    for piece in event.as_bytes().chunks(event.len().div_ceil(4)) {
        std::thread::sleep(Duration::from_millis(100));
        steady.write_all(piece).expect("write");
    }
    let answer = read_until_closed(&mut steady, patience);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");

    // Body errors on the other endpoints are JSON too (they used to be axum's plain text).
    let (status, body) = server.post_raw(
        "/v1/prompts/support-answer/labels",
        vec![b'x'; 8192],
        "application/json",
    );
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");

    // The limit was hit and counted, and the server is well.
    let (_, metrics) = server.get_text("/metrics");
    let limited = metrics
        .lines()
        .find_map(|l| l.strip_prefix("flywheel_http_connections_limited_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(limited >= 1.0, "{metrics}");
    let (status, body) = server.post("/v1/events", &without_id("event_thumbs_down_ungrounded"));
    assert_eq!(status, 202, "{body}");
}
