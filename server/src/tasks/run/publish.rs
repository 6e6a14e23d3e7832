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
    /// for one and has none yet; answers the turn's outcome.
    pub(super) async fn publish(
        &self,
        cx: &mut TurnContext,
        workspace: &Workspace,
        commit_sha: &str,
        reply: Option<&str>,
        token: &SecretString,
    ) -> StepResult<Outcome> {
        self.save_diff(cx, workspace).await;
        workspace.refuse_secrets(&cx.secret_values).await?;
        workspace.push(cx).await?;
        let branch = &workspace.branch;
        let short = &commit_sha[..commit_sha.len().min(12)];
        let mut outcome = Outcome::ended("succeeded", format!("pushed {branch} ({short})"));
        outcome.commit_sha = Some(commit_sha.to_owned());
        let task = &cx.task;
        if let Some(number) = task.pr_number {
            // Pushing to the branch updated the pull request.
            outcome.reason = format!("pushed {short} to pull request #{number}");
        } else if task.create_pr {
            cx.say("info", "Opening a pull request").await;
            let title = title_of(&cx.task.prompt);
            let body = pr_body(
                &cx.task,
                &self.inner.settings.public_url,
                reply,
                |text: &str| cx.redact(text),
            );
            match workspace
                .open_pull_request(&self.inner.github, token, &title, &body)
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

    /// Stores the redacted diff of the whole task (from where its first turn started), for
    /// `GET /api/tasks/{id}/diff`.
    async fn save_diff(&self, cx: &TurnContext, workspace: &Workspace) {
        let base = match (&cx.task.base_sha, workspace.branch_existed) {
            (Some(base), true) => base.as_str(),
            _ => workspace.start_sha.as_str(),
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
