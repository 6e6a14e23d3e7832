//! `/api/tokens`: personal API tokens for scripts and the CLI.
//!
//! A token is `ddt_` followed by 32 random bytes in unpadded base64url. It is shown once, when
//! created; the store keeps only its SHA-256 (a token has 256 bits of entropy, so a plain hash
//! cannot be brute-forced, and a lookup by hash needs no per-row salt). `Authorization: Bearer`
//! with a token works on `/api` routes its scope allows (see `auth::bearer`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{ApiJson, ApiPath, AppError, ErrorBody};
use crate::state::AppState;
use crate::store::{ApiToken, NewApiToken, now_ms};

/// Every token starts with this, so scanners and people recognise one.
pub const TOKEN_PREFIX: &str = "ddt_";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// Longest lifetime a token may be given, days.
const MAX_DAYS: u32 = 366;
/// Lifetime when none is asked for, days.
const DEFAULT_DAYS: u32 = 30;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// `GET` requests only.
    Read,
    /// Everything the API offers, except minting more tokens.
    Write,
}

impl TokenScope {
    fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Write => "write",
        }
    }

    /// The scope stored as `text`; anything unknown is read-only.
    pub fn parse(text: &str) -> Self {
        if text == "write" {
            TokenScope::Write
        } else {
            TokenScope::Read
        }
    }
}

/// Hex SHA-256 of a token, the form it is stored and looked up in.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh token.
fn generate_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Body of `POST /api/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A name to recognise it by (1–100 characters).
    pub name: String,
    /// Days until it expires (1–366, default 30).
    pub expires_in_days: Option<u32>,
    /// `read` (GET only) or `write`.
    pub scope: TokenScope,
}

/// A token as listed: never its value.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    /// Token id (for `DELETE /api/tokens/{id}`).
    pub id: String,
    /// Its name.
    pub name: String,
    /// `read` or `write`.
    pub scope: TokenScope,
    /// Its first characters.
    pub hint: String,
    /// Created, unix ms.
    pub created_at: i64,
    /// Last used, unix ms (to the minute).
    pub last_used_at: Option<i64>,
    /// Expires, unix ms.
    pub expires_at: Option<i64>,
    /// It has expired.
    pub expired: bool,
}

impl From<ApiToken> for TokenView {
    fn from(t: ApiToken) -> Self {
        let expired = t.expires_at.is_some_and(|at| at <= now_ms());
        TokenView {
            id: t.id,
            name: t.name,
            scope: TokenScope::parse(&t.scope),
            hint: t.hint,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
            expired,
        }
    }
}

/// A new token, with its value: the only time it is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// The token; store it now, it cannot be shown again.
    pub token: String,
    /// The token as it will be listed.
    #[serde(flatten)]
    pub view: TokenView,
}

/// Creates a token; its value is in this answer only. Needs a browser session: a token cannot
/// mint tokens.
#[utoipa::path(post, path = "/api/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), AppError> {
    if user.token_scope.is_some() {
        return Err(AppError::Forbidden(
            "tokens are created in drydock's settings page, not with another token".into(),
        ));
    }
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "name",
            "give the token a name of 1 to 100 characters",
        ));
    }
    let days = body.expires_in_days.unwrap_or(DEFAULT_DAYS);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(AppError::invalid(
            "expires_in_days",
            format!("a token lasts 1 to {MAX_DAYS} days"),
        ));
    }
    let token = generate_token();
    let hint: String = token.chars().take(TOKEN_PREFIX.len() + 4).collect();
    let stored = state
        .store
        .insert_api_token(&NewApiToken {
            user_id: &user.user.id,
            name,
            scope: body.scope.as_str(),
            token_hash: &hash_token(&token),
            hint: &hint,
            expires_at: Some(now_ms() + i64::from(days) * 86_400_000),
        })
        .await?;
    tracing::info!(user_id = %user.user.id, token_id = %stored.id, scope = body.scope.as_str(), "API token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            view: stored.into(),
        }),
    ))
}

/// The user's tokens (names, scopes, dates; never values).
#[utoipa::path(get, path = "/api/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenView>), (status = 401, body = ErrorBody)))]
async fn list_tokens(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Json<Vec<TokenView>>, AppError> {
    let tokens = state.store.list_api_tokens(&user.user.id).await?;
    Ok(Json(tokens.into_iter().map(TokenView::from).collect()))
}

/// Revokes a token at once.
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "tokens", params(("id" = String, Path, description = "Token id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_token(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    if !state.store.revoke_api_token(&user.user.id, &id).await? {
        return Err(AppError::NotFound("token"));
    }
    tracing::info!(user_id = %user.user.id, token_id = %id, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed() {
        let a = generate_token();
        let b = generate_token();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_ne!(a, b);
        let raw = URL_SAFE_NO_PAD
            .decode(&a[TOKEN_PREFIX.len()..])
            .expect("base64url");
        assert_eq!(raw.len(), TOKEN_BYTES);
        assert_eq!(hash_token(&a).len(), 64);
        assert!(!hash_token(&a).contains(&a[TOKEN_PREFIX.len()..]));
    }
}
