//! Queries on users' MCP connectors.

use super::{Connector, Store, StoreResult, new_id, now_ms, text, with_pool};

/// A connector to create. Secret maps arrive already sealed.
#[derive(Debug, Clone)]
pub struct NewConnector<'a> {
    /// Owner.
    pub user_id: &'a str,
    /// Unique per user.
    pub name: &'a str,
    /// Free text.
    pub description: &'a str,
    /// `stdio` or `http`.
    pub transport: &'a str,
    /// Command for stdio.
    pub command: Option<&'a str>,
    /// JSON array of args.
    pub args: &'a str,
    /// URL for http.
    pub url: Option<&'a str>,
    /// Sealed env map.
    pub env_enc: Option<&'a str>,
    /// Sealed headers map.
    pub headers_enc: Option<&'a str>,
    /// Used by default.
    pub enabled: bool,
}

/// The full new state of an edited connector (the caller merges a PATCH into the old row).
#[derive(Debug, Clone)]
pub struct ConnectorUpdate<'a> {
    /// Unique per user.
    pub name: &'a str,
    /// Free text.
    pub description: &'a str,
    /// `stdio` or `http`.
    pub transport: &'a str,
    /// Command for stdio.
    pub command: Option<&'a str>,
    /// JSON array of args.
    pub args: &'a str,
    /// URL for http.
    pub url: Option<&'a str>,
    /// Sealed env map.
    pub env_enc: Option<&'a str>,
    /// Sealed headers map.
    pub headers_enc: Option<&'a str>,
    /// Used by default.
    pub enabled: bool,
}

/// The outcome of a connection test.
#[derive(Debug, Clone)]
pub struct ConnectorCheck<'a> {
    /// `ok` or `error`.
    pub status: &'a str,
    /// Redacted error text.
    pub error: Option<&'a str>,
    /// Tools offered.
    pub tool_count: Option<i64>,
}

impl Store {
    /// Creates a connector; [`super::StoreError::Conflict`] when the user already has one by that name.
    pub async fn insert_connector(&self, new: &NewConnector<'_>) -> StoreResult<Connector> {
        let now = now_ms();
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Connector>(
                "INSERT INTO connectors (id, user_id, name, description, transport, command, args, url,
                                         env_enc, headers_enc, enabled, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING *",
            )
            .bind(new_id())
            .bind(new.user_id)
            .bind(text(new.name))
            .bind(text(new.description))
            .bind(new.transport)
            .bind(text(new.command))
            .bind(text(new.args))
            .bind(text(new.url))
            .bind(new.env_enc)
            .bind(new.headers_enc)
            .bind(new.enabled)
            .bind(now)
            .fetch_one(pool)
            .await?
        }))
    }

    /// The user's connectors, by name.
    pub async fn list_connectors(&self, user_id: &str) -> StoreResult<Vec<Connector>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Connector>("SELECT * FROM connectors WHERE user_id = $1 ORDER BY name")
                .bind(user_id)
                .fetch_all(pool)
                .await?
        }))
    }

    /// One of the user's connectors; `None` when it does not exist or is someone else's.
    pub async fn get_connector(&self, user_id: &str, id: &str) -> StoreResult<Option<Connector>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Connector>("SELECT * FROM connectors WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(user_id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Replaces a connector's settings; `None` when it is not the user's.
    pub async fn update_connector(
        &self,
        user_id: &str,
        id: &str,
        update: &ConnectorUpdate<'_>,
    ) -> StoreResult<Option<Connector>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Connector>(
                "UPDATE connectors SET name = $3, description = $4, transport = $5, command = $6, args = $7,
                        url = $8, env_enc = $9, headers_enc = $10, enabled = $11, updated_at = $12
                 WHERE id = $1 AND user_id = $2 RETURNING *",
            )
            .bind(id)
            .bind(user_id)
            .bind(text(update.name))
            .bind(text(update.description))
            .bind(update.transport)
            .bind(text(update.command))
            .bind(text(update.args))
            .bind(text(update.url))
            .bind(update.env_enc)
            .bind(update.headers_enc)
            .bind(update.enabled)
            .bind(now_ms())
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Records the outcome of a connection test.
    pub async fn record_connector_check(
        &self,
        user_id: &str,
        id: &str,
        check: &ConnectorCheck<'_>,
    ) -> StoreResult<Option<Connector>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Connector>(
                "UPDATE connectors SET last_status = $3, last_error = $4, tool_count = $5, last_checked_at = $6
                 WHERE id = $1 AND user_id = $2 RETURNING *",
            )
            .bind(id)
            .bind(user_id)
            .bind(check.status)
            .bind(text(check.error))
            .bind(check.tool_count)
            .bind(now_ms())
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Deletes one of the user's connectors; answers whether it existed.
    pub async fn delete_connector(&self, user_id: &str, id: &str) -> StoreResult<bool> {
        let n = with_pool!(self, pool => {
            sqlx::query("DELETE FROM connectors WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }
}
