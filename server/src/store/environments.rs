//! Queries on environments configured per user and repository, and their sealed secrets.

use super::{EnvironmentRow, EnvironmentSecretRow, Store, StoreResult, now_ms, text, with_pool};

/// What `PUT /api/environments/{owner}/{repo}` stores (secrets apart).
#[derive(Debug, Clone, Default)]
pub struct EnvironmentUpdate<'a> {
    /// Registered image name, or `None` for drydock's.
    pub image: Option<&'a str>,
    /// Setup script.
    pub setup: Option<&'a str>,
    /// Maintenance script.
    pub maintenance: Option<&'a str>,
    /// JSON object of variables.
    pub variables: &'a str,
}

/// How the last setup ended, for the repository's environment page.
#[derive(Debug, Clone)]
pub struct SetupRecord<'a> {
    /// Where the environment came from.
    pub source: &'a str,
    /// `succeeded` or `failed`.
    pub status: &'a str,
    /// Its log, redacted.
    pub log: &'a str,
}

impl Store {
    /// The user's environment for `repo`, if configured (or recorded by a setup).
    pub async fn get_environment(
        &self,
        user_id: &str,
        repo: &str,
    ) -> StoreResult<Option<EnvironmentRow>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, EnvironmentRow>(
                "SELECT * FROM environments WHERE user_id = $1 AND repo = $2",
            )
            .bind(user_id)
            .bind(repo)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Stores or replaces the user's environment for `repo` (its setup record and generation
    /// stay).
    pub async fn upsert_environment(
        &self,
        user_id: &str,
        repo: &str,
        update: &EnvironmentUpdate<'_>,
    ) -> StoreResult<EnvironmentRow> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, EnvironmentRow>(
                "INSERT INTO environments (user_id, repo, image, setup, maintenance, variables,
                                           created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
                 ON CONFLICT (user_id, repo) DO UPDATE SET
                    image = excluded.image, setup = excluded.setup,
                    maintenance = excluded.maintenance, variables = excluded.variables,
                    updated_at = excluded.updated_at
                 RETURNING *",
            )
            .bind(user_id)
            .bind(repo)
            .bind(text(update.image))
            .bind(text(update.setup))
            .bind(text(update.maintenance))
            .bind(text(update.variables))
            .bind(now_ms())
            .fetch_one(pool)
            .await?
        }))
    }

    /// Makes sure a row exists (for a setup record or a rebuild of a repository configured only
    /// by its files).
    async fn ensure_environment(&self, user_id: &str, repo: &str) -> StoreResult<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO environments (user_id, repo, created_at, updated_at)
                 VALUES ($1, $2, $3, $3) ON CONFLICT (user_id, repo) DO NOTHING",
            )
            .bind(user_id)
            .bind(repo)
            .bind(now_ms())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Bumps the environment's generation so the next task runs setup afresh; answers the new
    /// generation.
    pub async fn bump_environment_generation(&self, user_id: &str, repo: &str) -> StoreResult<i64> {
        self.ensure_environment(user_id, repo).await?;
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar::<_, i64>(
                "UPDATE environments SET generation = generation + 1, updated_at = $3
                 WHERE user_id = $1 AND repo = $2 RETURNING generation",
            )
            .bind(user_id)
            .bind(repo)
            .bind(now_ms())
            .fetch_one(pool)
            .await?
        }))
    }

    /// Records how a setup ended.
    pub async fn record_environment_setup(
        &self,
        user_id: &str,
        repo: &str,
        record: &SetupRecord<'_>,
    ) -> StoreResult<()> {
        self.ensure_environment(user_id, repo).await?;
        with_pool!(self, pool => {
            sqlx::query(
                "UPDATE environments SET last_source = $3, last_setup_status = $4,
                    last_setup_log = $5, last_setup_at = $6
                 WHERE user_id = $1 AND repo = $2",
            )
            .bind(user_id)
            .bind(repo)
            .bind(text(record.source))
            .bind(text(record.status))
            .bind(text(record.log))
            .bind(now_ms())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The environment's secrets, by name.
    pub async fn list_environment_secrets(
        &self,
        user_id: &str,
        repo: &str,
    ) -> StoreResult<Vec<EnvironmentSecretRow>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, EnvironmentSecretRow>(
                "SELECT name, value_enc, agent_may_see, version, updated_at FROM environment_secrets
                 WHERE user_id = $1 AND repo = $2 ORDER BY name",
            )
            .bind(user_id)
            .bind(repo)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Stores or replaces a secret (the environment row must exist). A new value gets a new
    /// version.
    pub async fn upsert_environment_secret(
        &self,
        user_id: &str,
        repo: &str,
        name: &str,
        value_enc: &str,
        agent_may_see: bool,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO environment_secrets (user_id, repo, name, value_enc, agent_may_see,
                                                  version, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)
                 ON CONFLICT (user_id, repo, name) DO UPDATE SET
                    value_enc = excluded.value_enc, agent_may_see = excluded.agent_may_see,
                    version = excluded.version, updated_at = excluded.updated_at",
            )
            .bind(user_id)
            .bind(repo)
            .bind(name)
            .bind(value_enc)
            .bind(agent_may_see)
            .bind(now_ms())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Changes only whether the agent may see a secret; answers whether it exists.
    pub async fn set_environment_secret_visibility(
        &self,
        user_id: &str,
        repo: &str,
        name: &str,
        agent_may_see: bool,
    ) -> StoreResult<bool> {
        let n = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE environment_secrets SET agent_may_see = $4, updated_at = $5
                 WHERE user_id = $1 AND repo = $2 AND name = $3",
            )
            .bind(user_id)
            .bind(repo)
            .bind(name)
            .bind(agent_may_see)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Removes a secret; answers whether there was one.
    pub async fn delete_environment_secret(
        &self,
        user_id: &str,
        repo: &str,
        name: &str,
    ) -> StoreResult<bool> {
        let n = with_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM environment_secrets WHERE user_id = $1 AND repo = $2 AND name = $3",
            )
            .bind(user_id)
            .bind(repo)
            .bind(name)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }
}
