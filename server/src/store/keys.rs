//! Queries on users' sealed LLM API keys.

use super::{ApiKey, Store, StoreResult, now_ms, text, with_pool};

impl Store {
    /// Stores or replaces the user's key for a provider.
    pub async fn upsert_api_key(
        &self,
        user_id: &str,
        provider: &str,
        key_enc: &str,
        hint: &str,
    ) -> StoreResult<ApiKey> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, ApiKey>(
                "INSERT INTO api_keys (user_id, provider, key_enc, hint, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5)
                 ON CONFLICT (user_id, provider) DO UPDATE SET
                    key_enc = excluded.key_enc, hint = excluded.hint, updated_at = excluded.updated_at
                 RETURNING *",
            )
            .bind(user_id)
            .bind(provider)
            .bind(key_enc)
            .bind(text(hint))
            .bind(now_ms())
            .fetch_one(pool)
            .await?
        }))
    }

    /// The user's keys, by provider.
    pub async fn list_api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, ApiKey>("SELECT * FROM api_keys WHERE user_id = $1 ORDER BY provider")
                .bind(user_id)
                .fetch_all(pool)
                .await?
        }))
    }

    /// The user's key for one provider.
    pub async fn get_api_key(&self, user_id: &str, provider: &str) -> StoreResult<Option<ApiKey>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, ApiKey>("SELECT * FROM api_keys WHERE user_id = $1 AND provider = $2")
                .bind(user_id)
                .bind(provider)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Deletes the user's key for a provider; answers whether there was one.
    pub async fn delete_api_key(&self, user_id: &str, provider: &str) -> StoreResult<bool> {
        let n = with_pool!(self, pool => {
            sqlx::query("DELETE FROM api_keys WHERE user_id = $1 AND provider = $2")
                .bind(user_id)
                .bind(provider)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }
}
