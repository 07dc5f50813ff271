//! Hostile fixture: a scorer that never returns.
//!
//! Why: the host must enforce `timeout-ms` (epoch interruption or fuel) and
//! report a timeout, not hang a worker. The counter goes through
//! `black_box` so the optimiser can neither prove the loop side-effect free
//! nor fold it away.

use std::hint::black_box;

use flywheel_plugin::{Event, Score, Scorer};

/// Loops forever.
pub struct HostileLoop;

impl Scorer for HostileLoop {
    fn score(event: Event) -> Result<Vec<Score>, String> {
        if spared(&event) {
            return Ok(Vec::new());
        }
        let mut counter: u64 = 0;
        loop {
            counter = black_box(counter.wrapping_add(1));
        }
    }
}

/// Behave on events whose id starts with the `spare-ids-with-prefix` config value
/// (e.g. the host's `smoke-` fixtures), so the fixture passes an upload's smoke call
/// and misbehaves on real traffic: a bug the fixtures did not catch. Unset: never.
fn spared(event: &Event) -> bool {
    flywheel_plugin::config::get("spare-ids-with-prefix").is_some_and(|p| !p.is_empty() && event.id().starts_with(&p))
}

flywheel_plugin::export_scorer!(HostileLoop);
