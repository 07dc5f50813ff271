//! Human-in-the-loop queues: the items routers put in front of people, their leases,
//! reviews and audit trail. `Store::complete` creates items; this module owns claiming
//! (one transaction that re-checks and leases an item, so two claims never get the same
//! one), releasing, reviewing (which also stores the review on the event) and the reads.
//! Leases expire lazily: an item whose lease has passed is pending wherever it is read.
//! It knows no config and no HTTP: lease lengths and reviews needed are arguments.

use std::collections::BTreeMap;

use flywheel_model::{Review, now_ms};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use crate::Store;
use crate::codec;
use crate::error::{Result, StoreError, from_tx};

/// One event waiting on a queue for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueItem {
    /// A ULID, so items created in the same millisecond still order and never collide.
    pub id: String,
    pub queue: String,
    pub event_id: String,
    /// `label` or `review`: what the person is asked to do.
    pub action: String,
    /// 0 ..= 100, higher first.
    pub priority: u8,
    pub reason: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
}

/// Where an item is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Waiting for a reviewer (including items whose lease expired).
    Pending,
    /// Held by a reviewer under an unexpired lease.
    InReview,
    /// Reviewed by as many people as the queue needs.
    Done,
}

impl ItemStatus {
    /// The wire name, as in `?status=`.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::InReview => "in_review",
            ItemStatus::Done => "done",
        }
    }
}

/// A reviewer's hold on an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub reviewer: String,
    pub claimed_at: u64,
    /// The item is pending again from this time on (ms since the epoch).
    pub expires_at: u64,
}

/// A queue item with its review state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    #[serde(flatten)]
    pub item: QueueItem,
    pub status: ItemStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Every review so far, oldest first.
    #[serde(default)]
    pub reviews: Vec<Review>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<u64>,
}

impl QueueEntry {
    fn new(item: QueueItem) -> Self {
        QueueEntry {
            item,
            status: ItemStatus::Pending,
            lease: None,
            reviews: Vec::new(),
            done_at: None,
        }
    }

    /// The entry as seen at `now`: an expired lease is dropped and the item is pending.
    fn at(mut self, now: u64) -> Self {
        if self.status == ItemStatus::InReview && self.lease_expired(now) {
            self.status = ItemStatus::Pending;
            self.lease = None;
        }
        self
    }

    fn lease_expired(&self, now: u64) -> bool {
        self.lease.as_ref().is_none_or(|l| l.expires_at <= now)
    }

    /// Whether `reviewer` has already reviewed this item.
    pub fn reviewed_by(&self, reviewer: &str) -> bool {
        self.reviews.iter().any(|r| r.reviewer == reviewer)
    }

    /// Whether the reviewers so far gave different verdicts.
    pub fn disagreement(&self) -> bool {
        self.reviews
            .split_first()
            .is_some_and(|(first, rest)| rest.iter().any(|r| r.verdict != first.verdict))
    }

    fn claimable_by(&self, reviewer: &str, now: u64) -> bool {
        claimable(
            self.status,
            self.lease.as_ref(),
            self.reviewed_by(reviewer),
            now,
        )
    }

    /// The live lease, if `reviewer` holds it; otherwise why not.
    fn held_by(&self, reviewer: &str, now: u64) -> Result<&Lease> {
        let item = || self.item.id.clone();
        match (&self.status, &self.lease) {
            (ItemStatus::Done, _) => Err(StoreError::ItemDone { item: item() }),
            (ItemStatus::InReview, Some(l)) if l.reviewer == reviewer && l.expires_at > now => {
                Ok(l)
            }
            (ItemStatus::InReview, Some(l)) if l.reviewer == reviewer => {
                Err(StoreError::LeaseExpired { item: item() })
            }
            _ => Err(StoreError::NotClaimed { item: item() }),
        }
    }
}

/// What happened to an item, for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Claimed,
    Released,
    /// The holder's lease had passed when another claim took the item.
    LeaseExpired,
    Reviewed,
    /// The item got its last needed review.
    Completed,
    /// The item's event was erased, and the item with it.
    Erased,
}

/// One entry of a queue's audit trail: who did what to which item, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    pub queue: String,
    pub item_id: String,
    pub actor: String,
    pub action: AuditAction,
    /// E.g. the verdict of a review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Most items one page of [`Store::queue_entries`] looks at (as
/// [`crate::LIST_SCAN_BUDGET`] for events).
pub const ITEMS_SCAN_BUDGET: usize = 20_000;

/// One page of a queue's items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemsPage {
    pub entries: Vec<QueueEntry>,
    /// Pass back to [`Store::queue_entries`] (with the same status) for the next page;
    /// set whenever there may be more, `None` once the listing is over.
    pub next_cursor: Option<String>,
}

/// Where an items page is: open items come first, then done ones. The first byte of a
/// cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum ItemsPhase {
    Open = 0,
    Done = 1,
}

/// A cursor: the phase, then the rest of the last key looked at (after `queue \0`).
fn items_cursor(phase: ItemsPhase, rest: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(1 + rest.len());
    bytes.push(phase as u8);
    bytes.extend_from_slice(rest);
    hex::encode(bytes)
}

/// What a claim needs to know of an item's state (a [`QueueEntry`] read without its item
/// and its reviews' content).
#[derive(Deserialize)]
struct ClaimState {
    status: ItemStatus,
    lease: Option<Lease>,
    #[serde(default)]
    reviews: Vec<Reviewer>,
}

#[derive(Deserialize)]
struct Reviewer {
    reviewer: String,
}

impl ClaimState {
    /// As [`QueueEntry::claimable_by`].
    fn claimable_by(&self, reviewer: &str, now: u64) -> bool {
        let reviewed = self.reviews.iter().any(|r| r.reviewer == reviewer);
        claimable(self.status, self.lease.as_ref(), reviewed, now)
    }
}

/// Whether an item in `status`, under `lease`, may be claimed at `now` by someone who has
/// (or has not) `reviewed` it: pending, or its lease passed, and not theirs to review twice.
fn claimable(status: ItemStatus, lease: Option<&Lease>, reviewed: bool, now: u64) -> bool {
    let free = match status {
        ItemStatus::Pending => true,
        ItemStatus::InReview => lease.is_none_or(|l| l.expires_at <= now),
        ItemStatus::Done => false,
    };
    free && !reviewed
}

/// Counts for one queue, as seen at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueSummary {
    pub queue: String,
    pub pending: u64,
    pub in_review: u64,
    pub done: u64,
    /// When the oldest pending item was created (ms since the epoch).
    pub oldest_pending_at: Option<u64>,
}

/// `queue \0 (255 - priority) created_at item_id`: a prefix scan of `queue \0` yields the
/// queue's items highest priority first, then oldest first.
pub(crate) fn item_key(item: &QueueItem) -> Vec<u8> {
    let mut rest = Vec::with_capacity(1 + 8 + item.id.len());
    rest.push(255 - item.priority);
    rest.extend_from_slice(&item.created_at.to_be_bytes());
    rest.extend_from_slice(item.id.as_bytes());
    codec::named_key(&item.queue, &rest)
}

/// Just past every `queue \0 ...` key: the end of a queue's range in any tree.
fn queue_end(queue: &str) -> Vec<u8> {
    let mut end = queue.as_bytes().to_vec();
    end.push(codec::SEP + 1);
    end
}

/// `queue \0 item_id`: an item's state in `queue_items`.
pub(crate) fn entry_key(queue: &str, item_id: &str) -> Vec<u8> {
    codec::named_key(queue, item_id.as_bytes())
}

/// `queue \0 expires_at item_id`: a lease in `queue_leases`, so expired ones are a range.
pub(crate) fn lease_key(queue: &str, item_id: &str, lease: &Lease) -> Vec<u8> {
    let mut rest = lease.expires_at.to_be_bytes().to_vec();
    rest.extend_from_slice(item_id.as_bytes());
    codec::named_key(queue, &rest)
}

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<StoreError>>;

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

fn read_u64(tree: &TransactionalTree, key: &str) -> TxResult<u64> {
    match tree.get(key)? {
        Some(v) => codec::decode_u64("queue counter", &v).map_err(abort),
        None => Ok(0),
    }
}

pub(crate) fn add_u64(tree: &TransactionalTree, key: &str, delta: i64) -> TxResult<()> {
    let n = read_u64(tree, key)?.saturating_add_signed(delta);
    tree.insert(key, &n.to_be_bytes())?;
    Ok(())
}

/// The audit tree inside a transaction, with keys made up front (a transaction may run
/// more than once, and must write the same keys each time).
struct Audit<'a> {
    tree: &'a TransactionalTree,
    keys: [Vec<u8>; 2],
}

impl Audit<'_> {
    fn record(&self, slot: usize, entry: &AuditEntry) -> TxResult<()> {
        let value = codec::encode(entry).map_err(abort)?;
        self.tree.insert(self.keys[slot].as_slice(), value)?;
        Ok(())
    }
}

impl Store {
    /// `queue \0 at ULID`: audit entries sort by time, then by when they were written.
    pub(crate) fn audit_keys(&self, queue: &str, at: u64) -> [Vec<u8>; 2] {
        [(); 2].map(|()| {
            let mut rest = at.to_be_bytes().to_vec();
            rest.extend_from_slice(&self.next_ulid().0.to_be_bytes());
            codec::named_key(queue, &rest)
        })
    }

    /// The stored state of an item; items never claimed have none yet and are pending.
    fn load_entry(&self, item: QueueItem) -> Result<QueueEntry> {
        match self
            .trees()
            .queue_items
            .get(entry_key(&item.queue, &item.id))?
        {
            Some(v) => codec::decode("queue entry", &v),
            None => Ok(QueueEntry::new(item)),
        }
    }

    /// Items not done yet, in claim order (priority high first, then oldest first).
    fn open_items(&self, queue: &str) -> impl Iterator<Item = Result<QueueItem>> + use<> {
        self.trees()
            .queue
            .scan_prefix(codec::named_key(queue, &[]))
            .values()
            .map(|v| codec::decode("queue item", &v?))
    }

    /// Up to `limit` open items of `queue`, highest priority first, then oldest first.
    pub fn queue_items(&self, queue: &str, limit: usize) -> Result<Vec<QueueItem>> {
        codec::check_name(queue)?;
        self.open_items(queue).take(limit).collect()
    }

    /// How many items each queue has pending (leases that have passed count as pending;
    /// queues never used are absent).
    pub fn queue_depths(&self) -> Result<BTreeMap<String, u64>> {
        let t = self.trees();
        let now = now_ms();
        t.queue_depth
            .iter()
            .map(|entry| {
                let (k, v) = entry?;
                let queue = codec::decode_str("queue name", &k)?;
                let expired = t
                    .queue_leases
                    .range(
                        codec::named_key(&queue, &[])
                            ..codec::named_key(&queue, &(now + 1).to_be_bytes()),
                    )
                    .count() as u64;
                Ok((queue, codec::decode_u64("queue depth", &v)? + expired))
            })
            .collect()
    }

    /// Leases the first item of `queue` that `reviewer` may take: pending (or its lease
    /// passed), not reviewed by them before and not in `skip`. The lease lasts `lease_ms`
    /// from `now`. `None` when there is nothing left for this reviewer.
    pub fn claim(
        &self,
        queue: &str,
        reviewer: &str,
        lease_ms: u64,
        skip: &[String],
        now: u64,
    ) -> Result<Option<QueueEntry>> {
        codec::check_name(queue)?;
        let t = self.trees();
        // The walk passes the items others hold and, in a queue that needs several
        // reviews, the ones this reviewer already reviewed: it reads only what decides
        // that (the item's id from its key, its state's status, lease and reviewers).
        let id_at = queue.len() + 1 + 1 + 8;
        for entry in t.queue.scan_prefix(codec::named_key(queue, &[])) {
            let (item_key, value) = entry?;
            let id = codec::decode_str("queue item id", item_key.get(id_at..).unwrap_or_default())?;
            if skip.contains(&id) {
                continue;
            }
            let key = entry_key(queue, &id);
            if let Some(state) = t.queue_items.get(&key)?
                && !codec::decode::<ClaimState>("queue entry", &state)?.claimable_by(reviewer, now)
            {
                continue;
            }
            let item: QueueItem = codec::decode("queue item", &value)?;
            let audit_keys = self.audit_keys(queue, now);
            let _writing = t.writing();
            let claimed = from_tx(
                (
                    &t.queue_items,
                    &t.queue_depth,
                    &t.queue_leases,
                    &t.queue_audit,
                )
                    .transaction(|(items, depth, leases, audit)| {
                        let audit = Audit {
                            tree: audit,
                            keys: audit_keys.clone(),
                        };
                        // Someone may have taken it since the scan: decide again, inside.
                        let mut entry = match items.get(&key)? {
                            Some(v) => codec::decode("queue entry", &v).map_err(abort)?,
                            None => QueueEntry::new(item.clone()),
                        };
                        if !entry.claimable_by(reviewer, now) {
                            return Ok(None);
                        }
                        match entry.lease.take() {
                            Some(old) => {
                                leases.remove(lease_key(queue, &item.id, &old))?;
                                audit.record(
                                    0,
                                    &AuditEntry {
                                        at: now,
                                        queue: queue.to_owned(),
                                        item_id: item.id.clone(),
                                        actor: old.reviewer,
                                        action: AuditAction::LeaseExpired,
                                        detail: Some(format!(
                                            "lease expired at {}",
                                            old.expires_at
                                        )),
                                    },
                                )?;
                            }
                            None => add_u64(depth, queue, -1)?,
                        }
                        let lease = Lease {
                            reviewer: reviewer.to_owned(),
                            claimed_at: now,
                            expires_at: now.saturating_add(lease_ms.max(1)),
                        };
                        leases.insert(lease_key(queue, &item.id, &lease), &[][..])?;
                        entry.status = ItemStatus::InReview;
                        entry.lease = Some(lease);
                        items.insert(key.as_slice(), codec::encode(&entry).map_err(abort)?)?;
                        audit.record(
                            1,
                            &AuditEntry {
                                at: now,
                                queue: queue.to_owned(),
                                item_id: item.id.clone(),
                                actor: reviewer.to_owned(),
                                action: AuditAction::Claimed,
                                detail: None,
                            },
                        )?;
                        Ok(Some(entry))
                    }),
            )?;
            if claimed.is_some() {
                return Ok(claimed);
            }
        }
        Ok(None)
    }

    /// Gives back an item `reviewer` holds: it is pending again.
    pub fn release(
        &self,
        queue: &str,
        item_id: &str,
        reviewer: &str,
        now: u64,
    ) -> Result<QueueEntry> {
        codec::check_name(queue)?;
        let key = entry_key(queue, item_id);
        let audit_keys = self.audit_keys(queue, now);
        let t = self.trees();
        let _writing = t.writing();
        let released = from_tx(
            (
                &t.queue_items,
                &t.queue_depth,
                &t.queue_leases,
                &t.queue_audit,
            )
                .transaction(|(items, depth, leases, audit)| {
                    let audit = Audit {
                        tree: audit,
                        keys: audit_keys.clone(),
                    };
                    let Some(v) = items.get(&key)? else {
                        return Err(abort(StoreError::NotClaimed {
                            item: item_id.to_owned(),
                        }));
                    };
                    let mut entry: QueueEntry = codec::decode("queue entry", &v).map_err(abort)?;
                    let lease = entry.held_by(reviewer, now).map_err(abort)?.clone();
                    leases.remove(lease_key(queue, item_id, &lease))?;
                    add_u64(depth, queue, 1)?;
                    entry.status = ItemStatus::Pending;
                    entry.lease = None;
                    items.insert(key.as_slice(), codec::encode(&entry).map_err(abort)?)?;
                    audit.record(
                        0,
                        &AuditEntry {
                            at: now,
                            queue: queue.to_owned(),
                            item_id: item_id.to_owned(),
                            actor: reviewer.to_owned(),
                            action: AuditAction::Released,
                            detail: None,
                        },
                    )?;
                    Ok(entry)
                }),
        );
        self.or_no_such_item(released, queue, item_id)
    }

    /// Records `review` on an item its reviewer holds, and on the item's event. With
    /// `required` reviews the item is done; before that it is pending again for others.
    pub fn review(&self, review: Review, required: u32) -> Result<QueueEntry> {
        let (queue, item_id) = (review.queue.as_str(), review.item_id.as_str());
        codec::check_name(queue)?;
        let key = entry_key(queue, item_id);
        let now = review.reviewed_at;
        let audit_keys = self.audit_keys(queue, now);
        let reviewer = review.reviewer.as_str();
        let t = self.trees();
        let trees = (
            &t.queue_items,
            &t.queue,
            &t.queue_depth,
            &t.queue_done,
            &t.queue_leases,
            &t.queue_audit,
            &t.events,
        );
        let _writing = t.writing();
        let reviewed = from_tx(trees.transaction(
            |(items, index, depth, done, leases, audit, events)| {
                let audit = Audit {
                    tree: audit,
                    keys: audit_keys.clone(),
                };
                let Some(v) = items.get(&key)? else {
                    return Err(abort(StoreError::NotClaimed {
                        item: item_id.to_owned(),
                    }));
                };
                let mut entry: QueueEntry = codec::decode("queue entry", &v).map_err(abort)?;
                let lease = entry.held_by(reviewer, now).map_err(abort)?.clone();
                leases.remove(lease_key(queue, item_id, &lease))?;
                entry.lease = None;
                entry.reviews.push(review.clone());
                let complete = entry.reviews.len() >= required.max(1) as usize;
                if complete {
                    entry.status = ItemStatus::Done;
                    entry.done_at = Some(now);
                    index.remove(item_key(&entry.item))?;
                    add_u64(done, queue, 1)?;
                } else {
                    entry.status = ItemStatus::Pending;
                    add_u64(depth, queue, 1)?;
                }
                items.insert(key.as_slice(), codec::encode(&entry).map_err(abort)?)?;

                let event_id = entry.item.event_id.as_str();
                let Some(v) = events.get(event_id)? else {
                    return Err(abort(StoreError::NotFound {
                        id: event_id.to_owned(),
                    }));
                };
                let (seq, mut stored) = codec::decode_event(&v).map_err(abort)?;
                stored.reviews.push(review.clone());
                let value =
                    codec::encode_event(seq, &stored.event, &stored.reviews).map_err(abort)?;
                events.insert(event_id, value)?;

                let base = AuditEntry {
                    at: now,
                    queue: queue.to_owned(),
                    item_id: item_id.to_owned(),
                    actor: reviewer.to_owned(),
                    action: AuditAction::Reviewed,
                    detail: Some(review.verdict.as_str().to_owned()),
                };
                audit.record(0, &base)?;
                if complete {
                    let detail = if entry.disagreement() {
                        "reviewers disagree"
                    } else {
                        "reviewers agree"
                    };
                    audit.record(
                        1,
                        &AuditEntry {
                            action: AuditAction::Completed,
                            detail: Some(detail.to_owned()),
                            ..base
                        },
                    )?;
                }
                Ok(entry)
            },
        ));
        let reviewed = self.or_no_such_item(reviewed, queue, item_id)?;
        // A review is a person's work, acknowledged to them: make it durable first.
        self.flush()?;
        Ok(reviewed)
    }

    /// Turns "you never claimed it" into "there is no such item" when that is the truth.
    fn or_no_such_item(
        &self,
        r: Result<QueueEntry>,
        queue: &str,
        item_id: &str,
    ) -> Result<QueueEntry> {
        match r {
            Err(StoreError::NotClaimed { item })
                if self.queue_entry(queue, item_id, 0)?.is_none() =>
            {
                Err(StoreError::NoSuchItem {
                    queue: queue.to_owned(),
                    item,
                })
            }
            other => other,
        }
    }

    /// One item and its state at `now`.
    pub fn queue_entry(&self, queue: &str, item_id: &str, now: u64) -> Result<Option<QueueEntry>> {
        codec::check_name(queue)?;
        if let Some(v) = self.trees().queue_items.get(entry_key(queue, item_id))? {
            return Ok(Some(
                codec::decode::<QueueEntry>("queue entry", &v)?.at(now),
            ));
        }
        Ok(self.unclaimed_item(queue, item_id)?.map(QueueEntry::new))
    }

    /// An open item that has no state yet (never claimed). Its key in `queue` is known
    /// but for the priority (its id is a ULID of its creation time, see
    /// [`item_key`]): one read per priority level in use, not a walk of the queue.
    fn unclaimed_item(&self, queue: &str, item_id: &str) -> Result<Option<QueueItem>> {
        let Ok(ulid) = ulid::Ulid::from_string(item_id) else {
            return Ok(None);
        };
        let t = self.trees();
        let prefix = codec::named_key(queue, &[]);
        let end = queue_end(queue);
        let mut from = prefix.clone();
        while let Some(first) = t.queue.range(from.as_slice()..end.as_slice()).keys().next() {
            let level = *first?
                .get(prefix.len())
                .ok_or_else(|| StoreError::corrupt("a queue key without a priority"))?;
            let mut key = prefix.clone();
            key.push(level);
            key.extend_from_slice(&ulid.timestamp_ms().to_be_bytes());
            key.extend_from_slice(item_id.as_bytes());
            if let Some(v) = t.queue.get(&key)? {
                return Ok(Some(codec::decode("queue item", &v)?));
            }
            let Some(next) = level.checked_add(1) else {
                break;
            };
            from = prefix.clone();
            from.push(next);
        }
        Ok(None)
    }

    /// Up to `limit` items of `queue` as seen at `now`, filtered by status: open items in
    /// claim order, then done items oldest first, starting after `cursor` (from the
    /// previous page, with the same status). Looks at no more than
    /// [`ITEMS_SCAN_BUDGET`] items, so a page of done items behind a long open queue (or
    /// the reverse) ends early with a cursor instead of reading the whole queue. An item
    /// whose status changes between pages can show twice, or not at all.
    pub fn queue_entries(
        &self,
        queue: &str,
        status: Option<ItemStatus>,
        cursor: Option<&str>,
        limit: usize,
        now: u64,
    ) -> Result<ItemsPage> {
        self.queue_entries_within(queue, status, cursor, limit, now, ITEMS_SCAN_BUDGET)
    }

    /// [`Store::queue_entries`], looking at no more than `budget` items.
    pub(crate) fn queue_entries_within(
        &self,
        queue: &str,
        status: Option<ItemStatus>,
        cursor: Option<&str>,
        limit: usize,
        now: u64,
        budget: usize,
    ) -> Result<ItemsPage> {
        codec::check_name(queue)?;
        let t = self.trees();
        let wanted = |s: ItemStatus| status.is_none_or(|w| w == s);
        let prefix = codec::named_key(queue, &[]);
        // The cursor: a phase (open items in `queue`, then done ones in `queue_items`) and
        // the rest of the last key looked at, after the `queue \0` prefix.
        let (mut phase, mut after) = match cursor {
            None => (ItemsPhase::Open, None),
            Some(c) => {
                let bytes = hex::decode(c).map_err(|_| StoreError::InvalidCursor)?;
                let phase = match bytes.first() {
                    Some(&b) if b == ItemsPhase::Open as u8 => ItemsPhase::Open,
                    Some(&b) if b == ItemsPhase::Done as u8 => ItemsPhase::Done,
                    _ => return Err(StoreError::InvalidCursor),
                };
                (phase, Some(bytes[1..].to_vec()))
            }
        };
        let mut page = ItemsPage::default();
        if limit == 0 {
            return Ok(page);
        }
        let mut scanned = 0usize;
        let resume = |tree: &sled::Tree, after: Option<Vec<u8>>| match after {
            Some(rest) => {
                let mut key = prefix.clone();
                key.extend_from_slice(&rest);
                tree.range::<Vec<u8>, _>((
                    std::ops::Bound::Excluded(key),
                    std::ops::Bound::Unbounded,
                ))
            }
            None => tree.range(prefix.clone()..),
        };
        if phase == ItemsPhase::Open && status != Some(ItemStatus::Done) {
            for entry in resume(&t.queue, after.take()) {
                let (key, v) = entry?;
                if !key.starts_with(&prefix) {
                    break;
                }
                let item: QueueItem = codec::decode("queue item", &v)?;
                let entry = self.load_entry(item)?.at(now);
                if wanted(entry.status) {
                    page.entries.push(entry);
                }
                scanned += 1;
                if page.entries.len() == limit || scanned >= budget {
                    page.next_cursor = Some(items_cursor(ItemsPhase::Open, &key[prefix.len()..]));
                    return Ok(page);
                }
            }
        }
        if phase == ItemsPhase::Open {
            phase = ItemsPhase::Done;
            after = None;
        }
        if phase == ItemsPhase::Done && wanted(ItemStatus::Done) {
            for entry in resume(&t.queue_items, after) {
                let (key, v) = entry?;
                if !key.starts_with(&prefix) {
                    break;
                }
                let entry: QueueEntry = codec::decode("queue entry", &v)?;
                if entry.status == ItemStatus::Done {
                    page.entries.push(entry);
                }
                scanned += 1;
                if page.entries.len() == limit || scanned >= budget {
                    page.next_cursor = Some(items_cursor(ItemsPhase::Done, &key[prefix.len()..]));
                    return Ok(page);
                }
            }
        }
        Ok(page)
    }

    /// Counts for every queue that has ever had an item, as seen at `now`.
    ///
    /// From the counters and the leases, not by reading every open item: the console
    /// asks after each item a reviewer is shown, and a queue can hold many thousands.
    /// Pending items are those counted in `queue_depth` plus those whose lease has
    /// passed; in review, those with a lease still running.
    pub fn queue_summaries(&self, now: u64) -> Result<Vec<QueueSummary>> {
        let t = self.trees();
        let mut out = Vec::new();
        for entry in t.queue_depth.iter() {
            let (name, depth) = entry?;
            let queue = codec::decode_str("queue name", &name)?;
            let prefix = codec::named_key(&queue, &[]);
            let running = codec::named_key(&queue, &(now.saturating_add(1)).to_be_bytes());
            let expired = t
                .queue_leases
                .range(prefix.as_slice()..running.as_slice())
                .count();
            let in_review = t
                .queue_leases
                .range(running.as_slice()..queue_end(&queue).as_slice())
                .count();
            out.push(QueueSummary {
                pending: codec::decode_u64("queue depth", &depth)? + expired as u64,
                in_review: in_review as u64,
                done: match t.queue_done.get(&queue)? {
                    Some(v) => codec::decode_u64("queue done", &v)?,
                    None => 0,
                },
                oldest_pending_at: self.oldest_pending_item(&queue, now)?,
                queue,
            });
        }
        Ok(out)
    }

    /// When the oldest pending item of `queue` was created. Open items sort by priority,
    /// then age: the first pending item of each priority is that priority's oldest, so
    /// this reads one item per priority used (plus those held by reviewers before it).
    fn oldest_pending_item(&self, queue: &str, now: u64) -> Result<Option<u64>> {
        let t = self.trees();
        let prefix = codec::named_key(queue, &[]);
        let end = queue_end(queue);
        let mut oldest: Option<u64> = None;
        let mut from = prefix.clone();
        while let Some(first) = t.queue.range(from.as_slice()..end.as_slice()).keys().next() {
            let first = first?;
            let level = *first
                .get(prefix.len())
                .ok_or_else(|| StoreError::corrupt("a queue key without a priority"))?;
            let mut level_end = prefix.clone();
            match level.checked_add(1) {
                Some(next) => level_end.push(next),
                None => level_end = end.clone(),
            }
            for v in t
                .queue
                .range(from.as_slice()..level_end.as_slice())
                .values()
            {
                let item: QueueItem = codec::decode("queue item", &v?)?;
                let at = item.created_at;
                if self.load_entry(item)?.at(now).status != ItemStatus::InReview {
                    oldest = Some(oldest.map_or(at, |o| o.min(at)));
                    break;
                }
            }
            if level_end == end {
                break;
            }
            from = level_end;
        }
        Ok(oldest)
    }

    /// Every queue's audit entries from `from_ms` (inclusive) to `to_ms` (exclusive),
    /// queue by queue, each oldest first; read lazily.
    pub fn queue_audit_between(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<impl Iterator<Item = Result<AuditEntry>> + use<>> {
        let t = self.trees();
        let mut ranges = Vec::new();
        for name in t.queue_depth.iter().keys() {
            let queue = codec::decode_str("queue name", &name?)?;
            let from = codec::named_key(&queue, &from_ms.to_be_bytes());
            let to = codec::named_key(&queue, &to_ms.to_be_bytes());
            ranges.push(t.queue_audit.range(from..to).values());
        }
        Ok(ranges
            .into_iter()
            .flatten()
            .map(|v| codec::decode("audit entry", &v?)))
    }
}

#[cfg(test)]
mod tests;
