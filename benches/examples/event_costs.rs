//! What each example plugin, and the whole `decide`, costs on a file of events: the
//! numbers behind BENCHMARKS.md's "plugin path" section, on any events you like (the load
//! test's are what the server sees under `scripts/loadtest.sh`).
//!
//!   WRITE_BODIES=/tmp/events.jsonl scripts/loadtest.sh          # or any JSONL of API events
//!   cargo run --release -p flywheel-benches --example event_costs -- /tmp/events.jsonl
//!   cargo run --release -p flywheel-benches --example event_costs -- /tmp/events.jsonl 20000 groundedness
//!
//! Each line is one event as `POST /v1/events` takes it. Prints, per call, the wasm call on
//! a warm instance and the same scorer called natively (on a copy of the event), then the
//! router's call and `decide` over the five examples. A plain timed loop: run it pinned
//! (`taskset -c 0`) and compare figures from one run. With `FLYWHEEL_PERFMAP=1` and an
//! unstripped plugin build in `FLYWHEEL_BENCH_WASM_OVERRIDE`, it is also the loop to put
//! under `perf record`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flywheel_benches::{Mode, live_set, load, runtime, set_native_config, to_sdk};
use flywheel_model::Event;
use flywheel_plugin::Scorer;
use flywheel_runtime::{PreparedEvent, PreparedScores};

fn per_call(started: Instant, iters: usize) -> Duration {
    started.elapsed() / iters.max(1) as u32
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: event_costs <events.jsonl> [iterations] [scorer]");
        std::process::exit(2);
    };
    let iters: usize = args
        .get(1)
        .map_or(20_000, |s| s.parse().expect("iterations is a number"));
    let only = args.get(2).map(String::as_str);
    let text = std::fs::read_to_string(path).expect("read the events file");
    let events: Vec<Event> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let mut v: serde_json::Value = serde_json::from_str(line).expect("a JSON event");
            v["id"] = format!("01JABCDEFGHJKMNPQRSTVWX{i:03}").into();
            v["received_at"] = 1_700_000_000_000u64.into();
            serde_json::from_value(v).expect("an event")
        })
        .collect();
    assert!(!events.is_empty(), "no events in {path}");
    let rt = runtime(Mode::REUSE);

    for name in ["satisfaction", "groundedness", "sensitive"] {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let plugin = load(&rt, name);
        let prepared: Vec<PreparedEvent> = events.iter().map(PreparedEvent::new).collect();
        let started = Instant::now();
        for i in 0..iters {
            std::hint::black_box(plugin.score(&prepared[i % prepared.len()]).result)
                .expect("scores");
        }
        let wasm = per_call(started, iters);
        set_native_config(name);
        let sdk: Vec<_> = events.iter().map(to_sdk).collect();
        let started = Instant::now();
        for i in 0..iters {
            let e = sdk[i % sdk.len()].clone();
            let r = match name {
                "satisfaction" => satisfaction::Satisfaction::score(e),
                "groundedness" => groundedness::Groundedness::score(e),
                _ => sensitive::Sensitive::score(e),
            };
            std::hint::black_box(r).expect("scores");
        }
        let native = per_call(started, iters);
        println!("{name:>13}: wasm {wasm:?}, native (with a copy of the event) {native:?}");
    }
    if only.is_some() {
        return;
    }

    let set = live_set(&rt);
    let shared: Vec<Arc<Event>> = events.iter().cloned().map(Arc::new).collect();
    let router = &set.routers[0];
    let prepared: Vec<PreparedEvent> = shared.iter().cloned().map(PreparedEvent::shared).collect();
    let scores: Vec<PreparedScores> = shared
        .iter()
        .map(|e| {
            let o = flywheel::pipeline::decide(&set, e);
            PreparedScores::new(o.scores.iter().map(|s| &s.score))
        })
        .collect();
    let started = Instant::now();
    for i in 0..iters {
        std::hint::black_box(
            router
                .route(&prepared[i % prepared.len()], &scores[i % scores.len()])
                .result,
        )
        .expect("a route");
    }
    println!(
        "{:>13}: wasm {:?}",
        router.id().name,
        per_call(started, iters)
    );
    let started = Instant::now();
    for i in 0..iters {
        std::hint::black_box(flywheel::pipeline::decide(&set, &shared[i % shared.len()]));
    }
    println!(
        "       decide: {:?} (all five examples)",
        per_call(started, iters)
    );
}
