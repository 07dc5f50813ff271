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
    fn score(_event: Event) -> Result<Vec<Score>, String> {
        let mut counter: u64 = 0;
        loop {
            counter = black_box(counter.wrapping_add(1));
        }
    }
}

flywheel_plugin::export_scorer!(HostileLoop);
