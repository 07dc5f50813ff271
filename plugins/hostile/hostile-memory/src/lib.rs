//! Hostile fixture: a scorer that allocates until something stops it.
//!
//! Why: the host must cap linear memory (`memory-mib`) so one plugin cannot
//! exhaust the machine; when `memory.grow` fails the allocator aborts and
//! the call traps. Every chunk is written (`vec![1; ..]`) and passed
//! through `black_box`, so the allocations cannot be optimised away.

use std::hint::black_box;

use flywheel_plugin::{Event, Score, Scorer};

const CHUNK: usize = 1 << 20;

/// Grows memory 1 MiB at a time, forever.
pub struct HostileMemory;

impl Scorer for HostileMemory {
    fn score(_event: Event) -> Result<Vec<Score>, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let chunk = black_box(vec![1u8; CHUNK]);
            hoard.push(chunk);
            black_box(&mut hoard);
        }
    }
}

flywheel_plugin::export_scorer!(HostileMemory);
