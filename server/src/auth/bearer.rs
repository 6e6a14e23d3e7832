//! `Authorization: Bearer ddt_…`: personal API tokens on `/api` routes.
//!
//! A request that carries the header to `/api` is judged by the token alone (a cookie riding
//! along is ignored), so a bad token is a 401 and never falls back to a browser session. A
//! read-scoped token may only `GET`. Pages never look at the header: they are cookie-only.

use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::CurrentUser;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::now_ms;
use crate::tokens::{TOKEN_PREFIX, TokenScope, hash_token};

/// Whether the request is one bearer authentication applies to.
pub fn applies(parts_path: &str, headers: &axum::http::HeaderMap) -> bool {
    parts_path.starts_with("/api/") && headers.contains_key(AUTHORIZATION)
}

/// The user a bearer token authenticates; an error when the header is there but not acceptable.
pub(super) async fn authenticate(parts: &Parts, state: &AppState) -> Result<CurrentUser, AppError> {
    let malformed = || {
        AppError::Rejected(format!(
            "the Authorization header must be `Bearer {TOKEN_PREFIX}…`, a drydock API token"
        ))
    };
    let unknown = || {
        AppError::Rejected(
            "this API token is not valid (mistyped, or deleted); create one under Settings → API tokens"
                .into(),
        )
    };
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(malformed)?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| t.starts_with(TOKEN_PREFIX))
        .ok_or_else(malformed)?;
    let stored = state
        .store
        .get_api_token_by_hash(&hash_token(token))
        .await?
        .ok_or_else(unknown)?;
    // Only the token's holder can get this far, so saying why it no longer works tells no one
    // else anything.
    if stored.revoked_at.is_some() {
        return Err(AppError::Rejected(
            "this API token was revoked; create a new one under Settings → API tokens".into(),
        ));
    }
    if stored.expires_at.is_some_and(|at| at <= now_ms()) {
        return Err(AppError::Rejected(
            "this API token has expired; create a new one under Settings → API tokens".into(),
        ));
    }
    let scope = TokenScope::parse(&stored.scope);
    if scope == TokenScope::Read && !matches!(parts.method, Method::GET | Method::HEAD) {
        return Err(AppError::Forbidden(
            "this token is read-only: it may only make GET requests".into(),
        ));
    }
    let user = state
        .store
        .get_user(&stored.user_id)
        .await?
        .ok_or_else(unknown)?;
    state.store.touch_api_token(&stored.id).await?;
    Ok(CurrentUser {
        user,
        session_id: String::new(),
        token_scope: Some(scope),
    })
}
