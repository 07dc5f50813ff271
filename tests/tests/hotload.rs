//! Hot-loading against the real server: upload → validate → activate, refused uploads
//! that leave the live version serving, rollback, shadow agreement, quarantine,
//! hot-load from the plugin directory, persistence across restarts, swaps under load,
//! and replay with exact change counts.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flywheel_tests::server::{
    Options, Server, StagedPlugin, examples_without_sampling, flywheel_bin, stage,
};
use flywheel_tests::{fixtures, plugins};
use serde_json::{Value, json};

/// PUT a component with manifest fields as query parameters.
fn put_wasm(server: &Server, name: &str, query: &str, wasm: Vec<u8>) -> (u16, Value) {
    let resp = server
        .client
        .put(server.url(&format!("/v1/plugins/{name}?{query}")))
        .header("content-type", "application/wasm")
        .body(wasm)
        .send()
        .expect("PUT");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn wasm(a: &flywheel_tests::Artifact) -> Vec<u8> {
    std::fs::read(a.wasm).expect("read wasm")
}

fn live_hash(server: &Server, name: &str) -> String {
    let (status, body) = server.get(&format!("/v1/plugins/{name}"));
    assert_eq!(status, 200, "{body}");
    body["live"]["hash"]
        .as_str()
        .expect("live hash")
        .to_string()
}

fn hash_used_for(outcome: &Value, plugin: &str) -> Vec<String> {
    outcome["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter(|p| p["name"] == plugin)
        .map(|p| p["hash"].as_str().expect("hash").to_string())
        .collect()
}

fn submit_wait(server: &Server, fixture: &str, id: &str) -> Value {
    let mut e = fixtures::json(fixture);
    e["id"] = json!(id);
    let (status, body) = server.post("/v1/events?wait=true", &e);
    assert_eq!(status, 200, "{body}");
    body["outcome"].clone()
}

/// A plugin built against the archived 0.1.0 contract is uploaded, checked and run by
/// the server beside 0.2 plugins; the API says which contract each one uses.
#[test]
fn a_plugin_built_against_contract_0_1_is_hot_loaded_and_runs() {
    let server = Server::with_examples();
    let (status, body) = put_wasm(
        &server,
        "compat-scorer",
        "kind=scorer&version=0.1.0&config.tag=uploaded",
        wasm(&plugins::COMPAT_SCORER),
    );
    assert_eq!(status, 201, "{body}");
    let outcome = submit_wait(&server, "event_thumbs_up_grounded", "compat-1");
    let compat = outcome["scores"]
        .as_array()
        .expect("scores")
        .iter()
        .find(|s| s["plugin"] == "compat-scorer")
        .unwrap_or_else(|| panic!("a compat score in {outcome}"))
        .clone();
    assert_eq!(compat["label"], "uploaded", "{compat}");
    assert!(
        compat["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("id=compat-1"),
        "{compat}"
    );
    // The 0.2 examples ran beside it on the same event.
    assert!(
        outcome["scores"]
            .as_array()
            .expect("scores")
            .iter()
            .any(|s| s["plugin"] == "groundedness"),
        "{outcome}"
    );
    let (_, list) = server.get("/v1/plugins");
    let contract = |name: &str| {
        list["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["live"]["contract"].clone())
    };
    assert_eq!(contract("compat-scorer"), Some(json!("0.1.0")), "{list}");
    assert_eq!(contract("groundedness"), Some(json!("0.2.0")), "{list}");
}

#[test]
fn upload_activate_rollback_and_refusals() {
    let server = Server::with_examples();
    let original = live_hash(&server, "satisfaction");

    // Not wasm, the wrong world, and a plugin that traps on the fixtures: all refused.
    let (status, body) = put_wasm(
        &server,
        "satisfaction",
        "version=9.9.9",
        b"not wasm at all".to_vec(),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("not_a_component")),
        "{body}"
    );
    let (status, body) = put_wasm(
        &server,
        "satisfaction",
        "version=9.9.9",
        wasm(&plugins::HITL_ROUTER),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("wrong_world")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("`score`"),
        "{body}"
    );
    let (status, body) = put_wasm(
        &server,
        "satisfaction",
        "version=9.9.9",
        wasm(&plugins::HOSTILE_PANIC),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("smoke_failed")),
        "{body}"
    );
    let (status, body) = put_wasm(
        &server,
        "satisfaction",
        "kind=router",
        wasm(&plugins::SATISFACTION),
    );
    assert_eq!(
        status, 409,
        "a scorer's name cannot become a router: {body}"
    );
    assert_eq!(
        live_hash(&server, "satisfaction"),
        original,
        "the live version keeps serving"
    );
    assert_eq!(
        hash_used_for(
            &submit_wait(&server, "event_thumbs_up_grounded", "e1"),
            "satisfaction"
        ),
        std::slice::from_ref(&original)
    );

    // A new version (same code, new manifest version) is stored, then activated.
    let (status, stored) = put_wasm(
        &server,
        "satisfaction",
        "version=0.2.0&activate=false",
        wasm(&plugins::SATISFACTION),
    );
    assert_eq!(status, 201, "{stored}");
    let v2 = stored["hash"].as_str().expect("hash").to_string();
    assert_ne!(v2, original);
    assert_eq!(
        live_hash(&server, "satisfaction"),
        original,
        "stored, not live yet"
    );
    let (status, again) = put_wasm(
        &server,
        "satisfaction",
        "version=0.2.0&activate=false",
        wasm(&plugins::SATISFACTION),
    );
    assert_eq!(
        (status, again["created"].as_bool()),
        (200, Some(false)),
        "same bytes twice: idempotent"
    );

    let (status, body) = server.post(
        "/v1/plugins/satisfaction/activate",
        &json!({"version": "0.2.0"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(live_hash(&server, "satisfaction"), v2);
    assert_eq!(
        hash_used_for(
            &submit_wait(&server, "event_thumbs_up_grounded", "e2"),
            "satisfaction"
        ),
        std::slice::from_ref(&v2)
    );

    let (status, _) = server.post("/v1/plugins/satisfaction/rollback", &json!({}));
    assert_eq!(status, 200);
    assert_eq!(live_hash(&server, "satisfaction"), original);
    assert_eq!(
        hash_used_for(
            &submit_wait(&server, "event_thumbs_up_grounded", "e3"),
            "satisfaction"
        ),
        std::slice::from_ref(&original)
    );

    // Disable, enable, retire; the list shows status and stats.
    let (status, body) = server.post("/v1/plugins/satisfaction/disable", &json!({}));
    assert_eq!((status, body["status"].as_str()), (200, Some("disabled")));
    assert!(
        hash_used_for(
            &submit_wait(&server, "event_thumbs_up_grounded", "e4"),
            "satisfaction"
        )
        .is_empty()
    );
    let (status, body) = server.post("/v1/plugins/satisfaction/enable", &json!({}));
    assert_eq!((status, body["status"].as_str()), (200, Some("active")));
    let (_, list) = server.get("/v1/plugins");
    let sat = list["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .find(|p| p["name"] == "satisfaction")
        .expect("listed")
        .clone();
    assert!(
        sat["live"]["stats"]["calls"].as_u64().expect("calls") >= 2,
        "{sat}"
    );
    assert!(sat["live"]["stats"]["p99_us"].is_u64(), "{sat}");
    let resp = server
        .client
        .delete(server.url("/v1/plugins/satisfaction"))
        .send()
        .expect("DELETE");
    assert_eq!(resp.status().as_u16(), 200);
    let (_, shown) = server.get("/v1/plugins/satisfaction");
    assert_eq!(shown["status"], "retired");
    assert_eq!(
        shown["versions"].as_array().map(Vec::len),
        Some(2),
        "history kept"
    );
    assert!(shown["audit"].as_array().expect("audit").len() >= 5);

    // Media types match whatever their case; a bare `config.` and a part sent twice are
    // refused.
    let resp = server
        .client
        .put(server.url("/v1/plugins/satisfaction?activate=true"))
        .header("content-type", "Application/WASM")
        .body(wasm(&plugins::SATISFACTION))
        .send()
        .expect("PUT");
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text());
    let (status, body) = put_wasm(
        &server,
        "satisfaction",
        "config.=x",
        wasm(&plugins::SATISFACTION),
    );
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_value")),
        "{body}"
    );
    let (status, body) = put_wasm(
        &server,
        "satisfaction",
        "kind=scorer&kind=router",
        wasm(&plugins::SATISFACTION),
    );
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("duplicate_field")),
        "{body}"
    );
    // A hash prefix under 8 characters is refused as such, not as "no version".
    let live = live_hash(&server, "satisfaction");
    let (status, body) = server.post(
        "/v1/plugins/satisfaction/activate",
        &json!({"version": &live[..4]}),
    );
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_value")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("8 or more"),
        "{body}"
    );
    let manifest = std::fs::read_to_string(plugins::SATISFACTION.manifest).expect("manifest");
    let multipart = format!(
        "--b\r\ncontent-disposition: form-data; name=\"manifest\"\r\n\r\n{manifest}\r\n\
         --b\r\ncontent-disposition: form-data; name=\"manifest\"\r\n\r\n{manifest}\r\n--b--\r\n"
    );
    let resp = server
        .client
        .put(server.url("/v1/plugins/satisfaction"))
        .header("content-type", "multipart/form-data; boundary=b")
        .body(multipart)
        .send()
        .expect("PUT");
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().expect("json");
    assert_eq!(body["error"]["code"], "duplicate_field", "{body}");
}

#[test]
fn a_shadow_candidate_is_recorded_apart_and_reports_agreement() {
    let server = Server::with_examples();
    // Candidate: the same router sampling every accepted answer into QA.
    let (status, body) = put_wasm(
        &server,
        "hitl-router",
        "version=0.2.0&shadow=true&config.qa-sample-rate=1",
        wasm(&plugins::HITL_ROUTER),
    );
    assert_eq!(status, 201, "{body}");
    let candidate = body["hash"].as_str().expect("hash").to_string();
    let accept = submit_wait(&server, "event_thumbs_up_grounded", "s1");
    assert_eq!(
        accept["route"]["action"], "accept",
        "the shadow never routes: {accept}"
    );
    assert_eq!(accept["shadow"][0]["candidate"]["hash"], candidate.as_str());
    assert_eq!(accept["shadow"][0]["route"]["queue"], "qa");
    assert_eq!(accept["shadow"][0]["agrees"], false);
    let review = submit_wait(&server, "event_pii_email_card", "s2");
    assert_eq!(review["shadow"][0]["agrees"], true, "{review}");
    submit_wait(&server, "event_thumbs_up_grounded", "s3");

    let (status, report) = server.get("/v1/plugins/hitl-router/shadow/report");
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["events"].as_u64(), report["agree"].as_u64()),
        (Some(3), Some(1)),
        "{report}"
    );
    let differing: Vec<&str> = report["differing"]
        .as_array()
        .expect("differing")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(differing, ["s1", "s3"]);
    assert_eq!(
        report["route_changes"],
        json!([{"from": "accept", "to": "label:qa", "count": 2}])
    );
    // It reads from when the candidate went into shadow; a window and a limit narrow it.
    let since = report["from"].as_u64().expect("from: the shadow's start");
    let (_, newest) = server.get("/v1/plugins/hitl-router/shadow/report?limit=1");
    assert_eq!(newest["differing"][0]["id"], "s3", "{newest}");
    assert_eq!(newest["differing"].as_array().map(Vec::len), Some(1));
    let later = since + 3_600_000;
    let (_, none) = server.get(&format!(
        "/v1/plugins/hitl-router/shadow/report?from={later}"
    ));
    assert_eq!(none["events"], 0, "{none}");
    assert_eq!(
        none["agreement"],
        Value::Null,
        "no events, no agreement: {none}"
    );
    // The candidate named as `activate` takes it: by manifest version too; a version
    // that does not exist is a 404, not an empty report.
    let (status, by_version) = server.get("/v1/plugins/hitl-router/shadow/report?version=0.2.0");
    assert_eq!(status, 200, "{by_version}");
    assert_eq!(
        (
            by_version["events"].as_u64(),
            by_version["candidate"].as_str()
        ),
        (Some(3), Some(candidate.as_str()))
    );
    let (status, body) = server.get("/v1/plugins/hitl-router/shadow/report?version=9.9.9");
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("not_found")),
        "{body}"
    );

    // Promote the candidate: it serves, and nothing shadows any more.
    let (status, _) = server.post(
        "/v1/plugins/hitl-router/activate",
        &json!({"version": candidate}),
    );
    assert_eq!(status, 200);
    let promoted = submit_wait(&server, "event_thumbs_up_grounded", "s4");
    assert_eq!(promoted["route"]["queue"], "qa");
    assert!(promoted.get("shadow").is_none(), "{promoted}");
    // The live version cannot shadow itself: it would only agree with itself.
    let (status, body) = server.post(
        "/v1/plugins/hitl-router/shadow",
        &json!({"version": candidate}),
    );
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("conflict")),
        "{body}"
    );
}

#[test]
fn a_plugin_failing_repeatedly_is_quarantined_with_its_failure_mode() {
    let server = Server::start(Options {
        plugins: [
            examples_without_sampling(),
            vec![StagedPlugin::from(plugins::HOSTILE_ERROR).fail_closed()],
        ]
        .concat(),
        config: "[pipeline]\nquarantine-after = 3\n".into(),
        ..Options::default()
    });
    for i in 0..3 {
        let outcome = submit_wait(&server, "event_thumbs_up_grounded", &format!("q{i}"));
        assert_eq!(
            outcome["route"]["queue"], "review",
            "fail-closed: {outcome}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, entry) = server.get("/v1/plugins/hostile-error");
        if entry["status"] == "quarantined" {
            assert!(
                entry["status_reason"]
                    .as_str()
                    .expect("reason")
                    .contains("3 times"),
                "{entry}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not quarantined: {entry}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The status changes first, then the error is logged: wait for the line.
    while !server.log().contains("quarantined") {
        assert!(Instant::now() < deadline, "no log line says so");
        std::thread::sleep(Duration::from_millis(20));
    }
    let outcome = submit_wait(&server, "event_thumbs_up_grounded", "q-after");
    let call = outcome["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .find(|c| c["plugin"]["name"] == "hostile-error")
        .expect("recorded")
        .clone();
    assert_eq!(call["error"]["class"], "unavailable", "not called: {call}");
    assert_eq!(
        outcome["route"]["action"], "review",
        "its failure mode still applies: {outcome}"
    );

    let (status, body) = server.post("/v1/plugins/hostile-error/enable", &json!({}));
    assert_eq!((status, body["status"].as_str()), (200, Some("active")));
    let (_, entry) = server.get("/v1/plugins/hostile-error");
    assert_eq!(entry["live"]["stats"]["errors_by_class"]["plugin_error"], 3);
}

#[test]
fn dropping_files_in_the_plugin_directory_hot_loads_them() {
    let server = Server::with_examples();
    let dir = server.data_dir.join("plugins-under-test");
    let (_, before) = server.get("/v1/plugins");
    assert_eq!(before["plugins"].as_array().map(Vec::len), Some(5));

    std::fs::write(dir.join("broken.wasm"), b"garbage").expect("write");
    std::fs::write(
        dir.join("broken.toml"),
        "name = \"broken\"\nkind = \"scorer\"\nversion = \"1\"\n",
    )
    .expect("write");
    stage(&dir, &[StagedPlugin::from(plugins::HOSTILE_ERROR)]);

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, list) = server.get("/v1/plugins");
        let names: Vec<&str> = list["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        let errors = list["directory_errors"].as_array().map_or(0, Vec::len);
        if names.contains(&"hostile-error") && errors == 1 {
            assert!(
                list["directory_errors"][0]["path"]
                    .as_str()
                    .expect("path")
                    .ends_with("broken.wasm"),
                "{list}"
            );
            assert!(!names.contains(&"broken"));
            break;
        }
        assert!(Instant::now() < deadline, "not hot-loaded: {list}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let outcome = submit_wait(&server, "event_no_feedback", "h1");
    assert_eq!(
        hash_used_for(&outcome, "hostile-error").len(),
        1,
        "the new plugin runs: {outcome}"
    );
    // While nothing changes, the directory is not read again: the scan's own reads of
    // the files must not set the watcher off (it once rescanned, and logged the bad
    // file, several times a second for as long as the server ran).
    let refusals = || server.log().matches("plugin file refused").count();
    std::thread::sleep(Duration::from_millis(1_000));
    let settled = refusals();
    assert!(settled >= 1, "the bad file is logged");
    std::thread::sleep(Duration::from_millis(2_000));
    assert_eq!(refusals(), settled, "rescanned with nothing changed");

    // A component dropped in without its manifest is reported, not ignored.
    std::fs::copy(plugins::SATISFACTION.wasm, dir.join("lonely.wasm")).expect("copy");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, list) = server.get("/v1/plugins");
        let lonely = list["directory_errors"]
            .as_array()
            .expect("errors")
            .iter()
            .find(|e| {
                e["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("lonely.wasm"))
            })
            .cloned();
        if let Some(e) = lonely {
            assert!(
                e["error"].as_str().expect("error").contains("no manifest"),
                "{e}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not reported: {list}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_registry_survives_a_restart() {
    let data = tempfile::tempdir().expect("tmp");
    let options = Options::examples_in(data.path());
    let mut server = Server::start(options.clone());
    let (status, body) = put_wasm(
        &server,
        "satisfaction",
        "version=0.3.0&activate=true",
        wasm(&plugins::SATISFACTION),
    );
    assert_eq!(status, 201, "{body}");
    let v3 = body["hash"].as_str().expect("hash").to_string();
    let (status, _) = put_wasm(
        &server,
        "hostile-error",
        "kind=scorer&version=1.0.0",
        wasm(&plugins::HOSTILE_ERROR),
    );
    assert_eq!(status, 201);
    server.post("/v1/plugins/hostile-error/disable", &json!({}));
    server.kill9();

    let server = Server::start(options);
    assert_eq!(
        live_hash(&server, "satisfaction"),
        v3,
        "the API's choice survives the directory rescan"
    );
    let (_, entry) = server.get("/v1/plugins/hostile-error");
    assert_eq!(entry["status"], "disabled");
    let outcome = submit_wait(&server, "event_thumbs_up_grounded", "r1");
    assert_eq!(hash_used_for(&outcome, "satisfaction"), [v3]);
    assert!(hash_used_for(&outcome, "hostile-error").is_empty());
}

#[test]
fn swapping_versions_under_load_fails_no_request() {
    let server = Server::with_examples();
    let v1 = live_hash(&server, "satisfaction");
    let (_, body) = put_wasm(
        &server,
        "satisfaction",
        "version=0.2.0&activate=false",
        wasm(&plugins::SATISFACTION),
    );
    let v2 = body["hash"].as_str().expect("hash").to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let (url, stop, failures, ids) = (
                server.url("/v1/events"),
                stop.clone(),
                failures.clone(),
                ids.clone(),
            );
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut e = fixtures::json("event_thumbs_up_grounded");
                    e["id"] = json!(format!("swap-{c}-{n}"));
                    n += 1;
                    match client.post(&url).json(&e).send() {
                        Ok(r) if r.status().as_u16() == 202 => ids
                            .lock()
                            .expect("lock")
                            .push(e["id"].as_str().expect("id").into()),
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for i in 0..30 {
        let target = if i % 2 == 0 { &v2 } else { &v1 };
        let (status, body) = server.post(
            "/v1/plugins/satisfaction/activate",
            &json!({"version": target}),
        );
        assert_eq!(status, 200, "{body}");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no request failed during swaps"
    );
    let ids = ids.lock().expect("lock").clone();
    assert!(ids.len() > 50, "load was applied: {}", ids.len());
    let (mut on_v1, mut on_v2) = (0, 0);
    for id in &ids {
        let record = server.wait_processed(id);
        let outcome = &record["outcome"];
        let used = hash_used_for(outcome, "satisfaction");
        assert_eq!(used.len(), 1, "exactly one satisfaction version: {outcome}");
        // One consistent set: every call was made by a plugin of the recorded set.
        let set: Vec<&Value> = outcome["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .collect();
        for call in outcome["calls"].as_array().expect("calls") {
            assert!(set.contains(&&call["plugin"]), "{outcome}");
        }
        if used[0] == v1 {
            on_v1 += 1
        } else if used[0] == v2 {
            on_v2 += 1
        } else {
            panic!("unknown version {used:?}")
        }
    }
    assert!(
        on_v1 > 0 && on_v2 > 0,
        "both versions served: {on_v1} / {on_v2}"
    );
}

#[test]
fn replay_reports_exact_changes_over_a_known_corpus() {
    let data = tempfile::tempdir().expect("tmp");
    let mut server = Server::start(Options::examples_in(data.path()));
    let mut events = Vec::new();
    for (fixture, n) in [
        ("event_thumbs_up_grounded", 10),
        ("event_pii_email_card", 5),
        ("event_thumbs_down_ungrounded", 5),
    ] {
        for i in 0..n {
            let mut e = fixtures::json(fixture);
            e["id"] = json!(format!("{fixture}-{i}"));
            events.push(e);
        }
    }
    let (status, _) = server.post("/v1/events?wait=true", &json!({"events": events}));
    assert_eq!(status, 200);
    let (status, body) = put_wasm(
        &server,
        "hitl-router",
        "version=0.2.0&activate=false&config.qa-sample-rate=1",
        wasm(&plugins::HITL_ROUTER),
    );
    assert_eq!(status, 201, "{body}");
    let before = live_hash(&server, "hitl-router");

    let (status, report) = server.post(
        "/v1/replay",
        &json!({"plugin": "hitl-router", "version": "0.2.0"}),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["events"], 20);
    assert_eq!(report["routes_changed"], 10);
    let changes = report["route_changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1, "{report}");
    assert_eq!(
        (
            changes[0]["from"].as_str(),
            changes[0]["to"].as_str(),
            changes[0]["count"].as_u64()
        ),
        (Some("accept"), Some("label:qa"), Some(10))
    );
    assert_eq!(changes[0]["examples"].as_array().map(Vec::len), Some(5));
    assert!(report["events_per_second"].as_f64().expect("rate") > 0.0);

    // Filtered to the review traffic, nothing changes; and replay changed nothing stored.
    let (_, filtered) = server.post(
        "/v1/replay",
        &json!({"plugin": "hitl-router", "version": "0.2.0", "route": "review"}),
    );
    assert_eq!(
        (
            filtered["events"].as_u64(),
            filtered["routes_changed"].as_u64()
        ),
        (Some(5), Some(0)),
        "{filtered}"
    );
    assert_eq!(live_hash(&server, "hitl-router"), before);
    let record = server.wait_processed("event_thumbs_up_grounded-0");
    assert_eq!(record["outcome"]["route"]["action"], "accept");

    // A scorer candidate: same logic, so no route moves and the score distribution holds.
    let (_, body) = put_wasm(
        &server,
        "groundedness",
        "version=0.2.0&activate=false",
        wasm(&plugins::GROUNDEDNESS),
    );
    assert!(body["hash"].is_string(), "{body}");
    let (_, scorer) = server.post(
        "/v1/replay",
        &json!({"plugin": "groundedness", "version": "0.2.0"}),
    );
    assert_eq!(scorer["routes_changed"], 0, "{scorer}");
    let shift = &scorer["scores"]["groundedness"];
    assert_eq!(shift["before"]["count"], shift["after"]["count"]);
    assert!(shift["mean_shift"].as_f64().expect("shift").abs() < 1e-9);
    assert_eq!(scorer["baseline"], "live", "{scorer}");

    // With a router that samples everything live now, the stored outcomes (routed by
    // the old one) differ from what the routers decide today; the same scorer must
    // still change nothing: the baseline is the live version run beside it.
    let (status, _) = server.post(
        "/v1/plugins/hitl-router/activate",
        &json!({"version": "0.2.0"}),
    );
    assert_eq!(status, 200);
    let (_, scorer) = server.post(
        "/v1/replay",
        &json!({"plugin": "groundedness", "version": "0.2.0"}),
    );
    assert_eq!(
        (scorer["events"].as_u64(), scorer["routes_changed"].as_u64()),
        (Some(20), Some(0)),
        "{scorer}"
    );
    let (status, _) = server.post("/v1/plugins/hitl-router/rollback", &json!({}));
    assert_eq!(status, 200);

    // The CLI gives the same answer on the stopped server's data directory.
    server.kill9();
    let out = std::process::Command::new(flywheel_bin())
        .args([
            "replay",
            "--plugin",
            "hitl-router",
            "--version",
            "0.2.0",
            "--data",
        ])
        .arg(data.path())
        .output()
        .expect("run replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(
        (cli["events"].as_u64(), cli["routes_changed"].as_u64()),
        (Some(20), Some(10))
    );
}
