//! Flywheel's plugin runtime: one wasmtime engine, plugins loaded and checked against
//! their world, precompiled once, and called with a deadline, a memory cap and a
//! result cap. It knows no HTTP and no database.
mod bindings;
mod engine;
mod epoch;
pub mod error;
mod host;
pub mod kv;
pub mod manifest;
mod plugin;

pub use bindings::{PreparedEvent, PreparedScores};
pub use engine::{Runtime, RuntimeOptions, version_hash};
pub use error::{LoadError, PluginFailure, RuntimeError};
pub use host::LogLine;
pub use kv::{KvBackend, KvFailure, MemoryKv};
pub use manifest::{Limits, Manifest};
pub use plugin::{CallOutcome, Plugin, PluginCounters, PluginStats};
