//! The HTTP API: routes, shared state, health and metrics endpoints.
//!
//! Handlers translate HTTP to calls on the store and the pipeline and back; they hold
//! no lock and no plugin instance across an `.await`. Errors become responses in
//! exactly one place, [`error::ApiError`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flywheel_runtime::Runtime;
use flywheel_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::config::Config;
use crate::pipeline::Pipeline;

pub mod auth;
pub mod backup;
pub mod console;
pub mod error;
pub mod events;
pub mod plugin_kv;
pub mod plugins;
pub mod prompts;
pub mod queues;
pub mod stats;

use auth::Auth;
use error::ApiError;

/// What every handler can reach.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub runtime: Runtime,
    pub pipeline: Pipeline,
    pub auth: Auth,
    pub metrics: PrometheusHandle,
    pub registry: Arc<crate::registry::Registry>,
    pub prompts: Arc<crate::prompts::Prompts>,
    /// Keeps the plugin-directory watcher alive for the server's lifetime.
    pub _watcher: Option<notify::RecommendedWatcher>,
    /// Set once start-up (store open, plugins loaded, workers started) is done.
    pub ready: AtomicBool,
    /// Set while `GET /v1/backup` takes a copy: one at a time (each watches every write
    /// and pauses writes at its end).
    pub backup_running: AtomicBool,
    /// The dashboard's figures for hours that can no longer change.
    pub stats_cache: crate::stats::StatsCache,
}

/// The whole API as an axum router, so tests can serve it on an ephemeral port.
pub fn app(state: Arc<AppState>) -> Router {
    let body_limit = state.config.limits.max_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route(
            "/v1/events",
            get(events::list)
                .post(events::post)
                .delete(events::erase_matching),
        )
        .route(
            "/v1/events/{id}",
            get(events::get_one).delete(events::erase_one),
        )
        .merge(queues::routes())
        .merge(backup::routes())
        .merge(stats::routes())
        .merge(console::routes())
        .merge(plugins::routes())
        .merge(plugin_kv::routes())
        .merge(prompts::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(json_errors))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// A request body as bytes, whose failures (over the size limit, or too slow to
/// arrive) are answered in the API's JSON error shape rather than axum's plain text.
pub(crate) struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        Ok(Self(axum::body::Bytes::from_request(req, state).await?))
    }
}

/// Run store scans and wasm compilation off the async runtime: neither may block an
/// HTTP worker thread, and WASI's synchronous bindings refuse to run on one.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("task failed: {e}")))?
}

/// Every error in the API's JSON shape: axum's own rejections (a path segment that is
/// not UTF-8, say) answer in plain text before a handler runs, so they are rewritten
/// here, their text kept as the message.
async fn json_errors(response: Response) -> Response {
    use axum::http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER};
    let status = response.status();
    let json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let mut message = String::from_utf8_lossy(&text).trim().to_owned();
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("error").to_owned();
    }
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    };
    let mut rewritten = ApiError::new(status, code, message).into_response();
    for name in [ALLOW, RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            rewritten.headers_mut().insert(name, v.clone());
        }
    }
    rewritten
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

/// The ingestion API's OpenAPI 3.1 document (`docs/openapi.json`), served by the binary
/// that implements it so clients generate code against the version they talk to.
const OPENAPI: &str = include_str!("../../../../docs/openapi.json");

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let live = state.pipeline.live();
    let body = json!({
        "ready": state.ready.load(Ordering::Acquire),
        "events": state.store.count(),
        "plugins": live.all().map(|p| json!({"name": p.id().name, "kind": p.kind(), "version": p.id().version, "hash": p.id().hash})).collect::<Vec<_>>(),
        "pipeline_queued": state.pipeline.queued(),
        "pipeline_backlog": state.store.unprocessed(),
    });
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    if let Ok(depths) = state.store.queue_depths() {
        for (queue, depth) in depths {
            metrics::gauge!("flywheel_queue_depth", "queue" => queue).set(depth as f64);
        }
    }
    metrics::gauge!("flywheel_events_stored").set(state.store.count() as f64);
    // Group commit at work: commits and flushes should stay far below append requests.
    let store = state.store.stats();
    metrics::counter!("flywheel_store_append_requests_total").absolute(store.requests);
    metrics::counter!("flywheel_store_commits_total").absolute(store.batches);
    metrics::counter!("flywheel_store_flushes_total").absolute(store.flushes);
    // Acknowledged but not processed, wherever it waits: the workers' queue holds at most
    // `queue-capacity` of it, the rest waits on disk for the sweeper.
    metrics::gauge!("flywheel_pipeline_backlog").set(state.store.unprocessed() as f64);
    metrics::gauge!("flywheel_pipeline_queued").set(state.pipeline.queued() as f64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
        .into_response()
}
