//! Flywheel's server: configuration, event input, the pipeline and the HTTP API, over
//! the plugin runtime (`flywheel-runtime`) and the store (`flywheel-store`).
//!
//! `server::run` is what `flywheel serve` calls; `api::app` is the router on its own,
//! for tests that serve it in-process.

pub mod api;
pub mod config;
pub mod connections;
pub mod datasets;
pub mod input;
pub mod pipeline;
pub mod prompts;
pub mod registry;
pub mod replay;
pub mod retention;
pub mod server;
pub mod stats;
