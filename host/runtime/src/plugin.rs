//! One loaded plugin version and the calls into it.
//!
//! Instances are reused: a call takes a warm instance from the plugin's idle list (or
//! makes one), runs under a deadline and a memory cap, and gives it back, unless the
//! call trapped, in which case the instance is dropped and never runs again. The idle
//! list's lock is never held across a call. Measured trade-off: see BENCHMARKS.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flywheel_model::{ErrorClass, Event, PluginKind, PluginRef, Prompt, Proposal, Route, Score};
use parking_lot::Mutex;
use wasmtime::{Engine, Store, Trap};

use crate::bindings::{
    PreparedEvent, PreparedScores, prompt_to_wit, proposal_from_wit, refiner, route_from_wit,
    router, score_from_wit, scorer, v0_1,
};
use crate::epoch::{EPOCH_TICK, Ticker};
use crate::error::PluginFailure;
use crate::host::{HostState, LogLine, PluginShared};
use crate::manifest::Manifest;

/// A warm instance is retired after this many calls, so a guest that leaks memory
/// slowly is reset before it reaches its cap.
const MAX_CALLS_PER_INSTANCE: u64 = 100_000;

/// A component ready to instantiate, by world and contract version.
pub(crate) enum KindPre {
    Scorer(scorer::ScorerPre<HostState>),
    Router(router::RouterPre<HostState>),
    Refiner(refiner::RefinerPre<HostState>),
    ScorerV0_1(v0_1::scorer::ScorerPre<HostState>),
    RouterV0_1(v0_1::router::RouterPre<HostState>),
    RefinerV0_1(v0_1::refiner::RefinerPre<HostState>),
}

impl KindPre {
    /// The contract version the component was built against.
    pub(crate) fn contract(&self) -> &'static str {
        match self {
            KindPre::Scorer(_) | KindPre::Router(_) | KindPre::Refiner(_) => "0.2.0",
            _ => "0.1.0",
        }
    }
}

enum Exports {
    Scorer(scorer::Scorer),
    Router(router::Router),
    Refiner(refiner::Refiner),
    ScorerV0_1(v0_1::scorer::Scorer),
    RouterV0_1(v0_1::router::Router),
    RefinerV0_1(v0_1::refiner::Refiner),
}

struct Instance {
    store: Store<HostState>,
    exports: Exports,
    calls: u64,
}

/// What one call produced, and what it cost.
#[derive(Debug)]
pub struct CallOutcome<T> {
    pub result: Result<T, PluginFailure>,
    /// Wall-clock time, including instantiation when no warm instance was free.
    pub duration: Duration,
    /// The instance's linear memory at its largest, in bytes.
    pub peak_memory: usize,
    /// What the plugin logged during the call (the first few lines).
    pub logs: Vec<LogLine>,
}

/// Latency buckets: bucket `i` holds calls that took under `2^i` microseconds.
const LATENCY_BUCKETS: usize = 32;

/// Call counters for one plugin version, read by `GET /v1/plugins` and quarantine.
/// Plain atomics: updating them costs a few nanoseconds per call.
#[derive(Debug, Default)]
pub struct PluginCounters {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub instantiations: AtomicU64,
    /// Failures since the last success: what quarantine counts.
    pub consecutive_failures: AtomicU64,
    errors_by_class: [AtomicU64; ErrorClass::ALL.len()],
    latency: [AtomicU64; LATENCY_BUCKETS],
}

/// A snapshot of a plugin version's counters, for people.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PluginStats {
    pub calls: u64,
    pub errors: u64,
    pub errors_by_class: std::collections::BTreeMap<&'static str, u64>,
    pub consecutive_failures: u64,
    pub instantiations: u64,
    /// Upper bound of the bucket holding the median call, in microseconds.
    pub p50_us: Option<u64>,
    /// Upper bound of the bucket holding the 99th-percentile call, in microseconds.
    pub p99_us: Option<u64>,
}

impl PluginCounters {
    fn observe(&self, duration: Duration, failure: Option<ErrorClass>) {
        let micros = duration.as_micros().max(1) as u64;
        let bucket = (64 - micros.leading_zeros() as usize).min(LATENCY_BUCKETS - 1);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        match failure {
            Some(class) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.errors_by_class[class.index()].fetch_add(1, Ordering::Relaxed);
                self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
            }
            None => self.consecutive_failures.store(0, Ordering::Relaxed),
        }
    }

    fn percentile(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(1u64 << i);
            }
        }
        None
    }

    /// What the counters say now.
    pub fn snapshot(&self) -> PluginStats {
        PluginStats {
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            errors_by_class: ErrorClass::ALL
                .iter()
                .map(|c| {
                    (
                        c.as_str(),
                        self.errors_by_class[c.index()].load(Ordering::Relaxed),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            instantiations: self.instantiations.load(Ordering::Relaxed),
            p50_us: self.percentile(0.5),
            p99_us: self.percentile(0.99),
        }
    }
}

/// One loaded, checked plugin version, ready to be called from any thread.
pub struct Plugin {
    engine: Engine,
    /// Woken for each call, so its deadline can fire.
    ticker: Arc<Ticker>,
    manifest: Manifest,
    shared: Arc<PluginShared>,
    pre: KindPre,
    idle: Mutex<Vec<Instance>>,
    fresh_per_call: bool,
    counters: PluginCounters,
    component_hash: String,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("id", &self.shared.id)
            .finish()
    }
}

impl Plugin {
    pub(crate) fn new(
        engine: Engine,
        ticker: Arc<Ticker>,
        manifest: Manifest,
        shared: Arc<PluginShared>,
        pre: KindPre,
        fresh_per_call: bool,
        component_hash: String,
    ) -> Self {
        Self {
            engine,
            ticker,
            manifest,
            shared,
            pre,
            idle: Mutex::new(Vec::new()),
            fresh_per_call,
            counters: PluginCounters::default(),
            component_hash,
        }
    }

    /// BLAKE3 of the component's bytes alone: the key of the compiled-code cache.
    pub fn component_hash(&self) -> &str {
        &self.component_hash
    }

    /// Name, version and content hash: what results record.
    pub fn id(&self) -> &PluginRef {
        &self.shared.id
    }

    /// [`Plugin::id`], shared: what each call record holds (no copy per call).
    pub fn shared_id(&self) -> &Arc<PluginRef> {
        &self.shared.id
    }

    /// The manifest the plugin was loaded with.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The world this plugin implements.
    pub fn kind(&self) -> PluginKind {
        self.manifest.kind
    }

    /// Calls and errors so far.
    pub fn counters(&self) -> &PluginCounters {
        &self.counters
    }

    /// Instantiate once now, so a broken plugin fails at load and the first event
    /// does not pay for instantiation.
    pub fn warm_up(&self) -> Result<(), PluginFailure> {
        let _awake = self.ticker.awake();
        let instance = self.instantiate()?;
        self.idle.lock().push(instance);
        Ok(())
    }

    /// The `flywheel:policy` version the component was built against.
    pub fn contract(&self) -> &'static str {
        self.pre.contract()
    }

    /// Run a scorer over one event.
    pub fn score(&self, event: &PreparedEvent) -> CallOutcome<Vec<Score>> {
        self.call(PluginKind::Scorer, |exports, store| match exports {
            Exports::Scorer(s) => Some(with_lent(store, event, |store, handle| {
                s.call_score(store, handle).map(|r| {
                    r.map(|scores| scores.into_iter().map(score_from_wit).collect::<Vec<_>>())
                })
            })),
            Exports::ScorerV0_1(s) => Some(s.call_score(store, event.legacy()).map(|r| {
                r.map(|scores| {
                    scores
                        .into_iter()
                        .map(v0_1::score_from_wit)
                        .collect::<Vec<_>>()
                })
            })),
            _ => None,
        })
        .and_then_result(
            |scores: Vec<Score>, limit| {
                check_size(scores_size(&scores), limit)?;
                scores.into_iter().map(check_score).collect()
            },
            &self.shared.id,
            self.manifest.limits.max_result_bytes(),
        )
    }

    /// Run a router over one event and every scorer's scores.
    pub fn route(&self, event: &PreparedEvent, scores: &PreparedScores) -> CallOutcome<Route> {
        self.call(PluginKind::Router, |exports, store| match exports {
            Exports::Router(r) => Some(with_lent(store, event, |store, handle| {
                r.call_route(store, handle, &scores.scores)
                    .map(|r| r.map(route_from_wit))
            })),
            Exports::RouterV0_1(r) => Some(
                r.call_route(store, event.legacy(), scores.legacy())
                    .map(|r| r.map(v0_1::route_from_wit)),
            ),
            _ => None,
        })
        .and_then_result(
            |route: Route, limit| {
                check_size(route_size(&route), limit)?;
                check_route(route)
            },
            &self.shared.id,
            self.manifest.limits.max_result_bytes(),
        )
    }

    /// Run a refiner over a prompt and its recent failures.
    pub fn refine(&self, prompt: &Prompt, failures: &[Event]) -> CallOutcome<Option<Proposal>> {
        self.call(PluginKind::Refiner, |exports, store| match exports {
            Exports::Refiner(r) => {
                let prompt = prompt_to_wit(prompt);
                let mut handles = Vec::with_capacity(failures.len());
                let mut reps = Vec::with_capacity(failures.len());
                for e in failures {
                    match store.data_mut().lend(&PreparedEvent::new(e)) {
                        Ok(h) => {
                            reps.push(h.rep());
                            handles.push(h);
                        }
                        Err(e) => return Some(Err(e)),
                    }
                }
                let result = r
                    .call_refine(&mut *store, &prompt, &handles)
                    .map(|r| r.map(|p| p.map(proposal_from_wit)));
                for rep in reps {
                    store.data_mut().reclaim(rep);
                }
                Some(result)
            }
            Exports::RefinerV0_1(r) => {
                let prompt = v0_1::prompt_to_wit(prompt);
                let failures: Vec<v0_1::wit::Event> =
                    failures.iter().map(v0_1::event_to_wit).collect();
                Some(
                    r.call_refine(store, &prompt, &failures)
                        .map(|r| r.map(|p| p.map(v0_1::proposal_from_wit))),
                )
            }
            _ => None,
        })
        .and_then_result(
            |proposal: Option<Proposal>, limit| {
                if let Some(p) = &proposal {
                    let size = p.template.len()
                        + p.rationale.len()
                        + p.evidence.iter().map(String::len).sum::<usize>();
                    check_size(size, limit)?;
                }
                Ok(proposal)
            },
            &self.shared.id,
            self.manifest.limits.max_result_bytes(),
        )
    }

    fn failure(&self, class: ErrorClass, message: impl Into<String>) -> PluginFailure {
        PluginFailure {
            plugin: (*self.shared.id).clone(),
            class,
            message: message.into(),
        }
    }

    fn instantiate(&self) -> Result<Instance, PluginFailure> {
        self.counters.instantiations.fetch_add(1, Ordering::Relaxed);
        let limits = &self.manifest.limits;
        let mut store = Store::new(
            &self.engine,
            HostState::new(self.shared.clone(), limits.memory_bytes()),
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        // Instantiation runs guest start-up code: bound it like a call.
        store.set_epoch_deadline(deadline_ticks(limits.timeout()));
        let exports = match &self.pre {
            KindPre::Scorer(p) => p.instantiate(&mut store).map(Exports::Scorer),
            KindPre::Router(p) => p.instantiate(&mut store).map(Exports::Router),
            KindPre::Refiner(p) => p.instantiate(&mut store).map(Exports::Refiner),
            KindPre::ScorerV0_1(p) => p.instantiate(&mut store).map(Exports::ScorerV0_1),
            KindPre::RouterV0_1(p) => p.instantiate(&mut store).map(Exports::RouterV0_1),
            KindPre::RefinerV0_1(p) => p.instantiate(&mut store).map(Exports::RefinerV0_1),
        };
        match exports {
            Ok(exports) => Ok(Instance {
                store,
                exports,
                calls: 0,
            }),
            Err(e) => {
                let (class, message) = classify(
                    &e,
                    &store.data().limiter,
                    &store.data().logs,
                    self.manifest.limits.timeout_ms,
                );
                let class = if class == ErrorClass::Trap {
                    ErrorClass::Unavailable
                } else {
                    class
                };
                Err(self.failure(class, format!("instantiation failed: {message}")))
            }
        }
    }

    fn call<T>(
        &self,
        kind: PluginKind,
        f: impl FnOnce(&Exports, &mut Store<HostState>) -> Option<wasmtime::Result<Result<T, String>>>,
    ) -> RawOutcome<'_, T> {
        let started = Instant::now();
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        // Through instantiation, the call and post-return: all may run guest code.
        let _awake = self.ticker.awake();
        let pooled = if self.fresh_per_call {
            None
        } else {
            self.idle.lock().pop()
        };
        let mut instance = match pooled.map(Ok).unwrap_or_else(|| self.instantiate()) {
            Ok(i) => i,
            Err(failure) => {
                return RawOutcome {
                    counters: &self.counters,
                    result: Err(failure),
                    started,
                    peak_memory: 0,
                    logs: Vec::new(),
                };
            }
        };
        let limits = &self.manifest.limits;
        instance.store.data_mut().begin_call();
        instance
            .store
            .set_epoch_deadline(deadline_ticks(limits.timeout()));
        let Instance {
            store,
            exports,
            calls,
        } = &mut instance;
        *calls += 1;
        let raw = f(exports, store);
        let data = store.data_mut();
        let logs = std::mem::take(&mut data.logs);
        let peak_memory = data.limiter.peak;
        let (result, keep) = match raw {
            None => (
                Err(self.failure(ErrorClass::Unavailable, format!("plugin is not a {kind}"))),
                true,
            ),
            Some(Ok(Ok(value))) => (Ok(value), true),
            Some(Ok(Err(message))) => (Err(self.failure(ErrorClass::PluginError, message)), true),
            Some(Err(trap)) => {
                let (class, message) =
                    classify(&trap, &data.limiter, &logs, self.manifest.limits.timeout_ms);
                (Err(self.failure(class, message)), false)
            }
        };
        // A trapped instance must never run again; a healthy one goes back warm.
        if keep && !self.fresh_per_call && instance.calls < MAX_CALLS_PER_INSTANCE {
            self.idle.lock().push(instance);
        }
        RawOutcome {
            counters: &self.counters,
            result,
            started,
            peak_memory,
            logs,
        }
    }
}

struct RawOutcome<'a, T> {
    counters: &'a PluginCounters,
    result: Result<T, PluginFailure>,
    started: Instant,
    peak_memory: usize,
    logs: Vec<LogLine>,
}

impl<T> RawOutcome<'_, T> {
    /// Check and convert a successful result; anything refused is an invalid result.
    fn and_then_result<U>(
        self,
        check: impl FnOnce(T, usize) -> Result<U, String>,
        plugin: &PluginRef,
        limit: usize,
    ) -> CallOutcome<U> {
        let result = self.result.and_then(|v| {
            check(v, limit).map_err(|message| PluginFailure {
                plugin: plugin.clone(),
                class: ErrorClass::InvalidResult,
                message,
            })
        });
        let duration = self.started.elapsed();
        self.counters
            .observe(duration, result.as_ref().err().map(|f| f.class));
        CallOutcome {
            result,
            duration,
            peak_memory: self.peak_memory,
            logs: self.logs,
        }
    }
}

fn deadline_ticks(timeout: Duration) -> u64 {
    // Rounded up to whole ticks, +1: the current tick may be almost over, so a deadline
    // is never early.
    let ticks = timeout.as_micros().div_ceil(EPOCH_TICK.as_micros()).max(1);
    u64::try_from(ticks).unwrap_or(u64::MAX - 1) + 1
}

/// Turn a wasmtime error into a class a person can act on.
fn classify(
    e: &wasmtime::Error,
    limiter: &crate::host::MemoryLimiter,
    logs: &[LogLine],
    timeout_ms: u64,
) -> (ErrorClass, String) {
    // The SDK's panic hook logs the panic message before the guest aborts.
    let last_error = logs
        .iter()
        .rev()
        .find(|l| l.level == "error")
        .map(|l| format!(": {}", l.message))
        .unwrap_or_default();
    if limiter.denied {
        return (
            ErrorClass::OutOfMemory,
            format!(
                "memory cap of {} MiB reached (manifest `limits.memory-mib`){last_error}",
                limiter.cap >> 20
            ),
        );
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => (
            ErrorClass::Timeout,
            format!("deadline of {timeout_ms} ms exceeded (manifest `limits.timeout-ms`)"),
        ),
        Some(Trap::StackOverflow) => (ErrorClass::Trap, format!("stack overflow{last_error}")),
        // Rust and C guests keep their stack in linear memory below the data; running
        // off its end is an out-of-bounds access rather than a native stack overflow.
        Some(Trap::MemoryOutOfBounds) => (
            ErrorClass::Trap,
            format!(
                "out-of-bounds memory access (most often the guest's stack overflowing){last_error}"
            ),
        ),
        Some(Trap::UnreachableCodeReached) => (
            ErrorClass::Trap,
            format!("trapped (panic or abort){last_error}"),
        ),
        Some(trap) => (ErrorClass::Trap, format!("{trap}{last_error}")),
        None => (ErrorClass::Trap, format!("{e:#}")),
    }
}

fn check_size(size: usize, limit: usize) -> Result<(), String> {
    if size > limit {
        Err(format!(
            "result is {} KiB, over the cap of {} KiB (manifest `limits.max-result-kib`)",
            size.div_ceil(1024),
            limit >> 10
        ))
    } else {
        Ok(())
    }
}

/// Lend `event` to the guest for one call and take the handle back afterwards, whatever
/// the guest did with it.
fn with_lent<T>(
    store: &mut Store<HostState>,
    event: &PreparedEvent,
    call: impl FnOnce(
        &mut Store<HostState>,
        wasmtime::component::Resource<crate::bindings::EventHandle>,
    ) -> wasmtime::Result<T>,
) -> wasmtime::Result<T> {
    let handle = store.data_mut().lend(event)?;
    let rep = handle.rep();
    let result = call(store, handle);
    store.data_mut().reclaim(rep);
    result
}

fn scores_size(scores: &[Score]) -> usize {
    scores
        .iter()
        .map(|s| {
            16 + s.name.len()
                + s.label.as_ref().map_or(0, String::len)
                + s.reason.as_ref().map_or(0, String::len)
        })
        .sum()
}

fn route_size(route: &Route) -> usize {
    match route {
        Route::Accept => 1,
        Route::Label(t) | Route::Review(t) => 2 + t.queue.len() + t.reason.len(),
        Route::Drop { reason } => 1 + reason.len(),
    }
}

/// Score names become metrics labels and API fields: keep them plain.
fn check_score(score: Score) -> Result<Score, String> {
    let name_ok = !score.name.is_empty()
        && score.name.len() <= 64
        && score
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(format!(
            "score name `{}` must be 1-64 characters of a-z, 0-9, `-`, `_`",
            score.name.chars().take(80).collect::<String>()
        ));
    }
    if !(0.0..=1.0).contains(&score.value) {
        return Err(format!(
            "score `{}` has value {}, outside 0.0..=1.0",
            score.name, score.value
        ));
    }
    Ok(score)
}

fn check_route(route: Route) -> Result<Route, String> {
    if let Some(t) = route.queue() {
        let ok = !t.queue.is_empty()
            && t.queue.len() <= 64
            && t.queue
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!(
                "queue name `{}` must be 1-64 characters of letters, digits, `-`, `_`",
                t.queue.chars().take(80).collect::<String>()
            ));
        }
        if t.priority > 100 {
            return Err(format!("priority {} is outside 0..=100", t.priority));
        }
    }
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deadline is never early, and the earliest it can fire is less than a tick past
    /// the timeout, whatever the timeout's relation to the tick.
    #[test]
    fn deadlines_round_up_to_whole_ticks() {
        let tick = EPOCH_TICK.as_micros();
        for ms in [1u64, 2, 4, 5, 6, 7, 50, 99, 100, 101, 500, 60_000] {
            let timeout = Duration::from_millis(ms).as_micros();
            // The epoch may advance just after the deadline is set: the call then has
            // one tick less than the deadline's count.
            let shortest = u128::from(deadline_ticks(Duration::from_millis(ms)) - 1) * tick;
            assert!(shortest >= timeout, "{ms} ms: stopped after {shortest} µs");
            assert!(
                shortest < timeout + tick,
                "{ms} ms: may run {shortest} µs, over a tick past its timeout"
            );
        }
    }
}
