//! A repository without commits: the checkout is put on the default branch GitHub reports, where
//! the turn's work becomes the first commit.

use tracing::instrument;

use super::Workspace;
use crate::config::SecretString;
use crate::tasks::git::HostGit;
use crate::tasks::run::TaskRunner;
use crate::tasks::run::outcome::{Outcome, StepResult, last_line};
use crate::tasks::run::turn::TurnContext;

/// The outcome of a task asking for a base branch of a repository without commits.
pub(super) fn no_base_yet(base: &str, repo: &str) -> Outcome {
    Outcome::failed(format!(
        "the base branch {base} does not exist on {repo}: the repository has no commits yet"
    ))
}

impl TaskRunner {
    /// The default branch GitHub reports for `repo`, when it answers.
    pub(super) async fn reported_default_branch(
        &self,
        token: &SecretString,
        repo: &str,
    ) -> Option<String> {
        match self.inner.github.repo(token, repo).await {
            Ok(repo) => repo.default_branch.filter(|b| !b.is_empty()),
            Err(err) => {
                tracing::warn!(error = %err, "could not read the repository's default branch");
                None
            }
        }
    }

    /// The workspace of a repository without commits: the checkout is put on the repository's
    /// default branch as GitHub reports it (not the host git's default), which becomes both the
    /// task's branch and its base; there is nothing to open a pull request against.
    #[instrument(skip_all, fields(task_id = %cx.task.id))]
    pub(super) async fn first_commit_workspace(
        &self,
        cx: &mut TurnContext,
        git: HostGit,
        token: &SecretString,
        empty_tree: String,
    ) -> StepResult<Workspace> {
        let task = cx.task.clone();
        let default = match self.reported_default_branch(token, &task.repo).await {
            Some(branch) => branch,
            None => git
                .run(&["symbolic-ref", "--short", "HEAD"])
                .await
                .map_err(Outcome::failed)?
                .text(),
        };
        if let Some(base) = task.base_branch.as_deref()
            && base != default
        {
            return Err(no_base_yet(base, &task.repo));
        }
        let out = git
            .run(&["symbolic-ref", "HEAD", &format!("refs/heads/{default}")])
            .await
            .map_err(Outcome::failed)?;
        if !out.ok {
            return Err(Outcome::failed(format!(
                "could not check out {default}: {}",
                last_line(&out.stderr)
            )));
        }
        // The empty tree stands for "before the first commit" in the task's diff.
        let _ = self
            .inner
            .store
            .set_task_branch(&task.id, &default, &default, &empty_tree)
            .await;
        let text = format!(
            "{} has no commits yet: the work becomes its first commit, on its default branch {default} (there is no base to open a pull request against)",
            task.repo
        );
        cx.say("info", &text).await;
        Ok(Workspace {
            git,
            repo: task.repo.clone(),
            base_branch: default.clone(),
            start_sha: String::new(),
            empty_tree,
            branch: default,
            branch_existed: false,
        })
    }
}
