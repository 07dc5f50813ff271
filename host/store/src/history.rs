//! What was taken out of stored history, kept on disk: the spans of time where an
//! erasure or an audit prune removed something. Past data otherwise only grows, and only
//! at its recent end, so figures computed from a span of the past (the dashboard's hours)
//! stay right until a change here overlaps that span: see [`Store::history_since`] and
//! the `rollup` module, which keeps such figures across restarts.
//!
//! The `history` tree holds the same ring as memory: `version` (`u64`) → `from` ++ `to`
//! (`u64` each, inclusive). Past [`History::KEPT`] changes the two oldest become one
//! span covering both, with the later version, in the same write as the new change:
//! a reader then drops more than it must, never less. An erasure writes its change in
//! its own transaction, so a crash never keeps the erasure and loses the change.

use std::collections::VecDeque;

use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use crate::Store;
use crate::codec;
use crate::error::{Result, StoreError};

/// Recent changes to what is stored about the past, for caches of figures about it.
#[derive(Default)]
pub(crate) struct History {
    /// Changes recorded over the store's life.
    version: u64,
    /// The latest changes, oldest first: the version each made, and the span of times
    /// (event `received_at` or audit `at`, inclusive) where something went.
    spans: VecDeque<(u64, u64, u64)>,
}

/// One change, planned against the ring as it is, to write (with the change itself or
/// right after it) and then [`History::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    version: u64,
    from: u64,
    to: u64,
    /// When the ring is full: the oldest entry's version, which goes, and the second
    /// oldest as it becomes, covering both.
    merge: Option<(u64, (u64, u64, u64))>,
}

/// What changed in stored history since a version: see [`Store::history_since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryChanges {
    /// The spans of times (inclusive) where something went.
    Spans(Vec<(u64, u64)>),
    /// The version is not one this store gave out: anything may have changed.
    Everything,
}

impl History {
    /// Changes kept one by one.
    pub(crate) const KEPT: usize = 1024;

    /// The ring as the `history` tree holds it.
    pub(crate) fn load(tree: &sled::Tree) -> Result<History> {
        let mut history = History::default();
        for entry in tree.iter() {
            let (key, value) = entry?;
            let version = codec::decode_u64("history version", &key)?;
            let (from, to) = decode_span(&value)?;
            history.spans.push_back((version, from, to));
            history.version = version;
        }
        Ok(history)
    }

    /// The change that records that things stamped `from..=to` went.
    pub(crate) fn plan(&self, from: u64, to: u64) -> Change {
        let merge = match (
            self.spans.len() >= Self::KEPT,
            self.spans.front(),
            self.spans.get(1),
        ) {
            (true, Some(&(a_version, a_from, a_to)), Some(&(b_version, b_from, b_to))) => {
                Some((a_version, (b_version, a_from.min(b_from), a_to.max(b_to))))
            }
            _ => None,
        };
        Change {
            version: self.version + 1,
            from,
            to,
            merge,
        }
    }

    /// Writes `change` in a transaction over the `history` tree.
    pub(crate) fn write_tx(
        change: &Change,
        tree: &TransactionalTree,
    ) -> std::result::Result<(), ConflictableTransactionError<StoreError>> {
        if let Some((gone, (version, from, to))) = change.merge {
            tree.remove(&gone.to_be_bytes())?;
            tree.insert(&version.to_be_bytes(), &encode_span(from, to)[..])?;
        }
        tree.insert(
            &change.version.to_be_bytes(),
            &encode_span(change.from, change.to)[..],
        )?;
        Ok(())
    }

    /// Writes `change` on its own (one atomic batch).
    pub(crate) fn write(change: &Change, tree: &sled::Tree) -> Result<()> {
        let mut batch = sled::Batch::default();
        if let Some((gone, (version, from, to))) = change.merge {
            batch.remove(&gone.to_be_bytes());
            batch.insert(&version.to_be_bytes(), &encode_span(from, to)[..]);
        }
        batch.insert(
            &change.version.to_be_bytes(),
            &encode_span(change.from, change.to)[..],
        );
        tree.apply_batch(batch)?;
        Ok(())
    }

    /// Takes a written `change` into the ring. Call after the change it records is
    /// written, under the same lock as `plan`.
    pub(crate) fn apply(&mut self, change: Change) {
        if let Some((_, merged)) = change.merge {
            self.spans.pop_front();
            self.spans.pop_front();
            self.spans.push_front(merged);
        }
        self.spans
            .push_back((change.version, change.from, change.to));
        self.version = change.version;
    }

    /// See [`Store::history_since`].
    pub(crate) fn since(&self, version: u64) -> (u64, HistoryChanges) {
        let changes = if version <= self.version {
            HistoryChanges::Spans(
                self.spans
                    .iter()
                    .filter(|(v, _, _)| *v > version)
                    .map(|&(_, from, to)| (from, to))
                    .collect(),
            )
        } else {
            HistoryChanges::Everything
        };
        (self.version, changes)
    }

    /// Whether a change after `version` may have taken something stamped in
    /// `start..end`. Conservative: changes merged into one span count over the whole
    /// span, and a version this store never gave out counts as yes.
    pub(crate) fn touched_since(&self, version: u64, start: u64, end: u64) -> bool {
        if version > self.version {
            return true;
        }
        if version == self.version {
            return false;
        }
        // The oldest entry kept may be a merge of versions up to its own: a version
        // below it may have been merged away, and then the merged span (which covers
        // it) is what counts, so the filter below still sees it.
        self.spans
            .iter()
            .filter(|(v, _, _)| *v > version)
            .any(|&(_, from, to)| from < end && to >= start)
    }
}

fn encode_span(from: u64, to: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&from.to_be_bytes());
    bytes[8..].copy_from_slice(&to.to_be_bytes());
    bytes
}

fn decode_span(bytes: &[u8]) -> Result<(u64, u64)> {
    match (bytes.get(..8), bytes.get(8..)) {
        (Some(from), Some(to)) if to.len() == 8 => Ok((
            codec::decode_u64("history span", from)?,
            codec::decode_u64("history span", to)?,
        )),
        _ => Err(StoreError::corrupt("a history span is not 16 bytes")),
    }
}

impl Store {
    /// What was taken out of stored history (erasures, audit entries pruned) since
    /// `version`, and the version now. Past data otherwise only grows, and only at its
    /// recent end, so a cache of figures about the past (the dashboard's) drops just the
    /// times listed here. Each change is recorded after it is written: a cache that reads
    /// the version before it reads the store sees every change it might have missed the
    /// next time it asks. Versions survive restarts (the ring is on disk), so figures
    /// kept on disk with their version ([`Store::put_rollup`]) stay checkable.
    pub fn history_since(&self, version: u64) -> (u64, HistoryChanges) {
        self.inner.counters.history.lock().since(version)
    }

    /// Records, durably and then in memory, that things stamped `from..=to` went (or
    /// are about to: see `prune_audit`). For changes not written in a transaction of
    /// their own; an erasure writes its change inside its transaction.
    pub(crate) fn record_history(&self, from: u64, to: u64) -> Result<()> {
        let t = self.trees();
        let mut history = self.inner.counters.history.lock();
        let change = history.plan(from, to);
        {
            let _writing = t.writing();
            History::write(&change, &t.history)?;
        }
        history.apply(change);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_ring_merges_its_oldest_two_on_disk_as_in_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let tree = db.open_tree("history").expect("tree");
        let mut history = History::default();
        for i in 0..(History::KEPT as u64 + 3) {
            let change = history.plan(i * 10, i * 10 + 5);
            History::write(&change, &tree).expect("write");
            history.apply(change);
        }
        let loaded = History::load(&tree).expect("load");
        assert_eq!(loaded.spans, history.spans);
        assert_eq!(loaded.version, history.version);
        assert_eq!(history.spans.len(), History::KEPT);
        // The first four changes are now one span, under the fourth's version.
        assert_eq!(history.spans.front(), Some(&(4, 0, 35)));
        assert!(
            history.touched_since(1, 12, 13),
            "merged away, still covered"
        );
        assert!(!history.touched_since(4, 12, 13), "nothing after 4 there");
        assert!(history.touched_since(history.version + 1, 0, 1));
        assert!(!history.touched_since(history.version, 0, u64::MAX));
    }
}
