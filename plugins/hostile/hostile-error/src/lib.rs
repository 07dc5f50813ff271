//! Hostile fixture: a scorer that always fails.
//!
//! Why: the host must record a plugin's `Err` as a plugin error and, per the
//! manifest's `failure-mode = "fail-open"`, carry on without its scores.

use flywheel_plugin::{Event, Score, Scorer};

/// Refuses every event.
pub struct HostileError;

impl Scorer for HostileError {
    fn score(_event: Event) -> Result<Vec<Score>, String> {
        Err("hostile-error: refuses to score".to_owned())
    }
}

flywheel_plugin::export_scorer!(HostileError);
