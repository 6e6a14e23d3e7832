//! Queries on personal API tokens (stored as hashes only).

use super::{ApiToken, Store, StoreResult, new_id, now_ms, with_pool};

/// A token to store, already hashed.
#[derive(Debug, Clone)]
pub struct NewApiToken<'a> {
    /// Owner.
    pub user_id: &'a str,
    /// The owner's name for it.
    pub name: &'a str,
    /// `read` or `write`.
    pub scope: &'a str,
    /// Hex SHA-256 of the token.
    pub token_hash: &'a str,
    /// The token's first characters.
    pub hint: &'a str,
    /// Expiry, unix ms; `None` never expires.
    pub expires_at: Option<i64>,
}

/// How often `last_used_at` is written at most, ms: a busy script should not write a row per call.
const LAST_USED_GRANULARITY_MS: i64 = 60_000;

impl Store {
    /// Stores a new token.
    pub async fn insert_api_token(&self, new: &NewApiToken<'_>) -> StoreResult<ApiToken> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, ApiToken>(
                "INSERT INTO api_tokens (id, user_id, name, scope, token_hash, hint, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
            )
            .bind(new_id())
            .bind(new.user_id)
            .bind(new.name)
            .bind(new.scope)
            .bind(new.token_hash)
            .bind(new.hint)
            .bind(now_ms())
            .bind(new.expires_at)
            .fetch_one(pool)
            .await?
        }))
    }

    /// The user's unrevoked tokens, newest first (expired ones included, so they can be seen).
    pub async fn list_api_tokens(&self, user_id: &str) -> StoreResult<Vec<ApiToken>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, ApiToken>(
                "SELECT * FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL
                 ORDER BY created_at DESC, id",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The token with this hash, whatever its state.
    pub async fn get_api_token_by_hash(&self, token_hash: &str) -> StoreResult<Option<ApiToken>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, ApiToken>("SELECT * FROM api_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Revokes one of the user's tokens; answers false when they have no such live token.
    pub async fn revoke_api_token(&self, user_id: &str, id: &str) -> StoreResult<bool> {
        let done = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE api_tokens SET revoked_at = $3
                 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(user_id)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done > 0)
    }

    /// Records that the token was just accepted (at most once a minute per token).
    pub async fn touch_api_token(&self, id: &str) -> StoreResult<()> {
        let now = now_ms();
        with_pool!(self, pool => {
            sqlx::query(
                "UPDATE api_tokens SET last_used_at = $2
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
            )
            .bind(id)
            .bind(now)
            .bind(now - LAST_USED_GRANULARITY_MS)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}
