//! `GET /v1/backup` (admin): a consistent copy of the whole store, taken while the
//! server runs (see `flywheel_store::backup` for how, and the format).
//!
//! The copy goes to an unnamed temporary file in the data directory first, and is
//! streamed from there, so a slow client never holds the store's watch open (or its
//! pause, at the end of the copy). The file has no name: it is gone once sent, or once
//! the server stops, whatever happens to the request.

use std::io::{Read, Seek};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::error::ApiError;
use crate::config::Role;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/backup", get(backup))
}

/// Niceness of the thread that copies the store (and of its watch thread): a backup
/// takes longer on a busy server rather than slowing requests down.
const BACKUP_NICE: i32 = 10;

/// Chunks the file is streamed in.
const CHUNK: usize = 256 << 10;

async fn backup(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = state.auth.check(&headers, &[Role::Admin])?;
    if state.backup_running.swap(true, Ordering::AcqRel) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup_in_progress",
            "a backup is being taken; try again when it is done",
        ));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let taker = state.clone();
    let spawned = std::thread::Builder::new()
        .name("flywheel-backup".into())
        .spawn(move || {
            let _running = Running(&taker.backup_running);
            // Serving comes first: the copy takes what CPU the requests leave.
            crate::pipeline::lower_priority(BACKUP_NICE);
            let _ = tx.send(take(&taker));
        });
    if let Err(e) = spawned {
        state.backup_running.store(false, Ordering::Release);
        return Err(ApiError::unavailable(format!(
            "cannot start the backup: {e}"
        )));
    }
    let taken = rx
        .await
        .unwrap_or_else(|_| Err(ApiError::internal("the backup thread stopped")));
    let (file, info) = match taken {
        Ok(taken) => taken,
        Err(e) => {
            metrics::counter!("flywheel_backups_total", "result" => "failed").increment(1);
            tracing::error!(actor = %caller.name, "backup failed: {}", e.message);
            return Err(e);
        }
    };
    metrics::counter!("flywheel_backups_total", "result" => "ok").increment(1);
    #[allow(clippy::cast_precision_loss)] // milliseconds, far below 2^52
    {
        metrics::histogram!("flywheel_backup_pause_seconds")
            .record(info.paused_ms.unwrap_or(0) as f64 / 1000.0);
        metrics::gauge!("flywheel_backup_last_success_timestamp_seconds")
            .set(info.created_at as f64 / 1000.0);
    }
    tracing::info!(actor = %caller.name, events = info.events, bytes = info.bytes, paused_ms = info.paused_ms, "backup sent");

    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        loop {
            let mut buf = vec![0; CHUNK];
            let sent = match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    tx.blocking_send(Ok(Bytes::from(buf)))
                }
                Err(e) => tx.blocking_send(Err(e)),
            };
            if sent.is_err() {
                return; // The client went away.
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let summary = serde_json::to_string(&info).unwrap_or_default();
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"flywheel-{}.backup\"",
                    info.created_at
                ),
            ),
            (header::CONTENT_LENGTH, info.bytes.to_string()),
            (
                header::HeaderName::from_static("x-flywheel-backup"),
                summary,
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Clears the one-at-a-time flag however the backup ends.
struct Running<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Takes the backup into an unnamed file in the data directory and rewinds it.
fn take(state: &AppState) -> Result<(std::fs::File, flywheel_store::BackupInfo), ApiError> {
    let dir = &state.config.data_dir;
    let mut file = tempfile::tempfile_in(dir).map_err(|e| {
        ApiError::unavailable(format!(
            "cannot create a temporary file in {}: {e}",
            dir.display()
        ))
    })?;
    let info = state.store.backup(&mut file)?;
    file.rewind()
        .map_err(|e| ApiError::internal(format!("rewinding the backup: {e}")))?;
    Ok((file, info))
}
