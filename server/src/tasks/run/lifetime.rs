//! Sandbox lifetime beyond one turn: keeping a sandbox for follow-ups, the idle reaper, removal
//! on request, adoption of kept sandboxes and reaping of the rest after a restart, and the
//! backstop sweep of containers labelled with a task.

use std::collections::HashSet;

use drydock_sandbox::{Reap, Sandbox, SandboxError};
use tracing::Instrument;

use super::TaskRunner;
use super::outcome::{Outcome, human_duration};
use super::turn::TurnContext;
use crate::store::{Task, TaskOutcome};

impl TaskRunner {
    /// Marks tasks a previous process of this server left running as failed, adopts the kept
    /// sandboxes that survived, and removes every other sandbox labelled for this server (warm
    /// pool ones included).
    pub(super) async fn recover(&self) {
        let store = &self.inner.store;
        match store
            .list_running_tasks_of_runner(&self.inner.settings.runner_id)
            .await
        {
            Ok(tasks) => {
                for task in tasks {
                    let reason = "server restarted during the task";
                    self.note(&task.id, "error", reason.into()).await;
                    if let Ok(true) = store
                        .finish_task(
                            &task.id,
                            &TaskOutcome {
                                status: "failed",
                                reason: Some(reason),
                                ..Default::default()
                            },
                        )
                        .await
                    {
                        tracing::warn!(task_id = %task.id, "task was running when the server stopped; marked failed");
                    }
                    let _ = store.set_task_container(&task.id, None).await;
                }
            }
            Err(err) => tracing::error!(error = %err, "recovery: could not list running tasks"),
        }
        // Kept-alive sandboxes of ended turns are adopted; every other sandbox is removed. The
        // database says which container a task keeps (a warm sandbox a task took carries no task
        // label), so the kept ones are known by container id.
        let kept = store
            .list_kept_sandboxes(&self.inner.settings.runner_id, None)
            .await
            .unwrap_or_else(|err| {
                tracing::error!(error = %err, "recovery: could not list kept sandboxes");
                Vec::new()
            });
        let mut keep: HashSet<String> =
            kept.iter().filter_map(|t| t.container_id.clone()).collect();
        // Sandboxes of this instance that another replica took over while this one was lost.
        keep.extend(
            store
                .sandboxes_held_for(&self.inner.settings.runner_id)
                .await
                .unwrap_or_default(),
        );
        match self.sandboxes().await {
            Ok(sandboxes) => match sandboxes.reap(Reap::AllExcept(keep)).await {
                Ok(removed) if !removed.is_empty() => {
                    tracing::warn!(
                        count = removed.len(),
                        "removed sandboxes left by a previous run"
                    )
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::error!(error = %err, "recovery: could not remove old sandboxes")
                }
            },
            Err(err) => {
                tracing::warn!(error = %err, "recovery: Docker unavailable; old sandboxes not checked")
            }
        }
        for task in kept {
            if self.live_sandbox(&task).await.is_some() {
                tracing::info!(task_id = %task.id, "adopted a kept-alive sandbox");
            } else {
                self.remove_kept_sandbox(&task, None, "it did not survive the server restart")
                    .await;
            }
        }
    }

    /// The task's kept-alive sandbox, when it still runs.
    pub(super) async fn live_sandbox(&self, task: &Task) -> Option<Sandbox> {
        let container_id = task.container_id.as_deref()?;
        let sandbox = self
            .sandboxes_labelled_for(task)
            .await?
            .get(container_id)
            .await
            .ok()?;
        sandbox
            .is_running()
            .await
            .ok()
            .filter(|running| *running)
            .map(|_| sandbox)
    }

    /// The sandboxes carrying the instance label of the task's sandbox: this replica's, or that
    /// of the replica that made it (another one on this Docker host, whose task this replica
    /// adopted or claimed).
    pub(super) async fn sandboxes_labelled_for(
        &self,
        task: &Task,
    ) -> Option<drydock_sandbox::Sandboxes> {
        let sandboxes = self.sandboxes().await.ok()?;
        Some(
            match task
                .sandbox_instance
                .as_deref()
                .or(task.runner_id.as_deref())
            {
                Some(label) if label != self.inner.settings.runner_id => {
                    sandboxes.of_instance(label)
                }
                _ => sandboxes,
            },
        )
    }

    /// At the end of a turn: keeps the sandbox for follow-ups when the task asked for it and the
    /// turn ran to its end in a sandbox that still runs (and starts the preview), otherwise
    /// removes it. Answers whether it was kept.
    pub(super) async fn keep_or_remove(
        &self,
        cx: &mut TurnContext,
        outcome: &Outcome,
        sandbox: Sandbox,
    ) -> bool {
        let task = &cx.task;
        let keeps = task.keep_alive
            && outcome.ran_to_end()
            && !self.inner.shutdown.is_cancelled()
            && sandbox.is_running().await.unwrap_or(false);
        if !keeps {
            if let Err(err) = sandbox.remove().await {
                tracing::error!(error = %err, "could not remove the sandbox");
            }
            let _ = self.inner.store.set_task_container(&task.id, None).await;
            return false;
        }
        let expires = self.keep_sandbox(task, &sandbox).await;
        if task.install_deps
            && let Some(port) = self.inner.settings.preview_port
        {
            let runner = self.clone();
            let task = task.clone();
            tokio::spawn(
                async move { runner.start_preview(&task, &sandbox, port).await }
                    .instrument(tracing::info_span!("preview")),
            );
        }
        let text = format!(
            "The sandbox stays for follow-ups until {} (or {} idle)",
            expires.format("%H:%M UTC"),
            human_duration(self.inner.settings.idle_timeout)
        );
        cx.line("info", &text);
        true
    }

    /// Records that the sandbox stays until it has been idle for the idle limit (or reaches its
    /// hard deadline); answers when it will be removed.
    async fn keep_sandbox(&self, task: &Task, sandbox: &Sandbox) -> chrono::DateTime<chrono::Utc> {
        let idle_end = chrono::Utc::now()
            + chrono::Duration::from_std(self.inner.settings.idle_timeout)
                .unwrap_or(chrono::Duration::MAX);
        let expires = sandbox
            .deadline_unix()
            .and_then(|d| chrono::DateTime::from_timestamp(i64::try_from(d).ok()?, 0))
            .map_or(idle_end, |deadline| deadline.min(idle_end));
        if let Err(err) = self
            .inner
            .store
            .keep_task_sandbox(&task.id, expires.timestamp_millis())
            .await
        {
            tracing::error!(error = %err, "could not record the kept sandbox");
        }
        expires
    }

    /// Removes a task's kept-alive sandbox (idle, asked for, or the task deleted) and says so in
    /// its log. `expired_by` (unix ms) removes it only if its idle time ended by then. Answers
    /// false when it had none, or a turn is using it. A sandbox another live replica keeps is
    /// removed by that replica, asked through the task's row; this waits (up to 10 s) for it.
    pub async fn remove_kept_sandbox(
        &self,
        task: &Task,
        expired_by: Option<i64>,
        why: &str,
    ) -> bool {
        let store = &self.inner.store;
        let owner = task
            .runner_id
            .as_deref()
            .filter(|owner| *owner != self.inner.settings.runner_id);
        if let Some(owner) = owner
            && task.container_id.is_some()
            && task.status != "running"
            && store
                .replica_alive(owner, crate::store::now_ms())
                .await
                .unwrap_or(false)
        {
            if store
                .request_control(&task.id, crate::store::ControlRequest::Release)
                .await
                .is_err()
            {
                return false;
            }
            // The owner clears the request once the sandbox is gone.
            for _ in 0..100 {
                match store.control_request_of(&task.id).await {
                    Ok(Some(_)) => {}
                    _ => break,
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            return matches!(
                store.get_task_for_runner(&task.id).await,
                Ok(Some(t)) if t.container_id.is_none()
            );
        }
        self.remove_kept_sandbox_here(task, expired_by, why).await
    }

    /// Removes a kept-alive sandbox from this replica (it keeps it, or the replica that kept it
    /// is gone and shared this Docker host).
    pub(super) async fn remove_kept_sandbox_here(
        &self,
        task: &Task,
        expired_by: Option<i64>,
        why: &str,
    ) -> bool {
        let Some(container_id) = task.container_id.as_deref() else {
            return false;
        };
        match self
            .inner
            .store
            .release_task_sandbox(&task.id, container_id, expired_by)
            .await
        {
            Ok(true) => {}
            Ok(false) => return false,
            Err(err) => {
                tracing::error!(task_id = %task.id, error = %err, "could not release a kept sandbox");
                return false;
            }
        }
        if let Some(sandboxes) = self.sandboxes_labelled_for(task).await {
            match sandboxes.get(container_id).await {
                Ok(sandbox) => {
                    if let Err(err) = sandbox.remove().await {
                        tracing::error!(task_id = %task.id, error = %err, "could not remove a kept sandbox");
                    }
                }
                Err(SandboxError::NotFound(_)) => {}
                Err(err) => {
                    tracing::error!(task_id = %task.id, error = %err, "could not find a kept sandbox")
                }
            }
        }
        tracing::info!(task_id = %task.id, reason = why, "kept sandbox removed");
        self.note(&task.id, "info", format!("Sandbox removed: {why}"))
            .await;
        self.announce(
            &task.user_id,
            &task.id,
            &task.status,
            task.status_reason.clone(),
        );
        true
    }

    /// Removes the kept-alive sandboxes of this server whose idle time is over.
    pub(super) async fn reap_idle(&self) {
        let now = chrono::Utc::now().timestamp_millis();
        let expired = match self
            .inner
            .store
            .list_kept_sandboxes(&self.inner.settings.runner_id, Some(now))
            .await
        {
            Ok(expired) => expired,
            Err(err) => {
                tracing::error!(error = %err, "could not list kept sandboxes");
                return;
            }
        };
        let why = format!(
            "idle for {}",
            human_duration(self.inner.settings.idle_timeout)
        );
        for task in expired {
            self.remove_kept_sandbox(&task, Some(now), &why).await;
        }
    }

    /// Removes any container still labelled with this task, or a warm one named for it (a
    /// backstop: every path above already removes the sandbox it knows of).
    pub(super) async fn sweep_sandboxes_of(&self, task_id: &str) {
        let Ok(sandboxes) = self.sandboxes().await else {
            return;
        };
        let Ok(left) = sandboxes.of_task(task_id).await else {
            return;
        };
        for info in left {
            tracing::warn!(container_id = %info.id, "removing a sandbox left behind");
            if let Ok(sandbox) = sandboxes.get(&info.id).await {
                let _ = sandbox.remove().await;
            }
        }
    }
}
