//! One turn of a task, read top to bottom: the stages it runs in order, and how it ends
//! whatever stage it stopped at (sandbox kept or removed, checkout deleted, outcome recorded,
//! the next waiting follow-up queued).

use std::path::PathBuf;
use std::time::Duration;

use drydock_sandbox::{Sandbox, SandboxError};
use tokio_util::sync::CancellationToken;

use super::TaskRunner;
use super::outcome::{self, Outcome, StepResult};
use crate::config::SecretString;
use crate::redact::{Redactor, SecretSet};
use crate::store::{Task, TaskOutcome};
use crate::tasks::logs::LogSink;

/// What one turn holds, shared by its stages, so the end of the turn can reach whatever they
/// made, at whichever stage it stopped.
pub(super) struct TurnContext {
    /// The task as claimed.
    pub task: Task,
    /// The turn's number (1 for the first request).
    pub number: i64,
    /// What the user asked in this turn: the task's prompt, or the follow-up message.
    pub message: String,
    /// The task's log; opened once the turn's secrets are known.
    pub sink: Option<LogSink>,
    /// A sandbox being started (taken from the warm pool or created), while the host clones.
    /// It runs in its own tokio task so that a stop arriving mid-way cannot drop the handle of a
    /// container Docker already made; the end awaits it.
    pub creating: Option<tokio::task::JoinHandle<Result<Sandbox, SandboxError>>>,
    /// The shape key ([`drydock_sandbox::Shape::key`]) of the sandbox in `creating`.
    pub creating_shape: Option<String>,
    /// The task's secret values, for the check before pushing.
    pub secret_values: Vec<SecretString>,
    /// The turn's sandbox, once it runs.
    pub sandbox: Option<Sandbox>,
    /// The host checkout, removed when the turn ends.
    pub checkout: Option<PathBuf>,
    /// What went wrong without ending the turn; added to the reason of a turn that succeeds.
    pub warnings: Vec<String>,
    /// The environment configured in drydock for the repository (variables, secrets).
    pub environment: crate::environments::Configured,
    /// The task's egress proxy serving the sandbox's relay, while the turn runs.
    pub egress: Option<tokio::task::JoinHandle<()>>,
    /// That proxy, to switch its policy between phases.
    pub proxy: Option<std::sync::Arc<crate::egress::proxy::TaskProxy>>,
    /// The repository environment's per-phase network policies (`[network]`), which narrow the
    /// task's.
    pub phase_network: Option<crate::environments::NetworkPolicy>,
}

impl TurnContext {
    /// The task's network policy; `None` when it runs without one.
    pub fn policy(&self) -> Option<crate::egress::NetworkPolicy> {
        self.task
            .network_policy
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
    }

    /// The task's policy for a phase of the turn, narrowed by the repository environment's
    /// `[network]` table; `Ok(None)` when the task has no policy. `Err` names a bad entry.
    pub fn phase_policy(
        &self,
        phase: super::sandbox::SandboxRole,
    ) -> Result<Option<crate::egress::NetworkPolicy>, String> {
        let Some(policy) = self.policy() else {
            return Ok(None);
        };
        let asked = self.phase_network.as_ref().and_then(|n| match phase {
            super::sandbox::SandboxRole::Setup => n.setup.as_deref(),
            super::sandbox::SandboxRole::Agent => n.agent.as_deref(),
        });
        match asked {
            Some(phase_policy) => policy.narrowed_for_phase(phase_policy).map(Some),
            None => Ok(Some(policy)),
        }
    }

    /// Whether this turn answers a follow-up message.
    pub fn follow_up(&self) -> bool {
        self.number > 1
    }

    /// Queues a line of drydock's own for the task's log (stored with the next flush).
    pub fn line(&mut self, kind: &'static str, text: &str) {
        if let Some(sink) = self.sink.as_mut() {
            sink.line(kind, text);
        }
    }

    /// Adds a line to the task's log and hands it to the log's writer, which stores and
    /// publishes it at once when idle; the turn goes on without waiting (the end of the turn
    /// waits for everything, see [`flush_log`](Self::flush_log)).
    pub async fn say(&mut self, kind: &'static str, text: &str) {
        self.line(kind, text);
        if let Some(sink) = self.sink.as_mut()
            && let Err(err) = sink.submit().await
        {
            tracing::error!(error = %err, "could not store log lines");
        }
    }

    /// Adds a command's standard error to the log, a line each, then stores it.
    pub async fn say_stderr(&mut self, stderr: &str) {
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            self.line("stderr", line);
        }
        self.flush().await;
    }

    /// The task's redaction of `text` (empty when the log is not open yet, so nothing
    /// unredacted can leave).
    pub fn redact(&self, text: &str) -> String {
        self.sink
            .as_ref()
            .map_or_else(String::new, |sink| sink.redactor().redact(text))
    }

    /// Stores the lines queued so far and waits until they are stored and published.
    pub async fn flush_log(&mut self) {
        self.flush().await;
    }

    async fn flush(&mut self) {
        if let Some(sink) = self.sink.as_mut()
            && let Err(err) = sink.flush().await
        {
            tracing::error!(error = %err, "could not store log lines");
        }
    }
}

impl TaskRunner {
    /// Runs the next turn of a claimed task until it ends, is stopped, or outlives its allowed
    /// duration, then ends it.
    pub(super) async fn run_turn(self, task: Task, cancel: CancellationToken) {
        let turn = match self.inner.store.begin_turn(&task.id).await {
            Ok(turn) => turn,
            Err(err) => {
                tracing::error!(error = %err, "could not start the turn");
                let cx = TurnContext::new(task, 0, String::new());
                let outcome = Outcome::failed("could not start the turn: the database failed");
                return self.end_turn(cx, outcome).await;
            }
        };
        let message = turn
            .message
            .map_or_else(|| task.prompt.clone(), |m| m.content);
        let mut cx = TurnContext::new(task, turn.number, message);
        let allowed = Duration::from_secs(u64::try_from(cx.task.max_duration_s).unwrap_or(3600));
        let outcome = tokio::select! {
            outcome = self.execute(&mut cx) => outcome.unwrap_or_else(|outcome| outcome),
            () = cancel.cancelled() => outcome::cancelled(self.inner.shutdown.is_cancelled()),
            () = tokio::time::sleep(allowed) => outcome::timed_out(allowed),
        };
        self.end_turn(cx, outcome).await;
    }

    /// The stages of a turn, in order; `Err` carries the outcome of a stage that ended it early.
    async fn execute(&self, cx: &mut TurnContext) -> StepResult<Outcome> {
        // Checked at submit too; a turn queued behind one that spent the budget must not run.
        match self.inner.egress.budget_spent(&cx.task.user_id).await {
            Ok(None) => {}
            Ok(Some(spent)) => {
                return Err(Outcome::failed(format!(
                    "not started (429, daily model budget): {}",
                    spent.message
                )));
            }
            Err(_) => return Err(Outcome::failed("could not read your model use of today")),
        }
        let token = self.github_token(&cx.task).await?;
        // Listing the branches and cloning need only the token: they run while the rest is
        // set up.
        let mut checkout = self.begin_checkout(cx, &token).await?;
        let mut launch = self.prepare_agent(cx).await?;
        cx.environment = self.load_environment(&cx.task).await?;
        // Secrets the user lets the agent see go to its process; the others only to setup and
        // maintenance.
        for secret in cx.environment.secrets.iter().filter(|s| s.agent_may_see) {
            launch
                .plan
                .env
                .insert(secret.name.clone(), secret.value.expose().to_owned());
        }
        self.open_log(cx, &token, &launch)?;
        for notice in std::mem::take(&mut launch.notices) {
            cx.say("error", &notice).await;
        }
        if cx.follow_up() {
            let text = format!(
                "Follow-up (turn {}): {}",
                cx.number,
                super::prompt::title_of(&cx.message)
            );
            cx.say("info", &text).await;
        }
        let source = self.locate_branch(cx, &token, &mut checkout).await?;
        // The sandbox starts while the host clones; `start_sandbox` waits for it.
        self.begin_sandbox(cx, &launch).await;
        let mut workspace = self.prepare_workspace(cx, &token, source, checkout).await?;
        let sandbox = self.start_sandbox(cx, &workspace, &mut launch).await?;
        let reply = self.run_agent(cx, &sandbox, &launch).await?;
        let Some(work) = self.hand_back(cx, &sandbox, &workspace).await? else {
            return Ok(Outcome::no_changes(cx.follow_up()));
        };
        self.publish(cx, &mut workspace, &work, reply.as_deref())
            .await
    }

    /// Opens the task's log with a redactor that knows every secret of this turn: the GitHub
    /// token and what the launch plan carries (keys, connector values).
    pub(super) fn open_log(
        &self,
        cx: &mut TurnContext,
        token: &SecretString,
        launch: &super::agent::Launch,
    ) -> StepResult<()> {
        let mut secrets = SecretSet::new();
        secrets.add("github-token", token.expose());
        cx.secret_values.push(token.clone());
        for secret in launch.plan.secrets().iter().chain(launch.hidden.iter()) {
            secrets.add("secret", secret);
            cx.secret_values.push(SecretString::new(secret.clone()));
        }
        for secret in &cx.environment.secrets {
            secrets.add("environment-secret", secret.value.expose());
            cx.secret_values.push(secret.value.clone());
        }
        let redactor = Redactor::new(secrets)
            .map_err(|err| Outcome::failed(format!("could not prepare redaction: {err}")))?;
        cx.sink = Some(LogSink::new(
            &cx.task.id,
            self.inner.store.clone(),
            self.inner.hub.clone(),
            redactor,
        ));
        Ok(())
    }

    /// Ends a turn at whatever stage it stopped: keeps or removes the sandbox, deletes the
    /// checkout, logs and records the outcome, tells viewers, and queues the next follow-up.
    pub(super) async fn end_turn(&self, mut cx: TurnContext, mut outcome: Outcome) {
        if outcome.status == "succeeded" && !cx.warnings.is_empty() {
            outcome.reason = format!("{}; but {}", outcome.reason, cx.warnings.join("; "));
        }
        let store = &self.inner.store;
        let task = cx.task.clone();
        // The turn's placeholder tokens and its proxy end with it: a replay is refused.
        self.inner.egress.revoke(&task.id);
        if let Some(proxy) = cx.egress.take() {
            proxy.abort();
        }
        if let Some(creating) = cx.creating.take()
            && let Ok(Ok(sandbox)) = creating.await
        {
            cx.sandbox = Some(sandbox);
        }
        let kept = match cx.sandbox.take() {
            Some(sandbox) => self.keep_or_remove(&mut cx, &outcome, sandbox).await,
            None => false,
        };
        if !kept {
            self.sweep_sandboxes_of(&task.id).await;
        }
        if let Some(dir) = cx.checkout.take() {
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        let reason = match cx.sink.as_ref() {
            Some(sink) => sink.redactor().redact(&outcome.reason),
            None => outcome.reason.clone(),
        };
        cx.say(outcome.log_kind(), &reason).await;
        // Every line of the turn is stored before its outcome, so a viewer that sees the end
        // has seen them all.
        cx.flush_log().await;
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
        crate::triggers::feedback::turn_ended(
            store.clone(),
            self.inner.secrets.clone(),
            self.inner.github.clone(),
            self.inner.settings.public_url.clone(),
            crate::triggers::feedback::TurnEnd {
                task_id: task.id.clone(),
                user_id: task.user_id.clone(),
                title: task.title.clone(),
                status: outcome.status.to_owned(),
                reason: reason.clone(),
                pr_url: record.pr_url.map(str::to_owned).or(task.pr_url.clone()),
            },
            cx.sink.as_ref().map(|sink| sink.redactor().clone()),
        );
        self.lock_running().remove(&task.id);
        self.inner.hub.end(&task.id, outcome.status);
        self.announce(&task.user_id, &task.id, outcome.status, Some(reason));
        // Follow-ups sent while this turn ran start the next one, unless the user stopped it.
        if outcome.status == "stopped" {
            let _ = store.cancel_waiting_messages(&task.id).await;
        } else if store.has_waiting_messages(&task.id).await.unwrap_or(false)
            && store.requeue_task(&task.id).await.unwrap_or(false)
        {
            self.announce(&task.user_id, &task.id, "queued", None);
        }
        let runner = self.clone();
        tokio::spawn(async move { runner.schedule().await });
    }
}

impl TurnContext {
    pub(super) fn new(task: Task, number: i64, message: String) -> Self {
        Self {
            task,
            number,
            message,
            sink: None,
            creating: None,
            creating_shape: None,
            secret_values: Vec::new(),
            sandbox: None,
            checkout: None,
            warnings: Vec::new(),
            environment: crate::environments::Configured::default(),
            egress: None,
            proxy: None,
            phase_network: None,
        }
    }
}
