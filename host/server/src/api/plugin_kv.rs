//! `/v1/plugins/{name}/kv` (admin): read and clear a plugin's key-value data, or its
//! shadow candidate's copy. Stateful policies (samplers, rate limits, novelty) keep
//! state there that every version shares; an operator must be able to see it, and to
//! reset it when a new version changes its meaning, without the plugin's help. Each
//! removal is written to the plugin's audit trail.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flywheel_runtime::kv::MAX_KEY_BYTES;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::queues::{blocking, limit};
use crate::config::Role;
use crate::registry::{PluginEntry, shadow_kv_name};

/// The routes of this module.
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/v1/plugins/{name}/kv", get(list).delete(clear))
        .route("/v1/plugins/{name}/kv/{*key}", get(read).delete(remove))
}

/// Which data a request is about: `?shadow=true` for the shadow candidate's copy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Which {
    shadow: Option<bool>,
}

/// Query string of `GET /v1/plugins/{name}/kv`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only keys that start with this.
    prefix: Option<String>,
    /// The previous page's `next_after`.
    after: Option<String>,
    /// 1..=500, default 100.
    limit: Option<usize>,
    shadow: Option<bool>,
}

/// Query string of `DELETE /v1/plugins/{name}/kv`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearQuery {
    /// Only keys that start with this; default: every key.
    prefix: Option<String>,
    shadow: Option<bool>,
}

/// The data a request reads or clears: the name it is stored under, the version whose
/// quota applies, and whether it is the shadow's copy.
struct Target {
    plugin: String,
    stored_as: String,
    version: Option<String>,
    quota_bytes: Option<u64>,
    shadow: bool,
}

impl Target {
    fn resolve(state: &AppState, name: &str, shadow: bool) -> Result<Self, ApiError> {
        let entry = state
            .registry
            .entry(name)
            .ok_or_else(|| ApiError::not_found(format!("no plugin named `{name}`")))?;
        let quota = |entry: &PluginEntry, hash: &str| {
            entry
                .version(hash)
                .map(|v| v.manifest.limits.kv_quota_bytes())
        };
        if shadow {
            let hash = entry.shadow.clone().ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "no_shadow",
                    format!("plugin `{name}` has no version in shadow"),
                )
            })?;
            return Ok(Target {
                plugin: name.to_owned(),
                stored_as: shadow_kv_name(name, &hash),
                quota_bytes: quota(&entry, &hash),
                version: Some(hash),
                shadow: true,
            });
        }
        Ok(Target {
            plugin: name.to_owned(),
            stored_as: name.to_owned(),
            quota_bytes: entry.live.as_deref().and_then(|h| quota(&entry, h)),
            version: entry.live.clone(),
            shadow: false,
        })
    }

    /// Names the data in the audit trail.
    fn audit_label(&self) -> &'static str {
        if self.shadow { "shadow kv" } else { "kv" }
    }
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(
            "invalid_value",
            format!("a kv key is 1 to {MAX_KEY_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// `GET /v1/plugins/{name}/kv`: the data's keys and sizes in key order, a page at a time,
/// with its usage against the quota.
async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, &[Role::Admin])?;
    let Query(q) = query?;
    let limit = limit(q.limit, 100)?;
    let target = Target::resolve(&state, &name, q.shadow.unwrap_or(false))?;
    let stored_as = target.stored_as.clone();
    let prefix = q.prefix.unwrap_or_default();
    let (page, usage) = blocking(&state, move |s| {
        let page = s.kv_keys(&stored_as, &prefix, q.after.as_deref(), limit)?;
        Ok((page, s.kv_usage(&stored_as)?))
    })
    .await?;
    Ok(Json(json!({
        "plugin": target.plugin,
        "shadow": target.shadow,
        "version": target.version,
        "usage_bytes": usage,
        "quota_bytes": target.quota_bytes,
        "keys": page.keys,
        "next_after": page.next,
    }))
    .into_response())
}

/// `GET /v1/plugins/{name}/kv/{key}`: one value, as the bytes the plugin stored.
async fn read(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((name, key)): Path<(String, String)>,
    query: Result<Query<Which>, QueryRejection>,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, &[Role::Admin])?;
    let Query(q) = query?;
    check_key(&key)?;
    let target = Target::resolve(&state, &name, q.shadow.unwrap_or(false))?;
    let (store, stored_as, k) = (state.store.clone(), target.stored_as, key.clone());
    let value = super::blocking(move || Ok(store.kv_get(&stored_as, &k)?)).await?;
    match value {
        Some(bytes) => {
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
        }
        None => Err(ApiError::not_found(format!(
            "plugin `{name}` has no kv key `{key}`"
        ))),
    }
}

/// `DELETE /v1/plugins/{name}/kv/{key}`: removes one key (removing a missing one is
/// not an error; `removed` says which it was).
async fn remove(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((name, key)): Path<(String, String)>,
    query: Result<Query<Which>, QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = state.auth.check(&headers, &[Role::Admin])?;
    let Query(q) = query?;
    check_key(&key)?;
    let target = Target::resolve(&state, &name, q.shadow.unwrap_or(false))?;
    let (store, stored_as, k) = (state.store.clone(), target.stored_as.clone(), key.clone());
    let (removed, usage) = super::blocking(move || {
        let removed = store.kv_get(&stored_as, &k)?.is_some();
        if removed {
            store.kv_delete(&stored_as, &k)?;
        }
        Ok((removed, store.kv_usage(&stored_as)?))
    })
    .await?;
    if removed {
        let action = format!("delete {} key `{key}`", target.audit_label());
        record(&state, &name, &caller.name, action).await?;
    }
    Ok(Json(json!({
        "plugin": target.plugin,
        "shadow": target.shadow,
        "key": key,
        "removed": removed,
        "usage_bytes": usage,
    }))
    .into_response())
}

/// `DELETE /v1/plugins/{name}/kv[?prefix=]`: removes every key (that starts with
/// `prefix`), e.g. before a version that reads the data differently goes live.
async fn clear(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<ClearQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = state.auth.check(&headers, &[Role::Admin])?;
    let Query(q) = query?;
    let target = Target::resolve(&state, &name, q.shadow.unwrap_or(false))?;
    let stored_as = target.stored_as.clone();
    let prefix = q.prefix.unwrap_or_default();
    let p = prefix.clone();
    let (cleared, usage) = blocking(&state, move |s| {
        let cleared = s.kv_clear(&stored_as, &p)?;
        Ok((cleared, s.kv_usage(&stored_as)?))
    })
    .await?;
    if cleared.keys > 0 {
        let scope = if prefix.is_empty() {
            String::new()
        } else {
            format!(" with prefix `{prefix}`")
        };
        let keys = match cleared.keys {
            1 => "1 key".to_owned(),
            n => format!("{n} keys"),
        };
        let action = format!(
            "clear {} ({keys}{scope}, {} bytes)",
            target.audit_label(),
            cleared.bytes
        );
        record(&state, &name, &caller.name, action).await?;
    }
    Ok(Json(json!({
        "plugin": target.plugin,
        "shadow": target.shadow,
        "prefix": prefix,
        "removed_keys": cleared.keys,
        "removed_bytes": cleared.bytes,
        "usage_bytes": usage,
    }))
    .into_response())
}

/// Writes an operator's change of the data to the plugin's audit trail.
async fn record(state: &AppState, name: &str, actor: &str, action: String) -> Result<(), ApiError> {
    let registry = state.registry.clone();
    let (name, actor) = (name.to_owned(), actor.to_owned());
    super::blocking(move || Ok(registry.note(&name, &actor, &action)?)).await
}
