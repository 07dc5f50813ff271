//! The write hot path: one committer thread takes every waiting request as a batch
//! (appends of new events, and the pipeline's outcomes for processed ones), writes it in
//! one transaction, flushes once (durable mode) and then replies to each request. It
//! owns event insertion, outcome recording and erasure (`erase.rs`, in a transaction of
//! its own after the batch's); it must never reply to an append or an erasure before
//! its flush. A batch of nothing but the pipeline's outcomes is not flushed: they
//! become durable with the next flush (see [`Store::complete_with`]).
//!
//! Outcomes ride on the same group commit as appends because a sled transaction of its
//! own cost far more than the writes in it (each one rolls sled's log buffer): recording
//! an outcome with a queue item in its own transaction cost tens of microseconds, in a
//! shared one only its inserts.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TrySendError};
use flywheel_model::Event;
use serde::Serialize;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use crate::codec;
use crate::erase::Erasure;
use crate::error::{Result, StoreError, from_tx};
use crate::events::Completion;
use crate::queue::QueueItem;
use crate::{Counters, EVENTS_COUNTER, PROCESSED_COUNTER, Store, Trees};

/// What happened to one event of an append, in the order the events were given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Appended {
    /// Newly stored, pending processing.
    Accepted { id: String },
    /// An event with this id was already stored (or came earlier in the same batch); the
    /// stored one is unchanged. Lets clients retry safely.
    Duplicate { id: String },
}

impl Appended {
    /// The event id, whichever the outcome.
    pub fn id(&self) -> &str {
        match self {
            Appended::Accepted { id } | Appended::Duplicate { id } => id,
        }
    }
}

type Reply = Box<dyn FnOnce(Result<Vec<Appended>>, Vec<Event>) + Send>;
type CompleteReply = Box<dyn FnOnce(Result<Vec<Completion>>) + Send>;
pub(crate) type EraseReply = Box<dyn FnOnce(Result<Vec<Erasure>>) + Send>;

pub(crate) enum Request {
    Append {
        events: Vec<Event>,
        reply: Reply,
    },
    Complete {
        items: Vec<PreparedOutcome>,
        /// Reply only once the outcomes are on disk. Without it they are made durable by
        /// the next flush (see [`Store::complete_with`]).
        durable: bool,
        reply: CompleteReply,
    },
    /// Erase these events (see `erase.rs`): the committer does it because it is the one
    /// thread that adds events, outcomes and queue items, so none can appear for an
    /// event while it is being erased.
    Erase {
        ids: Vec<String>,
        /// Who asked, for the queues' audit trail.
        actor: String,
        reply: EraseReply,
    },
}

impl Request {
    /// How many writes the request adds to a batch.
    fn size(&self) -> usize {
        match self {
            Request::Append { events, .. } => events.len(),
            Request::Complete { items, .. } => items.len(),
            Request::Erase { ids, .. } => ids.len(),
        }
    }

    /// The pipeline's outcomes, which nobody waits on: they may wait for company (see
    /// [`Gather::hold`]) and need no flush of their own, since an event whose outcome a
    /// crash loses is still pending and is decided again at start-up. Every other
    /// request is committed at once and answered only after its batch's flush.
    fn deferrable(&self) -> bool {
        matches!(self, Request::Complete { durable: false, .. })
    }

    /// Answer with an error, without writing anything.
    fn refuse(self, e: StoreError) {
        match self {
            Request::Append { events, reply } => reply(Err(e), events),
            Request::Complete { reply, .. } => reply(Err(e)),
            Request::Erase { reply, .. } => reply(Err(e)),
        }
    }
}

/// An outcome encoded (with its queue item, if any) ahead of the transaction, by the
/// thread that recorded it.
pub(crate) struct PreparedOutcome {
    pub id: String,
    /// The store's erasure count when the event was found to exist: if it moved before
    /// the outcome is written, the committer checks again that the event is still there.
    pub erasures: u64,
    pub outcome: Vec<u8>,
    pub item: Option<PreparedItem>,
}

/// A queue item with its `queue` key and value.
pub(crate) struct PreparedItem {
    pub item: QueueItem,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// What one request of a batch came to.
enum Done {
    Appended(Vec<Appended>),
    /// Per outcome, what became of it.
    Completed(Vec<Recorded>),
    Erased(Vec<Erasure>),
}

/// What became of one outcome in a batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Recorded {
    New,
    /// The event already had an outcome.
    Already,
    /// The event was erased after the outcome was prepared.
    Erased,
}

/// At most this many writes go into one transaction; more waiting requests go next.
const MAX_BATCH_EVENTS: usize = 1024;

impl Store {
    /// Stores `events` and returns once they are durable (in durable mode). Blocks the
    /// calling thread; from async code use [`Store::append_with`].
    pub fn append(&self, events: Vec<Event>) -> Result<Vec<Appended>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit(
            events,
            Box::new(move |r, _| {
                let _ = tx.send(r);
            }),
            true,
        );
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Stores `events` without blocking; `reply` runs on the committer thread once they
    /// are durable (keep it short, e.g. send on a oneshot), and gets the events back so
    /// the caller can hand them on without a copy. If the store is busy or closed, or an
    /// event is invalid, `reply` runs at once on the calling thread. `reply` must not call
    /// the blocking [`Store::append`]: the committer would wait on itself.
    pub fn append_with(
        &self,
        events: Vec<Event>,
        reply: impl FnOnce(Result<Vec<Appended>>, Vec<Event>) + Send + 'static,
    ) {
        self.submit(events, Box::new(reply), false);
    }

    fn submit(&self, events: Vec<Event>, reply: Reply, block: bool) {
        if events.is_empty() {
            return reply(Ok(Vec::new()), events);
        }
        if events.iter().any(|e| e.id.is_empty()) {
            let err = StoreError::InvalidEvent {
                reason: "empty event id".into(),
            };
            return reply(Err(err), events);
        }
        self.send(Request::Append { events, reply }, block);
    }

    /// Sends the request `make` builds around a reply, and waits for that reply: the
    /// blocking form of the committer's requests that answer with one result.
    pub(crate) fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(Box<dyn FnOnce(Result<T>) + Send>) -> Request,
    ) -> Result<T> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(
            make(Box::new(move |r| {
                let _ = tx.send(r);
            })),
            true,
        );
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Queue `request` for the committer (`block`: wait for room), or refuse it.
    pub(crate) fn send(&self, request: Request, block: bool) {
        let Some(sender) = &self.inner.requests else {
            return request.refuse(StoreError::Closed);
        };
        let refused = if block {
            sender
                .send(request)
                .err()
                .map(|e| (e.0, StoreError::Closed))
        } else {
            match sender.try_send(request) {
                Ok(()) => None,
                Err(TrySendError::Full(r)) => Some((r, StoreError::Busy)),
                Err(TrySendError::Disconnected(r)) => Some((r, StoreError::Closed)),
            }
        };
        if let Some((request, err)) = refused {
            request.refuse(err);
        }
    }
}

pub(crate) struct Committer {
    pub db: sled::Db,
    pub trees: Trees,
    pub counters: Arc<Counters>,
    pub durable: bool,
    /// The next `seq`: above every one in the `log`.
    pub next_seq: u64,
    /// The `received_at` of the newest event stored: no new event gets an earlier one,
    /// so `log` keys only grow (see the layout notes in `lib.rs`).
    pub last_time: u64,
    /// How long to gather requests for a batch once several are arriving together
    /// (see [`crate::StoreOptions::commit_delay`]).
    pub commit_delay: Duration,
}

/// How the committer gathers a batch: every request already waiting and, when a
/// commit delay is set and requests have been arriving several at a time, those that
/// come within the delay while they keep coming at the recent pace.
pub(crate) struct Gather {
    delay: Duration,
    /// How long a batch of nothing but the pipeline's outcomes waits for an append or
    /// another request that someone waits on, to share its transaction. Every sled
    /// transaction writes out a log buffer (a `pwrite` and a `sync_file_range` on one of
    /// sled's IO threads), so at moderate load outcomes committed on their own doubled
    /// the device writes per event. Nobody waits on these outcomes, so the hold costs
    /// only how soon they are visible.
    hold: Duration,
    /// Whether the last batch had company: only then is waiting for more worth it.
    busy: bool,
    /// Requests counted since `since`, for the recent gap between arrivals.
    since: Instant,
    count: u32,
    gap: Duration,
}

impl Gather {
    /// The window over which the gap between arrivals is averaged.
    const WINDOW: Duration = Duration::from_millis(100);
    /// How many recent gaps without a request end the wait: by then the senders are
    /// all waiting on this batch, and waiting longer would only idle the CPU.
    const SILENT_GAPS: u32 = 3;
    /// With this many requests already waiting when a batch starts, it is not held.
    const ENOUGH_WAITING: usize = 8;
    /// See [`Gather::hold`]: the gap between appends at ~100 events/s, a few times the
    /// pipeline's own batching (5 ms).
    pub const OUTCOME_HOLD: Duration = Duration::from_millis(10);

    pub fn new(delay: Duration) -> Self {
        Gather {
            delay,
            hold: Self::OUTCOME_HOLD,
            busy: false,
            since: Instant::now(),
            count: 0,
            gap: Duration::ZERO,
        }
    }

    /// The batch that starts with `first`.
    pub fn batch(&mut self, first: Request, requests: &Receiver<Request>) -> Vec<Request> {
        let mut last = Instant::now();
        self.arrived(last);
        let mut size = first.size();
        let mut batch = vec![first];
        // Take what is already waiting. Many requests waiting means the committer is
        // what they wait on: the batch is big enough, and holding it would idle the CPU.
        self.take_waiting(&mut batch, &mut size, requests, last);
        // Outcomes alone wait (a little) for a request that has to be committed anyway.
        if !self.hold.is_zero() && batch.iter().all(Request::deferrable) {
            let until = last + self.hold;
            while size < MAX_BATCH_EVENTS {
                let Ok(r) = requests.recv_deadline(until) else {
                    break;
                };
                last = Instant::now();
                self.arrived(last);
                size += r.size();
                let company = !r.deferrable();
                batch.push(r);
                if company {
                    self.take_waiting(&mut batch, &mut size, requests, last);
                    break;
                }
            }
        }
        let deadline = (self.busy && !self.delay.is_zero() && batch.len() < Self::ENOUGH_WAITING)
            .then(|| last + self.delay);
        if let Some(at) = deadline {
            while size < MAX_BATCH_EVENTS {
                let until = at.min(last + self.gap * Self::SILENT_GAPS);
                let Ok(r) = requests.recv_deadline(until) else {
                    break;
                };
                last = Instant::now();
                self.arrived(last);
                size += r.size();
                batch.push(r);
            }
        }
        self.busy = batch.len() > 1;
        batch
    }

    /// Adds the requests already waiting to `batch`, up to the batch's bound.
    fn take_waiting(
        &mut self,
        batch: &mut Vec<Request>,
        size: &mut usize,
        requests: &Receiver<Request>,
        now: Instant,
    ) {
        while *size < MAX_BATCH_EVENTS {
            let Ok(r) = requests.try_recv() else { break };
            self.arrived(now);
            *size += r.size();
            batch.push(r);
        }
    }

    fn arrived(&mut self, now: Instant) {
        self.count += 1;
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= Self::WINDOW {
            self.gap = elapsed / self.count;
            self.since = now;
            self.count = 0;
        }
    }
}

/// One event encoded ahead of the transaction, which may run more than once.
struct Prepared {
    log_key: [u8; 16],
    value: Vec<u8>,
}

impl Committer {
    pub fn run(mut self, requests: Receiver<Request>) {
        let mut gather = Gather::new(self.commit_delay);
        while let Ok(first) = requests.recv() {
            let batch = gather.batch(first, &requests);
            self.commit(batch);
        }
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "store flush at shutdown failed");
        }
    }

    fn commit(&mut self, mut batch: Vec<Request>) {
        let appends = batch
            .iter()
            .filter(|r| matches!(r, Request::Append { .. }))
            .count();
        // A flush makes everything written before it durable (sled recovers its log as
        // a prefix), so a batch of pipeline outcomes alone is left for the next one.
        let flush = self.durable && !batch.iter().all(Request::deferrable);
        let result = self.write(&mut batch).and_then(|r| {
            if flush {
                self.db.flush()?;
                self.counters.flushes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r)
        });
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters
            .requests
            .fetch_add(appends as u64, Ordering::Relaxed);
        match result {
            Ok(results) => {
                for (request, done) in batch.into_iter().zip(results) {
                    answer(request, Ok(done));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = batch.len(), "group commit failed");
                for request in batch {
                    answer(request, Err(e.clone()));
                }
            }
        }
    }

    /// Writes one batch in one transaction; returns what each request came to.
    fn write(&mut self, batch: &mut [Request]) -> Result<Vec<Done>> {
        let mut prepared = Vec::with_capacity(batch.len());
        for request in batch.iter_mut() {
            let mut encoded = Vec::new();
            if let Request::Append { events, .. } = request {
                for event in events.iter_mut() {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    // Arrival time never goes back (a request stamped a moment before one
                    // that committed first, or the clock stepping back), so `log` keys only
                    // grow.
                    event.received_at = event.received_at.max(self.last_time);
                    self.last_time = event.received_at;
                    encoded.push(Prepared {
                        log_key: codec::log_key(event.received_at, seq),
                        value: codec::encode_event(seq, event, &[])?,
                    });
                }
            }
            prepared.push(encoded);
        }

        // Only this thread erases, and it does so after this transaction: outcomes
        // prepared under this count of erasures are for events that still exist.
        let erasures = self.counters.erasures.load(Ordering::SeqCst);
        let t = &self.trees;
        let trees = (
            &t.events,
            &t.log,
            &t.counters,
            &t.outcomes,
            &t.queue,
            &t.queue_depth,
        );
        let writing = t.writing();
        let (results, accepted, total, processed) = from_tx(trees.transaction(
            |(events, log, counters, outcomes, queue, depth)| {
                let abort = ConflictableTransactionError::Abort;
                let mut seen = HashSet::new();
                let mut recorded = HashSet::new();
                let mut accepted = 0u64;
                let mut completed = 0u64;
                // Queue depths are added up per queue and written once per batch.
                let mut added: Vec<(&str, u64)> = Vec::new();
                let mut results = Vec::with_capacity(batch.len());
                for (request, encoded) in batch.iter().zip(&prepared) {
                    match request {
                        Request::Append { events: evs, .. } => {
                            let mut appended = Vec::with_capacity(encoded.len());
                            for (event, p) in evs.iter().zip(encoded) {
                                let id = event.id.as_str();
                                if !seen.insert(id) || events.get(id)?.is_some() {
                                    appended.push(Appended::Duplicate { id: id.to_owned() });
                                    continue;
                                }
                                events.insert(id, p.value.as_slice())?;
                                log.insert(&p.log_key, id)?;
                                accepted += 1;
                                appended.push(Appended::Accepted { id: id.to_owned() });
                            }
                            results.push(Done::Appended(appended));
                        }
                        Request::Complete { items, .. } => {
                            let mut done = Vec::with_capacity(items.len());
                            for p in items {
                                let id = p.id.as_str();
                                if !recorded.insert(id) || outcomes.get(id)?.is_some() {
                                    done.push(Recorded::Already);
                                    continue;
                                }
                                if p.erasures != erasures && events.get(id)?.is_none() {
                                    done.push(Recorded::Erased);
                                    continue;
                                }
                                outcomes.insert(id, p.outcome.as_slice())?;
                                completed += 1;
                                if let Some(item) = &p.item {
                                    queue.insert(item.key.as_slice(), item.value.as_slice())?;
                                    let q = item.item.queue.as_str();
                                    match added.iter_mut().find(|(name, _)| *name == q) {
                                        Some((_, n)) => *n += 1,
                                        None => added.push((q, 1)),
                                    }
                                }
                                done.push(Recorded::New);
                            }
                            results.push(Done::Completed(done));
                        }
                        // Written after this transaction, in one of their own.
                        Request::Erase { .. } => results.push(Done::Erased(Vec::new())),
                    }
                }
                for (q, n) in added {
                    let before = match depth.get(q)? {
                        Some(v) => codec::decode_u64("queue depth", &v).map_err(abort)?,
                        None => 0,
                    };
                    depth.insert(q, &(before + n).to_be_bytes())?;
                }
                let before = match counters.get(EVENTS_COUNTER)? {
                    Some(v) => codec::decode_u64("events counter", &v).map_err(abort)?,
                    None => 0,
                };
                let total = before + accepted;
                if accepted > 0 {
                    counters.insert(EVENTS_COUNTER, &total.to_be_bytes())?;
                }
                let processed = if completed > 0 {
                    let before = match counters.get(PROCESSED_COUNTER)? {
                        Some(v) => codec::decode_u64("processed counter", &v).map_err(abort)?,
                        None => 0,
                    };
                    counters.insert(PROCESSED_COUNTER, &(before + completed).to_be_bytes())?;
                    Some(before + completed)
                } else {
                    None
                };
                Ok((results, accepted, total, processed))
            },
        ))?;
        drop(writing);
        let total_events: u64 = prepared.iter().map(|p| p.len() as u64).sum();
        let c = &self.counters;
        c.appended.fetch_add(accepted, Ordering::Relaxed);
        c.duplicates
            .fetch_add(total_events - accepted, Ordering::Relaxed);
        c.events.store(total, Ordering::Relaxed);
        if let Some(processed) = processed {
            c.processed.store(processed, Ordering::Relaxed);
        }
        let mut results = results;
        for (request, done) in batch.iter().zip(results.iter_mut()) {
            if let Request::Erase { ids, actor, .. } = request {
                *done = Done::Erased(self.erase(ids, actor)?);
            }
        }
        Ok(results)
    }
}

/// Runs a reply closure; a panicking one must not take the committer down with it.
fn answer(request: Request, result: Result<Done>) {
    let ran = match request {
        Request::Append { events, reply } => {
            let result = result.and_then(|d| match d {
                Done::Appended(a) => Ok(a),
                _ => Err(StoreError::corrupt("an append got another answer")),
            });
            catch_unwind(AssertUnwindSafe(move || reply(result, events)))
        }
        Request::Complete { items, reply, .. } => {
            let result = result.and_then(|d| match d {
                // The queue items move into the answer: no copy.
                Done::Completed(recorded) => Ok(items
                    .into_iter()
                    .zip(recorded)
                    .map(|(p, recorded)| match recorded {
                        Recorded::New => Completion::Completed {
                            queue_item: p.item.map(|i| i.item),
                        },
                        Recorded::Already => Completion::AlreadyProcessed,
                        Recorded::Erased => Completion::Erased,
                    })
                    .collect()),
                _ => Err(StoreError::corrupt("a completion got another answer")),
            });
            catch_unwind(AssertUnwindSafe(move || reply(result)))
        }
        Request::Erase { reply, .. } => {
            let result = result.and_then(|d| match d {
                Done::Erased(e) => Ok(e),
                _ => Err(StoreError::corrupt("an erasure got another answer")),
            });
            catch_unwind(AssertUnwindSafe(move || reply(result)))
        }
    };
    if ran.is_err() {
        tracing::error!("a store reply callback panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn request() -> Request {
        Request::Append {
            events: Vec::new(),
            reply: Box::new(|_, _| {}),
        }
    }

    /// Outcomes as the pipeline records them (`durable`: as `complete_all` does).
    fn outcomes(durable: bool) -> Request {
        Request::Complete {
            items: Vec::new(),
            durable,
            reply: Box::new(|_| {}),
        }
    }

    /// A gatherer whose last batch had company (`busy`) and whose recent gap is `gap`.
    fn gather(delay: Duration, busy: bool, gap: Duration) -> Gather {
        let mut g = Gather::new(delay);
        g.busy = busy;
        g.gap = gap;
        g
    }

    /// A gatherer with no commit delay that holds outcomes alone for `hold`.
    fn gather_with_hold(hold: Duration) -> Gather {
        let mut g = Gather::new(Duration::ZERO);
        g.hold = hold;
        g
    }

    /// Sends a request after each of `delays` (from now), on another thread.
    fn send_later(
        tx: &crossbeam_channel::Sender<Request>,
        delays: &[u64],
    ) -> std::thread::JoinHandle<()> {
        let tx = tx.clone();
        let delays = delays.to_vec();
        std::thread::spawn(move || {
            let start = Instant::now();
            for ms in delays {
                std::thread::sleep(
                    (start + Duration::from_millis(ms)).saturating_duration_since(Instant::now()),
                );
                let _ = tx.send(request());
            }
        })
    }

    #[test]
    fn without_a_delay_a_batch_is_what_is_waiting() {
        let (tx, rx) = crossbeam_channel::unbounded();
        for _ in 0..3 {
            tx.send(request()).expect("send");
        }
        let mut gather = gather(Duration::ZERO, true, Duration::from_secs(1));
        assert_eq!(gather.batch(request(), &rx).len(), 4);
        assert!(gather.busy);
        assert_eq!(gather.batch(request(), &rx).len(), 1);
        assert!(!gather.busy, "a batch alone is not company");
    }

    /// The tests hold batches for up to 30 s; 20 s is far from both that and the
    /// milliseconds a quick answer takes, so a slow machine cannot fail them.
    fn ended_long_before_the_delay(started: Instant) {
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(20), "{waited:?}");
    }

    #[test]
    fn a_delay_gathers_requests_that_keep_coming_and_stops_at_a_silence() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut gather = gather(Duration::from_secs(30), true, Duration::from_secs(1));
        let sender = send_later(&tx, &[20, 40]);
        let started = Instant::now();
        let batch = gather.batch(request(), &rx);
        // Both came within three gaps of the one before; then 3 s of silence ended the
        // wait, long before the 30 s delay.
        assert_eq!(batch.len(), 3);
        ended_long_before_the_delay(started);
        sender.join().expect("sender thread");
    }

    #[test]
    fn a_lone_request_is_not_held() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut gather = gather(Duration::from_secs(30), false, Duration::from_secs(60));
        let sender = send_later(&tx, &[200]);
        let started = Instant::now();
        assert_eq!(gather.batch(request(), &rx).len(), 1);
        ended_long_before_the_delay(started);
        sender.join().expect("sender thread");
    }

    #[test]
    fn the_delay_bounds_the_wait() {
        let (_tx, rx) = crossbeam_channel::unbounded();
        let mut gather = gather(Duration::from_millis(150), true, Duration::from_secs(3600));
        let started = Instant::now();
        assert_eq!(gather.batch(request(), &rx).len(), 1);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_secs(20),
            "{waited:?}"
        );
    }

    #[test]
    fn outcomes_alone_wait_for_an_append_to_share_its_batch() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut gather = gather_with_hold(Duration::from_secs(30));
        // More outcomes come during the hold, then an append, which ends it.
        let sender = std::thread::spawn(move || {
            for r in [outcomes(false), request()] {
                std::thread::sleep(Duration::from_millis(20));
                tx.send(r).expect("the gatherer is waiting");
            }
        });
        let started = Instant::now();
        let batch = gather.batch(outcomes(false), &rx);
        assert_eq!(batch.len(), 3);
        assert!(matches!(batch[2], Request::Append { .. }));
        assert!(started.elapsed() >= Duration::from_millis(30));
        ended_long_before_the_delay(started);
        sender.join().expect("sender thread");
    }

    #[test]
    fn the_hold_bounds_the_wait_and_applies_only_to_outcomes_alone() {
        let (tx, rx) = crossbeam_channel::unbounded::<Request>();
        let mut gather = gather_with_hold(Duration::from_millis(150));
        let started = Instant::now();
        assert_eq!(gather.batch(outcomes(false), &rx).len(), 1);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_secs(20),
            "{waited:?}"
        );
        // Appends, erasures and outcomes someone waits on are committed at once, even
        // with the pipeline's outcomes in the same batch.
        let mut gather = gather_with_hold(Duration::from_secs(30));
        let erasure = Request::Erase {
            ids: Vec::new(),
            actor: String::new(),
            reply: Box::new(|_| {}),
        };
        for first in [request(), erasure, outcomes(true)] {
            tx.send(outcomes(false)).expect("the receiver is here");
            let started = Instant::now();
            assert_eq!(gather.batch(first, &rx).len(), 2);
            ended_long_before_the_delay(started);
        }
    }

    #[test]
    fn the_gap_is_the_mean_over_a_window() {
        let mut gather = Gather::new(Duration::from_millis(1));
        let t0 = gather.since;
        for i in 1..=9 {
            gather.arrived(t0 + Duration::from_millis(10 * i));
        }
        assert_eq!(gather.gap, Duration::ZERO, "no full window yet");
        gather.arrived(t0 + Duration::from_millis(100));
        assert_eq!(gather.gap, Duration::from_millis(10));
    }
}
