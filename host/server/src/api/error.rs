//! The one error type of the HTTP API, and the one place errors become responses.
//!
//! Every error body is `{"error": {"code", "message"}}`; `code` is a stable string that
//! clients can match on, `message` is for people and names the field when there is one.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::input::InputError;

/// An error as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (seconds): the error is about load, not the request.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Tell the client when to try again (for 503s caused by load).
    #[must_use]
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// A JSON body that does not fit its type, with the code the events API gives the
    /// same mistake: `malformed_json` (not JSON at all), `missing_field`,
    /// `unknown_field`, `invalid_type`, else `invalid_value`.
    pub fn from_json(e: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let message = e.to_string();
        let code = match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => "malformed_json",
            Category::Data if message.starts_with("missing field") => "missing_field",
            Category::Data if message.starts_with("unknown field") => "unknown_field",
            Category::Data if message.starts_with("invalid type") => "invalid_type",
            Category::Data => "invalid_value",
        };
        Self::bad_request(code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// The JSON body, also used inside batch results.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        Self::bad_request(e.code, e.message)
    }
}

impl From<flywheel_store::StoreError> for ApiError {
    fn from(e: flywheel_store::StoreError) -> Self {
        use flywheel_store::StoreError as E;
        let conflict = |code| Self::new(StatusCode::CONFLICT, code, e.to_string());
        match &e {
            E::Busy => Self::unavailable("too many writes are waiting for the disk; retry shortly")
                .retry_after(1),
            // E.g. an event erased while `?wait=true` was deciding it.
            E::NoSuchItem { .. } | E::NotFound { .. } => Self::not_found(e.to_string()),
            E::InvalidName { .. } => Self::bad_request("invalid_name", e.to_string()),
            E::InvalidFilter { .. } => Self::bad_request("invalid_value", e.to_string()),
            E::InvalidCursor => Self::bad_request(
                "invalid_cursor",
                "`cursor` is not one this listing gave out (pass `next_cursor` back as it is)",
            ),
            E::NotClaimed { .. } => conflict("not_claimed"),
            E::LeaseExpired { .. } => conflict("lease_expired"),
            E::ItemDone { .. } => conflict("item_done"),
            _ => {
                tracing::error!("store error: {e}");
                Self::unavailable(format!("the store failed: {e}"))
            }
        }
    }
}

impl From<flywheel_store::KvError> for ApiError {
    fn from(e: flywheel_store::KvError) -> Self {
        use flywheel_store::KvError as E;
        match e {
            E::Store(e) => Self::from(e),
            E::InvalidKey => Self::bad_request("invalid_value", "invalid kv key"),
            E::QuotaExceeded { .. } => {
                Self::new(StatusCode::CONFLICT, "quota_exceeded", e.to_string())
            }
        }
    }
}

/// Whether a body error was the connection's body timeout (anywhere in its chain).
fn body_timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        next = e.source();
    }
    false
}

impl ApiError {
    /// A request body that could not be read: too slow (408), too large (413), or
    /// malformed (400, with axum's explanation).
    fn body_failed(
        e: &(dyn std::error::Error + 'static),
        status: StatusCode,
        text: String,
    ) -> Self {
        if body_timed_out(e) {
            Self::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body stopped arriving for longer than limits.body-timeout-ms",
            )
        } else if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is over the configured limit (limits.max-body-bytes)",
            )
        } else {
            Self::bad_request("invalid_body", text)
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        Self::body_failed(&e, e.status(), e.body_text())
    }
}

impl From<axum::extract::multipart::MultipartError> for ApiError {
    fn from(e: axum::extract::multipart::MultipartError) -> Self {
        Self::body_failed(&e, e.status(), e.body_text())
    }
}

impl From<axum::extract::multipart::MultipartRejection> for ApiError {
    fn from(e: axum::extract::multipart::MultipartRejection) -> Self {
        Self::body_failed(&e, e.status(), e.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        Self::bad_request("invalid_query", e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_code_and_message() {
        let e = ApiError::bad_request("missing_field", "`input` is required");
        assert_eq!(
            e.body(),
            json!({"error": {"code": "missing_field", "message": "`input` is required"}})
        );
    }

    #[test]
    fn queue_errors_have_their_own_codes() {
        use flywheel_store::StoreError as E;
        let item = || "i".to_string();
        let cases = [
            (
                E::NoSuchItem {
                    queue: "q".into(),
                    item: item(),
                },
                404,
                "not_found",
            ),
            (E::NotClaimed { item: item() }, 409, "not_claimed"),
            (E::LeaseExpired { item: item() }, 409, "lease_expired"),
            (E::ItemDone { item: item() }, 409, "item_done"),
            (E::InvalidName { name: "".into() }, 400, "invalid_name"),
            (E::NotFound { id: "e".into() }, 404, "not_found"),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!((api.status.as_u16(), api.code), (status, code));
        }
    }
}
