//! The process-wide wasm engine and the path from bytes to a runnable [`Plugin`].
//!
//! One `Engine` per process: component model on, epoch interruption for wall-clock
//! deadlines (a ticker thread advances the epoch every few milliseconds while calls
//! run), the pooling allocator when the machine allows it. Compiled components are cached on disk keyed
//! by content hash and engine compatibility, and in memory by content hash.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flywheel_model::{PluginKind, PluginRef};
use parking_lot::Mutex;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use crate::bindings::{refiner, router, scorer, v0_1};
use crate::epoch::Ticker;
use crate::error::{LoadError, RuntimeError};
use crate::host::{HostState, PluginShared};
use crate::kv::KvBackend;
use crate::manifest::{MAX_MEMORY_MIB, Manifest};
use crate::plugin::{KindPre, Plugin};

/// How the runtime is set up. The defaults suit a server.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where precompiled components are kept; `None` compiles every load.
    pub cache_dir: Option<PathBuf>,
    /// Try the pooling allocator (falls back to on-demand if the machine refuses).
    pub pooling: bool,
    /// Instance slots in the pool: bounds how many plugin instances exist at once.
    pub max_instances: u32,
    /// Run every call in a fresh instance instead of reusing warm ones. Stronger
    /// isolation between events, at several times the cost per call.
    pub fresh_instance_per_call: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            cache_dir: None,
            pooling: true,
            max_instances: 256,
            fresh_instance_per_call: false,
        }
    }
}

/// The plugin runtime: cheap to clone, shared by the server, the CLI, replay and benches.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    options: RuntimeOptions,
    pooling: bool,
    compat: String,
    compiled: Mutex<HashMap<String, Component>>,
    /// Shared with every plugin, so deadlines keep firing while any plugin is alive.
    ticker: Arc<Ticker>,
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.cranelift_opt_level(OptLevel::Speed);
    config.parallel_compilation(true);
    // For profiling guests: `FLYWHEEL_PERFMAP=1` writes /tmp/perf-<pid>.map so that
    // `perf report` names the functions of compiled plugins (build them unstripped).
    if std::env::var_os("FLYWHEEL_PERFMAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

fn pooling_config(max_instances: u32) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    // A component built for wasm32-wasip2 holds a few core instances (the program
    // plus the shims that lower WASI calls); size the pool for that.
    pool.total_component_instances(max_instances);
    pool.total_core_instances(max_instances * 8);
    pool.total_memories(max_instances * 2);
    pool.total_tables(max_instances * 8);
    pool.max_memory_size((MAX_MEMORY_MIB as usize) << 20);
    pool.max_component_instance_size(1 << 20);
    pool.max_core_instance_size(1 << 20);
    pool
}

impl Runtime {
    /// Build the engine and start its epoch ticker.
    pub fn new(options: RuntimeOptions) -> Result<Self, RuntimeError> {
        let mut pooling = false;
        let mut engine = None;
        if options.pooling {
            let mut config = base_config();
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
                options.max_instances,
            )));
            match Engine::new(&config) {
                Ok(e) => {
                    pooling = true;
                    engine = Some(e);
                }
                Err(e) => tracing::warn!(
                    "pooling allocator unavailable on this machine ({e:#}); using on-demand allocation"
                ),
            }
        }
        let engine = match engine {
            Some(e) => e,
            None => {
                Engine::new(&base_config()).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?
            }
        };

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| RuntimeError::Engine(format!("linking WASI: {e:#}")))?;
        // The three worlds of a version import the same interfaces, so adding them once
        // serves all; both contract versions are linked side by side.
        scorer::Scorer::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| RuntimeError::Engine(format!("linking host imports: {e:#}")))?;
        v0_1::scorer::Scorer::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| RuntimeError::Engine(format!("linking 0.1 host imports: {e:#}")))?;

        if let Some(dir) = &options.cache_dir {
            std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Cache {
                path: dir.display().to_string(),
                source,
            })?;
        }

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = format!("{:016x}", hasher.finish());

        let ticker = Ticker::start(engine.clone())
            .map(Arc::new)
            .map_err(|e| RuntimeError::Engine(format!("starting the epoch ticker: {e}")))?;

        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                options,
                pooling,
                compat,
                compiled: Mutex::new(HashMap::new()),
                ticker,
            }),
        })
    }

    /// Whether the pooling allocator is in use (it is refused on some machines).
    pub fn pooling(&self) -> bool {
        self.inner.pooling
    }

    /// Load a plugin: check the bytes are a component implementing the manifest's world,
    /// compile it (or take it from the cache), and prepare it for instantiation.
    pub fn load(
        &self,
        manifest: Manifest,
        wasm: &[u8],
        kv: Arc<dyn KvBackend>,
    ) -> Result<Plugin, LoadError> {
        manifest.validate()?;
        let component_hash = blake3::hash(wasm).to_hex().to_string();
        let hash = version_hash(wasm, &manifest);
        let component = self.compile(&component_hash, wasm)?;
        check_world(&self.inner.engine, &component, manifest.kind)?;
        check_contract(&self.inner.engine, &component, manifest.kind)?;

        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let kind_pre = kind_pre(manifest.kind, pre)?;
        let shared = Arc::new(PluginShared {
            id: Arc::new(PluginRef {
                name: manifest.name.clone(),
                version: manifest.version.clone(),
                hash,
            }),
            config: manifest.config.clone(),
            kv,
            kv_quota: manifest.limits.kv_quota_bytes(),
        });
        Ok(Plugin::new(
            self.inner.engine.clone(),
            self.inner.ticker.clone(),
            manifest,
            shared,
            kind_pre,
            self.inner.options.fresh_instance_per_call,
            component_hash,
        ))
    }

    /// Load a plugin from a `.wasm` file and its TOML manifest.
    pub fn load_files(
        &self,
        wasm_path: &Path,
        manifest_path: &Path,
        kv: Arc<dyn KvBackend>,
    ) -> Result<Plugin, LoadError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| LoadError::Io {
                path: p.display().to_string(),
                source,
            })
        };
        let text = String::from_utf8(read(manifest_path)?)
            .map_err(|_| LoadError::Manifest("manifest is not UTF-8".into()))?;
        let manifest = Manifest::from_toml(&text)?;
        self.load(manifest, &read(wasm_path)?, kv)
    }

    /// Which world a component implements, judged by its exports; for `plugin check`
    /// when no manifest is at hand.
    pub fn detect_kind(&self, wasm: &[u8]) -> Result<PluginKind, LoadError> {
        let hash = blake3::hash(wasm).to_hex().to_string();
        let component = self.compile(&hash, wasm)?;
        let exports = export_names(&self.inner.engine, &component);
        [PluginKind::Scorer, PluginKind::Router, PluginKind::Refiner]
            .into_iter()
            .find(|k| exports.iter().any(|e| e == k.export_name()))
            .ok_or_else(|| LoadError::WrongWorld {
                kind: PluginKind::Scorer,
                detail: format!(
                    "it exports none of `score`, `route`, `refine` (exports: {})",
                    list_or_none(&exports)
                ),
            })
    }

    fn compile(&self, hash: &str, wasm: &[u8]) -> Result<Component, LoadError> {
        check_magic(wasm)?;
        if let Some(c) = self.inner.compiled.lock().get(hash) {
            return Ok(c.clone());
        }
        let engine = &self.inner.engine;
        let cached = self
            .inner
            .options
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{hash}-{}.cwasm", self.inner.compat)));
        let mut component = None;
        if let Some(path) = cached.as_ref().filter(|p| p.exists()) {
            match load_precompiled(engine, path) {
                Ok(c) => component = Some(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cache entry: {e:#}")
                }
            }
        }
        let component = match component {
            Some(c) => c,
            None => {
                let started = std::time::Instant::now();
                let c = Component::new(engine, wasm).map_err(|e| classify_compile_error(&e))?;
                tracing::debug!(
                    hash,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "compiled component"
                );
                if let Some(path) = &cached
                    && let Err(e) = store_precompiled(&c, path)
                {
                    tracing::warn!(path = %path.display(), "could not cache compiled component: {e:#}");
                }
                c
            }
        };
        self.inner
            .compiled
            .lock()
            .insert(hash.to_string(), component.clone());
        Ok(component)
    }
}

/// The component typed against the world `kind` of the contract version it was built
/// for: 0.2 first, then 0.1. When neither fits, the error says what 0.2 expected.
fn kind_pre(
    kind: PluginKind,
    pre: wasmtime::component::InstancePre<HostState>,
) -> Result<KindPre, LoadError> {
    let wrong = |e: wasmtime::Error| LoadError::WrongWorld {
        kind,
        detail: format!("{e:#}"),
    };
    let current = match kind {
        PluginKind::Scorer => scorer::ScorerPre::new(pre.clone()).map(KindPre::Scorer),
        PluginKind::Router => router::RouterPre::new(pre.clone()).map(KindPre::Router),
        PluginKind::Refiner => refiner::RefinerPre::new(pre.clone()).map(KindPre::Refiner),
    };
    let Err(e) = current else {
        return current.map_err(wrong);
    };
    let legacy = match kind {
        PluginKind::Scorer => v0_1::scorer::ScorerPre::new(pre).map(KindPre::ScorerV0_1),
        PluginKind::Router => v0_1::router::RouterPre::new(pre).map(KindPre::RouterV0_1),
        PluginKind::Refiner => v0_1::refiner::RefinerPre::new(pre).map(KindPre::RefinerV0_1),
    };
    legacy.map_err(|_| wrong(e))
}

/// The identity of a plugin version: BLAKE3 over the component's bytes and its
/// manifest, so that the same code with another config or limits is another version,
/// and the same bytes with the same manifest are always the same one.
pub fn version_hash(wasm: &[u8], manifest: &Manifest) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(wasm);
    hasher.update(b"\0flywheel-manifest\0");
    // A manifest always serializes; fall back to its debug form rather than panic.
    let text = serde_json::to_string(manifest).unwrap_or_else(|_| format!("{manifest:?}"));
    hasher.update(text.as_bytes());
    hasher.finalize().to_hex().to_string()
}

/// Read a precompiled artifact back.
///
/// Deserializing is `unsafe` in wasmtime because the bytes are trusted to be machine
/// code that wasmtime produced. They are: only [`store_precompiled`] writes these
/// files, into the runtime's own cache directory, named by the hash of the source
/// bytes and the engine's compatibility hash, and wasmtime checks the header and
/// engine settings before using them.
#[allow(unsafe_code)]
fn load_precompiled(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: see the function's doc comment.
    unsafe { Component::deserialize_file(engine, path) }
}

fn store_precompiled(component: &Component, path: &Path) -> wasmtime::Result<()> {
    let bytes = component.serialize()?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Tell a core module, a component, and junk apart before wasmtime's parser does.
fn check_magic(wasm: &[u8]) -> Result<(), LoadError> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(LoadError::NotAComponent(
            "the bytes do not start with the wasm magic number".into(),
        ));
    }
    if wasm[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::NotAComponent(
            "this is a core wasm module; build for `wasm32-wasip2` (or run `wasm-tools component new`) to get a component".into(),
        ));
    }
    Ok(())
}

fn classify_compile_error(e: &wasmtime::Error) -> LoadError {
    let msg = format!("{e:#}");
    if msg.contains("failed to parse") || msg.contains("invalid") || msg.contains("malformed") {
        LoadError::NotAComponent(msg)
    } else {
        LoadError::Compile(msg)
    }
}

fn export_names(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(name, item)| match item.ty {
            ComponentItem::ComponentFunc(_) => name.to_string(),
            _ => format!("{name} (not a function)"),
        })
        .collect()
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The `flywheel:policy` versions this host runs plugins of.
pub const CONTRACTS: [&str; 2] = ["0.1.0", "0.2.0"];

/// A component built against a contract this host does not know (a newer one) is
/// refused by name, rather than by the first type that fails to link. The contract's
/// interfaces (`flywheel:policy/types@X`, `log`, `config`, `kv`) are all imports.
fn check_contract(
    engine: &Engine,
    component: &Component,
    kind: PluginKind,
) -> Result<(), LoadError> {
    let mut versions: Vec<String> = component
        .component_type()
        .imports(engine)
        .filter_map(|(name, _)| {
            let (_, version) = name.strip_prefix("flywheel:policy/")?.split_once('@')?;
            Some(version.to_owned())
        })
        .collect();
    versions.sort();
    versions.dedup();
    if versions.is_empty() || versions.iter().any(|v| CONTRACTS.contains(&v.as_str())) {
        return Ok(());
    }
    Err(LoadError::WrongWorld {
        kind,
        detail: format!(
            "it was built against flywheel:policy@{}; this host runs {}: build it against this \
             host's wit/policy.wit (or its SDK), or upgrade the host",
            versions.join(", @"),
            CONTRACTS.join(" and ")
        ),
    })
}

/// Name the missing export, and say which world the component looks like instead.
fn check_world(engine: &Engine, component: &Component, kind: PluginKind) -> Result<(), LoadError> {
    let exports = export_names(engine, component);
    if exports.iter().any(|e| e == kind.export_name()) {
        return Ok(());
    }
    let looks_like = [PluginKind::Scorer, PluginKind::Router, PluginKind::Refiner]
        .into_iter()
        .find(|k| exports.iter().any(|e| e == k.export_name()))
        .map(|k| format!("; it looks like a {k} (it exports `{}`)", k.export_name()))
        .unwrap_or_else(|| {
            if exports.is_empty() {
                format!(
                    "; a Rust plugin exports its type with `flywheel_plugin::export_{kind}!(YourType)`"
                )
            } else {
                String::new()
            }
        });
    Err(LoadError::WrongWorld {
        kind,
        detail: format!(
            "missing export `{}` (exports: {}){looks_like}",
            kind.export_name(),
            list_or_none(&exports)
        ),
    })
}
