//! `/v1/plugins` and `/v1/replay` (admin): upload, inspect, activate, roll back,
//! disable, enable, retire and shadow plugin versions, and replay a candidate over
//! stored traffic. Registry work compiles wasm, so it runs off the async runtime.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use flywheel_model::PluginKind;
use flywheel_runtime::{LoadError, Manifest};
use flywheel_store::EventFilter;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{AppState, RawBody, blocking};
use crate::config::Role;
use crate::registry::{Activation, PluginEntry, Registry, RegistryError};
use crate::replay::{ReplayOptions, replay, route_key};

/// The routes of this module.
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/v1/plugins", get(list))
        .route("/v1/plugins/{name}", get(show).put(upload).delete(retire))
        .route("/v1/plugins/{name}/activate", post(activate))
        .route("/v1/plugins/{name}/rollback", post(rollback))
        .route("/v1/plugins/{name}/disable", post(disable))
        .route("/v1/plugins/{name}/enable", post(enable))
        .route(
            "/v1/plugins/{name}/shadow",
            post(shadow).delete(stop_shadow),
        )
        .route("/v1/plugins/{name}/shadow/report", get(shadow_report))
        .route("/v1/replay", post(replay_handler))
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let msg = e.to_string();
        match e {
            RegistryError::Invalid(LoadError::Manifest(_)) => {
                ApiError::bad_request("invalid_manifest", msg)
            }
            RegistryError::Invalid(LoadError::NotAComponent(_)) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_a_component", msg)
            }
            RegistryError::Invalid(LoadError::WrongWorld { .. }) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "wrong_world", msg)
            }
            RegistryError::Invalid(LoadError::Link(_)) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unsupported_import", msg)
            }
            RegistryError::Invalid(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_plugin", msg)
            }
            RegistryError::SmokeFailed { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "smoke_failed", msg)
            }
            RegistryError::NotFound(_) | RegistryError::NoSuchVersion { .. } => {
                ApiError::not_found(msg)
            }
            RegistryError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", msg),
            RegistryError::ShortPrefix(_) => ApiError::bad_request("invalid_value", msg),
            RegistryError::Store(e) => ApiError::from(e),
        }
    }
}

/// An entry as the API shows it: with live stats and the versions' stats.
fn view(registry: &Registry, entry: &PluginEntry, full: bool) -> Value {
    let version_of = |hash: &Option<String>| {
        hash.as_ref().and_then(|h| entry.versions.iter().find(|v| &v.hash == h)).map(|v| {
            json!({"hash": v.hash, "version": v.manifest.version, "contract": registry.contract(&v.hash), "stats": registry.stats(&v.hash)})
        })
    };
    let mut out = json!({
        "name": entry.name,
        "kind": entry.kind,
        "status": entry.status,
        "status_reason": entry.status_reason,
        "mode": if entry.shadow.is_some() { "live+shadow" } else { "live" },
        "live": version_of(&entry.live),
        "shadow": version_of(&entry.shadow),
        "versions": entry.versions.len(),
    });
    if full {
        out["versions"] = json!(
            entry
                .versions
                .iter()
                .map(|v| json!({
                    "hash": v.hash,
                    "component_hash": v.component_hash,
                    "version": v.manifest.version,
                    "contract": registry.contract(&v.hash),
                    "manifest": v.manifest,
                    "uploaded_at": v.uploaded_at,
                    "uploaded_by": v.uploaded_by,
                    "source": v.source,
                    "size_bytes": v.size_bytes,
                    "live": entry.live.as_deref() == Some(v.hash.as_str()),
                    "shadow": entry.shadow.as_deref() == Some(v.hash.as_str()),
                    "stats": registry.stats(&v.hash),
                }))
                .collect::<Vec<_>>()
        );
        out["history"] = json!(entry.history);
        out["audit"] = json!(entry.audit);
    }
    out
}

async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, &[Role::Admin])?;
    let registry = &state.registry;
    let plugins: Vec<Value> = registry
        .entries()
        .iter()
        .map(|e| view(registry, e, false))
        .collect();
    Ok(
        Json(json!({"plugins": plugins, "directory_errors": registry.dir_errors()}))
            .into_response(),
    )
}

async fn show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, &[Role::Admin])?;
    let entry = state
        .registry
        .entry(&name)
        .ok_or_else(|| ApiError::not_found(format!("no plugin named `{name}`")))?;
    Ok(Json(view(&state.registry, &entry, true)).into_response())
}

/// Build a manifest from query parameters, on top of the plugin's live manifest when
/// it has one (so `?version=1.1.0` alone is enough for a new build of a known plugin).
fn manifest_from_query(
    registry: &Registry,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<Manifest, ApiError> {
    let base = registry.entry(name).and_then(|e| {
        let live = e
            .live
            .clone()
            .or_else(|| e.versions.last().map(|v| v.hash.clone()))?;
        e.versions
            .into_iter()
            .find(|v| v.hash == live)
            .map(|v| v.manifest)
    });
    let mut m = match base {
        Some(m) => m,
        None => {
            let kind = q.get("kind").ok_or_else(|| {
                ApiError::bad_request("missing_field", "`kind` is required for a new plugin (scorer, router or refiner), or send a multipart `manifest`")
            })?;
            Manifest {
                name: name.to_string(),
                kind: PluginKind::Scorer,
                version: q.get("version").cloned().unwrap_or_else(|| "0.1.0".into()),
                description: String::new(),
                failure_mode: Default::default(),
                limits: Default::default(),
                config: Default::default(),
            }
            .with_kind(kind)?
        }
    };
    let num = |key: &str, v: &str| -> Result<u64, ApiError> {
        v.parse().map_err(|_| {
            ApiError::bad_request("invalid_value", format!("`{key}` must be a whole number"))
        })
    };
    for (key, value) in q {
        match key.as_str() {
            "kind" => m = m.with_kind(value)?,
            "version" => m.version = value.clone(),
            "description" => m.description = value.clone(),
            "failure_mode" | "failure-mode" => {
                m.failure_mode = serde_json::from_value(json!(value)).map_err(|_| {
                    ApiError::bad_request(
                        "invalid_value",
                        "`failure_mode` must be fail-open or fail-closed",
                    )
                })?
            }
            "timeout_ms" => m.limits.timeout_ms = num(key, value)?,
            "memory_mib" => m.limits.memory_mib = num(key, value)?,
            "max_result_kib" => m.limits.max_result_kib = num(key, value)?,
            "kv_quota_kib" => m.limits.kv_quota_kib = num(key, value)?,
            "activate" | "shadow" => {}
            other => match other.strip_prefix("config.") {
                Some("") => {
                    return Err(ApiError::bad_request(
                        "invalid_value",
                        "`config.` needs a key: `config.<key>=<value>`",
                    ));
                }
                Some(k) => {
                    m.config.insert(k.to_string(), value.clone());
                }
                None => {
                    return Err(ApiError::bad_request(
                        "unknown_field",
                        format!("unknown query parameter `{other}`"),
                    ));
                }
            },
        }
    }
    Ok(m)
}

trait WithKind: Sized {
    fn with_kind(self, kind: &str) -> Result<Self, ApiError>;
}

impl WithKind for Manifest {
    fn with_kind(mut self, kind: &str) -> Result<Self, ApiError> {
        self.kind = serde_json::from_value(json!(kind)).map_err(|_| {
            ApiError::bad_request(
                "invalid_value",
                format!("`kind` is `{kind}`; expected scorer, router or refiner"),
            )
        })?;
        Ok(self)
    }
}

fn activation(q: &HashMap<String, String>) -> Result<Activation, ApiError> {
    let flag = |k: &str| match q.get(k).map(String::as_str) {
        None => Ok(None),
        Some("true" | "1") => Ok(Some(true)),
        Some("false" | "0") => Ok(Some(false)),
        Some(other) => Err(ApiError::bad_request(
            "invalid_value",
            format!("`{k}` is `{other}`; expected true or false"),
        )),
    };
    Ok(match (flag("activate")?, flag("shadow")?) {
        (Some(true), Some(true)) => {
            return Err(ApiError::bad_request(
                "invalid_value",
                "`activate` and `shadow` cannot both be true",
            ));
        }
        (Some(true), _) => Activation::Activate,
        (_, Some(true)) => Activation::Shadow,
        (Some(false), _) => Activation::StoreOnly,
        _ => Activation::IfFirst,
    })
}

async fn upload(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = state.auth.check(request.headers(), &[Role::Admin])?;
    // A parameter given twice (`kind=scorer&kind=router`) has no one meaning: refuse it
    // rather than keep whichever came last.
    let mut q = HashMap::with_capacity(pairs.len());
    for (key, value) in pairs {
        if q.contains_key(&key) {
            return Err(ApiError::bad_request(
                "duplicate_field",
                format!("query parameter `{key}` is given twice"),
            ));
        }
        q.insert(key, value);
    }
    if !flywheel_runtime::manifest::valid_name(&name) {
        return Err(ApiError::bad_request(
            "invalid_value",
            format!("plugin name `{name}` must be 1-64 characters of a-z, 0-9 and `-`"),
        ));
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        // Media types are case-insensitive (RFC 9110).
        .to_ascii_lowercase();
    let (manifest, wasm) = if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &state).await?;
        let (mut manifest, mut wasm) = (None, None);
        while let Some(field) = multipart.next_field().await? {
            let name = field.name().unwrap_or("").to_owned();
            let twice = || {
                ApiError::bad_request(
                    "duplicate_field",
                    format!("multipart part `{name}` is sent twice"),
                )
            };
            match name.as_str() {
                "manifest" if manifest.is_some() => return Err(twice()),
                "component" | "wasm" if wasm.is_some() => return Err(twice()),
                "manifest" => {
                    let text = field.text().await?;
                    manifest =
                        Some(Manifest::from_toml(&text).map_err(|e| {
                            ApiError::bad_request("invalid_manifest", e.to_string())
                        })?);
                }
                "component" | "wasm" => {
                    wasm = Some(field.bytes().await?);
                }
                other => {
                    return Err(ApiError::bad_request(
                        "unknown_field",
                        format!(
                            "unknown multipart part `{other}`; expected `manifest` and `component`"
                        ),
                    ));
                }
            }
        }
        let manifest = manifest.ok_or_else(|| {
            ApiError::bad_request(
                "missing_field",
                "multipart part `manifest` (TOML) is required",
            )
        })?;
        (
            manifest,
            wasm.ok_or_else(|| {
                ApiError::bad_request(
                    "missing_field",
                    "multipart part `component` (the .wasm) is required",
                )
            })?,
        )
    } else if content_type.starts_with("application/wasm")
        || content_type.starts_with("application/octet-stream")
    {
        let body = Bytes::from_request(request, &state).await?;
        (manifest_from_query(&state.registry, &name, &q)?, body)
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the component as `application/wasm` (manifest fields as query parameters) or as `multipart/form-data` with parts `manifest` and `component`",
        ));
    };
    if manifest.name != name {
        return Err(ApiError::bad_request(
            "name_mismatch",
            format!(
                "the manifest names `{}` but the URL names `{name}`",
                manifest.name
            ),
        ));
    }
    let activation = activation(&q)?;
    let registry = state.registry.clone();
    let outcome =
        blocking(move || Ok(registry.upload(manifest, &wasm, &caller.name, "api", activation)?))
            .await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(outcome)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionBody {
    version: String,
}

async fn parse_version(body: Bytes) -> Result<String, ApiError> {
    let v: VersionBody = serde_json::from_slice(&body).map_err(|e| {
        let mut err = ApiError::from_json(&e);
        err.message =
            format!("expected {{\"version\": \"<hash, hash prefix or manifest version>\"}}: {e}");
        err
    })?;
    Ok(v.version)
}

async fn act(
    state: Arc<AppState>,
    headers: &HeaderMap,
    f: impl FnOnce(&Registry, &str) -> Result<PluginEntry, RegistryError> + Send + 'static,
) -> Result<Response, ApiError> {
    let caller = state.auth.check(headers, &[Role::Admin])?;
    let registry = state.registry.clone();
    let entry = blocking(move || Ok(f(&registry, &caller.name)?)).await?;
    Ok(Json(view(&state.registry, &entry, false)).into_response())
}

async fn activate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let version = parse_version(body).await?;
    act(state, &headers, move |r, actor| {
        r.activate(&name, &version, actor)
    })
    .await
}

async fn rollback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    act(state, &headers, move |r, actor| r.rollback(&name, actor)).await
}

async fn disable(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    act(state, &headers, move |r, actor| r.disable(&name, actor)).await
}

async fn enable(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    act(state, &headers, move |r, actor| r.enable(&name, actor)).await
}

async fn retire(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    act(state, &headers, move |r, actor| r.retire(&name, actor)).await
}

async fn shadow(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let version = parse_version(body).await?;
    act(state, &headers, move |r, actor| {
        r.set_shadow(&name, Some(&version), actor)
    })
    .await
}

async fn stop_shadow(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    act(state, &headers, move |r, actor| {
        r.set_shadow(&name, None, actor)
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    /// A version hash; default: the current shadow.
    version: Option<String>,
    /// Events received at or after this time (ms since the epoch); default: when the
    /// version was first put in shadow, so the report reads only what it could be in.
    from: Option<u64>,
    /// Events received before this time (exclusive).
    to: Option<u64>,
    /// Differing events listed, newest last; default 50.
    limit: Option<usize>,
}

/// Agreement between a shadow candidate and the live routes, from the stored results.
async fn shadow_report(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, &[Role::Admin])?;
    let Query(q) = query?;
    let entry = state
        .registry
        .entry(&name)
        .ok_or_else(|| ApiError::not_found(format!("no plugin named `{name}`")))?;
    let hash = match (q.version, entry.shadow.clone()) {
        // As `activate` takes it; a version that does not exist is a 404, never an
        // empty report that reads as full agreement.
        (Some(v), _) => state.registry.resolve_version(&name, &v)?,
        (None, Some(h)) => h,
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "no_shadow",
                format!("plugin `{name}` has no version in shadow; give ?version="),
            ));
        }
    };
    let limit = q.limit.unwrap_or(50);
    // Shadow runs exist only from when the version went into shadow: start there (an
    // event received before and still waiting then is left out).
    let shadowed_since = entry
        .audit
        .iter()
        .filter(|a| a.action == "shadow")
        .filter(|a| a.version.as_deref() == Some(hash.as_str()))
        .map(|a| a.at)
        .min();
    let filter = EventFilter {
        from_ms: q.from.or(shadowed_since),
        to_ms: q.to,
        ..EventFilter::default()
    };
    let store = state.store.clone();
    let report = blocking(move || {
        let (mut events, mut agree) = (0u64, 0u64);
        let mut changes: std::collections::BTreeMap<(String, String), u64> = Default::default();
        let mut differing: std::collections::VecDeque<Value> = Default::default();
        // A scorer candidate may grade differently and still route the same: its scores
        // are compared with the live version's, name by name.
        let mut scores: std::collections::BTreeMap<String, ScoreAgreement> = Default::default();
        for record in store.scan(&filter) {
            let record = record?;
            let Some(outcome) = &record.outcome else { continue };
            let Some(run) = outcome.shadow.iter().find(|s| s.candidate.hash == hash) else {
                continue;
            };
            events += 1;
            let live_scores = outcome.scores.iter().filter(|s| s.plugin == name).map(|s| &s.score);
            for live in live_scores {
                let shadow = run.scores.iter().find(|s| s.name == live.name);
                scores.entry(live.name.clone()).or_default().add(live, shadow);
            }
            for shadow in run.scores.iter() {
                if !outcome.scores.iter().any(|s| s.plugin == name && s.score.name == shadow.name) {
                    scores.entry(shadow.name.clone()).or_default().add_new(shadow);
                }
            }
            // Where the event goes (outcomes stored before this rule compared whole routes).
            if run.route.same_destination(&outcome.route) {
                agree += 1;
            } else {
                *changes.entry((route_key(&outcome.route), route_key(&run.route))).or_default() += 1;
                differing.push_back(json!({"id": record.event.id, "live": outcome.route, "shadow": run.route}));
                if differing.len() > limit {
                    differing.pop_front();
                }
            }
        }
        Ok(json!({
            "plugin": name,
            "candidate": hash,
            "from": filter.from_ms,
            "events": events,
            "agree": agree,
            // No events is no evidence either way.
            "agreement": (events > 0).then(|| agree as f64 / events as f64),
            "route_changes": changes.into_iter().map(|((from, to), count)| json!({"from": from, "to": to, "count": count})).collect::<Vec<_>>(),
            "differing": differing,
            "scores": scores.into_iter().map(|(name, s)| (name, s.view())).collect::<serde_json::Map<_, _>>(),
        }))
    })
    .await?;
    Ok(Json(report).into_response())
}

/// How a shadow scorer's score of one name compares with the live version's.
#[derive(Default)]
struct ScoreAgreement {
    /// Events where either version gave this score.
    events: u64,
    /// Of those, events where the value (to 1e-9) or the label differs, or one is missing.
    changed: u64,
    live: (u64, f64),
    shadow: (u64, f64),
}

impl ScoreAgreement {
    fn add(&mut self, live: &flywheel_model::Score, shadow: Option<&flywheel_model::Score>) {
        self.events += 1;
        self.live = (self.live.0 + 1, self.live.1 + live.value);
        match shadow {
            Some(s) => {
                self.shadow = (self.shadow.0 + 1, self.shadow.1 + s.value);
                if (s.value - live.value).abs() > 1e-9 || s.label != live.label {
                    self.changed += 1;
                }
            }
            None => self.changed += 1,
        }
    }

    fn add_new(&mut self, shadow: &flywheel_model::Score) {
        self.events += 1;
        self.changed += 1;
        self.shadow = (self.shadow.0 + 1, self.shadow.1 + shadow.value);
    }

    fn view(&self) -> Value {
        let mean = |(n, sum): (u64, f64)| (n > 0).then(|| sum / n as f64);
        json!({
            "events": self.events,
            "changed": self.changed,
            "live_mean": mean(self.live),
            "shadow_mean": mean(self.shadow),
        })
    }
}

/// `POST /v1/replay` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    plugin: String,
    /// Hash, hash prefix or manifest version of a stored version.
    version: String,
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    to: Option<u64>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    prompt_version: Option<String>,
    /// Only events whose stored route is this (`accept`, `label`, `review`, `drop`).
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    examples: Option<usize>,
}

async fn replay_handler(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, &[Role::Admin])?;
    let body: ReplayBody = serde_json::from_slice(&body).map_err(|e| ApiError::from_json(&e))?;
    if let Some(r) = &body.route
        && !["accept", "label", "review", "drop"].contains(&r.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_value",
            format!("`route` is `{r}`; expected accept, label, review or drop"),
        ));
    }
    let registry = state.registry.clone();
    let store = state.store.clone();
    let runtime = state.runtime.clone();
    let report = blocking(move || {
        let (manifest, wasm) = registry.version_source(&body.plugin, &body.version)?;
        let options = ReplayOptions {
            filter: EventFilter {
                from_ms: body.from,
                to_ms: body.to,
                prompt_name: body.prompt,
                prompt_version: body.prompt_version,
                route: body.route,
                ..EventFilter::default()
            },
            limit: body.limit,
            examples: body.examples.unwrap_or(5),
            threads: 0,
        };
        replay(&store, &runtime, manifest, &wasm, &options).map_err(|e| match e {
            crate::replay::ReplayError::Registry(r) => ApiError::from(r),
            crate::replay::ReplayError::Refiner => {
                ApiError::bad_request("invalid_value", e.to_string())
            }
            other => ApiError::unavailable(other.to_string()),
        })
    })
    .await?;
    Ok(Json(report).into_response())
}
