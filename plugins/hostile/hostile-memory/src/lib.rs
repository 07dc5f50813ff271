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
    fn score(event: Event) -> Result<Vec<Score>, String> {
        if spared(&event) {
            return Ok(Vec::new());
        }
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let chunk = black_box(vec![1u8; CHUNK]);
            hoard.push(chunk);
            black_box(&mut hoard);
        }
    }
}

/// Behave on events whose id starts with the `spare-ids-with-prefix` config value
/// (e.g. the host's `smoke-` fixtures), so the fixture passes an upload's smoke call
/// and misbehaves on real traffic: a bug the fixtures did not catch. Unset: never.
fn spared(event: &Event) -> bool {
    flywheel_plugin::config::get("spare-ids-with-prefix").is_some_and(|p| !p.is_empty() && event.id().starts_with(&p))
}

flywheel_plugin::export_scorer!(HostileMemory);
