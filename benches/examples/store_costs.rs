//! What the store costs per event, without HTTP or plugins: appends in group commits of
//! `batch` events, then each batch's outcome (the no-plugin pipeline's), the way the
//! server's committer sees them. Prints the process's CPU time per event (every thread:
//! the committer and sled's own), which, unlike a timed run, does not depend on what
//! else the machine is doing. For before/after comparisons of store and sled changes:
//!
//!   WRITE_BODIES=/tmp/events.jsonl scripts/loadtest.sh
//!   cargo run --release -p flywheel-benches --example store_costs -- /tmp/events.jsonl 200000 16
//!
//! Not durable (no `fsync`): the flush's cost is the disk's, not the code's.

use std::time::Instant;

use flywheel::pipeline::{LiveSet, decide};
use flywheel_model::Event;
use flywheel_store::{Store, StoreOptions};

/// User + system CPU time of this process so far, in seconds (from `/proc`).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: store_costs <events.jsonl> [events] [batch]");
        std::process::exit(2);
    };
    let total: usize = args
        .get(1)
        .map_or(200_000, |s| s.parse().expect("events is a number"));
    let batch: usize = args
        .get(2)
        .map_or(16, |s| s.parse().expect("batch is a number"));
    let text = std::fs::read_to_string(path).expect("read the events file");
    let bodies: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("a JSON event"))
        .collect();
    assert!(!bodies.is_empty(), "no events in {path}");
    let dir = std::env::temp_dir().join(format!("flywheel-store-costs-{}", std::process::id()));
    let store = Store::open(
        &dir,
        StoreOptions {
            durable: false,
            ..StoreOptions::default()
        },
    )
    .expect("open the store");
    let live = LiveSet::new(Vec::new());
    // Built before the clock starts: only the store is measured.
    let mut batches: Vec<(Vec<Event>, Vec<flywheel_model::Outcome>)> = Vec::new();
    for start in (0..total).step_by(batch.max(1)) {
        let events: Vec<Event> = (start..(start + batch).min(total))
            .map(|i| {
                let mut v = bodies[i % bodies.len()].clone();
                // Increasing, like the server's ULIDs.
                v["id"] = format!("01J{i:023}").into();
                v["received_at"] = 1_700_000_000_000u64.into();
                serde_json::from_value(v).expect("an event")
            })
            .collect();
        let outcomes = events
            .iter()
            .map(|e| decide(&live, &std::sync::Arc::new(e.clone())))
            .collect();
        batches.push((events, outcomes));
    }
    let cpu = cpu_seconds();
    let started = Instant::now();
    for (events, outcomes) in batches {
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        store.append(events).expect("append");
        let items: Vec<(&str, &flywheel_model::Outcome)> =
            ids.iter().map(String::as_str).zip(&outcomes).collect();
        store.complete_all(&items).expect("complete");
    }
    let cpu = cpu_seconds() - cpu;
    println!(
        "{total} events in batches of {batch}: {:.2} µs CPU per event ({:.2} s wall)",
        cpu * 1e6 / total as f64,
        started.elapsed().as_secs_f64()
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
