//! Figures computed from a span of stored history, kept on disk so that a restart does
//! not compute them again: the dashboard's hours, which otherwise cost a read of every
//! event in its window on the first view after a start (seconds for a few hundred
//! thousand events). The store does not know what they mean; it keeps each with the
//! history version it was computed at, and hands back only those no erasure or audit
//! prune has touched since (see the `history` module).
//!
//! `rollups` tree: `kind` `\0` `start` (`u64`) → `end` (`u64`) ++ `version` (`u64`) ++ the
//! caller's bytes. A rollup that a later change touched stays on disk until it is
//! written again or pruned, and is never handed back.

use std::ops::Bound;

use crate::Store;
use crate::codec::{self, SEP};
use crate::error::{Result, StoreError};

/// One figure kept for the span `start..end`, as [`Store::rollups`] hands it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollup {
    pub start: u64,
    pub end: u64,
    pub bytes: Vec<u8>,
}

impl Store {
    /// The rollups of `kind` whose span starts in `from..to` and that no change since
    /// they were computed has touched, in order of start.
    pub fn rollups(&self, kind: &str, from: u64, to: u64) -> Result<Vec<Rollup>> {
        codec::check_name(kind)?;
        let t = self.trees();
        let lower = codec::named_key(kind, &from.to_be_bytes());
        let upper = codec::named_key(kind, &to.to_be_bytes());
        let history = self.inner.counters.history.lock();
        let mut kept = Vec::new();
        for entry in t
            .rollups
            .range::<Vec<u8>, _>((Bound::Included(lower), Bound::Excluded(upper)))
        {
            let (key, value) = entry?;
            let start = key
                .get(kind.len() + 1..)
                .ok_or_else(|| StoreError::corrupt("a rollup key without a start"))?;
            let start = codec::decode_u64("rollup start", start)?;
            let (end, version, bytes) = decode(&value)?;
            if !history.touched_since(version, start, end) {
                kept.push(Rollup {
                    start,
                    end,
                    bytes: bytes.to_vec(),
                });
            }
        }
        Ok(kept)
    }

    /// Keeps `bytes`, figures of `kind` over `start..end` computed from what the store
    /// held at history `version` ([`Store::history_since`], read before the store was).
    /// Returns `false`, keeping nothing, when a change since `version` touched the span:
    /// the figures may count something that is gone. Not flushed: a rollup lost in a
    /// crash is computed again.
    pub fn put_rollup(
        &self,
        kind: &str,
        start: u64,
        end: u64,
        version: u64,
        bytes: &[u8],
    ) -> Result<bool> {
        codec::check_name(kind)?;
        let t = self.trees();
        let key = codec::named_key(kind, &start.to_be_bytes());
        let mut value = Vec::with_capacity(16 + bytes.len());
        value.extend_from_slice(&end.to_be_bytes());
        value.extend_from_slice(&version.to_be_bytes());
        value.extend_from_slice(bytes);
        // Checked and written under the history lock (before the write gate, as
        // everywhere), so no change can land between the two.
        let history = self.inner.counters.history.lock();
        if history.touched_since(version, start, end) {
            return Ok(false);
        }
        let _writing = t.writing();
        t.rollups.insert(key, value)?;
        Ok(true)
    }

    /// Removes the rollups of every kind that start before `before`: retention, for
    /// spans whose events are gone anyway.
    pub fn prune_rollups(&self, before: u64) -> Result<u64> {
        let t = self.trees();
        let mut removed = 0;
        let mut batch = sled::Batch::default();
        for key in t.rollups.iter().keys() {
            let key = key?;
            let start = key
                .iter()
                .position(|&b| b == SEP)
                .and_then(|sep| key.get(sep + 1..))
                .ok_or_else(|| StoreError::corrupt("a rollup key without a start"))?;
            if codec::decode_u64("rollup start", start)? < before {
                batch.remove(key);
                removed += 1;
            }
        }
        if removed > 0 {
            let _writing = t.writing();
            t.rollups.apply_batch(batch)?;
        }
        Ok(removed)
    }
}

fn decode(value: &[u8]) -> Result<(u64, u64, &[u8])> {
    match (value.get(..8), value.get(8..16), value.get(16..)) {
        (Some(end), Some(version), Some(bytes)) => Ok((
            codec::decode_u64("rollup end", end)?,
            codec::decode_u64("rollup version", version)?,
            bytes,
        )),
        _ => Err(StoreError::corrupt("a rollup shorter than its header")),
    }
}
