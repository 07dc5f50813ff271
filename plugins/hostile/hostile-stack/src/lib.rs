//! Hostile fixture: a scorer that recurses until the stack overflows.
//!
//! Why: the host must survive a guest stack overflow (shadow stack out of
//! bounds, or wasmtime's `max_wasm_stack`) as a trap, not a crash. The
//! frame holds a `black_box`ed buffer and the recursive result is used
//! after the call, so the recursion is not a tail call and cannot be turned
//! into a loop; the exit condition can never hold but the compiler cannot
//! know that.

use std::hint::black_box;

use flywheel_plugin::{Event, Score, Scorer};

/// Recurses forever.
pub struct HostileStack;

#[inline(never)]
fn descend(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    if black_box(depth) == u64::MAX {
        return frame[0];
    }
    let below = descend(black_box(depth + 1));
    black_box(below.wrapping_add(frame[black_box(depth as usize) % 32]))
}

impl Scorer for HostileStack {
    fn score(_event: Event) -> Result<Vec<Score>, String> {
        let depth = descend(0);
        Ok(vec![
            Score::new("hostile-stack", 1.0).with_reason(format!("returned from depth {depth}")),
        ])
    }
}

flywheel_plugin::export_scorer!(HostileStack);
