//! What a plugin instance can reach: the `log`, `config` and `kv` imports, an empty
//! WASI context, and the memory limiter. One [`HostState`] lives in each `Store`.
//!
//! Per-call state (logs, whether the memory cap was hit) is reset before every call so
//! that a reused instance reports only its own call.

use std::collections::BTreeMap;
use std::sync::Arc;

use flywheel_model::PluginRef;
use wasmtime::ResourceLimiter;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{
    EventHandle, PreparedEvent, signal_to_wit, wit, wit_config, wit_kv, wit_log,
};
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
    pub(crate) id: Arc<PluginRef>,
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

/// The clocks a plugin sees: always the Unix epoch (wall) and 0 (monotonic).
struct StoppedClock;

impl wasmtime_wasi::HostWallClock for StoppedClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }

    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for StoppedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
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
            // built for WASI links, and every capability is empty. The clocks are
            // stopped at the Unix epoch: a decision that depended on when it ran could
            // not be replayed or shadowed (an event's own time is `received-at`).
            wasi: WasiCtx::builder()
                .wall_clock(StoppedClock)
                .monotonic_clock(StoppedClock)
                .build(),
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

/// The `event` resource: every method reads one field of the event the handle lends.
impl wit::HostEvent for HostState {
    fn id(&mut self, event: Resource<EventHandle>) -> wasmtime::Result<String> {
        Ok(self.event(&event)?.id.clone())
    }

    fn received_at(&mut self, event: Resource<EventHandle>) -> wasmtime::Result<u64> {
        Ok(self.event(&event)?.received_at)
    }

    fn trace_id(&mut self, event: Resource<EventHandle>) -> wasmtime::Result<Option<String>> {
        Ok(self.event(&event)?.trace_id.clone())
    }

    fn session_id(&mut self, event: Resource<EventHandle>) -> wasmtime::Result<Option<String>> {
        Ok(self.event(&event)?.session_id.clone())
    }

    fn user_id(&mut self, event: Resource<EventHandle>) -> wasmtime::Result<Option<String>> {
        Ok(self.event(&event)?.user_id.clone())
    }

    fn model(&mut self, event: Resource<EventHandle>) -> wasmtime::Result<Option<String>> {
        Ok(self.event(&event)?.model.clone())
    }

    fn prompt(&mut self, event: Resource<EventHandle>) -> wasmtime::Result<Option<wit::PromptRef>> {
        Ok(self.event(&event)?.prompt.as_ref().map(|p| wit::PromptRef {
            name: p.name.clone(),
            version: p.version.clone(),
        }))
    }

    fn input(&mut self, event: Resource<EventHandle>) -> wasmtime::Result<String> {
        Ok(self.event(&event)?.input.clone())
    }

    fn output(&mut self, event: Resource<EventHandle>) -> wasmtime::Result<String> {
        Ok(self.event(&event)?.output.clone())
    }

    fn context(&mut self, event: Resource<EventHandle>) -> wasmtime::Result<Vec<String>> {
        Ok(self.event(&event)?.context.clone())
    }

    fn signal(&mut self, event: Resource<EventHandle>) -> wasmtime::Result<wit::Signal> {
        Ok(signal_to_wit(&self.event(&event)?.feedback))
    }

    fn metadata(
        &mut self,
        event: Resource<EventHandle>,
    ) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .event(&event)?
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn drop(&mut self, event: Resource<EventHandle>) -> wasmtime::Result<()> {
        self.table.delete(event)?;
        Ok(())
    }
}

impl HostState {
    /// The event a handle points at; a handle the host did not lend traps the guest.
    fn event(&self, handle: &Resource<EventHandle>) -> wasmtime::Result<&flywheel_model::Event> {
        Ok(&self.table.get(handle)?.0)
    }

    /// Lend `event` to the guest for one call: a new handle in this instance's table.
    pub(crate) fn lend(
        &mut self,
        event: &PreparedEvent,
    ) -> wasmtime::Result<Resource<EventHandle>> {
        Ok(self.table.push(EventHandle(event.event.clone()))?)
    }

    /// Take back a lent handle after the call, if the guest has not dropped it (a
    /// guest that keeps one must not keep the event alive in the host).
    pub(crate) fn reclaim(&mut self, rep: u32) {
        // Only an event handle is ever removed: `delete` checks the type, so a slot
        // the guest freed and WASI reused is left alone.
        let _ = self.table.delete(Resource::<EventHandle>::new_own(rep));
    }

    fn write_log(&mut self, level: &'static str, mut message: String) {
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        // Tagged with the version too: a live version and its shadow log side by side.
        let plugin = &self.shared.id.name;
        let version = &self.shared.id.version;
        match level {
            "trace" => tracing::trace!(target: "flywheel::plugin", plugin, version, "{message}"),
            "debug" => tracing::debug!(target: "flywheel::plugin", plugin, version, "{message}"),
            "info" => tracing::info!(target: "flywheel::plugin", plugin, version, "{message}"),
            "warn" => tracing::warn!(target: "flywheel::plugin", plugin, version, "{message}"),
            _ => tracing::error!(target: "flywheel::plugin", plugin, version, "{message}"),
        }
        if self.logs.len() < MAX_LOGS_PER_CALL {
            self.logs.push(LogLine { level, message });
        }
    }

    fn config_get(&self, key: &str) -> Option<String> {
        self.shared.config.get(key).cloned()
    }

    fn config_entries(&self) -> Vec<(String, String)> {
        self.shared
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        if check_key(key).is_err() {
            return None;
        }
        match self.shared.kv.get(&self.shared.id.name, key) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(plugin = %self.shared.id.name, "kv get failed: {e}");
                None
            }
        }
    }

    fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), KvFailure> {
        check_key(key)?;
        let shared = &self.shared;
        shared.kv.set(&shared.id.name, key, value, shared.kv_quota)
    }

    fn kv_delete(&self, key: &str) -> Result<(), KvFailure> {
        check_key(key)?;
        self.shared.kv.delete(&self.shared.id.name, key)
    }
}

/// The `log`, `config` and `kv` imports of one contract version: the same host
/// functions under each version's generated traits.
macro_rules! host_imports {
    ($types:ident, $log:ident, $config:ident, $kv:ident) => {
        impl $types::Host for HostState {}

        impl $log::Host for HostState {
            fn log(&mut self, level: $log::Level, message: String) {
                let level = match level {
                    $log::Level::Trace => "trace",
                    $log::Level::Debug => "debug",
                    $log::Level::Info => "info",
                    $log::Level::Warn => "warn",
                    $log::Level::Error => "error",
                };
                self.write_log(level, message);
            }
        }

        impl $config::Host for HostState {
            fn get(&mut self, key: String) -> Option<String> {
                self.config_get(&key)
            }

            fn entries(&mut self) -> Vec<(String, String)> {
                self.config_entries()
            }
        }

        impl $kv::Host for HostState {
            fn get(&mut self, key: String) -> Option<Vec<u8>> {
                self.kv_get(&key)
            }

            fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), $kv::Error> {
                self.kv_set(&key, &value).map_err(kv_error)
            }

            fn delete(&mut self, key: String) -> Result<(), $kv::Error> {
                self.kv_delete(&key).map_err(kv_error)
            }
        }

        fn kv_error(f: KvFailure) -> $kv::Error {
            match f {
                KvFailure::QuotaExceeded(q) => $kv::Error::QuotaExceeded(q),
                KvFailure::InvalidKey => $kv::Error::InvalidKey,
                KvFailure::Unavailable(m) => $kv::Error::Unavailable(m),
            }
        }
    };
}

host_imports!(wit, wit_log, wit_config, wit_kv);

mod legacy {
    use super::{HostState, KvFailure};
    use crate::bindings::v0_1::{wit, wit_config, wit_kv, wit_log};

    host_imports!(wit, wit_log, wit_config, wit_kv);
}
