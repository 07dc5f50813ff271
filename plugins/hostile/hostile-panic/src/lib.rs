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
        if spared(&event) {
            return Ok(Vec::new());
        }
        if black_box(!event.id().is_empty() || event.id().is_empty()) {
            panic!("hostile-panic: deliberate panic");
        }
        Ok(Vec::new())
    }
}

/// Behave on events whose id starts with the `spare-ids-with-prefix` config value
/// (e.g. the host's `smoke-` fixtures), so the fixture passes an upload's smoke call
/// and misbehaves on real traffic: a bug the fixtures did not catch. Unset: never.
fn spared(event: &Event) -> bool {
    flywheel_plugin::config::get("spare-ids-with-prefix").is_some_and(|p| !p.is_empty() && event.id().starts_with(&p))
}

flywheel_plugin::export_scorer!(HostilePanic);
