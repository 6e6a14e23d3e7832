//! `TaskRunner`: starts queued tasks within the concurrency limits and runs each one — clone on
//! the host, sandbox, agent, commit, bundle back, secret check, push, pull request — removing its
//! sandbox on every exit path. Durable state lives in the database; this process only holds what
//! is needed to stop a running task.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use drydock_agents::{
    AgentRegistry, LaunchPlan, LaunchRequest, McpServer, McpTransport, OutputParser,
};
use drydock_sandbox::{
    ExecExit, ExecSpec, ExitReason, Limits, NetworkMode, Reap, Sandbox, SandboxDefaults,
    SandboxError, Sandboxes,
};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, instrument};

use super::git::{HostGit, branch_name};
use super::hub::{EventHub, StatusChange};
use super::logs::{FLUSH_EVERY, LogSink};
use crate::config::{Config, SecretString};
use crate::github::Github;
use crate::redact::{Redactor, SecretSet};
use crate::secrets::SecretBox;
use crate::store::{Store, Task, TaskMessage, TaskOutcome, Turn};

/// How often queued tasks are looked at even when nothing signalled a change (other replicas
/// may have freed a slot).
const SCHEDULE_EVERY: Duration = Duration::from_secs(2);
/// How long a dev server may take to listen before the preview is given up.
const PREVIEW_START_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest `git bundle` output accepted from a sandbox.
const MAX_BUNDLE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Settings of the runner, taken from [`Config`] at start-up.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// This server's id in sandbox labels and `tasks.runner_id`.
    pub runner_id: String,
    /// Where checkouts live while a task runs.
    pub work_dir: PathBuf,
    /// Tasks running at once, all users.
    pub max_concurrent: i64,
    /// Tasks running at once per user.
    pub max_concurrent_per_user: i64,
    /// Docker daemon, when not the default.
    pub docker_host: Option<String>,
    /// Sandbox image.
    pub image: String,
    /// Sandbox network mode.
    pub network: String,
    /// Sandbox limits.
    pub limits: Limits,
    /// Gateway base URLs by provider.
    pub base_urls: BTreeMap<String, String>,
    /// Public URL, for links in commits and pull requests.
    pub public_url: String,
    /// GitHub's web URL (for the noreply email domain).
    pub github_url: String,
    /// How long a kept-alive sandbox may sit idle after a turn.
    pub idle_timeout: Duration,
    /// Hard deadline of a kept-alive sandbox, however busy.
    pub keep_alive_lifetime: Duration,
    /// Port of dev-server previews inside sandboxes; `None` when previews are off.
    pub preview_port: Option<u16>,
}

impl RunnerSettings {
    /// Settings from the server configuration.
    pub fn from_config(config: &Config, runner_id: String, public_url: String) -> Self {
        let mut base_urls = BTreeMap::new();
        for (provider, url) in [
            ("anthropic", &config.anthropic_base_url),
            ("openai", &config.openai_base_url),
            ("gemini", &config.gemini_base_url),
        ] {
            if let Some(url) = url.as_ref().filter(|u| !u.is_empty()) {
                base_urls.insert(provider.to_owned(), url.clone());
            }
        }
        Self {
            runner_id,
            work_dir: config.data_dir.join("work"),
            max_concurrent: i64::from(config.max_concurrent_tasks),
            max_concurrent_per_user: i64::from(config.max_concurrent_tasks_per_user),
            docker_host: config.docker_host.clone(),
            image: config.sandbox_image.clone(),
            network: config.sandbox_network.clone(),
            limits: Limits {
                pids: config.sandbox_pids,
                memory_bytes: i64::from(config.sandbox_memory_mb) * 1024 * 1024,
                cpus: config.sandbox_cpus,
            },
            base_urls,
            public_url,
            github_url: config.github_url.clone(),
            idle_timeout: Duration::from_secs(config.sandbox_idle_timeout),
            keep_alive_lifetime: Duration::from_secs(config.sandbox_max_lifetime),
            preview_port: config
                .preview_host
                .as_deref()
                .filter(|h| !h.trim().is_empty())
                .map(|_| config.preview_port),
        }
    }
}

/// Starts and stops tasks. Cheap to clone.
#[derive(Clone)]
pub struct TaskRunner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TaskRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRunner")
            .field("runner_id", &self.inner.settings.runner_id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    settings: RunnerSettings,
    store: Store,
    secrets: SecretBox,
    github: Github,
    agents: AgentRegistry,
    hub: Arc<EventHub>,
    sandboxes: tokio::sync::Mutex<Option<Sandboxes>>,
    /// Tasks this process runs, with what stops each.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// One scheduling pass at a time.
    schedule_lock: tokio::sync::Mutex<()>,
    /// Cancelled when the server shuts down.
    shutdown: CancellationToken,
}

/// How a run ended.
#[derive(Debug)]
struct Outcome {
    status: &'static str,
    reason: String,
    commit_sha: Option<String>,
    pr: Option<(String, i64)>,
}

impl Outcome {
    fn failed(reason: impl Into<String>) -> Self {
        Self {
            status: "failed",
            reason: reason.into(),
            commit_sha: None,
            pr: None,
        }
    }
    fn ended(status: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            commit_sha: None,
            pr: None,
        }
    }
}

/// What one run holds, so cleanup can reach it whatever step it stopped at.
#[derive(Default)]
struct RunState {
    sink: Option<LogSink>,
    /// A sandbox being created. Creation runs in its own task so that a stop arriving mid-way
    /// cannot drop the handle of a container Docker already made; cleanup awaits it.
    creating: Option<tokio::task::JoinHandle<Result<Sandbox, SandboxError>>>,
    /// The task's secret values, for the check before pushing.
    secret_values: Vec<SecretString>,
    sandbox: Option<Sandbox>,
    checkout: Option<PathBuf>,
}

impl RunState {
    fn log(&mut self, kind: &'static str, text: &str) {
        if let Some(sink) = self.sink.as_mut() {
            sink.line(kind, text);
        }
    }
}

type StepResult<T> = Result<T, Outcome>;

/// The host checkout of a turn.
struct Checkout {
    git: HostGit,
    /// Branch the task started from.
    base_branch: String,
    /// Commit the turn starts from (the branch's head on GitHub, or the base's).
    start_sha: String,
    /// Branch the work is pushed to.
    branch: String,
    /// An earlier turn had pushed the branch.
    branch_existed: bool,
}

impl TaskRunner {
    /// A runner; call [`TaskRunner::start`] to recover and begin scheduling.
    pub fn new(
        settings: RunnerSettings,
        store: Store,
        secrets: SecretBox,
        github: Github,
        agents: AgentRegistry,
        hub: Arc<EventHub>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                store,
                secrets,
                github,
                agents,
                hub,
                sandboxes: tokio::sync::Mutex::new(None),
                running: Mutex::new(HashMap::new()),
                schedule_lock: tokio::sync::Mutex::new(()),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// Docker, connected on first use (and again after a failure), so the server starts and
    /// serves everything else while Docker is down.
    pub async fn sandboxes(&self) -> Result<Sandboxes, SandboxError> {
        let mut slot = self.inner.sandboxes.lock().await;
        if let Some(sandboxes) = slot.as_ref() {
            return Ok(sandboxes.clone());
        }
        let s = &self.inner.settings;
        let mut defaults = SandboxDefaults::new(s.image.clone(), s.runner_id.clone());
        defaults.network = NetworkMode::parse(&s.network);
        defaults.limits = s.limits.clone();
        let sandboxes = match &s.docker_host {
            Some(host) => Sandboxes::connect_to(host, defaults).await?,
            None => Sandboxes::connect(defaults).await?,
        };
        *slot = Some(sandboxes.clone());
        Ok(sandboxes)
    }

    /// Recovers from a previous process, then schedules queued tasks until shutdown.
    pub async fn start(&self) {
        self.recover().await;
        let runner = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SCHEDULE_EVERY);
            loop {
                tokio::select! {
                    () = runner.inner.shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        runner.schedule().await;
                        runner.reap_idle().await;
                    }
                }
            }
        });
    }

    /// Stops scheduling and ends every task this process runs (each is marked failed with a
    /// reason and its sandbox removed).
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
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.inner.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks tasks a previous process of this server left running as failed and removes every
    /// sandbox labelled for this server.
    async fn recover(&self) {
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
        // Kept-alive sandboxes of ended turns are adopted; every other sandbox is removed.
        let kept = store
            .list_kept_sandboxes(&self.inner.settings.runner_id, None)
            .await
            .unwrap_or_else(|err| {
                tracing::error!(error = %err, "recovery: could not list kept sandboxes");
                Vec::new()
            });
        let keep: HashSet<String> = kept.iter().map(|t| t.id.clone()).collect();
        match self.sandboxes().await {
            Ok(sandboxes) => match sandboxes.reap(Reap::NotIn(keep)).await {
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
    async fn live_sandbox(&self, task: &Task) -> Option<Sandbox> {
        let container_id = task.container_id.as_deref()?;
        let sandbox = self.sandboxes().await.ok()?.get(container_id).await.ok()?;
        sandbox
            .is_running()
            .await
            .ok()
            .filter(|running| *running)
            .map(|_| sandbox)
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
            match store.claim_task_for(&task.id, &s.runner_id).await {
                Ok(true) => self.spawn_run(task),
                Ok(false) => {}
                Err(err) => {
                    tracing::error!(error = %err, task_id = %task.id, "could not claim task")
                }
            }
        }
    }

    fn spawn_run(&self, task: Task) {
        let token = self.inner.shutdown.child_token();
        self.lock_running().insert(task.id.clone(), token.clone());
        self.inner.hub.status_changed(StatusChange {
            user_id: task.user_id.clone(),
            task_id: task.id.clone(),
            status: "running".into(),
            status_reason: None,
        });
        let runner = self.clone();
        let span = tracing::info_span!("task", task_id = %task.id);
        tokio::spawn(async move { runner.run(task, token).await }.instrument(span));
    }

    /// Stops a task: a running one is ended (its sandbox removed), a queued one never starts.
    /// Answers false when the task had already ended.
    pub async fn stop(&self, task: &Task) -> bool {
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
                self.inner.hub.status_changed(StatusChange {
                    user_id: task.user_id.clone(),
                    task_id: task.id.clone(),
                    status: "stopped".into(),
                    status_reason: outcome.reason.map(str::to_owned),
                });
                true
            }
            _ => false,
        }
    }

    async fn run(self, task: Task, cancel: CancellationToken) {
        let mut state = RunState::default();
        let turn = match self.inner.store.begin_turn(&task.id).await {
            Ok(turn) => turn,
            Err(err) => {
                tracing::error!(error = %err, "could not start the turn");
                let outcome = Outcome::failed("could not start the turn: the database failed");
                return self.finish(&task, state, outcome).await;
            }
        };
        let deadline = Duration::from_secs(u64::try_from(task.max_duration_s).unwrap_or(3600));
        let outcome = tokio::select! {
            outcome = self.execute(&task, &turn, &mut state) => outcome.unwrap_or_else(|outcome| outcome),
            () = cancel.cancelled() => if self.inner.shutdown.is_cancelled() {
                Outcome::failed("server shut down during the task")
            } else {
                Outcome::ended("stopped", "stopped by the user")
            },
            () = tokio::time::sleep(deadline) => Outcome::ended(
                "timed_out",
                format!("took longer than the {} s allowed", deadline.as_secs()),
            ),
        };
        self.finish(&task, state, outcome).await;
    }

    async fn finish(&self, task: &Task, mut state: RunState, outcome: Outcome) {
        let store = &self.inner.store;
        if let Some(creating) = state.creating.take()
            && let Ok(Ok(sandbox)) = creating.await
        {
            state.sandbox = Some(sandbox);
        }
        let kept = match state.sandbox.take() {
            Some(sandbox) if self.keeps(task, &outcome, &sandbox).await => {
                let expires = self.keep_sandbox(task, &sandbox).await;
                if task.install_deps
                    && let Some(port) = self.inner.settings.preview_port
                {
                    let runner = self.clone();
                    let (task, sandbox) = (task.clone(), sandbox.clone());
                    tokio::spawn(
                        async move { runner.start_preview(&task, &sandbox, port).await }
                            .instrument(tracing::info_span!("preview")),
                    );
                }
                state.log(
                    "info",
                    &format!(
                        "The sandbox stays for follow-ups until {} (or {} idle)",
                        expires.format("%H:%M UTC"),
                        human_duration(self.inner.settings.idle_timeout)
                    ),
                );
                true
            }
            Some(sandbox) => {
                if let Err(err) = sandbox.remove().await {
                    tracing::error!(error = %err, "could not remove the sandbox");
                }
                let _ = store.set_task_container(&task.id, None).await;
                false
            }
            None => false,
        };
        if !kept {
            self.sweep_sandboxes_of(&task.id).await;
        }
        if let Some(dir) = state.checkout.take() {
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        let reason = match state.sink.as_ref() {
            Some(sink) => sink.redactor().redact(&outcome.reason),
            None => outcome.reason.clone(),
        };
        let kind = if outcome.status == "succeeded" {
            "success"
        } else {
            "error"
        };
        state.log(kind, &reason);
        if let Some(sink) = state.sink.as_mut()
            && let Err(err) = sink.flush().await
        {
            tracing::error!(error = %err, "could not store the last log lines");
        }
        let record = TaskOutcome {
            status: outcome.status,
            reason: Some(&reason),
            commit_sha: outcome.commit_sha.as_deref(),
            pr_url: outcome.pr.as_ref().map(|(url, _)| url.as_str()),
            pr_number: outcome.pr.as_ref().map(|(_, n)| *n),
        };
        if let Err(err) = store.finish_task(&task.id, &record).await {
            tracing::error!(error = %err, "could not record the task's outcome");
        }
        tracing::info!(status = outcome.status, reason = %reason, "task ended");
        self.lock_running().remove(&task.id);
        self.inner.hub.end(&task.id, outcome.status);
        self.inner.hub.status_changed(StatusChange {
            user_id: task.user_id.clone(),
            task_id: task.id.clone(),
            status: outcome.status.to_owned(),
            status_reason: Some(reason),
        });
        // Follow-ups sent while this turn ran start the next one, unless the user stopped it.
        if outcome.status == "stopped" {
            let _ = store.cancel_waiting_messages(&task.id).await;
        } else if store.has_waiting_messages(&task.id).await.unwrap_or(false)
            && store.requeue_task(&task.id).await.unwrap_or(false)
        {
            self.inner.hub.status_changed(StatusChange {
                user_id: task.user_id.clone(),
                task_id: task.id.clone(),
                status: "queued".into(),
                status_reason: None,
            });
        }
        let runner = self.clone();
        tokio::spawn(async move { runner.schedule().await });
    }

    /// Whether the sandbox of a task that asked for it stays after this turn: only after a turn
    /// that ran to its end (not a stop, timeout or shutdown) in a sandbox that still runs.
    async fn keeps(&self, task: &Task, outcome: &Outcome, sandbox: &Sandbox) -> bool {
        task.keep_alive
            && matches!(outcome.status, "succeeded" | "failed")
            && !self.inner.shutdown.is_cancelled()
            && sandbox.is_running().await.unwrap_or(false)
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
    /// its log. Answers false when it had none, or a turn is using it.
    pub async fn remove_kept_sandbox(
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
        if let Ok(sandboxes) = self.sandboxes().await {
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
        self.inner.hub.status_changed(StatusChange {
            user_id: task.user_id.clone(),
            task_id: task.id.clone(),
            status: task.status.clone(),
            status_reason: task.status_reason.clone(),
        });
        true
    }

    /// Starts the project's dev script (`npm run dev`) in a kept sandbox, unless it already runs,
    /// and records the preview once it listens on `port`.
    async fn start_preview(&self, task: &Task, sandbox: &Sandbox, port: u16) {
        let store = &self.inner.store;
        let note = |text: String| self.note(&task.id, "info", text);
        if sandbox.connect_port(port).await.is_err() {
            // The dev server gets its own session so it outlives this exec.
            let script = r#"cd /workspace || exit 1
[ -f package.json ] || exit 3
node -e 'const s = require("./package.json").scripts || {}; process.exit(typeof s.dev === "string" ? 0 : 3)' || exit 3
setsid npm run dev </dev/null >/tmp/drydock-preview.log 2>&1 &"#;
            let base = format!("/tasks/{}/preview/", task.id);
            let spec = ExecSpec::shell(script)
                .workdir("/workspace")
                .env("PORT", port.to_string())
                .env("DRYDOCK_PREVIEW_BASE", base);
            let exit = match sandbox.exec(&spec).await {
                Ok(out) => out.exit().await,
                Err(err) => Err(err),
            };
            match exit {
                Ok(exit) if exit.success() => {}
                Ok(exit) if exit.code() == Some(3) => return,
                Ok(exit) => {
                    return note(format!("Preview: the dev script could not start ({exit})")).await;
                }
                Err(err) => {
                    return note(format!("Preview: the dev script could not start ({err})")).await;
                }
            }
            let started = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if sandbox.connect_port(port).await.is_ok() {
                    break;
                }
                if started.elapsed() > PREVIEW_START_TIMEOUT
                    || !sandbox.is_running().await.unwrap_or(false)
                {
                    return note(format!(
                        "Preview: the dev server did not listen on port {port} within {} s (its output is in /tmp/drydock-preview.log in the sandbox)",
                        PREVIEW_START_TIMEOUT.as_secs()
                    ))
                    .await;
                }
            }
        }
        if let Err(err) = store
            .set_task_preview(&task.id, Some(i64::from(port)))
            .await
        {
            tracing::error!(error = %err, "could not record the preview");
            return;
        }
        note(format!(
            "Preview ready: {}/tasks/{}/preview/",
            self.inner.settings.public_url, task.id
        ))
        .await;
        if let Ok(Some(task)) = store.get_task_for_runner(&task.id).await {
            self.inner.hub.status_changed(StatusChange {
                user_id: task.user_id.clone(),
                task_id: task.id.clone(),
                status: task.status.clone(),
                status_reason: task.status_reason.clone(),
            });
        }
    }

    /// Adds a line of drydock's own (no secrets in it) to a task's log outside a run, and shows
    /// it to live viewers.
    async fn note(&self, task_id: &str, kind: &'static str, text: String) {
        match self
            .inner
            .store
            .append_task_events(task_id, &[crate::store::NewEvent { kind, text }])
            .await
        {
            Ok(stored) => self.inner.hub.publish(task_id, &stored),
            Err(err) => tracing::error!(task_id, error = %err, "could not add to the task's log"),
        }
    }

    /// Removes the kept-alive sandboxes of this server whose idle time is over.
    async fn reap_idle(&self) {
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

    /// Removes any container still labelled with this task (a backstop: every path above
    /// already removes the sandbox it knows of).
    async fn sweep_sandboxes_of(&self, task_id: &str) {
        let Ok(sandboxes) = self.sandboxes().await else {
            return;
        };
        let Ok(left) = sandboxes
            .list(&[(drydock_sandbox::LABEL_TASK, task_id)])
            .await
        else {
            return;
        };
        for info in left {
            tracing::warn!(container_id = %info.id, "removing a sandbox left behind");
            if let Ok(sandbox) = sandboxes.get(&info.id).await {
                let _ = sandbox.remove().await;
            }
        }
    }

    /// The steps of a turn; `Err` carries the outcome of a step that ended it early.
    async fn execute(&self, task: &Task, turn: &Turn, state: &mut RunState) -> StepResult<Outcome> {
        let token = self.github_token(task).await?;
        let message = turn
            .message
            .as_ref()
            .map_or(task.prompt.as_str(), |m| m.content.as_str());
        let follow_up = turn.number > 1;
        // A follow-up continues in the kept sandbox when there is one, resuming the agent's own
        // session where its CLI can; otherwise it starts afresh from the branch with the earlier
        // turns in its prompt.
        let live = if follow_up {
            self.live_sandbox(task).await
        } else {
            None
        };
        let resume = live.is_some()
            && self
                .inner
                .agents
                .get(&task.agent)
                .is_ok_and(|a| a.supports_resume());
        let prompt = self.turn_prompt(task, turn, message, resume).await?;
        let mut plan = self.plan(task, prompt, resume).await?;
        let mut secrets = SecretSet::new();
        secrets.add("github-token", token.expose());
        state.secret_values.push(token.clone());
        for secret in plan.secrets() {
            secrets.add("secret", secret);
            state.secret_values.push(SecretString::new(secret.clone()));
        }
        let redactor = Redactor::new(secrets)
            .map_err(|err| Outcome::failed(format!("could not prepare redaction: {err}")))?;
        state.sink = Some(LogSink::new(
            &task.id,
            self.inner.store.clone(),
            self.inner.hub.clone(),
            redactor,
        ));
        if follow_up {
            self.log(
                state,
                "info",
                &format!("Follow-up (turn {}): {}", turn.number, title_of(message)),
            )
            .await;
        }

        let checkout = self.clone_repo(task, &token, state).await?;
        let git = &checkout.git;
        let branch = checkout.branch.as_str();
        let sandbox = match live {
            Some(sandbox) => self.reuse_sandbox(sandbox, &checkout, state).await?,
            None => None,
        };
        if resume && sandbox.is_none() {
            // The kept sandbox could not be used: nothing to resume, so the earlier turns go
            // into the prompt.
            let prompt = self.turn_prompt(task, turn, message, false).await?;
            plan = self.plan(task, prompt, false).await?;
        }
        let sandbox = match sandbox {
            Some(sandbox) => sandbox,
            None => {
                let sandbox = self.create_sandbox(task, state).await?;
                self.log(state, "info", "Uploading the working tree").await;
                sandbox
                    .upload_dir("/workspace", git.dir())
                    .await
                    .map_err(|err| {
                        Outcome::failed(format!("could not upload the working tree: {err}"))
                    })?;
                if task.install_deps {
                    self.install_deps(&sandbox, git.dir(), state).await?;
                }
                sandbox
            }
        };
        for file in &plan.files {
            sandbox
                .write_file(&file.path, &file.contents, file.mode, None)
                .await
                .map_err(|err| Outcome::failed(format!("could not write {}: {err}", file.path)))?;
        }

        let final_message = self.run_agent(task, &sandbox, &plan, state).await?;
        if let Some(message) = &final_message {
            let text = state
                .sink
                .as_ref()
                .map_or_else(String::new, |s| s.redactor().redact(message));
            let _ = self
                .inner
                .store
                .insert_task_message(&task.id, "agent", &text, Some(turn.number))
                .await;
        }

        let start_sha = checkout.start_sha.as_str();
        let Some(_commit) = self
            .commit_in_sandbox(task, message, &sandbox, start_sha, state)
            .await?
        else {
            return Ok(Outcome::ended(
                "succeeded",
                if follow_up {
                    "no changes in this turn, so nothing was pushed"
                } else {
                    "no changes: the agent changed nothing, so nothing was pushed"
                },
            ));
        };
        let commit_sha = self.fetch_bundle(&sandbox, git, start_sha, state).await?;
        // The diff shown is the whole task's work, from where its first turn started.
        let diff_base = match (&task.base_sha, checkout.branch_existed) {
            (Some(base), true) => base.as_str(),
            _ => start_sha,
        };
        self.save_diff(task, git, diff_base, state).await;
        self.refuse_secrets(git, start_sha, state).await?;
        self.push(git, branch, state).await?;
        let short = &commit_sha[..commit_sha.len().min(12)];
        let mut outcome = Outcome {
            status: "succeeded",
            reason: format!("pushed {branch} ({short})"),
            commit_sha: Some(commit_sha.clone()),
            pr: None,
        };
        if let Some(number) = task.pr_number {
            // Pushing to the branch updated the pull request.
            outcome.reason = format!("pushed {short} to pull request #{number}");
        } else if task.create_pr {
            self.log(state, "info", "Opening a pull request").await;
            let title = title_of(&task.prompt);
            let body = self.pr_body(task, final_message.as_deref(), state);
            match self
                .inner
                .github
                .create_pull(
                    &token,
                    &task.repo,
                    &title,
                    &body,
                    branch,
                    &checkout.base_branch,
                )
                .await
            {
                Ok((url, number)) => {
                    outcome.reason = format!("opened pull request #{number}");
                    outcome.pr = Some((url, number));
                }
                Err(err) => {
                    outcome.status = "failed";
                    outcome.reason =
                        format!("pushed {branch}, but opening the pull request failed: {err}");
                }
            }
        }
        Ok(outcome)
    }

    /// The prompt of a turn: the message itself on the first turn and when the agent resumes its
    /// own session; otherwise the message after the earlier turns (bounded).
    async fn turn_prompt(
        &self,
        task: &Task,
        turn: &Turn,
        message: &str,
        resume: bool,
    ) -> StepResult<String> {
        if turn.number <= 1 || resume {
            return Ok(message.to_owned());
        }
        let earlier = self
            .inner
            .store
            .list_task_messages(&task.id)
            .await
            .map_err(|_| Outcome::failed("could not read the task's conversation"))?;
        Ok(follow_up_prompt(task, &earlier, turn.number, message))
    }

    /// Takes over the kept sandbox for a follow-up when its working tree is where the branch is
    /// on GitHub; otherwise removes it (the next step creates a fresh one from the branch).
    async fn reuse_sandbox(
        &self,
        sandbox: Sandbox,
        checkout: &Checkout,
        state: &mut RunState,
    ) -> StepResult<Option<Sandbox>> {
        state.sandbox = Some(sandbox.clone());
        let out = sandbox
            .exec(&ExecSpec::new(["git", "rev-parse", "HEAD"]).workdir("/workspace"))
            .await
            .map_err(|err| Outcome::failed(sandbox_failure(&err)))?;
        let (_, head, _) = capture(out).await?;
        if String::from_utf8_lossy(&head).trim() == checkout.start_sha {
            self.log(state, "info", "Continuing in the task's sandbox")
                .await;
            return Ok(Some(sandbox));
        }
        self.log(
            state,
            "info",
            "The branch is not where the kept sandbox left it; starting a fresh sandbox from the branch",
        )
        .await;
        state.sandbox = None;
        if let Err(err) = sandbox.remove().await {
            tracing::error!(error = %err, "could not remove the kept sandbox");
        }
        Ok(None)
    }

    async fn log(&self, state: &mut RunState, kind: &'static str, text: &str) {
        state.log(kind, text);
        if let Some(sink) = state.sink.as_mut()
            && let Err(err) = sink.flush().await
        {
            tracing::error!(error = %err, "could not store log lines");
        }
    }

    async fn github_token(&self, task: &Task) -> StepResult<SecretString> {
        let account = self
            .inner
            .store
            .get_github_account(&task.user_id)
            .await
            .map_err(|_| Outcome::failed("could not read your GitHub sign-in"))?
            .ok_or_else(|| Outcome::failed("drydock has no GitHub token for you; sign in again"))?;
        let token = self
            .inner
            .secrets
            .open_str(&account.access_token_enc)
            .map_err(|_| {
                Outcome::failed("your GitHub token could not be decrypted; sign in again")
            })?;
        Ok(SecretString::new(token))
    }

    /// The launch plan, with the one key the chosen model needs.
    async fn plan(&self, task: &Task, prompt: String, resume: bool) -> StepResult<LaunchPlan> {
        let agent = self.inner.agents.get(&task.agent).map_err(|_| {
            Outcome::failed(format!("the agent {} is no longer offered", task.agent))
        })?;
        let model_provider = task
            .model
            .as_deref()
            .and_then(|id| agent.models.iter().find(|m| m.id == id))
            .and_then(|m| m.provider.as_deref());
        let provider = crate::agents_api::model_provider(agent, model_provider).map(str::to_owned);
        let mut keys = BTreeMap::new();
        if let Some(provider) = provider {
            let row = self
                .inner
                .store
                .get_api_key(&task.user_id, &provider)
                .await
                .map_err(|_| Outcome::failed("could not read your API key"))?
                .ok_or_else(|| {
                    Outcome::failed(format!(
                        "no {provider} API key is configured; add one in Settings → API keys"
                    ))
                })?;
            let key = self.inner.secrets.open_str(&row.key_enc).map_err(|_| {
                Outcome::failed(format!(
                    "your {provider} API key could not be decrypted; set it again"
                ))
            })?;
            keys.insert(provider, key);
        }
        let request = LaunchRequest {
            agent: task.agent.clone(),
            model: task.model.clone(),
            prompt,
            keys,
            base_urls: self.inner.settings.base_urls.clone(),
            mcp_servers: self.mcp_servers(task).await?,
            resume,
        };
        self.inner
            .agents
            .plan(&request)
            .map_err(|err| Outcome::failed(format!("cannot run the agent: {err}")))
    }

    /// The connectors chosen for the task, opened for the agent's config (a connector deleted
    /// since the task was submitted is left out).
    async fn mcp_servers(&self, task: &Task) -> StepResult<Vec<McpServer>> {
        let store = &self.inner.store;
        let ids = store
            .list_task_connector_ids(&task.id)
            .await
            .map_err(|_| Outcome::failed("could not read the task's connectors"))?;
        let open = |sealed: Option<&str>, name: &str| -> StepResult<BTreeMap<String, String>> {
            let Some(sealed) = sealed else {
                return Ok(BTreeMap::new());
            };
            self.inner
                .secrets
                .open_str(sealed)
                .ok()
                .and_then(|json| serde_json::from_str(&json).ok())
                .ok_or_else(|| {
                    Outcome::failed(format!(
                        "the secrets of connector {name} could not be decrypted; set them again"
                    ))
                })
        };
        let mut servers = Vec::new();
        for id in ids {
            let Some(c) = store
                .get_connector(&task.user_id, &id)
                .await
                .map_err(|_| Outcome::failed("could not read the task's connectors"))?
            else {
                continue;
            };
            let transport = match c.transport.as_str() {
                "http" => McpTransport::Http {
                    url: c.url.clone().unwrap_or_default(),
                    headers: open(c.headers_enc.as_deref(), &c.name)?,
                },
                _ => McpTransport::Stdio {
                    command: c.command.clone().unwrap_or_default(),
                    args: serde_json::from_str(&c.args).unwrap_or_default(),
                    env: open(c.env_enc.as_deref(), &c.name)?,
                },
            };
            servers.push(McpServer {
                name: c.name.clone(),
                transport,
            });
        }
        Ok(servers)
    }

    /// Clones the repository on the host: the task's branch when an earlier turn pushed it,
    /// otherwise the base branch, with the task's branch created on it.
    #[instrument(skip_all, fields(task_id = %task.id))]
    async fn clone_repo(
        &self,
        task: &Task,
        token: &SecretString,
        state: &mut RunState,
    ) -> StepResult<Checkout> {
        let dir = self.inner.settings.work_dir.join(&task.id);
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::create_dir_all(&self.inner.settings.work_dir)
            .await
            .map_err(|err| {
                Outcome::failed(format!("could not create the work directory: {err}"))
            })?;
        state.checkout = Some(dir.clone());
        let git = HostGit::new(&dir, token);
        let url = format!(
            "{}/{}.git",
            self.inner.settings.github_url.trim_end_matches('/'),
            task.repo
        );
        let branch = task
            .branch
            .clone()
            .unwrap_or_else(|| branch_name(&task.prompt, &task.id));
        let branch_existed = if task.branch.is_some() {
            let refname = format!("refs/heads/{branch}");
            let out = git
                .run(&["ls-remote", "--heads", "--", &url, &refname])
                .await
                .map_err(Outcome::failed)?;
            if !out.ok {
                return Err(Outcome::failed(format!(
                    "could not reach {}: {}",
                    task.repo,
                    last_line(&out.stderr)
                )));
            }
            !out.text().is_empty()
        } else {
            false
        };
        let dir_arg = dir.to_string_lossy().into_owned();
        let mut args = vec!["clone", "--no-tags", "--single-branch"];
        if branch_existed {
            args.extend(["--branch", branch.as_str()]);
        } else if let Some(base) = task.base_branch.as_deref() {
            args.extend(["--branch", base]);
        }
        args.extend(["--", &url, &dir_arg]);
        self.log(state, "info", &format!("Cloning {}", task.repo))
            .await;
        state.log(
            "command",
            &format!("git {}", args.join(" ").replace(&dir_arg, "repo")),
        );
        let out = git.run(&args).await.map_err(Outcome::failed)?;
        self.log_stderr(state, &out.stderr).await;
        if !out.ok {
            let detail = last_line(&out.stderr);
            return Err(Outcome::failed(format!(
                "cloning {} failed: {detail}",
                task.repo
            )));
        }
        let start_sha = git
            .run(&["rev-parse", "HEAD"])
            .await
            .map_err(Outcome::failed)?
            .text();
        let base_branch = if branch_existed {
            task.base_branch.clone().unwrap_or_default()
        } else {
            let base_branch = git
                .run(&["symbolic-ref", "--short", "HEAD"])
                .await
                .map_err(Outcome::failed)?
                .text();
            let out = git
                .run(&["checkout", "-q", "-b", &branch])
                .await
                .map_err(Outcome::failed)?;
            if !out.ok {
                return Err(Outcome::failed(format!(
                    "could not create the branch {branch}: {}",
                    last_line(&out.stderr)
                )));
            }
            let _ = self
                .inner
                .store
                .set_task_branch(&task.id, &base_branch, &branch, &start_sha)
                .await;
            base_branch
        };
        let short = &start_sha[..start_sha.len().min(12)];
        let text = if branch_existed {
            format!("Working on {branch} ({short})")
        } else {
            format!("Working on {branch} from {base_branch} ({short})")
        };
        self.log(state, "info", &text).await;
        Ok(Checkout {
            git,
            base_branch,
            start_sha,
            branch,
            branch_existed,
        })
    }

    async fn log_stderr(&self, state: &mut RunState, stderr: &str) {
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            state.log("stderr", line);
        }
        self.log(state, "info", "").await;
    }

    #[instrument(skip_all, fields(task_id = %task.id))]
    async fn create_sandbox(&self, task: &Task, state: &mut RunState) -> StepResult<Sandbox> {
        self.log(state, "info", "Starting the sandbox").await;
        let sandboxes = self
            .sandboxes()
            .await
            .map_err(|err| Outcome::failed(sandbox_failure(&err)))?;
        // The sandbox outlives the run's own deadline a little, so the run reports the timeout;
        // a kept-alive one lives until its hard lifetime (each turn still has its own deadline).
        let mut deadline =
            Duration::from_secs(u64::try_from(task.max_duration_s).unwrap_or(3600) + 60);
        if task.keep_alive {
            deadline = deadline.max(self.inner.settings.keep_alive_lifetime);
        }
        let spec = sandboxes.spec(task.id.clone()).deadline(deadline);
        let creating = state
            .creating
            .insert(tokio::spawn(async move { sandboxes.create(spec).await }));
        let created = creating.await;
        state.creating = None;
        let sandbox = created
            .map_err(|_| Outcome::failed("creating the sandbox was interrupted"))?
            .map_err(|err| Outcome::failed(sandbox_failure(&err)))?;
        let _ = self
            .inner
            .store
            .set_task_container(&task.id, Some(sandbox.id()))
            .await;
        state.sandbox = Some(sandbox.clone());
        Ok(sandbox)
    }

    #[instrument(skip_all)]
    async fn install_deps(
        &self,
        sandbox: &Sandbox,
        checkout: &Path,
        state: &mut RunState,
    ) -> StepResult<()> {
        let commands = dependency_commands(checkout);
        if commands.is_empty() {
            self.log(
                state,
                "info",
                "No dependency manifest found; nothing to install",
            )
            .await;
        }
        for command in commands {
            state.log("command", &command.join(" "));
            let exit = self
                .exec_logged(
                    sandbox,
                    ExecSpec::new(command.clone()).workdir("/workspace"),
                    None,
                    state,
                )
                .await?
                .0;
            if !exit.success() {
                return Err(exit_outcome(
                    &exit,
                    &format!("installing dependencies (`{}`)", command.join(" ")),
                ));
            }
        }
        Ok(())
    }

    #[instrument(skip_all, fields(task_id = %task.id))]
    async fn run_agent(
        &self,
        task: &Task,
        sandbox: &Sandbox,
        plan: &LaunchPlan,
        state: &mut RunState,
    ) -> StepResult<Option<String>> {
        let agent_name = self
            .inner
            .agents
            .get(&task.agent)
            .map_or(task.agent.clone(), |a| a.name.clone());
        self.log(state, "info", &format!("Running {agent_name}"))
            .await;
        let mut spec = ExecSpec::new(plan.argv.clone())
            .workdir(plan.workdir.clone())
            .user(plan.user.clone());
        for (name, value) in &plan.env {
            spec = spec.env(name.clone(), value.clone());
        }
        let (exit, final_message) = self
            .exec_logged(sandbox, spec, Some(OutputParser::new(plan.parser)), state)
            .await?;
        if !exit.success() {
            return Err(exit_outcome(&exit, "the agent"));
        }
        Ok(final_message)
    }

    /// Runs an exec, streaming its output through the task's log.
    async fn exec_logged(
        &self,
        sandbox: &Sandbox,
        spec: ExecSpec,
        parser: Option<OutputParser>,
        state: &mut RunState,
    ) -> StepResult<(ExecExit, Option<String>)> {
        let mut output = sandbox
            .exec(&spec)
            .await
            .map_err(|err| Outcome::failed(sandbox_failure(&err)))?;
        let Some(sink) = state.sink.as_mut() else {
            return Err(Outcome::failed("internal: no log"));
        };
        let mut log = sink.exec_log(parser);
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        loop {
            tokio::select! {
                chunk = output.next() => match chunk {
                    Some(Ok(chunk)) => {
                        sink.output(&mut log, chunk.stream, &chunk.data);
                        if sink.due() {
                            sink.flush().await.map_err(|_| Outcome::failed("could not store the log"))?;
                        }
                    }
                    Some(Err(err)) => return Err(Outcome::failed(sandbox_failure(&err))),
                    None => break,
                },
                _ = tick.tick() => {
                    if sink.due() {
                        sink.flush().await.map_err(|_| Outcome::failed("could not store the log"))?;
                    }
                }
            }
        }
        let final_message = sink.finish_exec(log);
        sink.flush()
            .await
            .map_err(|_| Outcome::failed("could not store the log"))?;
        let exit = output
            .exit()
            .await
            .map_err(|err| Outcome::failed(sandbox_failure(&err)))?;
        Ok((exit, final_message))
    }

    /// Commits what the agent left uncommitted inside the sandbox; answers the commit the turn
    /// ends at, or `None` when it is still `start_sha` (the agent changed nothing; commits the
    /// agent made itself count as changes).
    #[instrument(skip_all, fields(task_id = %task.id))]
    async fn commit_in_sandbox(
        &self,
        task: &Task,
        request: &str,
        sandbox: &Sandbox,
        start_sha: &str,
        state: &mut RunState,
    ) -> StepResult<Option<String>> {
        let user = self
            .inner
            .store
            .get_user(&task.user_id)
            .await
            .ok()
            .flatten();
        let (name, email) = match &user {
            Some(u) => (
                u.name.clone().unwrap_or_else(|| u.login.clone()),
                noreply_email(&self.inner.settings.github_url, u.github_id, &u.login),
            ),
            None => ("drydock".to_owned(), "drydock@localhost".to_owned()),
        };
        let agent_name = self
            .inner
            .agents
            .get(&task.agent)
            .map_or(task.agent.clone(), |a| a.name.clone());
        let message = format!(
            "{}\n\n{}\n\nMade by {agent_name}{} with drydock: {}/tasks/{}",
            title_of(request),
            wrap(request, 72),
            task.model
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default(),
            self.inner.settings.public_url,
            task.id
        );
        // Values travel as environment, never pasted into the script.
        let script = r#"git add -A && if ! git diff --cached --quiet; then git -c user.name="$DRYDOCK_NAME" -c user.email="$DRYDOCK_EMAIL" commit -q -F - <<DRYDOCK_EOF
$DRYDOCK_MESSAGE
DRYDOCK_EOF
fi && git rev-parse HEAD"#;
        state.log("command", "git add -A && git commit");
        let out = sandbox
            .exec(
                &ExecSpec::shell(script)
                    .workdir("/workspace")
                    .env("DRYDOCK_NAME", name)
                    .env("DRYDOCK_EMAIL", email)
                    .env("DRYDOCK_MESSAGE", message),
            )
            .await
            .map_err(|err| Outcome::failed(sandbox_failure(&err)))?;
        let (exit, stdout, stderr) = capture(out).await?;
        self.log_stderr(state, &String::from_utf8_lossy(&stderr))
            .await;
        if !exit.success() {
            return Err(exit_outcome(&exit, "committing the changes"));
        }
        let head = last_line(&String::from_utf8_lossy(&stdout));
        Ok((head != start_sha).then_some(head))
    }

    /// Brings the sandbox's HEAD (the commit the turn ended at, whatever branch the agent left
    /// checked out) to the host as a git bundle; answers the commit.
    async fn fetch_bundle(
        &self,
        sandbox: &Sandbox,
        git: &HostGit,
        base_sha: &str,
        state: &mut RunState,
    ) -> StepResult<String> {
        self.log(state, "info", "Bringing the commit back from the sandbox")
            .await;
        let bundle_path = git.dir().with_extension("bundle");
        let mut file = tokio::fs::File::create(&bundle_path)
            .await
            .map_err(|err| Outcome::failed(format!("could not write the bundle: {err}")))?;
        let refspec = "HEAD";
        let mut stream = sandbox
            .export(&ExecSpec::new(["git", "bundle", "create", "-", refspec]).workdir("/workspace"))
            .await
            .map_err(|err| Outcome::failed(sandbox_failure(&err)))?;
        let mut written: u64 = 0;
        while let Some(bytes) = stream.next().await {
            let bytes = bytes
                .map_err(|err| Outcome::failed(format!("exporting the commit failed: {err}")))?;
            written += bytes.len() as u64;
            if written > MAX_BUNDLE_BYTES {
                return Err(Outcome::failed(
                    "the agent's commit is larger than 2 GiB; refusing it",
                ));
            }
            file.write_all(&bytes)
                .await
                .map_err(|err| Outcome::failed(format!("could not write the bundle: {err}")))?;
        }
        file.flush()
            .await
            .map_err(|err| Outcome::failed(format!("could not write the bundle: {err}")))?;
        drop(file);
        let bundle = bundle_path.to_string_lossy().into_owned();
        let out = git
            .run(&[
                "fetch",
                "-q",
                &bundle,
                &format!("{refspec}:refs/drydock/result"),
            ])
            .await
            .map_err(Outcome::failed)?;
        let _ = tokio::fs::remove_file(&bundle_path).await;
        if !out.ok {
            return Err(Outcome::failed(format!(
                "the sandbox's commit could not be read: {}",
                last_line(&out.stderr)
            )));
        }
        let ancestor = git
            .run(&[
                "merge-base",
                "--is-ancestor",
                base_sha,
                "refs/drydock/result",
            ])
            .await
            .map_err(Outcome::failed)?;
        if !ancestor.ok {
            return Err(Outcome::failed(
                "the agent rewrote the branch's history; refusing to push it",
            ));
        }
        Ok(git
            .run(&["rev-parse", "refs/drydock/result"])
            .await
            .map_err(Outcome::failed)?
            .text())
    }

    /// Stores the redacted diff of the work, for `GET /api/tasks/{id}/diff`.
    async fn save_diff(&self, task: &Task, git: &HostGit, base_sha: &str, state: &mut RunState) {
        let range = format!("{base_sha}..refs/drydock/result");
        let (Ok(numstat), Ok(names), Ok(patch)) = (
            git.run(&["diff", "--numstat", "-z", &range]).await,
            git.run(&["diff", "--name-status", &range]).await,
            git.run(&["diff", "--no-color", &range]).await,
        ) else {
            return;
        };
        let files = diff_files(&String::from_utf8_lossy(&numstat.stdout), &names.text());
        let Some(sink) = state.sink.as_ref() else {
            return;
        };
        let redactor = sink.redactor();
        let patch = redactor.redact(&String::from_utf8_lossy(&patch.stdout));
        let files = redactor.redact(&files.to_string());
        if let Err(err) = self
            .inner
            .store
            .save_task_diff(&task.id, &files, &patch)
            .await
        {
            tracing::error!(error = %err, "could not store the diff");
        }
    }

    /// Refuses to push when an added line, or a commit's message or names, contains one of the
    /// task's secrets (or its base64); fails closed when git cannot say.
    async fn refuse_secrets(
        &self,
        git: &HostGit,
        base_sha: &str,
        state: &mut RunState,
    ) -> StepResult<()> {
        let out = git
            .run(&[
                "diff",
                "-U0",
                "--no-color",
                &format!("{base_sha}..refs/drydock/result"),
            ])
            .await
            .map_err(Outcome::failed)?;
        let mut added: String = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .collect::<Vec<_>>()
            .join("\n");
        // The agent may have committed itself: its messages and names are pushed too.
        let log = git
            .run(&[
                "log",
                "--format=%an%n%ae%n%cn%n%ce%n%B",
                &format!("{base_sha}..refs/drydock/result"),
            ])
            .await
            .map_err(Outcome::failed)?;
        if !out.ok || !log.ok {
            return Err(Outcome::failed(
                "could not check the changes for secrets; refusing to push",
            ));
        }
        added.push('\n');
        added.push_str(&String::from_utf8_lossy(&log.stdout));
        let found = state
            .secret_values
            .iter()
            .map(SecretString::expose)
            .filter(|v| v.len() >= 8)
            .any(|v| {
                added.contains(v)
                    || added.contains(&B64.encode(v))
                    || added.contains(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v))
            });
        if found {
            return Err(Outcome::failed(
                "refused to push: the changes contain one of this task's secrets (an API key or token)",
            ));
        }
        Ok(())
    }

    async fn push(&self, git: &HostGit, branch: &str, state: &mut RunState) -> StepResult<()> {
        self.log(state, "info", &format!("Pushing {branch}")).await;
        state.log("command", &format!("git push origin {branch}"));
        let out = git
            .run(&[
                "push",
                "-q",
                "origin",
                &format!("refs/drydock/result:refs/heads/{branch}"),
            ])
            .await
            .map_err(Outcome::failed)?;
        self.log_stderr(state, &out.stderr).await;
        if !out.ok {
            return Err(Outcome::failed(format!(
                "pushing {branch} was rejected: {}",
                last_line(&out.stderr)
            )));
        }
        Ok(())
    }

    fn pr_body(&self, task: &Task, final_message: Option<&str>, state: &RunState) -> String {
        let redact = |text: &str| {
            state
                .sink
                .as_ref()
                .map_or_else(String::new, |s| s.redactor().redact(text))
        };
        let mut body = format!(
            "Task: {}/tasks/{}\n\n> {}\n",
            self.inner.settings.public_url,
            task.id,
            redact(&task.prompt).replace('\n', "\n> ")
        );
        if let Some(message) = final_message {
            let summary: String = message.chars().take(4000).collect();
            body.push_str(&format!(
                "\n### Summary from the agent\n\n{}\n",
                redact(&summary)
            ));
        }
        body
    }
}

/// Reads an exec to its end: how it exited, its stdout and its stderr (for short commands).
async fn capture(mut out: drydock_sandbox::ExecOutput) -> StepResult<(ExecExit, Vec<u8>, Vec<u8>)> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    while let Some(chunk) = out.next().await {
        let chunk = chunk.map_err(|err| Outcome::failed(sandbox_failure(&err)))?;
        match chunk.stream {
            drydock_sandbox::OutputStream::Stdout => stdout.extend_from_slice(&chunk.data),
            _ => stderr.extend_from_slice(&chunk.data),
        }
    }
    let exit = out
        .exit()
        .await
        .map_err(|err| Outcome::failed(sandbox_failure(&err)))?;
    Ok((exit, stdout, stderr))
}

fn sandbox_failure(err: &SandboxError) -> String {
    match err {
        SandboxError::ImageNotFound(image) => format!(
            "the sandbox image {image} is not on the Docker host; build it with sandbox/image/build-offline (or sandbox/image/Dockerfile) and set DRYDOCK_SANDBOX_IMAGE"
        ),
        SandboxError::DaemonUnavailable { .. } => {
            "Docker is not reachable from the drydock server".to_owned()
        }
        other => format!("the sandbox failed: {other}"),
    }
}

fn exit_outcome(exit: &ExecExit, what: &str) -> Outcome {
    match exit {
        ExecExit::Code(code) => Outcome::failed(format!("{what} exited with code {code}")),
        ExecExit::OutOfMemory | ExecExit::SandboxEnded(ExitReason::OutOfMemory) => Outcome::failed(
            format!("{what} ran out of memory (the sandbox's memory limit)"),
        ),
        ExecExit::SandboxEnded(ExitReason::Deadline) => {
            Outcome::ended("timed_out", "the sandbox reached its deadline")
        }
        ExecExit::Cancelled | ExecExit::SandboxEnded(ExitReason::Stopped) => {
            Outcome::ended("stopped", "stopped")
        }
        ExecExit::SandboxEnded(reason) => {
            Outcome::failed(format!("the sandbox ended while {what} ran: {reason}"))
        }
        _ => Outcome::failed(format!("{what} ended unexpectedly")),
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .chars()
        .take(300)
        .collect()
}

/// The first line of the prompt, at most 72 characters.
pub fn title_of(prompt: &str) -> String {
    let first = prompt
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("drydock task")
        .trim();
    if first.chars().count() <= 72 {
        first.to_owned()
    } else {
        let cut: String = first.chars().take(71).collect();
        format!("{}…", cut.trim_end())
    }
}

/// Most of the earlier conversation put into a follow-up's prompt, in bytes.
const CONTEXT_BUDGET: usize = 24 * 1024;
/// Most of one earlier message put into it.
const CONTEXT_MESSAGE_MAX: usize = 6 * 1024;
/// The line before the new request in a follow-up's prompt. Operator-defined agents may look for
/// it to tell the new request from the context.
pub const NEW_REQUEST_MARKER: &str = "## New request";

/// The prompt of a follow-up that starts afresh: what the task is, the earlier turns (the
/// original request and then the most recent messages, within a budget, saying when something
/// was left out or cut), then the new request after [`NEW_REQUEST_MARKER`].
pub fn follow_up_prompt(task: &Task, earlier: &[TaskMessage], turn: i64, message: &str) -> String {
    let earlier: Vec<&TaskMessage> = earlier
        .iter()
        .filter(|m| m.turn.is_some_and(|t| t < turn))
        .collect();
    let render = |m: &TaskMessage| {
        let who = if m.role == "user" {
            "Request"
        } else {
            "Your reply"
        };
        let mut text = m.content.trim().to_owned();
        let mut cut = false;
        if text.len() > CONTEXT_MESSAGE_MAX {
            let mut at = CONTEXT_MESSAGE_MAX;
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.truncate(at);
            cut = true;
        }
        format!(
            "### {who} (turn {})\n{text}{}\n",
            m.turn.unwrap_or_default(),
            if cut { "\n[… cut]" } else { "" }
        )
    };
    // The first request says what the task is; then as many of the latest messages as fit.
    let mut parts: Vec<String> = Vec::new();
    let mut used = 0;
    let first = earlier.first().map(|m| render(m));
    if let Some(first) = &first {
        used += first.len();
    }
    let mut left_out = 0;
    for m in earlier.iter().skip(1).rev() {
        let part = render(m);
        if used + part.len() > CONTEXT_BUDGET {
            left_out += 1;
            continue;
        }
        used += part.len();
        parts.push(part);
    }
    parts.reverse();
    let branch = task.branch.as_deref().unwrap_or("the task's branch");
    let mut prompt = format!(
        "This continues earlier work on {} (branch {branch}). The work of the earlier turns is \
         committed on this branch, which is checked out. The conversation so far:\n\n",
        task.repo
    );
    if let Some(first) = first {
        prompt.push_str(&first);
        prompt.push('\n');
    }
    if left_out > 0 {
        prompt.push_str(&format!(
            "[{left_out} earlier message(s) left out to keep this prompt short]\n\n"
        ));
    }
    for part in parts {
        prompt.push_str(&part);
        prompt.push('\n');
    }
    prompt.push_str(NEW_REQUEST_MARKER);
    prompt.push('\n');
    prompt.push_str(message);
    prompt
}

/// "30 min", "2 h", "45 s".
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                out.push_str(&line);
                out.push('\n');
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.trim_end().to_owned()
}

fn noreply_email(github_url: &str, github_id: i64, login: &str) -> String {
    let host = github_url
        .split("://")
        .nth(1)
        .unwrap_or("github.com")
        .split(['/', ':'])
        .next()
        .unwrap_or("github.com");
    format!("{github_id}+{login}@users.noreply.{host}")
}

/// Install commands for the manifests found at the top of the checkout, in a sensible order.
fn dependency_commands(checkout: &Path) -> Vec<Vec<String>> {
    let has = |name: &str| checkout.join(name).exists();
    let mut commands: Vec<&[&str]> = Vec::new();
    if has("pnpm-lock.yaml") {
        commands.push(&["pnpm", "install", "--frozen-lockfile"]);
    } else if has("yarn.lock") {
        commands.push(&["yarn", "install", "--frozen-lockfile"]);
    } else if has("bun.lockb") || has("bun.lock") {
        commands.push(&["bun", "install", "--frozen-lockfile"]);
    } else if has("package-lock.json") {
        commands.push(&["npm", "ci"]);
    } else if has("package.json") {
        commands.push(&["npm", "install"]);
    }
    if has("requirements.txt") {
        commands.push(&[
            "python3",
            "-m",
            "pip",
            "install",
            "--user",
            "-r",
            "requirements.txt",
        ]);
    } else if has("pyproject.toml") {
        commands.push(&["python3", "-m", "pip", "install", "--user", "-e", "."]);
    }
    if has("Cargo.toml") {
        commands.push(&["cargo", "fetch"]);
    }
    if has("go.mod") {
        commands.push(&["go", "mod", "download"]);
    }
    commands
        .into_iter()
        .map(|c| c.iter().map(|s| (*s).to_owned()).collect())
        .collect()
}

/// `[{path, status, additions, deletions}]` from `git diff --numstat -z` and `--name-status`.
fn diff_files(numstat_z: &str, name_status: &str) -> serde_json::Value {
    let statuses: HashMap<String, String> = name_status
        .lines()
        .filter_map(|l| {
            let mut parts = l.split('\t');
            let status = parts.next()?;
            let path = parts.next_back()?;
            let status = match status.chars().next()? {
                'A' => "added",
                'D' => "deleted",
                'R' => "renamed",
                _ => "modified",
            };
            Some((path.to_owned(), status.to_owned()))
        })
        .collect();
    let mut files = Vec::new();
    let mut fields = numstat_z.split('\0').peekable();
    while let Some(entry) = fields.next() {
        let mut cols = entry.splitn(3, '\t');
        let (Some(add), Some(del), Some(path)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        // Renames: the path is empty and the old and new paths follow as two fields.
        let path = if path.is_empty() {
            let _old = fields.next();
            fields.next().unwrap_or_default().to_owned()
        } else {
            path.to_owned()
        };
        files.push(serde_json::json!({
            "path": path,
            "status": statuses.get(&path).cloned().unwrap_or_else(|| "modified".into()),
            "additions": add.parse::<i64>().ok(),
            "deletions": del.parse::<i64>().ok(),
        }));
    }
    serde_json::Value::Array(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_the_first_line_cut_at_72() {
        assert_eq!(title_of("\n  Fix the bug \nmore"), "Fix the bug");
        let long = "x".repeat(100);
        assert_eq!(title_of(&long).chars().count(), 72);
    }

    fn message(role: &str, turn: i64, content: String) -> TaskMessage {
        TaskMessage {
            id: format!("{role}{turn}"),
            task_id: "t1".into(),
            role: role.into(),
            content,
            turn: Some(turn),
            created_at: turn,
        }
    }

    #[test]
    fn follow_up_prompts_keep_the_first_request_and_the_latest_turns_within_bounds() {
        let task = Task {
            id: "t1".into(),
            user_id: "u".into(),
            title: "t".into(),
            prompt: "fix the parser".into(),
            repo: "o/r".into(),
            base_branch: Some("main".into()),
            branch: Some("drydock/fix-t1".into()),
            agent: "a".into(),
            model: None,
            status: "succeeded".into(),
            status_reason: None,
            install_deps: false,
            max_duration_s: 60,
            keep_alive: false,
            create_pr: true,
            container_id: None,
            commit_sha: None,
            pr_url: None,
            pr_number: None,
            event_seq: 0,
            runner_id: None,
            turns: 9,
            base_sha: None,
            sandbox_expires_at: None,
            preview_port: None,
            created_at: 0,
            started_at: None,
            finished_at: None,
            updated_at: 0,
        };
        let mut earlier = vec![message("user", 1, "fix the parser".into())];
        for turn in 1..10 {
            if turn > 1 {
                earlier.push(message(
                    "user",
                    turn,
                    format!("request {turn} {}", "x".repeat(5000)),
                ));
            }
            earlier.push(message(
                "agent",
                turn,
                format!("reply {turn} {}", "y".repeat(9000)),
            ));
        }
        // The message of the turn being run is not context.
        earlier.push(message("user", 10, "now this".into()));
        let prompt = follow_up_prompt(&task, &earlier, 10, "now this");
        assert!(prompt.contains("o/r (branch drydock/fix-t1)"));
        assert!(prompt.contains("### Request (turn 1)\nfix the parser\n"));
        assert!(prompt.contains("### Your reply (turn 9)\nreply 9 "));
        assert!(prompt.contains("[… cut]"), "long replies are cut");
        assert!(prompt.contains("earlier message(s) left out to keep this prompt short"));
        assert!(
            !prompt.contains("request 2 "),
            "the oldest follow-ups go first"
        );
        assert!(prompt.ends_with("## New request\nnow this"));
        assert_eq!(prompt.matches("now this").count(), 1);
        assert!(prompt.len() < CONTEXT_BUDGET + 1024, "{}", prompt.len());
    }

    #[test]
    fn noreply_addresses_follow_the_github_host() {
        assert_eq!(
            noreply_email("https://github.com", 7, "octo"),
            "7+octo@users.noreply.github.com"
        );
        assert_eq!(
            noreply_email("https://ghe.corp.example/", 7, "octo"),
            "7+octo@users.noreply.ghe.corp.example"
        );
    }

    #[test]
    fn diff_files_pair_stats_with_statuses() {
        let files = diff_files(
            "3\t1\tsrc/a.rs\0-\t-\tlogo.png\0",
            "M\tsrc/a.rs\nA\tlogo.png\n",
        );
        assert_eq!(files[0]["path"], "src/a.rs");
        assert_eq!(
            (
                files[0]["additions"].as_i64(),
                files[0]["deletions"].as_i64()
            ),
            (Some(3), Some(1))
        );
        assert_eq!(files[1]["status"], "added");
        assert!(
            files[1]["additions"].is_null(),
            "binary files have no line counts"
        );
    }
}
