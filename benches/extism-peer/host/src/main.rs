//! The Extism peer harness (issue #7): the example scorers as Flywheel components
//! (wasmtime 48, `flywheel-runtime`) against the same scorer code as an Extism plugin
//! (extism 1.30, its own wasmtime 43), same events, same process, same run.
//!
//! For each scorer and event size it measures, interleaved batch by batch:
//!
//! * `ours call`: `Plugin::score(&PreparedEvent)` on a warm instance (the event was
//!   converted to the WIT types once, outside the timed part);
//! * `ours +prep`: `PreparedEvent::new(&event)` and then the call, per call;
//! * `Extism call`: `Plugin::call(name, json)` on pre-serialised JSON bytes, plus
//!   parsing the JSON result into `Vec<flywheel_model::Score>`;
//! * `Extism +ser`: `serde_json::to_vec(&event)` and then the above, per call.
//!
//! Latency is the median over batches of the mean time per call in a batch. Then
//! throughput on every core: `available_parallelism` threads calling the full path
//! (`+prep` / `+ser`) for a fixed time; ours share one `Plugin`, each Extism thread
//! has its own `extism::Plugin` (they are not `Sync`).
//!
//! `--quick` makes a short smoke run; `--threads N` overrides the throughput
//! threads; `--profile-one <ours|extism> <scorer>
//! <200B|4KiB> <calls>` only makes that many full-path calls on one side, for a
//! profiler (`valgrind --tool=callgrind`). The component plugins are read from
//! `target/flywheel-plugins` (`cargo xtask plugins`), or from `$FLYWHEEL_PLUGINS_DIR`.

// Formatted by the main workspace, which owns the file.
#[rustfmt::skip]
#[path = "../../../src/inputs.rs"]
mod inputs;

use std::error::Error;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flywheel_model::{Event, Score};
use flywheel_runtime::{Manifest, MemoryKv, Plugin, PreparedEvent, Runtime, RuntimeOptions};
use inputs::Size;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const SCORERS: [&str; 3] = ["satisfaction", "groundedness", "sensitive"];
/// Event 3 of the benches' stream: a comment (so `satisfaction` runs its lexicon)
/// and an email address (so `sensitive` finds and redacts PII), as in
/// `benches/benches/plugin_call.rs`.
const EVENT: usize = 3;

/// How long the measurement runs.
#[derive(Clone, Copy)]
struct Plan {
    warm_up: Duration,
    batch: Duration,
    batches: usize,
    throughput_window: Duration,
    throughput_rounds: usize,
}

impl Plan {
    const FULL: Plan = Plan {
        warm_up: Duration::from_millis(300),
        batch: Duration::from_millis(20),
        batches: 41,
        throughput_window: Duration::from_secs(1),
        throughput_rounds: 3,
    };
    const QUICK: Plan = Plan {
        warm_up: Duration::from_millis(50),
        batch: Duration::from_millis(5),
        batches: 7,
        throughput_window: Duration::from_millis(200),
        throughput_rounds: 1,
    };
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, side, scorer, size, calls] = args.as_slice()
        && flag == "--profile-one"
    {
        return profile_one(side, scorer, size, calls.parse()?);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let plan = if quick { Plan::QUICK } else { Plan::FULL };
    let threads = match args.iter().position(|a| a == "--threads") {
        Some(i) => args.get(i + 1).ok_or("--threads N")?.parse()?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };

    let plugins_dir = plugins_dir();
    let guest = read(Path::new(env!("EXTISM_PEER_GUEST_WASM")), "built by host/build.rs")?;
    let rt = runtime()?;

    println!("# Extism peer: Flywheel components vs Extism, same scorer code");
    println!();
    println!(
        "{} UTC; {threads} thread(s) available; CPU: {}; {}",
        today(),
        cpu_model(),
        if quick {
            "QUICK smoke run (figures are noisy)"
        } else {
            "full run"
        }
    );
    println!(
        "ours: flywheel-runtime (wasmtime 48, component, wasm32-wasip2, warm pooled instance); \
         Extism: extism 1.30.0 (wasmtime 43, core module, wasm32-unknown-unknown, JSON in/out)"
    );
    println!();

    let mut latency_rows = Vec::new();
    let mut throughput_rows = Vec::new();
    for name in SCORERS {
        let (ours, manifest) = load_component(&rt, &plugins_dir, name)?;
        let ext = ExtismGuest {
            wasm: &guest,
            manifest: &manifest,
        };
        for size in Size::ALL {
            let event = inputs::event(EVENT, size);
            check_agreement(name, &ours, &ext, &event)?;
            let lat = latency(plan, name, &ours, &ext, &event)?;
            latency_rows.push((name, size, lat));
            let tp = throughput(plan, threads, name, &ours, &ext, &event)?;
            eprintln!("measured {name} {}", size.name());
            throughput_rows.push((name, size, tp));
        }
    }

    println!("## Call latency, one thread (median of {} batches)", plan.batches);
    println!();
    println!(
        "| scorer | event | ours call | ours +prep | Extism call | Extism +ser | Extism ÷ ours (call) | Extism ÷ ours (+prep/+ser) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    // Failed calls, by phase: a sandbox giving up on a call is a result too.
    let mut errors = Vec::new();
    for (name, size, l) in &latency_rows {
        let ns = &l.ns;
        println!(
            "| {name} | {} | {} | {} | {} | {} | {:.2}× | {:.2}× |",
            size.name(),
            fmt_ns(ns[0]),
            fmt_ns(ns[1]),
            fmt_ns(ns[2]),
            fmt_ns(ns[3]),
            ns[2] / ns[0],
            ns[3] / ns[1],
        );
        let variants = ["ours call", "ours +prep", "Extism call", "Extism +ser"];
        for (variant, f) in variants.iter().zip(&l.failures) {
            if let Some(e) = &f.first {
                errors.push(format!(
                    "- latency, {name} {} {variant}: {} failed; first: {e}",
                    size.name(),
                    f.count
                ));
            }
        }
    }
    println!();
    println!(
        "## Throughput, {threads} thread(s), full path (+prep / +ser), median of {} round(s) of {:?}",
        plan.throughput_rounds, plan.throughput_window
    );
    println!();
    println!("| scorer | event | ours calls/s | Extism calls/s | ours ÷ Extism | failed calls (ours / Extism) |");
    println!("|---|---|---:|---:|---:|---:|");
    for (name, size, [ours, extism]) in &throughput_rows {
        println!(
            "| {name} | {} | {} | {} | {:.2}× | {} / {} |",
            size.name(),
            fmt_rate(ours.per_s),
            fmt_rate(extism.per_s),
            ours.per_s / extism.per_s,
            ours.failures.count,
            extism.failures.count,
        );
        for (side, tp) in [("ours", ours), ("Extism", extism)] {
            if let Some(e) = &tp.failures.first {
                errors.push(format!(
                    "- throughput, {name} {} {side}: {} failed; first: {e}",
                    size.name(),
                    tp.failures.count
                ));
            }
        }
    }
    if !errors.is_empty() {
        println!();
        println!("Failed calls (not in the figures above; latency batches include their time):");
        println!();
        for e in errors {
            println!("{e}");
        }
    }
    Ok(())
}

/// One side, one scorer, one size, `calls` full-path calls and nothing else.
fn profile_one(side: &str, name: &str, size: &str, calls: u64) -> Res<()> {
    let name = SCORERS
        .into_iter()
        .find(|s| *s == name)
        .ok_or_else(|| format!("unknown scorer {name}; one of {SCORERS:?}"))?;
    let size = Size::ALL
        .into_iter()
        .find(|s| s.name() == size)
        .ok_or("size is 200B or 4KiB")?;
    let rt = runtime()?;
    let (ours, manifest) = load_component(&rt, &plugins_dir(), name)?;
    let event = inputs::event(EVENT, size);
    let mut bench: Bench<'_> = match side {
        "ours" => Box::new(|| Ok(ours_call(&ours, &PreparedEvent::new(black_box(&event)))?.len())),
        "extism" => {
            let guest = read(Path::new(env!("EXTISM_PEER_GUEST_WASM")), "built by host/build.rs")?;
            let guest = ExtismGuest {
                wasm: &guest,
                manifest: &manifest,
            };
            let mut ext = extism_plugin(&guest.compile()?)?;
            Box::new(move || {
                let json = serde_json::to_vec(black_box(&event))?;
                Ok(extism_call(&mut ext, name, &json)?.len())
            })
        }
        other => return Err(format!("side is ours or extism, not {other}").into()),
    };
    calls_only(&mut bench, calls)
}

/// The measured part of `--profile-one`, a function of its own so that a profiler
/// can collect it alone: `valgrind --tool=callgrind --collect-atstart=no
/// --toggle-collect='*calls_only*'`.
#[inline(never)]
fn calls_only(bench: &mut Bench<'_>, calls: u64) -> Res<()> {
    for _ in 0..calls {
        black_box(bench()?);
    }
    Ok(())
}

fn read(path: &Path, hint: &str) -> Res<Vec<u8>> {
    std::fs::read(path).map_err(|e| format!("reading {}: {e} ({hint})", path.display()).into())
}

/// Where `cargo xtask plugins` staged the components, unless `$FLYWHEEL_PLUGINS_DIR`.
fn plugins_dir() -> PathBuf {
    std::env::var_os("FLYWHEEL_PLUGINS_DIR")
        .map_or_else(|| PathBuf::from(env!("EXTISM_PEER_PLUGINS_DIR")), PathBuf::from)
}

/// Our runtime as the server runs it (pooling, warm instances), with compiled
/// components cached under this workspace's target/ so only the first run compiles.
fn runtime() -> Res<Runtime> {
    let rt = Runtime::new(RuntimeOptions {
        cache_dir: Some(PathBuf::from(env!("EXTISM_PEER_TARGET_DIR")).join("component-cache")),
        ..RuntimeOptions::default()
    })?;
    if !rt.pooling() {
        eprintln!("warning: the pooling allocator was refused; our side runs on-demand");
    }
    Ok(rt)
}

/// One staged component plugin (`<dir>/<name>.wasm` + `.toml`), loaded and warm.
fn load_component(rt: &Runtime, dir: &Path, name: &str) -> Res<(Arc<Plugin>, Manifest)> {
    let hint = "build and stage the component plugins first: `cargo xtask plugins`";
    let wasm = read(&dir.join(format!("{name}.wasm")), hint)?;
    let toml_path = dir.join(format!("{name}.toml"));
    let toml = String::from_utf8(read(&toml_path, hint)?)?;
    let manifest = Manifest::from_toml(&toml).map_err(|e| format!("{}: {e}", toml_path.display()))?;
    let plugin = rt
        .load(manifest.clone(), &wasm, Arc::new(MemoryKv::default()))
        .map_err(|e| format!("loading {name}: {e}"))?;
    plugin.warm_up().map_err(|e| format!("warming up {name}: {e}"))?;
    Ok((Arc::new(plugin), manifest))
}

/// The Extism guest set up as one scorer: that scorer's `[config]` and the same
/// limits as our manifest gives it (timeout, memory).
struct ExtismGuest<'a> {
    wasm: &'a [u8],
    manifest: &'a Manifest,
}

impl ExtismGuest<'_> {
    /// Compile it, on an engine of its own. Each phase of the run compiles afresh, so
    /// that no phase inherits another's Extism state (its timer thread times calls out
    /// by bumping the epoch of the plugin's whole engine).
    fn compile(&self) -> Res<extism::CompiledPlugin> {
        let limits = &self.manifest.limits;
        let m = extism::Manifest::new([extism::Wasm::data(self.wasm.to_vec())])
            .with_config(self.manifest.config.iter())
            .with_timeout(Duration::from_millis(limits.timeout_ms))
            .with_memory_max(u32::try_from(limits.memory_mib * 16)?);
        Ok(extism::PluginBuilder::new(m)
            .with_wasi(false)
            .with_cache_disabled()
            .compile()?)
    }
}

fn extism_plugin(compiled: &extism::CompiledPlugin) -> Res<extism::Plugin> {
    Ok(extism::Plugin::new_from_compiled(compiled)?)
}

fn ours_call(plugin: &Plugin, prepared: &PreparedEvent) -> Res<Vec<Score>> {
    Ok(plugin.score(prepared).result?)
}

fn extism_call(plugin: &mut extism::Plugin, name: &str, json: &[u8]) -> Res<Vec<Score>> {
    let out: &[u8] = plugin
        .call(name, json)
        .map_err(|e| format!("Extism call to {name}: {e:#}"))?;
    Ok(serde_json::from_slice(out)?)
}

/// Both sides must return the very same scores before their speed means anything.
fn check_agreement(name: &str, ours: &Plugin, ext: &ExtismGuest<'_>, event: &Event) -> Res<()> {
    let from_ours = ours_call(ours, &PreparedEvent::new(event))?;
    let mut ext = extism_plugin(&ext.compile()?)?;
    let from_extism = extism_call(&mut ext, name, &serde_json::to_vec(event)?)?;
    if from_ours != from_extism {
        return Err(format!("{name}: the sides disagree:\n ours:   {from_ours:?}\n Extism: {from_extism:?}").into());
    }
    if from_ours.is_empty() {
        return Err(format!("{name} scored nothing: the event exercises no logic").into());
    }
    Ok(())
}

/// A thing to time: one call per invocation.
type Bench<'a> = Box<dyn FnMut() -> Res<usize> + 'a>;

/// Median ns per call of: ours call, ours +prep, Extism call, Extism +ser.
fn latency(plan: Plan, name: &'static str, ours: &Plugin, ext: &ExtismGuest<'_>, event: &Event) -> Res<Latency> {
    let prepared = PreparedEvent::new(event);
    let json = serde_json::to_vec(event)?;
    let compiled = ext.compile()?;
    let mut ext_call = extism_plugin(&compiled)?;
    let mut ext_full = extism_plugin(&compiled)?;
    let mut benches: [Bench<'_>; 4] = [
        Box::new(|| Ok(ours_call(ours, black_box(&prepared))?.len())),
        Box::new(|| Ok(ours_call(ours, &PreparedEvent::new(black_box(event)))?.len())),
        Box::new(|| Ok(extism_call(&mut ext_call, name, black_box(&json))?.len())),
        Box::new(|| {
            let json = serde_json::to_vec(black_box(event))?;
            Ok(extism_call(&mut ext_full, name, &json)?.len())
        }),
    ];

    // Warm up each and size its batches to about `plan.batch`. A failed call is
    // counted and reported, not fatal (see `run_threads`).
    let mut failures: [Failures; 4] = Default::default();
    let mut per_batch = [0u64; 4];
    for ((bench, n), failures) in benches.iter_mut().zip(&mut per_batch).zip(&mut failures) {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed() < plan.warm_up {
            failures.record(bench());
            calls += 1;
        }
        let per_call = start.elapsed().as_secs_f64() / calls as f64;
        *n = ((plan.batch.as_secs_f64() / per_call) as u64).max(1);
    }

    // Interleave: every batch round runs all four, in a rotating order, so that noise
    // from the shared machine lands on every variant alike.
    let mut samples: [Vec<f64>; 4] = Default::default();
    for round in 0..plan.batches {
        for k in 0..4 {
            let i = (round + k) % 4;
            let start = Instant::now();
            for _ in 0..per_batch[i] {
                failures[i].record(benches[i]());
            }
            samples[i].push(start.elapsed().as_nanos() as f64 / per_batch[i] as f64);
        }
    }
    Ok(Latency {
        ns: samples.map(median),
        failures,
    })
}

/// Median ns per call of: ours call, ours +prep, Extism call, Extism +ser; and the
/// failed calls of each.
#[derive(Debug)]
struct Latency {
    ns: [f64; 4],
    failures: [Failures; 4],
}

/// Failed calls: how many, and the first one's error.
#[derive(Debug, Default)]
struct Failures {
    count: u64,
    first: Option<String>,
}

impl Failures {
    /// Whether the call succeeded; counts it if not.
    fn record(&mut self, outcome: Res<usize>) -> bool {
        match outcome {
            Ok(out) => {
                black_box(out);
                true
            }
            Err(e) => {
                self.count += 1;
                self.first.get_or_insert_with(|| e.to_string());
                false
            }
        }
    }

    fn add(&mut self, other: Failures) {
        self.count += other.count;
        self.first = self.first.take().or(other.first);
    }
}

/// Calls per second on `threads` threads over the full path: [ours, Extism], each
/// the median of `plan.throughput_rounds` rounds (alternating sides).
fn throughput(
    plan: Plan,
    threads: usize,
    name: &'static str,
    ours: &Arc<Plugin>,
    ext: &ExtismGuest<'_>,
    event: &Event,
) -> Res<[Throughput; 2]> {
    let mut rates: [Vec<Rate>; 2] = Default::default();
    for _ in 0..plan.throughput_rounds {
        let compiled = ext.compile()?;
        rates[0].push(run_threads(plan.throughput_window, threads, |_| {
            let ours = ours.clone();
            Ok(Box::new(move || {
                Ok(ours_call(&ours, &PreparedEvent::new(black_box(event)))?.len())
            }))
        })?);
        rates[1].push(run_threads(plan.throughput_window, threads, |_| {
            let mut ext = extism_plugin(&compiled)?;
            Ok(Box::new(move || {
                let json = serde_json::to_vec(black_box(event))?;
                Ok(extism_call(&mut ext, name, &json)?.len())
            }))
        })?);
    }
    Ok(rates.map(|rounds| {
        let per_s = median(rounds.iter().map(|r| r.per_s).collect());
        let mut failures = Failures::default();
        for r in rounds {
            failures.add(r.failures);
        }
        Throughput { per_s, failures }
    }))
}

/// One round of [`run_threads`]: successful calls per second, and the failures.
#[derive(Debug, Default)]
struct Rate {
    per_s: f64,
    failures: Failures,
}

/// One side's throughput: the median rate over rounds, and every round's failures.
#[derive(Debug)]
struct Throughput {
    per_s: f64,
    failures: Failures,
}

/// Run `threads` workers made by `make` (on their own thread, before the start) for
/// `window`; the sum of their successful calls per second. A failed call is counted
/// and the worker goes on: on a loaded machine a call can outlast its 100 ms
/// wall-clock timeout (see README.md), which is a result, not a reason to abort.
fn run_threads<'a, F>(window: Duration, threads: usize, make: F) -> Res<Rate>
where
    F: Fn(usize) -> Res<Bench<'a>> + Sync,
{
    let start = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (start, stop, make) = (&start, &stop, &make);
                s.spawn(move || -> Res<Rate> {
                    let made = make(t).and_then(|mut bench| {
                        // Warm: instances created, caches hot.
                        for _ in 0..20 {
                            black_box(bench()?);
                        }
                        Ok(bench)
                    });
                    start.wait();
                    let mut bench = made?;
                    let began = Instant::now();
                    let mut rate = Rate::default();
                    let mut calls = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if rate.failures.record(bench()) {
                            calls += 1;
                        }
                    }
                    rate.per_s = calls as f64 / began.elapsed().as_secs_f64();
                    Ok(rate)
                })
            })
            .collect();
        start.wait();
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
        let mut total = Rate::default();
        for worker in workers {
            let rate = worker.join().map_err(|_| "a benchmark thread panicked")??;
            total.per_s += rate.per_s;
            total.failures.add(rate.failures);
        }
        Ok(total)
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn fmt_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k", per_s / 1e3)
    } else {
        format!("{per_s:.0}")
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Today's date (UTC) as `YYYY-MM-DD`, without a date crate (Howard Hinnant's
/// days-to-civil algorithm).
fn today() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
