//! Start-up and shutdown of `flywheel serve`: open the store, start the runtime, load
//! the plugin directory, start the pipeline (which resumes pending events), then serve.
//!
//! The only place that decides whether the server may run open (no tokens): then it
//! must listen on loopback.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use flywheel_model::PluginRef;
use flywheel_runtime::{KvBackend, KvFailure, Runtime, RuntimeOptions};
use flywheel_store::{KvError, Store, StoreOptions};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::api::{AppState, app, auth::Auth};
use crate::config::Config;
use crate::pipeline::{LiveSet, Pipeline, PoolOptions};
use crate::prompts::Prompts;
use crate::registry::{Registry, RegistryError};

/// How long the refine thread naps after counting what was waiting: automatic refines
/// may start this much later, and failed events wake it at most this often.
const REFINE_NAP: std::time::Duration = std::time::Duration::from_millis(20);
/// Failures waiting to be counted. A full queue drops a count (the pipeline never waits
/// on it); at one nap per REFINE_NAP that takes over 200,000 failed events a second.
const REFINE_QUEUE: usize = 4096;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "refusing to listen on {0} with no tokens configured: an open API may only listen on loopback (add [[tokens]] to the config, or listen on 127.0.0.1)"
    )]
    OpenOnPublicAddress(std::net::SocketAddr),
    #[error("could not open the store in {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: flywheel_store::StoreError,
    },
    #[error(transparent)]
    Runtime(#[from] flywheel_runtime::RuntimeError),
    #[error("could not restore the plugin registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("could not listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
}

/// Plugins' key-value data, kept in the store.
pub struct StoreKv(pub Store);

fn kv_failure(e: KvError) -> KvFailure {
    match e {
        KvError::QuotaExceeded { quota } => KvFailure::QuotaExceeded(quota),
        KvError::InvalidKey => KvFailure::InvalidKey,
        other => KvFailure::Unavailable(other.to_string()),
    }
}

impl KvBackend for StoreKv {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, KvFailure> {
        self.0.kv_get(plugin, key).map_err(kv_failure)
    }

    fn set(&self, plugin: &str, key: &str, value: &[u8], quota: u64) -> Result<(), KvFailure> {
        self.0.kv_set(plugin, key, value, quota).map_err(kv_failure)
    }

    fn delete(&self, plugin: &str, key: &str) -> Result<(), KvFailure> {
        self.0.kv_delete(plugin, key).map_err(kv_failure)
    }
}

/// The process-wide Prometheus recorder (metrics macros write to one global).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5,
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed, in which case ours stays unused.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Everything a running server holds, built but not yet listening.
pub fn build_state(config: Config) -> Result<Arc<AppState>, StartError> {
    let tokens = config.resolve_tokens()?;
    let auth = Auth::new(tokens);
    if auth.is_open() && !config.listen.ip().is_loopback() {
        return Err(StartError::OpenOnPublicAddress(config.listen));
    }
    let store_dir = config.data_dir.join("store");
    let store = Store::open(
        &store_dir,
        StoreOptions {
            durable: config.durable,
            commit_delay: std::time::Duration::from_micros(config.commit_delay_us),
            ..StoreOptions::default()
        },
    )
    .map_err(|source| StartError::Store {
        path: store_dir.display().to_string(),
        source,
    })?;
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: Some(config.data_dir.join("cache")),
        fresh_instance_per_call: config.pipeline.fresh_instance_per_call,
        ..RuntimeOptions::default()
    })?;
    let kv: Arc<dyn KvBackend> = Arc::new(StoreKv(store.clone()));
    let pipeline = Pipeline::start(
        store.clone(),
        LiveSet::default(),
        PoolOptions {
            workers: config.worker_count(),
            queue_capacity: config.pipeline.queue_capacity,
            nice: config.pipeline.nice,
        },
    );
    let registry = Arc::new(Registry::open(
        store.clone(),
        runtime.clone(),
        kv,
        pipeline.clone(),
    )?);
    let (qtx, qrx) = crossbeam_channel::bounded::<PluginRef>(64);
    pipeline.on_quarantine(config.pipeline.quarantine_after, qtx);
    {
        let registry = Arc::downgrade(&registry);
        let after = config.pipeline.quarantine_after;
        std::thread::Builder::new()
            .name("flywheel-quarantine".into())
            .spawn(move || {
                while let Ok(id) = qrx.recv() {
                    let Some(registry) = registry.upgrade() else {
                        return;
                    };
                    registry.quarantine(&id, after);
                }
            })
            .map_err(|e| StartError::Serve(std::io::Error::other(e)))?;
    }
    let prompts = Arc::new(
        Prompts::open(store.clone(), pipeline.clone(), &config.prompts)
            .map_err(|e| StartError::Serve(std::io::Error::other(e.to_string())))?,
    );
    let (ftx, frx) = crossbeam_channel::bounded::<flywheel_model::PromptRef>(REFINE_QUEUE);
    pipeline.on_prompt_failure(ftx);
    {
        let prompts = Arc::downgrade(&prompts);
        std::thread::Builder::new()
            .name("flywheel-refine".into())
            .spawn(move || {
                // Counting a failure takes well under a microsecond; waking this thread
                // for each one cost 5-8 µs per event at 1,000 events/s. So it takes what
                // is waiting, then naps, and wakes at most every REFINE_NAP.
                while let Ok(first) = frx.recv() {
                    let Some(prompts) = prompts.upgrade() else {
                        return;
                    };
                    prompts.note_failure(&first);
                    for prompt in frx.try_iter() {
                        prompts.note_failure(&prompt);
                    }
                    drop(prompts);
                    std::thread::sleep(REFINE_NAP);
                }
            })
            .map_err(|e| StartError::Serve(std::io::Error::other(e)))?;
    }
    let mut watcher = None;
    match config.effective_plugins_dir() {
        Some(dir) => {
            registry.scan_dir(&dir);
            for e in registry.dir_errors() {
                tracing::error!(path = %e.path, "plugin not loaded: {}", e.error);
            }
            if config.pipeline.watch_plugins {
                watcher = registry.watch_dir(dir);
            }
        }
        None => {
            tracing::warn!("no plugin directory: only plugins uploaded through the API will run")
        }
    }
    for p in pipeline.live().all() {
        tracing::info!(plugin = %p.id(), kind = %p.kind(), "plugin live");
    }
    // Only now, with every stored and directory plugin loaded, may the events left
    // pending by the last run be decided.
    pipeline.resume_stored();
    Ok(Arc::new(AppState {
        config,
        store,
        runtime,
        pipeline,
        auth,
        metrics: metrics_handle(),
        registry,
        prompts,
        _watcher: watcher,
        ready: std::sync::atomic::AtomicBool::new(false),
        backup_running: std::sync::atomic::AtomicBool::new(false),
        stats_cache: crate::stats::StatsCache::default(),
    }))
}

/// Run the server until Ctrl-C or SIGTERM.
pub async fn run(config: Config) -> Result<(), StartError> {
    let addr = config.listen;
    // Start-up calls plugins (smoke tests, warm-up), which must not run on an async
    // worker thread: WASI's synchronous bindings block on their own.
    let state = tokio::task::spawn_blocking(move || build_state(config))
        .await
        .map_err(|e| StartError::Serve(std::io::Error::other(e)))??;
    if state.auth.is_open() {
        tracing::warn!(
            "no tokens configured: the API is open to anyone on this machine (loopback only)"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let local = listener.local_addr().map_err(StartError::Serve)?;
    state.ready.store(true, Ordering::Release);
    // Tests and scripts read this line to learn the port.
    println!("flywheel listening on http://{local}");
    tracing::info!(%local, "listening");
    let pipeline = state.pipeline.clone();
    let store = state.store.clone();
    let limits = crate::connections::ConnectionLimits::from_config(&state.config.limits);
    let retention = tokio::spawn(crate::retention::sweep(
        store.clone(),
        state.config.retention.clone(),
    ));
    crate::connections::serve(listener, app(state), limits, shutdown_signal()).await;
    retention.abort();
    pipeline.shutdown();
    let _ = store.flush();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
