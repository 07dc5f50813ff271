//! The runtime's errors: why a plugin could not be loaded, and why a call failed.
//!
//! Load errors are for the person uploading a plugin, so they name the missing export
//! or the wrong type instead of passing on a wasmtime backtrace. Call errors carry an
//! [`ErrorClass`] so operators can tell a slow policy from a buggy or hostile one.

use std::fmt;

use flywheel_model::{CallError, ErrorClass, PluginKind, PluginRef};

/// Why a component could not become a runnable plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifest is missing, malformed, or out of range.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// The bytes are not a WebAssembly component (a core module, or not wasm at all).
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component does not export what its manifest's kind requires.
    #[error("component does not implement the `{kind}` world: {detail}")]
    WrongWorld { kind: PluginKind, detail: String },
    /// The component imports something Flywheel does not provide.
    #[error("component imports something Flywheel does not provide: {0}")]
    Link(String),
    /// Compilation or the precompiled cache failed.
    #[error("could not compile the component: {0}")]
    Compile(String),
    /// Reading a plugin file failed.
    #[error("could not read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why the runtime itself could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("could not configure the wasm engine: {0}")]
    Engine(String),
    #[error("could not prepare the cache directory {path}: {source}")]
    Cache {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A failed plugin call: what went wrong, classified, and which build did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    pub plugin: PluginRef,
    pub class: ErrorClass,
    pub message: String,
}

impl PluginFailure {
    /// The record kept beside the event.
    pub fn to_call_error(&self) -> CallError {
        CallError {
            class: self.class,
            message: self.message.clone(),
        }
    }
}

impl fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin {} failed ({}): {}",
            self.plugin, self.class, self.message
        )
    }
}

impl std::error::Error for PluginFailure {}
