//! Accepting connections: how many may be open at once, and how long a client may take
//! to send a request. hyper waits for ever by default, so a client that opened
//! connections and sent nothing, or a byte a minute, would keep them, and with enough of
//! them the process would have no file descriptor left for its store or a plugin upload.
//! This is `axum::serve` with those three bounds (`[limits]` in the config).

use std::future::Future;
use std::sync::Arc;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::timeout::RequestBodyTimeout;

use crate::config::RequestLimits;

/// File descriptors kept for the process itself (the store's files, the plugin
/// directory and its watcher, uploads, the log) when sizing the connection limit.
const RESERVED_FDS: u64 = 256;

/// The bounds on client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; past it, `accept` waits for one to close.
    pub max_connections: usize,
    /// To send a request's headers, or to start the next request on a kept-alive one.
    pub header_timeout: Duration,
    /// Between two pieces of a request body.
    pub body_timeout: Duration,
}

impl ConnectionLimits {
    /// The configured limits. The process's soft open-file limit is raised (up to the
    /// hard one) to make room for `max-connections`, as many shells start at 1024; where
    /// it cannot be, `max-connections` is lowered to fit, with a warning.
    pub fn from_config(limits: &RequestLimits) -> Self {
        let configured = limits.max_connections.get();
        let wanted = (configured as u64).saturating_add(RESERVED_FDS);
        let max_connections = match open_file_limit(wanted) {
            Some(files) if files < wanted => {
                let room = usize::try_from(files.saturating_sub(RESERVED_FDS))
                    .unwrap_or(usize::MAX)
                    .max(1);
                tracing::warn!(
                    "limits.max-connections = {configured}, but the process may open only \
                     {files} files; accepting at most {room} connections (raise `ulimit -n`)"
                );
                room
            }
            _ => configured,
        };
        Self {
            max_connections,
            header_timeout: Duration::from_millis(limits.header_timeout_ms.get()),
            body_timeout: Duration::from_millis(limits.body_timeout_ms.get()),
        }
    }
}

/// The soft limit on open files after trying to raise it to `wanted` (never above the
/// hard limit); `None` when unlimited or the platform does not tell.
fn open_file_limit(wanted: u64) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let current = limit.current?;
        let target = limit.maximum.map_or(wanted, |hard| wanted.min(hard));
        if target <= current {
            return Some(current);
        }
        let raised = Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => Some(target),
            Err(e) => {
                tracing::debug!("could not raise the open-file limit to {target}: {e}");
                Some(current)
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = wanted;
        None
    }
}

/// At most one warning this often while the connection limit holds clients back.
const LIMIT_WARNING_EVERY: Duration = Duration::from_secs(10);

static OPEN: LazyLock<metrics::Gauge> =
    LazyLock::new(|| metrics::gauge!("flywheel_http_connections_open"));
static AT_LIMIT: LazyLock<metrics::Counter> =
    LazyLock::new(|| metrics::counter!("flywheel_http_connections_limited_total"));

/// Serve `app` on `listener` until `shutdown` resolves, then stop accepting, let each
/// connection finish the request it is on, and return once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // The body timeout wraps the router from outside: inside, axum's routes take only
    // its own body type.
    let service = RequestBodyTimeout::new(app, limits.body_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut warned: Option<Instant> = None;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                AT_LIMIT.increment(1);
                if warned.is_none_or(|at| at.elapsed() > LIMIT_WARNING_EVERY) {
                    warned = Some(Instant::now());
                    tracing::warn!(
                        "{} connections are open (limits.max-connections): new ones wait \
                         until one closes",
                        limits.max_connections
                    );
                }
                tokio::select! {
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // As axum::serve does: small JSON answers should not wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("could not set TCP_NODELAY: {e}");
        }
        let conn = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        let conn = graceful.watch(conn);
        OPEN.increment(1.0);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // A client that went away, or one that was too slow.
                tracing::debug!("connection closed: {e}");
            }
            OPEN.decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// After a failed `accept`: go on at once when only that connection failed; otherwise
/// (out of file descriptors, say) log it and wait a moment, as the error will repeat.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionRefused | K::ConnectionReset | K::Interrupted
    ) {
        return;
    }
    tracing::error!("accepting a connection failed: {e}; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
