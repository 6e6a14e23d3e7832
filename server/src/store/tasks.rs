//! Queries on tasks, the connectors they ran with, and their conversation.

use super::{Store, StoreResult, Task, TaskMessage, new_id, now_ms, text, with_pool};

/// A task to create, already validated.
#[derive(Debug, Clone)]
pub struct NewTask<'a> {
    /// Owner.
    pub user_id: &'a str,
    /// Short title.
    pub title: &'a str,
    /// The prompt.
    pub prompt: &'a str,
    /// `owner/name`.
    pub repo: &'a str,
    /// Branch to start from.
    pub base_branch: Option<&'a str>,
    /// Agent id.
    pub agent: &'a str,
    /// Model id.
    pub model: Option<&'a str>,
    /// Install dependencies first.
    pub install_deps: bool,
    /// Deadline in seconds.
    pub max_duration_s: i64,
    /// Keep the sandbox after the turn.
    pub keep_alive: bool,
    /// Open a pull request.
    pub create_pr: bool,
    /// Where it was started from: `web`, `api`, `cli` or `github`.
    pub origin: &'a str,
    /// The link to what started it.
    pub source_url: Option<&'a str>,
    /// The network policy as JSON; `None` when policies are off.
    pub network_policy: Option<&'a str>,
    /// The agent's key goes into the sandbox (its CLI cannot use the gateway).
    pub key_in_sandbox: bool,
}

/// Which of a user's tasks to list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter<'a> {
    /// Only tasks with this status.
    pub status: Option<&'a str>,
    /// Only tasks on this repository.
    pub repo: Option<&'a str>,
    /// Page size.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// How a task ended.
#[derive(Debug, Clone, Default)]
pub struct TaskOutcome<'a> {
    /// `succeeded`, `failed`, `stopped` or `timed_out`.
    pub status: &'a str,
    /// Why, for people.
    pub reason: Option<&'a str>,
    /// Commit pushed.
    pub commit_sha: Option<&'a str>,
    /// Pull request URL.
    pub pr_url: Option<&'a str>,
    /// Pull request number.
    pub pr_number: Option<i64>,
}

impl Store {
    /// Creates a task in status `queued`.
    pub async fn insert_task(&self, new: &NewTask<'_>) -> StoreResult<Task> {
        let now = now_ms();
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Task>(
                "INSERT INTO tasks (id, user_id, title, prompt, repo, base_branch, agent, model, status,
                                    install_deps, max_duration_s, keep_alive, create_pr, created_at, updated_at,
                                    origin, source_url, network_policy, key_in_sandbox)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, $10, $11, $12, $13, $13, $14, $15, $16, $17) RETURNING *",
            )
            .bind(new_id())
            .bind(new.user_id)
            .bind(text(new.title))
            .bind(text(new.prompt))
            .bind(text(new.repo))
            .bind(text(new.base_branch))
            .bind(new.agent)
            .bind(text(new.model))
            .bind(new.install_deps)
            .bind(new.max_duration_s)
            .bind(new.keep_alive)
            .bind(new.create_pr)
            .bind(now)
            .bind(new.origin)
            .bind(new.source_url)
            .bind(new.network_policy)
            .bind(new.key_in_sandbox)
            .fetch_one(pool)
            .await?
        }))
    }

    /// One of the user's tasks; `None` when it does not exist or is someone else's.
    pub async fn get_task(&self, user_id: &str, id: &str) -> StoreResult<Option<Task>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Task>("SELECT * FROM tasks WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(user_id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// A task by id alone, for the runner (never for a request handler).
    pub async fn get_task_for_runner(&self, id: &str) -> StoreResult<Option<Task>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Task>("SELECT * FROM tasks WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// The user's tasks, newest first.
    pub async fn list_tasks(
        &self,
        user_id: &str,
        filter: &TaskFilter<'_>,
    ) -> StoreResult<Vec<Task>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Task>(
                "SELECT * FROM tasks WHERE user_id = $1
                   AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR repo = $3)
                 ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5",
            )
            .bind(user_id)
            .bind(filter.status)
            .bind(filter.repo)
            .bind(filter.limit)
            .bind(filter.offset)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Every task with this status, oldest first (the queue, and recovery after a restart).
    pub async fn list_tasks_with_status(&self, status: &str) -> StoreResult<Vec<Task>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Task>("SELECT * FROM tasks WHERE status = $1 ORDER BY created_at, id")
                .bind(status)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Moves a queued task to running; answers false when it was no longer queued.
    pub async fn claim_task(&self, id: &str) -> StoreResult<bool> {
        let now = now_ms();
        let n = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE tasks SET status = 'running', started_at = $2, updated_at = $2
                 WHERE id = $1 AND status = 'queued'",
            )
            .bind(id)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Records the branch a task works on and the commit its first turn started from (kept
    /// once set).
    pub async fn set_task_branch(
        &self,
        id: &str,
        base_branch: &str,
        branch: &str,
        base_sha: &str,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "UPDATE tasks SET base_branch = $2, branch = $3, base_sha = COALESCE(base_sha, $4),
                        updated_at = $5 WHERE id = $1",
            )
                .bind(id)
                .bind(text(base_branch))
                .bind(text(branch))
                .bind(text(base_sha))
                .bind(now_ms())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records (or clears) the task's container.
    pub async fn set_task_container(
        &self,
        id: &str,
        container_id: Option<&str>,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            // The label of a container another replica made is kept only for that container.
            sqlx::query(
                "UPDATE tasks SET sandbox_instance = CASE WHEN container_id = $2
                        THEN sandbox_instance ELSE NULL END,
                        container_id = $2, updated_at = $3 WHERE id = $1",
            )
                .bind(id)
                .bind(container_id)
                .bind(now_ms())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Ends a queued or running task; answers false when it had already ended.
    pub async fn finish_task(&self, id: &str, outcome: &TaskOutcome<'_>) -> StoreResult<bool> {
        let now = now_ms();
        let n = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE tasks SET status = $2, status_reason = $3,
                        commit_sha = COALESCE($4, commit_sha), pr_url = COALESCE($5, pr_url),
                        pr_number = COALESCE($6, pr_number), finished_at = $7, updated_at = $7
                 WHERE id = $1 AND status IN ('queued', 'running')",
            )
            .bind(id)
            .bind(outcome.status)
            .bind(text(outcome.reason))
            .bind(text(outcome.commit_sha))
            .bind(text(outcome.pr_url))
            .bind(outcome.pr_number)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Deletes one of the user's tasks with its events and messages; answers whether it existed.
    pub async fn delete_task(&self, user_id: &str, id: &str) -> StoreResult<bool> {
        let n = with_pool!(self, pool => {
            sqlx::query("DELETE FROM tasks WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// Records which connectors a task runs with (replacing any earlier list).
    pub async fn set_task_connectors(
        &self,
        task_id: &str,
        connector_ids: &[String],
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM task_connectors WHERE task_id = $1")
                .bind(task_id)
                .execute(&mut *tx)
                .await?;
            for connector_id in connector_ids {
                sqlx::query("INSERT INTO task_connectors (task_id, connector_id) VALUES ($1, $2)")
                    .bind(task_id)
                    .bind(connector_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The connectors a task runs with.
    pub async fn list_task_connector_ids(&self, task_id: &str) -> StoreResult<Vec<String>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar::<_, String>(
                "SELECT connector_id FROM task_connectors WHERE task_id = $1 ORDER BY connector_id",
            )
            .bind(task_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Adds a message (already redacted) to a task's conversation; `turn` is `None` for a
    /// follow-up that waits for its turn.
    pub async fn insert_task_message(
        &self,
        task_id: &str,
        role: &str,
        content: &str,
        turn: Option<i64>,
    ) -> StoreResult<TaskMessage> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, TaskMessage>(
                "INSERT INTO task_messages (id, task_id, role, content, turn, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            )
            .bind(new_id())
            .bind(task_id)
            .bind(role)
            .bind(text(content))
            .bind(turn)
            .bind(now_ms())
            .fetch_one(pool)
            .await?
        }))
    }

    /// A task's conversation: turn by turn (the request, then the reply), then the follow-ups
    /// that did not run (stopped) or wait, oldest first.
    pub async fn list_task_messages(&self, task_id: &str) -> StoreResult<Vec<TaskMessage>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, TaskMessage>(
                "SELECT * FROM task_messages WHERE task_id = $1
                 ORDER BY CASE WHEN turn > 0 THEN 0 ELSE 1 END, CASE WHEN turn > 0 THEN turn ELSE 0 END,
                          created_at, id",
            )
            .bind(task_id)
            .fetch_all(pool)
            .await?
        }))
    }
}

/// The stored diff of a task.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TaskDiff {
    /// Task.
    pub task_id: String,
    /// JSON array of `{path, status, additions, deletions}`.
    pub files: String,
    /// Unified diff, redacted.
    pub patch: String,
    /// Written.
    pub created_at: i64,
}

impl Store {
    /// Moves a queued task to running on behalf of runner `runner_id`; answers false when it was
    /// no longer queued (another runner took it, or it was stopped).
    pub async fn claim_task_for(&self, id: &str, runner_id: &str) -> StoreResult<bool> {
        let now = now_ms();
        let n = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE tasks SET status = 'running', status_reason = NULL, runner_id = $2,
                        started_at = $3, updated_at = $3
                 WHERE id = $1 AND status = 'queued'",
            )
            .bind(id)
            .bind(runner_id)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Running tasks claimed by one runner (recovery after a restart).
    pub async fn list_running_tasks_of_runner(&self, runner_id: &str) -> StoreResult<Vec<Task>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Task>(
                "SELECT * FROM tasks WHERE status = 'running' AND runner_id = $1 ORDER BY created_at",
            )
            .bind(runner_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// How many tasks run now, across all users and runners.
    pub async fn count_running_tasks(&self) -> StoreResult<i64> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM tasks WHERE status = 'running'")
                .fetch_one(pool)
                .await?
        }))
    }

    /// Across all users: tasks waiting in the queue, tasks running, and sandboxes kept alive
    /// between turns (for the operator page).
    pub async fn count_queue_running_kept(&self) -> StoreResult<(i64, i64, i64)> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, (i64, i64, i64)>(
                "SELECT
                   (SELECT COUNT(*) FROM tasks WHERE status = 'queued'),
                   (SELECT COUNT(*) FROM tasks WHERE status = 'running'),
                   (SELECT COUNT(*) FROM tasks WHERE container_id IS NOT NULL AND status <> 'running')",
            )
            .fetch_one(pool)
            .await?
        }))
    }

    /// Sets why a queued task waits (or clears it); answers false when it is no longer queued
    /// or already had that reason.
    pub async fn set_queued_reason(&self, id: &str, reason: Option<&str>) -> StoreResult<bool> {
        let n = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE tasks SET status_reason = $2, updated_at = $3
                 WHERE id = $1 AND status = 'queued' AND status_reason IS DISTINCT FROM $2",
            )
            .bind(id)
            .bind(reason)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// How many of a user's tasks run now.
    pub async fn count_running_tasks_of_user(&self, user_id: &str) -> StoreResult<i64> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM tasks WHERE status = 'running' AND user_id = $1",
            )
            .bind(user_id)
            .fetch_one(pool)
            .await?
        }))
    }

    /// Records that a user started a turn (for the daily quota).
    pub async fn record_task_start(&self, user_id: &str, task_id: &str) -> StoreResult<()> {
        with_pool!(self, pool => {
            sqlx::query("INSERT INTO task_starts (id, user_id, task_id, created_at) VALUES ($1, $2, $3, $4)")
                .bind(new_id())
                .bind(user_id)
                .bind(task_id)
                .bind(now_ms())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Turns a user started since `since` (unix ms).
    pub async fn count_task_starts_since(&self, user_id: &str, since: i64) -> StoreResult<i64> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM task_starts WHERE user_id = $1 AND created_at >= $2",
            )
            .bind(user_id)
            .bind(since)
            .fetch_one(pool)
            .await?
        }))
    }

    /// Stores (or replaces) a task's diff.
    pub async fn save_task_diff(&self, task_id: &str, files: &str, patch: &str) -> StoreResult<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO task_diffs (task_id, files, patch, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (task_id) DO UPDATE SET files = excluded.files, patch = excluded.patch,
                    created_at = excluded.created_at",
            )
            .bind(task_id)
            .bind(text(files))
            .bind(text(patch))
            .bind(now_ms())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// A task's stored diff.
    pub async fn get_task_diff(&self, task_id: &str) -> StoreResult<Option<TaskDiff>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, TaskDiff>("SELECT * FROM task_diffs WHERE task_id = $1")
                .bind(task_id)
                .fetch_optional(pool)
                .await?
        }))
    }
}

/// The turn a runner is about to run.
#[derive(Debug, Clone)]
pub struct Turn {
    /// 1 for the first run, then one more per follow-up.
    pub number: i64,
    /// The user message it answers (`None` only for tasks queued before turns were recorded).
    pub message: Option<TaskMessage>,
}

impl Store {
    /// Starts the next turn of a task the caller has claimed: counts it and assigns it the oldest
    /// waiting user message.
    pub async fn begin_turn(&self, task_id: &str) -> StoreResult<Turn> {
        Ok(with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let number = sqlx::query_scalar::<_, i64>(
                "UPDATE tasks SET turns = turns + 1, updated_at = $2 WHERE id = $1 RETURNING turns",
            )
            .bind(task_id)
            .bind(now_ms())
            .fetch_one(&mut *tx)
            .await?;
            let waiting = sqlx::query_as::<_, TaskMessage>(
                "SELECT * FROM task_messages WHERE task_id = $1 AND role = 'user' AND turn IS NULL
                 ORDER BY created_at, id LIMIT 1",
            )
            .bind(task_id)
            .fetch_optional(&mut *tx)
            .await?;
            let message = match waiting {
                Some(mut message) => {
                    sqlx::query("UPDATE task_messages SET turn = $2 WHERE id = $1")
                        .bind(&message.id)
                        .bind(number)
                        .execute(&mut *tx)
                        .await?;
                    message.turn = Some(number);
                    Some(message)
                }
                None => None,
            };
            tx.commit().await?;
            Turn { number, message }
        }))
    }

    /// The user's message that turn `turn` answers (`None` for the first turn, which answers
    /// the task's prompt), and whether the agent's reply to that turn is stored already.
    pub async fn turn_messages(
        &self,
        task_id: &str,
        turn: i64,
    ) -> StoreResult<(Option<TaskMessage>, bool)> {
        let messages = with_pool!(self, pool => {
            sqlx::query_as::<_, TaskMessage>(
                "SELECT * FROM task_messages WHERE task_id = $1 AND turn = $2 ORDER BY created_at, id",
            )
            .bind(task_id)
            .bind(turn)
            .fetch_all(pool)
            .await?
        });
        let replied = messages.iter().any(|m| m.role == "agent");
        Ok((messages.into_iter().find(|m| m.role == "user"), replied))
    }

    /// Whether a follow-up of the task waits for its turn.
    pub async fn has_waiting_messages(&self, task_id: &str) -> StoreResult<bool> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM task_messages WHERE task_id = $1 AND role = 'user' AND turn IS NULL",
            )
            .bind(task_id)
            .fetch_one(pool)
            .await?
        }) > 0)
    }

    /// Marks the follow-ups still waiting as not run (turn 0): the user stopped the task.
    /// Answers how many there were.
    pub async fn cancel_waiting_messages(&self, task_id: &str) -> StoreResult<u64> {
        Ok(with_pool!(self, pool => {
            sqlx::query(
                "UPDATE task_messages SET turn = 0 WHERE task_id = $1 AND role = 'user' AND turn IS NULL",
            )
            .bind(task_id)
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }

    /// Queues an ended task again for its next turn; answers false when it is queued or running.
    pub async fn requeue_task(&self, id: &str) -> StoreResult<bool> {
        let n = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE tasks SET status = 'queued', status_reason = NULL, finished_at = NULL,
                        updated_at = $2
                 WHERE id = $1 AND status NOT IN ('queued', 'running')",
            )
            .bind(id)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Records that the task's sandbox stays after its turn, until `expires_at` (unix ms).
    pub async fn keep_task_sandbox(&self, id: &str, expires_at: i64) -> StoreResult<()> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE tasks SET sandbox_expires_at = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(expires_at)
                .bind(now_ms())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Takes a kept-alive sandbox away from its task so the caller may remove it: answers false
    /// when the task has no such sandbox any more or a turn is using it. With `expired_by`, only
    /// a sandbox whose idle time ended by then.
    pub async fn release_task_sandbox(
        &self,
        id: &str,
        container_id: &str,
        expired_by: Option<i64>,
    ) -> StoreResult<bool> {
        let n = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE tasks SET container_id = NULL, sandbox_expires_at = NULL, preview_port = NULL,
                        updated_at = $4
                 WHERE id = $1 AND container_id = $2 AND status NOT IN ('queued', 'running')
                   AND ($3 IS NULL OR sandbox_expires_at <= $3)",
            )
            .bind(id)
            .bind(container_id)
            .bind(expired_by)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Tasks of one runner that ended a turn and kept their sandbox (some may wait for their
    /// next turn); with `expired_by`, only those whose idle time ended by then.
    pub async fn list_kept_sandboxes(
        &self,
        runner_id: &str,
        expired_by: Option<i64>,
    ) -> StoreResult<Vec<Task>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Task>(
                "SELECT * FROM tasks WHERE runner_id = $1 AND container_id IS NOT NULL
                   AND status <> 'running' AND ($2 IS NULL OR sandbox_expires_at <= $2)
                 ORDER BY sandbox_expires_at",
            )
            .bind(runner_id)
            .bind(expired_by)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Records (or clears) the port of the dev server running in the task's sandbox.
    pub async fn set_task_preview(&self, id: &str, port: Option<i64>) -> StoreResult<()> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE tasks SET preview_port = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(port)
                .bind(now_ms())
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
