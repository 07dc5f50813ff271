//! Closing the loop against the real server: prompt versions and labels, per-version
//! statistics on a known corpus, the example refiner's proposal from "too long"
//! complaints (on demand and automatically), accepting it, and every dataset kind on a
//! known corpus with reviews from the queues, in the API and the CLI.

use std::collections::BTreeMap;

use flywheel_tests::fixtures;
use flywheel_tests::server::{Options, Server, examples_without_sampling, flywheel_bin};
use serde_json::{Value, json};

fn put_prompt(server: &Server, name: &str, body: Value) -> Value {
    let resp = server
        .client
        .put(server.url(&format!("/v1/prompts/{name}")))
        .json(&body)
        .send()
        .expect("PUT");
    assert_eq!(resp.status().as_u16(), 201);
    resp.json().expect("json")
}

fn event(fixture: &str, id: &str, prompt: &str, version: &str) -> Value {
    let mut e = fixtures::json(fixture);
    e["id"] = json!(id);
    e["prompt"] = json!({"name": prompt, "version": version});
    e
}

#[test]
fn versions_and_labels() {
    let server = Server::with_examples();
    let v1 = put_prompt(
        &server,
        "support-answer",
        json!({"template": "Answer: {{question}}", "labels": ["production"]}),
    );
    assert_eq!(v1["version"], 1);
    let v2 = put_prompt(
        &server,
        "support-answer",
        json!({"template": "Answer briefly: {{question}}", "model_settings": {"temperature": 0.2}, "labels": ["staging"]}),
    );
    assert_eq!(v2["version"], 2);
    let (_, prod) = server.get("/v1/prompts/support-answer?label=production");
    assert_eq!(
        (prod["version"].as_u64(), prod["template"].as_str()),
        (Some(1), Some("Answer: {{question}}"))
    );
    let (_, latest) = server.get("/v1/prompts/support-answer");
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["model_settings"]["temperature"], 0.2);

    let (status, body) = server.post(
        "/v1/prompts/support-answer/labels",
        &json!({"label": "production", "version": 2}),
    );
    assert_eq!(status, 200, "{body}");
    let (_, prod) = server.get("/v1/prompts/support-answer?label=production");
    assert_eq!(prod["version"], 2);
    let (status, body) = server.get("/v1/prompts/support-answer?label=canary");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = server.post(
        "/v1/prompts/support-answer/labels",
        &json!({"label": "production", "version": 9}),
    );
    assert_eq!(status, 404);
    let resp = server
        .client
        .put(server.url("/v1/prompts/support-answer"))
        .json(&json!({"template": ""}))
        .send()
        .expect("PUT");
    assert_eq!(resp.status().as_u16(), 400);
    // Body errors carry the codes the events API uses for the same mistakes.
    for (body, code) in [
        ("{\"labels\": [\"staging\"]}", "missing_field"),
        ("{\"template\": \"x\", \"bogus\": 1}", "unknown_field"),
        (
            "{\"template\": \"x\", \"labels\": \"production\"}",
            "invalid_type",
        ),
        ("{\"template\": ", "malformed_json"),
    ] {
        let resp = server
            .client
            .put(server.url("/v1/prompts/support-answer"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("PUT");
        assert_eq!(resp.status().as_u16(), 400, "{body}");
        let err: Value = resp.json().expect("json");
        assert_eq!(err["error"]["code"], code, "{body}: {err}");
    }
    let (status, err) = server.post("/v1/plugins/satisfaction/activate", &json!({}));
    assert_eq!(
        (status, &err["error"]["code"]),
        (400, &json!("missing_field")),
        "{err}"
    );
    let (_, list) = server.get("/v1/prompts");
    assert_eq!(list["prompts"][0]["versions"], 2);
    let created = put_prompt(
        &server,
        "labelled-twice",
        json!({"template": "t", "labels": ["staging", "staging"]}),
    );
    assert_eq!(created["labels"], json!(["staging"]), "{created}");
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn stats_per_version_match_hand_computed_values() {
    let server = Server::with_examples();
    let corpus = vec![
        event("event_thumbs_up_grounded", "a1", "stats-demo", "1"),
        event("event_thumbs_down_ungrounded", "a2", "stats-demo", "1"),
        event("event_rating_four_of_five", "a3", "stats-demo", "1"),
        event("event_correction_too_long", "a4", "stats-demo", "1"),
        event("event_thumbs_up_grounded", "b1", "stats-demo", "2"),
        event("event_thumbs_up_grounded", "b2", "stats-demo", "2"),
    ];
    let (status, body) = server.post("/v1/events?wait=true", &json!({"events": corpus}));
    assert_eq!(status, 200, "{body}");
    let routed = |ids: &[&str]| {
        ids.iter()
            .filter(|id| {
                let r = server.wait_processed(id);
                matches!(
                    r["outcome"]["route"]["action"].as_str(),
                    Some("label" | "review")
                )
            })
            .count() as u64
    };
    let (status, stats) = server.get("/v1/prompts/stats-demo/stats");
    assert_eq!(status, 200, "{stats}");
    let v1 = &stats["versions"][0];
    let v2 = &stats["versions"][1];
    assert_eq!(
        (v1["version"].as_str(), v1["events"].as_u64()),
        (Some("1"), Some(4))
    );
    // satisfaction: thumbs up 1, thumbs down 0, rating 4/5 0.75, correction 0.
    assert!(
        close(&v1["satisfaction"]["mean"], (1.0 + 0.0 + 0.75 + 0.0) / 4.0),
        "{v1}"
    );
    assert_eq!(v1["satisfaction"]["count"], 4);
    assert_eq!(
        (
            v1["thumbs_up"]["count"].as_u64(),
            v1["thumbs_up"]["total"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert!(close(&v1["thumbs_up"]["rate"], 0.5));
    // Wilson 95% interval for 1 of 2.
    assert!(
        (v1["thumbs_up"]["ci95"][0].as_f64().expect("lo") - 0.0945).abs() < 1e-3,
        "{v1}"
    );
    assert!(
        (v1["thumbs_up"]["ci95"][1].as_f64().expect("hi") - 0.9055).abs() < 1e-3,
        "{v1}"
    );
    assert!(close(&v1["corrections"]["rate"], 0.25));
    assert_eq!(
        v1["reviews"]["count"].as_u64(),
        Some(routed(&["a1", "a2", "a3", "a4"]))
    );
    assert_eq!(v1["reviews"]["total"], 4);
    assert_eq!(v2["events"], 2);
    assert!(close(&v2["satisfaction"]["mean"], 1.0));
    assert!(close(&v2["thumbs_up"]["rate"], 1.0));
    assert!(close(&v2["corrections"]["rate"], 0.0));

    // A time window: all of them, none yet, none before.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let (_, window) = server.get(&format!(
        "/v1/prompts/stats-demo/stats?from=0&to={}",
        now + 1
    ));
    assert_eq!(window["versions"], stats["versions"]);
    for query in [format!("from={}", now + 60_000), "to=1".to_string()] {
        let (status, none) = server.get(&format!("/v1/prompts/stats-demo/stats?{query}"));
        assert_eq!(status, 200, "{none}");
        assert_eq!(none["versions"], json!([]), "{query}: {none}");
    }
    let (status, err) = server.get("/v1/prompts/stats-demo/stats?since=1");
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
}

const TEMPLATE: &str =
    "You are a helpful support agent.\nAnswer the customer's question: {{question}}";

fn too_long_corpus() -> Vec<Value> {
    let complaints = [
        "This is way too long, can you make it shorter?",
        "Too verbose. What is the short answer?",
        "tl;dr? Please be concise.",
    ];
    let mut events: Vec<Value> = complaints
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut e = event(
                "event_correction_too_long",
                &format!("long-{i}"),
                "support-answer",
                "1",
            );
            e["feedback"] = json!({"type": "clarification", "text": text});
            e
        })
        .collect();
    events.push(event(
        "event_thumbs_up_grounded",
        "happy-1",
        "support-answer",
        "1",
    ));
    events
}

#[test]
fn the_refiner_proposes_concision_and_an_accepted_proposal_becomes_a_version() {
    let server = Server::with_examples();
    put_prompt(
        &server,
        "support-answer",
        json!({"template": TEMPLATE, "labels": ["production"]}),
    );
    let (status, _) = server.post(
        "/v1/events?wait=true",
        &json!({"events": too_long_corpus()}),
    );
    assert_eq!(status, 200);

    let (status, body) = server.post("/v1/prompts/support-answer/refine", &json!({}));
    assert_eq!(status, 200, "{body}");
    let created = body["proposals"].as_array().expect("proposals");
    assert_eq!(created.len(), 1, "{body}");
    let proposal = &created[0];
    let template = proposal["template"].as_str().expect("template");
    assert!(template.starts_with(TEMPLATE), "{template}");
    assert!(template.to_lowercase().contains("concise"), "{template}");
    let mut evidence: Vec<&str> = proposal["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    evidence.sort();
    assert_eq!(
        evidence,
        ["long-0", "long-1", "long-2"],
        "the complaints, not the happy answer"
    );
    assert_eq!(proposal["refiner"]["name"], "prompt-refiner");
    assert_eq!(proposal["status"], "pending");
    // Asking again while it waits gives the same proposal back, not a second copy.
    let (status, again) = server.post("/v1/prompts/support-answer/refine", &json!({}));
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["proposals"][0]["id"], proposal["id"], "{again}");

    let (_, listed) = server.get("/v1/prompts/support-answer/proposals");
    assert_eq!(
        listed["proposals"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    let diff = listed["proposals"][0]["diff"].as_str().expect("diff");
    assert!(
        diff.contains("--- support-answer v1")
            && diff
                .lines()
                .any(|l| l.starts_with('+') && l.to_lowercase().contains("concise")),
        "{diff}"
    );
    let (_, prod) = server.get("/v1/prompts/support-answer?label=production");
    assert_eq!(prod["version"], 1, "never applied silently");

    let id = proposal["id"].as_str().expect("id");
    let (status, accepted) = server.post(
        &format!("/v1/prompts/support-answer/proposals/{id}/accept"),
        &json!({"label": "staging"}),
    );
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(
        (accepted["status"].as_str(), accepted["version"].as_u64()),
        (Some("accepted"), Some(2))
    );
    let (_, staging) = server.get("/v1/prompts/support-answer?label=staging");
    assert_eq!(staging["template"].as_str(), Some(template));
    let (status, again) = server.post(
        &format!("/v1/prompts/support-answer/proposals/{id}/reject"),
        &json!({}),
    );
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("already_decided"))
    );
}

#[test]
fn enough_new_failures_run_the_refiner_automatically() {
    let server = Server::start(Options {
        plugins: examples_without_sampling(),
        config: "[prompts]\nrefine-after-failures = 3\n".into(),
        ..Options::default()
    });
    put_prompt(&server, "support-answer", json!({"template": TEMPLATE}));
    let (status, _) = server.post("/v1/events", &json!({"events": too_long_corpus()}));
    assert_eq!(status, 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, listed) = server.get("/v1/prompts/support-answer/proposals");
        if let Some(p) = listed["proposals"].as_array().and_then(|p| p.first()) {
            assert_eq!(p["trigger"], "auto", "{p}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no automatic proposal: {listed}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // As many failures again: enough for another refine, but not as soon as that
    // (`refine-min-interval-secs`, 300 by default), so none runs and nothing is added.
    let again: Vec<Value> = too_long_corpus()
        .into_iter()
        .map(|mut e| {
            e["id"] = json!(format!("again-{}", e["id"].as_str().unwrap_or_default()));
            e
        })
        .collect();
    let (status, body) = server.post("/v1/events?wait=true", &json!({"events": again}));
    assert_eq!(status, 200, "{body}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let log = server.log();
    assert_eq!(log.matches("automatic refine ran").count(), 1, "{log}");
    let (_, listed) = server.get("/v1/prompts/support-answer/proposals");
    assert_eq!(
        listed["proposals"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}

/// Claim items from `queue` until `event_id`'s comes up, then review it.
fn review(server: &Server, queue: &str, event_id: &str, review: Value) {
    let mut skip: Vec<String> = Vec::new();
    loop {
        let (status, claimed) =
            server.post(&format!("/v1/queues/{queue}/claim"), &json!({"skip": skip}));
        assert_eq!(status, 200, "{claimed}");
        let item = claimed["item"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{event_id} never came up in {queue}"))
            .to_string();
        if claimed["item"]["event_id"] == event_id {
            let (status, body) =
                server.post(&format!("/v1/queues/{queue}/items/{item}/review"), &review);
            assert_eq!(status, 200, "{body}");
            return;
        }
        server.post(
            &format!("/v1/queues/{queue}/items/{item}/release"),
            &json!({}),
        );
        skip.push(item);
    }
}

fn lines(server: &Server, path: &str) -> (Vec<Value>, Value) {
    let (status, text) = server.get_text(path);
    assert_eq!(status, 200, "{text}");
    let mut rows: Vec<Value> = text
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("line does not parse: {e}: {l}"))
        })
        .collect();
    let summary = rows.pop().expect("summary line");
    (rows, summary["_flywheel_summary"].clone())
}

fn skipped(summary: &Value) -> BTreeMap<String, u64> {
    serde_json::from_value(summary["skipped"].clone()).expect("skipped map")
}

#[test]
fn datasets_give_exactly_the_expected_rows() {
    let data = tempfile::tempdir().expect("tmp");
    let mut server = Server::start(Options {
        plugins: examples_without_sampling(),
        data_dir: Some(data.path().to_path_buf()),
        ..Options::default()
    });
    let mut dup = fixtures::json("event_correction_too_long");
    dup["id"] = json!("A-dup");
    let corpus = json!({"events": [
        fixtures::json("event_correction_too_long"),      // A: user correction
        fixtures::json("event_thumbs_down_ungrounded"),   // B: reviewer approves (rating 5)
        fixtures::json("event_clarification"),            // C: reviewer rejects with a correction (rating 2)
        fixtures::json("event_pii_email_card"),           // D: sensitive
        dup,                                              // E: same content as A
        fixtures::json("event_thumbs_up_grounded"),       // F: thumbs up, no review
        fixtures::json("event_no_feedback"),              // G: nothing to learn from
    ]});
    let (status, _) = server.post("/v1/events?wait=true", &corpus);
    assert_eq!(status, 200);
    review(
        &server,
        "labeling",
        "thumbs-down-ungrounded",
        json!({"verdict": "approve", "rating": 5}),
    );
    review(
        &server,
        "labeling",
        "clarification",
        json!({"verdict": "reject", "rating": 2, "corrected_output": "Click 'Forgot password' on the sign-in page.", "tags": ["missed-intent"]}),
    );

    let (sft, summary) = lines(&server, "/v1/datasets/sft");
    let assistant: Vec<&str> = sft
        .iter()
        .map(|r| r["messages"][1]["content"].as_str().expect("assistant"))
        .collect();
    assert_eq!(
        assistant,
        [
            "Yes: go to Account > Orders and edit the address before the order ships.",
            "Our Platinum Warranty from Zenith Corp lets you return any device within 90 days, and we refund 120% of the price.",
            "Click 'Forgot password' on the sign-in page.",
        ],
        "oldest first; events of one batch in the order sent: A (kept as A-dup), B, C"
    );
    for row in &sft {
        assert_eq!(row["messages"][0]["role"], "user");
        assert_eq!(row["messages"][1]["role"], "assistant");
    }
    assert_eq!(summary["rows"], 3);
    assert_eq!(
        skipped(&summary),
        BTreeMap::from([
            ("duplicate".into(), 1),
            ("no_correction_or_approval".into(), 2),
            ("sensitive".into(), 1)
        ])
    );

    let (dpo, summary) = lines(&server, "/v1/datasets/dpo");
    assert_eq!(dpo.len(), 2);
    assert_eq!(
        dpo[0]["chosen"],
        "Yes: go to Account > Orders and edit the address before the order ships."
    );
    assert!(
        dpo[0]["rejected"]
            .as_str()
            .expect("rejected")
            .starts_with("Thank you so much")
    );
    assert_eq!(dpo[1]["prompt"], "How do I reset my password?");
    assert_eq!(skipped(&summary)["no_correction"], 3);
    let (openai, _) = lines(&server, "/v1/datasets/dpo?format=openai");
    assert_eq!(openai.len(), 2);
    assert_eq!(
        openai[1]["preferred_output"][0]["content"],
        "Click 'Forgot password' on the sign-in page."
    );
    assert_eq!(openai[1]["non_preferred_output"][0]["role"], "assistant");
    assert_eq!(
        openai[1]["input"]["messages"][0]["content"],
        "How do I reset my password?"
    );

    let (status, body) = server.get("/v1/datasets/kto?format=openai");
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_value")),
        "{body}"
    );
    let (kto, summary) = lines(&server, "/v1/datasets/kto");
    let labels: Vec<(&str, bool)> = kto
        .iter()
        .map(|r| {
            (
                r["prompt"].as_str().expect("p"),
                r["label"].as_bool().expect("label"),
            )
        })
        .collect();
    assert_eq!(
        labels,
        [
            ("Can I change my delivery address?", false),
            ("How many days do I have to return a laptop?", true),
            ("How do I reset my password?", false),
            ("How many days do I have to return a laptop?", true),
        ],
        "A corrected, B approved by a reviewer over its thumbs-down, C rejected, F thumbs up"
    );
    assert_eq!(
        skipped(&summary),
        BTreeMap::from([
            ("duplicate".into(), 1),
            ("no_label".into(), 1),
            ("sensitive".into(), 1)
        ])
    );

    let (with_sensitive, _) = lines(&server, "/v1/datasets/kto?include_sensitive=true");
    assert_eq!(with_sensitive.len(), 5);
    let (quality, summary) = lines(&server, "/v1/datasets/sft?min_quality=0.5");
    assert_eq!(quality.len(), 2, "C's reviewer rated it 2/5");
    assert_eq!(skipped(&summary)["below_min_quality"], 1);
    let (status, body) = server.get("/v1/datasets/rlhf");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // The CLI writes the same rows from the data directory.
    server.kill9();
    let out = std::process::Command::new(flywheel_bin())
        .args(["export", "dpo", "--data"])
        .arg(data.path())
        .output()
        .expect("run export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("jsonl"))
        .collect();
    assert_eq!(cli, dpo);
}
