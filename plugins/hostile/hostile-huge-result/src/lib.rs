//! Hostile fixture: a scorer whose result is far larger than allowed.
//!
//! Why: the host must enforce `max-result-kib` (64 KiB) and treat the call
//! as failed rather than store megabytes per event. 4000 scores with
//! ~300-byte reasons are about 1.3 MB of strings: well over the limit but
//! comfortably inside the 16 MiB memory cap, so it is the result check, not
//! the memory cap, that must catch it.

use flywheel_plugin::{Event, Score, Scorer};

/// How many scores to return.
pub const COUNT: usize = 4000;

/// Returns a huge list of scores.
pub struct HostileHugeResult;

impl Scorer for HostileHugeResult {
    fn score(_event: Event) -> Result<Vec<Score>, String> {
        let filler = "hostile-huge-result pads every reason to make the result enormous. ".repeat(4);
        Ok((0..COUNT)
            .map(|i| {
                Score::new(format!("huge_{i:04}"), (i % 100) as f64 / 100.0)
                    .with_label("hostile")
                    .with_reason(format!("score {i} of {COUNT}: {filler}"))
            })
            .collect())
    }
}

flywheel_plugin::export_scorer!(HostileHugeResult);
