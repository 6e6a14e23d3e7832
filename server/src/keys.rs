//! `/api/keys`: each user's LLM API keys, sealed at rest and never shown back.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{ApiJson, ApiPath, AppError, ErrorBody};
use crate::state::AppState;

/// Longest key accepted, in bytes.
const MAX_KEY_BYTES: usize = 4096;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys))
        .routes(routes!(put_key, delete_key))
}

/// One provider's key as the user sees it: whether it is set, never its value.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyEntry {
    /// Provider id.
    pub provider: String,
    /// Whether a key is stored.
    pub configured: bool,
    /// Its last four characters.
    pub hint: Option<String>,
    /// When it was last set, unix ms.
    pub updated_at: Option<i64>,
}

/// Every provider with the user's key state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList {
    /// One entry per provider drydock knows.
    pub keys: Vec<KeyEntry>,
}

/// Body of `PUT /api/keys/{provider}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutKey {
    /// The key; surrounding white space is dropped.
    pub key: String,
}

fn known_provider(state: &AppState, provider: &str) -> Result<(), AppError> {
    if state.providers.iter().any(|p| p == provider) {
        Ok(())
    } else {
        Err(AppError::NotFound("provider"))
    }
}

/// Checks a pasted key; answers it without surrounding white space.
fn validate_key(raw: &str) -> Result<&str, AppError> {
    let key = raw.trim();
    if key.is_empty() {
        return Err(AppError::invalid("key", "the key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(AppError::invalid(
            "key",
            "the key is longer than 4 KiB; check what was pasted",
        ));
    }
    if key.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(AppError::invalid(
            "key",
            "the key contains spaces or control characters; paste only the key itself",
        ));
    }
    Ok(key)
}

fn hint_of(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

/// Lists every provider with whether the user has a key for it.
#[utoipa::path(get, path = "/api/keys", tag = "keys",
    responses((status = 200, body = KeyList), (status = 401, body = ErrorBody)))]
async fn list_keys(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Json<KeyList>, AppError> {
    let stored = state.store.list_api_keys(&user.user.id).await?;
    let keys = state
        .providers
        .iter()
        .map(|provider| {
            let row = stored.iter().find(|k| &k.provider == provider);
            KeyEntry {
                provider: provider.clone(),
                configured: row.is_some(),
                hint: row.map(|k| k.hint.clone()),
                updated_at: row.map(|k| k.updated_at),
            }
        })
        .collect();
    Ok(Json(KeyList { keys }))
}

/// Stores or replaces the user's key for a provider.
#[utoipa::path(put, path = "/api/keys/{provider}", tag = "keys", request_body = PutKey,
    params(("provider" = String, Path, description = "Provider id, e.g. anthropic")),
    responses((status = 200, body = KeyEntry), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_key(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(provider): ApiPath<String>,
    ApiJson(body): ApiJson<PutKey>,
) -> Result<Json<KeyEntry>, AppError> {
    known_provider(&state, &provider)?;
    let key = validate_key(&body.key)?;
    let sealed = state.secrets.seal_str(key);
    let row = state
        .store
        .upsert_api_key(&user.user.id, &provider, &sealed, &hint_of(key))
        .await?;
    tracing::info!(user_id = %user.user.id, provider = %provider, "API key stored");
    Ok(Json(KeyEntry {
        provider,
        configured: true,
        hint: Some(row.hint),
        updated_at: Some(row.updated_at),
    }))
}

/// Removes the user's key for a provider.
#[utoipa::path(delete, path = "/api/keys/{provider}", tag = "keys",
    params(("provider" = String, Path, description = "Provider id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_key(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(provider): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    known_provider(&state, &provider)?;
    if state.store.delete_api_key(&user.user.id, &provider).await? {
        tracing::info!(user_id = %user.user.id, provider = %provider, "API key removed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound("key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_the_last_four_characters() {
        assert_eq!(hint_of("sk-ant-1234abcd"), "abcd");
        assert_eq!(hint_of("ab"), "ab");
        assert_eq!(hint_of("ключ-ééé1"), "ééé1");
    }
}
