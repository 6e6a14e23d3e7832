//! Who is asking: the `CurrentUser` extractor over the session cookie and the `sessions` row.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::cookies::{SESSION_COOKIE, open_session, read_cookie};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::{User, now_ms};

/// The signed-in user of a request. Extracting it from a signed-out request answers 401 JSON for
/// `/api/*` and redirects pages to the sign-in page.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// The user.
    pub user: User,
    /// Their session (for logout); empty when a token authenticated the request.
    pub session_id: String,
    /// The scope of the personal API token that authenticated the request; `None` for a
    /// browser session.
    pub token_scope: Option<crate::tokens::TokenScope>,
}

/// Why [`CurrentUser`] could not be had.
#[derive(Debug)]
pub enum AuthRejection {
    /// No live session; `api` says how to answer, `next` where to come back to.
    SignedOut {
        /// The request was for the JSON API.
        api: bool,
        /// The page to return to after signing in.
        next: String,
    },
    /// Looking the session up failed.
    Failed(AppError),
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self {
            AuthRejection::SignedOut { api: true, .. } => AppError::Unauthorized.into_response(),
            AuthRejection::SignedOut { api: false, next } => Redirect::to(&format!(
                "/?next={}",
                utf8_percent_encode(&next, NON_ALPHANUMERIC)
            ))
            .into_response(),
            AuthRejection::Failed(err) => err.into_response(),
        }
    }
}

/// The live session of the request, if any: the cookie must open, and its row must exist, be
/// unexpired and unrevoked, and belong to an existing user.
async fn authenticate(parts: &Parts, state: &AppState) -> Result<Option<CurrentUser>, AppError> {
    if super::bearer::applies(parts.uri.path(), &parts.headers) {
        return super::bearer::authenticate(parts, state).await.map(Some);
    }
    let Some(token) = read_cookie(&parts.headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let now = now_ms();
    let Some(claims) = open_session(&state.keys.jwe_secret, token, now / 1000) else {
        return Ok(None);
    };
    let Some(session) = state.store.get_session(&claims.sid).await? else {
        return Ok(None);
    };
    if session.revoked_at.is_some() || session.expires_at <= now {
        return Ok(None);
    }
    let Some(user) = state.store.get_user(&session.user_id).await? else {
        return Ok(None);
    };
    Ok(Some(CurrentUser {
        user,
        session_id: session.id,
        token_scope: None,
    }))
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(parts, state).await {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(AuthRejection::SignedOut {
                api: parts.uri.path().starts_with("/api/"),
                next: parts
                    .uri
                    .path_and_query()
                    .map_or("/", |pq| pq.as_str())
                    .to_owned(),
            }),
            Err(err) => Err(AuthRejection::Failed(err)),
        }
    }
}

impl OptionalFromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        authenticate(parts, state).await
    }
}
