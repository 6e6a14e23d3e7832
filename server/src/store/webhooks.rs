//! Queries on GitHub webhook deliveries (receipts and the status view), the issue a task reports
//! to, and the one reply per issue drydock gives people it ignores.

use super::{
    Store, StoreError, StoreResult, TaskGithubThread, User, WebhookDelivery, new_id, now_ms,
    with_pool,
};

/// A delivery to record.
#[derive(Debug, Clone, Default)]
pub struct NewDelivery<'a> {
    /// `X-GitHub-Delivery`.
    pub delivery_id: Option<&'a str>,
    /// `X-GitHub-Event`.
    pub event: &'a str,
    /// The outcome so far (`processing` while it is being handled).
    pub outcome: &'a str,
    /// Why, for people.
    pub detail: &'a str,
    /// `owner/name`.
    pub repo: Option<&'a str>,
    /// Who caused it (GitHub login).
    pub sender: Option<&'a str>,
    /// Pruned after, unix ms.
    pub expires_at: i64,
}

/// What became of a delivery.
#[derive(Debug, Clone, Default)]
pub struct DeliveryOutcome<'a> {
    /// `accepted`, `ignored` or `failed`.
    pub outcome: &'a str,
    /// Why, for people.
    pub detail: &'a str,
    /// The drydock user it was matched to.
    pub user_id: Option<&'a str>,
    /// The task it started or continued.
    pub task_id: Option<&'a str>,
}

impl Store {
    /// Records the first delivery of `delivery_id` (the receipt). Answers `None` when a receipt
    /// for it already exists: the caller answers that receipt's outcome and does nothing else.
    pub async fn claim_delivery(&self, new: &NewDelivery<'_>) -> StoreResult<Option<String>> {
        let id = new_id();
        let inserted = with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, delivery_id, receipt_key, event, repo, sender, outcome, detail, received_at, expires_at)
                 VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&id)
            .bind(new.delivery_id)
            .bind(new.event)
            .bind(new.repo)
            .bind(new.sender)
            .bind(new.outcome)
            .bind(new.detail)
            .bind(now_ms())
            .bind(new.expires_at)
            .execute(pool)
            .await
            .map(|_| ())
        });
        match inserted.map_err(StoreError::from) {
            Ok(_) => Ok(Some(id)),
            Err(StoreError::Conflict) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The receipt (first delivery) of `delivery_id`.
    pub async fn get_delivery_receipt(
        &self,
        delivery_id: &str,
    ) -> StoreResult<Option<WebhookDelivery>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, WebhookDelivery>(
                "SELECT * FROM webhook_deliveries WHERE receipt_key = $1",
            )
            .bind(delivery_id)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Records a redelivery of the receipt `first` (for the status view).
    pub async fn record_duplicate_delivery(
        &self,
        first: &WebhookDelivery,
        expires_at: i64,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, delivery_id, duplicate_of, event, repo, sender, user_id,
                                                 outcome, detail, task_id, received_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'duplicate', $8, $9, $10, $11)",
            )
            .bind(new_id())
            .bind(&first.delivery_id)
            .bind(&first.id)
            .bind(&first.event)
            .bind(&first.repo)
            .bind(&first.sender)
            .bind(&first.user_id)
            .bind(format!("redelivery; first outcome: {}", first.outcome))
            .bind(&first.task_id)
            .bind(now_ms())
            .bind(expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Records a delivery that is not a receipt (a bad signature, a malformed request).
    pub async fn record_rejected_delivery(&self, new: &NewDelivery<'_>) -> StoreResult<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, delivery_id, event, repo, sender, outcome, detail, received_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(new_id())
            .bind(new.delivery_id)
            .bind(new.event)
            .bind(new.repo)
            .bind(new.sender)
            .bind(new.outcome)
            .bind(new.detail)
            .bind(now_ms())
            .bind(new.expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Sets what became of a delivery.
    pub async fn finish_delivery(&self, id: &str, done: &DeliveryOutcome<'_>) -> StoreResult<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "UPDATE webhook_deliveries SET outcome = $2, detail = $3, user_id = $4, task_id = $5 WHERE id = $1",
            )
            .bind(id)
            .bind(done.outcome)
            .bind(done.detail)
            .bind(done.user_id)
            .bind(done.task_id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The most recent deliveries matched to `user_id`, newest first.
    pub async fn list_deliveries_of_user(
        &self,
        user_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, WebhookDelivery>(
                "SELECT * FROM webhook_deliveries WHERE user_id = $1
                 ORDER BY received_at DESC, id LIMIT $2",
            )
            .bind(user_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The most recent deliveries of every user and none (the operator's view), newest first.
    pub async fn list_recent_deliveries(&self, limit: i64) -> StoreResult<Vec<WebhookDelivery>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, WebhookDelivery>(
                "SELECT * FROM webhook_deliveries ORDER BY received_at DESC, id LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Counts of deliveries since `since` not matched to any user, by outcome.
    pub async fn count_unmatched_deliveries(&self, since: i64) -> StoreResult<Vec<(String, i64)>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT outcome, COUNT(*) FROM webhook_deliveries
                 WHERE user_id IS NULL AND received_at >= $1 GROUP BY outcome ORDER BY outcome",
            )
            .bind(since)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Deletes deliveries (receipts included) past their expiry; answers how many.
    pub async fn prune_deliveries(&self, now: i64) -> StoreResult<u64> {
        Ok(with_pool!(self, pool => {
            sqlx::query("DELETE FROM webhook_deliveries WHERE expires_at <= $1")
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// The drydock user with this GitHub id.
    pub async fn get_user_by_github_id(&self, github_id: i64) -> StoreResult<Option<User>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, User>("SELECT * FROM users WHERE github_id = $1")
                .bind(github_id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// The newest task whose pull request is `repo`#`pr_number` (whoever owns it).
    pub async fn find_task_by_pull(
        &self,
        repo: &str,
        pr_number: i64,
    ) -> StoreResult<Option<super::Task>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, super::Task>(
                "SELECT * FROM tasks WHERE repo = $1 AND pr_number = $2 ORDER BY created_at DESC LIMIT 1",
            )
            .bind(repo)
            .bind(pr_number)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Points a task's GitHub feedback at `repo`#`issue_number`.
    pub async fn set_task_github_thread(
        &self,
        task_id: &str,
        repo: &str,
        issue_number: i64,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO task_github_threads (task_id, repo, issue_number, updated_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (task_id) DO UPDATE SET
                    repo = excluded.repo, issue_number = excluded.issue_number, updated_at = excluded.updated_at",
            )
            .bind(task_id)
            .bind(repo)
            .bind(issue_number)
            .bind(now_ms())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Where a task's GitHub feedback goes, if it came from GitHub.
    pub async fn get_task_github_thread(
        &self,
        task_id: &str,
    ) -> StoreResult<Option<TaskGithubThread>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, TaskGithubThread>("SELECT * FROM task_github_threads WHERE task_id = $1")
                .bind(task_id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Marks that drydock replied on `repo`#`issue_number` to someone it ignores; answers false
    /// when it already had (so it replies at most once per issue).
    pub async fn first_reply_on_issue(&self, repo: &str, issue_number: i64) -> StoreResult<bool> {
        let inserted = with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO webhook_replies (repo, issue_number, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (repo, issue_number) DO NOTHING",
            )
            .bind(repo)
            .bind(issue_number)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted > 0)
    }
}
