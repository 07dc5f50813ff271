//! Erasing events for good: by id, or every event a filter matches (one user's events
//! for a data-protection request, those older than the retention period). An event goes
//! with everything stored about it: its `log` entry, its outcome, its reviews, and its
//! queue items whatever their state (open, leased or done), with the queue counters
//! adjusted. The audit trail keeps its entries (who did what to which item id, with no
//! event content) and gains an `erased` one per item, naming who asked; plugins'
//! key-value data is theirs and is not touched.
//!
//! An outcome names its queue item's key, so erasing reads no queue; for outcomes
//! stored before they did, each queue concerned is read once per batch of erasures.
//!
//! The committer erases, in a transaction of its own after its batch: it is the one
//! thread that adds events, outcomes and queue items, so nothing new can appear for an
//! event it is erasing. What other threads change meanwhile (a reviewer claiming or
//! finishing an item) the transaction reads again. An outcome the pipeline was still
//! deciding when its event went is refused when it arrives (`Completion::Erased`).
//!
//! sled writes new versions rather than overwriting, so erased bytes stay in its log
//! files until sled's segment cleaning rewrites them; they are no longer reachable.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use flywheel_model::now_ms;
use serde::Serialize;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use crate::codec::{self, ItemKey};
use crate::committer::{Committer, Request};
use crate::error::{Result, StoreError, from_tx};
use crate::events::EventFilter;
use crate::history::History;
use crate::queue::{self, AuditAction, AuditEntry, ItemStatus, QueueEntry, QueueItem};
use crate::{EVENTS_COUNTER, PROCESSED_COUNTER, Store};

/// What erasing one id did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Erasure {
    pub id: String,
    /// False when no event has this id (never stored, or erased before).
    pub erased: bool,
    /// Queue items removed with the event.
    pub queue_items: u64,
}

/// Totals of an erasure by filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Erased {
    pub events: u64,
    pub queue_items: u64,
}

impl Erased {
    /// The totals of what erasing some ids did.
    pub fn of(done: &[Erasure]) -> Self {
        let mut total = Erased::default();
        for e in done.iter().filter(|e| e.erased) {
            total.events += 1;
            total.queue_items += e.queue_items;
        }
        total
    }
}

impl std::ops::AddAssign for Erased {
    fn add_assign(&mut self, more: Erased) {
        self.events += more.events;
        self.queue_items += more.queue_items;
    }
}

/// Events erased per committer request when erasing by filter: small enough that
/// appends waiting behind it are not held up long, big enough that a flush is shared.
const CHUNK: usize = 256;

impl Store {
    /// Erases the events with these ids, with their outcomes, reviews and queue items,
    /// and returns once that is durable (in durable mode). One result per id, in order;
    /// an unknown id is reported, not an error. `actor` (who asked) goes into the audit
    /// trail of each queue that loses an item.
    pub fn erase(&self, ids: Vec<String>, actor: &str) -> Result<Vec<Erasure>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.ask(|reply| Request::Erase {
            ids,
            actor: actor.to_owned(),
            reply,
        })
    }

    /// Erases every event `filter` matches, oldest first, a chunk at a time; `progress`
    /// hears each chunk's totals. Events that arrive during the walk and match are
    /// erased too if the walk reaches them. A filter with only time bounds (retention)
    /// reads just the `log`; others read each event in range to test it.
    pub fn erase_matching(
        &self,
        filter: &EventFilter,
        actor: &str,
        mut progress: impl FnMut(Erased),
    ) -> Result<Erased> {
        let mut total = Erased::default();
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut flush = |chunk: &mut Vec<String>, total: &mut Erased| -> Result<()> {
            let now = Erased::of(&self.erase(std::mem::take(chunk), actor)?);
            *total += now;
            progress(now);
            Ok(())
        };
        if filter.only_time() {
            for entry in self.trees().log.range(filter.range(None)) {
                let (_, id) = entry?;
                chunk.push(codec::decode_str("log id", &id)?);
                if chunk.len() == CHUNK {
                    flush(&mut chunk, &mut total)?;
                }
            }
        } else {
            for record in self.scan(filter) {
                chunk.push(record?.event.id);
                if chunk.len() == CHUNK {
                    flush(&mut chunk, &mut total)?;
                }
            }
        }
        if !chunk.is_empty() {
            flush(&mut chunk, &mut total)?;
        }
        Ok(total)
    }
}

/// One event to erase, as found before the transaction.
struct Target<'a> {
    id: &'a str,
    /// `None` when no event has the id.
    log_key: Option<[u8; 16]>,
    /// Its queue item (open or done), if it has one.
    items: Vec<ItemRef>,
}

/// Where a queue item is stored.
struct ItemRef {
    queue: String,
    id: String,
    /// Its key in `queue` (while it is open).
    key: Vec<u8>,
}

impl ItemRef {
    fn of(item: &QueueItem) -> Self {
        ItemRef {
            queue: item.queue.clone(),
            id: item.id.clone(),
            key: queue::item_key(item),
        }
    }

    /// From a `queue` key: `queue \0 (255 - priority) created_at item_id`.
    fn from_key(key: &[u8]) -> Result<Self> {
        let corrupt = || StoreError::corrupt("an outcome names a malformed queue item key");
        let sep = key.iter().position(|b| *b == 0).ok_or_else(corrupt)?;
        let queue = codec::decode_str("queue name", &key[..sep])?;
        let id = codec::decode_str("queue item id", key.get(sep + 10..).ok_or_else(corrupt)?)?;
        Ok(ItemRef {
            queue,
            id,
            key: key.to_vec(),
        })
    }
}

impl Committer {
    /// Erases `ids` in one transaction (see the module notes); the caller flushes.
    pub(crate) fn erase(&self, ids: &[String], actor: &str) -> Result<Vec<Erasure>> {
        let t = &self.trees;
        let mut targets = Vec::with_capacity(ids.len());
        // Events whose outcome was written before outcomes named their queue item, by
        // queue: each such queue is read once to find them.
        let mut unknown: HashMap<String, HashSet<&str>> = HashMap::new();
        let mut seen = HashSet::new();
        for id in ids {
            let log_key = match t.events.get(id)? {
                Some(v) if seen.insert(id.as_str()) => {
                    let (seq, stored) = codec::decode_event(&v)?;
                    Some(codec::log_key(stored.event.received_at, seq))
                }
                _ => None,
            };
            let mut items = Vec::new();
            if log_key.is_some()
                && let Some(o) = t.outcomes.get(id)?
            {
                match codec::outcome_item_key(&o)? {
                    ItemKey::Known(Some(key)) => items.push(ItemRef::from_key(key)?),
                    ItemKey::Known(None) => {}
                    ItemKey::Unknown => {
                        let outcome = codec::decode_outcome(&o, |set| t.plugin_sets.get(set))?;
                        if let Some(target) = outcome.route.queue() {
                            unknown
                                .entry(target.queue.clone())
                                .or_default()
                                .insert(id.as_str());
                        }
                    }
                }
            }
            targets.push(Target { id, log_key, items });
        }
        // Items leave `queue` when done and enter `queue_items` when first claimed, so
        // between the two every item is found; the same item may be found in both.
        let mut found: HashMap<&str, Vec<ItemRef>> = HashMap::new();
        for (name, wanted) in &unknown {
            let prefix = codec::named_key(name, &[]);
            let open = t.queue.scan_prefix(&prefix).values().map(|v| {
                let v = v?;
                codec::decode::<QueueItem>("queue item", &v)
            });
            let states = t.queue_items.scan_prefix(&prefix).values().map(|v| {
                let v = v?;
                codec::decode::<QueueEntry>("queue entry", &v).map(|e| e.item)
            });
            for item in open.chain(states) {
                let item = item?;
                if let Some(id) = wanted.get(item.event_id.as_str()) {
                    let items = found.entry(id).or_default();
                    if !items.iter().any(|i| i.id == item.id) {
                        items.push(ItemRef::of(&item));
                    }
                }
            }
        }
        for target in &mut targets {
            if let Some(items) = found.remove(target.id) {
                target.items = items;
            }
        }
        // An audit entry per item that may go, made up front: the transaction may run
        // more than once and must write the same keys each time.
        let at = now_ms();
        let audit_keys: Vec<Vec<Vec<u8>>> = targets
            .iter()
            .map(|t| {
                t.items
                    .iter()
                    .map(|item| {
                        let mut rest = at.to_be_bytes().to_vec();
                        rest.extend_from_slice(&ulid::Ulid::new().0.to_be_bytes());
                        codec::named_key(&item.queue, &rest)
                    })
                    .collect()
            })
            .collect();

        let trees = (
            &t.events,
            &t.log,
            &t.counters,
            &t.outcomes,
            &t.queue,
            &t.queue_depth,
            &t.queue_done,
            &t.queue_items,
            &t.queue_leases,
            &t.queue_audit,
            &t.history,
        );
        // The span of times this takes from, recorded in the same transaction (a crash
        // never keeps the erasure without it). The history lock is taken before the
        // write gate, as everywhere, and held until the change is in memory too.
        let times = targets
            .iter()
            .filter_map(|t| t.log_key)
            .map(|k| codec::log_received_at(u128::from_be_bytes(k)));
        let span = times.clone().min().zip(times.max());
        let mut history = self.counters.history.lock();
        let change = span.map(|(from, to)| history.plan(from, to));
        let _writing = t.writing();
        let (results, events_left, processed_left) = from_tx(trees.transaction(
            |(events, log, counters, outcomes, open, depth, done, states, leases, audit, past)| {
                let abort = ConflictableTransactionError::Abort;
                let mut results = Vec::with_capacity(targets.len());
                let (mut erased, mut erased_outcomes) = (0u64, 0u64);
                // Per queue: open items removed from its depth, done items from its count.
                let mut counts: HashMap<&str, (u64, u64)> = HashMap::new();
                for (target, audit_keys) in targets.iter().zip(&audit_keys) {
                    let gone = match target.log_key {
                        Some(key) => {
                            events.remove(target.id)?.is_some() && {
                                log.remove(&key[..])?;
                                true
                            }
                        }
                        None => false,
                    };
                    if !gone {
                        results.push(Erasure {
                            id: target.id.to_owned(),
                            erased: false,
                            queue_items: 0,
                        });
                        continue;
                    }
                    erased += 1;
                    if outcomes.remove(target.id)?.is_some() {
                        erased_outcomes += 1;
                    }
                    let mut removed = 0u64;
                    for (item, audit_key) in target.items.iter().zip(audit_keys) {
                        let was_open = open.remove(item.key.as_slice())?.is_some();
                        let state = match states.remove(queue::entry_key(&item.queue, &item.id))? {
                            Some(v) => Some(
                                codec::decode::<QueueEntry>("queue entry", &v).map_err(abort)?,
                            ),
                            None => None,
                        };
                        if let Some(lease) = state.as_ref().and_then(|s| s.lease.as_ref()) {
                            leases.remove(queue::lease_key(&item.queue, &item.id, lease))?;
                        }
                        let count = counts.entry(item.queue.as_str()).or_default();
                        // An item counts in its queue's depth while it is open and not
                        // under a lease (a claim takes it out, a release puts it back).
                        match state.map(|s| s.status) {
                            None if was_open => count.0 += 1,
                            None => continue,
                            Some(ItemStatus::Pending) => count.0 += 1,
                            Some(ItemStatus::InReview) => {}
                            Some(ItemStatus::Done) => count.1 += 1,
                        }
                        removed += 1;
                        let entry = AuditEntry {
                            at,
                            queue: item.queue.clone(),
                            item_id: item.id.clone(),
                            actor: actor.to_owned(),
                            action: AuditAction::Erased,
                            detail: Some("its event was erased".to_owned()),
                        };
                        audit
                            .insert(audit_key.as_slice(), codec::encode(&entry).map_err(abort)?)?;
                    }
                    results.push(Erasure {
                        id: target.id.to_owned(),
                        erased: true,
                        queue_items: removed,
                    });
                }
                for (name, (pending, finished)) in counts {
                    for (tree, n) in [(depth, pending), (done, finished)] {
                        if n > 0 {
                            queue::add_u64(tree, name, -i64::try_from(n).unwrap_or(i64::MAX))?;
                        }
                    }
                }
                let mut left = [0u64; 2];
                for (slot, (key, n)) in [
                    (EVENTS_COUNTER, erased),
                    (PROCESSED_COUNTER, erased_outcomes),
                ]
                .into_iter()
                .enumerate()
                {
                    let before = match counters.get(key)? {
                        Some(v) => codec::decode_u64("event counter", &v).map_err(abort)?,
                        None => 0,
                    };
                    left[slot] = before.saturating_sub(n);
                    if n > 0 {
                        counters.insert(key, &left[slot].to_be_bytes())?;
                    }
                }
                if let Some(change) = &change {
                    History::write_tx(change, past)?;
                }
                Ok((results, left[0], left[1]))
            },
        ))?;
        let c = &self.counters;
        c.events.store(events_left, Ordering::Relaxed);
        c.processed.store(processed_left, Ordering::Relaxed);
        // After the commit: outcomes prepared before it are checked again when written.
        c.erasures.fetch_add(1, Ordering::SeqCst);
        if let Some(change) = change {
            history.apply(change);
        }
        Ok(results)
    }
}
