//! Plugins' private persistent key-value data, with a byte quota per plugin. Usage (the
//! sum of key + value bytes) is a counter updated in the same transaction as the data, so
//! it can never drift; a write over quota writes nothing. Operators read and clear a
//! plugin's data here too (`kv_keys`, `kv_clear`): state shared by every version of a
//! plugin must be inspectable and resettable without a plugin's help.

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use crate::Store;
use crate::codec;
use crate::error::{KvError, Result, StoreError, from_tx};

/// Keys longer than this are refused: the store is for small plugin state.
pub const MAX_KV_KEY_BYTES: usize = 1024;

fn full_key(plugin: &str, key: &str) -> Result<Vec<u8>, KvError> {
    if codec::check_name(plugin).is_err() || key.is_empty() || key.len() > MAX_KV_KEY_BYTES {
        return Err(KvError::InvalidKey);
    }
    Ok(codec::named_key(plugin, key.as_bytes()))
}

/// One key of a plugin's data, as an operator lists it (values are read one at a time).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KvKey {
    pub key: String,
    /// The value's length in bytes.
    pub value_bytes: u64,
}

/// A page of a plugin's keys in key order; `next` is the last key when more may follow,
/// to pass back as `after`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvPage {
    pub keys: Vec<KvKey>,
    pub next: Option<String>,
}

/// What `kv_clear` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KvCleared {
    pub keys: u64,
    /// Keys plus values, as counted against the quota.
    pub bytes: u64,
}

/// Keys removed per transaction by `kv_clear`, so a plugin writing meanwhile waits for
/// one small transaction at a time, never for the whole clear.
const CLEAR_CHUNK: usize = 512;

fn cost(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

fn read_usage(v: Option<sled::IVec>) -> Result<u64> {
    v.map_or(Ok(0), |v| codec::decode_u64("kv usage", &v))
}

impl Store {
    /// The plugin's value for `key`, if set.
    pub fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let k = full_key(plugin, key)?;
        Ok(self.trees().kv.get(k)?.map(|v| v.to_vec()))
    }

    /// Sets `key` for the plugin unless that would take its usage past `quota_bytes`.
    /// A write that does not grow usage (e.g. a shorter value) is always allowed, so a
    /// plugin over a lowered quota can still shrink.
    pub fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: &[u8],
        quota_bytes: u64,
    ) -> Result<(), KvError> {
        let k = full_key(plugin, key)?;
        let t = self.trees();
        let _writing = t.writing();
        from_tx((&t.kv, &t.kv_usage).transaction(|(kv, usage)| {
            let abort = |e: KvError| ConflictableTransactionError::Abort(e);
            let used = read_usage(usage.get(plugin)?).map_err(|e| abort(e.into()))?;
            let old = kv.get(&k)?.map_or(0, |v| cost(key, &v));
            let new = used.saturating_sub(old) + cost(key, value);
            if new > quota_bytes && new > used {
                return Err(abort(KvError::QuotaExceeded { quota: quota_bytes }));
            }
            kv.insert(k.as_slice(), value)?;
            usage.insert(plugin, &new.to_be_bytes())?;
            Ok(())
        }))
    }

    /// Removes `key` for the plugin (a missing key is not an error).
    pub fn kv_delete(&self, plugin: &str, key: &str) -> Result<(), KvError> {
        let k = full_key(plugin, key)?;
        let t = self.trees();
        let _writing = t.writing();
        from_tx((&t.kv, &t.kv_usage).transaction(|(kv, usage)| {
            let Some(old) = kv.remove(k.as_slice())? else {
                return Ok(());
            };
            let used = read_usage(usage.get(plugin)?)
                .map_err(|e| ConflictableTransactionError::Abort(KvError::Store(e)))?;
            usage.insert(plugin, &used.saturating_sub(cost(key, &old)).to_be_bytes())?;
            Ok(())
        }))
    }

    /// Bytes (keys + values) the plugin currently uses.
    pub fn kv_usage(&self, plugin: &str) -> Result<u64> {
        codec::check_name(plugin)?;
        read_usage(self.trees().kv_usage.get(plugin)?)
    }

    /// Up to `limit` of the plugin's keys that start with `prefix`, in key order, from
    /// just after `after` (exclusive) when given.
    pub fn kv_keys(
        &self,
        plugin: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KvPage> {
        let mut page = KvPage::default();
        let mut more = false;
        self.each_kv_entry(plugin, prefix, after, |key, value| {
            if page.keys.len() == limit {
                more = true;
                return false;
            }
            page.keys.push(KvKey {
                key: key.to_owned(),
                value_bytes: value.len() as u64,
            });
            true
        })?;
        if more {
            page.next = page.keys.last().map(|k| k.key.clone());
        }
        Ok(page)
    }

    /// Removes every key of the plugin that starts with `prefix` (all of them for `""`),
    /// keeping its usage counter exact, a chunk of keys per transaction. Keys a plugin
    /// writes during the clear may survive it, as they would a moment later.
    pub fn kv_clear(&self, plugin: &str, prefix: &str) -> Result<KvCleared> {
        let mut cleared = KvCleared::default();
        let mut after: Option<String> = None;
        loop {
            let mut chunk = Vec::with_capacity(CLEAR_CHUNK);
            self.each_kv_entry(plugin, prefix, after.as_deref(), |key, _| {
                chunk.push(key.to_owned());
                chunk.len() < CLEAR_CHUNK
            })?;
            let Some(last) = chunk.last().cloned() else {
                return Ok(cleared);
            };
            let t = self.trees();
            let _writing = t.writing();
            let (keys, bytes) = from_tx((&t.kv, &t.kv_usage).transaction(|(kv, usage)| {
                let (mut keys, mut bytes) = (0u64, 0u64);
                for key in &chunk {
                    if let Some(old) = kv.remove(codec::named_key(plugin, key.as_bytes()))? {
                        keys += 1;
                        bytes += cost(key, &old);
                    }
                }
                let used = read_usage(usage.get(plugin)?)
                    .map_err(ConflictableTransactionError::Abort)?
                    .saturating_sub(bytes);
                // An emptied name leaves nothing behind (see `kv_names`).
                if used == 0 {
                    usage.remove(plugin)?;
                } else {
                    usage.insert(plugin, &used.to_be_bytes())?;
                }
                Ok((keys, bytes))
            }))?;
            cleared.keys += keys;
            cleared.bytes += bytes;
            after = Some(last);
        }
    }

    /// Replaces everything under the name `to` with a copy of the data under `from`, a
    /// chunk of keys per transaction: a copy a candidate can run against (shadow mode)
    /// without writing the live data. Quotas are not checked: the copy is as big as the
    /// data the plugin was allowed to write.
    pub fn kv_copy(&self, from: &str, to: &str) -> Result<KvCleared> {
        codec::check_name(to)?;
        self.kv_clear(to, "")?;
        let mut copied = KvCleared::default();
        let mut after: Option<String> = None;
        loop {
            let mut chunk = Vec::with_capacity(CLEAR_CHUNK);
            self.each_kv_entry(from, "", after.as_deref(), |key, value| {
                chunk.push((key.to_owned(), value.to_vec()));
                chunk.len() < CLEAR_CHUNK
            })?;
            let Some(last) = chunk.last().map(|(k, _)| k.clone()) else {
                return Ok(copied);
            };
            let t = self.trees();
            let _writing = t.writing();
            let bytes = from_tx((&t.kv, &t.kv_usage).transaction(|(kv, usage)| {
                let mut used =
                    read_usage(usage.get(to)?).map_err(ConflictableTransactionError::Abort)?;
                let mut bytes = 0;
                for (key, value) in &chunk {
                    let old = kv.insert(codec::named_key(to, key.as_bytes()), value.as_slice())?;
                    used = used.saturating_sub(old.map_or(0, |old| cost(key, &old)));
                    used += cost(key, value);
                    bytes += cost(key, value);
                }
                usage.insert(to, &used.to_be_bytes())?;
                Ok(bytes)
            }))?;
            copied.keys += chunk.len() as u64;
            copied.bytes += bytes;
            after = Some(last);
        }
    }

    /// Every name that holds or held kv data (plugins, and the copies their shadow
    /// candidates run against), so stale copies can be found and cleared.
    pub fn kv_names(&self) -> Result<Vec<String>> {
        self.trees()
            .kv_usage
            .iter()
            .keys()
            .map(|k| codec::decode_str("kv name", &k?))
            .collect()
    }

    /// Calls `f` with each key of the plugin starting with `prefix` (after `after`, when
    /// given) and its value, in key order, until `f` returns false.
    fn each_kv_entry(
        &self,
        plugin: &str,
        prefix: &str,
        after: Option<&str>,
        mut f: impl FnMut(&str, &[u8]) -> bool,
    ) -> Result<()> {
        codec::check_name(plugin)?;
        let base = codec::named_key(plugin, &[]).len();
        let from = match after {
            // Just past `after`: the smallest key greater than it.
            Some(a) if a >= prefix => {
                let mut k = codec::named_key(plugin, a.as_bytes());
                k.push(0);
                k
            }
            _ => codec::named_key(plugin, prefix.as_bytes()),
        };
        let within = codec::named_key(plugin, prefix.as_bytes());
        for entry in self.trees().kv.range(from..) {
            let (k, v) = entry?;
            if !k.starts_with(&within) {
                break;
            }
            let key = codec::decode_str("kv key", k.get(base..).unwrap_or_default())?;
            if !f(&key, &v) {
                break;
            }
        }
        Ok(())
    }

    /// Every key and value of the plugin, in key order: a copy for replay to run
    /// candidates against without touching the live data.
    pub fn kv_snapshot(&self, plugin: &str) -> Result<Vec<(String, Vec<u8>)>> {
        codec::check_name(plugin)?;
        let prefix = codec::named_key(plugin, &[]);
        self.trees()
            .kv
            .scan_prefix(&prefix)
            .map(|entry| {
                let (k, v) = entry?;
                let key = k.get(prefix.len()..).unwrap_or_default();
                Ok((codec::decode_str("kv key", key)?, v.to_vec()))
            })
            .collect::<Result<_, StoreError>>()
    }
}
