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
use flywheel_model::now_ms;
use flywheel_store::{Store, StoreOptions};

const DAY_MS: u64 = 86_400_000;

fn main() {
    let total: u64 = std::env::args()
        .nth(1)
        .map_or(200_000, |s| s.parse().expect("events is a number"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = flywheel_benches::scratch_store(dir.path());
    flywheel_benches::fill_days(&store, total, 14);

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
