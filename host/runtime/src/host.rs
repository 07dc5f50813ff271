//! What a plugin instance can reach: the `log`, `config` and `kv` imports, an empty
//! WASI context, and the memory limiter. One [`HostState`] lives in each `Store`.
//!
//! Per-call state (logs, whether the memory cap was hit) is reset before every call so
//! that a reused instance reports only its own call.

use std::collections::BTreeMap;
use std::sync::Arc;

use flywheel_model::PluginRef;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{wit, wit_config, wit_kv, wit_log};
use crate::kv::{KvBackend, KvFailure, check_key};

/// Longest log line kept, in bytes; longer lines are cut.
const MAX_LOG_LINE: usize = 4096;
/// Log lines kept per call for the caller (all lines still go to `tracing`).
const MAX_LOGS_PER_CALL: usize = 32;

/// A log line a plugin wrote during a call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// What every instance of one plugin version shares: identity, config and kv access.
pub(crate) struct PluginShared {
    pub(crate) id: PluginRef,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) kv: Arc<dyn KvBackend>,
    pub(crate) kv_quota: u64,
}

/// Caps linear memory and remembers whether the cap was hit, so that the trap a
/// guest raises when its allocator fails is reported as out-of-memory, not as a panic.
pub(crate) struct MemoryLimiter {
    pub(crate) cap: usize,
    pub(crate) peak: usize,
    pub(crate) denied: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.denied = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The data of one `Store`: one instance of one plugin version.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) shared: Arc<PluginShared>,
    pub(crate) logs: Vec<LogLine>,
}

impl HostState {
    pub(crate) fn new(shared: Arc<PluginShared>, memory_cap: usize) -> Self {
        Self {
            // No preopens, no env, no args, no network, no inherited stdio: a guest
            // built for WASI links, and every capability is empty.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                cap: memory_cap,
                peak: 0,
                denied: false,
            },
            shared,
            logs: Vec::new(),
        }
    }

    /// Forget what the previous call left behind.
    pub(crate) fn begin_call(&mut self) {
        self.limiter.denied = false;
        self.logs.clear();
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for HostState {}

impl wit_log::Host for HostState {
    fn log(&mut self, level: wit_log::Level, mut message: String) {
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let plugin = &self.shared.id.name;
        let level = match level {
            wit_log::Level::Trace => {
                tracing::trace!(target: "flywheel::plugin", plugin, "{message}");
                "trace"
            }
            wit_log::Level::Debug => {
                tracing::debug!(target: "flywheel::plugin", plugin, "{message}");
                "debug"
            }
            wit_log::Level::Info => {
                tracing::info!(target: "flywheel::plugin", plugin, "{message}");
                "info"
            }
            wit_log::Level::Warn => {
                tracing::warn!(target: "flywheel::plugin", plugin, "{message}");
                "warn"
            }
            wit_log::Level::Error => {
                tracing::error!(target: "flywheel::plugin", plugin, "{message}");
                "error"
            }
        };
        if self.logs.len() < MAX_LOGS_PER_CALL {
            self.logs.push(LogLine { level, message });
        }
    }
}

impl wit_config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.shared.config.get(&key).cloned()
    }

    fn entries(&mut self) -> Vec<(String, String)> {
        self.shared
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn kv_error(f: KvFailure) -> wit_kv::Error {
    match f {
        KvFailure::QuotaExceeded(q) => wit_kv::Error::QuotaExceeded(q),
        KvFailure::InvalidKey => wit_kv::Error::InvalidKey,
        KvFailure::Unavailable(m) => wit_kv::Error::Unavailable(m),
    }
}

impl wit_kv::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        if check_key(&key).is_err() {
            return None;
        }
        match self.shared.kv.get(&self.shared.id.name, &key) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(plugin = %self.shared.id.name, "kv get failed: {e}");
                None
            }
        }
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), wit_kv::Error> {
        check_key(&key).map_err(kv_error)?;
        let shared = &self.shared;
        shared
            .kv
            .set(&shared.id.name, &key, &value, shared.kv_quota)
            .map_err(kv_error)
    }

    fn delete(&mut self, key: String) -> Result<(), wit_kv::Error> {
        check_key(&key).map_err(kv_error)?;
        self.shared
            .kv
            .delete(&self.shared.id.name, &key)
            .map_err(kv_error)
    }
}
