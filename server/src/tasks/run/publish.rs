//! Publishing a turn's work: the diff of the whole task stored for the task page, the secret
//! check, the push to the task's branch, and the pull request (opened once; later turns update
//! it by pushing).

use super::TaskRunner;
use super::outcome::{Outcome, StepResult};
use super::prompt::{pr_body, title_of};
use super::turn::TurnContext;
use super::workspace::Workspace;
use crate::config::SecretString;

impl TaskRunner {
    /// Stores the diff, checks for secrets, pushes, and opens the pull request when the task asks
    /// for one and has none yet; answers the turn's outcome. The GitHub token is renewed first
    /// when it expires within a minute; what drydock writes to GitHub (the pull request's title
    /// and body) passes through the task's redaction.
    pub(super) async fn publish(
        &self,
        cx: &mut TurnContext,
        workspace: &mut Workspace,
        commit_sha: &str,
        reply: Option<&str>,
    ) -> StepResult<Outcome> {
        self.save_diff(cx, workspace).await;
        workspace.refuse_secrets(&cx.secret_values).await?;
        self.fresh_token(cx, workspace).await?;
        workspace.push(cx).await?;
        let branch = workspace.branch.clone();
        let short = &commit_sha[..commit_sha.len().min(12)];
        let mut outcome = Outcome::ended("succeeded", format!("pushed {branch} ({short})"));
        outcome.commit_sha = Some(commit_sha.to_owned());
        let task = &cx.task;
        if workspace.on_base_branch() {
            if task.create_pr && !workspace.branch_existed {
                outcome.reason = format!(
                    "the repository had no commits: pushed its first commit ({short}) to {branch}, its default branch; there was no base to open a pull request against"
                );
            }
        } else if let Some(number) = task.pr_number {
            // Pushing to the branch updated the pull request.
            outcome.reason = format!("pushed {short} to pull request #{number}");
        } else if task.create_pr {
            cx.say("info", "Opening a pull request").await;
            let token = self.fresh_token(cx, workspace).await?;
            let title = title_of(&cx.redact(&cx.task.prompt));
            let body = pr_body(
                &cx.task,
                &self.inner.settings.public_url,
                reply,
                |text: &str| cx.redact(text),
            );
            match workspace
                .open_pull_request(&self.inner.github, &token, &title, &body)
                .await
            {
                Ok((url, number, already)) => {
                    outcome.reason = if already {
                        format!(
                            "pushed {short} to pull request #{number}, which was already open for {branch}"
                        )
                    } else {
                        format!("opened pull request #{number}")
                    };
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

    /// The user's GitHub token for the next call, renewed when it expires within a minute; a
    /// renewed token is given to the workspace's git and to the secret check.
    async fn fresh_token(
        &self,
        cx: &mut TurnContext,
        workspace: &mut Workspace,
    ) -> StepResult<SecretString> {
        let token = self.github_token(&cx.task).await?;
        if !cx
            .secret_values
            .iter()
            .any(|known| known.expose() == token.expose())
        {
            workspace.set_token(&token);
            cx.secret_values.push(token.clone());
        }
        Ok(token)
    }

    /// Stores the redacted diff of the whole task (from where its first turn started), for
    /// `GET /api/tasks/{id}/diff`.
    async fn save_diff(&self, cx: &TurnContext, workspace: &Workspace) {
        let base = match (&cx.task.base_sha, workspace.branch_existed) {
            (Some(base), true) => base.as_str(),
            _ => workspace.diff_base(),
        };
        let Some((files, patch)) = workspace.diff_since(base).await else {
            return;
        };
        if cx.sink.is_none() {
            return;
        }
        let patch = cx.redact(&patch);
        let files = cx.redact(&files.to_string());
        if let Err(err) = self
            .inner
            .store
            .save_task_diff(&cx.task.id, &files, &patch)
            .await
        {
            tracing::error!(error = %err, "could not store the diff");
        }
    }
}
