//! Erasing events against the real server: by id and by user (a data-protection
//! request), with their queue items whatever their state, only by admins; and the
//! retention sweeper erasing old events on its own.

use std::time::{Duration, Instant};

use flywheel_tests::fixtures;
use flywheel_tests::server::tokens::{self, ADMIN, INGEST, REVIEWER};
use flywheel_tests::server::{Options, Server, flywheel_bin};
use serde_json::{Value, json};

/// An answer the example router sends to the `labeling` queue, from `user`.
fn ungrounded(id: &str, user: &str) -> Value {
    let mut e = fixtures::json("event_thumbs_down_ungrounded");
    e["id"] = json!(id);
    e["user_id"] = json!(user);
    e
}

fn labeling(server: &Server) -> (u64, u64) {
    let (status, list) = server.get("/v1/queues");
    assert_eq!(status, 200, "{list}");
    let q = list["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["name"] == "labeling")
        .unwrap_or_else(|| panic!("no labeling queue in {list}"));
    (
        q["pending"].as_u64().expect("pending"),
        q["in_review"].as_u64().expect("in_review"),
    )
}

/// The value of a counter line in `/metrics`, 0 when absent.
fn metric(server: &Server, line_start: &str) -> f64 {
    let (_, text) = server.get_text("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn admins_erase_events_by_id_or_by_user_with_their_queue_items() {
    let server = Server::with_examples_and(&tokens::config()).with_token(ADMIN);
    let events: Vec<Value> = (0..3)
        .map(|i| ungrounded(&format!("forget-{i}"), "u-forget"))
        .chain((0..2).map(|i| ungrounded(&format!("keep-{i}"), "u-keep")))
        .collect();
    let (status, body) = server.post("/v1/events?wait=true", &json!({"events": events}));
    assert_eq!(status, 200, "{body}");
    for r in body["results"].as_array().expect("results") {
        assert_eq!(r["outcome"]["route"]["queue"], "labeling", "{r}");
    }
    assert_eq!(labeling(&server), (5, 0));
    // Rita holds the oldest item: one of the events to forget.
    let (status, claimed) = server.post_as("/v1/queues/labeling/claim", &json!({}), Some(REVIEWER));
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["item"]["event_id"], "forget-0", "{claimed}");
    let held = claimed["item"]["id"].as_str().expect("item id").to_string();

    // Only admins erase.
    let one = "/v1/events/forget-1";
    assert_eq!(
        server
            .client
            .delete(server.url(one))
            .send()
            .expect("DELETE")
            .status()
            .as_u16(),
        401
    );
    for token in [INGEST, REVIEWER] {
        let (status, err) = server.delete_as(one, Some(token));
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{err}"
        );
    }
    assert_eq!(server.get(one).0, 200, "a refused erasure erased nothing");

    let (status, body) = server.delete_as(one, None);
    assert_eq!(
        (status, body),
        (
            200,
            json!({"id": "forget-1", "erased": true, "queue_items": 1})
        )
    );
    let (status, err) = server.get(one);
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{err}"
    );
    let (status, err) = server.delete_as(one, None);
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{err}"
    );
    assert_eq!(labeling(&server), (3, 1));

    // By filter: one is required, and paging does not apply.
    let (status, err) = server.delete_as("/v1/events", None);
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("missing_filter")),
        "{err}"
    );
    let (status, err) = server.delete_as("/v1/events?user_id=u-forget&limit=5", None);
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_value")),
        "{err}"
    );
    let (status, err) = server.delete_as("/v1/events?route=sideways", None);
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_value")),
        "{err}"
    );

    let (status, listed) = server.get("/v1/events?user_id=u-forget");
    assert_eq!(
        (status, listed["events"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{listed}"
    );
    let (status, body) = server.delete_as("/v1/events?user_id=u-forget", None);
    assert_eq!(
        (status, body),
        (200, json!({"erased": 2, "queue_items": 2}))
    );
    let (_, listed) = server.get("/v1/events?user_id=u-forget");
    assert_eq!(listed["events"], json!([]), "{listed}");
    let (_, kept) = server.get("/v1/events?user_id=u-keep");
    assert_eq!(kept["events"].as_array().map(Vec::len), Some(2), "{kept}");
    assert_eq!(
        labeling(&server),
        (2, 0),
        "the held item went with its event"
    );

    // Rita's lease went with the item.
    let (status, err) = server.post_as(
        &format!("/v1/queues/labeling/items/{held}/review"),
        &json!({"verdict": "approve"}),
        Some(REVIEWER),
    );
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{err}"
    );
    let (_, trail) = server.get(&format!("/v1/queues/labeling/audit?item={held}"));
    let actions: Vec<(&str, &str)> = trail["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["actor"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(actions, [("claimed", "rita"), ("erased", "ops")], "{trail}");
    let (_, next) = server.post_as("/v1/queues/labeling/claim", &json!({}), Some(REVIEWER));
    assert_eq!(next["item"]["event_id"], "keep-0", "{next}");

    assert_eq!(
        metric(&server, "flywheel_events_erased_total{cause=\"request\"}"),
        3.0
    );
    let (_, ready) = server.get("/readyz");
    assert_eq!(ready["events"], 2, "{ready}");
    // An erased id is forgotten: the same id is a new event, not a duplicate.
    let (status, body) = server.post("/v1/events", &ungrounded("forget-1", "u-forget"));
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("accepted")),
        "{body}"
    );
}

#[test]
fn retention_erases_old_events_on_its_own() {
    // 0.0001 days is 8.64 s; sweeps every second.
    let server =
        Server::with_examples_and("[retention]\nmax-age-days = 0.0001\nsweep-interval-secs = 1\n");
    let (status, body) = server.post("/v1/events?wait=true", &ungrounded("old", "u1"));
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.get("/v1/events/old").0 != 404 {
        assert!(
            Instant::now() < deadline,
            "not erased in time: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(labeling(&server), (0, 0), "its queue item went too");
    let (status, body) = server.post("/v1/events?wait=true", &ungrounded("new", "u1"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("/v1/events/new").0, 200, "a young event stays");
    assert!(metric(&server, "flywheel_events_erased_total{cause=\"retention\"}") >= 1.0);
    assert!(server.log().contains("retention: erased old events"));
}

#[test]
fn the_cli_erases_from_a_stopped_servers_data() {
    let data = tempfile::tempdir().expect("tempdir");
    let options = Options::examples_in(data.path());
    let mut server = Server::start(options.clone());
    let events = json!({"events": [
        ungrounded("a", "u-x"), ungrounded("b", "u-x"), ungrounded("c", "u-y"), ungrounded("d", "u-y"),
    ]});
    let (status, body) = server.post("/v1/events?wait=true", &events);
    assert_eq!(status, 200, "{body}");
    server.kill9();

    let erase = |args: &[&str]| {
        let out = std::process::Command::new(flywheel_bin())
            .arg("erase")
            .args(args)
            .arg("--data")
            .arg(data.path())
            .output()
            .expect("run erase");
        let stdout: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (
            out.status.success(),
            stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, stderr) = erase(&[]);
    assert!(!ok && stderr.contains("name what to erase"), "{stderr}");
    // The API's filters, checked as the API checks them.
    let (ok, _, stderr) = erase(&["--feedback", "emoji"]);
    assert!(!ok && stderr.contains("unknown feedback type"), "{stderr}");
    let (ok, out, stderr) = erase(&["--route", "review", "--feedback", "comment"]);
    assert!(ok, "{stderr}");
    assert_eq!(out["erased"], 0, "{out}");
    let (ok, out, stderr) = erase(&["--user-id", "u-x", "--id", "c", "--id", "nope"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        out,
        json!({"erased": 3, "queue_items": 3, "not_found": ["nope"]})
    );

    let server = Server::start(options);
    let (_, ready) = server.get("/readyz");
    assert_eq!(ready["events"], 1, "{ready}");
    for (id, want) in [("a", 404), ("b", 404), ("c", 404), ("d", 200)] {
        assert_eq!(server.get(&format!("/v1/events/{id}")).0, want, "{id}");
    }
    assert_eq!(labeling(&server), (1, 0));
}
