//! The host workspace of a turn: everything the host does with git and GitHub for it — reading
//! the user's GitHub token, cloning, importing the sandbox's bundle with the fast-forward check,
//! diffing, the secret check before a push, pushing, and opening the pull request. The token
//! stays on the host (see `tasks::git`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use tracing::instrument;

use super::TaskRunner;
use super::outcome::{Outcome, StepResult, last_line};
use super::turn::TurnContext;
use crate::config::SecretString;
use crate::github::{Github, GithubError};
use crate::store::Task;
use crate::tasks::git::{HostGit, branch_name};

/// Where the sandbox's work is imported in the checkout.
const RESULT_REF: &str = "refs/drydock/result";

/// The host checkout of a turn and what it was cloned from.
pub(super) struct Workspace {
    git: HostGit,
    /// `owner/name` on GitHub.
    repo: String,
    /// Branch the task started from.
    pub base_branch: String,
    /// Commit the turn starts from (the branch's head on GitHub, or the base's).
    pub start_sha: String,
    /// Branch the work is pushed to.
    pub branch: String,
    /// An earlier turn had pushed the branch.
    pub branch_existed: bool,
}

impl TaskRunner {
    /// The user's GitHub token, opened from its sealed column.
    pub(super) async fn github_token(&self, task: &Task) -> StepResult<SecretString> {
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

    /// Prepares the workspace: clones the task's branch when an earlier turn pushed it,
    /// otherwise the base branch with the task's branch created on it.
    #[instrument(skip_all, fields(task_id = %cx.task.id))]
    pub(super) async fn prepare_workspace(
        &self,
        cx: &mut TurnContext,
        token: &SecretString,
    ) -> StepResult<Workspace> {
        let task = cx.task.clone();
        let work_dir = &self.inner.settings.work_dir;
        let dir = work_dir.join(&task.id);
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::create_dir_all(work_dir).await.map_err(|err| {
            Outcome::failed(format!("could not create the work directory: {err}"))
        })?;
        cx.checkout = Some(dir.clone());
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
        cx.say("info", &format!("Cloning {}", task.repo)).await;
        cx.line(
            "command",
            &format!("git {}", args.join(" ").replace(&dir_arg, "repo")),
        );
        let out = git.run(&args).await.map_err(Outcome::failed)?;
        cx.say_stderr(&out.stderr).await;
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
        cx.say("info", &text).await;
        Ok(Workspace {
            git,
            repo: task.repo.clone(),
            base_branch,
            start_sha,
            branch,
            branch_existed,
        })
    }
}

impl Workspace {
    /// The checkout's directory.
    pub fn dir(&self) -> &Path {
        self.git.dir()
    }

    /// Where the sandbox's git bundle is written before it is imported (beside the checkout).
    pub fn bundle_path(&self) -> PathBuf {
        self.git.dir().with_extension("bundle")
    }

    /// Imports the bundle at [`Workspace::bundle_path`] (then deletes it) and checks that its
    /// commit descends from where the turn started (a fast-forward); answers the commit.
    pub async fn import_bundle(&self) -> StepResult<String> {
        let bundle_path = self.bundle_path();
        let bundle = bundle_path.to_string_lossy().into_owned();
        let out = self
            .git
            .run(&["fetch", "-q", &bundle, &format!("HEAD:{RESULT_REF}")])
            .await
            .map_err(Outcome::failed)?;
        let _ = tokio::fs::remove_file(&bundle_path).await;
        if !out.ok {
            return Err(Outcome::failed(format!(
                "the sandbox's commit could not be read: {}",
                last_line(&out.stderr)
            )));
        }
        let ancestor = self
            .git
            .run(&["merge-base", "--is-ancestor", &self.start_sha, RESULT_REF])
            .await
            .map_err(Outcome::failed)?;
        if !ancestor.ok {
            return Err(Outcome::failed(
                "the agent rewrote the branch's history; refusing to push it",
            ));
        }
        Ok(self
            .git
            .run(&["rev-parse", RESULT_REF])
            .await
            .map_err(Outcome::failed)?
            .text())
    }

    /// The imported work since `base`: the changed files as JSON
    /// (`[{path, status, additions, deletions}]`) and the patch, unredacted; `None` when git
    /// cannot say.
    pub async fn diff_since(&self, base: &str) -> Option<(serde_json::Value, String)> {
        let range = format!("{base}..{RESULT_REF}");
        let (Ok(numstat), Ok(names), Ok(patch)) = (
            self.git.run(&["diff", "--numstat", "-z", &range]).await,
            self.git.run(&["diff", "--name-status", &range]).await,
            self.git.run(&["diff", "--no-color", &range]).await,
        ) else {
            return None;
        };
        let files = diff_files(&String::from_utf8_lossy(&numstat.stdout), &names.text());
        Some((files, String::from_utf8_lossy(&patch.stdout).into_owned()))
    }

    /// Refuses to push when an added line, or a commit's message or names, contains one of the
    /// task's secrets (or its base64); fails closed when git cannot say.
    pub async fn refuse_secrets(&self, secrets: &[SecretString]) -> StepResult<()> {
        let range = format!("{}..{RESULT_REF}", self.start_sha);
        let out = self
            .git
            .run(&["diff", "-U0", "--no-color", &range])
            .await
            .map_err(Outcome::failed)?;
        let mut added: String = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .collect::<Vec<_>>()
            .join("\n");
        // The agent may have committed itself: its messages and names are pushed too.
        let log = self
            .git
            .run(&["log", "--format=%an%n%ae%n%cn%n%ce%n%B", &range])
            .await
            .map_err(Outcome::failed)?;
        if !out.ok || !log.ok {
            return Err(Outcome::failed(
                "could not check the changes for secrets; refusing to push",
            ));
        }
        added.push('\n');
        added.push_str(&String::from_utf8_lossy(&log.stdout));
        let found = secrets
            .iter()
            .map(SecretString::expose)
            .filter(|v| v.len() >= 8)
            .any(|v| {
                added.contains(v)
                    || added.contains(&B64.encode(v))
                    || added.contains(&URL_SAFE_NO_PAD.encode(v))
            });
        if found {
            return Err(Outcome::failed(
                "refused to push: the changes contain one of this task's secrets (an API key or token)",
            ));
        }
        Ok(())
    }

    /// Pushes the imported work to the task's branch on GitHub.
    pub async fn push(&self, cx: &mut TurnContext) -> StepResult<()> {
        let branch = &self.branch;
        cx.say("info", &format!("Pushing {branch}")).await;
        cx.line("command", &format!("git push origin {branch}"));
        let out = self
            .git
            .run(&[
                "push",
                "-q",
                "origin",
                &format!("{RESULT_REF}:refs/heads/{branch}"),
            ])
            .await
            .map_err(Outcome::failed)?;
        cx.say_stderr(&out.stderr).await;
        if !out.ok {
            return Err(Outcome::failed(format!(
                "pushing {branch} was rejected: {}",
                last_line(&out.stderr)
            )));
        }
        Ok(())
    }

    /// Opens a pull request of the task's branch into its base; answers its URL and number.
    pub async fn open_pull_request(
        &self,
        github: &Github,
        token: &SecretString,
        title: &str,
        body: &str,
    ) -> Result<(String, i64), GithubError> {
        github
            .create_pull(
                token,
                &self.repo,
                title,
                body,
                &self.branch,
                &self.base_branch,
            )
            .await
    }
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
    use super::diff_files;

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
