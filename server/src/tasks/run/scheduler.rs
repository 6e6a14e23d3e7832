//! The scheduler: claims queued tasks within the concurrency limits, spawns a turn for each,
//! stops tasks on request and ends them all at shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::TaskRunner;
use crate::store::{ClaimLimits, ControlRequest, Task, TaskOutcome};

/// How often queued tasks are looked at even when nothing signalled a change (other replicas
/// may have freed a slot).
const SCHEDULE_EVERY: Duration = Duration::from_secs(2);
/// How often expired environment snapshots are looked for (also once at start-up).
const PRUNE_EVERY: Duration = Duration::from_secs(300);

impl TaskRunner {
    /// Recovers from a previous process, then schedules queued tasks (and reaps idle kept
    /// sandboxes) and keeps the warm pool filled until shutdown.
    pub async fn start(&self) {
        self.recover().await;
        self.start_pool();
        self.heartbeat().await;
        let runner = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SCHEDULE_EVERY);
            let mut heartbeat = tokio::time::interval(runner.heartbeat_every());
            let mut pruned: Option<std::time::Instant> = None;
            loop {
                tokio::select! {
                    () = runner.inner.shutdown.cancelled() => break,
                    _ = heartbeat.tick() => runner.heartbeat().await,
                    _ = tick.tick() => {
                        runner.schedule().await;
                        runner.reap_idle().await;
                        if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                            pruned = Some(std::time::Instant::now());
                            runner.prune_snapshots().await;
                        }
                    }
                }
            }
        });
    }

    /// Stops scheduling, ends every task this process runs (each is marked failed with a
    /// reason and its sandbox removed) and removes the warm pool.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let tokens: Vec<CancellationToken> = self.lock_running().values().cloned().collect();
        for token in &tokens {
            token.cancel();
        }
        // Give runs a moment to clean up (remove sandboxes, record the outcome).
        for _ in 0..100 {
            if self.lock_running().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop_pool().await;
        let _ = (self.inner.store)
            .forget_replica(&self.inner.settings.runner_id)
            .await;
    }

    /// Starts queued tasks, oldest first, while the limits allow.
    pub async fn schedule(&self) {
        if self.inner.shutdown.is_cancelled() {
            return;
        }
        let _pass = self.inner.schedule_lock.lock().await;
        let store = &self.inner.store;
        let s = &self.inner.settings;
        let queued = match store.list_tasks_with_status("queued").await {
            Ok(queued) => queued,
            Err(err) => {
                tracing::error!(error = %err, "scheduling: could not list queued tasks");
                return;
            }
        };
        // While the sandbox image is being built, tasks wait, saying why.
        if (self.inner.image)
            .hold_queued(&queued, store, &self.inner.hub)
            .await
        {
            return;
        }
        let limits = ClaimLimits {
            max_running: s.max_concurrent,
            max_running_per_user: s.max_concurrent_per_user,
        };
        for task in queued {
            let (Ok(running), Ok(mine)) = (
                store.count_running_tasks().await,
                store.count_running_tasks_of_user(&task.user_id).await,
            ) else {
                return;
            };
            if running >= s.max_concurrent {
                return;
            }
            if mine >= s.max_concurrent_per_user {
                continue;
            }
            // A follow-up whose sandbox another server keeps runs there while it lives.
            if task.container_id.is_some()
                && task.runner_id.as_deref().is_some_and(|r| r != s.runner_id)
                && task
                    .sandbox_expires_at
                    .is_some_and(|at| at > chrono::Utc::now().timestamp_millis())
            {
                continue;
            }
            // The counts above only skip work; the claim checks the limits again atomically,
            // across every replica.
            match store
                .claim_task_within(&task.id, &s.runner_id, self.lease_ms(), limits)
                .await
            {
                Ok(true) => self.spawn_turn(task),
                Ok(false) => {}
                Err(err) => {
                    tracing::error!(error = %err, task_id = %task.id, "could not claim task")
                }
            }
        }
    }

    /// Runs the next turn of a claimed task in its own tokio task, stoppable through the token
    /// kept in `running`.
    fn spawn_turn(&self, task: Task) {
        let token = self.inner.shutdown.child_token();
        self.lock_running().insert(task.id.clone(), token.clone());
        self.announce(&task.user_id, &task.id, "running", None);
        let runner = self.clone();
        let span = tracing::info_span!("task", task_id = %task.id);
        tokio::spawn(async move { runner.run_turn(task, token).await }.instrument(span));
    }

    /// Stops a task wherever it runs: a running one is ended (its sandbox removed), a queued one
    /// never starts. A turn another replica runs is stopped by that replica, asked through the
    /// task's row; this waits (up to 10 s) until it has ended. Answers false when the task had
    /// already ended.
    pub async fn stop(&self, task: &Task) -> bool {
        let me = self.inner.settings.runner_id.as_str();
        if self.lock_running().contains_key(&task.id) {
            return self.stop_here(task).await;
        }
        let store = &self.inner.store;
        let current = match store.get_task_for_runner(&task.id).await {
            Ok(Some(current)) => current,
            _ => return false,
        };
        let elsewhere = current.status == "running"
            && current
                .runner_id
                .as_deref()
                .is_some_and(|owner| owner != me);
        if !elsewhere {
            return self.stop_here(&current).await;
        }
        if store
            .request_control(&task.id, ControlRequest::Stop)
            .await
            .is_err()
        {
            return false;
        }
        for _ in 0..100 {
            match store.get_task_for_runner(&task.id).await {
                Ok(Some(t)) if t.status == "running" => {}
                _ => return true,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The owner did not answer in time: it acts when it can, or, if it is lost, the replica
        // that adopts the task ends it.
        true
    }

    /// Stops a task this replica runs, or one that no replica runs.
    pub(super) async fn stop_here(&self, task: &Task) -> bool {
        let token = self.lock_running().get(&task.id).cloned();
        if let Some(token) = token {
            token.cancel();
            // Wait for the run to clean up, so the caller can say the container is gone.
            for _ in 0..100 {
                if !self.lock_running().contains_key(&task.id) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            return true;
        }
        let outcome = TaskOutcome {
            status: "stopped",
            reason: Some("stopped before it started"),
            ..Default::default()
        };
        match self.inner.store.finish_task(&task.id, &outcome).await {
            Ok(true) => {
                let _ = self.inner.store.cancel_waiting_messages(&task.id).await;
                self.inner.hub.end(&task.id, "stopped");
                self.announce(
                    &task.user_id,
                    &task.id,
                    "stopped",
                    outcome.reason.map(str::to_owned),
                );
                true
            }
            _ => false,
        }
    }
}
