//! Several replicas on one PostgreSQL: the heartbeat that renews this replica's leases, adoption
//! of the tasks of a replica that stopped renewing its own, and the requests other replicas
//! leave on the rows of tasks this replica owns (stop a turn, remove a kept sandbox).
//!
//! Adoption runs one way only: the store's adopt claim gives each lost turn to exactly one
//! replica, which either reattaches or ends the turn. It reattaches when the task's labelled
//! sandbox still runs and its agent's output was kept there: it follows the agent from where
//! the stored log stops, waits for its exit status and runs the rest of the turn (hand-back,
//! diff, secret check, push, pull request; the sandbox kept or removed as usual) — see
//! [`super::reattach`]. Otherwise (the sandbox or the files are gone, the agent is gone without
//! an exit status, the turn had not started its agent, or the task runs under a network policy,
//! whose relay and gateway died with the replica) the turn ends failed with a reason naming the
//! lost replica and every sandbox of the task is removed, so the lost turn can neither go on
//! publishing nor leave a container behind.
//!
//! Kept-alive sandboxes of a lost replica are taken over, not removed: the row records the new
//! owner and the label the container carries (labels cannot change), so follow-ups run in the
//! same sandbox and the new owner's idle reaper removes it when it expires.

use std::collections::HashSet;
use std::time::Duration;

use super::TaskRunner;
use crate::store::{ControlRequest, Task, TaskOutcome, now_ms};

impl TaskRunner {
    /// How often this replica renews its leases and looks for lost replicas: a quarter of the
    /// lease period.
    pub(super) fn heartbeat_every(&self) -> Duration {
        (self.inner.settings.lease / 4).max(Duration::from_millis(250))
    }

    /// How long a renewed lease lasts, in ms: two thirds of the lease period, so that a lost
    /// replica's lease has run out within 2/3 of the period after its last renewal and another
    /// replica, looking every quarter period, adopts its tasks within one lease period of its
    /// death; a live replica renews it twice or more before it runs out.
    pub(super) fn lease_ms(&self) -> i64 {
        i64::try_from(self.inner.settings.lease.as_millis() * 2 / 3).unwrap_or(i64::MAX)
    }

    /// The whole lease period in ms (the heartbeat row's: a replica silent for that long is
    /// lost).
    fn period_ms(&self) -> i64 {
        i64::try_from(self.inner.settings.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// Refuses to start a second live replica with this instance id (PostgreSQL; SQLite has
    /// its file lock): two would share one heartbeat row, so neither's tasks would ever be
    /// adopted, and a restart of one would remove the other's sandboxes. A row whose heartbeat
    /// is recent may also be this server's own, stopped uncleanly a moment ago: it waits one
    /// heartbeat period and refuses only if the row was renewed meanwhile.
    ///
    /// Errors: the instance id is in use (the message says what to change), or the database
    /// failed.
    pub async fn claim_instance(&self) -> anyhow::Result<()> {
        let store = &self.inner.store;
        if store.backend() != crate::store::Backend::Postgres {
            return Ok(());
        }
        let me = &self.inner.settings.runner_id;
        let Some(seen) = store.replica_heartbeat_at(me).await? else {
            return Ok(());
        };
        if seen + self.period_ms() < now_ms() {
            return Ok(());
        }
        tracing::info!(instance_id = %me, "a replica with this instance id beat recently; checking that it is gone");
        tokio::time::sleep(self.heartbeat_every() + Duration::from_millis(500)).await;
        match store.replica_heartbeat_at(me).await? {
            Some(now) if now > seen => anyhow::bail!(
                "another drydock replica is running with instance id {me:?} on this database (it \
                 renewed its heartbeat just now). Give each replica its own DRYDOCK_INSTANCE_ID \
                 (replicas that share a data directory share its generated id)"
            ),
            _ => Ok(()),
        }
    }

    /// One heartbeat: renews this replica's leases, ends local turns whose lease another replica
    /// took over, acts on requests left for this replica, and adopts the tasks of lost replicas.
    pub(super) async fn heartbeat(&self) {
        let me = self.inner.settings.runner_id.clone();
        if let Err(err) = self
            .inner
            .store
            .replica_heartbeat(&me, self.period_ms(), self.lease_ms())
            .await
        {
            tracing::error!(error = %err, "could not renew this replica's leases");
            return;
        }
        self.drop_lost_leases().await;
        self.act_on_requests().await;
        self.adopt_lost().await;
    }

    /// Cancels local turns whose task this replica no longer owns (its lease ran out while it
    /// was cut off, and another replica adopted the task): they must not go on publishing.
    async fn drop_lost_leases(&self) {
        let local: Vec<(String, tokio_util::sync::CancellationToken)> = self
            .lock_running()
            .iter()
            .map(|(id, token)| (id.clone(), token.clone()))
            .collect();
        for (task_id, token) in local {
            if let Ok(Some(task)) = self.inner.store.get_task_for_runner(&task_id).await
                && task.runner_id.as_deref() != Some(self.inner.settings.runner_id.as_str())
            {
                tracing::warn!(%task_id, owner = ?task.runner_id, "another replica adopted this task; ending the local turn");
                token.cancel();
            }
        }
    }

    /// Acts on the requests other replicas left on rows this replica owns.
    pub(crate) async fn act_on_requests(&self) {
        let _pass = self.inner.requests_lock.lock().await;
        let requests = match self
            .inner
            .store
            .list_control_requests(&self.inner.settings.runner_id)
            .await
        {
            Ok(requests) => requests,
            Err(err) => {
                tracing::error!(error = %err, "could not read requests for this replica");
                return;
            }
        };
        for (task, request) in requests {
            tracing::info!(task_id = %task.id, ?request, "acting on another replica's request");
            match request {
                ControlRequest::Stop => {
                    self.stop_here(&task).await;
                }
                ControlRequest::Release => {
                    self.remove_kept_sandbox_here(&task, None, "stopped by the user")
                        .await;
                }
            }
            let _ = self
                .inner
                .store
                .clear_control_request(&task.id, request)
                .await;
        }
    }

    /// Adopts the running tasks of replicas whose lease ran out, and removes the kept sandboxes
    /// of replicas that are gone.
    async fn adopt_lost(&self) {
        let store = &self.inner.store;
        let me = self.inner.settings.runner_id.clone();
        let now = now_ms();
        let expired = store
            .list_expired_leases(&me, now)
            .await
            .unwrap_or_else(|err| {
                tracing::error!(error = %err, "could not list expired leases");
                Vec::new()
            });
        for task in expired {
            let Some(lost) = task.runner_id.clone() else {
                continue;
            };
            match store
                .adopt_task(&task.id, &lost, &me, self.lease_ms())
                .await
            {
                Ok(true) => self.adopt_running(task, &lost).await,
                Ok(false) => {}
                Err(err) => {
                    tracing::error!(task_id = %task.id, error = %err, "could not adopt a task")
                }
            }
        }
        let lost = store.list_lost_replicas(&me, now).await.unwrap_or_default();
        for replica in lost {
            self.remove_warm_of(&replica).await;
            let kept = store
                .adopt_kept_sandboxes(&replica, &me)
                .await
                .unwrap_or_else(|err| {
                    tracing::error!(error = %err, "could not take over kept sandboxes");
                    Vec::new()
                });
            for task in kept {
                if self.live_sandbox(&task).await.is_some() {
                    tracing::info!(task_id = %task.id, lost = %replica, "took over a kept sandbox of a lost replica");
                    self.note(
                        &task.id,
                        "info",
                        format!("Replica {replica} was lost; replica {me} keeps the sandbox now"),
                    )
                    .await;
                } else {
                    let why = format!("its replica {replica} was lost and the sandbox is gone");
                    self.remove_kept_sandbox_here(&task, None, &why).await;
                }
            }
        }
    }

    /// Ends a turn adopted from `lost` that cannot be followed (`why`): the turn fails with a
    /// reason naming the lost replica (or is stopped, when that was asked), every sandbox
    /// labelled with the task is removed, and waiting follow-ups are queued.
    pub(super) async fn end_adopted(&self, task: Task, lost: &str, why: &str) {
        let store = &self.inner.store;
        tracing::warn!(task_id = %task.id, lost, why, "adopting a task of a lost replica; it cannot be followed");
        self.remove_sandboxes_of(&task.id, Some(lost)).await;
        let _ = store.set_task_container(&task.id, None).await;
        let reason = self.lost_reason(lost, why);
        self.note(&task.id, "error", reason.clone()).await;
        let outcome = TaskOutcome {
            status: "failed",
            reason: Some(&reason),
            ..Default::default()
        };
        if let Ok(true) = store.finish_task(&task.id, &outcome).await {
            self.inner.hub.end(&task.id, "failed");
            self.announce(&task.user_id, &task.id, "failed", Some(reason));
            if store.has_waiting_messages(&task.id).await.unwrap_or(false)
                && store.requeue_task(&task.id).await.unwrap_or(false)
            {
                self.announce(&task.user_id, &task.id, "queued", None);
            }
        }
    }

    /// Removes the warm-pool sandboxes a lost replica left unclaimed (nothing else would: only a
    /// restart with its instance id reconciles them).
    async fn remove_warm_of(&self, replica: &str) {
        let Ok(sandboxes) = self.sandboxes().await else {
            return;
        };
        let theirs = sandboxes.of_instance(replica);
        for info in theirs.list(&[]).await.unwrap_or_default() {
            if info.is_unclaimed_warm()
                && let Ok(sandbox) = theirs.get(&info.id).await
            {
                tracing::warn!(container_id = %info.id, replica, "removing a lost replica's warm sandbox");
                let _ = sandbox.remove().await;
            }
        }
    }

    /// Removes every container of the task (labelled with it, or a warm one it claimed): this
    /// replica's, and those of `other` (a lost replica sharing this Docker host).
    pub(super) async fn remove_sandboxes_of(&self, task_id: &str, other: Option<&str>) {
        let Ok(sandboxes) = self.sandboxes().await else {
            return;
        };
        let mut scopes = vec![sandboxes.clone()];
        if let Some(other) = other.filter(|o| *o != self.inner.settings.runner_id) {
            scopes.push(sandboxes.of_instance(other));
        }
        let mut seen = HashSet::new();
        for scope in scopes {
            let Ok(left) = scope.of_task(task_id).await else {
                continue;
            };
            for info in left {
                if !seen.insert(info.id.clone()) {
                    continue;
                }
                tracing::warn!(container_id = %info.id, "removing a sandbox of the task");
                if let Ok(sandbox) = scope.get(&info.id).await {
                    let _ = sandbox.remove().await;
                }
            }
        }
    }
}
