//! `POST /v1/events`, `GET /v1/events/{id}`, `GET /v1/events`: ingestion and lookup.
//!
//! An event is acknowledged (202) only after the store says it is on disk; the
//! pipeline then runs off the request path, or inline with `?wait=true`. Handlers only
//! translate between HTTP and the store and pipeline.

use std::sync::{Arc, LazyLock};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flywheel_model::{Event, EventRecord, now_ms};
use flywheel_store::{Appended, EventFilter};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{AppState, blocking};
use crate::config::Role;
use crate::input::{Fast, parse_event, parse_fast};

/// Query string of `POST /v1/events`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostQuery {
    /// Process synchronously and return the decision.
    #[serde(default)]
    pub wait: bool,
}

/// Store events, then hand the accepted ones to the pipeline, or decide every one now
/// (`wait`). Both happen in the store's commit callback, not in this request's future:
/// a client that disconnects after the commit cannot leave an acknowledged event
/// unprocessed. Returns the store's answer per event and, with `wait`, each outcome.
async fn store_and_dispatch(
    state: &Arc<AppState>,
    events: Vec<Event>,
    wait: bool,
) -> Result<(Vec<Appended>, Vec<Value>), ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let pipeline = state.pipeline.clone();
    let store = state.store.clone();
    let runtime = tokio::runtime::Handle::current();
    state.store.append_with(events, move |result, kept| {
        let appended = match result {
            Ok(a) => a,
            Err(e) => {
                let _ = tx.send(Err(ApiError::from(e)));
                return;
            }
        };
        if !wait {
            for (a, e) in appended.iter().zip(kept) {
                if matches!(a, Appended::Accepted { .. }) {
                    pipeline.submit(e);
                }
            }
            let _ = tx.send(Ok((appended, Vec::new())));
            return;
        }
        // Plugin calls must not run on the committer thread nor on an async worker.
        runtime.spawn_blocking(move || {
            let outcomes = appended
                .iter()
                .zip(&kept)
                .map(|(a, e)| {
                    let outcome = match a {
                        Appended::Accepted { .. } => pipeline.process_now(e)?,
                        // A duplicate keeps the stored event: answer with what was decided for it.
                        Appended::Duplicate { id } => match store.get(id)? {
                            Some(EventRecord {
                                outcome: Some(o), ..
                            }) => o,
                            Some(record) => pipeline.process_now(&record.event)?,
                            None => pipeline.process_now(e)?,
                        },
                    };
                    Ok(json!(outcome))
                })
                .collect::<Result<Vec<_>, flywheel_store::StoreError>>();
            let _ = tx.send(outcomes.map(|o| (appended, o)).map_err(ApiError::from));
        });
    });
    rx.await
        .map_err(|_| ApiError::unavailable("the store is shutting down"))?
}

/// Refuse new work while the pipeline's backlog is at `pipeline.max-backlog`. Checked
/// before decompressing and parsing, so an overloaded server spends little on what it
/// turns away; a request admitted just under the limit may take the backlog over it by
/// its own size.
fn admit(state: &AppState, wait: bool) -> Result<(), ApiError> {
    let limit = state.config.pipeline.max_backlog;
    if limit == 0 || wait {
        return Ok(());
    }
    let backlog = state.store.unprocessed();
    if backlog < limit {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "backlog_full",
        format!(
            "{backlog} events are waiting for the pipeline, at the limit of {limit} \
             (pipeline.max-backlog); nothing in this request was stored, retry later"
        ),
    )
    .retry_after(1))
}

/// Undo `Content-Encoding: gzip` (what SDKs send for big batches). The limit applies to
/// the decompressed body too, so a small bomb is a 413 like a big body; the work runs off
/// the async workers.
async fn decode(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, ApiError> {
    let encoding = match headers.get(axum::http::header::CONTENT_ENCODING) {
        None => return Ok(body),
        // Not text: refused below as an encoding we do not know.
        Some(v) => v.to_str().unwrap_or("?").trim().to_ascii_lowercase(),
    };
    match encoding.as_str() {
        "" | "identity" => Ok(body),
        "gzip" | "x-gzip" => tokio::task::spawn_blocking(move || gunzip(&body, limit))
            .await
            .map_err(|e| ApiError::internal(format!("decompression failed: {e}")))?,
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding `{other}` is not supported; send gzip or no encoding"),
        )),
    }
}

fn gunzip(body: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    use std::io::Read;
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    flate2::read::MultiGzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::bad_request("invalid_body", format!("the body is not valid gzip: {e}"))
        })?;
    if out.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the decompressed body is over the configured limit of {limit} bytes \
                 (limits.max-body-bytes)"
            ),
        ));
    }
    Ok(out.into())
}

fn reject(code: &'static str) {
    metrics::counter!("flywheel_events_rejected_total", "code" => code).increment(1);
}

pub async fn post(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<PostQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, &[Role::Ingest])?;
    let result = ingest(&state, &headers, query, body).await;
    if let Err(e) = &result {
        reject(e.code);
    }
    result
}

async fn ingest(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    query: Result<Query<PostQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let body = body?;
    admit(state, query.wait)?;
    let body = decode(headers, body, state.config.limits.max_body_bytes).await?;
    let limits = &state.config.limits;
    let now = now_ms();
    let new_id = || ulid::Ulid::new().to_string();

    // Well-formed bodies (nearly all of them) skip the `Value` tree; the rest are parsed
    // again below, where every error names its field.
    match parse_fast(&body, limits, new_id, now) {
        Some(Fast::Single(event)) => return single(state, *event, query.wait).await,
        Some(Fast::Batch(events)) => {
            let results = vec![Value::Null; events.len()];
            return batch(
                state,
                events.into_iter().enumerate().collect(),
                results,
                query.wait,
            )
            .await;
        }
        None => {}
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
    })?;
    let batch_body = match &value {
        Value::Object(obj) if obj.contains_key("events") => Some(obj),
        _ => None,
    };
    let Some(batch_body) = batch_body else {
        let event = parse_event(&value, "", limits, new_id, now)?;
        return single(state, event, query.wait).await;
    };

    if let Some(extra) = batch_body.keys().find(|k| k.as_str() != "events") {
        return Err(ApiError::bad_request(
            "unknown_field",
            format!("unknown field `{extra}` in a batch; expected only `events`"),
        ));
    }
    let items = batch_body["events"].as_array().ok_or_else(|| {
        ApiError::bad_request("invalid_type", "`events` must be an array of events")
    })?;
    if items.is_empty() {
        return Err(ApiError::bad_request("invalid_value", "`events` is empty"));
    }
    if items.len() > limits.max_batch {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!(
                "`events` has {} events, over the limit of {}",
                items.len(),
                limits.max_batch
            ),
        ));
    }
    let mut results: Vec<Value> = Vec::with_capacity(items.len());
    let mut valid: Vec<(usize, Event)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match parse_event(item, &format!("events[{i}]"), limits, new_id, now) {
            Ok(e) => {
                valid.push((i, e));
                results.push(Value::Null);
            }
            Err(e) => {
                reject(e.code);
                results.push(json!({"index": i, "status": "invalid", "error": {"code": e.code, "message": e.message}}));
            }
        }
    }
    if valid.is_empty() {
        let mut body =
            ApiError::bad_request("invalid_batch", "no event in the batch is valid").body();
        body["results"] = Value::Array(results);
        return Ok((StatusCode::BAD_REQUEST, Json(body)).into_response());
    }
    batch(state, valid, results, query.wait).await
}

/// Store one event and answer with its id and status (and, with `wait`, its outcome).
async fn single(state: &Arc<AppState>, event: Event, wait: bool) -> Result<Response, ApiError> {
    let (appended, outcomes) = store_and_dispatch(state, vec![event], wait).await?;
    let (id, status) = match appended.first() {
        Some(Appended::Accepted { id }) => (id.clone(), "accepted"),
        Some(Appended::Duplicate { id }) => (id.clone(), "duplicate"),
        None => return Err(ApiError::internal("the store returned no result")),
    };
    count(status, 1);
    if wait {
        let outcome = outcomes.into_iter().next();
        return Ok((
            StatusCode::OK,
            Json(json!({"id": id, "status": status, "outcome": outcome})),
        )
            .into_response());
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "status": status})),
    )
        .into_response())
}

/// Store a batch's valid events (with their indices in the request) and answer per item:
/// `results` holds the invalid items' answers already, `null` where a valid one goes.
async fn batch(
    state: &Arc<AppState>,
    valid: Vec<(usize, Event)>,
    mut results: Vec<Value>,
    wait: bool,
) -> Result<Response, ApiError> {
    let invalid = results.len() - valid.len();
    let (indices, events): (Vec<usize>, Vec<Event>) = valid.into_iter().unzip();
    let (appended, outcomes) = store_and_dispatch(state, events, wait).await?;
    let (mut accepted, mut duplicates) = (0usize, 0usize);
    for (k, (index, outcome)) in indices.into_iter().zip(appended).enumerate() {
        let (id, status) = match outcome {
            Appended::Accepted { id } => {
                accepted += 1;
                (id, "accepted")
            }
            Appended::Duplicate { id } => {
                duplicates += 1;
                (id, "duplicate")
            }
        };
        results[index] = json!({"index": index, "id": id, "status": status});
        if let Some(o) = outcomes.get(k) {
            results[index]["outcome"] = o.clone();
        }
    }
    count("accepted", accepted);
    count("duplicate", duplicates);
    let status = if wait {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(json!({"accepted": accepted, "duplicates": duplicates, "invalid": invalid, "results": results})),
    )
        .into_response())
}

fn count(status: &'static str, n: usize) {
    // Registered once: a recorder lookup per request showed up in profiles.
    static ACCEPTED: LazyLock<metrics::Counter> =
        LazyLock::new(|| metrics::counter!("flywheel_events_accepted_total"));
    static DUPLICATE: LazyLock<metrics::Counter> =
        LazyLock::new(|| metrics::counter!("flywheel_events_duplicate_total"));
    if n > 0 {
        let counter = if status == "accepted" {
            &ACCEPTED
        } else {
            &DUPLICATE
        };
        counter.increment(n as u64);
    }
}

pub async fn get_one(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state
        .auth
        .check(&headers, &[Role::Ingest, Role::Reviewer])?;
    let store = state.store.clone();
    let lookup = id.clone();
    let record = blocking(move || Ok(store.get(&lookup)?)).await?;
    match record {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(ApiError::not_found(format!("no event with id `{id}`"))),
    }
}

/// Query string of `GET /v1/events`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Received at or after, in ms since the Unix epoch.
    pub from: Option<u64>,
    /// Received before, in ms since the Unix epoch.
    pub to: Option<u64>,
    pub prompt: Option<String>,
    pub prompt_version: Option<String>,
    /// `accept`, `label`, `review`, `drop` or `pending`.
    pub route: Option<String>,
    pub queue: Option<String>,
    /// A feedback type: `thumbs`, `rating`, `correction`, ...
    pub feedback: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub trace_id: Option<String>,
    pub model: Option<String>,
    pub cursor: Option<String>,
    /// 1..=500, default 50.
    pub limit: Option<usize>,
}

impl ListQuery {
    /// The store filter the query names (paging aside); the store checks its values.
    fn filter(&self) -> EventFilter {
        EventFilter {
            from_ms: self.from,
            to_ms: self.to,
            prompt_name: self.prompt.clone(),
            prompt_version: self.prompt_version.clone(),
            route: self.route.clone(),
            queue: self.queue.clone(),
            feedback: self.feedback.clone(),
            user_id: self.user_id.clone(),
            session_id: self.session_id.clone(),
            trace_id: self.trace_id.clone(),
            model: self.model.clone(),
        }
    }
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    state
        .auth
        .check(&headers, &[Role::Ingest, Role::Reviewer])?;
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "out_of_range",
            format!("`limit` is {limit}; it must be 1..=500"),
        ));
    }
    let filter = q.filter();
    let store = state.store.clone();
    let cursor = q.cursor;
    let page = tokio::task::spawn_blocking(move || store.list(&filter, cursor.as_deref(), limit))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| match e {
            flywheel_store::StoreError::InvalidCursor => {
                ApiError::bad_request("invalid_cursor", e.to_string())
            }
            other => ApiError::from(other),
        })?;
    Ok(Json(json!({"events": page.events, "next_cursor": page.next_cursor})).into_response())
}

/// `flywheel_events_erased_total` by cause (`request` or `retention`).
pub(crate) fn erased_counter(cause: &'static str) -> metrics::Counter {
    metrics::counter!("flywheel_events_erased_total", "cause" => cause)
}

/// `DELETE /v1/events/{id}` (admin): erase one event for good, with its outcome, reviews
/// and queue items. 404 when there is no such event (any more).
pub async fn erase_one(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = state.auth.check(&headers, &[Role::Admin])?;
    let store = state.store.clone();
    let actor = caller.name.clone();
    let done = blocking(move || Ok(store.erase(vec![id], &actor)?)).await?;
    let Some(e) = done.into_iter().next() else {
        return Err(ApiError::internal("the store answered no erasure"));
    };
    if !e.erased {
        return Err(ApiError::not_found(format!("no event with id `{}`", e.id)));
    }
    erased_counter("request").increment(1);
    tracing::info!(actor = %caller.name, event = %e.id, queue_items = e.queue_items, "erased an event");
    Ok(Json(json!({"id": e.id, "erased": true, "queue_items": e.queue_items})).into_response())
}

/// `DELETE /v1/events?user_id=...` (admin): erase every event the listing's filters
/// match (at least one is required), e.g. all of one user's events for a data-protection
/// request. Answers with the totals once all are erased; `GET /v1/events` with the same
/// filters shows beforehand what will go.
pub async fn erase_matching(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = state.auth.check(&headers, &[Role::Admin])?;
    let Query(q) = query?;
    if q.cursor.is_some() || q.limit.is_some() {
        return Err(ApiError::bad_request(
            "invalid_value",
            "`cursor` and `limit` page a listing; an erasure takes every match",
        ));
    }
    let filter = q.filter();
    if filter.is_empty() {
        return Err(ApiError::bad_request(
            "missing_filter",
            "name at least one filter (e.g. `user_id`, `session_id`, `trace_id`, `to`): \
             erasing every event is not done by accident",
        ));
    }
    let store = state.store.clone();
    let what = serde_json::to_string(&filter).unwrap_or_default();
    let counter = erased_counter("request");
    let actor = caller.name.clone();
    let total = blocking(move || {
        Ok(store.erase_matching(&filter, &actor, |chunk| counter.increment(chunk.events))?)
    })
    .await?;
    tracing::info!(actor = %caller.name, filter = %what, events = total.events, queue_items = total.queue_items, "erased events");
    Ok(Json(json!({"erased": total.events, "queue_items": total.queue_items})).into_response())
}
