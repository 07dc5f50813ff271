//! A plugin's key-value data against the real server: operators list, read and clear
//! it through `/v1/plugins/{name}/kv`, a shadow candidate runs against its own copy
//! (never the live version's data), and that copy survives a restart and goes away
//! when shadowing stops.

use std::time::Duration;

use flywheel_tests::server::{Options, Server};
use flywheel_tests::{fixtures, plugins};
use serde_json::{Value, json};

const PLUGIN: &str = "compat-scorer";

/// The 0.1 fixture scorer counts its calls in kv key `seen` (a value of that many
/// bytes) and reports `calls=N` in its score's reason.
fn upload(server: &Server, tag: &str, extra: &str) -> Value {
    let resp = server
        .client
        .put(server.url(&format!(
            "/v1/plugins/{PLUGIN}?kind=scorer&version={tag}&config.tag={tag}{extra}"
        )))
        .header("content-type", "application/wasm")
        .body(std::fs::read(plugins::COMPAT_SCORER.wasm).expect("read wasm"))
        .send()
        .expect("PUT");
    let status = resp.status().as_u16();
    let body: Value = resp.json().unwrap_or(Value::Null);
    assert_eq!(status, 201, "{body}");
    body
}

/// Submits one event and returns the live scorer's call count, and the shadow's when
/// one ran.
fn submit(server: &Server, id: &str) -> (u64, Option<u64>) {
    let mut e = fixtures::json("event_thumbs_up_grounded");
    e["id"] = json!(id);
    let (status, body) = server.post("/v1/events?wait=true", &e);
    assert_eq!(status, 200, "{body}");
    let calls = |score: &Value| -> u64 {
        let reason = score["reason"].as_str().expect("reason");
        let n = reason.rsplit("calls=").next().expect("calls=");
        n.parse().unwrap_or_else(|_| panic!("calls in {reason}"))
    };
    let live = body["outcome"]["scores"]
        .as_array()
        .expect("scores")
        .iter()
        .find(|s| s["plugin"] == PLUGIN)
        .map(calls)
        .unwrap_or_else(|| panic!("a {PLUGIN} score in {body}"));
    let shadow = body["outcome"]["shadow"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["candidate"]["name"] == PLUGIN))
        .and_then(|run| {
            run["scores"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == "compat"))
                .map(calls)
        });
    (live, shadow)
}

fn value_len(server: &Server, query: &str) -> Option<usize> {
    let resp = server.get_response(&format!("/v1/plugins/{PLUGIN}/kv/seen{query}"), None);
    match resp.status().as_u16() {
        200 => {
            assert_eq!(resp.headers()["content-type"], "application/octet-stream");
            Some(resp.bytes().expect("bytes").len())
        }
        404 => None,
        other => panic!("GET kv/seen{query}: {other} {:?}", resp.text()),
    }
}

fn delete(server: &Server, path: &str) -> (u16, Value) {
    server.delete_as(path, None)
}

#[test]
fn operators_read_and_clear_a_plugins_kv_and_a_shadow_runs_on_its_own_copy() {
    let data = tempfile::tempdir().expect("tempdir");
    let options = Options::examples_in(data.path());
    let mut server = Server::start(options.clone());
    let first = upload(&server, "a", "");
    for i in 1..=3 {
        assert_eq!(submit(&server, &format!("live-{i}")), (i, None));
    }

    let (status, listed) = server.get(&format!("/v1/plugins/{PLUGIN}/kv"));
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["keys"], json!([{"key": "seen", "value_bytes": 3}]));
    assert_eq!(listed["usage_bytes"], 4 + 3);
    assert_eq!(listed["quota_bytes"], 64 * 1024);
    assert_eq!(listed["shadow"], false);
    assert_eq!(listed["version"], first["hash"]);
    assert_eq!(listed["next_after"], Value::Null);
    assert_eq!(value_len(&server, ""), Some(3));

    // A candidate in shadow starts from a copy of the live data and writes only to it:
    // the live count goes on by one per event, not two.
    let second = upload(&server, "b", "&shadow=true");
    assert_eq!(second["shadow"], second["hash"]);
    assert_eq!(submit(&server, "both-1"), (4, Some(4)));
    assert_eq!(submit(&server, "both-2"), (5, Some(5)));
    assert_eq!(value_len(&server, ""), Some(5));
    assert_eq!(value_len(&server, "?shadow=true"), Some(5));
    let (_, shadow_list) = server.get(&format!("/v1/plugins/{PLUGIN}/kv?shadow=true"));
    assert_eq!(shadow_list["version"], second["hash"]);
    assert_eq!(shadow_list["shadow"], true);
    // The shadow report compares a scorer's scores too: same values, other label.
    let (status, report) = server.get(&format!("/v1/plugins/{PLUGIN}/shadow/report"));
    assert_eq!(status, 200, "{report}");
    let compat = &report["scores"]["compat"];
    assert_eq!(
        (compat["events"].as_u64(), compat["changed"].as_u64()),
        (Some(2), Some(2)),
        "{report}"
    );
    assert_eq!(compat["live_mean"], compat["shadow_mean"], "{report}");
    assert_eq!(report["agreement"], 1.0, "{report}");

    // Clearing the shadow's copy leaves the live data alone, and the other way round.
    let (status, body) = delete(
        &server,
        &format!("/v1/plugins/{PLUGIN}/kv/seen?shadow=true"),
    );
    assert_eq!(
        (status, body["removed"].clone()),
        (200, json!(true)),
        "{body}"
    );
    assert_eq!(value_len(&server, "?shadow=true"), None);
    assert_eq!(submit(&server, "both-3"), (6, Some(1)));
    let (status, body) = delete(&server, &format!("/v1/plugins/{PLUGIN}/kv"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["removed_keys"],
            &body["removed_bytes"],
            &body["usage_bytes"]
        ),
        (&json!(1), &json!(4 + 6), &json!(0))
    );
    assert_eq!(submit(&server, "both-4"), (1, Some(2)));
    let (_, again) = delete(&server, &format!("/v1/plugins/{PLUGIN}/kv/missing"));
    assert_eq!(again["removed"], false, "{again}");

    // The copy survives a restart (kv writes reach the disk within sled's flush period).
    std::thread::sleep(Duration::from_millis(1_500));
    server.kill9();
    let mut server = Server::start(options.clone());
    assert_eq!(submit(&server, "after-restart"), (2, Some(3)));

    // Stopping the shadow drops its copy; shadowing again copies the live data afresh.
    let (status, body) = delete(&server, &format!("/v1/plugins/{PLUGIN}/shadow"));
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.get(&format!("/v1/plugins/{PLUGIN}/kv?shadow=true"));
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("no_shadow")),
        "{body}"
    );
    let (status, body) = server.post(
        &format!("/v1/plugins/{PLUGIN}/shadow"),
        &json!({"version": second["hash"]}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(submit(&server, "fresh-copy"), (3, Some(3)));

    // Promoting the candidate runs it on the live data; its copy goes.
    let (status, body) = server.post(
        &format!("/v1/plugins/{PLUGIN}/activate"),
        &json!({"version": second["hash"]}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(submit(&server, "promoted"), (4, None));

    // Every removal is in the plugin's audit trail.
    let (_, shown) = server.get(&format!("/v1/plugins/{PLUGIN}"));
    let actions: Vec<&str> = shown["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    for want in ["delete shadow kv key `seen`", "clear kv (1 key, 10 bytes)"] {
        assert!(actions.contains(&want), "{want} in {actions:?}");
    }
    assert!(
        !actions.iter().any(|a| a.contains("`missing`")),
        "{actions:?}"
    );

    // Paging and bad requests.
    for i in 0..3 {
        submit(&server, &format!("page-{i}"));
    }
    let (_, page) = server.get(&format!("/v1/plugins/{PLUGIN}/kv?limit=1&prefix=se"));
    assert_eq!(page["keys"][0]["key"], "seen", "{page}");
    let (_, page) = server.get(&format!("/v1/plugins/{PLUGIN}/kv?prefix=zz"));
    assert_eq!(page["keys"], json!([]), "{page}");
    for (path, status, code) in [
        ("/v1/plugins/nope/kv", 404, "not_found"),
        ("/v1/plugins/nope/kv/seen", 404, "not_found"),
        (
            &format!("/v1/plugins/{PLUGIN}/kv?limit=0"),
            400,
            "out_of_range",
        ),
        (
            &format!("/v1/plugins/{PLUGIN}/kv?colour=red"),
            400,
            "invalid_query",
        ),
        (
            &format!("/v1/plugins/{PLUGIN}/kv?shadow=maybe"),
            400,
            "invalid_query",
        ),
        (
            &format!("/v1/plugins/{PLUGIN}/kv/{}", "k".repeat(257)),
            400,
            "invalid_value",
        ),
        (&format!("/v1/plugins/{PLUGIN}/kv/absent"), 404, "not_found"),
    ] {
        let (got, body) = server.get(path);
        assert_eq!(
            (got, &body["error"]["code"]),
            (status, &json!(code)),
            "{path}: {body}"
        );
    }
    server.kill9();
}
