//! Helpers for Flywheel's end-to-end tests: the compiled plugins (built by `build.rs`),
//! fixture events, and a handle on a real `flywheel` server process.

pub mod fixtures;
pub mod server;

/// A compiled plugin and its manifest, as built from `plugins/`.
#[derive(Debug, Clone, Copy)]
pub struct Artifact {
    /// The crate's package name (also the plugin's name).
    pub name: &'static str,
    /// Absolute path of the `.wasm` component.
    pub wasm: &'static str,
    /// Absolute path of the `plugin.toml`.
    pub manifest: &'static str,
}

/// One constant per plugin, plus `EXAMPLES`, `HOSTILE` and `COMPAT`.
pub mod plugins {
    use super::Artifact;
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}
