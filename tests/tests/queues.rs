//! The review queues against the real server: concurrent claims, lease expiry, items that
//! need several reviewers, the audit trail, reviews stored on their events, the
//! dashboard's numbers, and who may do what.

use std::collections::HashSet;
use std::time::Duration;

use flywheel_tests::fixtures;
use flywheel_tests::server::Server;
use flywheel_tests::server::tokens::{self, ADMIN, INGEST, REVIEWER};
use reqwest::Method;
use serde_json::{Value, json};

fn start(config: &str) -> Server {
    Server::with_examples_and(config)
}

/// Submits `n` answers that the example router sends to the `labeling` queue and waits
/// for their decisions; returns their event ids.
fn label_n(server: &Server, n: usize) -> Vec<String> {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            let mut e = fixtures::json("event_thumbs_down_ungrounded");
            e["id"] = json!(format!("ungrounded-{i}"));
            e
        })
        .collect();
    let (status, body) = server.post("/v1/events?wait=true", &json!({"events": events}));
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().expect("results");
    for r in results {
        assert_eq!(r["outcome"]["route"]["queue"], "labeling", "{r}");
    }
    results
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

/// A request on an open server, acting as the reviewer `who`.
fn act(
    server: &Server,
    method: Method,
    path: &str,
    who: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = server
        .client
        .request(method, server.url(path))
        .header("x-flywheel-reviewer", who);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn claim(server: &Server, who: &str) -> (u16, Value) {
    act(server, Method::POST, "/v1/queues/labeling/claim", who, None)
}

fn review(server: &Server, item: &str, who: &str, body: Value) -> (u16, Value) {
    act(
        server,
        Method::POST,
        &format!("/v1/queues/labeling/items/{item}/review"),
        who,
        Some(body),
    )
}

fn queue<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["name"] == name)
        .unwrap_or_else(|| panic!("no queue {name} in {list}"))
}

fn actions(server: &Server, item: &str) -> Vec<(String, String)> {
    let (status, body) = server.get(&format!("/v1/queues/labeling/audit?item={item}"));
    assert_eq!(status, 200, "{body}");
    body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            assert!(e["at"].as_u64().is_some_and(|at| at > 0), "{e}");
            (
                e["action"].as_str().expect("action").to_string(),
                e["actor"].as_str().expect("actor").to_string(),
            )
        })
        .collect()
}

fn pair(action: &str, actor: &str) -> (String, String) {
    (action.to_string(), actor.to_string())
}

/// Every page of the listing at `path` (a query string included), following
/// `next_cursor`: the `list` array of each.
fn pages(server: &Server, path: &str, list: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_string(),
        };
        let (status, body) = server.get(&url);
        assert_eq!(status, 200, "{url}: {body}");
        pages.push(body[list].as_array().expect("a list").clone());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return pages,
        }
        assert!(pages.len() < 100, "the pages never end");
    }
}

#[test]
fn concurrent_claims_never_hand_out_the_same_item() {
    let server = start("");
    label_n(&server, 24);
    let (_, before) = server.get("/v1/queues");
    assert_eq!(queue(&before, "labeling")["pending"], 24, "{before}");

    let claimed: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|t| {
                let server = &server;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        let (status, body) = claim(server, &format!("reviewer-{t}"));
                        assert_eq!(status, 200, "{body}");
                        if body["item"].is_null() {
                            return mine;
                        }
                        assert_eq!(body["item"]["lease"]["reviewer"], format!("reviewer-{t}"));
                        mine.push(body["item"]["id"].as_str().expect("id").to_string());
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let unique: HashSet<&String> = claimed.iter().collect();
    assert_eq!(claimed.len(), 24, "every item claimed once: {claimed:?}");
    assert_eq!(unique.len(), 24, "no item handed out twice");

    let (_, after) = server.get("/v1/queues");
    let labeling = queue(&after, "labeling");
    assert_eq!(
        (labeling["pending"].as_u64(), labeling["in_review"].as_u64()),
        (Some(0), Some(24)),
        "{after}"
    );
    let (_, metrics) = server.get_text("/metrics");
    assert!(
        metrics.contains("flywheel_queue_depth{queue=\"labeling\"} 0"),
        "{metrics}"
    );
    let (_, held) = server.get("/v1/queues/labeling/items?status=in_review");
    assert_eq!(held["items"].as_array().map(Vec::len), Some(24));
    assert_eq!(held["next_cursor"], Value::Null);
    // The same, ten at a time.
    let paged = pages(
        &server,
        "/v1/queues/labeling/items?status=in_review&limit=10",
        "items",
    );
    assert_eq!(paged.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 4]);
    assert_eq!(
        Some(&paged.concat()),
        held["items"].as_array(),
        "the pages make up the listing"
    );
    let (status, err) = server.get("/v1/queues/labeling/items?cursor=nope");
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_cursor")),
        "{err}"
    );
}

#[test]
fn an_expired_lease_puts_the_item_back() {
    let server = start("[[queues]]\nname = \"labeling\"\nclaim-timeout-secs = 1\n");
    label_n(&server, 1);
    let (_, first) = claim(&server, "alice");
    let item = first["item"]["id"].as_str().expect("an item").to_string();
    assert_eq!(
        first["event"]["id"], "ungrounded-0",
        "the claim comes with its event"
    );
    assert_eq!(
        claim(&server, "bob").1["item"],
        Value::Null,
        "alice holds the only item"
    );

    std::thread::sleep(Duration::from_millis(1300));
    let (_, list) = server.get("/v1/queues");
    assert_eq!(queue(&list, "labeling")["pending"], 1, "{list}");
    let (_, taken) = claim(&server, "bob");
    assert_eq!(taken["item"]["id"], item.as_str(), "the item came back");

    let (status, body) = review(&server, &item, "alice", json!({"verdict": "approve"}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_claimed")),
        "{body}"
    );
    assert_eq!(
        actions(&server, &item),
        [
            pair("claimed", "alice"),
            pair("lease_expired", "alice"),
            pair("claimed", "bob")
        ]
    );

    // Bob's lease passes too, and nobody has taken the item: his review is refused.
    std::thread::sleep(Duration::from_millis(1300));
    let (status, body) = review(&server, &item, "bob", json!({"verdict": "approve"}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("lease_expired")),
        "{body}"
    );
}

#[test]
fn an_item_needs_its_reviewers_and_shows_their_disagreement() {
    let server = start(
        "[[queues]]\nname = \"labeling\"\nreviewers-required = 2\ninstructions = \"Check the facts.\"\n",
    );
    let event = label_n(&server, 1).remove(0);
    let (_, first) = claim(&server, "alice");
    assert_eq!(first["queue"]["instructions"], "Check the facts.");
    assert!(
        first["event"]["outcome"]["scores"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{first}"
    );
    let item = first["item"]["id"].as_str().expect("an item").to_string();
    let (status, refused) = review(
        &server,
        &item,
        "alice",
        json!({"verdict": "approve", "tags": ["ok\u{0007}"]}),
    );
    assert_eq!(
        (status, &refused["error"]["code"]),
        (400, &json!("invalid_value")),
        "a tag with a control character: {refused}"
    );
    let (status, after_one) = review(
        &server,
        &item,
        "alice",
        json!({"verdict": "approve", "rating": 4, "corrected_output": "Laptops: 30 days.", "tags": ["ok"]}),
    );
    assert_eq!(status, 200, "{after_one}");
    assert_eq!(after_one["item"]["status"], "pending", "one of two reviews");
    assert_eq!(
        claim(&server, "alice").1["item"],
        Value::Null,
        "alice has reviewed it already"
    );

    let (_, second) = claim(&server, "bob");
    assert_eq!(second["item"]["id"], item.as_str());
    let (status, done) = review(
        &server,
        &item,
        "bob",
        json!({"verdict": "reject", "rating": 2, "tags": ["hallucination", "policy"],
               "corrected_output": "You can return a laptop within 30 days of delivery.", "note": "invented a warranty"}),
    );
    assert_eq!(status, 200, "{done}");
    let done = &done["item"];
    assert_eq!(done["status"], "done");
    assert_eq!(done["disagreement"], true);
    assert_eq!(done["reviews_required"], 2);
    let verdicts: Vec<&str> = done["reviews"]
        .as_array()
        .expect("reviews")
        .iter()
        .filter_map(|r| r["verdict"].as_str())
        .collect();
    assert_eq!(verdicts, ["approve", "reject"]);
    assert_eq!(
        claim(&server, "carol").1["item"],
        Value::Null,
        "done items are not handed out"
    );
    let (status, again) = review(&server, &item, "bob", json!({"verdict": "approve"}));
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("item_done"))
    );

    let (_, listed) = server.get("/v1/queues/labeling/items?status=done");
    assert_eq!(listed["items"][0]["id"], item.as_str());
    let (_, list) = server.get("/v1/queues");
    let labeling = queue(&list, "labeling");
    assert_eq!(
        (labeling["done"].as_u64(), labeling["pending"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(labeling["reviewers_required"], 2);

    // The reviews are feedback on the event; the latest correction is its correction.
    let record = server.wait_processed(&event);
    assert_eq!(
        record["feedback"],
        json!({"type": "thumbs", "value": "down"}),
        "original feedback kept"
    );
    assert_eq!(record["reviews"].as_array().map(Vec::len), Some(2));
    assert_eq!(record["reviews"][1]["reviewer"], "bob");
    assert_eq!(
        record["reviews"][1]["tags"],
        json!(["hallucination", "policy"])
    );
    assert_eq!(
        record["correction"],
        json!({"text": "You can return a laptop within 30 days of delivery.", "source": "review", "reviewer": "bob"})
    );

    assert_eq!(
        actions(&server, &item),
        [
            pair("claimed", "alice"),
            pair("reviewed", "alice"),
            pair("claimed", "bob"),
            pair("reviewed", "bob"),
            pair("completed", "bob"),
        ]
    );

    // The dashboard sees the prompt's volume and satisfaction, and the queue's throughput.
    let (status, stats) = server.get("/v1/stats/prompts?bucket=hour");
    assert_eq!(status, 200, "{stats}");
    let prompt = stats["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .find(|p| p["name"] == "support-answer")
        .expect("prompt");
    assert_eq!(
        (prompt["version"].as_str(), prompt["events"].as_u64()),
        (Some("3"), Some(1)),
        "{prompt}"
    );
    assert!(
        prompt["satisfaction"].as_f64().is_some_and(|s| s < 0.5),
        "thumbs down: {prompt}"
    );
    assert_eq!(prompt["buckets"].as_array().map(Vec::len), Some(24));
    let labeling = stats["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["queue"] == "labeling")
        .expect("queue");
    assert_eq!(
        (labeling["reviews"].as_u64(), labeling["completed"].as_u64()),
        (Some(2), Some(1)),
        "{labeling}"
    );
}

#[test]
fn release_and_bad_requests() {
    let server = start("");
    label_n(&server, 2);
    let (_, claimed) = claim(&server, "alice");
    let item = claimed["item"]["id"].as_str().expect("an item").to_string();

    for (body, code) in [
        (json!({}), "missing_field"),
        (json!({"verdict": "maybe"}), "invalid_body"),
        (json!({"verdict": "approve", "rating": 9}), "out_of_range"),
        (json!({"verdict": "approve", "stars": 3}), "invalid_body"),
    ] {
        let (status, err) = review(&server, &item, "alice", body.clone());
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {err}"
        );
    }
    let (status, err) = review(
        &server,
        "01NOSUCHITEM0000000000000",
        "alice",
        json!({"verdict": "approve"}),
    );
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{err}"
    );
    let (status, err) = review(&server, &item, "bob", json!({"verdict": "approve"}));
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("not_claimed")),
        "{err}"
    );

    let release = format!("/v1/queues/labeling/items/{item}/release");
    assert_eq!(
        act(&server, Method::POST, &release, "bob", None).0,
        409,
        "only the holder releases"
    );
    let (status, released) = act(&server, Method::POST, &release, "alice", None);
    assert_eq!(
        (status, released["item"]["status"].as_str()),
        (200, Some("pending")),
        "{released}"
    );
    // Skipping passes over an item without releasing anything else.
    let (_, next) = act(
        &server,
        Method::POST,
        "/v1/queues/labeling/claim",
        "alice",
        Some(json!({"skip": [item]})),
    );
    assert_ne!(next["item"]["id"], item.as_str());
    assert_eq!(
        actions(&server, &item),
        [pair("claimed", "alice"), pair("released", "alice")]
    );

    let (status, err) = server.get("/v1/queues/labeling/items?status=bogus");
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_value"))
    );
    let (_, one) = server.get(&format!("/v1/queues/labeling/items/{item}"));
    assert_eq!(
        (one["item"]["status"].as_str(), one["event"]["id"].as_str()),
        (Some("pending"), Some("ungrounded-0"))
    );
    assert_eq!(server.get("/v1/queues/labeling/items/nope").0, 404);
}

#[test]
fn the_audit_trail_pages_by_cursor_time_and_order() {
    let server = start("");
    label_n(&server, 6);
    let mut held = Vec::new();
    for _ in 0..6 {
        let (_, claimed) = claim(&server, "alice");
        held.push(claimed["item"]["id"].as_str().expect("an item").to_string());
    }
    for item in &held[..3] {
        let release = format!("/v1/queues/labeling/items/{item}/release");
        assert_eq!(act(&server, Method::POST, &release, "alice", None).0, 200);
    }
    let (_, whole) = server.get("/v1/queues/labeling/audit");
    let whole = whole["entries"].as_array().expect("entries").clone();
    assert_eq!(whole.len(), 9, "6 claims and 3 releases: {whole:?}");
    let at = |e: &Value| e["at"].as_u64().expect("at");
    assert!(
        whole.windows(2).all(|w| at(&w[0]) <= at(&w[1])),
        "oldest first"
    );

    let oldest = pages(&server, "/v1/queues/labeling/audit?limit=4", "entries");
    assert_eq!(oldest.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 1]);
    assert_eq!(oldest.concat(), whole, "the pages make up the trail");

    let newest = pages(
        &server,
        "/v1/queues/labeling/audit?order=desc&limit=4",
        "entries",
    );
    let mut reversed = whole.clone();
    reversed.reverse();
    assert_eq!(newest.concat(), reversed, "newest first");

    // A time range: from the fifth entry's time on (entries in that millisecond too).
    let from = at(&whole[4]);
    let (_, since) = server.get(&format!("/v1/queues/labeling/audit?from={from}"));
    let expected: Vec<Value> = whole.iter().filter(|e| at(e) >= from).cloned().collect();
    assert_eq!(since["entries"].as_array(), Some(&expected));
    let (_, before) = server.get(&format!("/v1/queues/labeling/audit?to={from}"));
    let expected: Vec<Value> = whole.iter().filter(|e| at(e) < from).cloned().collect();
    assert_eq!(before["entries"].as_array(), Some(&expected));
    // One item, newest first.
    let item = &held[0];
    let (_, one) = server.get(&format!("/v1/queues/labeling/audit?item={item}&order=desc"));
    let actions: Vec<&str> = one["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, ["released", "claimed"]);

    for (query, code) in [
        ("order=sideways", "invalid_value"),
        ("cursor=not-hex", "invalid_cursor"),
        ("cursor=00ff", "invalid_cursor"),
        ("limit=0", "out_of_range"),
        ("since=1", "invalid_query"),
    ] {
        let (status, err) = server.get(&format!("/v1/queues/labeling/audit?{query}"));
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}: {err}"
        );
    }
}

#[test]
fn old_audit_entries_age_out_when_configured() {
    // 0.00003 days is 2.6 s; sweeps every second. Events are kept (no `max-age-days`).
    let server = start("[retention]\naudit-max-age-days = 0.00003\nsweep-interval-secs = 1\n");
    let ids = label_n(&server, 1);
    let (_, claimed) = claim(&server, "alice");
    let item = claimed["item"]["id"].as_str().expect("an item").to_string();
    assert_eq!(actions(&server, &item), [pair("claimed", "alice")]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !actions(&server, &item).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the audit entry never aged out: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        server
            .log()
            .contains("retention: removed old queue audit entries")
    );
    let (_, metrics) = server.get_text("/metrics");
    assert!(
        metrics.contains("flywheel_audit_entries_pruned_total 1"),
        "{metrics}"
    );
    // Only the trail ages out: the event and its item stay, and new entries are kept.
    assert_eq!(server.get(&format!("/v1/events/{}", ids[0])).0, 200);
    let release = format!("/v1/queues/labeling/items/{item}/release");
    assert_eq!(act(&server, Method::POST, &release, "alice", None).0, 200);
    assert_eq!(actions(&server, &item), [pair("released", "alice")]);
}

#[test]
fn only_reviewers_and_admins_work_queues_and_the_token_names_the_reviewer() {
    let server = start(&tokens::config()).with_token(ADMIN);
    label_n(&server, 2);
    let path = "/v1/queues/labeling/claim";
    let none = server.client.post(server.url(path)).send().expect("POST");
    assert_eq!(none.status().as_u16(), 401);
    let (status, err) = server.post_as(path, &json!({}), Some(INGEST));
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{err}"
    );
    assert_eq!(server.get_as("/v1/queues", Some(INGEST)).0, 403);
    assert_eq!(server.get_as("/v1/stats/prompts", Some(INGEST)).0, 403);

    // The header cannot name someone else once tokens are configured.
    let resp = server
        .client
        .post(server.url(path))
        .bearer_auth(REVIEWER)
        .header("x-flywheel-reviewer", "mallory")
        .send()
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().expect("json");
    assert_eq!(body["item"]["lease"]["reviewer"], "rita");
    let (status, by_admin) = server.post(path, &json!({}));
    assert_eq!(
        (status, by_admin["item"]["lease"]["reviewer"].as_str()),
        (200, Some("ops"))
    );

    let (_, me) = server.get_as("/v1/whoami", Some(REVIEWER));
    assert_eq!(
        me,
        json!({"name": "rita", "role": "reviewer", "open": false})
    );
}
