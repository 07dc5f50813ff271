//! Numbers for the dashboard: per prompt name and version, event volume and mean
//! `satisfaction` score per time bucket; per queue, reviews and completed items per
//! bucket. Computed by scanning the store (events by time, the queue audit trail) an
//! hour at a time, and kept per hour in a [`StatsCache`] once the hour can no longer
//! change (but for erasures, which the store reports: [`Store::history_since`]), and on
//! disk as the store's rollups ([`Store::put_rollup`]), so a restart keeps them too: only
//! the first view of a new store's two weeks reads two weeks of events (~10 µs each
//! here); later views, before or after a restart, read only the hours since. It writes
//! nothing but those rollups.

use std::collections::BTreeMap;
use std::sync::Arc;

use flywheel_model::{EventRecord, now_ms};
use flywheel_store::{AuditAction, AuditEntry, EventFilter, HistoryChanges, Store, StoreError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The cache's unit: hour and day buckets are whole hours.
const HOUR_MS: u64 = 3_600_000;
/// An hour is kept once it ended this long ago (events are stamped when received and
/// written a moment later; reviews when made) and holds no event still pending.
const SETTLE_MS: u64 = 5 * 60_000;
/// Most hours kept: the longest window the API allows (1,000 days).
const MAX_CACHED_HOURS: usize = 24_000;
/// The store's name for the hours kept on disk ([`Store::put_rollup`]); a change to
/// [`HourSums`] takes a new name, so older hours are read again, not misread.
const ROLLUP_KIND: &str = "dashboard-hours.1";

/// The score averaged as "satisfaction" (the `satisfaction` example scorer's name).
pub const SATISFACTION: &str = "satisfaction";

/// The time range of a report: `buckets` buckets of `bucket_ms` from `from_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from_ms: u64,
    pub bucket_ms: u64,
    pub buckets: usize,
}

impl Window {
    /// The `count` whole buckets that end with the one holding `now`.
    pub fn ending_at(now: u64, bucket_ms: u64, count: usize) -> Self {
        let bucket_ms = bucket_ms.max(1);
        let last = now / bucket_ms * bucket_ms;
        Window {
            from_ms: last.saturating_sub(bucket_ms * (count.max(1) as u64 - 1)),
            bucket_ms,
            buckets: count.max(1),
        }
    }

    pub fn to_ms(&self) -> u64 {
        self.from_ms + self.bucket_ms * self.buckets as u64
    }

    fn index(&self, at: u64) -> Option<usize> {
        let i = usize::try_from(at.checked_sub(self.from_ms)? / self.bucket_ms).ok()?;
        (i < self.buckets).then_some(i)
    }

    fn starts(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.buckets as u64).map(|i| self.from_ms + i * self.bucket_ms)
    }
}

/// Everything the dashboard draws.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub from: u64,
    pub to: u64,
    pub bucket_ms: u64,
    pub prompts: Vec<PromptSeries>,
    pub queues: Vec<QueueSeries>,
}

/// One prompt version over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptSeries {
    pub name: String,
    pub version: String,
    pub events: u64,
    /// Mean satisfaction over the window, where scored.
    pub satisfaction: Option<f64>,
    pub buckets: Vec<PromptBucket>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptBucket {
    pub start: u64,
    pub events: u64,
    /// Events with a satisfaction score.
    pub scored: u64,
    pub satisfaction: Option<f64>,
}

/// One queue's throughput over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueSeries {
    pub queue: String,
    pub reviews: u64,
    pub completed: u64,
    pub buckets: Vec<QueueBucket>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueBucket {
    pub start: u64,
    pub reviews: u64,
    pub completed: u64,
}

/// Reads the window's events and audit trail from the store, one at a time, and sums
/// them up.
pub fn compute(store: &Store, window: Window) -> Result<Stats, StoreError> {
    let mut tally = Tally::new(window);
    tally.read(store, window.from_ms, window.to_ms())?;
    Ok(tally.finish())
}

/// [`compute`], with the hours that can no longer change read from `cache` (and the
/// ones that just stopped changing put there).
pub fn compute_cached(
    store: &Store,
    window: Window,
    cache: &StatsCache,
) -> Result<Stats, StoreError> {
    if !window.from_ms.is_multiple_of(HOUR_MS) || !window.bucket_ms.is_multiple_of(HOUR_MS) {
        return compute(store, window);
    }
    // Before the hours are read: an erasure after this point makes what is put in the
    // cache now be dropped at the next view.
    let history = cache.sync(store);
    let settled = now_ms()
        .saturating_sub(SETTLE_MS)
        .min(store.oldest_pending_at()?.unwrap_or(u64::MAX));
    let hours: Vec<u64> = (window.from_ms..window.to_ms())
        .step_by(usize::try_from(HOUR_MS).unwrap_or(usize::MAX))
        .collect();
    let mut kept = cache.get_all(&hours);
    // Settled hours not in memory (the first view since a start) may be on disk.
    let mut missing =
        (0..hours.len()).filter(|&i| kept[i].is_none() && hours[i] + HOUR_MS <= settled);
    if let Some(first) = missing.next() {
        let last = missing.next_back().unwrap_or(first);
        for rollup in store.rollups(ROLLUP_KIND, hours[first], hours[last] + 1)? {
            if rollup.end != rollup.start + HOUR_MS || !rollup.start.is_multiple_of(HOUR_MS) {
                continue;
            }
            // In the window: `rollups` keeps to the range asked for.
            let i = usize::try_from((rollup.start - window.from_ms) / HOUR_MS).unwrap_or(0);
            if let Some(slot @ None) = kept.get_mut(i)
                && let Ok(sums) = postcard::from_bytes::<HourSums>(&rollup.bytes)
            {
                let sums = Arc::new(sums);
                cache.put(history, rollup.start, sums.clone());
                *slot = Some(sums);
            }
        }
    }
    let mut tally = Tally::new(window);
    let mut i = 0;
    while i < hours.len() {
        if let Some(sums) = &kept[i] {
            tally.add_hour(hours[i], sums);
            i += 1;
            continue;
        }
        // A run of hours not kept: one read for all of them, split into hours.
        let start = i;
        while i < hours.len() && kept[i].is_none() {
            i += 1;
        }
        let run_window = Window {
            from_ms: hours[start],
            bucket_ms: HOUR_MS,
            buckets: i - start,
        };
        let mut run = Tally::new(run_window);
        run.read(store, run_window.from_ms, run_window.to_ms())?;
        for (j, &hour) in hours[start..i].iter().enumerate() {
            let sums = Arc::new(HourSums::of_bucket(&run, j));
            tally.add_hour(hour, &sums);
            if hour + HOUR_MS <= settled {
                keep_on_disk(store, history, hour, &sums);
                cache.put(history, hour, sums);
            }
        }
    }
    Ok(tally.finish())
}

/// Writes an hour's sums to the store's rollups, for the first view after a restart. A
/// failure costs only that view's speed, so it is logged, not returned.
fn keep_on_disk(store: &Store, history: u64, hour: u64, sums: &HourSums) {
    let written = postcard::to_allocvec(sums)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            store
                .put_rollup(ROLLUP_KIND, hour, hour + HOUR_MS, history, &bytes)
                .map_err(|e| e.to_string())
        });
    if let Err(error) = written {
        tracing::warn!(hour, %error, "could not keep an hour of dashboard figures on disk");
    }
}

/// One hour's sums, as the cache keeps them (in memory, and on disk as a rollup).
#[derive(Debug, Default, Serialize, Deserialize)]
struct HourSums {
    /// Per prompt version: events, events scored, sum of satisfaction.
    prompts: BTreeMap<(String, String), (u64, u64, f64)>,
    /// Per queue: reviews, completions.
    queues: BTreeMap<String, (u64, u64)>,
}

impl HourSums {
    /// Bucket `i` of an hourly tally, with only the prompt versions and queues that had
    /// something in it (as a read of that hour alone would have).
    fn of_bucket(t: &Tally, i: usize) -> Self {
        HourSums {
            prompts: t
                .prompts
                .iter()
                .filter(|(_, s)| s.events[i] > 0)
                .map(|(k, s)| (k.clone(), (s.events[i], s.scored[i], s.total[i])))
                .collect(),
            queues: t
                .queues
                .iter()
                .filter(|(k, _)| t.queue_seen.get(*k).is_some_and(|seen| seen[i]))
                .map(|(k, (reviews, completed))| (k.clone(), (reviews[i], completed[i])))
                .collect(),
        }
    }
}

/// Hours of dashboard figures that can no longer change, so that a view of two weeks
/// does not read two weeks of events each time. An hour is dropped when something in
/// it is taken from the store (an erasure, audit pruning: see
/// [`Store::history_since`]); a retention sweep thus drops only the oldest hours.
#[derive(Default)]
pub struct StatsCache {
    inner: Mutex<CachedHours>,
}

#[derive(Default)]
struct CachedHours {
    /// The store's history version the hours are up to date with.
    history: u64,
    hours: BTreeMap<u64, Arc<HourSums>>,
}

impl StatsCache {
    /// Drops the hours that lost something since the last call, and returns the
    /// store's history version now (to pass to `put`).
    fn sync(&self, store: &Store) -> u64 {
        let mut c = self.inner.lock();
        let (version, changes) = store.history_since(c.history);
        match changes {
            HistoryChanges::Spans(spans) => {
                for (from, to) in spans {
                    // The hours that overlap `from..=to`.
                    let first = from.saturating_sub(HOUR_MS - 1);
                    let gone: Vec<u64> = c.hours.range(first..=to).map(|(&h, _)| h).collect();
                    for hour in gone {
                        c.hours.remove(&hour);
                    }
                }
            }
            HistoryChanges::Everything => c.hours.clear(),
        }
        c.history = version;
        version
    }

    /// What is kept of each of `hours`.
    fn get_all(&self, hours: &[u64]) -> Vec<Option<Arc<HourSums>>> {
        let c = self.inner.lock();
        hours.iter().map(|h| c.hours.get(h).cloned()).collect()
    }

    fn put(&self, history: u64, hour: u64, sums: Arc<HourSums>) {
        let mut c = self.inner.lock();
        if c.history != history {
            return;
        }
        c.hours.insert(hour, sums);
        while c.hours.len() > MAX_CACHED_HOURS {
            c.hours.pop_first();
        }
    }

    /// Hours kept (for tests and curiosity).
    pub fn len(&self) -> usize {
        self.inner.lock().hours.len()
    }

    /// Whether no hour is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-bucket sums for one prompt version.
struct PromptSums {
    events: Vec<u64>,
    scored: Vec<u64>,
    total: Vec<f64>,
}

/// Running sums over a window; events without a prompt are left out of the prompt series.
pub struct Tally {
    window: Window,
    prompts: BTreeMap<(String, String), PromptSums>,
    /// Reviews and completions per bucket, per queue.
    queues: BTreeMap<String, (Vec<u64>, Vec<u64>)>,
    /// Per queue, the buckets with any audit entry (a queue shows in a window where it
    /// only had claims, with zeros).
    queue_seen: BTreeMap<String, Vec<bool>>,
}

fn mean(total: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| total / n as f64)
}

impl Tally {
    pub fn new(window: Window) -> Self {
        Tally {
            window,
            prompts: BTreeMap::new(),
            queues: BTreeMap::new(),
            queue_seen: BTreeMap::new(),
        }
    }

    /// Adds the events received and the audit entries made in `from..to`.
    fn read(&mut self, store: &Store, from: u64, to: u64) -> Result<(), StoreError> {
        let filter = EventFilter {
            from_ms: Some(from),
            to_ms: Some(to),
            ..EventFilter::default()
        };
        for record in store.scan(&filter) {
            self.event(&record?);
        }
        for entry in store.queue_audit_between(from, to)? {
            self.audit(&entry?);
        }
        Ok(())
    }

    /// Adds one hour's sums, kept from an earlier read.
    fn add_hour(&mut self, hour: u64, sums: &HourSums) {
        let Some(i) = self.window.index(hour) else {
            return;
        };
        let n = self.window.buckets;
        for (key, &(events, scored, total)) in &sums.prompts {
            let s = self
                .prompts
                .entry(key.clone())
                .or_insert_with(|| PromptSums {
                    events: vec![0; n],
                    scored: vec![0; n],
                    total: vec![0.0; n],
                });
            s.events[i] += events;
            s.scored[i] += scored;
            s.total[i] += total;
        }
        for (queue, &(reviews, completed)) in &sums.queues {
            let q = self
                .queues
                .entry(queue.clone())
                .or_insert_with(|| (vec![0; n], vec![0; n]));
            q.0[i] += reviews;
            q.1[i] += completed;
            self.queue_seen
                .entry(queue.clone())
                .or_insert_with(|| vec![false; n])[i] = true;
        }
    }

    pub fn event(&mut self, r: &EventRecord) {
        let (Some(prompt), Some(i)) = (&r.event.prompt, self.window.index(r.event.received_at))
        else {
            return;
        };
        let n = self.window.buckets;
        let sums = self
            .prompts
            .entry((prompt.name.clone(), prompt.version.clone()))
            .or_insert_with(|| PromptSums {
                events: vec![0; n],
                scored: vec![0; n],
                total: vec![0.0; n],
            });
        sums.events[i] += 1;
        let score = r.outcome.as_ref().and_then(|o| {
            o.scores
                .iter()
                .find(|s| s.score.name == SATISFACTION)
                .map(|s| s.score.value)
        });
        if let Some(v) = score {
            sums.scored[i] += 1;
            sums.total[i] += v;
        }
    }

    pub fn audit(&mut self, a: &AuditEntry) {
        let Some(i) = self.window.index(a.at) else {
            return;
        };
        let n = self.window.buckets;
        let (reviews, completed) = self
            .queues
            .entry(a.queue.clone())
            .or_insert_with(|| (vec![0; n], vec![0; n]));
        match a.action {
            AuditAction::Reviewed => reviews[i] += 1,
            AuditAction::Completed => completed[i] += 1,
            _ => {}
        }
        self.queue_seen
            .entry(a.queue.clone())
            .or_insert_with(|| vec![false; n])[i] = true;
    }

    pub fn finish(self) -> Stats {
        let window = self.window;
        let prompts = self
            .prompts
            .into_iter()
            .map(|((name, version), s)| PromptSeries {
                name,
                version,
                events: s.events.iter().sum(),
                satisfaction: mean(s.total.iter().sum(), s.scored.iter().sum()),
                buckets: window
                    .starts()
                    .enumerate()
                    .map(|(i, start)| PromptBucket {
                        start,
                        events: s.events[i],
                        scored: s.scored[i],
                        satisfaction: mean(s.total[i], s.scored[i]),
                    })
                    .collect(),
            })
            .collect();
        let queues = self
            .queues
            .into_iter()
            .map(|(queue, (reviews, completed))| QueueSeries {
                queue,
                reviews: reviews.iter().sum(),
                completed: completed.iter().sum(),
                buckets: window
                    .starts()
                    .enumerate()
                    .map(|(i, start)| QueueBucket {
                        start,
                        reviews: reviews[i],
                        completed: completed[i],
                    })
                    .collect(),
            })
            .collect();
        Stats {
            from: window.from_ms,
            to: window.to_ms(),
            bucket_ms: window.bucket_ms,
            prompts,
            queues,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flywheel_model::{Event, Outcome};
    use flywheel_store::StoreOptions;
    use serde_json::json;

    /// A store with events of two prompt versions across the last `hours` hours (one
    /// every 20 minutes, each scored and routed to a queue), the oldest items reviewed.
    /// Also returns the first event's hour.
    fn busy_store(dir: &std::path::Path, hours: u64) -> (Store, Vec<String>, u64) {
        let store = Store::open(dir, StoreOptions::default()).expect("store");
        let now = now_ms();
        let first = (now / HOUR_MS - hours) * HOUR_MS;
        let mut ids = Vec::new();
        for i in 0..hours * 3 {
            let at = first + i * 20 * 60_000;
            let record = record(at, ("support", if i % 2 == 0 { "1" } else { "2" }), None);
            let event: Event = serde_json::from_value(json!({
                "id": record.event.id, "received_at": at, "input": "q", "output": "a",
                "feedback": {"type": "none"}, "prompt": record.event.prompt,
            }))
            .expect("an event");
            store.append(vec![event]).expect("append");
            let outcome: Outcome = serde_json::from_value(json!({
                "scores": [{"plugin": "satisfaction", "name": "satisfaction",
                            "value": (i % 5) as f64 / 4.0}],
                "votes": [], "calls": [], "plugins": [], "processed_at": at,
                "route": {"action": "label", "queue": "q", "priority": 50, "reason": "r"},
            }))
            .expect("an outcome");
            store
                .complete(&record.event.id, &outcome)
                .expect("complete");
            ids.push(record.event.id.clone());
        }
        // Reviews in the past: claim and review the first few items an hour apart.
        for h in 0..hours.min(4) {
            let at = first + h * HOUR_MS + 1;
            let entry = store
                .claim("q", "ana", 60_000, &[], at)
                .expect("claim")
                .expect("an item");
            let review: flywheel_model::Review = serde_json::from_value(json!({
                "queue": "q", "item_id": entry.item.id, "reviewer": "ana",
                "verdict": "approve", "reviewed_at": at + 1,
            }))
            .expect("a review");
            store.review(review, 1).expect("review");
        }
        (store, ids, first)
    }

    #[test]
    fn cached_hours_give_the_figures_of_a_full_read_until_history_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, ids, first) = busy_store(dir.path(), 30);
        let cache = StatsCache::default();
        for (bucket, count) in [(HOUR_MS, 24), (86_400_000, 3), (HOUR_MS, 48)] {
            let window = Window::ending_at(now_ms(), bucket, count);
            let direct = compute(&store, window).expect("compute");
            assert_eq!(
                compute_cached(&store, window, &cache).expect("cold"),
                direct
            );
            assert!(!cache.is_empty(), "settled hours are kept");
            assert_eq!(
                compute_cached(&store, window, &cache).expect("warm"),
                direct
            );
        }
        // Every hour of the widest window (three days, which holds the others) that
        // ended over SETTLE_MS ago; none that may still change (the current one, those
        // ahead, the last one for the first minutes of an hour).
        let widest = Window::ending_at(now_ms(), 86_400_000, 3);
        let settled = (widest.from_ms..widest.to_ms())
            .step_by(HOUR_MS as usize)
            .filter(|h| h + HOUR_MS <= now_ms() - SETTLE_MS)
            .count();
        assert!(
            cache.len().abs_diff(settled) <= 1,
            "{} of {settled}",
            cache.len()
        );

        // An erasure takes something from the past: the hour it was in is dropped (and
        // only it), and the figures are those of a full read again.
        let kept = cache.len();
        store.erase(ids[3..5].to_vec(), "test").expect("erase");
        cache.sync(&store);
        assert_eq!(cache.len(), kept - 1, "events 3 and 4 were in one hour");
        let window = Window::ending_at(now_ms(), 86_400_000, 3);
        let direct = compute(&store, window).expect("compute");
        assert_eq!(
            compute_cached(&store, window, &cache).expect("after"),
            direct
        );
        let total: u64 = direct.prompts.iter().map(|p| p.events).sum();
        assert_eq!(total, 30 * 3 - 2);
        assert_eq!(cache.len(), kept, "read again and kept");

        // Pruning the audit trail (the reviews of the first two hours) drops the hours
        // before its cutoff.
        let cutoff = first + 2 * HOUR_MS + 2;
        assert!(store.prune_audit(cutoff).expect("prune") > 0);
        cache.sync(&store);
        let before_cutoff = (cutoff - window.from_ms).div_ceil(HOUR_MS) as usize;
        assert_eq!(cache.len(), kept - before_cutoff);
        let direct = compute(&store, window).expect("compute");
        assert_eq!(
            compute_cached(&store, window, &cache).expect("pruned"),
            direct
        );
    }

    #[test]
    fn settled_hours_outlive_a_restart_until_an_erasure_touches_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, ids, _) = busy_store(dir.path(), 30);
        let window = Window::ending_at(now_ms(), 86_400_000, 3);
        let direct = compute(&store, window).expect("compute");
        assert_eq!(
            compute_cached(&store, window, &StatsCache::default()).expect("first"),
            direct
        );
        let on_disk = |store: &Store| {
            store
                .rollups(ROLLUP_KIND, window.from_ms, window.to_ms())
                .expect("rollups")
                .len()
        };
        let kept = on_disk(&store);
        assert!(kept >= 30, "{kept}");

        // A new process: the cache starts empty and fills from disk.
        drop(store);
        let store = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
        let cache = StatsCache::default();
        assert_eq!(
            compute_cached(&store, window, &cache).expect("after restart"),
            direct
        );
        assert_eq!(cache.len(), kept, "every settled hour is kept again");

        // An erasure while the server is stopped (`flywheel erase`) drops the hour it
        // took from, on disk too; the next start reads that hour again.
        store.erase(ids[3..5].to_vec(), "test").expect("erase");
        drop(store);
        let store = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
        assert_eq!(on_disk(&store), kept - 1);
        let cache = StatsCache::default();
        let direct = compute(&store, window).expect("compute");
        assert_eq!(
            compute_cached(&store, window, &cache).expect("after erasure"),
            direct
        );
        assert_eq!(on_disk(&store), kept, "read again and kept");
        let total: u64 = direct.prompts.iter().map(|p| p.events).sum();
        assert_eq!(total, 30 * 3 - 2);

        // The hours do come from disk: one rewritten there shows in a new process's view.
        let marker = HourSums {
            prompts: BTreeMap::from([(("marker".into(), "1".into()), (7, 0, 0.0))]),
            queues: BTreeMap::new(),
        };
        let bytes = postcard::to_allocvec(&marker).expect("encode");
        let version = store.history_since(0).0;
        let hour = window.from_ms;
        assert!(
            store
                .put_rollup(ROLLUP_KIND, hour, hour + HOUR_MS, version, &bytes)
                .expect("put")
        );
        let seen = compute_cached(&store, window, &StatsCache::default()).expect("marked");
        assert!(
            seen.prompts
                .iter()
                .any(|p| (p.name.as_str(), p.events) == ("marker", 7)),
            "{:?}",
            seen.prompts
        );
    }

    fn record(at: u64, prompt: (&str, &str), satisfaction: Option<f64>) -> EventRecord {
        let scores: Vec<_> = satisfaction
            .map(|v| json!({"plugin": "satisfaction", "name": "satisfaction", "value": v}))
            .into_iter()
            .collect();
        serde_json::from_value(json!({
            "id": format!("e{at}"), "received_at": at, "input": "q", "output": "a",
            "feedback": {"type": "none"}, "status": "processed",
            "prompt": {"name": prompt.0, "version": prompt.1},
            "outcome": {"scores": scores, "votes": [], "calls": [], "plugins": [],
                        "processed_at": at, "route": {"action": "accept"}},
        }))
        .expect("a record")
    }

    fn audit(at: u64, action: AuditAction) -> AuditEntry {
        AuditEntry {
            at,
            queue: "q".into(),
            item_id: "i".into(),
            actor: "a".into(),
            action,
            detail: None,
        }
    }

    #[test]
    fn buckets_sum_volume_mean_satisfaction_and_throughput() {
        let window = Window::ending_at(3_500, 1_000, 3);
        assert_eq!((window.from_ms, window.to_ms()), (1_000, 4_000));
        let events = [
            record(500, ("support", "1"), Some(1.0)), // before the window
            record(1_100, ("support", "1"), Some(1.0)),
            record(1_900, ("support", "1"), Some(0.0)),
            record(1_950, ("support", "1"), None),
            record(3_999, ("support", "2"), Some(0.25)),
        ];
        let trail = [
            audit(1_000, AuditAction::Claimed),
            audit(2_000, AuditAction::Reviewed),
            audit(2_001, AuditAction::Reviewed),
            audit(2_001, AuditAction::Completed),
        ];
        let mut tally = Tally::new(window);
        events.iter().for_each(|e| tally.event(e));
        trail.iter().for_each(|a| tally.audit(a));
        let stats = tally.finish();
        let v1 = &stats.prompts[0];
        assert_eq!(
            (v1.name.as_str(), v1.version.as_str(), v1.events),
            ("support", "1", 3)
        );
        assert_eq!(v1.buckets[0].events, 3);
        assert_eq!(v1.buckets[0].scored, 2);
        assert_eq!(v1.buckets[0].satisfaction, Some(0.5));
        assert_eq!(v1.buckets[1].satisfaction, None);
        assert_eq!(stats.prompts[1].buckets[2].satisfaction, Some(0.25));
        let q = &stats.queues[0];
        assert_eq!((q.reviews, q.completed), (2, 1));
        assert_eq!(
            q.buckets.iter().map(|b| b.reviews).collect::<Vec<_>>(),
            [0, 2, 0]
        );
    }
}
