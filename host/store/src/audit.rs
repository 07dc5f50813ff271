//! Reading a queue's audit trail a page at a time, and pruning it by age.
//!
//! The trail is kept by `queue \0 at ULID` (see `Store::audit_keys`), so a time range of
//! one queue is one key range: pages start where the last one stopped, either way, and
//! pruning removes a prefix of each queue's range. An erasure leaves the trail alone (it
//! holds no event content, and says who erased what); `prune_audit` is how it shrinks.

use std::ops::Bound;

use crate::Store;
use crate::codec::{self, SEP};
use crate::error::{Result, StoreError};
use crate::queue::AuditEntry;

/// Most audit entries one page looks at (as [`crate::LIST_SCAN_BUDGET`] for events): a
/// page filtered to one item of a long trail then ends early, with a cursor, instead of
/// reading the whole trail in one request.
pub const AUDIT_SCAN_BUDGET: usize = 20_000;

/// Entries removed per write when pruning: keeps each write (and a backup waiting for
/// it) short.
const PRUNE_CHUNK: usize = 1_000;

/// Which entries of a queue's audit trail [`Store::audit_page`] lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this item's entries.
    pub item_id: Option<String>,
    /// Entries at or after this time (ms since the epoch).
    pub from_ms: Option<u64>,
    /// Entries before this time (exclusive).
    pub to_ms: Option<u64>,
    /// Newest first, for "what happened lately"; oldest first otherwise.
    pub newest_first: bool,
}

/// One page of a queue's audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass back to [`Store::audit_page`] (with the same filter) for the next page. Set
    /// whenever there may be more: the page is full, or [`AUDIT_SCAN_BUDGET`] entries were
    /// looked at first (the page then holds fewer than asked, maybe none). `None` only
    /// once the trail is over.
    pub next_cursor: Option<String>,
}

/// The length of an audit key after its `queue \0` prefix: `at` (8) and a ULID (16).
const SUFFIX: usize = 24;

impl Store {
    /// Up to `limit` of `queue`'s audit entries that match `filter`, in its order,
    /// starting after `cursor` (from the previous page). Pages stay consistent while
    /// entries are added: new ones sort after every existing one.
    pub fn audit_page(
        &self,
        queue: &str,
        filter: &AuditFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<AuditPage> {
        self.audit_page_within(queue, filter, cursor, limit, AUDIT_SCAN_BUDGET)
    }

    /// [`Store::audit_page`], looking at no more than `budget` entries.
    pub(crate) fn audit_page_within(
        &self,
        queue: &str,
        filter: &AuditFilter,
        cursor: Option<&str>,
        limit: usize,
        budget: usize,
    ) -> Result<AuditPage> {
        codec::check_name(queue)?;
        let at = |ms: u64| codec::named_key(queue, &ms.to_be_bytes());
        let mut lower = filter
            .from_ms
            .map_or_else(|| codec::named_key(queue, &[]), at);
        let mut lower_inclusive = true;
        let mut upper = match filter.to_ms {
            Some(ms) => at(ms),
            // Every key of the queue sorts below `queue \x01`.
            None => {
                let mut end = queue.as_bytes().to_vec();
                end.push(SEP + 1);
                end
            }
        };
        if let Some(c) = cursor {
            let rest = hex::decode(c)
                .ok()
                .filter(|r| r.len() == SUFFIX)
                .ok_or(StoreError::InvalidCursor)?;
            let key = codec::named_key(queue, &rest);
            if filter.newest_first {
                upper = upper.min(key);
            } else if key >= lower {
                lower = key;
                lower_inclusive = false;
            }
        }
        let mut page = AuditPage::default();
        // An empty (or inverted) range: sled would refuse it.
        if limit == 0 || lower >= upper {
            return Ok(page);
        }
        let start = if lower_inclusive {
            Bound::Included(lower)
        } else {
            Bound::Excluded(lower)
        };
        let range = self
            .trees()
            .queue_audit
            .range::<Vec<u8>, _>((start, Bound::Excluded(upper)));
        let entries: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            if filter.newest_first {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
        let prefix = queue.len() + 1;
        for (scanned, entry) in entries.enumerate() {
            let (key, value) = entry?;
            let entry: AuditEntry = codec::decode("audit entry", &value)?;
            if filter
                .item_id
                .as_deref()
                .is_none_or(|item| item == entry.item_id)
            {
                page.entries.push(entry);
            }
            if page.entries.len() == limit || scanned + 1 >= budget {
                page.next_cursor = Some(hex::encode(key.get(prefix..).unwrap_or_default()));
                return Ok(page);
            }
        }
        Ok(page)
    }

    /// Removes every queue's audit entries from before `before_ms` (ms since the epoch)
    /// and returns how many went: retention for the trail, which erasures leave alone.
    /// A chunk at a time, each its own write, not flushed: a prune lost in a crash is
    /// done again by the next one.
    pub fn prune_audit(&self, before_ms: u64) -> Result<u64> {
        let span = (0, before_ms.saturating_sub(1));
        if self.oldest_audit_at()?.is_none_or(|at| at >= before_ms) {
            return Ok(0);
        }
        // One change for the whole prune, written before it (so that figures kept on
        // disk from before it cannot outlive a crash half way) and again after it (for
        // figures read while it ran), even if it failed half way.
        self.record_history(span.0, span.1)?;
        let mut removed = 0u64;
        let pruned = self.prune_audit_into(before_ms, &mut removed);
        self.record_history(span.0, span.1)?;
        pruned.map(|()| removed)
    }

    /// The time of the oldest audit entry of any queue.
    fn oldest_audit_at(&self) -> Result<Option<u64>> {
        let mut oldest: Option<u64> = None;
        self.each_queue_audit(|first, sep| {
            let at = first
                .get(sep + 1..sep + 9)
                .ok_or_else(|| StoreError::corrupt("an audit key without a time"))?;
            let at = codec::decode_u64("audit time", at)?;
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
            Ok(())
        })?;
        Ok(oldest)
    }

    /// Calls `f` with the first audit key of each queue (its oldest entry) and where the
    /// queue's name ends in it.
    fn each_queue_audit(&self, mut f: impl FnMut(&[u8], usize) -> Result<()>) -> Result<()> {
        let t = self.trees();
        let mut next_queue: Vec<u8> = Vec::new();
        while let Some(first) = t.queue_audit.range(next_queue.as_slice()..).keys().next() {
            let first = first?;
            let sep = first
                .iter()
                .position(|&b| b == SEP)
                .ok_or_else(|| StoreError::corrupt("an audit key without a queue name"))?;
            f(&first, sep)?;
            next_queue = first[..sep].to_vec();
            next_queue.push(SEP + 1);
        }
        Ok(())
    }

    /// [`Store::prune_audit`]'s work, counting into `removed` as it goes.
    fn prune_audit_into(&self, before_ms: u64, removed: &mut u64) -> Result<()> {
        let t = self.trees();
        // Queue by queue: from its first key to `before_ms`.
        self.each_queue_audit(|first, sep| {
            let mut end = first[..=sep].to_vec();
            end.extend_from_slice(&before_ms.to_be_bytes());
            loop {
                let keys = t
                    .queue_audit
                    .range(&first[..=sep]..end.as_slice())
                    .keys()
                    .take(PRUNE_CHUNK)
                    .collect::<sled::Result<Vec<_>>>()?;
                if keys.is_empty() {
                    break;
                }
                let mut batch = sled::Batch::default();
                for key in &keys {
                    batch.remove(key);
                }
                {
                    let _writing = t.writing();
                    t.queue_audit.apply_batch(batch)?;
                }
                *removed += keys.len() as u64;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::StoreOptions;
    use crate::queue::AuditAction;

    fn temp_store() -> (TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        (dir, store)
    }

    /// Writes `n` entries for `queue`, one per millisecond from `at`, items `i0`, `i1`, ...
    fn trail(store: &Store, queue: &str, at: u64, n: u64) {
        let t = store.trees();
        for i in 0..n {
            let entry = AuditEntry {
                at: at + i,
                queue: queue.into(),
                item_id: format!("i{}", i % 3),
                actor: "ana".into(),
                action: AuditAction::Claimed,
                detail: None,
            };
            let [key, _] = store.audit_keys(queue, at + i);
            t.queue_audit
                .insert(key, codec::encode(&entry).unwrap())
                .unwrap();
        }
    }

    fn times(page: &AuditPage) -> Vec<u64> {
        page.entries.iter().map(|e| e.at).collect()
    }

    #[test]
    fn pages_follow_the_cursor_both_ways_within_the_time_range() {
        let (_dir, store) = temp_store();
        trail(&store, "q", 1_000, 10);
        trail(&store, "q2", 1_000, 5);
        trail(&store, "p", 1_000, 5);
        let filter = AuditFilter {
            from_ms: Some(1_002),
            to_ms: Some(1_008),
            ..AuditFilter::default()
        };
        let first = store.audit_page("q", &filter, None, 4).unwrap();
        assert_eq!(times(&first), [1_002, 1_003, 1_004, 1_005]);
        let cursor = first.next_cursor.as_deref();
        let second = store.audit_page("q", &filter, cursor, 4).unwrap();
        assert_eq!(times(&second), [1_006, 1_007]);
        assert_eq!(second.next_cursor, None);

        let newest = AuditFilter {
            newest_first: true,
            ..filter.clone()
        };
        let first = store.audit_page("q", &newest, None, 4).unwrap();
        assert_eq!(times(&first), [1_007, 1_006, 1_005, 1_004]);
        let cursor = first.next_cursor.as_deref();
        let second = store.audit_page("q", &newest, cursor, 4).unwrap();
        assert_eq!(times(&second), [1_003, 1_002]);
        assert_eq!(second.next_cursor, None);

        // Unbounded: the whole queue, and only it (not `q2`, whose name extends it).
        let all = store
            .audit_page("q", &AuditFilter::default(), None, 100)
            .unwrap();
        assert_eq!(all.entries.len(), 10);
        assert!(all.entries.iter().all(|e| e.queue == "q"));
        assert_eq!(all.next_cursor, None);
        // An inverted range is empty, not an error.
        let inverted = AuditFilter {
            from_ms: Some(1_008),
            to_ms: Some(1_002),
            ..AuditFilter::default()
        };
        assert_eq!(
            store.audit_page("q", &inverted, None, 10).unwrap(),
            AuditPage::default()
        );
    }

    #[test]
    fn an_item_filter_stops_at_the_scan_budget_with_a_cursor() {
        let (_dir, store) = temp_store();
        trail(&store, "q", 1_000, 9);
        let filter = AuditFilter {
            item_id: Some("i1".into()),
            ..AuditFilter::default()
        };
        let first = store.audit_page_within("q", &filter, None, 10, 4).unwrap();
        assert_eq!(times(&first), [1_001]);
        assert!(first.next_cursor.is_some());
        let second = store
            .audit_page_within("q", &filter, first.next_cursor.as_deref(), 10, 4)
            .unwrap();
        assert_eq!(times(&second), [1_004, 1_007]);
        let third = store
            .audit_page_within("q", &filter, second.next_cursor.as_deref(), 10, 4)
            .unwrap();
        assert_eq!(times(&third), [] as [u64; 0]);
        assert_eq!(third.next_cursor, None);
    }

    #[test]
    fn a_cursor_from_elsewhere_is_refused() {
        let (_dir, store) = temp_store();
        for bad in ["zz", "00", &"0".repeat(2 * SUFFIX + 2)] {
            let e = store
                .audit_page("q", &AuditFilter::default(), Some(bad), 10)
                .unwrap_err();
            assert!(matches!(e, StoreError::InvalidCursor), "{bad}: {e}");
        }
    }

    #[test]
    fn pruning_removes_only_older_entries_of_every_queue() {
        let (_dir, store) = temp_store();
        trail(&store, "q", 1_000, 2_500);
        trail(&store, "q2", 1_000, 10);
        trail(&store, "r", 5_000, 10);
        assert_eq!(store.prune_audit(3_000).unwrap(), 2_000 + 10);
        let left = |q| {
            store
                .audit_page(q, &AuditFilter::default(), None, 500)
                .unwrap()
                .entries
        };
        let q = left("q");
        assert_eq!(q.len(), 500);
        assert_eq!(q[0].at, 3_000);
        assert!(left("q2").is_empty());
        assert_eq!(left("r").len(), 10);
        assert_eq!(store.prune_audit(3_000).unwrap(), 0);
    }
}
