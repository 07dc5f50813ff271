//! Leveled logging into the host's logs (WIT interface `log`).
//!
//! The host tags every line with the plugin's name and version, truncates
//! lines over 4 KiB and may rate-limit, so log decisions, not data. On
//! native targets lines go to stderr and are recorded for
//! [`testing::take_logs`](crate::testing::take_logs).

/// A log level (WIT `log.level`).
pub use crate::__private::bindings::flywheel::policy::log::Level;

/// Log `message` at `level`.
///
/// Why a single entry point: the level helpers below are thin wrappers, and
/// code that computes its level can call this directly.
pub fn log(level: Level, message: &str) {
    #[cfg(target_family = "wasm")]
    crate::__private::bindings::flywheel::policy::log::log(level, message);
    #[cfg(not(target_family = "wasm"))]
    crate::testing::fake_log(level, message);
}

/// Log at `trace`: step-by-step detail, normally filtered out by the host.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Log at `debug`: why a decision was taken, for the plugin's author.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Log at `info`: rare, noteworthy events (e.g. a proposal was made).
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Log at `warn`: something is off but the call still succeeds (e.g. a bad
/// config value replaced by its default).
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Log at `error`: the call is about to fail.
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// The lower-case name of a level (`trace` ... `error`).
///
/// Why: for formatting log lines in fakes and tools; the generated enum has
/// no `Display`.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}
