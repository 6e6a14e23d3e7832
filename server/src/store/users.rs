//! Queries on users, their GitHub accounts and their sessions.

use super::{GithubAccount, Session, Store, StoreResult, User, new_id, now_ms, text, with_pool};

/// The profile GitHub returned at sign-in.
#[derive(Debug, Clone)]
pub struct GithubProfile<'a> {
    /// GitHub's numeric id.
    pub github_id: i64,
    /// Login.
    pub login: &'a str,
    /// Display name.
    pub name: Option<&'a str>,
    /// Email.
    pub email: Option<&'a str>,
    /// Avatar URL.
    pub avatar_url: Option<&'a str>,
}

impl Store {
    /// Creates the user on first sign-in, or refreshes their profile; keyed by GitHub id.
    pub async fn upsert_user(&self, profile: &GithubProfile<'_>) -> StoreResult<User> {
        let now = now_ms();
        let user = with_pool!(self, pool => {
            sqlx::query_as::<_, User>(
                "INSERT INTO users (id, github_id, login, name, email, avatar_url, created_at, last_login_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
                 ON CONFLICT (github_id) DO UPDATE SET
                    login = excluded.login, name = excluded.name, email = excluded.email,
                    avatar_url = excluded.avatar_url, last_login_at = excluded.last_login_at
                 RETURNING *",
            )
            .bind(new_id())
            .bind(profile.github_id)
            .bind(text(profile.login))
            .bind(text(profile.name))
            .bind(text(profile.email))
            .bind(text(profile.avatar_url))
            .bind(now)
            .fetch_one(pool)
            .await?
        });
        Ok(user)
    }

    /// The user with this id.
    pub async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, User>("SELECT * FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Stores (or replaces) the user's sealed GitHub token.
    pub async fn upsert_github_account(
        &self,
        user_id: &str,
        access_token_enc: &str,
        scopes: &str,
        token_expires_at: Option<i64>,
        refresh_token_enc: Option<&str>,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO github_accounts (user_id, access_token_enc, scopes, token_expires_at, refresh_token_enc, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (user_id) DO UPDATE SET
                    access_token_enc = excluded.access_token_enc, scopes = excluded.scopes,
                    token_expires_at = excluded.token_expires_at,
                    refresh_token_enc = excluded.refresh_token_enc, updated_at = excluded.updated_at",
            )
            .bind(user_id)
            .bind(access_token_enc)
            .bind(scopes)
            .bind(token_expires_at)
            .bind(refresh_token_enc)
            .bind(now_ms())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The user's sealed GitHub token.
    pub async fn get_github_account(&self, user_id: &str) -> StoreResult<Option<GithubAccount>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, GithubAccount>("SELECT * FROM github_accounts WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Starts a session for the user, ending at `expires_at`.
    pub async fn create_session(
        &self,
        user_id: &str,
        expires_at: i64,
        user_agent: Option<&str>,
    ) -> StoreResult<Session> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Session>(
                "INSERT INTO sessions (id, user_id, created_at, expires_at, user_agent)
                 VALUES ($1, $2, $3, $4, $5) RETURNING *",
            )
            .bind(new_id())
            .bind(user_id)
            .bind(now_ms())
            .bind(expires_at)
            .bind(text(user_agent))
            .fetch_one(pool)
            .await?
        }))
    }

    /// The session with this id, whatever its state.
    pub async fn get_session(&self, id: &str) -> StoreResult<Option<Session>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Session>("SELECT * FROM sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Ends a session now; answers whether a live session was revoked.
    pub async fn revoke_session(&self, id: &str) -> StoreResult<bool> {
        let done = with_pool!(self, pool => {
            sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now_ms())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }

    /// Deletes sessions that ended before `before`; answers how many.
    pub async fn delete_sessions_ended_before(&self, before: i64) -> StoreResult<u64> {
        Ok(with_pool!(self, pool => {
            sqlx::query("DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1")
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
