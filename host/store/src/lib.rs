//! Flywheel's durable state in sled: events, pipeline outcomes, queue items, plugin
//! key-value data and small metadata trees. It knows no wasm and no HTTP, and it never
//! acknowledges an append (in durable mode) before the event is flushed to disk.
//!
//! # Layout
//! Values are JSON unless noted; integers in keys and counters are big-endian `u64`.
//!
//! | tree          | key                                                   | value                     |
//! |---------------|-------------------------------------------------------|---------------------------|
//! | `events`      | event id                                              | `seq` ++ `{event,reviews?}` |
//! | `outcomes`    | event id                                              | `Outcome` (binary, see `codec`), once processed |
//! | `plugin_sets` | set id (`u64`)                                        | `[PluginRef]`: the builds an outcome names |
//! | `log`         | `received_at` ++ `seq` (arrival order)                | event id                  |
//! | `counters`    | `"events"`, `"pending_watermark"`                     | `u64`; `u128`: see below  |
//! | `queue`       | queue `\0` (255 − priority) `created_at` item id      | `QueueItem` (not done yet) |
//! | `queue_depth` | queue                                                 | `u64`: items stored pending |
//! | `queue_done`  | queue                                                 | `u64`: items done         |
//! | `queue_items` | queue `\0` item id                                    | `QueueEntry`, once claimed |
//! | `queue_leases`| queue `\0` `expires_at` item id                       | empty                     |
//! | `queue_audit` | queue `\0` `at` ULID                                  | `AuditEntry`              |
//! | `kv`          | plugin `\0` key                                       | raw bytes                 |
//! | `kv_usage`    | plugin                                                | `u64`: key + value bytes  |
//! | `history`     | version (`u64`)                                       | `from` ++ `to`: times where something was erased or pruned (`history`) |
//! | `rollups`     | kind `\0` `start`                                     | `end` ++ version ++ caller's bytes (`rollup`) |
//! | `meta/<name>` | caller's key                                          | caller's bytes            |
//!
//! Every write that spans trees is one sled transaction, so a crash never leaves an event
//! without its `log` entry, a processed event without its queue item, or a review on an
//! item but not on its event.
//!
//! An event is pending while it has no outcome. The `log` is both the time index for
//! listings and the backlog: the committer gives every event a key above all existing
//! ones, and the `pending_watermark` counter marks the point below which every event is
//! known to be processed, so recovery walks only the tail. Recording an outcome is one
//! write (two with a queue item): this layout replaced a `pending` tree (one more insert
//! per append and one more delete per outcome) and a `by_time` tree, which cost about a
//! fifth of the server's CPU per event under load. Stores in the old layout are
//! converted at open.
//!
//! Erasing an event (`erase`) removes its `events`, `log` and `outcomes` entries and its
//! items in `queue`, `queue_items` and `queue_leases`, and adjusts `counters`,
//! `queue_depth` and `queue_done`, in one transaction; `queue_audit` keeps its entries
//! (no event content; who erased what) until `prune_audit` removes them by age (`audit`).
//! The same transaction records the span of times it took from in `history`, which is
//! how figures kept about the past (`rollups`) know they are out of date.
//!
//! A backup (`backup`) copies every tree while the store is in use and writes again the
//! keys that changed meanwhile; every write holds the store's write gate (shared) so
//! that the backup's last round, under the gate, sees no write half done.
//!
//! All writes on the hot path go through one committer thread (`committer`): new
//! events and the pipeline's outcomes share its group commit, one transaction and one
//! flush per batch, because a sled transaction costs far more than the writes in it
//! (each one writes out a log buffer on sled's IO threads). Outcomes alone wait briefly
//! for an append to share its transaction, and are not flushed on their own: losing one
//! in a crash only leaves its event pending, to be decided again, and sled recovers its
//! log in order, so the next flush (or [`BACKGROUND_FLUSH`]) makes it durable with
//! everything before it.

mod audit;
mod backup;
mod codec;
mod committer;
mod erase;
mod error;
mod events;
mod history;
mod kv;
mod meta;
mod plugin_sets;
mod queue;
mod rollup;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

pub use audit::{AUDIT_SCAN_BUDGET, AuditFilter, AuditPage};
pub use backup::{BackupInfo, read_backup, restore};
pub use committer::Appended;
pub use erase::{Erased, Erasure};
pub use error::{KvError, Result, StoreError};
pub use events::{Completion, EventFilter, LIST_SCAN_BUDGET, LogPosition, Page};
pub use history::HistoryChanges;
pub use kv::{KvCleared, KvKey, KvPage, MAX_KV_KEY_BYTES};
pub use queue::{
    AuditAction, AuditEntry, ITEMS_SCAN_BUDGET, ItemStatus, ItemsPage, Lease, QueueEntry,
    QueueItem, QueueSummary,
};
pub use rollup::Rollup;

use committer::Request;

/// How often sled flushes in the background whatever was written and not yet flushed:
/// the longest a recorded outcome (see [`Store::complete_with`]) or a plugin's kv write
/// stays only in memory when nothing else is flushed (sled's default).
pub const BACKGROUND_FLUSH: Duration = Duration::from_millis(500);

/// How to open a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Flush every group commit before acknowledging it. Turn off only for benches and
    /// throwaway data: a crash then loses recently acknowledged events.
    pub durable: bool,
    /// sled's page cache size; reads of recent events are served from it.
    pub cache_capacity_bytes: u64,
    /// How many append requests may wait for the committer before `append_with` answers
    /// `StoreError::Busy` (and `append` blocks): the store's back-pressure.
    pub max_waiting_appends: usize,
    /// How long the committer may keep a batch open for more requests, once they arrive
    /// several at a time (zero: never). A durable batch costs a flush and a round of
    /// wake-ups whatever its size, so gathering a few more requests into it saves CPU at
    /// moderate load for a little latency. A request that comes alone (the last batch had
    /// no company) is committed at once, so is a batch that starts with many requests
    /// waiting, and the wait ends when no request came for a few of the recent gaps
    /// between them, so a saturated committer does not idle.
    pub commit_delay: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durable: true,
            cache_capacity_bytes: 128 * 1024 * 1024,
            max_waiting_appends: 16 * 1024,
            commit_delay: Duration::ZERO,
        }
    }
}

/// Counters that show group commit working: `flushes` should stay far below the number
/// of append requests under load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Flushes made by the committer (one per batch in durable mode, none otherwise).
    pub flushes: u64,
    /// Batches written by the committer.
    pub batches: u64,
    /// Append requests answered by the committer.
    pub requests: u64,
    /// Events newly stored since open.
    pub appended: u64,
    /// Events refused as duplicates since open.
    pub duplicates: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    flushes: AtomicU64,
    batches: AtomicU64,
    requests: AtomicU64,
    appended: AtomicU64,
    duplicates: AtomicU64,
    /// Events stored in total, mirrored from the `counters` tree.
    events: AtomicU64,
    /// Events with an outcome, mirrored from the `counters` tree.
    processed: AtomicU64,
    /// Erasures committed since open; see `PreparedOutcome::erasures`.
    erasures: AtomicU64,
    /// What was taken out of stored history lately; see [`Store::history_since`].
    history: parking_lot::Mutex<history::History>,
}

/// The fixed trees, opened once.
#[derive(Clone)]
pub(crate) struct Trees {
    events: sled::Tree,
    outcomes: sled::Tree,
    log: sled::Tree,
    counters: sled::Tree,
    queue: sled::Tree,
    queue_depth: sled::Tree,
    queue_done: sled::Tree,
    queue_items: sled::Tree,
    queue_leases: sled::Tree,
    queue_audit: sled::Tree,
    kv: sled::Tree,
    kv_usage: sled::Tree,
    history: sled::Tree,
    rollups: sled::Tree,
    plugin_sets: Arc<plugin_sets::PluginSets>,
    gate: WriteGate,
}

/// Every write to the store holds this shared for as long as it writes, and a backup
/// holds it exclusively while it copies the trees: sled has no snapshots, and pausing
/// writes is what makes a backup one point in time across all trees.
pub(crate) type WriteGate = Arc<parking_lot::RwLock<()>>;

impl Trees {
    /// Held (shared) around a write; see [`WriteGate`]. Never take it twice on one
    /// thread: a backup waiting for it would block the second take for ever.
    pub(crate) fn writing(&self) -> parking_lot::RwLockReadGuard<'_, ()> {
        self.gate.read()
    }
}

const EVENTS_COUNTER: &[u8] = b"events";
/// How many events have an outcome: written in the same transactions as the outcomes, so
/// that `events - processed` is the exact backlog without walking the `log`.
const PROCESSED_COUNTER: &[u8] = b"processed";
/// The `log` key (as a number) below which every event has an outcome.
const WATERMARK: &[u8] = b"pending_watermark";

/// A handle on the store. Cheap to clone; the last handle dropped stops the committer
/// (after a final flush) and closes the database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    trees: Trees,
    counters: Arc<Counters>,
    /// Monotonic within a millisecond, so queue items created together keep their order.
    ulids: parking_lot::Mutex<ulid::Generator>,
    /// The pending watermark (see the layout notes); only ever moves up.
    watermark: parking_lot::Mutex<u128>,
    /// `None` only while dropping, so the committer sees the channel close.
    requests: Option<crossbeam_channel::Sender<Request>>,
    committer: Option<JoinHandle<()>>,
}

impl Store {
    /// Opens (or creates) the store in `dir` and starts its committer thread.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store> {
        let config = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(BACKGROUND_FLUSH.as_millis() as u64))
            .cache_capacity(opts.cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput);
        let db = open_db(&config, dir)?;
        let gate = WriteGate::default();
        let trees = Trees {
            events: db.open_tree("events")?,
            outcomes: db.open_tree("outcomes")?,
            log: db.open_tree("log")?,
            counters: db.open_tree("counters")?,
            queue: db.open_tree("queue")?,
            queue_depth: db.open_tree("queue_depth")?,
            queue_done: db.open_tree("queue_done")?,
            queue_items: db.open_tree("queue_items")?,
            queue_leases: db.open_tree("queue_leases")?,
            queue_audit: db.open_tree("queue_audit")?,
            kv: db.open_tree("kv")?,
            kv_usage: db.open_tree("kv_usage")?,
            history: db.open_tree("history")?,
            rollups: db.open_tree("rollups")?,
            plugin_sets: Arc::new(plugin_sets::PluginSets::open(&db, gate.clone())?),
            gate,
        };
        let counters = Arc::new(Counters {
            history: parking_lot::Mutex::new(history::History::load(&trees.history)?),
            ..Counters::default()
        });
        let stored = match trees.counters.get(EVENTS_COUNTER)? {
            Some(v) => codec::decode_u64("events counter", &v)?,
            None => 0,
        };
        counters.events.store(stored, Ordering::Relaxed);
        let max_seq = migrate_v1(&db, &trees)?;
        counters
            .processed
            .store(processed_count(&trees)?, Ordering::Relaxed);
        let watermark = match trees.counters.get(WATERMARK)? {
            Some(v) => codec::decode_log_key(&v)?,
            None => 0,
        };
        let (last_time, next_seq) = match trees.log.last()? {
            Some((k, _)) => {
                let key = codec::decode_log_key(&k)?;
                #[allow(clippy::cast_possible_truncation)] // the high and low halves
                let (time, seq) = ((key >> 64) as u64, key as u64);
                (time, seq.max(max_seq).saturating_add(1))
            }
            None => (0, 0),
        };
        let (tx, rx) = crossbeam_channel::bounded(opts.max_waiting_appends.max(1));
        let committer = committer::Committer {
            db: db.clone(),
            trees: trees.clone(),
            counters: counters.clone(),
            durable: opts.durable,
            next_seq,
            last_time,
            commit_delay: opts.commit_delay,
        };
        let handle = std::thread::Builder::new()
            .name("flywheel-store-committer".into())
            .spawn(move || committer.run(rx))
            .map_err(|e| StoreError::Spawn(e.to_string()))?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                trees,
                counters,
                ulids: parking_lot::Mutex::new(ulid::Generator::new()),
                watermark: parking_lot::Mutex::new(watermark),
                requests: Some(tx),
                committer: Some(handle),
            }),
        })
    }

    /// Makes every write so far durable (completions and kv writes are not flushed on
    /// their own).
    pub fn flush(&self) -> Result<()> {
        self.inner.db.flush()?;
        Ok(())
    }

    /// Group-commit counters since open.
    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        StoreStats {
            flushes: c.flushes.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            appended: c.appended.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
        }
    }

    /// How many events are stored (kept as a counter, so this is O(1)).
    pub fn count(&self) -> usize {
        usize::try_from(self.inner.counters.events.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// How many stored events have an outcome (a counter, O(1)).
    pub fn processed(&self) -> u64 {
        self.inner.counters.processed.load(Ordering::Relaxed)
    }

    /// Events acknowledged but not processed yet: the pipeline's real backlog, wherever
    /// it waits (the workers' queue or only on disk). O(1), so the server can check it on
    /// every request to bound the backlog, and report it in `/metrics`.
    pub fn unprocessed(&self) -> u64 {
        let c = &self.inner.counters;
        // Read `processed` first: both only grow (but for erasures, which take from both),
        // so this never undercounts by a race.
        let processed = c.processed.load(Ordering::Relaxed);
        c.events.load(Ordering::Relaxed).saturating_sub(processed)
    }

    /// How many erasures the committer has made since open.
    pub(crate) fn erasures(&self) -> u64 {
        self.inner.counters.erasures.load(Ordering::SeqCst)
    }

    pub(crate) fn trees(&self) -> &Trees {
        &self.inner.trees
    }

    /// A fresh ULID, strictly after every one this store made before.
    pub(crate) fn next_ulid(&self) -> ulid::Ulid {
        let mut generator = self.inner.ulids.lock();
        generator.generate().unwrap_or_else(|_| ulid::Ulid::new())
    }

    pub(crate) fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    pub(crate) fn watermark(&self) -> &parking_lot::Mutex<u128> {
        &self.inner.watermark
    }
}

/// How long `open` waits for the directory's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens sled, waiting up to [`LOCK_WAIT`] for the directory's lock. sled releases it
/// only once its background I/O threads let go of the files, a few milliseconds after
/// the last handle of a store opened in this process (a restart in place, a test) is
/// dropped; a lock still held after that belongs to another process.
fn open_db(config: &sled::Config, dir: &Path) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(StoreError::Locked {
                        path: dir.display().to_string(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// The stored processed counter; a store written before it existed gets it counted once
/// from the `outcomes` tree (and stored, so this happens on one open only).
fn processed_count(trees: &Trees) -> Result<u64> {
    if let Some(v) = trees.counters.get(PROCESSED_COUNTER)? {
        return codec::decode_u64("processed counter", &v);
    }
    let mut n = 0u64;
    for entry in trees.outcomes.iter() {
        entry?;
        n += 1;
    }
    if n > 0 {
        trees.counters.insert(PROCESSED_COUNTER, &n.to_be_bytes())?;
        tracing::info!(
            processed = n,
            "counted the processed events once (new counter)"
        );
    }
    Ok(n)
}

/// Converts a store from the first layout (`pending` keyed by `seq`, `by_time` keyed by
/// `received_at` ++ id) to the `log`, and returns the highest `seq` it saw (0 if there was
/// nothing to convert). Safe to repeat: a crash part-way leaves the old trees in place,
/// and the next open converts again, writing the same keys.
fn migrate_v1(db: &sled::Db, trees: &Trees) -> Result<u64> {
    let names = db.tree_names();
    if !names.iter().any(|n| n.as_ref() == b"by_time") {
        return Ok(0);
    }
    let by_time = db.open_tree("by_time")?;
    let mut max_seq = 0u64;
    let mut converted = 0usize;
    for entry in by_time.iter() {
        let (key, _) = entry?;
        let (time, id) = match (key.get(..8), key.get(8..)) {
            (Some(t), Some(id)) => (codec::decode_u64("time index key", t)?, id),
            _ => return Err(StoreError::corrupt("time index key: too short")),
        };
        let Some(value) = trees.events.get(id)? else {
            continue;
        };
        let seq = codec::event_seq(&value)?;
        max_seq = max_seq.max(seq);
        trees.log.insert(codec::log_key(time, seq), id)?;
        converted += 1;
    }
    // Nothing is known processed in the converted log yet: recovery walks it once.
    trees.counters.remove(WATERMARK)?;
    db.flush()?;
    db.drop_tree("by_time")?;
    if names.iter().any(|n| n.as_ref() == b"pending") {
        db.drop_tree("pending")?;
    }
    db.flush()?;
    tracing::info!(
        events = converted,
        "converted the store to the event log layout"
    );
    Ok(max_seq)
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel lets the committer drain what is queued, flush and exit.
        drop(self.requests.take());
        if let Some(handle) = self.committer.take() {
            // A reply closure may own the last handle; the committer cannot join itself.
            if handle.thread().id() != std::thread::current().id() && handle.join().is_err() {
                tracing::error!("store committer panicked");
            }
        }
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "final store flush failed");
        }
    }
}

#[cfg(test)]
mod tests;
