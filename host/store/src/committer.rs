//! The append hot path: one committer thread takes every waiting append request as a
//! batch, writes it in one transaction, flushes once (durable mode) and then replies to
//! each request. It owns event insertion; it must never reply before its flush.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::{Receiver, TrySendError};
use flywheel_model::Event;
use serde::Serialize;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use crate::codec;
use crate::error::{Result, StoreError, from_tx};
use crate::{Counters, EVENTS_COUNTER, Store, Trees};

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

pub(crate) struct Request {
    events: Vec<Event>,
    reply: Reply,
}

/// At most this many events go into one transaction; more waiting requests go next.
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
        let Some(sender) = &self.inner.requests else {
            return reply(Err(StoreError::Closed), events);
        };
        let request = Request { events, reply };
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
            (request.reply)(Err(err), request.events);
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
}

/// One event encoded ahead of the transaction, which may run more than once.
struct Prepared {
    log_key: [u8; 16],
    value: Vec<u8>,
}

impl Committer {
    pub fn run(mut self, requests: Receiver<Request>) {
        while let Ok(first) = requests.recv() {
            let mut size = first.events.len();
            let mut batch = vec![first];
            while size < MAX_BATCH_EVENTS {
                match requests.try_recv() {
                    Ok(r) => {
                        size += r.events.len();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "store flush at shutdown failed");
        }
    }

    fn commit(&mut self, mut batch: Vec<Request>) {
        let result = self.write(&mut batch).and_then(|r| {
            if self.durable {
                self.db.flush()?;
                self.counters.flushes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r)
        });
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        match result {
            Ok(results) => {
                for (request, appended) in batch.into_iter().zip(results) {
                    answer(request, Ok(appended));
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

    /// Writes one batch in one transaction; returns each request's per-event results.
    fn write(&mut self, batch: &mut [Request]) -> Result<Vec<Vec<Appended>>> {
        let mut prepared = Vec::with_capacity(batch.len());
        for request in batch.iter_mut() {
            let mut encoded = Vec::with_capacity(request.events.len());
            for event in &mut request.events {
                let seq = self.next_seq;
                self.next_seq += 1;
                // Arrival time never goes back (a request stamped a moment before one that
                // committed first, or the clock stepping back), so `log` keys only grow.
                event.received_at = event.received_at.max(self.last_time);
                self.last_time = event.received_at;
                encoded.push(Prepared {
                    log_key: codec::log_key(event.received_at, seq),
                    value: codec::encode_event(seq, event, &[])?,
                });
            }
            prepared.push(encoded);
        }

        let t = &self.trees;
        let (results, accepted, total) = from_tx((&t.events, &t.log, &t.counters).transaction(
            |(events, log, counters)| {
                let mut seen = HashSet::new();
                let mut accepted = 0u64;
                let mut results = Vec::with_capacity(batch.len());
                for (request, encoded) in batch.iter().zip(&prepared) {
                    let mut appended = Vec::with_capacity(encoded.len());
                    for (event, p) in request.events.iter().zip(encoded) {
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
                    results.push(appended);
                }
                let before = match counters.get(EVENTS_COUNTER)? {
                    Some(v) => codec::decode_u64("events counter", &v)
                        .map_err(ConflictableTransactionError::Abort)?,
                    None => 0,
                };
                let total = before + accepted;
                if accepted > 0 {
                    counters.insert(EVENTS_COUNTER, &total.to_be_bytes())?;
                }
                Ok((results, accepted, total))
            },
        ))?;
        let total_events: u64 = prepared.iter().map(|p| p.len() as u64).sum();
        let c = &self.counters;
        c.appended.fetch_add(accepted, Ordering::Relaxed);
        c.duplicates
            .fetch_add(total_events - accepted, Ordering::Relaxed);
        c.events.store(total, Ordering::Relaxed);
        Ok(results)
    }
}

/// Runs a reply closure; a panicking one must not take the committer down with it.
fn answer(request: Request, result: Result<Vec<Appended>>) {
    let Request { events, reply } = request;
    if catch_unwind(AssertUnwindSafe(move || reply(result, events))).is_err() {
        tracing::error!("an append reply callback panicked");
    }
}
