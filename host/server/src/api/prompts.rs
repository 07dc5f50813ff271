//! `/v1/prompts` (versions, labels, stats, refine, proposals) and `/v1/datasets`
//! (JSONL exports for fine-tuning). Fetching a template is served from memory; every
//! scan of the store runs off the async runtime.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use flywheel_store::EventFilter;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{AppState, RawBody, blocking};
use crate::config::Role;
use crate::datasets::{Builder, Format, Kind, Options};
use crate::prompts::{PromptError, diff, stats};

/// The routes of this module.
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/v1/prompts", get(list))
        .route("/v1/prompts/{name}", get(fetch).put(create))
        .route("/v1/prompts/{name}/labels", post(label))
        .route("/v1/prompts/{name}/stats", get(prompt_stats))
        .route("/v1/prompts/{name}/refine", post(refine))
        .route("/v1/prompts/{name}/proposals", get(proposals))
        .route("/v1/prompts/{name}/proposals/{id}/accept", post(accept))
        .route("/v1/prompts/{name}/proposals/{id}/reject", post(reject))
        .route("/v1/datasets/{kind}", get(dataset))
}

impl From<PromptError> for ApiError {
    fn from(e: PromptError) -> Self {
        let msg = e.to_string();
        match e {
            PromptError::NotFound(_) | PromptError::NoSuch { .. } => ApiError::not_found(msg),
            PromptError::Invalid(_) => ApiError::bad_request("invalid_value", msg),
            PromptError::Decided(_) => ApiError::new(StatusCode::CONFLICT, "already_decided", msg),
            PromptError::Store(e) => ApiError::from(e),
        }
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| ApiError::from_json(&e))
}

const ANY: &[Role] = &[Role::Ingest, Role::Reviewer];

async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, ANY)?;
    let prompts: Vec<Value> = state
        .prompts
        .entries()
        .iter()
        .map(|e| json!({"name": e.name, "versions": e.versions.len(), "latest": e.versions.last().map(|v| v.version), "labels": e.labels}))
        .collect();
    Ok(Json(json!({"prompts": prompts})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchQuery {
    label: Option<String>,
    version: Option<u32>,
}

async fn fetch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<FetchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, ANY)?;
    let Query(q) = query?;
    let (entry, v) = state
        .prompts
        .resolve(&name, q.label.as_deref(), q.version)?;
    let labels: Vec<&String> = entry
        .labels
        .iter()
        .filter(|(_, n)| **n == v.version)
        .map(|(l, _)| l)
        .collect();
    Ok(Json(json!({
        "name": entry.name,
        "version": v.version,
        "template": v.template,
        "model_settings": v.model_settings,
        "notes": v.notes,
        "labels": labels,
        "created_at": v.created_at,
        "created_by": v.created_by,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    template: String,
    #[serde(default)]
    model_settings: Option<Value>,
    #[serde(default)]
    notes: Option<String>,
    /// Labels to point at the new version, e.g. `["staging"]`.
    #[serde(default)]
    labels: Vec<String>,
}

async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let caller = state.auth.check(&headers, &[Role::Admin])?;
    let mut b: CreateBody = json_body(&body)?;
    // A label named twice points at the version once; answer what is stored.
    let mut seen = std::collections::HashSet::new();
    b.labels.retain(|l| seen.insert(l.clone()));
    let labels = b.labels.clone();
    let (_, version) = state.prompts.create_version(
        &name,
        crate::prompts::NewVersion {
            template: b.template,
            model_settings: b.model_settings,
            notes: b.notes,
            labels: b.labels,
            actor: caller.name,
            from_proposal: None,
        },
    )?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": name, "version": version, "labels": labels})),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelBody {
    label: String,
    version: u32,
}

async fn label(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, &[Role::Admin])?;
    let b: LabelBody = json_body(&body)?;
    let entry = state.prompts.set_label(&name, &b.label, b.version)?;
    Ok(Json(json!({"name": name, "labels": entry.labels})).into_response())
}

/// Query string of `GET /v1/prompts/{name}/stats`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    /// Events received at or after this time (ms since the epoch).
    from: Option<u64>,
    /// Events received before this time (exclusive).
    to: Option<u64>,
}

async fn prompt_stats(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, ANY)?;
    let Query(q) = query?;
    let store = state.store.clone();
    let filter_name = name.clone();
    let versions = blocking(move || {
        // Events are read in time order, so a window reads only its own events; without
        // one this reads every event in the store.
        let filter = EventFilter {
            prompt_name: Some(filter_name),
            from_ms: q.from,
            to_ms: q.to,
            ..EventFilter::default()
        };
        let mut failed = None;
        let versions = stats(
            store
                .scan(&filter)
                .map_while(|r| r.map_err(|e| failed = Some(e)).ok()),
        );
        match failed {
            Some(e) => Err(ApiError::from(e)),
            None => Ok(versions),
        }
    })
    .await?;
    Ok(Json(json!({"name": name, "versions": versions})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefineBody {
    /// Default: the `production` label, else the latest version.
    version: Option<u32>,
}

async fn refine(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, &[Role::Admin])?;
    let b: RefineBody = json_body(&body)?;
    let s = state.clone();
    let created = blocking(move || Ok(s.prompts.refine(&name, b.version, "manual")?)).await?;
    Ok(Json(json!({"proposals": created})).into_response())
}

async fn proposals(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, &[Role::Admin])?;
    let entry = state
        .prompts
        .entry(&name)
        .ok_or_else(|| ApiError::not_found(format!("no prompt named `{name}`")))?;
    let s = state.clone();
    let list = blocking(move || Ok(s.prompts.proposals(&name)?)).await?;
    let out: Vec<Value> = list
        .into_iter()
        .map(|p| {
            let base = entry
                .versions
                .iter()
                .find(|v| v.version == p.base_version)
                .map(|v| v.template.as_str())
                .unwrap_or("");
            let d = diff(
                base,
                &p.template,
                &format!("{} v{}", p.prompt, p.base_version),
                &format!("proposal {}", p.id),
            );
            let mut v = json!(p);
            v["diff"] = json!(d);
            v
        })
        .collect();
    Ok(Json(json!({"proposals": out})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    /// For accept: a label to point at the new version, e.g. `staging`.
    label: Option<String>,
    /// For reject: why, for the record.
    reason: Option<String>,
}

async fn accept(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let caller = state.auth.check(&headers, &[Role::Admin])?;
    let b: DecideBody = json_body(&body)?;
    let p = state
        .prompts
        .accept(&name, &id, b.label.as_deref(), &caller.name)?;
    Ok(Json(p).into_response())
}

async fn reject(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let caller = state.auth.check(&headers, &[Role::Admin])?;
    let b: DecideBody = json_body(&body)?;
    let p = state.prompts.reject(&name, &id, b.reason, &caller.name)?;
    Ok(Json(p).into_response())
}

/// Query string of `GET /v1/datasets/{kind}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetQuery {
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub prompt: Option<String>,
    pub prompt_version: Option<String>,
    /// Only events that were routed to this queue.
    pub queue: Option<String>,
    /// 0..=1: skip rows whose quality is below.
    pub min_quality: Option<f64>,
    #[serde(default)]
    pub include_sensitive: bool,
    /// `trl` (default) or `openai` (DPO only differs).
    pub format: Option<String>,
    /// Write the closing `{"_flywheel_summary": ...}` line (default true).
    pub summary: Option<bool>,
}

impl DatasetQuery {
    /// The store filter and builder options these parameters ask for.
    pub fn options(&self, kind: Kind) -> Result<(EventFilter, Options), String> {
        let format = match self.format.as_deref() {
            None | Some("trl") => Format::Trl,
            Some("openai") => Format::Openai,
            Some(other) => return Err(format!("`format` is `{other}`; expected trl or openai")),
        };
        if kind == Kind::Kto && format == Format::Openai {
            return Err(
                "OpenAI has no KTO format: kto rows are TRL's (`format=openai` is for dpo; sft rows are already OpenAI's chat format)"
                    .to_owned(),
            );
        }
        if let Some(q) = self.min_quality
            && !(0.0..=1.0).contains(&q)
        {
            return Err(format!("`min_quality` is {q}; it must be 0..=1"));
        }
        let filter = EventFilter {
            from_ms: self.from,
            to_ms: self.to,
            prompt_name: self.prompt.clone(),
            prompt_version: self.prompt_version.clone(),
            queue: self.queue.clone(),
            ..EventFilter::default()
        };
        Ok((
            filter,
            Options {
                kind: Some(kind),
                format,
                include_sensitive: self.include_sensitive,
                min_quality: self.min_quality,
            },
        ))
    }
}

async fn dataset(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(kind): Path<String>,
    query: Result<Query<DatasetQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, &[Role::Admin])?;
    let Query(q) = query?;
    let kind_parsed = Kind::parse(&kind).ok_or_else(|| {
        ApiError::not_found(format!(
            "no dataset kind `{kind}`; expected sft, dpo or kto"
        ))
    })?;
    let (filter, options) = q
        .options(kind_parsed)
        .map_err(|m| ApiError::bad_request("invalid_value", m))?;
    let with_summary = q.summary.unwrap_or(true);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut builder = Builder::new(kind_parsed, options);
        let mut buf = String::new();
        for record in store.scan(&filter) {
            let Ok(record) = record else { continue };
            if let Some(line) = builder.line(&record) {
                buf.push_str(&line);
                if buf.len() >= 64 << 10
                    && tx
                        .blocking_send(Bytes::from(std::mem::take(&mut buf)))
                        .is_err()
                {
                    return;
                }
            }
        }
        if with_summary {
            buf.push_str(&builder.summary_line());
        }
        let _ = tx.blocking_send(Bytes::from(buf));
    });
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|o| o.map(Ok::<_, std::convert::Infallible>))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"flywheel-{kind}.jsonl\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
