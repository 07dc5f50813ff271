//! The plugin registry: every uploaded version, which one is live, shadow candidates,
//! and each plugin's status, persisted in the store so it survives restarts.
//!
//! A version is immutable and named by its content hash (component + manifest). Before
//! a version is stored it must load, implement its world, and survive a smoke call on
//! built-in fixture events; a refused upload changes nothing. Every change rebuilds the
//! live set and swaps it into the pipeline atomically. The registry's lock is never
//! held by the pipeline: events only see the swapped `Arc<LiveSet>`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flywheel_model::{
    ErrorClass, Event, Feedback, PluginKind, PluginRef, Prompt, Score, Thumb, now_ms,
};
use flywheel_runtime::{
    KvBackend, KvFailure, LoadError, Manifest, MemoryKv, Plugin, PluginStats, PreparedEvent,
    PreparedScores, Runtime, version_hash,
};
use flywheel_store::Store;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::pipeline::{LiveSet, Pipeline, Quarantined};

const ENTRIES: &str = "plugins";
const BLOBS: &str = "plugin-blobs";

/// Where a plugin stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginStatus {
    /// The live version processes events.
    Active,
    /// Switched off by an operator.
    Disabled,
    /// Taken out of service after repeated failures; its failure mode still applies.
    Quarantined,
    /// Deleted: no longer runs; its history is kept for audit.
    Retired,
}

/// One immutable version of a plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRecord {
    /// BLAKE3 of component + manifest: the version's identity.
    pub hash: String,
    /// BLAKE3 of the component alone.
    pub component_hash: String,
    pub manifest: Manifest,
    pub uploaded_at: u64,
    pub uploaded_by: String,
    /// `api` or `directory`.
    pub source: String,
    pub size_bytes: u64,
}

/// Everything known about one plugin name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginEntry {
    pub name: String,
    pub kind: PluginKind,
    pub status: PluginStatus,
    /// Why the status is what it is (e.g. the failure that caused a quarantine).
    #[serde(default)]
    pub status_reason: Option<String>,
    /// The version hash that serves (when active).
    pub live: Option<String>,
    /// A candidate running in shadow beside the live version.
    #[serde(default)]
    pub shadow: Option<String>,
    /// Earlier live versions, oldest first: `rollback` returns to the last one.
    #[serde(default)]
    pub history: Vec<String>,
    pub versions: Vec<VersionRecord>,
    /// Who changed what, when: the plugin's audit trail.
    #[serde(default)]
    pub audit: Vec<AuditEntry>,
}

/// One change to a plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: u64,
    pub actor: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl PluginEntry {
    /// The stored version with this full hash.
    pub(crate) fn version(&self, hash: &str) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.hash == hash)
    }

    fn audit(&mut self, actor: &str, action: &str, version: Option<&str>) {
        self.audit.push(AuditEntry {
            at: now_ms(),
            actor: actor.to_string(),
            action: action.to_string(),
            version: version.map(str::to_string),
        });
    }
}

/// Why a registry operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Invalid(#[from] LoadError),
    #[error("the smoke call on fixture events failed ({class}): {message}")]
    SmokeFailed { class: ErrorClass, message: String },
    #[error("no plugin named `{0}`")]
    NotFound(String),
    #[error("plugin `{name}` has no version matching `{version}`")]
    NoSuchVersion { name: String, version: String },
    /// A hash prefix that short could soon match several versions.
    #[error("`{0}` is too short a hash prefix: give 8 or more characters")]
    ShortPrefix(String),
    #[error("{0}")]
    Conflict(String),
    #[error("store error: {0}")]
    Store(#[from] flywheel_store::StoreError),
}

/// How an upload should change what serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// Make it live only if the plugin has no live version yet.
    #[default]
    IfFirst,
    /// Make it live now.
    Activate,
    /// Make it live if this upload created the version; leave a known one as it is.
    ActivateIfNew,
    /// Run it in shadow beside the live version.
    Shadow,
    /// Store it only.
    StoreOnly,
}

/// What an upload did.
#[derive(Debug, Clone, Serialize)]
pub struct UploadOutcome {
    pub name: String,
    pub hash: String,
    /// False when the same bytes and manifest were already stored.
    pub created: bool,
    pub live: Option<String>,
    pub shadow: Option<String>,
    /// Milliseconds from receiving the bytes to the version serving (if it serves).
    pub elapsed_ms: f64,
}

/// A plugin directory file that could not be loaded.
#[derive(Debug, Clone, Serialize)]
pub struct DirError {
    pub path: String,
    pub error: String,
}

struct State {
    entries: BTreeMap<String, PluginEntry>,
    /// Loaded versions, by version hash.
    loaded: HashMap<String, Arc<Plugin>>,
    /// The current shadow candidates, by version hash: loaded apart from `loaded`
    /// because they run against their own copy of the plugin's kv data.
    shadow_loaded: HashMap<String, Arc<Plugin>>,
}

/// The name a shadow candidate's kv data lives under: its own copy, made from the
/// live data when shadowing starts, so a candidate (a sampler, a rate limiter) never
/// changes what the live version reads. Plugin names cannot hold `@`.
pub fn shadow_kv_name(plugin: &str, hash: &str) -> String {
    format!("{plugin}@{hash}")
}

/// A kv backend that keeps one shadow candidate's reads and writes in its copy.
struct ShadowKv {
    inner: Arc<dyn KvBackend>,
    name: String,
}

impl KvBackend for ShadowKv {
    fn get(&self, _: &str, key: &str) -> Result<Option<Vec<u8>>, KvFailure> {
        self.inner.get(&self.name, key)
    }

    fn set(&self, _: &str, key: &str, value: &[u8], quota: u64) -> Result<(), KvFailure> {
        self.inner.set(&self.name, key, value, quota)
    }

    fn delete(&self, _: &str, key: &str) -> Result<(), KvFailure> {
        self.inner.delete(&self.name, key)
    }
}

/// The registry. Operations are synchronous (they compile wasm): call them off the
/// async runtime.
pub struct Registry {
    store: Store,
    runtime: Runtime,
    kv: Arc<dyn KvBackend>,
    pipeline: Pipeline,
    state: Mutex<State>,
    dir_errors: Mutex<Vec<DirError>>,
}

/// Read the persisted registry without a pipeline (for `flywheel replay`).
pub fn load_entries(store: &Store) -> Result<BTreeMap<String, PluginEntry>, RegistryError> {
    let mut entries = BTreeMap::new();
    for (name, bytes) in store.meta_scan_prefix(ENTRIES, "")? {
        match serde_json::from_slice::<PluginEntry>(&bytes) {
            Ok(e) => {
                entries.insert(name, e);
            }
            Err(e) => tracing::error!(plugin = %name, "ignoring unreadable registry entry: {e}"),
        }
    }
    Ok(entries)
}

/// The stored component bytes of a version.
pub fn load_blob(store: &Store, hash: &str) -> Result<Vec<u8>, RegistryError> {
    store.meta_get(BLOBS, hash)?.ok_or_else(|| {
        RegistryError::Conflict(format!(
            "the component of version {hash} is missing from the store"
        ))
    })
}

impl Registry {
    /// Restore the registry from the store, load every live and shadow version, and
    /// swap the resulting set into the pipeline.
    pub fn open(
        store: Store,
        runtime: Runtime,
        kv: Arc<dyn KvBackend>,
        pipeline: Pipeline,
    ) -> Result<Self, RegistryError> {
        let entries = load_entries(&store)?;
        let registry = Self {
            store,
            runtime,
            kv,
            pipeline,
            state: Mutex::new(State {
                entries,
                loaded: HashMap::new(),
                shadow_loaded: HashMap::new(),
            }),
            dir_errors: Mutex::new(Vec::new()),
        };
        {
            let mut state = registry.state.lock();
            let wanted: Vec<(String, Option<String>, Option<String>)> = state
                .entries
                .values()
                .map(|e| {
                    let shadow = e
                        .shadow
                        .clone()
                        .filter(|_| e.status != PluginStatus::Retired);
                    (e.name.clone(), e.live.clone(), shadow)
                })
                .collect();
            for (name, live, shadow) in wanted {
                if let Some(hash) = live {
                    match registry.load_version(&state, &name, &hash, registry.kv.clone()) {
                        Ok(p) => {
                            state.loaded.insert(hash, p);
                        }
                        Err(e) => {
                            tracing::error!(plugin = %name, version = %hash, "could not load stored version: {e}")
                        }
                    }
                }
                if let Some(hash) = shadow
                    && let Err(e) = registry.ensure_shadow(&mut state, &name, &hash, false)
                {
                    tracing::error!(plugin = %name, version = %hash, "could not load the shadow version: {e}")
                }
            }
            registry.rebuild(&mut state);
        }
        Ok(registry)
    }

    fn load_version(
        &self,
        state: &State,
        name: &str,
        hash: &str,
        kv: Arc<dyn KvBackend>,
    ) -> Result<Arc<Plugin>, RegistryError> {
        let entry = state
            .entries
            .get(name)
            .ok_or_else(|| RegistryError::NotFound(name.into()))?;
        let record = entry
            .version(hash)
            .ok_or_else(|| RegistryError::NoSuchVersion {
                name: name.into(),
                version: hash.into(),
            })?;
        let wasm = load_blob(&self.store, hash)?;
        let plugin = self.runtime.load(record.manifest.clone(), &wasm, kv)?;
        Ok(Arc::new(plugin))
    }

    /// Loads `hash` as the shadow candidate of `name`, over its own copy of the plugin's
    /// kv data. `fresh` (shadowing starts now) copies the live data; otherwise (a restart)
    /// the candidate goes on with the copy it had.
    fn ensure_shadow(
        &self,
        state: &mut State,
        name: &str,
        hash: &str,
        fresh: bool,
    ) -> Result<(), RegistryError> {
        if state.shadow_loaded.contains_key(hash) {
            return Ok(());
        }
        let copy = shadow_kv_name(name, hash);
        if fresh {
            self.store.kv_copy(name, &copy)?;
        }
        let kv = Arc::new(ShadowKv {
            inner: self.kv.clone(),
            name: copy,
        });
        let plugin = self.load_version(state, name, hash, kv)?;
        state.shadow_loaded.insert(hash.to_string(), plugin);
        Ok(())
    }

    /// Forgets the shadow candidates that no longer run, and clears their kv copies
    /// (including ones left by a server stopped mid-change). Called after a swap, so the
    /// copies are out of use; a write from an event still in flight on the old set can
    /// land after the clear, and the next sweep takes it.
    fn sweep_shadows(&self, state: &mut State) {
        let current: Vec<String> = state
            .entries
            .values()
            .filter(|e| e.status != PluginStatus::Retired)
            .filter_map(|e| e.shadow.as_ref().map(|h| shadow_kv_name(&e.name, h)))
            .collect();
        state
            .shadow_loaded
            .retain(|hash, p| current.contains(&shadow_kv_name(&p.id().name, hash)));
        let names = match self.store.kv_names() {
            Ok(names) => names,
            Err(e) => return tracing::warn!("cannot list kv data to sweep: {e}"),
        };
        for name in names {
            if name.contains('@')
                && !current.contains(&name)
                && let Err(e) = self.store.kv_clear(&name, "")
            {
                tracing::warn!(copy = %name, "cannot clear a shadow's kv copy: {e}");
            }
        }
    }

    /// Build the live set from the entries, swap it in, and drop what no longer runs.
    fn rebuild(&self, state: &mut State) {
        let mut live = Vec::new();
        let mut shadows = Vec::new();
        let mut quarantined = Vec::new();
        for entry in state.entries.values() {
            match entry.status {
                PluginStatus::Active => {
                    if let Some(p) = entry.live.as_ref().and_then(|h| state.loaded.get(h)) {
                        live.push(p.clone());
                    }
                }
                PluginStatus::Quarantined => {
                    if let Some(p) = entry.live.as_ref().and_then(|h| state.loaded.get(h)) {
                        quarantined.push(Quarantined {
                            id: p.id().clone(),
                            kind: p.kind(),
                            failure_mode: p.manifest().failure_mode,
                        });
                    }
                }
                PluginStatus::Disabled | PluginStatus::Retired => {}
            }
            if entry.status != PluginStatus::Retired
                && let Some(p) = entry
                    .shadow
                    .as_ref()
                    .and_then(|h| state.shadow_loaded.get(h))
            {
                shadows.push(p.clone());
            }
        }
        let mut set = LiveSet::new(live);
        set.shadows = shadows;
        set.quarantined = quarantined;
        self.pipeline.swap(set);
        self.sweep_shadows(state);
    }

    fn persist(&self, entry: &PluginEntry) -> Result<(), RegistryError> {
        let bytes = serde_json::to_vec(entry)
            .map_err(|e| RegistryError::Conflict(format!("serializing the registry: {e}")))?;
        self.store.meta_set(ENTRIES, &entry.name, &bytes)?;
        // An acknowledged change to what serves must survive a crash, like an event.
        self.store.flush()?;
        Ok(())
    }

    /// Validate and store a new version, then activate or shadow it as asked.
    pub fn upload(
        &self,
        manifest: Manifest,
        wasm: &[u8],
        actor: &str,
        source: &str,
        activation: Activation,
    ) -> Result<UploadOutcome, RegistryError> {
        let started = std::time::Instant::now();
        manifest.validate()?;
        let hash = version_hash(wasm, &manifest);
        let mut state = self.state.lock();
        if let Some(entry) = state.entries.get(&manifest.name)
            && entry.kind != manifest.kind
        {
            return Err(RegistryError::Conflict(format!(
                "plugin `{}` is a {}; a {} needs another name",
                manifest.name, entry.kind, manifest.kind
            )));
        }
        let known = state
            .entries
            .get(&manifest.name)
            .is_some_and(|e| e.version(&hash).is_some());
        if !known {
            // Validate with a scratch key-value store so the smoke call writes nothing real.
            let probe = self
                .runtime
                .load(manifest.clone(), wasm, Arc::new(MemoryKv::default()))?;
            smoke(&probe)?;
            let plugin = Arc::new(self.runtime.load(manifest.clone(), wasm, self.kv.clone())?);
            self.store.meta_set(BLOBS, &hash, wasm)?;
            let record = VersionRecord {
                hash: hash.clone(),
                component_hash: plugin.component_hash().to_string(),
                manifest: manifest.clone(),
                uploaded_at: now_ms(),
                uploaded_by: actor.to_string(),
                source: source.to_string(),
                size_bytes: wasm.len() as u64,
            };
            let entry = state
                .entries
                .entry(manifest.name.clone())
                .or_insert_with(|| PluginEntry {
                    name: manifest.name.clone(),
                    kind: manifest.kind,
                    status: PluginStatus::Active,
                    status_reason: None,
                    live: None,
                    shadow: None,
                    history: Vec::new(),
                    versions: Vec::new(),
                    audit: Vec::new(),
                });
            entry.versions.push(record);
            entry.audit(actor, &format!("upload ({source})"), Some(&hash));
            state.loaded.insert(hash.clone(), plugin);
        }
        if known && matches!(activation, Activation::Activate) {
            self.ensure_loaded(&mut state, &manifest.name, &hash)?;
        }
        if matches!(activation, Activation::Shadow) {
            if let Some(entry) = state.entries.get(&manifest.name) {
                refuse_shadowing_live(entry, &hash)?;
            }
            self.ensure_shadow(&mut state, &manifest.name, &hash, true)?;
        }
        let State { entries, .. } = &mut *state;
        let Some(entry) = entries.get_mut(&manifest.name) else {
            return Err(RegistryError::NotFound(manifest.name));
        };
        let first = entry.live.is_none() || entry.status == PluginStatus::Retired;
        match activation {
            Activation::Activate => set_live(entry, &hash, actor),
            Activation::IfFirst if first && !known => set_live(entry, &hash, actor),
            Activation::ActivateIfNew if !known => set_live(entry, &hash, actor),
            Activation::Shadow => {
                entry.shadow = Some(hash.clone());
                entry.audit(actor, "shadow", Some(&hash));
            }
            Activation::IfFirst | Activation::ActivateIfNew | Activation::StoreOnly => {}
        }
        let entry = entry.clone();
        self.persist(&entry)?;
        self.rebuild(&mut state);
        Ok(UploadOutcome {
            name: entry.name,
            hash,
            created: !known,
            live: entry.live,
            shadow: entry.shadow,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// The hash of `name`'s version given as a full hash, hash prefix (8+ characters) or
    /// manifest version, as every endpoint that names a version takes it.
    pub fn resolve_version(&self, name: &str, version: &str) -> Result<String, RegistryError> {
        let entry = self
            .entry(name)
            .ok_or_else(|| RegistryError::NotFound(name.into()))?;
        self.resolve(&entry, version)
    }

    /// Resolve a version by full hash, hash prefix (8+ characters) or manifest version.
    fn resolve(&self, entry: &PluginEntry, version: &str) -> Result<String, RegistryError> {
        let matches: Vec<&VersionRecord> = entry
            .versions
            .iter()
            .filter(|v| {
                v.hash == version
                    || (version.len() >= 8 && v.hash.starts_with(version))
                    || v.manifest.version == version
            })
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.hash.clone()),
            // A short hash prefix is refused as ambiguous-prone: say so, not "no version".
            [] if !version.is_empty()
                && entry.versions.iter().any(|v| v.hash.starts_with(version)) =>
            {
                Err(RegistryError::ShortPrefix(version.to_owned()))
            }
            [] => Err(RegistryError::NoSuchVersion {
                name: entry.name.clone(),
                version: version.into(),
            }),
            _ => Err(RegistryError::Conflict(format!(
                "`{version}` matches {} versions of `{}`; give the hash",
                matches.len(),
                entry.name
            ))),
        }
    }

    fn change(
        &self,
        name: &str,
        f: impl FnOnce(&Self, &mut State, &mut PluginEntry) -> Result<(), RegistryError>,
    ) -> Result<PluginEntry, RegistryError> {
        let mut state = self.state.lock();
        let mut entry = state
            .entries
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(name.into()))?;
        f(self, &mut state, &mut entry)?;
        self.persist(&entry)?;
        state.entries.insert(name.to_string(), entry.clone());
        self.rebuild(&mut state);
        Ok(entry)
    }

    fn ensure_loaded(
        &self,
        state: &mut State,
        name: &str,
        hash: &str,
    ) -> Result<(), RegistryError> {
        if !state.loaded.contains_key(hash) {
            let p = self.load_version(state, name, hash, self.kv.clone())?;
            state.loaded.insert(hash.to_string(), p);
        }
        Ok(())
    }

    /// Make a stored version live.
    pub fn activate(
        &self,
        name: &str,
        version: &str,
        actor: &str,
    ) -> Result<PluginEntry, RegistryError> {
        self.change(name, |reg, state, entry| {
            let hash = reg.resolve(entry, version)?;
            reg.ensure_loaded(state, name, &hash)?;
            set_live(entry, &hash, actor);
            if entry.shadow.as_deref() == Some(hash.as_str()) {
                entry.shadow = None;
            }
            Ok(())
        })
    }

    /// Go back to the previous live version.
    pub fn rollback(&self, name: &str, actor: &str) -> Result<PluginEntry, RegistryError> {
        self.change(name, |reg, state, entry| {
            let previous = entry.history.pop().ok_or_else(|| {
                RegistryError::Conflict(format!("plugin `{name}` has no earlier live version"))
            })?;
            reg.ensure_loaded(state, name, &previous)?;
            entry.live = Some(previous.clone());
            entry.status = PluginStatus::Active;
            entry.status_reason = None;
            entry.audit(actor, "rollback", Some(&previous));
            Ok(())
        })
    }

    /// Stop the plugin without forgetting its live version.
    pub fn disable(&self, name: &str, actor: &str) -> Result<PluginEntry, RegistryError> {
        self.change(name, |_, _, entry| {
            if entry.status == PluginStatus::Retired {
                return Err(RegistryError::Conflict(format!(
                    "plugin `{name}` is retired; upload or activate a version"
                )));
            }
            entry.status = PluginStatus::Disabled;
            entry.status_reason = Some(format!("disabled by {actor}"));
            entry.audit(actor, "disable", None);
            Ok(())
        })
    }

    /// Record in the plugin's audit trail an operator's action that changes none of its
    /// versions (e.g. clearing its kv data): nothing is reloaded or swapped.
    pub fn note(&self, name: &str, actor: &str, action: &str) -> Result<(), RegistryError> {
        let mut state = self.state.lock();
        let entry = state
            .entries
            .get_mut(name)
            .ok_or_else(|| RegistryError::NotFound(name.into()))?;
        let mut changed = entry.clone();
        changed.audit(actor, action, None);
        self.persist(&changed)?;
        *entry = changed;
        Ok(())
    }

    /// Bring a disabled or quarantined plugin back.
    pub fn enable(&self, name: &str, actor: &str) -> Result<PluginEntry, RegistryError> {
        self.change(name, |_, state, entry| {
            if entry.live.is_none() {
                return Err(RegistryError::Conflict(format!(
                    "plugin `{name}` has no live version; activate one"
                )));
            }
            if let Some(p) = entry.live.as_ref().and_then(|h| state.loaded.get(h)) {
                p.counters()
                    .consecutive_failures
                    .store(0, std::sync::atomic::Ordering::Relaxed);
            }
            entry.status = PluginStatus::Active;
            entry.status_reason = None;
            entry.audit(actor, "enable", None);
            Ok(())
        })
    }

    /// Retire the plugin: it stops running; its versions and audit trail are kept.
    pub fn retire(&self, name: &str, actor: &str) -> Result<PluginEntry, RegistryError> {
        self.change(name, |_, _, entry| {
            if let Some(live) = entry.live.take() {
                entry.history.push(live);
            }
            entry.shadow = None;
            entry.status = PluginStatus::Retired;
            entry.status_reason = Some(format!("retired by {actor}"));
            entry.audit(actor, "retire", None);
            Ok(())
        })
    }

    /// Run a stored version in shadow beside the live one (`None` stops shadowing).
    pub fn set_shadow(
        &self,
        name: &str,
        version: Option<&str>,
        actor: &str,
    ) -> Result<PluginEntry, RegistryError> {
        self.change(name, |reg, state, entry| {
            match version {
                Some(v) => {
                    let hash = reg.resolve(entry, v)?;
                    refuse_shadowing_live(entry, &hash)?;
                    reg.ensure_shadow(state, name, &hash, true)?;
                    entry.audit(actor, "shadow", Some(&hash));
                    entry.shadow = Some(hash);
                }
                None => {
                    entry.audit(actor, "stop shadow", entry.shadow.clone().as_deref());
                    entry.shadow = None;
                }
            }
            Ok(())
        })
    }

    /// Take a plugin out of service after repeated failures (called by the pipeline's
    /// quarantine report; idempotent).
    pub fn quarantine(&self, id: &PluginRef, after: u64) {
        let result = self.change(&id.name, |_, _, entry| {
            if entry.status != PluginStatus::Active
                || entry.live.as_deref() != Some(id.hash.as_str())
            {
                return Ok(());
            }
            entry.status = PluginStatus::Quarantined;
            entry.status_reason = Some(format!("failed {after} times in a row"));
            entry.audit("flywheel", "quarantine", Some(&id.hash));
            Ok(())
        });
        match result {
            Ok(e) if e.status == PluginStatus::Quarantined => tracing::error!(
                plugin = %id,
                "plugin quarantined after {after} consecutive failures; its failure mode applies until `enable`"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(plugin = %id, "could not quarantine: {e}"),
        }
    }

    /// Every plugin entry, as persisted.
    pub fn entries(&self) -> Vec<PluginEntry> {
        self.state.lock().entries.values().cloned().collect()
    }

    /// One entry.
    pub fn entry(&self, name: &str) -> Option<PluginEntry> {
        self.state.lock().entries.get(name).cloned()
    }

    /// Live counters of a loaded version (of its shadow runs while it is a shadow).
    pub fn stats(&self, hash: &str) -> Option<PluginStats> {
        let state = self.state.lock();
        state
            .shadow_loaded
            .get(hash)
            .or_else(|| state.loaded.get(hash))
            .map(|p| p.counters().snapshot())
    }

    /// The `flywheel:policy` version a loaded plugin version was built against.
    pub fn contract(&self, hash: &str) -> Option<&'static str> {
        let state = self.state.lock();
        state
            .shadow_loaded
            .get(hash)
            .or_else(|| state.loaded.get(hash))
            .map(|p| p.contract())
    }

    /// The component bytes and manifest of a stored version (for replay).
    pub fn version_source(
        &self,
        name: &str,
        version: &str,
    ) -> Result<(Manifest, Vec<u8>), RegistryError> {
        let state = self.state.lock();
        let entry = state
            .entries
            .get(name)
            .ok_or_else(|| RegistryError::NotFound(name.into()))?;
        let hash = self.resolve(entry, version)?;
        let record = entry
            .version(&hash)
            .ok_or_else(|| RegistryError::NoSuchVersion {
                name: name.into(),
                version: hash.clone(),
            })?;
        Ok((record.manifest.clone(), load_blob(&self.store, &hash)?))
    }

    /// Files in the plugin directory that were refused at the last scan.
    pub fn dir_errors(&self) -> Vec<DirError> {
        self.dir_errors.lock().clone()
    }

    /// Load every `<name>.wasm` + `<name>.toml` pair in `dir` through the same
    /// validation as an upload, making new versions live. Known versions are left as
    /// they are (so a rollback through the API survives a restart). Bad files are
    /// reported and skipped.
    pub fn scan_dir(&self, dir: &Path) {
        let mut errors = Vec::new();
        let mut manifests: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    // A component alone is a plugin half-dropped in: say what is missing.
                    let lone = p.extension().is_some_and(|x| x == "wasm")
                        && !p.with_extension("toml").exists();
                    if lone {
                        let error = format!(
                            "no manifest: put {} beside it",
                            p.with_extension("toml").display()
                        );
                        tracing::warn!(path = %p.display(), "plugin file waits: {error}");
                        errors.push(DirError {
                            path: p.display().to_string(),
                            error,
                        });
                    }
                    p.extension().is_some_and(|x| x == "toml")
                })
                .collect(),
            Err(e) => {
                errors.push(DirError {
                    path: dir.display().to_string(),
                    error: e.to_string(),
                });
                *self.dir_errors.lock() = errors;
                return;
            }
        };
        manifests.sort();
        for manifest_path in manifests {
            let wasm_path = manifest_path.with_extension("wasm");
            let result = (|| -> Result<UploadOutcome, RegistryError> {
                let text =
                    std::fs::read_to_string(&manifest_path).map_err(|source| LoadError::Io {
                        path: manifest_path.display().to_string(),
                        source,
                    })?;
                let manifest = Manifest::from_toml(&text)?;
                let wasm = std::fs::read(&wasm_path).map_err(|source| LoadError::Io {
                    path: wasm_path.display().to_string(),
                    source,
                })?;
                self.upload(
                    manifest,
                    &wasm,
                    "plugin-directory",
                    "directory",
                    Activation::ActivateIfNew,
                )
            })();
            match result {
                Ok(o) if o.created => {
                    tracing::info!(plugin = %o.name, version = %o.hash, "hot-loaded from the plugin directory")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(path = %wasm_path.display(), "plugin file refused: {e}");
                    errors.push(DirError {
                        path: wasm_path.display().to_string(),
                        error: e.to_string(),
                    });
                }
            }
        }
        *self.dir_errors.lock() = errors;
    }

    /// Watch `dir` and rescan it whenever something in it changes (debounced).
    pub fn watch_dir(self: &Arc<Self>, dir: PathBuf) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        let (tx, rx) = crossbeam_channel::unbounded::<()>();
        let mut watcher =
            match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if res.is_ok_and(|e| changes_files(&e.kind)) {
                    let _ = tx.send(());
                }
            }) {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!("cannot watch the plugin directory: {e}");
                    return None;
                }
            };
        if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            tracing::error!(dir = %dir.display(), "cannot watch the plugin directory: {e}");
            return None;
        }
        let registry = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("flywheel-plugin-watch".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // Let a copy finish: wait until the directory is quiet for a moment.
                    while rx.recv_timeout(Duration::from_millis(300)).is_ok() {}
                    let Some(registry) = registry.upgrade() else {
                        return;
                    };
                    registry.scan_dir(&dir);
                }
            })
            .map_err(|e| tracing::error!("cannot start the plugin watcher: {e}"))
            .ok()?;
        Some(watcher)
    }
}

/// Whether a directory event can mean a plugin file appeared, changed or went. Reads are
/// not: the scan itself opens and reads every file, and reacting to that rescanned the
/// directory (and logged any bad file) several times a second, for good.
fn changes_files(kind: &notify::EventKind) -> bool {
    use notify::EventKind as K;
    use notify::event::{AccessKind, AccessMode};
    match kind {
        K::Create(_) | K::Modify(_) | K::Remove(_) | K::Any => true,
        // A file written and closed: the end of a copy.
        K::Access(AccessKind::Close(AccessMode::Write)) => true,
        K::Access(_) | K::Other => false,
    }
}

/// A shadow compares a candidate with the live version: the live version itself would
/// run twice per event and agree with itself, telling nothing.
fn refuse_shadowing_live(entry: &PluginEntry, hash: &str) -> Result<(), RegistryError> {
    if entry.live.as_deref() == Some(hash) && entry.status != PluginStatus::Retired {
        return Err(RegistryError::Conflict(format!(
            "version {} of `{}` is the live one; shadow another version beside it",
            &hash[..hash.len().min(12)],
            entry.name
        )));
    }
    Ok(())
}

fn set_live(entry: &mut PluginEntry, hash: &str, actor: &str) {
    if entry.live.as_deref() == Some(hash) && entry.status == PluginStatus::Active {
        return;
    }
    if let Some(old) = entry.live.take()
        && old != hash
    {
        entry.history.push(old);
    }
    entry.live = Some(hash.to_string());
    entry.status = PluginStatus::Active;
    entry.status_reason = None;
    entry.audit(actor, "activate", Some(hash));
}

/// Built-in events every plugin must handle without trapping before it may serve.
pub fn smoke_events() -> Vec<Event> {
    let base = Event {
        id: "smoke-1".into(),
        received_at: 0,
        trace_id: None,
        session_id: None,
        user_id: None,
        model: Some("smoke-model".into()),
        prompt: Some(flywheel_model::PromptRef {
            name: "smoke".into(),
            version: "1".into(),
        }),
        input: "How many days do I have to return a laptop?".into(),
        output: "You can return a laptop within 30 days of delivery.".into(),
        context: vec!["Laptops can be returned within 30 days of delivery.".into()],
        feedback: Feedback::Thumbs { value: Thumb::Up },
        metadata: BTreeMap::new(),
    };
    let mut correction = base.clone();
    correction.id = "smoke-2".into();
    correction.feedback = Feedback::Correction {
        text: "Within 30 days, in the original packaging.".into(),
    };
    let mut bare = base.clone();
    bare.id = "smoke-3".into();
    bare.context.clear();
    bare.prompt = None;
    bare.feedback = Feedback::None;
    vec![base, correction, bare]
}

/// Call the plugin on the fixture events; a trap, timeout, memory blow-up or invalid
/// result refuses the version. A plugin error (`err(...)`) is an answer, not a crash.
fn smoke(plugin: &Plugin) -> Result<(), RegistryError> {
    let fail = |f: flywheel_runtime::PluginFailure| -> Result<(), RegistryError> {
        if f.class == ErrorClass::PluginError {
            Ok(())
        } else {
            Err(RegistryError::SmokeFailed {
                class: f.class,
                message: f.message,
            })
        }
    };
    let events = smoke_events();
    match plugin.kind() {
        PluginKind::Scorer => {
            for e in &events {
                if let Err(f) = plugin.score(&PreparedEvent::new(e)).result {
                    fail(f)?;
                }
            }
        }
        PluginKind::Router => {
            let scores = [
                Score {
                    name: "satisfaction".into(),
                    value: 0.2,
                    label: None,
                    reason: None,
                },
                Score {
                    name: "groundedness".into(),
                    value: 0.9,
                    label: None,
                    reason: None,
                },
                Score {
                    name: "sensitive".into(),
                    value: 0.0,
                    label: None,
                    reason: None,
                },
            ];
            for e in &events {
                if let Err(f) = plugin
                    .route(&PreparedEvent::new(e), &PreparedScores::new(&scores))
                    .result
                {
                    fail(f)?;
                }
            }
        }
        PluginKind::Refiner => {
            let prompt = Prompt {
                name: "smoke".into(),
                version: "1".into(),
                template: "Answer: {{question}}".into(),
            };
            if let Err(f) = plugin.refine(&prompt, &events).result {
                fail(f)?;
            }
        }
    }
    Ok(())
}
