//! Shared set-up for Flywheel's benchmarks: the real compiled example plugins (built
//! by `build.rs`), runtimes in each instance mode, realistic events, the same events
//! in the plugin SDK's types for the native side, and the ratio summary printed at
//! the end of a run. Nothing here is timed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use flywheel::pipeline::LiveSet;
use flywheel_model::{Event, Feedback, Thumb};
use flywheel_runtime::{Manifest, MemoryKv, Plugin, Runtime, RuntimeOptions};

/// Where `build.rs` left the wasm components.
const WASM_DIR: &str = env!("FLYWHEEL_BENCH_WASM_DIR");

/// The wasm components' directory: `FLYWHEEL_BENCH_WASM_OVERRIDE` at run time if set
/// (another build of the plugins, e.g. an unstripped one whose function names show up
/// in `perf`, or an older one to compare with), else the one `build.rs` made.
fn wasm_dir() -> PathBuf {
    std::env::var_os("FLYWHEEL_BENCH_WASM_OVERRIDE")
        .map_or_else(|| PathBuf::from(WASM_DIR), PathBuf::from)
}
/// `plugins/examples`, for the manifests.
const PLUGINS_DIR: &str = env!("FLYWHEEL_BENCH_PLUGINS_DIR");

/// The example plugins, scorers first (the order `decide` runs them in).
pub const EXAMPLES: [&str; 5] = [
    "satisfaction",
    "groundedness",
    "sensitive",
    "hitl-router",
    "prompt-refiner",
];

/// How a runtime runs calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// A new instance for every call instead of a warm one.
    pub fresh: bool,
    /// The pooling allocator (else on-demand mmap per instance).
    pub pooling: bool,
}

impl Mode {
    pub const REUSE: Mode = Mode {
        fresh: false,
        pooling: true,
    };
    pub const FRESH: Mode = Mode {
        fresh: true,
        pooling: true,
    };

    /// A short name for bench ids: `reuse-pool`, `fresh-ondemand`, ...
    pub fn name(self) -> &'static str {
        match (self.fresh, self.pooling) {
            (false, true) => "reuse-pool",
            (false, false) => "reuse-ondemand",
            (true, true) => "fresh-pool",
            (true, false) => "fresh-ondemand",
        }
    }
}

/// A runtime in `mode`, caching compiled components under `target/` so that only the
/// first run pays for Cranelift.
pub fn runtime(mode: Mode) -> Runtime {
    let cache = wasm_dir().join("bench-cache");
    let rt = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache),
        pooling: mode.pooling,
        fresh_instance_per_call: mode.fresh,
        ..RuntimeOptions::default()
    })
    .expect("the runtime starts");
    if mode.pooling && !rt.pooling() {
        eprintln!(
            "warning: the pooling allocator was refused on this machine; `{}` runs on-demand",
            mode.name()
        );
    }
    rt
}

/// The manifest of an example plugin, as `plugins/examples/<name>/plugin.toml` has it.
pub fn manifest(name: &str) -> Manifest {
    let path = PathBuf::from(PLUGINS_DIR).join(name).join("plugin.toml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Manifest::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Load one example plugin from its compiled component, warmed up once.
pub fn load(rt: &Runtime, name: &str) -> Arc<Plugin> {
    let wasm_path = wasm_dir().join(format!("{}.wasm", name.replace('-', "_")));
    let wasm = std::fs::read(&wasm_path).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} (run `cargo xtask plugins` to build the plugins)",
            wasm_path.display()
        )
    });
    let plugin = rt
        .load(manifest(name), &wasm, Arc::new(MemoryKv::default()))
        .unwrap_or_else(|e| panic!("load {name}: {e}"));
    plugin
        .warm_up()
        .unwrap_or_else(|e| panic!("warm up {name}: {e}"));
    Arc::new(plugin)
}

/// All five example plugins, as `serve` would run them.
pub fn live_set(rt: &Runtime) -> LiveSet {
    LiveSet::new(EXAMPLES.iter().map(|n| load(rt, n)))
}

/// Make this thread's SDK fakes return `name`'s manifest config, as the host would.
pub fn set_native_config(name: &str) {
    let config: BTreeMap<String, String> = manifest(name).config;
    let pairs: Vec<(&str, &str)> = config
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    flywheel_plugin::testing::set_config(&pairs);
}

mod inputs;

pub use inputs::{Size, event};

/// `count` distinct events of one size.
pub fn events(count: usize, size: Size) -> Vec<Event> {
    (0..count).map(|i| event(i, size)).collect()
}

/// The same event in the plugin SDK's types: what a guest receives.
pub fn to_sdk(e: &Event) -> flywheel_plugin::Event {
    use flywheel_plugin::{Rating, Signal};
    flywheel_plugin::EventData {
        id: e.id.clone(),
        received_at: e.received_at,
        trace_id: e.trace_id.clone(),
        session_id: e.session_id.clone(),
        user_id: e.user_id.clone(),
        model: e.model.clone(),
        prompt: e.prompt.as_ref().map(|p| flywheel_plugin::PromptRef {
            name: p.name.clone(),
            version: p.version.clone(),
        }),
        input: e.input.clone(),
        output: e.output.clone(),
        context: e.context.clone(),
        signal: match &e.feedback {
            Feedback::Thumbs { value: Thumb::Up } => Signal::Thumbs(flywheel_plugin::Thumb::Up),
            Feedback::Thumbs { value: Thumb::Down } => Signal::Thumbs(flywheel_plugin::Thumb::Down),
            Feedback::Rating { value, scale } => Signal::Rating(Rating {
                value: *value,
                scale: *scale,
            }),
            Feedback::Correction { text } => Signal::Correction(text.clone()),
            Feedback::Clarification { text } => Signal::Clarification(text.clone()),
            Feedback::Comment { text } => Signal::Comment(text.clone()),
            Feedback::None => Signal::None,
        },
        metadata: e
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
    .into()
}

pub mod summary;

/// A store for a bench in `dir`, not durable: a flush costs what the disk costs, which is
/// not what these benches compare.
pub fn scratch_store(dir: &std::path::Path) -> flywheel_store::Store {
    flywheel_store::Store::open(
        dir,
        flywheel_store::StoreOptions {
            durable: false,
            ..flywheel_store::StoreOptions::default()
        },
    )
    .expect("open the store")
}

/// Fills `store` with `total` processed events spread evenly over the `days` days before
/// now, as weeks of traffic leave them: ids `e0`, `e1`, ..., 100 users (`user-{i % 100}`),
/// sessions of 10 events, three versions of one prompt, each scored 0.75 on
/// satisfaction and accepted. For the benches of reads that grow with the store.
pub fn fill_days(store: &flywheel_store::Store, total: u64, days: u64) {
    const DAY_MS: u64 = 86_400_000;
    let now = flywheel_model::now_ms();
    let first = now - days * DAY_MS;
    let step = (now - first) / total.max(1);
    let answer = "To reset your password, open Settings, then Security, and choose Reset \
                  password. The reset link in the email expires after 24 hours.";
    let outcome: flywheel_model::Outcome = serde_json::from_value(serde_json::json!({
        "scores": [{"plugin": "satisfaction", "name": "satisfaction", "value": 0.75}],
        "votes": [], "calls": [], "plugins": [], "processed_at": now,
        "route": {"action": "accept"},
    }))
    .expect("an outcome");
    let ids: Vec<String> = (0..total).map(|i| format!("e{i}")).collect();
    for (c, chunk) in ids.chunks(1000).enumerate() {
        let events = chunk
            .iter()
            .enumerate()
            .map(|(j, id)| {
                let i = (c * 1000 + j) as u64;
                serde_json::from_value::<Event>(serde_json::json!({
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
        let items: Vec<(&str, &flywheel_model::Outcome)> =
            chunk.iter().map(|id| (id.as_str(), &outcome)).collect();
        store.complete_all(&items).expect("complete");
    }
    // What the server's sweeper does every few seconds: later reads start past this.
    store.advance_watermark().expect("watermark");
}
