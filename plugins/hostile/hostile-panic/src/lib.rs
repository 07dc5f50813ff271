//! Hostile fixture: a scorer that panics.
//!
//! Why: with `panic = "abort"` a panic prints its message to stderr and
//! traps; the host must report a plugin error (ideally with the message)
//! and keep serving other calls.

use std::hint::black_box;

use flywheel_plugin::{Event, Score, Scorer};

/// Panics on every call.
pub struct HostilePanic;

impl Scorer for HostilePanic {
    fn score(event: Event) -> Result<Vec<Score>, String> {
        if black_box(!event.id.is_empty() || event.id.is_empty()) {
            panic!("hostile-panic: deliberate panic");
        }
        Ok(Vec::new())
    }
}

flywheel_plugin::export_scorer!(HostilePanic);
