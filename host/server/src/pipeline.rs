//! The policy pipeline: every active scorer, then every active router with the scores,
//! then one decision stored beside the event.
//!
//! [`decide`] is pure (plugins in, [`Outcome`] out) so that `serve`, replay and the
//! benches run the same code. [`Pipeline`] adds the worker pool: events are processed
//! off the request path on plain threads (plugin calls are CPU-bound and must not
//! starve the HTTP runtime), and the live plugin set is swapped atomically with
//! `arc-swap`; an event is processed by the one set it loaded when it started. A worker
//! decides a batch of waiting events and hands their outcomes to the store, which writes
//! them in its next group commit; the worker never waits on a write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use flywheel_model::{
    CallRecord, Event, FailureMode, Outcome, PluginKind, PluginRef, QueueTarget, Route, Score,
    ScoreRecord, ShadowRun, Vote, now_ms,
};
use flywheel_runtime::{CallOutcome, Plugin, PluginFailure, PreparedEvent, PreparedScores};
use flywheel_store::{Completion, Store};

/// Queue that fail-closed failures send events to.
pub const FAIL_CLOSED_QUEUE: &str = "review";

/// A plugin taken out of service after repeated failures. It is not called, but its
/// failure mode still applies: a fail-closed policy that cannot run sends every event
/// to review, because nothing vouches for it.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub id: PluginRef,
    pub kind: PluginKind,
    pub failure_mode: FailureMode,
}

/// The plugins that process events right now: one consistent set of versions.
#[derive(Debug, Default)]
pub struct LiveSet {
    pub scorers: Vec<Arc<Plugin>>,
    pub routers: Vec<Arc<Plugin>>,
    pub refiners: Vec<Arc<Plugin>>,
    /// Candidates run beside the live version of the same name; never routed.
    pub shadows: Vec<Arc<Plugin>>,
    pub quarantined: Vec<Quarantined>,
    /// `refs()`, made once: every outcome of this set shares it.
    refs: std::sync::OnceLock<Arc<[PluginRef]>>,
}

impl LiveSet {
    /// Sort plugins into their kinds, keeping the given order within each kind.
    pub fn new(plugins: impl IntoIterator<Item = Arc<Plugin>>) -> Self {
        let mut set = Self::default();
        for p in plugins {
            match p.kind() {
                PluginKind::Scorer => set.scorers.push(p),
                PluginKind::Router => set.routers.push(p),
                PluginKind::Refiner => set.refiners.push(p),
            }
        }
        set
    }

    /// Every live plugin in the set (not shadows).
    pub fn all(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.scorers
            .iter()
            .chain(&self.routers)
            .chain(&self.refiners)
    }

    /// The exact builds that will process an event (refiners do not).
    pub fn refs(&self) -> Vec<PluginRef> {
        self.scorers
            .iter()
            .chain(&self.routers)
            .map(|p| p.id().clone())
            .collect()
    }

    /// [`LiveSet::refs`], shared: what each outcome holds (no copy per event).
    pub fn refs_shared(&self) -> Arc<[PluginRef]> {
        self.refs.get_or_init(|| self.refs().into()).clone()
    }

    /// Find a plugin of this set (live or shadow) by version hash.
    pub fn find(&self, hash: &str) -> Option<&Arc<Plugin>> {
        self.all()
            .chain(&self.shadows)
            .find(|p| p.id().hash == hash)
    }
}

/// A plugin's metric handles, registered once per plugin name and kind: looking a
/// labelled metric up in the recorder on every call (label strings, hashing, a lock)
/// cost more than some plugin calls.
struct PluginMetrics {
    calls: metrics::Counter,
    seconds: metrics::Histogram,
}

fn plugin_metrics(plugin: &Plugin) -> Arc<PluginMetrics> {
    /// By plugin name, then kind (a name may be reused for another kind).
    type Cache = parking_lot::RwLock<HashMap<String, Vec<(PluginKind, Arc<PluginMetrics>)>>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let name = plugin.id().name.as_str();
    let kind = plugin.kind();
    let find = |kinds: &Vec<(PluginKind, Arc<PluginMetrics>)>| {
        kinds
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, m)| m.clone())
    };
    if let Some(m) = cache.read().get(name).and_then(find) {
        return m;
    }
    let mut cache = cache.write();
    let kinds = cache.entry(name.to_owned()).or_default();
    if let Some(m) = find(kinds) {
        return m;
    }
    let handles = Arc::new(PluginMetrics {
        calls: metrics::counter!("flywheel_plugin_calls_total", "plugin" => name.to_owned(), "kind" => kind.as_str()),
        seconds: metrics::histogram!("flywheel_plugin_call_seconds", "plugin" => name.to_owned()),
    });
    kinds.push((kind, handles.clone()));
    handles
}

fn record<T>(plugin: &Plugin, outcome: &CallOutcome<T>) -> CallRecord {
    let failed = outcome.result.as_ref().err();
    let micros = outcome.duration.as_micros() as u64;
    tracing::debug!(
        plugin = %plugin.id().name,
        version = %plugin.id().version,
        hash = %plugin.id().hash.get(..12).unwrap_or_default(),
        duration_us = micros,
        ok = failed.is_none(),
        "plugin call"
    );
    let handles = plugin_metrics(plugin);
    handles.calls.increment(1);
    handles.seconds.record(outcome.duration.as_secs_f64());
    if let Some(f) = failed {
        let name = plugin.id().name.clone();
        metrics::counter!("flywheel_plugin_errors_total", "plugin" => name, "class" => f.class.as_str())
            .increment(1);
        tracing::warn!(plugin = %f.plugin, class = %f.class, "plugin call failed: {}", f.message);
    }
    CallRecord {
        plugin: plugin.shared_id().clone(),
        kind: plugin.kind(),
        duration_us: micros,
        error: failed.map(PluginFailure::to_call_error),
        failure_mode: failed.map(|_| plugin.manifest().failure_mode),
    }
}

fn imposed_review(plugin: &str, why: String) -> Vote {
    Vote {
        plugin: plugin.to_string(),
        route: Route::Review(QueueTarget {
            queue: FAIL_CLOSED_QUEUE.into(),
            priority: 90,
            reason: why,
        }),
        imposed: true,
    }
}

fn failed_closed(failure: &PluginFailure) -> Vote {
    imposed_review(
        &failure.plugin.name,
        format!(
            "plugin {} failed ({}) and is fail-closed: {}",
            failure.plugin.name, failure.class, failure.message
        ),
    )
}

/// The most cautious vote: review > label > accept, drop only if every router drops.
/// Among equally cautious votes the higher priority wins, then the earlier router.
pub fn final_route(votes: &[Vote]) -> Route {
    votes
        .iter()
        .map(|v| &v.route)
        .fold(None::<&Route>, |best, r| match best {
            None => Some(r),
            Some(b) => {
                let key = |r: &Route| (r.caution(), r.queue().map_or(0, |t| t.priority));
                if key(r) > key(b) { Some(r) } else { Some(b) }
            }
        })
        .cloned()
        .unwrap_or(Route::Accept)
}

/// Run one scorer: its scores, its call record, and a vote if it failed closed.
fn run_scorer(scorer: &Plugin, event: &PreparedEvent) -> (Vec<Score>, CallRecord, Option<Vote>) {
    let outcome = scorer.score(event);
    let call = record(scorer, &outcome);
    match outcome.result {
        Ok(scores) => (scores, call, None),
        Err(f) => {
            let vote = (scorer.manifest().failure_mode == FailureMode::FailClosed)
                .then(|| failed_closed(&f));
            (Vec::new(), call, vote)
        }
    }
}

/// Run one router: its vote (cast, or imposed by a fail-closed failure) and its call.
fn run_router(
    router: &Plugin,
    event: &PreparedEvent,
    scores: &PreparedScores,
) -> (Option<Vote>, CallRecord) {
    let outcome = router.route(event, scores);
    let call = record(router, &outcome);
    let vote = match outcome.result {
        Ok(route) => Some(Vote {
            plugin: router.id().name.clone(),
            route,
            imposed: false,
        }),
        Err(f) => {
            (router.manifest().failure_mode == FailureMode::FailClosed).then(|| failed_closed(&f))
        }
    };
    (vote, call)
}

/// Run one event through a plugin set. Pure apart from the plugins' own kv writes.
/// The event is shared with the plugins (each reads the fields it needs): no copy.
pub fn decide(set: &LiveSet, event: &Arc<Event>) -> Outcome {
    let prepared = std::cell::LazyCell::new(|| PreparedEvent::shared(event.clone()));
    let mut calls = Vec::with_capacity(set.scorers.len() + set.routers.len());
    let mut scores = Vec::new();
    let mut votes = Vec::new();
    for q in &set.quarantined {
        calls.push(CallRecord {
            plugin: Arc::new(q.id.clone()),
            kind: q.kind,
            duration_us: 0,
            error: Some(flywheel_model::CallError {
                class: flywheel_model::ErrorClass::Unavailable,
                message: "quarantined after repeated failures; not called".into(),
            }),
            failure_mode: Some(q.failure_mode),
        });
        if q.failure_mode == FailureMode::FailClosed {
            votes.push(imposed_review(
                &q.id.name,
                format!("plugin {} is quarantined and fail-closed", q.id.name),
            ));
        }
    }
    for scorer in &set.scorers {
        let (s, call, vote) = run_scorer(scorer, &prepared);
        calls.push(call);
        votes.extend(vote);
        scores.extend(s.into_iter().map(|score| ScoreRecord {
            plugin: scorer.id().name.clone(),
            score,
        }));
    }
    let prepared_scores = PreparedScores::new(scores.iter().map(|s| &s.score));
    for router in &set.routers {
        let (vote, call) = run_router(router, &prepared, &prepared_scores);
        calls.push(call);
        votes.extend(vote);
    }
    let route = final_route(&votes);
    let shadow = set
        .shadows
        .iter()
        .filter_map(|candidate| shadow_run(set, candidate, &prepared, &scores, &votes, &route))
        .collect();
    Outcome {
        route,
        scores,
        votes,
        calls,
        plugins: set.refs_shared(),
        processed_at: now_ms(),
        shadow,
    }
}

/// What the pipeline would have decided with `candidate` in place of the live plugin
/// of the same name, reusing every other plugin's live result.
pub fn shadow_run(
    set: &LiveSet,
    candidate: &Plugin,
    event: &PreparedEvent,
    live_scores: &[ScoreRecord],
    live_votes: &[Vote],
    live_route: &Route,
) -> Option<ShadowRun> {
    let name = &candidate.id().name;
    let replaces = set
        .all()
        .find(|p| &p.id().name == name)
        .map(|p| p.id().clone());
    let mut calls = Vec::new();
    let (own_scores, votes) = match candidate.kind() {
        PluginKind::Scorer => {
            let (own, call, failed_vote) = run_scorer(candidate, event);
            calls.push(call);
            let scores: Vec<&Score> = live_scores
                .iter()
                .filter(|s| &s.plugin != name)
                .map(|s| &s.score)
                .chain(own.iter())
                .collect();
            let prepared = PreparedScores::new(scores);
            // Imposed votes of other plugins stand; the live version's own do not.
            let mut votes: Vec<Vote> = live_votes
                .iter()
                .filter(|v| v.imposed && &v.plugin != name)
                .cloned()
                .collect();
            votes.extend(failed_vote);
            for router in &set.routers {
                let (vote, call) = run_router(router, event, &prepared);
                calls.push(call);
                votes.extend(vote);
            }
            (own, votes)
        }
        PluginKind::Router => {
            let prepared = PreparedScores::new(live_scores.iter().map(|s| &s.score));
            let (vote, call) = run_router(candidate, event, &prepared);
            calls.push(call);
            let mut votes: Vec<Vote> = live_votes
                .iter()
                .filter(|v| &v.plugin != name)
                .cloned()
                .collect();
            votes.extend(vote);
            (Vec::new(), votes)
        }
        PluginKind::Refiner => return None,
    };
    let route = final_route(&votes);
    Some(ShadowRun {
        candidate: candidate.id().clone(),
        replaces,
        scores: own_scores,
        agrees: route.same_destination(live_route),
        votes,
        route,
        calls,
    })
}

/// How the worker pool runs.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    /// Worker threads (plugin calls are CPU-bound: one per core is plenty).
    pub workers: usize,
    /// Events waiting for a worker before new ones are left for the backlog sweeper.
    pub queue_capacity: usize,
    /// Niceness of the worker threads; see `PipelineConfig::nice`.
    pub nice: i32,
}

/// Give the calling thread a lower scheduling priority (Linux: per-thread niceness; the
/// threads it starts inherit it). Best effort: where it is refused or unsupported, the
/// thread runs at normal priority.
pub(crate) fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), nice.min(19)) {
            tracing::warn!("could not lower a thread's priority: {e}");
        }
    }
}

/// Work for the pool: an event to decide (the handler already has it, so the worker
/// need not read it back from the store).
struct Job {
    event: Arc<Event>,
}

/// Counters the API reports and the tests read.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub processed: AtomicU64,
    pub already_processed: AtomicU64,
    pub store_errors: AtomicU64,
}

struct Shared {
    store: Store,
    live: ArcSwap<LiveSet>,
    stats: PipelineStats,
    /// Set when the job queue was full: the sweeper then picks pending events from the store.
    backlog: AtomicBool,
    stop: AtomicBool,
    /// Where to report a plugin that failed too many times in a row, and how many.
    quarantine: std::sync::OnceLock<(u64, Sender<PluginRef>)>,
    /// Where to report events that count as a failure of their prompt.
    prompt_failures: std::sync::OnceLock<Sender<flywheel_model::PromptRef>>,
    /// Ids handed to the workers and not yet completed, so that the sweeper does not
    /// queue an event a second time (it would be decided twice, the second time for
    /// nothing) when the job queue overflows under load.
    queued: parking_lot::Mutex<std::collections::HashSet<String>>,
}

/// The worker pool and the live plugin set.
#[derive(Clone)]
pub struct Pipeline {
    shared: Arc<Shared>,
    tx: Sender<Job>,
}

impl Pipeline {
    /// Start the worker threads and the backlog sweeper. Events stored but not processed
    /// before the last shutdown or crash wait for [`Pipeline::resume_stored`]: the
    /// plugins are loaded after the pipeline starts, and an event decided before that
    /// would be decided by no plugin at all (accepted unscored, past fail-closed ones).
    pub fn start(store: Store, live: LiveSet, options: PoolOptions) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(options.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            store,
            live: ArcSwap::from_pointee(live),
            stats: PipelineStats::default(),
            backlog: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            quarantine: std::sync::OnceLock::new(),
            prompt_failures: std::sync::OnceLock::new(),
            queued: parking_lot::Mutex::default(),
        });
        for i in 0..options.workers.max(1) {
            let shared = shared.clone();
            let rx = rx.clone();
            let nice = options.nice;
            std::thread::Builder::new()
                .name(format!("flywheel-pipeline-{i}"))
                .spawn(move || {
                    lower_priority(nice);
                    worker(&shared, &rx);
                })
                .map(drop)
                .unwrap_or_else(|e| tracing::error!("could not start pipeline worker: {e}"));
        }
        {
            let shared = shared.clone();
            let tx = tx.clone();
            std::thread::Builder::new()
                .name("flywheel-sweeper".into())
                .spawn(move || sweeper(&shared, &tx))
                .map(drop)
                .unwrap_or_else(|e| tracing::error!("could not start backlog sweeper: {e}"));
        }
        Self { shared, tx }
    }

    /// Resume every event stored but not processed: call once the plugins are in place.
    pub fn resume_stored(&self) {
        self.shared.backlog.store(true, Ordering::Release);
    }

    /// Hand an accepted event to the workers. Never blocks: when the queue is full the
    /// event stays pending in the store and the sweeper picks it up.
    pub fn submit(&self, event: Event) {
        static QUEUED: LazyLock<metrics::Gauge> =
            LazyLock::new(|| metrics::gauge!("flywheel_pipeline_queued"));
        // Marked before sending: a worker may finish the event before `try_send` returns.
        // Already in hand (the sweeper took it from the store first): nothing to do.
        if !self.shared.queued.lock().insert(event.id.clone()) {
            return;
        }
        match self.tx.try_send(Job {
            event: Arc::new(event),
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                self.shared.queued.lock().remove(&job.event.id);
                self.shared.backlog.store(true, Ordering::Release);
            }
        }
        QUEUED.set(self.tx.len() as f64);
    }

    /// Decide an event now, on the calling thread, and store the outcome. For
    /// `?wait=true`; returns what is stored. The event is claimed first, as the sweeper
    /// claims what it hands to the workers, so it is decided once: plugins have side
    /// effects (kv writes), and a second run would make them twice. When a worker holds
    /// it, this waits for the outcome the worker stores.
    pub fn process_now(&self, event: &Event) -> Result<Outcome, flywheel_store::StoreError> {
        let shared = &self.shared;
        let stored = || -> Result<Option<Outcome>, flywheel_store::StoreError> {
            Ok(shared.store.get(&event.id)?.and_then(|r| r.outcome))
        };
        loop {
            if shared.queued.lock().insert(event.id.clone()) {
                let result = match stored() {
                    Ok(Some(outcome)) => Ok(outcome),
                    Ok(None) => process(shared, event),
                    Err(e) => Err(e),
                };
                shared.queued.lock().remove(&event.id);
                return result;
            }
            if let Some(outcome) = stored()? {
                return Ok(outcome);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The plugin set new events will be processed with.
    pub fn live(&self) -> Arc<LiveSet> {
        self.shared.live.load_full()
    }

    /// Swap the live set atomically: events already started finish on the old one.
    pub fn swap(&self, live: LiveSet) {
        self.shared.live.store(Arc::new(live));
    }

    /// Report live plugins that fail `after` times in a row on `tx` (the registry
    /// quarantines them). Set once, at start-up.
    pub fn on_quarantine(&self, after: u64, tx: Sender<PluginRef>) {
        let _ = self.shared.quarantine.set((after.max(1), tx));
    }

    /// Report processed events that count as failures of their prompt version (for
    /// automatic refinement). Set once, at start-up.
    pub fn on_prompt_failure(&self, tx: Sender<flywheel_model::PromptRef>) {
        let _ = self.shared.prompt_failures.set(tx);
    }

    /// Counters for the API and tests.
    pub fn stats(&self) -> &PipelineStats {
        &self.shared.stats
    }

    /// Events waiting for a worker.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Stop the sweeper; workers stop when the last handle is gone.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
    }
}

/// Run `event` through the live set, and report plugins that have now failed too many
/// times in a row.
fn decide_live(shared: &Shared, event: &Arc<Event>) -> Outcome {
    let set = shared.live.load_full();
    let outcome = decide(&set, event);
    if let Some((after, tx)) = shared.quarantine.get() {
        for call in outcome.calls.iter().filter(|c| c.error.is_some()) {
            let failing = set.all().find(|p| p.id().hash == call.plugin.hash);
            if failing.is_some_and(|p| {
                p.counters().consecutive_failures.load(Ordering::Relaxed) >= *after
            }) {
                let _ = tx.try_send((*call.plugin).clone());
            }
        }
    }
    outcome
}

/// Decide one event and store its outcome; returns what is stored (the earlier
/// outcome if the event was already processed).
fn process(shared: &Shared, event: &Event) -> Result<Outcome, flywheel_store::StoreError> {
    let _span = tracing::debug_span!("event", id = %event.id).entered();
    let started = Instant::now();
    let outcome = decide_live(shared, &Arc::new(event.clone()));
    let result = shared.store.complete(&event.id, &outcome);
    finish(shared, event, outcome, result, started)
}

/// Count, report and return what `complete` did with one event's outcome.
fn finish(
    shared: &Shared,
    event: &Event,
    outcome: Outcome,
    result: Result<Completion, flywheel_store::StoreError>,
    started: Instant,
) -> Result<Outcome, flywheel_store::StoreError> {
    Decided::new(shared, event, &outcome, started).finish(shared, result.clone());
    match result {
        Ok(Completion::Completed { .. }) => Ok(outcome),
        Ok(Completion::AlreadyProcessed) => {
            let stored = shared.store.get(&event.id)?.and_then(|r| r.outcome);
            Ok(stored.unwrap_or(outcome))
        }
        Ok(Completion::Erased) => Err(flywheel_store::StoreError::NotFound {
            id: event.id.clone(),
        }),
        Err(e) => Err(e),
    }
}

/// `flywheel_events_processed_total` for a route, registered once per route rather than
/// looked up in the recorder for every event.
fn processed_counter(route: &'static str) -> metrics::Counter {
    static BY_ROUTE: LazyLock<Vec<(&'static str, metrics::Counter)>> = LazyLock::new(|| {
        ["accept", "label", "review", "drop"]
            .into_iter()
            .map(|r| {
                (
                    r,
                    metrics::counter!("flywheel_events_processed_total", "route" => r),
                )
            })
            .collect()
    });
    BY_ROUTE
        .iter()
        .find(|(r, _)| *r == route)
        .map(|(_, c)| c.clone())
        .unwrap_or_else(|| metrics::counter!("flywheel_events_processed_total", "route" => route))
}

/// At most this many outcomes are handed to the store at once.
const MAX_COMPLETE_BATCH: usize = 64;
/// A worker stops taking more jobs into a batch after this long, so that a slow plugin
/// set does not hold finished outcomes back for long.
const MAX_BATCH_AGE: Duration = Duration::from_millis(5);

fn worker(shared: &Arc<Shared>, rx: &Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        // Decide jobs while more are waiting, then hand their outcomes to the store in
        // one request: they join its next group commit, and the worker goes on deciding
        // while they are written.
        let mut batch: Vec<(Arc<Event>, Outcome, Instant)> = Vec::with_capacity(MAX_COMPLETE_BATCH);
        let opened = Instant::now();
        let mut next = Some(job);
        while let Some(job) = next.take() {
            let started = Instant::now();
            let outcome = decide_live(shared, &job.event);
            batch.push((job.event, outcome, started));
            if batch.len() < MAX_COMPLETE_BATCH && opened.elapsed() < MAX_BATCH_AGE {
                next = rx.try_recv().ok();
            }
        }
        complete_batch(shared, batch);
    }
}

/// Hand a batch of decided events to the store. Once their outcomes are written (on the
/// store's committer thread), they are counted and released from the workers' hands;
/// one the store refused is logged and stays pending for the sweeper. The events and
/// outcomes stay on this thread (and are freed here): the reply gets only what it needs.
fn complete_batch(shared: &Arc<Shared>, batch: Vec<(Arc<Event>, Outcome, Instant)>) {
    let items: Vec<(&str, &Outcome)> = batch.iter().map(|(e, o, _)| (e.id.as_str(), o)).collect();
    let done: Vec<Decided> = batch
        .iter()
        .map(|(event, outcome, started)| Decided::new(shared, event, outcome, *started))
        .collect();
    let owner = shared.clone();
    shared.store.complete_with(&items, move |results| {
        let shared = &*owner;
        {
            // Recorded (or refused): out of the workers' hands, so a sweep may pick up
            // one that is still pending, and skips the others (they have outcomes).
            let mut queued = shared.queued.lock();
            for d in &done {
                queued.remove(&d.id);
            }
        }
        for (d, result) in done.into_iter().zip(results) {
            d.finish(shared, result);
        }
    });
}

/// What counting an event's completion needs, worked out where it was decided.
struct Decided {
    id: String,
    started: Instant,
    route: &'static str,
    /// The prompt version to report, if the event counts as a failure of it.
    prompt_failure: Option<flywheel_model::PromptRef>,
}

impl Decided {
    fn new(shared: &Shared, event: &Event, outcome: &Outcome, started: Instant) -> Self {
        let prompt_failure = match (shared.prompt_failures.get(), &event.prompt) {
            (Some(_), Some(prompt)) if crate::prompts::is_failure(event, Some(outcome), &[]) => {
                Some(prompt.clone())
            }
            _ => None,
        };
        Decided {
            id: event.id.clone(),
            started,
            route: outcome.route.action(),
            prompt_failure,
        }
    }

    /// Count what the store did with the outcome (as `finish` does for one event).
    fn finish(self, shared: &Shared, result: Result<Completion, flywheel_store::StoreError>) {
        static SECONDS: LazyLock<metrics::Histogram> =
            LazyLock::new(|| metrics::histogram!("flywheel_pipeline_seconds"));
        SECONDS.record(self.started.elapsed().as_secs_f64());
        match result {
            Ok(Completion::Completed { .. }) => {
                shared.stats.processed.fetch_add(1, Ordering::Relaxed);
                if let (Some(tx), Some(prompt)) =
                    (shared.prompt_failures.get(), self.prompt_failure)
                {
                    let _ = tx.try_send(prompt);
                }
                processed_counter(self.route).increment(1);
            }
            Ok(Completion::AlreadyProcessed) => {
                shared
                    .stats
                    .already_processed
                    .fetch_add(1, Ordering::Relaxed);
            }
            Ok(Completion::Erased) => {
                tracing::debug!(event = %self.id, "the event was erased while it was decided");
            }
            Err(e) => {
                shared.stats.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(event = %self.id, "could not store the outcome (the event stays pending): {e}");
            }
        }
    }
}

/// Picks up events that are pending in the store but in no queue: at start-up
/// (recovery after a crash) and whenever the job queue overflowed. It walks the backlog a
/// page at a time, oldest first, and blocks while the workers are busy.
fn sweeper(shared: &Shared, tx: &Sender<Job>) {
    const PAGE: usize = 1024;
    /// How often the store's pending watermark is moved up (in 200 ms naps), so that
    /// recovery after a restart walks only the events processed since.
    const SETTLE_EVERY: u32 = 25;
    let mut naps = 0u32;
    while !shared.stop.load(Ordering::Acquire) {
        naps += 1;
        if naps >= SETTLE_EVERY {
            naps = 0;
            if let Err(e) = shared.store.advance_watermark() {
                tracing::warn!("could not move the pending watermark: {e}");
            }
        }
        if shared.backlog.swap(false, Ordering::AcqRel) {
            let mut after = None;
            let mut resumed = 0usize;
            loop {
                let page = match shared.store.pending_page(after, PAGE) {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::error!("could not list pending events: {e}");
                        shared.backlog.store(true, Ordering::Release);
                        break;
                    }
                };
                let Some(&(last, _)) = page.last() else {
                    break;
                };
                after = Some(last);
                for (_, id) in page {
                    // Claimed before it is read, in one step: `process_now` claims the
                    // same way, so an event is never decided by both.
                    if !shared.queued.lock().insert(id.clone()) {
                        continue;
                    }
                    let record = match shared.store.get(&id) {
                        Ok(Some(record)) if record.outcome.is_none() => record,
                        _ => {
                            shared.queued.lock().remove(&id);
                            continue;
                        }
                    };
                    resumed += 1;
                    let job = Job {
                        event: Arc::new(record.event),
                    };
                    if tx.send(job).is_err() {
                        return;
                    }
                }
            }
            if resumed > 0 {
                tracing::info!(count = resumed, "resumed pending events");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(route: Route) -> Vote {
        Vote {
            plugin: "r".into(),
            route,
            imposed: false,
        }
    }

    fn target(queue: &str, priority: u8) -> QueueTarget {
        QueueTarget {
            queue: queue.into(),
            priority,
            reason: String::new(),
        }
    }

    #[test]
    fn the_most_cautious_vote_wins() {
        assert_eq!(final_route(&[]), Route::Accept);
        let drop = Route::Drop {
            reason: "spam".into(),
        };
        assert_eq!(final_route(&[vote(drop.clone()), vote(drop.clone())]), drop);
        assert_eq!(
            final_route(&[vote(drop), vote(Route::Accept)]),
            Route::Accept
        );
        let label = Route::Label(target("labeling", 80));
        let review = Route::Review(target("compliance", 10));
        assert_eq!(
            final_route(&[
                vote(label.clone()),
                vote(review.clone()),
                vote(Route::Accept)
            ]),
            review
        );
        let urgent = Route::Label(target("labeling", 95));
        assert_eq!(final_route(&[vote(label), vote(urgent.clone())]), urgent);
    }
}
