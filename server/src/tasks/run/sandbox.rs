//! Starting the sandbox of a turn: continuing in the task's kept sandbox when its working tree is
//! where the branch is, otherwise creating a hardened sandbox from the repository's environment
//! (see [`super::environment`]), uploading the checkout and running the environment's maintenance.

use std::collections::BTreeMap;
use std::time::Duration;

use drydock_sandbox::{ExecSpec, Sandbox};
use tracing::instrument;

use super::TaskRunner;
use super::agent::Launch;
use super::exec::run_captured;
use super::outcome::{Outcome, StepResult, sandbox_failed};
use super::turn::TurnContext;
use super::workspace::Workspace;

impl TaskRunner {
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
        let agent_cli = launch.plan.argv.first().cloned().unwrap_or_default();
        let prepared = self.prepare_environment(cx, workspace, &agent_cli).await?;
        let sandbox = self
            .create_sandbox(cx, &prepared.image, &prepared.variables)
            .await?;
        if prepared.check_tools {
            self.check_image(cx, &sandbox, &agent_cli).await?;
        }
        cx.say("info", "Uploading the working tree").await;
        sandbox
            .upload_dir("/workspace", workspace.dir())
            .await
            .map_err(|err| Outcome::failed(format!("could not upload the working tree: {err}")))?;
        if let Some(script) = &prepared.maintenance {
            self.run_maintenance(cx, &sandbox, script, prepared.setup_user)
                .await?;
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

    /// Creates a hardened sandbox of the task from `image`, with `variables` as its environment
    /// (plain values only: secrets go to single execs).
    #[instrument(skip_all, fields(task_id = %cx.task.id))]
    pub(super) async fn create_sandbox(
        &self,
        cx: &mut TurnContext,
        image: &str,
        variables: &BTreeMap<String, String>,
    ) -> StepResult<Sandbox> {
        cx.say("info", "Starting the sandbox").await;
        let sandboxes = self.sandboxes().await.map_err(|err| sandbox_failed(&err))?;
        let task = &cx.task;
        // The sandbox outlives the turn's own deadline a little, so the turn reports the
        // timeout; a kept-alive one lives until its hard lifetime (each turn still has its own
        // deadline).
        let mut deadline =
            Duration::from_secs(u64::try_from(task.max_duration_s).unwrap_or(3600) + 60);
        if task.keep_alive {
            deadline = deadline.max(self.inner.settings.keep_alive_lifetime);
        }
        let mut spec = sandboxes.spec(task.id.clone()).deadline(deadline);
        // The image is part of the spec, so whatever keys sandboxes by their spec (a warm pool)
        // sees the environment.
        spec.image = image.to_owned();
        for (name, value) in variables {
            spec = spec.env(name.clone(), value.clone());
        }
        let creating = cx
            .creating
            .insert(tokio::spawn(async move { sandboxes.create(spec).await }));
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
}
