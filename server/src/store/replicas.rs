//! Queries that let several drydock replicas share one PostgreSQL: heartbeats, the atomic claim
//! of a queued turn, leases on running turns, adoption of a lost replica's tasks, requests to the
//! replica that owns a task, and `LISTEN/NOTIFY` for live events across replicas.
//!
//! On SQLite (one replica only) the same calls work; notifications are simply not sent.

use sqlx::postgres::PgListener;

use super::{Backend, Pool, Store, StoreResult, Task, now_ms, with_pool};

/// `NOTIFY` channel of stored log events; payload `"<task id> <last seq>"`.
pub const EVENTS_CHANNEL: &str = "drydock_events";
/// `NOTIFY` channel of task status changes; payload `"<origin replica> <task id>"`.
pub const STATUS_CHANNEL: &str = "drydock_status";
/// `NOTIFY` channel of requests to a task's owner; payload: the owning replica's id.
pub const CONTROL_CHANNEL: &str = "drydock_control";

/// Key of the PostgreSQL advisory lock that makes the limit checks of a claim and the claim one
/// step across replicas (the text `drydock.claim` as an integer).
const CLAIM_LOCK: i64 = 0x6472_7964_6f63_6b01;

/// The limits a claim must respect, counted across every replica.
#[derive(Debug, Clone, Copy)]
pub struct ClaimLimits {
    /// Tasks running at once, all users.
    pub max_running: i64,
    /// Tasks running at once for the task's user.
    pub max_running_per_user: i64,
}

/// What a replica asks of the replica owning a task, through the task's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    /// End the running turn (the user pressed stop, or deleted the task).
    Stop,
    /// Remove the kept-alive sandbox (sandbox stop, or the task deleted).
    Release,
}

impl ControlRequest {
    fn as_str(self) -> &'static str {
        match self {
            ControlRequest::Stop => "stop",
            ControlRequest::Release => "release",
        }
    }

    /// The request stored as `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stop" => Some(ControlRequest::Stop),
            "release" => Some(ControlRequest::Release),
            _ => None,
        }
    }
}

/// One replica as the operator page lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReplicaRow {
    /// Its instance id (`DRYDOCK_INSTANCE_ID`).
    pub id: String,
    /// When it first registered (unix ms).
    pub started_at: i64,
    /// Its last heartbeat (unix ms).
    pub heartbeat_at: i64,
    /// Whether that heartbeat is recent enough for it to count as alive.
    pub alive: bool,
    /// Turns it runs now.
    pub running: i64,
    /// Sandboxes it keeps alive between turns.
    pub kept: i64,
}

impl Store {
    /// Records that replica `id` is alive (it counts as lost after `period_ms` without a
    /// heartbeat) and renews the lease of every turn it runs until now + `lease_ms`.
    pub async fn replica_heartbeat(
        &self,
        id: &str,
        period_ms: i64,
        lease_ms: i64,
    ) -> StoreResult<()> {
        let now = now_ms();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO replicas (id, started_at, heartbeat_at, lease_ms) VALUES ($1, $2, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,
                    lease_ms = excluded.lease_ms",
            )
            .bind(id)
            .bind(now)
            .bind(period_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE tasks SET lease_expires_at = $2 WHERE runner_id = $1 AND status = 'running'",
            )
            .bind(id)
            .bind(now + lease_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Moves a queued task to running for replica `runner_id` with a lease of `lease_ms`, if the
    /// limits still allow it across all replicas; answers false when another replica took it, it
    /// was stopped, or a limit is reached. On PostgreSQL the counts and the update run under one
    /// advisory transaction lock, so two replicas can never both take the last slot; on SQLite the
    /// single writer gives the same.
    pub async fn claim_task_within(
        &self,
        id: &str,
        runner_id: &str,
        lease_ms: i64,
        limits: ClaimLimits,
    ) -> StoreResult<bool> {
        let now = now_ms();
        let postgres = self.backend() == Backend::Postgres;
        let n = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(CLAIM_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            let n = sqlx::query(
                "UPDATE tasks SET status = 'running', status_reason = NULL,
                        sandbox_instance = CASE WHEN container_id IS NULL THEN NULL
                            ELSE COALESCE(sandbox_instance, runner_id) END,
                        runner_id = $2,
                        started_at = $3, updated_at = $3, lease_expires_at = $4, control_request = NULL
                 WHERE id = $1 AND status = 'queued'
                   AND (SELECT COUNT(*) FROM tasks t WHERE t.status = 'running') < $5
                   AND (SELECT COUNT(*) FROM tasks t
                         WHERE t.status = 'running' AND t.user_id = tasks.user_id) < $6",
            )
            .bind(id)
            .bind(runner_id)
            .bind(now)
            .bind(now + lease_ms)
            .bind(limits.max_running)
            .bind(limits.max_running_per_user)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            n
        });
        Ok(n > 0)
    }

    /// Running tasks of other replicas whose lease ran out before `now` (their replica stopped
    /// renewing it), oldest first.
    pub async fn list_expired_leases(&self, me: &str, now: i64) -> StoreResult<Vec<Task>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Task>(
                "SELECT * FROM tasks WHERE status = 'running' AND lease_expires_at < $2
                   AND runner_id IS NOT NULL AND runner_id <> $1
                 ORDER BY created_at, id",
            )
            .bind(me)
            .bind(now)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Takes over a running task from replica `lost` whose lease ran out, for replica `me` with a
    /// fresh lease (so that if `me` dies too, a third adopts it); answers false when another
    /// replica adopted it first or `lost` renewed it after all.
    pub async fn adopt_task(
        &self,
        id: &str,
        lost: &str,
        me: &str,
        lease_ms: i64,
    ) -> StoreResult<bool> {
        let now = now_ms();
        let n = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE tasks SET runner_id = $3, lease_expires_at = $5, updated_at = $4,
                        sandbox_instance = CASE WHEN container_id IS NULL THEN NULL
                            ELSE COALESCE(sandbox_instance, runner_id) END
                 WHERE id = $1 AND runner_id = $2 AND status = 'running' AND lease_expires_at < $4",
            )
            .bind(id)
            .bind(lost)
            .bind(me)
            .bind(now)
            .bind(now + lease_ms)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Takes over the kept-alive sandboxes of replica `lost` for replica `me`: `me` owns them
    /// from now on (its idle reaper removes them, its follow-ups run in them), and the row
    /// remembers the label they carry. Answers the tasks taken over; each goes to one replica
    /// only.
    pub async fn adopt_kept_sandboxes(&self, lost: &str, me: &str) -> StoreResult<Vec<Task>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, Task>(
                "UPDATE tasks SET sandbox_instance = COALESCE(sandbox_instance, runner_id),
                        runner_id = $2
                 WHERE runner_id = $1 AND container_id IS NOT NULL AND status <> 'running'
                 RETURNING *",
            )
            .bind(lost)
            .bind(me)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The containers labelled with instance `instance` that other replicas took over (see
    /// [`Store::adopt_kept_sandboxes`]): a restart of `instance` must not reap them.
    pub async fn sandboxes_held_for(&self, instance: &str) -> StoreResult<Vec<String>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar::<_, String>(
                "SELECT container_id FROM tasks WHERE sandbox_instance = $1
                   AND container_id IS NOT NULL",
            )
            .bind(instance)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Replicas other than `me` whose heartbeat is older than their lease at `now`.
    pub async fn list_lost_replicas(&self, me: &str, now: i64) -> StoreResult<Vec<String>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar::<_, String>(
                "SELECT id FROM replicas WHERE id <> $1 AND heartbeat_at + lease_ms < $2 ORDER BY id",
            )
            .bind(me)
            .bind(now)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Whether replica `id` renewed its heartbeat within its lease at `now`.
    pub async fn replica_alive(&self, id: &str, now: i64) -> StoreResult<bool> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM replicas WHERE id = $1 AND heartbeat_at + lease_ms >= $2",
            )
            .bind(id)
            .bind(now)
            .fetch_one(pool)
            .await?
        }) > 0)
    }

    /// When replica `id` last renewed its heartbeat (unix ms); `None` when it has no row.
    pub async fn replica_heartbeat_at(&self, id: &str) -> StoreResult<Option<i64>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar::<_, i64>("SELECT heartbeat_at FROM replicas WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Replicas alive at `now` (for the operator page): id and last heartbeat (unix ms).
    pub async fn list_live_replicas(&self, now: i64) -> StoreResult<Vec<(String, i64)>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT id, heartbeat_at FROM replicas WHERE heartbeat_at + lease_ms >= $1 ORDER BY id",
            )
            .bind(now)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Every replica that renewed its heartbeat since `since` (unix ms), for the operator page:
    /// whether it is alive at `now`, and the running turns and kept sandboxes it owns.
    pub async fn list_replicas(&self, since: i64, now: i64) -> StoreResult<Vec<ReplicaRow>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, ReplicaRow>(
                "SELECT r.id, r.started_at, r.heartbeat_at, r.heartbeat_at + r.lease_ms >= $2 AS alive,
                    (SELECT COUNT(*) FROM tasks t WHERE t.runner_id = r.id AND t.status = 'running') AS running,
                    (SELECT COUNT(*) FROM tasks t WHERE t.runner_id = r.id AND t.status <> 'running'
                        AND t.container_id IS NOT NULL) AS kept
                 FROM replicas r WHERE r.heartbeat_at >= $1 ORDER BY r.id",
            )
            .bind(since)
            .bind(now)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Forgets a replica that stopped cleanly and owns nothing any more.
    pub async fn forget_replica(&self, id: &str) -> StoreResult<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM replicas WHERE id = $1 AND NOT EXISTS
                   (SELECT 1 FROM tasks WHERE runner_id = $1
                      AND (status = 'running' OR container_id IS NOT NULL))",
            )
            .bind(id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Asks the replica owning the task to act on it (see [`ControlRequest`]) and wakes it;
    /// answers the owner, or `None` when the task has no owner.
    pub async fn request_control(
        &self,
        id: &str,
        request: ControlRequest,
    ) -> StoreResult<Option<String>> {
        let owner = with_pool!(self, pool => {
            sqlx::query_scalar::<_, Option<String>>(
                "UPDATE tasks SET control_request = $2 WHERE id = $1 RETURNING runner_id",
            )
            .bind(id)
            .bind(request.as_str())
            .fetch_optional(pool)
            .await?
            .flatten()
        });
        if let Some(owner) = owner.as_deref() {
            self.notify(CONTROL_CHANNEL, owner).await?;
        }
        Ok(owner)
    }

    /// Tasks of replica `me` with a request waiting, with the request. The owner clears each
    /// with [`Store::clear_control_request`] once it has acted, so the replica that asked can
    /// wait for that.
    pub async fn list_control_requests(
        &self,
        me: &str,
    ) -> StoreResult<Vec<(Task, ControlRequest)>> {
        let waiting = with_pool!(self, pool => {
            sqlx::query_as::<_, (String, String)>(
                "SELECT id, control_request FROM tasks
                 WHERE runner_id = $1 AND control_request IS NOT NULL",
            )
            .bind(me)
            .fetch_all(pool)
            .await?
        });
        let mut requests = Vec::new();
        for (id, request) in waiting {
            if let (Some(request), Some(task)) = (
                ControlRequest::parse(&request),
                self.get_task_for_runner(&id).await?,
            ) {
                requests.push((task, request));
            }
        }
        Ok(requests)
    }

    /// Clears a request the owner acted on (unless another replaced it meanwhile).
    pub async fn clear_control_request(
        &self,
        id: &str,
        request: ControlRequest,
    ) -> StoreResult<()> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE tasks SET control_request = NULL WHERE id = $1 AND control_request = $2")
                .bind(id)
                .bind(request.as_str())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The request waiting on a task, if any (`None` also when the task is gone).
    pub async fn control_request_of(&self, id: &str) -> StoreResult<Option<ControlRequest>> {
        let request = with_pool!(self, pool => {
            sqlx::query_scalar::<_, Option<String>>("SELECT control_request FROM tasks WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
                .flatten()
        });
        Ok(request.as_deref().and_then(ControlRequest::parse))
    }

    /// Sends a notification to every replica listening on `channel` (PostgreSQL; nothing on
    /// SQLite, which has one replica).
    pub async fn notify(&self, channel: &str, payload: &str) -> StoreResult<()> {
        if let Pool::Postgres(pool) = &self.pool {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// A listener on `channels` (PostgreSQL only; `None` on SQLite). It reconnects by itself
    /// after a lost connection; notifications sent meanwhile are lost, which
    /// [`PgListener::try_recv`] reports as `Ok(None)`.
    pub async fn listen(&self, channels: &[&str]) -> StoreResult<Option<PgListener>> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen_all(channels.iter().copied()).await?;
        Ok(Some(listener))
    }
}
