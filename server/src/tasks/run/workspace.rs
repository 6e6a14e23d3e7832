//! The host workspace of a turn: everything the host does with git and GitHub for it — reading
//! the user's GitHub token (renewed when it expires), cloning (a repository without commits in
//! [`first_commit`], submodules and LFS content in [`submodules`]), importing the sandbox's bundle
//! with the fast-forward check, diffing ([`diff`]), the secret check before a push
//! ([`secret_check`]), pushing, and opening the pull request (or finding the one already open).
//! The token stays on the host (see `tasks::git`).

mod diff;
mod first_commit;
mod secret_check;
mod submodules;

use std::path::{Path, PathBuf};

use tracing::instrument;

use super::TaskRunner;
use super::outcome::{Outcome, StepResult, last_line, push_refused};
use super::turn::TurnContext;
use crate::config::SecretString;
use crate::github::{Github, GithubError, is_pull_already_open};
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
    /// Commit the turn starts from (the branch's head on GitHub, or the base's); empty when
    /// the repository has no commits yet.
    pub start_sha: String,
    /// The empty tree's id, which diffs start from when there is no commit to start from.
    empty_tree: String,
    /// Branch the work is pushed to.
    pub branch: String,
    /// An earlier turn had pushed the branch.
    pub branch_existed: bool,
}

/// What a turn clones, found before the clone (and before any sandbox).
pub(super) struct Source {
    /// Where the checkout goes.
    dir: PathBuf,
    git: HostGit,
    /// The repository's clone URL.
    url: String,
    /// Branch the work is pushed to.
    branch: String,
    /// An earlier turn had pushed the branch.
    branch_existed: bool,
    /// The repository has no commits yet.
    empty: bool,
}

impl TaskRunner {
    /// The user's GitHub token, renewed first when it has expired or expires within a minute;
    /// one that cannot be had ends the turn (before any sandbox), asking to sign in again.
    pub(super) async fn github_token(&self, task: &Task) -> StepResult<SecretString> {
        self.inner
            .tokens
            .current(&task.user_id)
            .await
            .map_err(|err| Outcome::failed(err.to_string()))
    }

    /// Finds what the turn clones: the task's branch when an earlier turn pushed it, otherwise
    /// the base branch (the repository's default when none was asked for). A base branch that
    /// does not exist ends the turn here, before any sandbox, naming it.
    #[instrument(skip_all, fields(task_id = %cx.task.id))]
    pub(super) async fn locate_branch(
        &self,
        cx: &mut TurnContext,
        token: &SecretString,
    ) -> StepResult<Source> {
        let task = &cx.task;
        let settings = &self.inner.settings;
        let work_dir = &settings.work_dir;
        let dir = work_dir.join(&task.id);
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::create_dir_all(work_dir).await.map_err(|err| {
            Outcome::failed(format!("could not create the work directory: {err}"))
        })?;
        let github_url = settings.github_url.trim_end_matches('/');
        let git = HostGit::new(&dir, token, github_url);
        let url = format!("{github_url}/{}.git", task.repo);
        // Everything drydock writes to GitHub goes through the task's redaction: the branch name
        // is made from the prompt.
        let branch = task
            .branch
            .clone()
            .unwrap_or_else(|| branch_name(&cx.redact(&task.prompt), &task.id));
        let heads = remote_heads(&git, &url, &task.repo).await?;
        let branch_existed = task.branch.is_some() && heads.contains(&branch);
        let empty = heads.is_empty();
        if !empty
            && !branch_existed
            && let Some(base) = task.base_branch.as_deref()
            && !heads.iter().any(|h| h == base)
        {
            return Err(Outcome::failed(format!(
                "the base branch {base} does not exist on {}",
                task.repo
            )));
        }
        // A repository without commits has only the default branch GitHub reports.
        if empty
            && let Some(base) = task.base_branch.as_deref()
            && let Some(default) = self.reported_default_branch(token, &task.repo).await
            && base != default
        {
            return Err(first_commit::no_base_yet(base, &task.repo));
        }
        cx.checkout = Some(dir.clone());
        Ok(Source {
            dir,
            git,
            url,
            branch,
            branch_existed,
            empty,
        })
    }

    /// Prepares the workspace from what [`locate_branch`](Self::locate_branch) found: clones the
    /// task's branch, or the base branch with the task's branch created on it. A repository
    /// without commits is checked out on its default branch (as GitHub reports it), where the
    /// turn's work becomes the first commit.
    #[instrument(skip_all, fields(task_id = %cx.task.id))]
    pub(super) async fn prepare_workspace(
        &self,
        cx: &mut TurnContext,
        token: &SecretString,
        source: Source,
    ) -> StepResult<Workspace> {
        let task = cx.task.clone();
        let Source {
            dir,
            git,
            url,
            branch,
            branch_existed,
            empty,
        } = source;
        let dir_arg = dir.to_string_lossy().into_owned();
        let mut args = vec!["clone", "--no-tags", "--single-branch"];
        if branch_existed {
            args.extend(["--branch", branch.as_str()]);
        } else if let (false, Some(base)) = (empty, task.base_branch.as_deref()) {
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
        // Three read-only questions about the clone, asked at once: each is a git process, and
        // the agent's start waits for all of them.
        let (empty_tree, head, current) = tokio::join!(
            git.run(&["hash-object", "-t", "tree", "/dev/null"]),
            git.run(&["rev-parse", "HEAD"]),
            git.run(&["symbolic-ref", "--short", "HEAD"]),
        );
        let empty_tree = empty_tree.map_err(Outcome::failed)?.text();
        if empty {
            return self
                .first_commit_workspace(cx, git, token, empty_tree)
                .await;
        }
        let start_sha = head.map_err(Outcome::failed)?.text();
        let base_branch = if branch_existed {
            task.base_branch.clone().unwrap_or_default()
        } else {
            let base_branch = current.map_err(Outcome::failed)?.text();
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
        self.fetch_submodules_and_lfs(cx, &git).await?;
        Ok(Workspace {
            git,
            repo: task.repo.clone(),
            base_branch,
            start_sha,
            empty_tree,
            branch,
            branch_existed,
        })
    }
}

/// The branch names of the repository at `url` (none for a repository without commits).
async fn remote_heads(git: &HostGit, url: &str, repo: &str) -> StepResult<Vec<String>> {
    let out = git
        .run(&["ls-remote", "--heads", "--", url])
        .await
        .map_err(Outcome::failed)?;
    if !out.ok {
        return Err(Outcome::failed(format!(
            "could not reach {repo}: {}",
            last_line(&out.stderr)
        )));
    }
    Ok(out
        .text()
        .lines()
        .filter_map(|l| l.split('\t').nth(1)?.strip_prefix("refs/heads/"))
        .map(str::to_owned)
        .collect())
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
        let ancestor = if self.start_sha.is_empty() {
            true
        } else {
            self.git
                .run(&["merge-base", "--is-ancestor", &self.start_sha, RESULT_REF])
                .await
                .map_err(Outcome::failed)?
                .ok
        };
        if !ancestor {
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

    /// Where diffs of this turn start: the start commit, or the empty tree when the repository
    /// had no commits.
    pub fn diff_base(&self) -> &str {
        if self.start_sha.is_empty() {
            &self.empty_tree
        } else {
            &self.start_sha
        }
    }

    /// Whether the work goes straight to the base branch (a repository that had no commits), so
    /// there is no pull request to open.
    pub fn on_base_branch(&self) -> bool {
        self.branch == self.base_branch
    }

    /// Authenticates later git commands with `token` (renewed since the clone).
    pub fn set_token(&mut self, token: &SecretString) {
        self.git.set_token(token);
    }

    /// Pushes the imported work to the task's branch on GitHub; a refusal is explained in words
    /// (see [`push_refused`]).
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
            return Err(Outcome::failed(push_refused(branch, &out.stderr)));
        }
        Ok(())
    }

    /// Opens a pull request of the task's branch into its base; answers its URL and number, and
    /// whether it was already open (GitHub answers 422 when a pull request for the branch is open,
    /// made by hand or by an earlier turn whose answer was lost: that one is then recorded).
    pub async fn open_pull_request(
        &self,
        github: &Github,
        token: &SecretString,
        title: &str,
        body: &str,
    ) -> Result<(String, i64, bool), GithubError> {
        let created = github
            .create_pull(
                token,
                &self.repo,
                title,
                body,
                &self.branch,
                &self.base_branch,
            )
            .await;
        match created {
            Ok((url, number)) => Ok((url, number, false)),
            Err(err) if is_pull_already_open(&err) => {
                match github
                    .open_pull_for(token, &self.repo, &self.branch)
                    .await?
                {
                    Some((url, number)) => Ok((url, number, true)),
                    None => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }
}
