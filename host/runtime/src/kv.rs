//! The per-plugin key-value store that plugins reach through the `kv` import.
//!
//! The runtime knows no database: it calls a [`KvBackend`], which the server backs
//! with sled and which `plugin run` and replay back with [`MemoryKv`] (replay starts
//! from a snapshot of the live data, so a candidate never writes the real store).

use std::collections::BTreeMap;

use parking_lot::Mutex;

/// Longest key a plugin may use, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// Why a key-value operation failed; mirrors the WIT `kv.error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvFailure {
    #[error("key-value quota of {0} bytes exceeded")]
    QuotaExceeded(u64),
    #[error("invalid key")]
    InvalidKey,
    #[error("key-value store unavailable: {0}")]
    Unavailable(String),
}

/// Where plugins' key-value data lives. Keys are namespaced by plugin name, so all
/// versions of one plugin share their state and no plugin sees another's.
pub trait KvBackend: Send + Sync {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, KvFailure>;
    /// Store `value`, refusing it if the plugin's total (keys + values) would pass `quota`.
    fn set(&self, plugin: &str, key: &str, value: &[u8], quota: u64) -> Result<(), KvFailure>;
    fn delete(&self, plugin: &str, key: &str) -> Result<(), KvFailure>;
}

/// Check a key before it reaches any backend.
pub(crate) fn check_key(key: &str) -> Result<(), KvFailure> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        Err(KvFailure::InvalidKey)
    } else {
        Ok(())
    }
}

/// An in-memory backend: for `plugin run`, tests, and replay's scratch copies.
#[derive(Debug, Default)]
pub struct MemoryKv {
    data: Mutex<BTreeMap<(String, String), Vec<u8>>>,
}

impl MemoryKv {
    /// A backend preloaded with one plugin's entries (e.g. a snapshot of the live store).
    pub fn with_entries(
        plugin: &str,
        entries: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Self {
        let data = entries
            .into_iter()
            .map(|(k, v)| ((plugin.to_string(), k), v))
            .collect();
        Self {
            data: Mutex::new(data),
        }
    }

    fn usage(data: &BTreeMap<(String, String), Vec<u8>>, plugin: &str) -> u64 {
        data.iter()
            .filter(|((p, _), _)| p == plugin)
            .map(|((_, k), v)| (k.len() + v.len()) as u64)
            .sum()
    }
}

impl KvBackend for MemoryKv {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, KvFailure> {
        Ok(self
            .data
            .lock()
            .get(&(plugin.to_string(), key.to_string()))
            .cloned())
    }

    fn set(&self, plugin: &str, key: &str, value: &[u8], quota: u64) -> Result<(), KvFailure> {
        let mut data = self.data.lock();
        let id = (plugin.to_string(), key.to_string());
        let old = data.get(&id).map_or(0, |v| (key.len() + v.len()) as u64);
        let new_usage = Self::usage(&data, plugin) - old + (key.len() + value.len()) as u64;
        if new_usage > quota {
            return Err(KvFailure::QuotaExceeded(quota));
        }
        data.insert(id, value.to_vec());
        Ok(())
    }

    fn delete(&self, plugin: &str, key: &str) -> Result<(), KvFailure> {
        self.data
            .lock()
            .remove(&(plugin.to_string(), key.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_counts_keys_and_values_per_plugin() {
        let kv = MemoryKv::default();
        kv.set("a", "k", &[0; 8], 10).expect("fits");
        assert_eq!(
            kv.set("a", "j", &[0; 8], 10),
            Err(KvFailure::QuotaExceeded(10))
        );
        kv.set("b", "j", &[0; 8], 10)
            .expect("other plugin has its own quota");
        kv.set("a", "k", &[0; 9], 10)
            .expect("overwrite replaces the old size");
        kv.delete("a", "k").expect("delete");
        assert_eq!(kv.get("a", "k"), Ok(None));
    }
}
