//! Reading events back and recording what the pipeline made of them: `get`, `pending`,
//! `complete` (the outcome with its queue item, encoded here and written by the
//! committer in its group commit), and the filtered listings `list` (newest first,
//! paged) and `scan` (oldest first, streamed). It never inserts events, and it never
//! rewrites one: an outcome goes into its own tree.

use std::ops::Bound;

use flywheel_model::{EventRecord, EventStatus, Outcome};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::committer::{PreparedItem, PreparedOutcome, Request};
use crate::error::{Result, StoreError};
use crate::queue::{self, QueueItem};
use crate::{Store, Trees};

/// What `complete` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Completion {
    /// The outcome is stored; `queue_item` is the item put on a queue for label/review routes.
    Completed { queue_item: Option<QueueItem> },
    /// The event was already processed; nothing changed. Happens when an event is
    /// processed again after a crash, and keeps each event's stored result single.
    AlreadyProcessed,
    /// The event was erased while the pipeline was deciding it; nothing was written.
    Erased,
}

/// Which events a listing returns. Every field narrows; `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    /// Events received at or after this time (ms since the epoch).
    pub from_ms: Option<u64>,
    /// Events received before this time (exclusive).
    pub to_ms: Option<u64>,
    pub prompt_name: Option<String>,
    pub prompt_version: Option<String>,
    /// `accept`, `label`, `review`, `drop` (the final route) or `pending` (not processed yet).
    pub route: Option<String>,
    /// The queue the final route named.
    pub queue: Option<String>,
    /// The feedback type, as `Feedback::kind()` names it.
    pub feedback: Option<String>,
    /// The event's `user_id`, `session_id`, `trace_id` and `model`, exactly.
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub trace_id: Option<String>,
    pub model: Option<String>,
}

const ROUTES: [&str; 5] = ["accept", "label", "review", "drop", "pending"];

/// The feedback types a filter may name (`Feedback::kind`).
const FEEDBACK_KINDS: [&str; 6] = [
    "thumbs",
    "rating",
    "correction",
    "clarification",
    "comment",
    "none",
];

impl EventFilter {
    fn validate(&self) -> Result<()> {
        match (&self.route, &self.feedback) {
            (Some(r), _) if !ROUTES.contains(&r.as_str()) => Err(StoreError::InvalidFilter {
                reason: format!("unknown route {r:?}; expected one of {}", ROUTES.join(", ")),
            }),
            (_, Some(f)) if !FEEDBACK_KINDS.contains(&f.as_str()) => {
                Err(StoreError::InvalidFilter {
                    reason: format!(
                        "unknown feedback type {f:?}; expected one of {}",
                        FEEDBACK_KINDS.join(", ")
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether `r` passes the filter (the time bounds are applied by the index range).
    fn matches(&self, r: &EventRecord) -> bool {
        let e = &r.event;
        let prompt_ok = |want: &Option<String>, get: fn(&flywheel_model::PromptRef) -> &str| {
            want.as_deref()
                .is_none_or(|w| e.prompt.as_ref().is_some_and(|p| get(p) == w))
        };
        let route_ok = self.route.as_deref().is_none_or(|want| match &r.outcome {
            _ if want == "pending" => r.status == EventStatus::Pending,
            Some(o) => r.status == EventStatus::Processed && o.route.action() == want,
            None => false,
        });
        let queue_ok = self.queue.as_deref().is_none_or(|want| {
            r.outcome
                .as_ref()
                .and_then(|o| o.route.queue())
                .is_some_and(|t| t.queue == want)
        });
        let same = |want: &Option<String>, have: &Option<String>| {
            want.as_deref().is_none_or(|w| have.as_deref() == Some(w))
        };
        same(&self.user_id, &e.user_id)
            && same(&self.session_id, &e.session_id)
            && same(&self.trace_id, &e.trace_id)
            && same(&self.model, &e.model)
            && prompt_ok(&self.prompt_name, |p| &p.name)
            && prompt_ok(&self.prompt_version, |p| &p.version)
            && route_ok
            && queue_ok
            && self
                .feedback
                .as_deref()
                .is_none_or(|f| e.feedback.kind() == f)
    }

    /// What the event's stored JSON must hold for it to match: each exact-match field's
    /// value, quoted. serde_json escapes only quotes, backslashes and control characters,
    /// so a value without those is stored as is; one with them is left to
    /// [`EventFilter::matches`]. A rare filter then decodes only the events that hold its
    /// values, not every event in range.
    fn needles(&self) -> Needles {
        let fields = [
            &self.user_id,
            &self.session_id,
            &self.trace_id,
            &self.model,
            &self.prompt_name,
            &self.prompt_version,
        ];
        let finders = fields
            .into_iter()
            .flatten()
            .filter(|v| !v.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20))
            .map(|v| memchr::memmem::Finder::new(format!("\"{v}\"").as_bytes()).into_owned())
            .collect();
        Needles { finders }
    }

    /// Whether only the time bounds narrow: the `log` range is then the whole answer.
    pub(crate) fn only_time(&self) -> bool {
        let rest = EventFilter {
            from_ms: None,
            to_ms: None,
            ..self.clone()
        };
        rest == EventFilter::default()
    }

    /// Whether nothing narrows at all.
    pub fn is_empty(&self) -> bool {
        self == &EventFilter::default()
    }

    /// The `log` key range for the time bounds, capped above by `before` (a cursor).
    pub(crate) fn range(&self, before: Option<Vec<u8>>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        let lower = match self.from_ms {
            Some(ms) => Bound::Included(ms.to_be_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let to = self.to_ms.map(|ms| ms.to_be_bytes().to_vec());
        let upper = match (to, before) {
            (Some(a), Some(b)) => Bound::Excluded(a.min(b)),
            (Some(k), None) | (None, Some(k)) => Bound::Excluded(k),
            (None, None) => Bound::Unbounded,
        };
        (lower, upper)
    }
}

/// Byte strings an event's stored value must hold to match a filter: see
/// `EventFilter::needles`.
struct Needles {
    finders: Vec<memchr::memmem::Finder<'static>>,
}

impl Needles {
    /// `false` when the event cannot match; `true` when it may (the filter decides).
    fn may_match(&self, stored: &[u8]) -> bool {
        self.finders.iter().all(|f| f.find(stored).is_some())
    }
}

/// Where an event sits in the arrival-ordered `log`: a cursor for [`Store::pending_page`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition(u128);

impl LogPosition {
    /// When the event here was received (ms since the epoch): positions order by it.
    pub fn received_at(self) -> u64 {
        codec::log_received_at(self.0)
    }
}

/// Most events one [`Store::list`] call looks at. Filters other than time are checked
/// event by event, so without a bound one request with a rare filter would read the
/// whole store; with it, each page costs at most this much and says where to go on.
pub const LIST_SCAN_BUDGET: usize = 20_000;

/// One page of a newest-first listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub events: Vec<EventRecord>,
    /// Pass back to `list` for the next (older) page. Set whenever there may be more: the
    /// page is full, or [`LIST_SCAN_BUDGET`] events were looked at first (the page then
    /// holds fewer than asked, maybe none). `None` only once the listing is over.
    pub next_cursor: Option<String>,
}

impl Store {
    /// The event and its outcome, if stored.
    pub fn get(&self, id: &str) -> Result<Option<EventRecord>> {
        let t = self.trees();
        match t.events.get(id)? {
            Some(v) => Ok(Some(record(t, id, &v)?)),
            None => Ok(None),
        }
    }

    /// Ids of events stored but not yet processed, oldest first, all at once (for tests
    /// and small stores; the pipeline walks [`Store::pending_page`]).
    pub fn pending(&self) -> Result<Vec<String>> {
        Ok(self
            .pending_page(None, usize::MAX)?
            .into_iter()
            .map(|(_, id)| id)
            .collect())
    }

    /// When the oldest event still waiting for its outcome was received, if any: figures
    /// about the time before it only change by erasures (see [`Store::history_since`]).
    pub fn oldest_pending_at(&self) -> Result<Option<u64>> {
        Ok(self
            .pending_page(None, 1)?
            .first()
            .map(|(position, _)| position.received_at()))
    }

    /// Up to `limit` events stored but not yet processed, oldest first, after position
    /// `after` (exclusive; `None` = from the start), with their positions. Lets a caller
    /// walk a backlog of millions a page at a time instead of listing it whole. A walk from
    /// the start also moves the pending watermark up to the first event it returns.
    pub fn pending_page(
        &self,
        after: Option<LogPosition>,
        limit: usize,
    ) -> Result<Vec<(LogPosition, String)>> {
        let t = self.trees();
        let start = match after {
            Some(LogPosition(p)) => p.saturating_add(1),
            None => self.advance_watermark()?,
        };
        let mut page = Vec::new();
        if limit == 0 {
            return Ok(page);
        }
        for entry in t.log.range(start.to_be_bytes()..) {
            let (k, id) = entry?;
            if t.outcomes.contains_key(&id)? {
                continue;
            }
            page.push((
                LogPosition(codec::decode_log_key(&k)?),
                codec::decode_str("log id", &id)?,
            ));
            if page.len() == limit {
                break;
            }
        }
        Ok(page)
    }

    /// Moves the pending watermark past the processed events at the head of the `log` and
    /// returns it. Each call walks only what was processed since the last one, so calling
    /// it now and then keeps recovery after a restart short. Not flushed: a lost update
    /// only means the next walk starts further back.
    pub fn advance_watermark(&self) -> Result<u128> {
        let t = self.trees();
        let mut mark = self.watermark().lock();
        let before = *mark;
        for entry in t.log.range(before.to_be_bytes()..) {
            let (k, id) = entry?;
            if !t.outcomes.contains_key(&id)? {
                break;
            }
            // Keys only grow, so nothing can be stored below the next one any more.
            *mark = codec::decode_log_key(&k)?.saturating_add(1);
        }
        if *mark != before {
            let _writing = t.writing();
            t.counters.insert(crate::WATERMARK, &mark.to_be_bytes())?;
        }
        Ok(*mark)
    }

    /// Records the pipeline's outcome for a pending event, atomically with queueing it
    /// for label/review routes, and returns once it is durable (in durable mode). Blocks
    /// until the committer has written it; see [`Store::complete_with`].
    pub fn complete(&self, id: &str, outcome: &Outcome) -> Result<Completion> {
        let mut done = self.complete_all(&[(id, outcome)])?;
        done.pop()
            .ok_or_else(|| StoreError::corrupt("complete_all returned no result"))
    }

    /// [`Store::complete`] for many events, in one transaction. The whole batch is checked
    /// first: if any event is unknown or names a bad queue, nothing is recorded and the
    /// error is returned. Each event's outcome is recorded once: results are in the order
    /// given, and an id given twice (or already processed) is `AlreadyProcessed`; one
    /// whose event is erased meanwhile is `Erased`.
    pub fn complete_all(&self, items: &[(&str, &Outcome)]) -> Result<Vec<Completion>> {
        let prepared = items
            .iter()
            .map(|(id, outcome)| self.prepare_outcome(id, outcome))
            .collect::<Result<Vec<_>>>()?;
        self.ask(|reply| Request::Complete {
            items: prepared,
            durable: true,
            reply,
        })
    }

    /// Records outcomes without waiting for them: they join the committer's next group
    /// commit (one transaction with the appends waiting then; with none waiting, they
    /// wait up to 10 ms for one, see `Gather::hold`), and `reply` runs on the
    /// committer thread once they are written, with one result per item, in order. The
    /// outcomes are encoded before this returns: the caller keeps (and frees) them. It
    /// blocks only while the committer's queue is full (back-pressure on the pipeline).
    /// Keep `reply` short, and never call a blocking store method from it (the committer
    /// would wait on itself). An item that is unknown or names a bad queue gets its error
    /// and the others are recorded; if the store is closed, every item gets the error, at
    /// once, on the calling thread.
    ///
    /// Unlike [`Store::complete_all`], it does not wait for a flush of its own: the
    /// outcomes are durable with the next flush of anything written after them (the next
    /// acknowledged append, an erasure, a `complete_all`), or within
    /// [`BACKGROUND_FLUSH`](crate::BACKGROUND_FLUSH) at the latest. sled recovers its log
    /// in order, so a crash can lose only the newest outcomes, never one before a write
    /// that survived; their events are then still pending and are decided again at
    /// start-up, each recorded once.
    ///
    /// Why: this is how the pipeline records outcomes. A sled transaction of its own per
    /// outcome (or per small batch) cost more than the writes in it, and at moderate load
    /// a flush of their own doubled the flushes per event.
    pub fn complete_with(
        &self,
        items: &[(&str, &Outcome)],
        reply: impl FnOnce(Vec<Result<Completion>>) + Send + 'static,
    ) {
        // One slot per item: the error of one refused here, or `None` for one sent on.
        let mut slots: Vec<Option<Result<Completion>>> = Vec::with_capacity(items.len());
        let mut prepared = Vec::with_capacity(items.len());
        for (id, outcome) in items {
            match self.prepare_outcome(id, outcome) {
                Ok(p) => {
                    prepared.push(p);
                    slots.push(None);
                }
                Err(e) => slots.push(Some(Err(e))),
            }
        }
        let sent = prepared.len();
        let fill = move |written: Result<Vec<Completion>>| -> Vec<Result<Completion>> {
            let mut written: Box<dyn Iterator<Item = Result<Completion>>> = match written {
                Ok(done) => Box::new(done.into_iter().map(Ok)),
                Err(e) => Box::new(std::iter::repeat_n(Err(e), sent)),
            };
            slots
                .into_iter()
                .map(|slot| {
                    slot.or_else(|| written.next()).unwrap_or_else(|| {
                        Err(StoreError::corrupt("the committer lost a completion"))
                    })
                })
                .collect()
        };
        if prepared.is_empty() {
            return reply(fill(Ok(Vec::new())));
        }
        self.send(
            Request::Complete {
                items: prepared,
                durable: false,
                reply: Box::new(move |r| reply(fill(r))),
            },
            true,
        );
    }

    /// Check and encode one outcome (and its queue item) for the committer.
    pub(crate) fn prepare_outcome(&self, id: &str, outcome: &Outcome) -> Result<PreparedOutcome> {
        let t = self.trees();
        // Read before the check: an erasure after it moves the count, and the committer
        // then checks again (see `PreparedOutcome::erasures`).
        let erasures = self.erasures();
        if !t.events.contains_key(id)? {
            return Err(StoreError::NotFound { id: id.to_owned() });
        }
        let item = match outcome.route.queue() {
            Some(target) => {
                codec::check_name(&target.queue)?;
                let ulid = self.next_ulid();
                let item = QueueItem {
                    id: ulid.to_string(),
                    queue: target.queue.clone(),
                    event_id: id.to_owned(),
                    action: outcome.route.action().to_owned(),
                    priority: target.priority,
                    reason: target.reason.clone(),
                    created_at: ulid.timestamp_ms(),
                };
                Some(PreparedItem {
                    key: queue::item_key(&item),
                    value: codec::encode(&item)?,
                    item,
                })
            }
            None => None,
        };
        let set = t.plugin_sets.id_for(&outcome.plugins)?;
        Ok(PreparedOutcome {
            id: id.to_owned(),
            erasures,
            outcome: codec::encode_outcome(outcome, set, item.as_ref().map(|i| i.key.as_slice()))?,
            item,
        })
    }

    /// Up to `limit` events matching `filter`, newest first, starting after `cursor` (from
    /// a previous page). Pages stay consistent while events are appended.
    pub fn list(&self, filter: &EventFilter, cursor: Option<&str>, limit: usize) -> Result<Page> {
        self.list_within(filter, cursor, limit, LIST_SCAN_BUDGET)
    }

    /// [`Store::list`], looking at no more than `budget` events.
    pub(crate) fn list_within(
        &self,
        filter: &EventFilter,
        cursor: Option<&str>,
        limit: usize,
        budget: usize,
    ) -> Result<Page> {
        filter.validate()?;
        let before = match cursor {
            // A cursor is a `log` key this listing gave out: 16 bytes, nothing else.
            Some(c) => match hex::decode(c) {
                Ok(key) if key.len() == 16 => Some(key),
                _ => return Err(StoreError::InvalidCursor),
            },
            None => None,
        };
        let mut events = Vec::new();
        if limit == 0 {
            return Ok(Page {
                events,
                next_cursor: None,
            });
        }
        let t = self.trees();
        let needles = filter.needles();
        for (scanned, entry) in t.log.range(filter.range(before)).rev().enumerate() {
            let (key, id) = entry?;
            if let Some(record) = load(t, &key, &id, &needles)?
                && filter.matches(&record)
            {
                events.push(record);
            }
            // Full, or the scan's share of work is spent (a narrow filter over a big store
            // would otherwise read it whole in one request): the client goes on from here.
            if events.len() == limit || scanned + 1 >= budget {
                return Ok(Page {
                    events,
                    next_cursor: Some(hex::encode(&key)),
                });
            }
        }
        Ok(Page {
            events,
            next_cursor: None,
        })
    }

    /// Every event matching `filter`, oldest first, read lazily (for replay and export).
    /// The iterator owns what it needs, so it may outlive this handle and move threads.
    pub fn scan(
        &self,
        filter: &EventFilter,
    ) -> impl Iterator<Item = Result<EventRecord>> + Send + use<> {
        Scan {
            error: filter.validate().err(),
            done: false,
            keys: self.trees().log.range(filter.range(None)),
            trees: self.trees().clone(),
            needles: filter.needles(),
            filter: filter.clone(),
        }
    }
}

/// The iterator behind `Store::scan`; it stops after the first error.
struct Scan {
    error: Option<StoreError>,
    done: bool,
    keys: sled::Iter,
    trees: Trees,
    needles: Needles,
    filter: EventFilter,
}

impl Iterator for Scan {
    type Item = Result<EventRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            self.done = true;
            return Some(Err(e));
        }
        if self.done {
            return None;
        }
        for entry in self.keys.by_ref() {
            match entry
                .map_err(StoreError::from)
                .and_then(|(key, id)| load(&self.trees, &key, &id, &self.needles))
            {
                Ok(None) => continue,
                Ok(Some(r)) if !self.filter.matches(&r) => continue,
                Ok(Some(r)) => return Some(Ok(r)),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.done = true;
        None
    }
}

/// The event the `log` entry `key` names; `None` if it was erased since the entry was
/// read (both go in one transaction, so an entry still there names a missing event only
/// if the trees disagree), or if its bytes show it cannot pass the filter whose `needles`
/// these are (then it is not decoded).
fn load(trees: &Trees, key: &[u8], id: &[u8], needles: &Needles) -> Result<Option<EventRecord>> {
    let id = codec::decode_str("log id", id)?;
    match trees.events.get(&id)? {
        Some(v) if !needles.may_match(&v) => Ok(None),
        Some(v) => record(trees, &id, &v).map(Some),
        None if !trees.log.contains_key(key)? => Ok(None),
        None => Err(StoreError::corrupt(format!(
            "time index names missing event {id:?}"
        ))),
    }
}

/// An `events` value and its outcome (if processed) as one record.
fn record(trees: &Trees, id: &str, value: &[u8]) -> Result<EventRecord> {
    let (_, stored) = codec::decode_event(value)?;
    let outcome = match trees.outcomes.get(id)? {
        Some(o) => Some(codec::decode_outcome(&o, |set| trees.plugin_sets.get(set))?),
        None => None,
    };
    Ok(stored.into_record(outcome))
}
