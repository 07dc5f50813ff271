//! The review console at `/ui/`: plain HTML, CSS and JavaScript from `host/server/ui/`,
//! embedded in the binary so it needs no files and no network at run time, plus
//! `GET /v1/whoami` for its sign-in. The console talks only to the JSON API with the
//! reviewer's token; this module serves files and never touches the store.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::queues::caller;
use crate::config::Role;

const INDEX_HTML: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");

/// Scripts and styles only from the console itself; charts are inline SVG.
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The console's pages and its sign-in check.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ui", get(redirect))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(file))
        .route("/v1/whoami", get(whoami))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `GET /ui`: to `/ui/`, so relative asset paths resolve.
pub async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/`: the single page.
pub async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

/// `GET /ui/{file}`: the page's script and stylesheet.
pub async fn file(Path(name): Path<String>) -> Result<Response, ApiError> {
    match name.as_str() {
        "app.js" => Ok(asset(APP_JS, "text/javascript; charset=utf-8")),
        "app.css" => Ok(asset(APP_CSS, "text/css; charset=utf-8")),
        "index.html" => Ok(index().await),
        _ => Err(ApiError::not_found(format!("no console file `{name}`"))),
    }
}

/// `GET /v1/whoami`: the caller's name and role, and whether the API is open.
pub async fn whoami(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let me = caller(&state, &headers, &[Role::Ingest, Role::Reviewer])?;
    Ok(Json(
        json!({"name": me.name, "role": me.role, "open": state.auth.is_open()}),
    ))
}
