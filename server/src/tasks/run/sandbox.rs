//! Starting the sandbox of a turn: continuing in the task's kept sandbox when its working tree is
//! where the branch is, otherwise taking a warm one from the pool or creating a hardened sandbox
//! (begun while the host clones, so the two overlap), uploading the checkout and installing the
//! project's dependencies.

use std::path::Path;
use std::time::Duration;

use drydock_sandbox::{ExecSpec, Sandbox, SandboxError};
use tracing::{Instrument, instrument};

use super::TaskRunner;
use super::agent::Launch;
use super::exec::{last_output, run_captured};
use super::outcome::{Outcome, StepResult, exit_outcome, sandbox_failed};
use super::turn::TurnContext;
use super::workspace::Workspace;

impl TaskRunner {
    /// Begins starting a fresh sandbox in the background, unless the turn will continue in the
    /// task's kept sandbox: taken from the warm pool when one is ready, otherwise created. It
    /// runs in its own tokio task while the host clones; [`start_sandbox`](Self::start_sandbox)
    /// waits for it, and the end of the turn removes it whatever stage the turn stopped at.
    pub(super) async fn begin_sandbox(&self, cx: &mut TurnContext, launch: &Launch) {
        if launch.kept.is_some() || cx.creating.is_some() {
            return;
        }
        cx.say("info", "Starting the sandbox").await;
        let runner = self.clone();
        let task = cx.task.clone();
        let deadline = self.sandbox_deadline(&task);
        cx.creating = Some(tokio::spawn(
            async move {
                let sandboxes = runner.sandboxes().await?;
                let spec = sandboxes.spec(task.id.clone()).deadline(deadline);
                match runner.take_warm(&sandboxes, &spec).await {
                    Some(sandbox) => Ok::<_, SandboxError>(sandbox),
                    None => sandboxes.create(spec).await,
                }
            }
            .in_current_span(),
        ));
    }

    /// How long a task's sandbox may live: a little longer than the turn (so the turn reports
    /// its own timeout), or a kept-alive sandbox's lifetime (each turn still has its deadline).
    fn sandbox_deadline(&self, task: &crate::store::Task) -> Duration {
        let deadline = Duration::from_secs(u64::try_from(task.max_duration_s).unwrap_or(3600) + 60);
        if task.keep_alive {
            deadline.max(self.inner.settings.keep_alive_lifetime)
        } else {
            deadline
        }
    }

    /// The sandbox the agent runs in: the kept one when it can be continued (else the agent
    /// cannot resume, and its plan is made again without), or a fresh one with the working tree.
    pub(super) async fn start_sandbox(
        &self,
        cx: &mut TurnContext,
        workspace: &Workspace,
        launch: &mut Launch,
    ) -> StepResult<Sandbox> {
        let kept = match launch.kept.take() {
            Some(sandbox) => self.continue_in(cx, sandbox, workspace).await?,
            None => None,
        };
        if let Some(sandbox) = kept {
            return Ok(sandbox);
        }
        self.forgo_resume(cx, launch).await?;
        self.begin_sandbox(cx, launch).await;
        let sandbox = self.started_sandbox(cx).await?;
        cx.say("info", "Uploading the working tree").await;
        sandbox
            .upload_dir("/workspace", workspace.dir())
            .await
            .map_err(|err| Outcome::failed(format!("could not upload the working tree: {err}")))?;
        if cx.task.install_deps {
            self.install_deps(cx, &sandbox, workspace.dir()).await?;
        }
        Ok(sandbox)
    }

    /// Takes over the kept sandbox for a follow-up when its working tree is where the branch is
    /// on GitHub, or builds on it (work an earlier push could not deliver); otherwise removes it
    /// (a fresh one is then made from the branch).
    async fn continue_in(
        &self,
        cx: &mut TurnContext,
        sandbox: Sandbox,
        workspace: &Workspace,
    ) -> StepResult<Option<Sandbox>> {
        cx.sandbox = Some(sandbox.clone());
        let spec = ExecSpec::new(["git", "rev-parse", "HEAD"]).workdir("/workspace");
        let (_, head, _) = run_captured(&sandbox, &spec).await?;
        if String::from_utf8_lossy(&head).trim() == workspace.start_sha {
            cx.say("info", "Continuing in the task's sandbox").await;
            return Ok(Some(sandbox));
        }
        // A turn whose push GitHub refused left its work only here: when that work builds on
        // where the branch is on GitHub, the follow-up continues with it (and pushes it too).
        let descends = if workspace.start_sha.is_empty() {
            true
        } else {
            let spec = ExecSpec::new([
                "git",
                "merge-base",
                "--is-ancestor",
                &workspace.start_sha,
                "HEAD",
            ])
            .workdir("/workspace");
            run_captured(&sandbox, &spec).await?.0.success()
        };
        if descends {
            cx.say(
                "info",
                "Continuing in the task's sandbox, which holds work not yet on GitHub",
            )
            .await;
            return Ok(Some(sandbox));
        }
        cx.say(
            "info",
            "The branch is not where the kept sandbox left it; starting a fresh sandbox from the branch",
        )
        .await;
        cx.sandbox = None;
        if let Err(err) = sandbox.remove().await {
            tracing::error!(error = %err, "could not remove the kept sandbox");
        }
        Ok(None)
    }

    /// Waits for the sandbox [`begin_sandbox`](Self::begin_sandbox) started and records it as
    /// the task's container (the link the reaper, restart reconciliation and previews read).
    #[instrument(skip_all, fields(task_id = %cx.task.id))]
    async fn started_sandbox(&self, cx: &mut TurnContext) -> StepResult<Sandbox> {
        let creating = cx
            .creating
            .as_mut()
            .ok_or_else(|| Outcome::failed("the sandbox was never started"))?;
        let created = creating.await;
        cx.creating = None;
        let sandbox = created
            .map_err(|_| Outcome::failed("creating the sandbox was interrupted"))?
            .map_err(|err| sandbox_failed(&err))?;
        let _ = self
            .inner
            .store
            .set_task_container(&cx.task.id, Some(sandbox.id()))
            .await;
        cx.sandbox = Some(sandbox.clone());
        Ok(sandbox)
    }

    /// Runs the install command of each dependency manifest found in the checkout, with its
    /// output in the log; a failing one ends the turn.
    #[instrument(skip_all)]
    async fn install_deps(
        &self,
        cx: &mut TurnContext,
        sandbox: &Sandbox,
        checkout: &Path,
    ) -> StepResult<()> {
        let commands = dependency_commands(checkout);
        if commands.is_empty() {
            cx.say("info", "No dependency manifest found; nothing to install")
                .await;
        }
        for command in commands {
            cx.line("command", &command.join(" "));
            let spec = ExecSpec::new(command.clone()).workdir("/workspace");
            let (exit, _) = self.exec_logged(cx, sandbox, spec, None).await?;
            if !exit.success() {
                return Err(exit_outcome(
                    &exit,
                    &format!("installing dependencies (`{}`)", command.join(" ")),
                    last_output(cx).as_deref(),
                ));
            }
        }
        Ok(())
    }
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
