//! What the dashboard (`GET /v1/stats/prompts?bucket=day`, two weeks) costs over a
//! store of `events` events spread evenly over the last 14 days, each with a
//! satisfaction score: read in full each time (`stats::compute`, what every view did
//! before the cache), the first cached view (it reads every hour and keeps the settled
//! ones, in memory and on disk), the views after it (they read only the hours that may
//! still change), and the first view after a restart (the settled hours come from disk):
//!
//!   cargo run --release -p flywheel-benches --example dashboard_costs -- 200000
//!
//! Wall-clock times of one run each, so read them as ratios: the machine is shared.

use std::time::Instant;

use flywheel::stats::{StatsCache, Window, compute, compute_cached};
use flywheel_model::{Event, Outcome, now_ms};
use flywheel_store::{Store, StoreOptions};
use serde_json::json;

const DAY_MS: u64 = 86_400_000;

fn main() {
    let total: u64 = std::env::args()
        .nth(1)
        .map_or(200_000, |s| s.parse().expect("events is a number"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = flywheel_benches::scratch_store(dir.path());
    let now = now_ms();
    let first = now - 14 * DAY_MS;
    let step = (now - first) / total;
    let answer = "To reset your password, open Settings, then Security, and choose Reset \
                  password. The reset link in the email expires after 24 hours.";
    let outcome: Outcome = serde_json::from_value(json!({
        "scores": [{"plugin": "satisfaction", "name": "satisfaction", "value": 0.75}],
        "votes": [], "calls": [], "plugins": [], "processed_at": now,
        "route": {"action": "accept"},
    }))
    .expect("an outcome");
    let ids: Vec<String> = (0..total).map(|i| format!("e{i}")).collect();
    for chunk in ids.chunks(1000) {
        let events = chunk
            .iter()
            .map(|id| {
                let i: u64 = id[1..].parse().expect("a number");
                serde_json::from_value::<Event>(json!({
                    "id": id, "received_at": first + i * step,
                    "input": "How do I reset my password?", "output": answer,
                    "context": [answer], "feedback": {"type": "thumbs", "value": "up"},
                    "prompt": {"name": "support-answer", "version": (i % 3).to_string()},
                }))
                .expect("an event")
            })
            .collect();
        store.append(events).expect("append");
        let items: Vec<(&str, &Outcome)> = chunk.iter().map(|id| (id.as_str(), &outcome)).collect();
        store.complete_all(&items).expect("complete");
    }
    // What the server's sweeper does every few seconds: later reads start past this.
    store.advance_watermark().expect("watermark");

    let window = Window::ending_at(now_ms(), DAY_MS, 14);
    let cache = StatsCache::default();
    let mut full = None;
    for label in [
        "full read",
        "cached, first view",
        "cached, next view",
        "full read",
        "cached, next view",
    ] {
        let started = Instant::now();
        let stats = if label.starts_with("full") {
            compute(&store, window)
        } else {
            compute_cached(&store, window, &cache)
        }
        .expect("stats");
        let took = started.elapsed();
        let events: u64 = stats.prompts.iter().map(|p| p.events).sum();
        println!(
            "{label}: {took:?} ({events} events in the window, {} hours kept)",
            cache.len()
        );
        match &full {
            None => full = Some(stats),
            Some(f) => assert_eq!(&stats, f, "the cache changes nothing"),
        }
    }

    // A restart: the hours kept on disk fill a new process's cache.
    drop(store);
    let store = Store::open(dir.path(), StoreOptions::default()).expect("reopen the store");
    let cache = StatsCache::default();
    for label in ["after a restart, first view", "after a restart, next view"] {
        let started = Instant::now();
        let stats = compute_cached(&store, window, &cache).expect("stats");
        let took = started.elapsed();
        println!("{label}: {took:?} ({} hours kept)", cache.len());
        assert_eq!(
            Some(&stats),
            full.as_ref(),
            "the hours on disk change nothing"
        );
    }
}
