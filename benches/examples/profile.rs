//! A loop to put under a profiler (`perf record`, `valgrind --tool=callgrind`): the
//! same calls the benches time, with no criterion around them.
//!
//!   cargo build --release -p flywheel-benches --example profile
//!   valgrind --tool=callgrind target/release/examples/profile native-sensitive 4KiB 200
//!
//! `<what>`: `native-<scorer>`, `wasm-<scorer>` (warm instance) or `pipeline`;
//! `<size>`: `200B` or `4KiB`.

use flywheel_benches::{
    Mode, Size, event, events, live_set, load, runtime, set_native_config, to_sdk,
};
use flywheel_plugin::Scorer;
use flywheel_runtime::PreparedEvent;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [what, size, iters] = args.as_slice() else {
        eprintln!("usage: profile <native-SCORER|wasm-SCORER|pipeline> <200B|4KiB> <iterations>");
        std::process::exit(2);
    };
    let size = if size == "4KiB" {
        Size::Large
    } else {
        Size::Small
    };
    let iters: usize = iters.parse().expect("iterations is a number");
    let started = std::time::Instant::now();
    if let Some(name) = what.strip_prefix("native-") {
        set_native_config(name);
        let e = to_sdk(&event(3, size));
        for _ in 0..iters {
            let r = match name {
                "satisfaction" => satisfaction::Satisfaction::score(e.clone()),
                "groundedness" => groundedness::Groundedness::score(e.clone()),
                "sensitive" => sensitive::Sensitive::score(e.clone()),
                other => panic!("no scorer {other}"),
            };
            std::hint::black_box(r).expect("scores");
        }
    } else if let Some(name) = what.strip_prefix("wasm-") {
        let rt = runtime(Mode::REUSE);
        let plugin = load(&rt, name);
        let prepared = PreparedEvent::new(&event(3, size));
        for _ in 0..iters {
            std::hint::black_box(plugin.score(&prepared))
                .result
                .expect("scores");
        }
    } else {
        let rt = runtime(Mode::REUSE);
        let set = live_set(&rt);
        let events: Vec<std::sync::Arc<flywheel_model::Event>> = events(64, size)
            .into_iter()
            .map(std::sync::Arc::new)
            .collect();
        for i in 0..iters {
            std::hint::black_box(flywheel::pipeline::decide(&set, &events[i % events.len()]));
        }
    }
    let per = started.elapsed() / iters.max(1) as u32;
    eprintln!("{what}: {per:?} per iteration (set-up included)");
}
