//! `/v1/queues/...`: the label and review queues that people work, over the store's
//! queue module. Handlers only translate: who the reviewer is (the token's name; on an
//! open API an `X-Flywheel-Reviewer` header may name one), the queue's settings from the
//! config, and the store's answers into JSON. Store calls run off the async runtime.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use flywheel_model::{Review, Verdict, now_ms};
use flywheel_store::{AuditFilter, ItemStatus, QueueEntry, Store, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::config::{QueueConfig, Role};

/// Names the reviewer on an open API (no tokens), so one console or test can act as
/// several people. Ignored when tokens are configured: then the token says who.
pub const REVIEWER_HEADER: &str = "x-flywheel-reviewer";

/// The queue endpoints.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/queues", get(list))
        .route("/v1/queues/{queue}/claim", post(claim))
        .route("/v1/queues/{queue}/items", get(items))
        .route("/v1/queues/{queue}/items/{item}", get(item))
        .route("/v1/queues/{queue}/items/{item}/review", post(review))
        .route("/v1/queues/{queue}/items/{item}/release", post(release))
        .route("/v1/queues/{queue}/audit", get(audit))
}

/// Most tags on one review.
const MAX_TAGS: usize = 32;

/// Runs a store call on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?
        .map_err(ApiError::from)
}

/// The caller, holding one of `allowed`; on an open API named by [`REVIEWER_HEADER`]
/// when the request carries it.
pub(crate) fn caller(
    state: &AppState,
    headers: &HeaderMap,
    allowed: &[Role],
) -> Result<Caller, ApiError> {
    let mut caller = state.auth.check(headers, allowed)?;
    if let (true, Some(named)) = (state.auth.is_open(), headers.get(REVIEWER_HEADER)) {
        let name = named.to_str().map(str::trim).unwrap_or_default();
        let max = state.config.limits.max_id_bytes;
        if name.is_empty() || name.len() > max {
            return Err(ApiError::bad_request(
                "invalid_value",
                format!("`{REVIEWER_HEADER}` must be 1 to {max} bytes of text"),
            ));
        }
        caller.name = name.to_owned();
    }
    Ok(caller)
}

/// Who is reviewing: a reviewer or admin token's name.
fn reviewer(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    caller(state, headers, &[Role::Reviewer]).map(|c| c.name)
}

/// An item as the API shows it: the stored entry, plus what the queue's settings say.
fn view(entry: &QueueEntry, settings: &QueueConfig) -> Value {
    let mut v = json!(entry);
    v["reviews_required"] = json!(settings.reviewers_required);
    v["disagreement"] = json!(entry.disagreement());
    v
}

/// A queue's settings as the API shows them.
fn settings_json(settings: &QueueConfig) -> Value {
    json!({
        "name": settings.name,
        "description": settings.description,
        "instructions": settings.instructions,
        "reviewers_required": settings.reviewers_required,
        "claim_timeout_secs": settings.claim_timeout_secs,
    })
}

/// An item with its event, for the review screen.
async fn with_event(state: &AppState, entry: QueueEntry) -> Result<Value, ApiError> {
    let settings = state.config.queue(&entry.item.queue);
    let event_id = entry.item.event_id.clone();
    let event = blocking(state, move |s| s.get(&event_id)).await?;
    Ok(json!({"item": view(&entry, &settings), "event": event, "queue": settings_json(&settings)}))
}

/// `GET /v1/queues`: every declared or used queue with its counts.
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, &[Role::Reviewer])?;
    let now = now_ms();
    let mut summaries = blocking(&state, move |s| s.queue_summaries(now)).await?;
    for declared in &state.config.queues {
        if !summaries.iter().any(|s| s.queue == declared.name) {
            summaries.push(flywheel_store::QueueSummary {
                queue: declared.name.clone(),
                ..Default::default()
            });
        }
    }
    summaries.sort_by(|a, b| a.queue.cmp(&b.queue));
    let queues: Vec<Value> = summaries
        .into_iter()
        .map(|s| {
            let mut v = settings_json(&state.config.queue(&s.queue));
            v["pending"] = json!(s.pending);
            v["in_review"] = json!(s.in_review);
            v["done"] = json!(s.done);
            v["oldest_pending_at"] = json!(s.oldest_pending_at);
            v["oldest_pending_age_ms"] =
                json!(s.oldest_pending_at.map(|at| now.saturating_sub(at)));
            v
        })
        .collect();
    Ok(Json(json!({"queues": queues})))
}

/// Body of `POST /v1/queues/{queue}/claim` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimInput {
    /// Item ids to pass over (e.g. ones this reviewer skipped).
    #[serde(default)]
    skip: Vec<String>,
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))
}

/// `POST /v1/queues/{queue}/claim`: lease the next item for the caller, with its event.
pub async fn claim(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(queue): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let who = reviewer(&state, &headers)?;
    let input: ClaimInput = parse_body(&body?)?;
    let lease_ms = state
        .config
        .queue(&queue)
        .claim_timeout_secs
        .get()
        .saturating_mul(1000);
    let claimed = blocking(&state, move |s| {
        s.claim(&queue, &who, lease_ms, &input.skip, now_ms())
    })
    .await?;
    match claimed {
        Some(entry) => Ok(Json(with_event(&state, entry).await?)),
        None => Ok(Json(json!({"item": null}))),
    }
}

/// Body of `POST /v1/queues/{queue}/items/{item}/review`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewInput {
    verdict: Option<Verdict>,
    rating: Option<u8>,
    #[serde(default)]
    tags: Vec<String>,
    corrected_output: Option<String>,
    note: Option<String>,
}

impl ReviewInput {
    /// Checks the input and makes it a review by `reviewer`.
    fn into_review(
        self,
        state: &AppState,
        queue: &str,
        item: &str,
        reviewer: String,
    ) -> Result<Review, ApiError> {
        let limits = &state.config.limits;
        let verdict = self.verdict.ok_or_else(|| {
            ApiError::bad_request(
                "missing_field",
                "`verdict` is required: `approve` or `reject`",
            )
        })?;
        if let Some(r) = self.rating
            && !(1..=5).contains(&r)
        {
            return Err(ApiError::bad_request(
                "out_of_range",
                format!("`rating` is {r}; it must be 1..=5"),
            ));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(ApiError::bad_request(
                "out_of_range",
                format!("more than {MAX_TAGS} `tags`"),
            ));
        }
        if let Some(t) = self.tags.iter().find(|t| {
            t.trim().is_empty() || t.len() > limits.max_id_bytes || t.chars().any(char::is_control)
        }) {
            return Err(ApiError::bad_request(
                "invalid_value",
                format!(
                    "tag {t:?} must be 1 to {} bytes, without control characters",
                    limits.max_id_bytes
                ),
            ));
        }
        for (field, text) in [
            ("corrected_output", &self.corrected_output),
            ("note", &self.note),
        ] {
            if text
                .as_ref()
                .is_some_and(|t| t.len() > limits.max_text_bytes)
            {
                return Err(ApiError::bad_request(
                    "too_long",
                    format!("`{field}` is over {} bytes", limits.max_text_bytes),
                ));
            }
        }
        let blank_is_none = |t: Option<String>| t.filter(|t| !t.trim().is_empty());
        Ok(Review {
            queue: queue.to_owned(),
            item_id: item.to_owned(),
            reviewer,
            verdict,
            rating: self.rating,
            tags: self.tags.into_iter().map(|t| t.trim().to_owned()).collect(),
            corrected_output: blank_is_none(self.corrected_output),
            note: blank_is_none(self.note),
            reviewed_at: now_ms(),
        })
    }
}

/// `POST /v1/queues/{queue}/items/{item}/review`: the caller's verdict on an item it holds.
pub async fn review(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((queue, item)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let who = reviewer(&state, &headers)?;
    let input: ReviewInput = parse_body(&body?)?;
    let review = input.into_review(&state, &queue, &item, who)?;
    let settings = state.config.queue(&queue);
    let required = settings.reviewers_required.get();
    let entry = blocking(&state, move |s| s.review(review, required)).await?;
    Ok(Json(json!({"item": view(&entry, &settings)})))
}

/// `POST /v1/queues/{queue}/items/{item}/release`: give a held item back.
pub async fn release(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((queue, item)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let who = reviewer(&state, &headers)?;
    let settings = state.config.queue(&queue);
    let entry = blocking(&state, move |s| s.release(&queue, &item, &who, now_ms())).await?;
    Ok(Json(json!({"item": view(&entry, &settings)})))
}

/// `GET /v1/queues/{queue}/items/{item}`: one item with its event.
pub async fn item(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((queue, item)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, &[Role::Reviewer])?;
    let (q, id) = (queue.clone(), item.clone());
    match blocking(&state, move |s| s.queue_entry(&q, &id, now_ms())).await? {
        Some(entry) => Ok(Json(with_event(&state, entry).await?)),
        None => Err(ApiError::not_found(format!(
            "no item `{item}` on queue `{queue}`"
        ))),
    }
}

/// Query string of `GET /v1/queues/{queue}/items`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemsQuery {
    /// `pending`, `in_review` or `done`; default: all.
    pub status: Option<String>,
    /// From the previous page's `next_cursor` (with the same status).
    pub cursor: Option<String>,
    /// 1..=500, default 100.
    pub limit: Option<usize>,
}

pub(crate) fn limit(asked: Option<usize>, default: usize) -> Result<usize, ApiError> {
    let limit = asked.unwrap_or(default);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "out_of_range",
            format!("`limit` is {limit}; it must be 1..=500"),
        ));
    }
    Ok(limit)
}

/// `GET /v1/queues/{queue}/items?status=`: the queue's items, open ones in claim order,
/// then done ones, a page at a time.
pub async fn items(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(queue): Path<String>,
    query: Result<Query<ItemsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, &[Role::Reviewer])?;
    let Query(q) = query?;
    let limit = limit(q.limit, 100)?;
    let status = match q.status.as_deref() {
        None | Some("all") => None,
        Some("pending") => Some(ItemStatus::Pending),
        Some("in_review") => Some(ItemStatus::InReview),
        Some("done") => Some(ItemStatus::Done),
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_value",
                format!("`status` is `{other}`; expected pending, in_review, done or all"),
            ));
        }
    };
    let settings = state.config.queue(&queue);
    let page = blocking(&state, move |s| {
        s.queue_entries(&queue, status, q.cursor.as_deref(), limit, now_ms())
    })
    .await?;
    let items: Vec<Value> = page.entries.iter().map(|e| view(e, &settings)).collect();
    Ok(Json(
        json!({"items": items, "next_cursor": page.next_cursor}),
    ))
}

/// Query string of `GET /v1/queues/{queue}/audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this item's entries.
    pub item: Option<String>,
    /// Entries at or after this time (ms since the epoch).
    pub from: Option<u64>,
    /// Entries before this time (exclusive).
    pub to: Option<u64>,
    /// `asc` (oldest first, the default) or `desc` (newest first).
    pub order: Option<String>,
    /// From the previous page's `next_cursor` (with the same filters and order).
    pub cursor: Option<String>,
    /// 1..=500, default 500.
    pub limit: Option<usize>,
}

/// `GET /v1/queues/{queue}/audit`: who did what to which item, a page at a time.
pub async fn audit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(queue): Path<String>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, &[Role::Reviewer])?;
    let Query(q) = query?;
    let limit = limit(q.limit, 500)?;
    let newest_first = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_value",
                format!("`order` is `{other}`; expected `asc` or `desc`"),
            ));
        }
    };
    let filter = AuditFilter {
        item_id: q.item,
        from_ms: q.from,
        to_ms: q.to,
        newest_first,
    };
    let page = blocking(&state, move |s| {
        s.audit_page(&queue, &filter, q.cursor.as_deref(), limit)
    })
    .await?;
    Ok(Json(
        json!({"entries": page.entries, "next_cursor": page.next_cursor}),
    ))
}
