//! Queries of the network policy and the model gateway: a task's policy, refused requests, and
//! metered model use.

use super::{Store, StoreResult, new_id, now_ms, text, with_pool};

/// A request the egress proxy refused.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct BlockedRequest {
    /// Turn it happened in.
    pub turn: i64,
    /// HTTP method (`CONNECT` for an HTTPS tunnel).
    pub method: String,
    /// The URL, or `host:port` of a tunnel (redacted).
    pub url: String,
    /// Why, for people.
    pub reason: String,
    /// When, unix ms.
    pub created_at: i64,
}

/// One metered model response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUsage<'a> {
    /// Task.
    pub task_id: &'a str,
    /// Its owner.
    pub user_id: &'a str,
    /// Turn number.
    pub turn: i64,
    /// `anthropic`, `openai`, `gemini`.
    pub provider: &'a str,
    /// Model the provider reported.
    pub model: &'a str,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Cache reads.
    pub cache_read_tokens: i64,
    /// Cache writes.
    pub cache_write_tokens: i64,
    /// Cost, millionths of a US dollar.
    pub cost_micro_usd: i64,
}

/// A turn's metered use, summed per model.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct TurnUsage {
    /// Turn number.
    pub turn: i64,
    /// Model.
    pub model: String,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Cache reads.
    pub cache_read_tokens: i64,
    /// Cache writes.
    pub cache_write_tokens: i64,
    /// Cost, millionths of a US dollar.
    pub cost_micro_usd: i64,
}

impl Store {
    /// Records a refused request and counts it on the task.
    pub async fn insert_blocked(
        &self,
        task_id: &str,
        turn: i64,
        method: &str,
        url: &str,
        reason: &str,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO task_blocked (id, task_id, turn, method, url, reason, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(new_id())
            .bind(task_id)
            .bind(turn)
            .bind(text(method))
            .bind(text(url))
            .bind(text(reason))
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE tasks SET blocked_requests = blocked_requests + 1 WHERE id = $1")
                .bind(task_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?
        });
        Ok(())
    }

    /// The newest `limit` refused requests of a task, newest first.
    pub async fn list_blocked(
        &self,
        task_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<BlockedRequest>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, BlockedRequest>(
                "SELECT turn, method, url, reason, created_at FROM task_blocked
                 WHERE task_id = $1 ORDER BY created_at DESC, id LIMIT $2",
            )
            .bind(task_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Records one metered response and adds it to the task's totals.
    pub async fn insert_usage(&self, u: &NewUsage<'_>) -> StoreResult<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO task_usage (id, task_id, user_id, turn, provider, model, input_tokens,
                     output_tokens, cache_read_tokens, cache_write_tokens, cost_micro_usd, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(new_id())
            .bind(u.task_id)
            .bind(u.user_id)
            .bind(u.turn)
            .bind(u.provider)
            .bind(text(u.model))
            .bind(u.input_tokens)
            .bind(u.output_tokens)
            .bind(u.cache_read_tokens)
            .bind(u.cache_write_tokens)
            .bind(u.cost_micro_usd)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE tasks SET input_tokens = input_tokens + $2, output_tokens = output_tokens + $3,
                     cache_read_tokens = cache_read_tokens + $4, cache_write_tokens = cache_write_tokens + $5,
                     cost_micro_usd = cost_micro_usd + $6 WHERE id = $1",
            )
            .bind(u.task_id)
            .bind(u.input_tokens)
            .bind(u.output_tokens)
            .bind(u.cache_read_tokens)
            .bind(u.cache_write_tokens)
            .bind(u.cost_micro_usd)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?
        });
        Ok(())
    }

    /// A task's metered use per turn and model, in turn order.
    pub async fn list_turn_usage(&self, task_id: &str) -> StoreResult<Vec<TurnUsage>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, TurnUsage>(
                "SELECT turn, model, CAST(SUM(input_tokens) AS BIGINT) AS input_tokens,
                        CAST(SUM(output_tokens) AS BIGINT) AS output_tokens,
                        CAST(SUM(cache_read_tokens) AS BIGINT) AS cache_read_tokens,
                        CAST(SUM(cache_write_tokens) AS BIGINT) AS cache_write_tokens,
                        CAST(SUM(cost_micro_usd) AS BIGINT) AS cost_micro_usd
                 FROM task_usage WHERE task_id = $1 GROUP BY turn, model ORDER BY turn, model",
            )
            .bind(task_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// A user's tokens (all kinds) and cost (micro-dollars) since `since` (unix ms).
    pub async fn usage_since(&self, user_id: &str, since: i64) -> StoreResult<(i64, i64)> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT CAST(COALESCE(SUM(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0) AS BIGINT),
                        CAST(COALESCE(SUM(cost_micro_usd), 0) AS BIGINT)
                 FROM task_usage WHERE user_id = $1 AND created_at >= $2",
            )
            .bind(user_id)
            .bind(since)
            .fetch_one(pool)
            .await?
        }))
    }
}
