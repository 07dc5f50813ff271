//! Hostile fixture: a scorer that tries to reach the host through what WASI
//! links into every `wasm32-wasip2` guest: the filesystem, the environment and
//! the clock.
//!
//! Why: the host grants no preopened directories and no environment, and stops
//! the clocks at the Unix epoch (so that no decision depends on when it ran).
//! If any of that leaks it reports a score `escaped` = 1.0 (the test then
//! fails loudly); otherwise it returns `Err` with the OS error messages.

use flywheel_plugin::{Event, Score, Scorer};

/// Reads `/etc/passwd`, writes `/tmp/x`, lists the environment, reads the clocks.
pub struct HostileFile;

impl Scorer for HostileFile {
    fn score(_event: Event) -> Result<Vec<Score>, String> {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        if since_epoch.as_secs() > 0 {
            return Ok(vec![Score::new("escaped", 1.0).with_label("clock").with_reason(
                format!("read the host's clock: {} s since the epoch", since_epoch.as_secs()),
            )]);
        }
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        for i in 0..100_000u64 {
            spin = spin.wrapping_add(i * i);
        }
        if started.elapsed().as_nanos() > 0 {
            return Ok(vec![
                Score::new("escaped", 1.0)
                    .with_label("monotonic-clock")
                    .with_reason(format!("timed a loop ({spin})")),
            ]);
        }
        if let Some((key, _)) = std::env::vars().next() {
            return Ok(vec![
                Score::new("escaped", 1.0)
                    .with_label("environment")
                    .with_reason(format!("read the environment: {key}")),
            ]);
        }
        let read = std::fs::read_to_string("/etc/passwd");
        let write = std::fs::write("/tmp/x", b"hostile-file was here");
        match (read, write) {
            (Ok(content), _) => Ok(vec![
                Score::new("escaped", 1.0)
                    .with_label("read")
                    .with_reason(format!("read /etc/passwd: {} bytes", content.len())),
            ]),
            (_, Ok(())) => Ok(vec![
                Score::new("escaped", 1.0)
                    .with_label("write")
                    .with_reason("wrote /tmp/x: 21 bytes"),
            ]),
            (Err(r), Err(w)) => Err(format!("hostile-file: read /etc/passwd: {r}; write /tmp/x: {w}")),
        }
    }
}

flywheel_plugin::export_scorer!(HostileFile);
