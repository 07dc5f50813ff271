//! Replay: run a candidate plugin version over stored events and report what would
//! change, before promoting it.
//!
//! The candidate replaces the plugin of its name, and only the candidate (plus the
//! routers, for a scorer candidate) runs; every other plugin's stored scores and votes
//! are reused. The baseline is the plugin's live version run the same way, so that a
//! router changed since the events were processed is not blamed on the candidate (with
//! no live version, the stored outcome is the baseline). Nothing is written: every
//! plugin gets a scratch copy of its key-value data. Work is spread over every core.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use flywheel_model::{EventRecord, PluginKind, PluginRef, Route};
use flywheel_runtime::{KvBackend, LoadError, Manifest, MemoryKv, Plugin, PreparedEvent, Runtime};
use flywheel_store::{EventFilter, Store};
use serde::Serialize;

use crate::pipeline::{LiveSet, shadow_run};
use crate::registry::{PluginStatus, load_blob, load_entries};

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Store(#[from] flywheel_store::StoreError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error("a refiner cannot be replayed over events; use POST /v1/prompts/{{name}}/refine")]
    Refiner,
}

/// What to replay over.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    pub filter: EventFilter,
    /// Stop after this many events.
    pub limit: Option<usize>,
    /// Example event ids kept per route change.
    pub examples: usize,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
}

/// A score's distribution: count, mean and ten equal-width bins over 0..=1.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Distribution {
    pub count: u64,
    pub mean: f64,
    pub histogram: [u64; 10],
    #[serde(skip)]
    sum: f64,
}

impl Distribution {
    fn add(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.histogram[((v * 10.0) as usize).min(9)] += 1;
    }

    fn merge(&mut self, o: &Distribution) {
        self.count += o.count;
        self.sum += o.sum;
        for (a, b) in self.histogram.iter_mut().zip(o.histogram) {
            *a += b;
        }
    }

    fn finish(&mut self) {
        self.mean = if self.count > 0 {
            self.sum / self.count as f64
        } else {
            0.0
        };
    }
}

/// Before and after for one score name.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ScoreShift {
    pub before: Distribution,
    pub after: Distribution,
    pub mean_shift: f64,
}

/// Events whose route went from one thing to another.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RouteChange {
    pub from: String,
    pub to: String,
    pub count: u64,
    pub examples: Vec<String>,
}

/// What a replay found.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub candidate: PluginRef,
    pub replaces: Option<PluginRef>,
    /// `live` (the live version re-run beside the candidate) or `stored` (the stored
    /// outcomes, when the plugin has no live version).
    pub baseline: &'static str,
    pub events: u64,
    /// Stored but not yet processed: no baseline to compare with.
    pub skipped_pending: u64,
    pub routes_changed: u64,
    pub route_changes: Vec<RouteChange>,
    pub scores: BTreeMap<String, ScoreShift>,
    pub errors: BTreeMap<String, u64>,
    pub elapsed_ms: f64,
    pub events_per_second: f64,
}

/// A route as a short key: `label:labeling`, `accept`, ...
pub fn route_key(r: &Route) -> String {
    match r.queue() {
        Some(t) => format!("{}:{}", r.action(), t.queue),
        None => r.action().to_string(),
    }
}

#[derive(Default)]
struct Acc {
    events: u64,
    skipped: u64,
    changed: u64,
    changes: BTreeMap<(String, String), (u64, Vec<String>)>,
    scores: BTreeMap<String, ScoreShift>,
    errors: BTreeMap<String, u64>,
}

impl Acc {
    fn merge(&mut self, o: Acc, examples: usize) {
        self.events += o.events;
        self.skipped += o.skipped;
        self.changed += o.changed;
        for (k, (n, ex)) in o.changes {
            let e = self.changes.entry(k).or_default();
            e.0 += n;
            e.1.extend(ex);
            e.1.sort();
            e.1.truncate(examples);
        }
        for (k, s) in o.scores {
            let e = self.scores.entry(k).or_default();
            e.before.merge(&s.before);
            e.after.merge(&s.after);
        }
        for (k, n) in o.errors {
            *self.errors.entry(k).or_default() += n;
        }
    }
}

fn replay_one(
    set: &LiveSet,
    candidate: &Plugin,
    live: Option<(&LiveSet, &Plugin)>,
    record: &EventRecord,
    examples: usize,
    acc: &mut Acc,
) {
    let Some(outcome) = &record.outcome else {
        acc.skipped += 1;
        return;
    };
    acc.events += 1;
    let name = &candidate.id().name;
    let prepared = PreparedEvent::new(&record.event);
    let Some(run) = shadow_run(
        set,
        candidate,
        &prepared,
        &outcome.scores,
        &outcome.votes,
        &outcome.route,
    ) else {
        return;
    };
    for call in &run.calls {
        if let Some(e) = &call.error {
            *acc.errors.entry(e.class.as_str().to_string()).or_default() += 1;
        }
    }
    let baseline = live.and_then(|(set, live)| {
        shadow_run(
            set,
            live,
            &prepared,
            &outcome.scores,
            &outcome.votes,
            &outcome.route,
        )
    });
    let before = match &baseline {
        Some(b) => {
            for s in &b.scores {
                acc.scores
                    .entry(s.name.clone())
                    .or_default()
                    .before
                    .add(s.value);
            }
            &b.route
        }
        None => {
            for s in outcome.scores.iter().filter(|s| &s.plugin == name) {
                acc.scores
                    .entry(s.score.name.clone())
                    .or_default()
                    .before
                    .add(s.score.value);
            }
            &outcome.route
        }
    };
    for s in &run.scores {
        acc.scores
            .entry(s.name.clone())
            .or_default()
            .after
            .add(s.value);
    }
    if !run.route.same_destination(before) {
        acc.changed += 1;
        let e = acc
            .changes
            .entry((route_key(before), route_key(&run.route)))
            .or_default();
        e.0 += 1;
        if e.1.len() < examples {
            e.1.push(record.event.id.clone());
        }
    }
}

/// The live plugins as stored in the registry, loaded afresh against scratch
/// key-value copies, without the plugin named `except`.
pub fn scratch_live_set(
    store: &Store,
    runtime: &Runtime,
    except: &str,
) -> Result<LiveSet, ReplayError> {
    let mut plugins = Vec::new();
    for entry in load_entries(store)?.into_values() {
        if entry.status != PluginStatus::Active || entry.name == except {
            continue;
        }
        let Some(hash) = entry.live.as_ref() else {
            continue;
        };
        let Some(record) = entry.versions.iter().find(|v| &v.hash == hash) else {
            continue;
        };
        let wasm = load_blob(store, hash)?;
        plugins.push(Arc::new(runtime.load(
            record.manifest.clone(),
            &wasm,
            scratch_kv(store, &entry.name),
        )?));
    }
    Ok(LiveSet::new(plugins))
}

fn scratch_kv(store: &Store, plugin: &str) -> Arc<dyn KvBackend> {
    let entries = store.kv_snapshot(plugin).unwrap_or_default();
    Arc::new(MemoryKv::with_entries(plugin, entries))
}

/// Replay `candidate` (a manifest and component) over the stored events.
pub fn replay(
    store: &Store,
    runtime: &Runtime,
    manifest: Manifest,
    wasm: &[u8],
    options: &ReplayOptions,
) -> Result<ReplayReport, ReplayError> {
    if manifest.kind == PluginKind::Refiner {
        return Err(ReplayError::Refiner);
    }
    let started = Instant::now();
    let set = scratch_live_set(store, runtime, &manifest.name)?;
    // The plugin's live version, if any, is the baseline: run with routers of its own,
    // both on scratch copies of their kv, so a stateful router does not count each event
    // twice.
    let entries = load_entries(store)?;
    let live_record = entries.get(&manifest.name).and_then(|e| {
        let hash = e.live.as_ref()?;
        e.versions.iter().find(|v| &v.hash == hash)
    });
    let replaces = live_record.map(|v| PluginRef {
        name: manifest.name.clone(),
        version: v.manifest.version.clone(),
        hash: v.hash.clone(),
    });
    let live = match live_record {
        Some(v) => {
            let blob = load_blob(store, &v.hash)?;
            let plugin =
                runtime.load(v.manifest.clone(), &blob, scratch_kv(store, &manifest.name))?;
            Some((scratch_live_set(store, runtime, &manifest.name)?, plugin))
        }
        None => None,
    };
    let kv = scratch_kv(store, &manifest.name);
    let candidate = runtime.load(manifest, wasm, kv)?;
    let threads = if options.threads > 0 {
        options.threads
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    };
    let examples = options.examples.max(1);
    let (tx, rx) = crossbeam_channel::bounded::<Vec<EventRecord>>(threads * 4);
    let mut total = Acc::default();
    let read_error = std::thread::scope(|scope| -> Result<(), ReplayError> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                let set = &set;
                let candidate = &candidate;
                let live = live.as_ref().map(|(set, plugin)| (set, plugin));
                scope.spawn(move || {
                    let mut acc = Acc::default();
                    while let Ok(chunk) = rx.recv() {
                        for record in &chunk {
                            replay_one(set, candidate, live, record, examples, &mut acc);
                        }
                    }
                    acc
                })
            })
            .collect();
        drop(rx);
        let mut chunk = Vec::with_capacity(256);
        let mut seen = 0usize;
        let mut result = Ok(());
        for record in store.scan(&options.filter) {
            if options.limit.is_some_and(|l| seen >= l) {
                break;
            }
            match record {
                Ok(r) => {
                    seen += 1;
                    chunk.push(r);
                    if chunk.len() == 256
                        && tx
                            .send(std::mem::replace(&mut chunk, Vec::with_capacity(256)))
                            .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            }
        }
        if !chunk.is_empty() {
            let _ = tx.send(chunk);
        }
        drop(tx);
        for w in workers {
            if let Ok(acc) = w.join() {
                total.merge(acc, examples);
            }
        }
        result
    });
    read_error?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut scores = total.scores;
    for s in scores.values_mut() {
        s.before.finish();
        s.after.finish();
        s.mean_shift = s.after.mean - s.before.mean;
    }
    let mut route_changes: Vec<RouteChange> = total
        .changes
        .into_iter()
        .map(|((from, to), (count, examples))| RouteChange {
            from,
            to,
            count,
            examples,
        })
        .collect();
    route_changes.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.from.cmp(&b.from))
            .then(a.to.cmp(&b.to))
    });
    Ok(ReplayReport {
        candidate: candidate.id().clone(),
        replaces,
        baseline: if live.is_some() { "live" } else { "stored" },
        events: total.events,
        skipped_pending: total.skipped,
        routes_changed: total.changed,
        route_changes,
        scores,
        errors: total.errors,
        elapsed_ms: elapsed * 1000.0,
        events_per_second: if elapsed > 0.0 {
            total.events as f64 / elapsed
        } else {
            0.0
        },
    })
}
