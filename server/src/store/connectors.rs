//! Queries on users' MCP connectors.

use super::{Connector, OAuthRequest, Store, StoreResult, new_id, now_ms, text, with_pool};

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
    /// `headers` or `oauth`.
    pub auth: &'a str,
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
    /// `headers` or `oauth`.
    pub auth: &'a str,
    /// Keep the OAuth grant (false when the URL or the auth changed: the grant was for the old one).
    pub keep_grant: bool,
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
                                         env_enc, headers_enc, enabled, created_at, updated_at, auth)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13) RETURNING *",
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
            .bind(new.auth)
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
                        url = $8, env_enc = $9, headers_enc = $10, enabled = $11, updated_at = $12,
                        auth = $13,
                        oauth_enc = CASE WHEN $14 THEN oauth_enc ELSE NULL END,
                        oauth_error = CASE WHEN $14 THEN oauth_error ELSE NULL END
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
            .bind(update.auth)
            .bind(update.keep_grant)
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

    /// Any user's connector by id, for the runner's token refresh (which already holds the id
    /// of a connector it was given by its owner).
    pub async fn get_connector_by_id(&self, id: &str) -> StoreResult<Option<Connector>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Connector>("SELECT * FROM connectors WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Stores a new OAuth grant after the user connected (clearing any `needs_reauth` reason);
    /// `None` when the connector is not the user's.
    pub async fn set_connector_grant(
        &self,
        user_id: &str,
        id: &str,
        oauth_enc: &str,
    ) -> StoreResult<Option<Connector>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Connector>(
                "UPDATE connectors SET oauth_enc = $3, oauth_error = NULL, updated_at = $4
                 WHERE id = $1 AND user_id = $2 RETURNING *",
            )
            .bind(id)
            .bind(user_id)
            .bind(oauth_enc)
            .bind(now_ms())
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Replaces the sealed grant `old` by `new` in one statement (a rotated refresh token
    /// replaces the old one atomically); answers false when the stored grant is no longer `old`
    /// (another refresh or a reconnect won).
    pub async fn swap_connector_grant(&self, id: &str, old: &str, new: &str) -> StoreResult<bool> {
        let n = with_pool!(self, pool => {
            sqlx::query("UPDATE connectors SET oauth_enc = $3, oauth_error = NULL WHERE id = $1 AND oauth_enc = $2")
                .bind(id)
                .bind(old)
                .bind(new)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// Marks the grant `old` unusable with a (redacted) reason, unless it was replaced meanwhile.
    pub async fn refuse_connector_grant(
        &self,
        id: &str,
        old: &str,
        reason: &str,
    ) -> StoreResult<bool> {
        let n = with_pool!(self, pool => {
            sqlx::query("UPDATE connectors SET oauth_error = $3 WHERE id = $1 AND oauth_enc = $2")
                .bind(id)
                .bind(old)
                .bind(text(reason))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// Records an authorization request in flight (and forgets expired ones).
    pub async fn insert_oauth_request(&self, request: &OAuthRequest) -> StoreResult<()> {
        with_pool!(self, pool => {
            sqlx::query("DELETE FROM connector_oauth_requests WHERE expires_at < $1")
                .bind(now_ms())
                .execute(pool)
                .await?;
            sqlx::query(
                "INSERT INTO connector_oauth_requests
                   (state, connector_id, user_id, session_id, pending_enc, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&request.state)
            .bind(&request.connector_id)
            .bind(&request.user_id)
            .bind(&request.session_id)
            .bind(&request.pending_enc)
            .bind(request.created_at)
            .bind(request.expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Takes the authorization request of `state` out of the table: a state is used at most
    /// once, whatever the caller then decides about it.
    pub async fn take_oauth_request(&self, state: &str) -> StoreResult<Option<OAuthRequest>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, OAuthRequest>(
                "DELETE FROM connector_oauth_requests WHERE state = $1 RETURNING *",
            )
            .bind(state)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Runs `work` holding connector `id`'s refresh lock across replicas. PostgreSQL: a
    /// transaction-scoped advisory lock (released however the transaction ends, even if this
    /// task is dropped). SQLite: the database belongs to one process, whose in-process lock
    /// the caller already holds.
    pub async fn with_refresh_lock<T>(
        &self,
        id: &str,
        work: impl std::future::Future<Output = T>,
    ) -> StoreResult<T> {
        match &self.pool {
            super::Pool::Sqlite(_) => Ok(work.await),
            super::Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(format!("drydock-connector-refresh:{id}"))
                    .execute(&mut *tx)
                    .await?;
                let out = work.await;
                tx.commit().await?;
                Ok(out)
            }
        }
    }

    /// Records whether the remote server could be reached: `Some(paused_until)` after a
    /// failure (the consecutive count goes up; `paused_until` opens the breaker or is `None`),
    /// `None` after a success (the count and the pause are cleared).
    pub async fn record_connector_reachability(
        &self,
        id: &str,
        failed: Option<Option<i64>>,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            match failed {
                Some(paused_until) => sqlx::query(
                    "UPDATE connectors SET failures = failures + 1, paused_until = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(paused_until)
                .execute(pool)
                .await?,
                None => sqlx::query(
                    "UPDATE connectors SET failures = 0, paused_until = NULL WHERE id = $1",
                )
                .bind(id)
                .execute(pool)
                .await?,
            };
        });
        Ok(())
    }
}
