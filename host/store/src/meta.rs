//! Small named trees for later features (plugin registry, prompts) to persist bytes
//! without touching sled. Each name maps to its own sled tree `meta/<name>`; the store
//! never interprets the keys or values.

use crate::Store;
use crate::codec;
use crate::error::Result;

impl Store {
    fn meta_tree(&self, tree: &str) -> Result<sled::Tree> {
        codec::check_name(tree)?;
        Ok(self.db().open_tree(format!("meta/{tree}"))?)
    }

    /// The value stored under `key` in the named tree.
    pub fn meta_get(&self, tree: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta_tree(tree)?.get(key)?.map(|v| v.to_vec()))
    }

    /// Stores `value` under `key` in the named tree (not flushed; see [`Store::flush`]).
    pub fn meta_set(&self, tree: &str, key: &str, value: &[u8]) -> Result<()> {
        let _writing = self.trees().writing();
        self.meta_tree(tree)?.insert(key, value)?;
        Ok(())
    }

    /// Removes `key`; returns whether it was there.
    pub fn meta_remove(&self, tree: &str, key: &str) -> Result<bool> {
        let _writing = self.trees().writing();
        Ok(self.meta_tree(tree)?.remove(key)?.is_some())
    }

    /// Every entry of the named tree whose key starts with `prefix`, in key order.
    pub fn meta_scan_prefix(&self, tree: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.meta_tree(tree)?
            .scan_prefix(prefix)
            .map(|entry| {
                let (k, v) = entry?;
                Ok((codec::decode_str("meta key", &k)?, v.to_vec()))
            })
            .collect()
    }
}
