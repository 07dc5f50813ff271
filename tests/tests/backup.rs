//! Backups against the real server: `GET /v1/backup` while it runs, restored with
//! `flywheel restore` into a new data directory that a second server then serves as
//! it was; and `flywheel backup` of a stopped server, with damaged files refused.

use std::path::Path;
use std::process::Command;

use flywheel_tests::fixtures;
use flywheel_tests::server::tokens::{self, ADMIN, INGEST, REVIEWER};
use flywheel_tests::server::{Options, Server, examples_without_sampling, flywheel_bin};
use serde_json::{Value, json};

/// An answer the example router sends to the `labeling` queue.
fn ungrounded(id: &str) -> Value {
    let mut e = fixtures::json("event_thumbs_down_ungrounded");
    e["id"] = json!(id);
    e
}

/// Runs `flywheel <args>`: success, stdout as JSON, stderr.
fn flywheel(args: &[&str], extra: &[&Path]) -> (bool, Value, String) {
    let out = Command::new(flywheel_bin())
        .args(args)
        .args(extra)
        .output()
        .expect("run flywheel");
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What a client sees of an event and of the queues, without times that move.
fn queue_counts(server: &Server) -> Vec<(String, Value, Value, Value)> {
    let (status, list) = server.get("/v1/queues");
    assert_eq!(status, 200, "{list}");
    list["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| {
            (
                q["name"].as_str().unwrap_or_default().to_owned(),
                q["pending"].clone(),
                q["in_review"].clone(),
                q["done"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_backup_of_a_running_server_restores_into_a_new_one_as_it_was() {
    let config = tokens::config();
    let server = Server::with_examples_and(&config).with_token(ADMIN);
    let events: Vec<Value> = (0..6).map(|i| ungrounded(&format!("b-{i}"))).collect();
    let (status, body) = server.post("/v1/events?wait=true", &json!({"events": events}));
    assert_eq!(status, 200, "{body}");
    // One item held by Rita, one reviewed by her, the rest open.
    for _ in 0..2 {
        let (status, claimed) =
            server.post_as("/v1/queues/labeling/claim", &json!({}), Some(REVIEWER));
        assert_eq!(status, 200, "{claimed}");
    }
    let (_, held) = server.get("/v1/queues/labeling/items?status=in_review");
    let reviewed = held["items"][0]["id"].as_str().expect("item").to_owned();
    let (status, body) = server.post_as(
        &format!("/v1/queues/labeling/items/{reviewed}/review"),
        &json!({"verdict": "reject", "corrected_output": "The refund window is 30 days."}),
        Some(REVIEWER),
    );
    assert_eq!(status, 200, "{body}");
    let queues_then = queue_counts(&server);
    let (_, event_then) = server.get("/v1/events/b-3");
    let (_, audit_then) = server.get("/v1/queues/labeling/audit");

    // Only admins take backups.
    let status = |resp: reqwest::blocking::Response| resp.status().as_u16();
    assert_eq!(
        status(
            server
                .client
                .get(server.url("/v1/backup"))
                .send()
                .expect("GET")
        ),
        401
    );
    for token in [INGEST, REVIEWER] {
        let (code, err) = server.get_as("/v1/backup", Some(token));
        assert_eq!(code, 403, "{err}");
    }

    let resp = server.get_response("/v1/backup", Some(ADMIN));
    assert_eq!(resp.status().as_u16(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/octet-stream");
    assert!(
        header("content-disposition").starts_with("attachment; filename=\"flywheel-"),
        "{}",
        header("content-disposition")
    );
    let info: Value = serde_json::from_str(&header("x-flywheel-backup")).expect("summary header");
    assert_eq!(
        (info["events"].as_u64(), info["processed"].as_u64()),
        (Some(6), Some(6)),
        "{info}"
    );
    let length = header("content-length");
    let bytes = resp.bytes().expect("backup body");
    assert_eq!(length, bytes.len().to_string());
    assert_eq!(info["bytes"].as_u64(), Some(bytes.len() as u64), "{info}");

    // The server goes on; what comes after the backup is not in it.
    let (status, body) = server.post("/v1/events?wait=true", &ungrounded("after"));
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = server.get_text("/metrics");
    assert!(
        metrics.contains("flywheel_backups_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("flywheel_backup_last_success_timestamp_seconds"));

    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("flywheel.backup");
    std::fs::write(&file, &bytes).expect("write backup");
    let (ok, checked, stderr) = flywheel(&["restore", "--check"], &[&file]);
    assert!(ok, "{stderr}");
    assert_eq!(checked["events"], 6, "{checked}");
    assert_eq!(checked["entries"], info["entries"], "{checked}");

    let data = work.path().join("restored");
    let (ok, restored, stderr) = flywheel(&["restore", "--data"], &[&data, &file]);
    assert!(ok, "{stderr}");
    assert_eq!(restored["events"], 6, "{restored}");
    // Never over a store.
    let (ok, _, stderr) = flywheel(&["restore", "--data"], &[&data, &file]);
    assert!(!ok && stderr.contains("not empty"), "{stderr}");

    let again = Server::start(Options {
        plugins: examples_without_sampling(),
        config,
        data_dir: Some(data),
    })
    .with_token(ADMIN);
    let (_, ready) = again.get("/readyz");
    assert_eq!(ready["events"], 6, "{ready}");
    assert_eq!(again.get("/v1/events/after").0, 404);
    let (status, event_now) = again.get("/v1/events/b-3");
    assert_eq!(status, 200, "{event_now}");
    assert_eq!(event_now, event_then);
    assert_eq!(queue_counts(&again), queues_then);
    let (_, audit_now) = again.get("/v1/queues/labeling/audit");
    assert_eq!(audit_now, audit_then);
    // Rita's claim survived: she can finish the item she held.
    let (_, held) = again.get("/v1/queues/labeling/items?status=in_review");
    let item = held["items"][0]["id"]
        .as_str()
        .expect("held item")
        .to_owned();
    let (status, body) = again.post_as(
        &format!("/v1/queues/labeling/items/{item}/review"),
        &json!({"verdict": "approve"}),
        Some(REVIEWER),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn the_cli_backs_up_a_stopped_server_and_refuses_a_damaged_file() {
    let data = tempfile::tempdir().expect("tempdir");
    let options = Options::examples_in(data.path());
    let mut server = Server::start(options);
    let events: Vec<Value> = (0..4).map(|i| ungrounded(&format!("c-{i}"))).collect();
    let (status, body) = server.post("/v1/events?wait=true", &json!({"events": events}));
    assert_eq!(status, 200, "{body}");
    server.kill9();

    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("stopped.backup");
    let (ok, info, stderr) = flywheel(
        &["backup", "--data"],
        &[data.path(), Path::new("--out"), &file],
    );
    assert!(ok, "{stderr}");
    assert_eq!(info["events"], 4, "{info}");

    let mut bytes = std::fs::read(&file).expect("read backup");
    assert_eq!(info["bytes"].as_u64(), Some(bytes.len() as u64));
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let damaged = work.path().join("damaged.backup");
    std::fs::write(&damaged, &bytes).expect("write");
    let (ok, _, stderr) = flywheel(&["restore", "--check"], &[&damaged]);
    assert!(!ok && stderr.contains("checksum mismatch"), "{stderr}");
    let into = work.path().join("never");
    let (ok, _, stderr) = flywheel(&["restore", "--data"], &[&into, &damaged]);
    assert!(!ok, "{stderr}");
    assert!(
        !into.join("store").exists(),
        "a damaged backup left a store"
    );

    let (ok, _, stderr) = flywheel(&["restore", "--data"], &[&into, &file]);
    assert!(ok, "{stderr}");
    let restored = Server::start(Options::examples_in(into));
    let (_, ready) = restored.get("/readyz");
    assert_eq!(ready["events"], 4, "{ready}");
    let record = restored.wait_processed("c-2");
    assert_eq!(record["outcome"]["route"]["queue"], "labeling", "{record}");
}
