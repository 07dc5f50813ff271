//! Plugins' private persistent key-value data, with a byte quota per plugin. Usage (the
//! sum of key + value bytes) is a counter updated in the same transaction as the data, so
//! it can never drift; a write over quota writes nothing.

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
