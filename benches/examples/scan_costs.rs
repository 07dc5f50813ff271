//! What reading events by a rare filter costs: `GET /v1/events?user_id=` (one page after
//! another), the same filter through `Store::scan` (what `DELETE /v1/events?user_id=`
//! walks), and a time-only scan for comparison, over a store of `events` events spread
//! over the last 14 days among 100 users:
//!
//!   cargo run --release -p flywheel-benches --example scan_costs -- 200000
//!
//! Wall-clock times of one run each, so read them as ratios: the machine is shared.

use std::time::Instant;

use flywheel_model::{Event, Outcome, now_ms};
use flywheel_store::EventFilter;
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
                    "user_id": format!("user-{}", i % 100),
                    "session_id": format!("session-{}", i / 10),
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
    let one_user = EventFilter {
        user_id: Some("user-7".into()),
        ..EventFilter::default()
    };
    let everything = EventFilter::default();
    for (label, filter) in [
        ("scan, user_id (what an erasure by user walks)", &one_user),
        ("scan, no filter", &everything),
    ] {
        let started = Instant::now();
        let mut n = 0;
        for record in store.scan(filter) {
            record.expect("a record");
            n += 1;
        }
        println!("{label}: {:?} ({n} events)", started.elapsed());
    }
    let started = Instant::now();
    let (mut pages, mut n, mut cursor) = (0, 0, None::<String>);
    loop {
        let page = store
            .list(&one_user, cursor.as_deref(), 100)
            .expect("a page");
        pages += 1;
        n += page.events.len();
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    println!(
        "list, user_id, every page: {:?} ({n} events in {pages} pages)",
        started.elapsed()
    );
}
