//! Durability: `kill -9` while clients are submitting loses no acknowledged event, and
//! after a restart every stored event is processed exactly once in the stored result.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flywheel_tests::fixtures;
use flywheel_tests::server::{Options, Server, examples_without_sampling};
use serde_json::{Value, json};

#[test]
fn kill_9_under_load_loses_no_acknowledged_event() {
    crash_under_load("");
}

/// With a commit delay the committer holds batches open for more requests (four clients
/// give it company); it still acknowledges nothing before the batch is on disk.
#[test]
fn kill_9_with_a_commit_delay_loses_no_acknowledged_event() {
    crash_under_load("commit-delay-us = 5000");
}

fn crash_under_load(config: &str) {
    let data = tempfile::tempdir().expect("tempdir");
    let options = Options {
        plugins: examples_without_sampling(),
        data_dir: Some(data.path().to_path_buf()),
        config: config.to_owned(),
    };
    let mut server = Server::start(options.clone());
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let fixtures_cycle = [
        "event_thumbs_up_grounded",
        "event_thumbs_down_ungrounded",
        "event_pii_email_card",
        "event_clarification",
    ];

    let clients: Vec<_> = (0..4)
        .map(|c| {
            let url = server.url("/v1/events");
            let acked = acked.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    // Alternate single events and small batches.
                    let events: Vec<Value> = (0..if n.is_multiple_of(2) { 1 } else { 10 })
                        .map(|k| {
                            let mut e =
                                fixtures::json(fixtures_cycle[(n + k) % fixtures_cycle.len()]);
                            e["id"] = json!(format!("c{c}-{n}-{k}"));
                            e
                        })
                        .collect();
                    let body = if events.len() == 1 {
                        events[0].clone()
                    } else {
                        json!({"events": events})
                    };
                    n += 1;
                    let Ok(resp) = client.post(&url).json(&body).send() else {
                        break;
                    };
                    if resp.status().as_u16() != 202 {
                        break;
                    }
                    let Ok(v) = resp.json::<Value>() else { break };
                    let mut acked = acked.lock().expect("lock");
                    match v.get("results") {
                        Some(results) => {
                            for r in results.as_array().into_iter().flatten() {
                                acked.insert(r["id"].as_str().expect("id").to_string());
                            }
                        }
                        None => {
                            acked.insert(v["id"].as_str().expect("id").to_string());
                        }
                    }
                }
            })
        })
        .collect();

    // Let load build up, then crash mid-stream.
    let started = Instant::now();
    while acked.lock().expect("lock").len() < 400 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= 400,
        "load was applied: {} acked",
        acked.len()
    );

    // Without the compiled plugins (as after a restore) loading them takes a while on
    // restart: the events left pending must still wait for them.
    std::fs::remove_dir_all(data.path().join("cache")).expect("remove the plugin cache");
    let server = Server::start(options);
    // Every acknowledged event is there, and everything gets processed by the plugins.
    for id in &acked {
        let record = server.wait_processed(id);
        let plugins = record["outcome"]["plugins"].as_array().map_or(0, Vec::len);
        assert_eq!(
            plugins, 4,
            "{id} was decided by the scorers and the router: {record}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, pending) = server.get("/v1/events?route=pending&limit=10");
        if pending["events"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "events left pending: {pending}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Exactly once in the stored result: one queue item per label/review event.
    let mut listed = 0usize;
    let mut queued = 0usize;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/events?limit=500&cursor={c}"),
            None => "/v1/events?limit=500".into(),
        };
        let (_, page) = server.get(&path);
        for e in page["events"].as_array().expect("events") {
            listed += 1;
            assert_eq!(e["status"], "processed", "{e}");
            if matches!(
                e["outcome"]["route"]["action"].as_str(),
                Some("label" | "review")
            ) {
                queued += 1;
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert!(
        listed >= acked.len(),
        "{listed} stored, {} acked",
        acked.len()
    );
    let (_, metrics) = server.get_text("/metrics");
    let depth: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("flywheel_queue_depth{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        depth as usize, queued,
        "one queue item per routed event, none twice"
    );
}
