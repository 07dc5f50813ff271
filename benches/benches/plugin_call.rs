//! One scorer call through wasmtime against the same plugin code called natively.
//!
//! * `plugin_call/<scorer>/{wasm,native}/<size>`: a warm, reused instance (pooling
//!   allocator, the server's default) against `<Plugin as Scorer>::score` on an owned
//!   copy of the same event (the copy is made outside the timed part, as the guest's
//!   is made by the call itself). Both read their `[config]` through the host
//!   interface (natively: the SDK's in-memory fakes).
//! * `instance/<scorer>/<mode>/200B`: the same wasm call with a warm instance or a
//!   fresh one per call, each with and without the pooling allocator.

use std::time::SystemTime;

use criterion::{BatchSize, BenchmarkId, Criterion};
use flywheel_benches::summary::{Results, print_ratios};
use flywheel_benches::{Mode, Size, event, load, runtime, set_native_config, to_sdk};
use flywheel_plugin::Scorer;
use flywheel_runtime::PreparedEvent;

const SCORERS: [&str; 3] = ["satisfaction", "groundedness", "sensitive"];
const MODES: [Mode; 4] = [
    Mode {
        fresh: false,
        pooling: true,
    },
    Mode {
        fresh: false,
        pooling: false,
    },
    Mode {
        fresh: true,
        pooling: true,
    },
    Mode {
        fresh: true,
        pooling: false,
    },
];
/// Event 3 of the stream: a comment (so `satisfaction` runs its lexicon) and an email
/// address (so `sensitive` finds and redacts PII).
const EVENT: usize = 3;

fn native(
    name: &str,
    event: flywheel_plugin::Event,
) -> Result<Vec<flywheel_plugin::Score>, String> {
    match name {
        "satisfaction" => satisfaction::Satisfaction::score(event),
        "groundedness" => groundedness::Groundedness::score(event),
        "sensitive" => sensitive::Sensitive::score(event),
        other => unreachable!("no native scorer {other}"),
    }
}

fn wasm_vs_native(c: &mut Criterion) {
    let rt = runtime(Mode::REUSE);
    let plugins: Vec<_> = SCORERS.iter().map(|n| (*n, load(&rt, n))).collect();
    let mut group = c.benchmark_group("plugin_call");
    for size in Size::ALL {
        let e = event(EVENT, size);
        let prepared = PreparedEvent::new(&e);
        let sdk = to_sdk(&e);
        for (name, plugin) in &plugins {
            set_native_config(name);
            // Both sides must agree before their speed means anything.
            let from_wasm = plugin
                .score(&prepared)
                .result
                .unwrap_or_else(|f| panic!("{f}"));
            let from_native = native(name, sdk.clone()).unwrap_or_else(|m| panic!("{m}"));
            let values = |v: Vec<f64>| v.into_iter().map(|x| (x * 1e9).round()).collect::<Vec<_>>();
            assert_eq!(
                values(from_wasm.iter().map(|s| s.value).collect()),
                values(from_native.iter().map(|s| s.value).collect()),
                "{name}: wasm and native disagree"
            );
            assert!(
                !from_wasm.is_empty(),
                "{name} scored nothing: the event exercises no logic"
            );

            group.bench_function(BenchmarkId::new(format!("{name}/wasm"), size.name()), |b| {
                b.iter(|| plugin.score(&prepared))
            });
            group.bench_function(
                BenchmarkId::new(format!("{name}/native"), size.name()),
                |b| b.iter_batched(|| sdk.clone(), |e| native(name, e), BatchSize::SmallInput),
            );
        }
    }
    group.finish();
}

fn instance_modes(c: &mut Criterion) {
    let prepared = PreparedEvent::new(&event(EVENT, Size::Small));
    let mut group = c.benchmark_group("instance");
    for mode in MODES {
        // One runtime (and one epoch ticker) at a time.
        let rt = runtime(mode);
        for name in SCORERS {
            let plugin = load(&rt, name);
            group.bench_function(
                BenchmarkId::new(format!("{name}/{}", mode.name()), "200B"),
                |b| b.iter(|| plugin.score(&prepared)),
            );
        }
    }
    group.finish();
}

fn main() {
    let started = SystemTime::now();
    let mut c = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
        .configure_from_args();
    wasm_vs_native(&mut c);
    instance_modes(&mut c);
    c.final_summary();

    let results = Results::since(started);
    let mut rows = Vec::new();
    for size in Size::ALL {
        for name in SCORERS {
            let id = |side: &str| format!("plugin_call/{name}/{side}/{}", size.name());
            rows.push((
                format!("{name} {} wasm ÷ native", size.name()),
                id("wasm"),
                id("native"),
            ));
        }
    }
    print_ratios(
        "plugin call: wasm (warm instance) ÷ native",
        &results,
        &rows,
    );
    let mut rows = Vec::new();
    for name in SCORERS {
        let id = |mode: Mode| format!("instance/{name}/{}/200B", mode.name());
        for mode in &MODES[1..] {
            rows.push((
                format!("{name} {} ÷ reuse-pool", mode.name()),
                id(*mode),
                id(MODES[0]),
            ));
        }
    }
    print_ratios(
        "instance modes, 200 B event (÷ warm instance, pooling)",
        &results,
        &rows,
    );
}
