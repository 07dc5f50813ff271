//! What a claim costs in a queue that needs two reviews per item, as one reviewer gets
//! ahead of the other: each of her claims walks past the items she already reviewed,
//! which wait for the second reviewer. `items` items, all reviewed once by `ana`; prints
//! the time of reading an item by id, then of her claims as she goes, then of a claim by
//! each reviewer at the end:
//!
//!   cargo run --release -p flywheel-benches --example queue_costs -- 20000
//!
//! Wall-clock times of one run, so read them as ratios: the machine is shared.

use std::time::{Duration, Instant};

use flywheel_model::{Event, Outcome, Review, now_ms};
use serde_json::json;

const LEASE_MS: u64 = 600_000;

fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .map_or(20_000, |s| s.parse().expect("items is a number"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = flywheel_benches::scratch_store(dir.path());
    let outcome: Outcome = serde_json::from_value(json!({
        "scores": [], "votes": [], "calls": [], "plugins": [], "processed_at": now_ms(),
        "route": {"action": "review", "queue": "compliance", "priority": 50, "reason": "pii"},
    }))
    .expect("an outcome");
    let ids: Vec<String> = (0..total).map(|i| format!("e{i}")).collect();
    for chunk in ids.chunks(1000) {
        let events = chunk
            .iter()
            .map(|id| {
                serde_json::from_value::<Event>(json!({
                    "id": id, "received_at": now_ms(), "input": "q", "output": "a",
                    "feedback": {"type": "thumbs", "value": "down"},
                }))
                .expect("an event")
            })
            .collect();
        store.append(events).expect("append");
        let items: Vec<(&str, &Outcome)> = chunk.iter().map(|id| (id.as_str(), &outcome)).collect();
        store.complete_all(&items).expect("complete");
    }
    // `GET /v1/queues/{queue}/items/{id}` of an item nobody claimed yet, and of no item.
    let last = store
        .queue_items("compliance", usize::MAX)
        .expect("items")
        .pop()
        .expect("an item");
    for (what, id) in [
        ("the newest item", last.id.clone()),
        ("no item", ulid::Ulid::new().to_string()),
    ] {
        let started = Instant::now();
        let found = store
            .queue_entry("compliance", &id, now_ms())
            .expect("queue_entry");
        println!(
            "reading {what} by id among {total} unclaimed: {:?} ({})",
            started.elapsed(),
            found.is_some()
        );
    }
    let claim = |who: &str| {
        let started = Instant::now();
        let entry = store
            .claim("compliance", who, LEASE_MS, &[], now_ms())
            .expect("claim");
        (entry, started.elapsed())
    };
    let mut slowest = Duration::ZERO;
    let report = (total / 5).max(1);
    for n in 0..total {
        let (entry, took) = claim("ana");
        slowest = slowest.max(took);
        let entry = entry.expect("an item for ana");
        if (n + 1) % report == 0 {
            println!("ana's claim after {n} reviews: {took:?}");
        }
        let review: Review = serde_json::from_value(json!({
            "queue": "compliance", "item_id": entry.item.id, "reviewer": "ana",
            "verdict": "approve", "reviewed_at": now_ms(),
        }))
        .expect("a review");
        store.review(review, 2).expect("review");
    }
    let (none, took) = claim("ana");
    assert!(none.is_none(), "ana reviewed everything");
    println!("ana's claim with nothing left for her: {took:?} (slowest before: {slowest:?})");
    let (some, took) = claim("ben");
    assert!(some.is_some());
    println!("ben's claim: {took:?}");
}
