//! Bearer-token authentication: who is calling, and in which role.
//!
//! With no tokens configured the API is open (the server then refuses to listen on
//! anything but loopback). Checking a token costs one hash-map lookup.

use std::collections::HashMap;

use axum::http::HeaderMap;

use super::error::ApiError;
use crate::config::Role;

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (`anonymous` when the API is open): the actor in audit trails.
    pub name: String,
    pub role: Role,
}

/// The configured tokens.
#[derive(Debug, Default)]
pub struct Auth {
    tokens: HashMap<String, Caller>,
}

impl Auth {
    pub fn new(tokens: impl IntoIterator<Item = (String, String, Role)>) -> Self {
        Self {
            tokens: tokens
                .into_iter()
                .map(|(name, secret, role)| (secret, Caller { name, role }))
                .collect(),
        }
    }

    /// No tokens: every request is an anonymous admin.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Identify the caller and check it holds one of `allowed`.
    pub fn check(&self, headers: &HeaderMap, allowed: &[Role]) -> Result<Caller, ApiError> {
        if self.is_open() {
            return Ok(Caller {
                name: "anonymous".into(),
                role: Role::Admin,
            });
        }
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized("missing `Authorization: Bearer <token>` header")
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        let caller = self
            .tokens
            .get(token.trim())
            .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
        if caller.role == Role::Admin || allowed.contains(&caller.role) {
            Ok(caller.clone())
        } else {
            Err(ApiError::forbidden(format!(
                "token `{}` has role {:?}; this needs one of {}",
                caller.name,
                caller.role,
                allowed
                    .iter()
                    .map(|r| format!("{r:?}").to_lowercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}
