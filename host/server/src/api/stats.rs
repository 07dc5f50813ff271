//! `GET /v1/stats/prompts`: the dashboard's numbers (see [`crate::stats`]), for
//! reviewers and admins. Translates the query into a window and runs the scan off the
//! async runtime.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use flywheel_model::now_ms;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::queues::blocking;
use crate::config::Role;
use crate::stats::{Stats, Window};

/// Most buckets one report may have.
const MAX_BUCKETS: usize = 1000;

/// The stats endpoints.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/stats/prompts", get(prompts))
}

/// Query string of `GET /v1/stats/prompts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// `hour` (default) or `day`.
    pub bucket: Option<String>,
    /// How many buckets, ending with the current one: default 24 hours or 14 days.
    pub buckets: Option<usize>,
}

pub async fn prompts(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<Stats>, ApiError> {
    state.auth.check(&headers, &[Role::Reviewer])?;
    let Query(q) = query?;
    let (bucket_ms, default_count) = match q.bucket.as_deref() {
        None | Some("hour") => (3_600_000, 24),
        Some("day") => (86_400_000, 14),
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_value",
                format!("`bucket` is `{other}`; expected hour or day"),
            ));
        }
    };
    let count = q.buckets.unwrap_or(default_count);
    if !(1..=MAX_BUCKETS).contains(&count) {
        return Err(ApiError::bad_request(
            "out_of_range",
            format!("`buckets` is {count}; it must be 1..={MAX_BUCKETS}"),
        ));
    }
    let window = Window::ending_at(now_ms(), bucket_ms, count);
    let shared = state.clone();
    Ok(Json(
        blocking(&state, move |s| {
            crate::stats::compute_cached(s, window, &shared.stats_cache)
        })
        .await?,
    ))
}
