//! Plugin sets: the exact list of plugin builds that processed an event, stored once
//! and named by a 64-bit id, so that each outcome carries 8 bytes instead of every
//! plugin's name, version and 64-digit hash (about a third of an outcome otherwise).
//!
//! A set changes only when plugins are swapped, so almost every outcome names a set
//! that is already known: [`PluginSets::id_for`] compares the outcome's list with the
//! few sets used last before it hashes anything. A new set is made durable before its
//! id is handed out, so no outcome on disk can name a set that a crash lost.

use std::collections::HashMap;
use std::sync::Arc;

use flywheel_model::PluginRef;
use parking_lot::{Mutex, RwLock};

use crate::error::{Result, StoreError};

/// How many recently used sets `id_for` compares before hashing.
const RECENT: usize = 8;

/// The `plugin_sets` tree and what of it has been read.
pub(crate) struct PluginSets {
    tree: sled::Tree,
    db: sled::Db,
    gate: crate::WriteGate,
    by_id: RwLock<HashMap<u64, Arc<[PluginRef]>>>,
    /// Most recently used last.
    recent: Mutex<Vec<(Arc<[PluginRef]>, u64)>>,
}

impl PluginSets {
    pub(crate) fn open(db: &sled::Db, gate: crate::WriteGate) -> Result<PluginSets> {
        Ok(PluginSets {
            tree: db.open_tree("plugin_sets")?,
            db: db.clone(),
            gate,
            by_id: RwLock::default(),
            recent: Mutex::default(),
        })
    }

    /// The id of the set `refs`, registering it (durably) the first time it is seen.
    pub(crate) fn id_for(&self, refs: &[PluginRef]) -> Result<u64> {
        {
            let mut recent = self.recent.lock();
            if let Some(i) = recent.iter().rposition(|(set, _)| same(set, refs)) {
                let hit = recent.remove(i);
                let id = hit.1;
                recent.push(hit);
                return Ok(id);
            }
        }
        let set: Arc<[PluginRef]> = refs.into();
        let id = self.register(&set)?;
        let mut recent = self.recent.lock();
        if recent.len() == RECENT {
            recent.remove(0);
        }
        recent.push((set, id));
        Ok(id)
    }

    /// How many sets are stored.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tree.len()
    }

    /// The set stored under `id`.
    pub(crate) fn get(&self, id: u64) -> Result<Arc<[PluginRef]>> {
        if let Some(set) = self.by_id.read().get(&id) {
            return Ok(set.clone());
        }
        let bytes = self.tree.get(id.to_be_bytes())?.ok_or_else(|| {
            StoreError::corrupt(format!("outcome names unknown plugin set {id:016x}"))
        })?;
        let set: Arc<[PluginRef]> =
            crate::codec::decode::<Vec<PluginRef>>("plugin set", &bytes)?.into();
        self.by_id.write().insert(id, set.clone());
        Ok(set)
    }

    /// Store `set` under an id derived from its content (the next free one on the rare
    /// collision) and flush, so that outcomes naming it can never outlive it.
    fn register(&self, set: &Arc<[PluginRef]>) -> Result<u64> {
        let value = crate::codec::encode(&**set)?;
        let digest = blake3::hash(&value);
        let mut id = u64::from_be_bytes(digest.as_bytes()[..8].try_into().unwrap_or_default());
        loop {
            match self.tree.get(id.to_be_bytes())? {
                Some(existing) if existing == value.as_slice() => break,
                Some(_) => id = id.wrapping_add(1),
                None => {
                    let _writing = self.gate.read();
                    self.tree.insert(id.to_be_bytes(), value.as_slice())?;
                    self.db.flush()?;
                    break;
                }
            }
        }
        self.by_id.write().insert(id, set.clone());
        Ok(id)
    }
}

/// Whether two lists name the same builds (hashes first: they differ soonest).
fn same(a: &[PluginRef], b: &[PluginRef]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.hash == y.hash && x.name == y.name && x.version == y.version)
}
