//! Hostile fixture: a scorer that tries to escape the sandbox through the
//! filesystem.
//!
//! Why: guests built for `wasm32-wasip2` link against `wasi:filesystem`;
//! the host must grant no preopened directories, so both calls fail. If
//! either succeeds it reports a score `escaped` = 1.0 (the test then fails
//! loudly); otherwise it returns `Err` with both OS error messages.

use flywheel_plugin::{Event, Score, Scorer};

/// Reads `/etc/passwd` and writes `/tmp/x`.
pub struct HostileFile;

impl Scorer for HostileFile {
    fn score(_event: Event) -> Result<Vec<Score>, String> {
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
