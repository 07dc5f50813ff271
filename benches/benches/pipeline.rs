//! The full pipeline (`flywheel::pipeline::decide` over the five example plugins:
//! three scorers, then the router; the refiner is not called per event) on a stream
//! of 64 distinct pre-built events.
//!
//! * `pipeline/latency/<mode>/<size>`: one event at a time on one thread.
//! * `pipeline/throughput/<mode>/<size>`: one thread per core, each deciding its share
//!   of the iterations from the same event vec; criterion's time per iteration is then
//!   wall time per event with every core busy, and events/s is its inverse.
//!
//! `<mode>` is `reuse-pool` (warm instances, the server's default) or `fresh-pool`
//! (`fresh_instance_per_call`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput};
use flywheel::pipeline::{LiveSet, decide};
use flywheel_benches::summary::{Results, print_rates, print_ratios};
use flywheel_benches::{Mode, Size, events, live_set, runtime};
use flywheel_model::{Event, Route};

const EVENTS: usize = 64;

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Decide `count` events starting at `offset` in the stream.
fn run(set: &LiveSet, events: &[Arc<Event>], offset: usize, count: u64) {
    for i in 0..count as usize {
        std::hint::black_box(decide(set, &events[(offset + i) % events.len()]));
    }
}

fn pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);
    for mode in [Mode::REUSE, Mode::FRESH] {
        let rt = runtime(mode);
        let set = live_set(&rt);
        for size in Size::ALL {
            // Shared, as the server's workers hold them.
            let events: Vec<Arc<Event>> = events(EVENTS, size).into_iter().map(Arc::new).collect();
            // Every plugin call must succeed, and the stream must exercise every route.
            let outcomes: Vec<_> = events.iter().map(|e| decide(&set, e)).collect();
            for o in &outcomes {
                assert!(
                    o.calls.iter().all(|c| c.error.is_none()),
                    "a plugin failed: {:?}",
                    o.calls
                );
            }
            assert!(outcomes.iter().any(|o| matches!(o.route, Route::Review(_))));
            assert!(outcomes.iter().any(|o| matches!(o.route, Route::Label(_))));

            let mut next = 0usize;
            group.bench_function(
                BenchmarkId::new(format!("latency/{}", mode.name()), size.name()),
                |b| {
                    b.iter(|| {
                        next = next.wrapping_add(1);
                        decide(&set, &events[next % events.len()])
                    })
                },
            );
            let n = threads();
            group.bench_function(
                BenchmarkId::new(format!("throughput/{}", mode.name()), size.name()),
                |b| {
                    b.iter_custom(|iters| {
                        let share = iters.div_ceil(n as u64);
                        let started = Instant::now();
                        std::thread::scope(|s| {
                            for t in 0..n {
                                let (set, events) = (&set, &events);
                                s.spawn(move || run(set, events, t * EVENTS / n, share));
                            }
                        });
                        // Time per event: the threads together decided `share * n` events.
                        started
                            .elapsed()
                            .mul_f64(iters as f64 / (share * n as u64) as f64)
                    })
                },
            );
        }
    }
    group.finish();
}

fn main() {
    let started = SystemTime::now();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    pipeline(&mut c);
    c.final_summary();

    let results = Results::since(started);
    let id = |kind: &str, mode: Mode, size: Size| {
        format!("pipeline/{kind}/{}/{}", mode.name(), size.name())
    };
    let mut rates = Vec::new();
    let mut ratios = Vec::new();
    for size in Size::ALL {
        for mode in [Mode::REUSE, Mode::FRESH] {
            rates.push((
                format!("latency {} {}", mode.name(), size.name()),
                id("latency", mode, size),
            ));
            rates.push((
                format!(
                    "throughput ({} threads) {} {}",
                    threads(),
                    mode.name(),
                    size.name()
                ),
                id("throughput", mode, size),
            ));
        }
        for kind in ["latency", "throughput"] {
            ratios.push((
                format!("{kind} {}: fresh ÷ reuse (time per event)", size.name()),
                id(kind, Mode::FRESH, size),
                id(kind, Mode::REUSE, size),
            ));
        }
        ratios.push((
            format!(
                "reuse {}: 1 thread ÷ {} threads (time per event)",
                size.name(),
                threads()
            ),
            id("latency", Mode::REUSE, size),
            id("throughput", Mode::REUSE, size),
        ));
    }
    print_rates("pipeline (5 example plugins) per event", &results, &rates);
    print_ratios("pipeline ratios", &results, &ratios);
}
