//! Handing the work back: commit what the agent left in the sandbox, then bring the sandbox's
//! HEAD to the host as a git bundle (the sandbox never sees the GitHub token, so it cannot push).

use drydock_sandbox::{ExecSpec, Sandbox};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tracing::instrument;

use super::TaskRunner;
use super::exec::run_captured;
use super::outcome::{Outcome, StepResult, exit_outcome, last_line, sandbox_failed};
use super::prompt::{commit_message, noreply_email};
use super::turn::TurnContext;
use super::workspace::Workspace;

/// Longest `git bundle` output accepted from a sandbox.
const MAX_BUNDLE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

impl TaskRunner {
    /// Commits the agent's work in the sandbox and imports it into the workspace; answers the
    /// commit the turn ends at, or `None` when the agent changed nothing (commits the agent made
    /// itself count as changes).
    pub(super) async fn hand_back(
        &self,
        cx: &mut TurnContext,
        sandbox: &Sandbox,
        workspace: &Workspace,
    ) -> StepResult<Option<String>> {
        if self
            .commit_in_sandbox(cx, sandbox, &workspace.start_sha)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        cx.say("info", "Bringing the commit back from the sandbox")
            .await;
        export_bundle(sandbox, workspace).await?;
        workspace.import_bundle().await.map(Some)
    }

    /// Commits what the agent left uncommitted inside the sandbox, as the user (GitHub noreply
    /// address) with the turn's request as the message; answers the sandbox's HEAD when it moved
    /// past `start_sha`.
    #[instrument(skip_all, fields(task_id = %cx.task.id))]
    async fn commit_in_sandbox(
        &self,
        cx: &mut TurnContext,
        sandbox: &Sandbox,
        start_sha: &str,
    ) -> StepResult<Option<String>> {
        let task = &cx.task;
        let user = self
            .inner
            .store
            .get_user(&task.user_id)
            .await
            .ok()
            .flatten();
        let settings = &self.inner.settings;
        let (name, email) = match &user {
            Some(u) => (
                u.name.clone().unwrap_or_else(|| u.login.clone()),
                noreply_email(&settings.github_url, u.github_id, &u.login),
            ),
            None => ("drydock".to_owned(), "drydock@localhost".to_owned()),
        };
        let message = commit_message(
            task,
            &cx.message,
            &self.agent_name(task),
            &settings.public_url,
        );
        // Values travel as environment, never pasted into the script.
        let script = r#"git add -A && if ! git diff --cached --quiet; then git -c user.name="$DRYDOCK_NAME" -c user.email="$DRYDOCK_EMAIL" commit -q -F - <<DRYDOCK_EOF
$DRYDOCK_MESSAGE
DRYDOCK_EOF
fi && git rev-parse HEAD"#;
        cx.line("command", "git add -A && git commit");
        let spec = ExecSpec::shell(script)
            .workdir("/workspace")
            .env("DRYDOCK_NAME", name)
            .env("DRYDOCK_EMAIL", email)
            .env("DRYDOCK_MESSAGE", message);
        let (exit, stdout, stderr) = run_captured(sandbox, &spec).await?;
        cx.say_stderr(&String::from_utf8_lossy(&stderr)).await;
        if !exit.success() {
            return Err(exit_outcome(&exit, "committing the changes"));
        }
        let head = last_line(&String::from_utf8_lossy(&stdout));
        Ok((head != start_sha).then_some(head))
    }
}

/// Streams a bundle of the sandbox's HEAD (whatever branch the agent left checked out) into the
/// workspace's bundle file, refusing one over [`MAX_BUNDLE_BYTES`].
async fn export_bundle(sandbox: &Sandbox, workspace: &Workspace) -> StepResult<()> {
    let write_failed =
        |err: std::io::Error| Outcome::failed(format!("could not write the bundle: {err}"));
    let mut file = tokio::fs::File::create(workspace.bundle_path())
        .await
        .map_err(write_failed)?;
    let mut stream = sandbox
        .export(&ExecSpec::new(["git", "bundle", "create", "-", "HEAD"]).workdir("/workspace"))
        .await
        .map_err(|err| sandbox_failed(&err))?;
    let mut written: u64 = 0;
    while let Some(bytes) = stream.next().await {
        let bytes =
            bytes.map_err(|err| Outcome::failed(format!("exporting the commit failed: {err}")))?;
        written += bytes.len() as u64;
        if written > MAX_BUNDLE_BYTES {
            return Err(Outcome::failed(
                "the agent's commit is larger than 2 GiB; refusing it",
            ));
        }
        file.write_all(&bytes).await.map_err(write_failed)?;
    }
    file.flush().await.map_err(write_failed)
}
