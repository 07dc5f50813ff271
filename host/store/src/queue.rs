//! Queue items: events a router sent to a person (label or review), stored so the queue
//! feature can build on them. Items are written only by `Store::complete`; this module
//! owns their key order (priority high first, then oldest first) and the reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Store;
use crate::codec;
use crate::error::Result;

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

/// `queue \0 (255 - priority) created_at item_id`: a prefix scan of `queue \0` yields the
/// queue's items highest priority first, then oldest first.
pub(crate) fn item_key(item: &QueueItem) -> Vec<u8> {
    let mut rest = Vec::with_capacity(1 + 8 + item.id.len());
    rest.push(255 - item.priority);
    rest.extend_from_slice(&item.created_at.to_be_bytes());
    rest.extend_from_slice(item.id.as_bytes());
    codec::named_key(&item.queue, &rest)
}

impl Store {
    /// Up to `limit` items of `queue`, highest priority first, then oldest first.
    pub fn queue_items(&self, queue: &str, limit: usize) -> Result<Vec<QueueItem>> {
        codec::check_name(queue)?;
        self.trees()
            .queue
            .scan_prefix(codec::named_key(queue, &[]))
            .values()
            .take(limit)
            .map(|v| codec::decode("queue item", &v?))
            .collect()
    }

    /// How many items each queue holds (queues never used are absent).
    pub fn queue_depths(&self) -> Result<BTreeMap<String, u64>> {
        self.trees()
            .queue_depth
            .iter()
            .map(|entry| {
                let (k, v) = entry?;
                Ok((
                    codec::decode_str("queue name", &k)?,
                    codec::decode_u64("queue depth", &v)?,
                ))
            })
            .collect()
    }
}
