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

use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, instrument};

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
    /// The repository's default branch, as the listing named it (`None` when the server did not
    /// say).
    default_branch: Option<String>,
}

/// The checkout begun by [`TaskRunner::begin_checkout`]: the listing of the branches and a
/// clone of the likeliest one, both running.
pub(super) struct Checkout {
    listing: AbortOnDropHandle<StepResult<RemoteBranches>>,
    /// The `--branch` the begun clone asked for (`None`: the repository's default).
    guess: Option<String>,
    clone: AbortOnDropHandle<Result<crate::tasks::git::GitOutput, String>>,
}

/// `git clone` of `branch` (the remote's default when `None`) from `url` into `dir`: one branch,
/// no tags.
fn clone_args(branch: Option<&str>, url: &str, dir: &Path) -> Vec<String> {
    let mut args = vec![
        "clone".to_owned(),
        "--no-tags".to_owned(),
        "--single-branch".to_owned(),
    ];
    if let Some(branch) = branch {
        args.extend(["--branch".to_owned(), branch.to_owned()]);
    }
    args.extend([
        "--".to_owned(),
        url.to_owned(),
        dir.to_string_lossy().into_owned(),
    ]);
    args
}

/// A repository's branches, listed before the clone.
pub(super) struct RemoteBranches {
    /// Branch names (without `refs/heads/`); empty for a repository without commits.
    heads: Vec<String>,
    /// The default branch (where the remote's `HEAD` points), when the server says.
    default: Option<String>,
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

    /// Begins the checkout as soon as the token is known, while the turn's agent, environment
    /// and log are set up: lists the repository's branches (`git ls-remote`) and, at the same
    /// time, clones the branch the turn most likely works on (the task's branch on a follow-up,
    /// else the base branch, else the default), each a round trip to GitHub the other need not
    /// wait for. [`locate_branch`](Self::locate_branch) decides from the listing, and
    /// [`prepare_workspace`](Self::prepare_workspace) clones again when the guess was wrong (a
    /// follow-up whose branch was never pushed, a repository without commits). Dropping the
    /// checkout stops both.
    pub(super) async fn begin_checkout(
        &self,
        cx: &mut TurnContext,
        token: &SecretString,
    ) -> StepResult<Checkout> {
        let task = &cx.task;
        let settings = &self.inner.settings;
        let work_dir = settings.work_dir.clone();
        let dir = work_dir.join(&task.id);
        // A checkout left by an earlier process of this server goes first.
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::create_dir_all(&work_dir).await.map_err(|err| {
            Outcome::failed(format!("could not create the work directory: {err}"))
        })?;
        // Removed when the turn ends, whatever it got to.
        cx.checkout = Some(dir.clone());
        let github_url = settings.github_url.trim_end_matches('/');
        let git = HostGit::new(&dir, token, github_url);
        let url = format!("{github_url}/{}.git", task.repo);
        let repo = task.repo.clone();
        let listing = {
            let (git, url) = (git.clone(), url.clone());
            async move { remote_branches(&git, &url, &repo).await }
        };
        let guess = task.branch.clone().or_else(|| task.base_branch.clone());
        let args = clone_args(guess.as_deref(), &url, &dir);
        let clone = async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            git.run(&args).await
        };
        Ok(Checkout {
            listing: AbortOnDropHandle::new(tokio::spawn(listing.in_current_span())),
            guess,
            clone: AbortOnDropHandle::new(tokio::spawn(clone.in_current_span())),
        })
    }

    /// Finds what the turn clones from the listing of [`begin_checkout`](Self::begin_checkout):
    /// the task's branch when an earlier turn pushed it,
    /// otherwise the base branch (the repository's default when none was asked for). A base
    /// branch that does not exist ends the turn here, before any sandbox, naming it.
    #[instrument(skip_all, fields(task_id = %cx.task.id))]
    pub(super) async fn locate_branch(
        &self,
        cx: &mut TurnContext,
        token: &SecretString,
        checkout: &mut Checkout,
    ) -> StepResult<Source> {
        let task = &cx.task;
        let settings = &self.inner.settings;
        let dir = settings.work_dir.join(&task.id);
        let github_url = settings.github_url.trim_end_matches('/');
        let git = HostGit::new(&dir, token, github_url);
        let url = format!("{github_url}/{}.git", task.repo);
        // Everything drydock writes to GitHub goes through the task's redaction: the branch name
        // is made from the prompt.
        let branch = task
            .branch
            .clone()
            .unwrap_or_else(|| branch_name(&cx.redact(&task.prompt), &task.id));
        let RemoteBranches { heads, default } = (&mut checkout.listing)
            .await
            .map_err(|_| Outcome::failed("listing the repository's branches was interrupted"))??;
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
        Ok(Source {
            dir,
            git,
            url,
            branch,
            branch_existed,
            empty,
            default_branch: default,
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
        checkout: Checkout,
    ) -> StepResult<Workspace> {
        let task = cx.task.clone();
        let Source {
            dir,
            git,
            url,
            branch,
            branch_existed,
            empty,
            default_branch,
        } = source;
        let wanted = if branch_existed {
            Some(branch.clone())
        } else if empty {
            None
        } else {
            task.base_branch.clone()
        };
        let args = clone_args(wanted.as_deref(), &url, &dir);
        let dir_arg = dir.to_string_lossy().into_owned();
        cx.say("info", &format!("Cloning {}", task.repo)).await;
        cx.line(
            "command",
            &format!("git {}", args.join(" ").replace(&dir_arg, "repo")),
        );
        let interrupted = |_| Outcome::failed("cloning was interrupted");
        let begun = checkout.clone.await.map_err(interrupted)?;
        let out = if checkout.guess == wanted {
            begun
        } else {
            // The guess was another branch: its clone (ended by now) makes way.
            let _ = tokio::fs::remove_dir_all(&dir).await;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            git.run(&args).await
        };
        let out = out.map_err(Outcome::failed)?;
        cx.say_stderr(&out.stderr).await;
        if !out.ok {
            let detail = last_line(&out.stderr);
            return Err(Outcome::failed(format!(
                "cloning {} failed: {detail}",
                task.repo
            )));
        }
        if empty {
            let empty_tree = git
                .run(&["hash-object", "-t", "tree", "/dev/null"])
                .await
                .map_err(Outcome::failed)?
                .text();
            return self
                .first_commit_workspace(cx, git, token, empty_tree)
                .await;
        }
        // The start commit is read from the clone (a push since the listing counts); the base
        // branch's name is known from the task or the listing, so the task's branch is created
        // at the same time. Each is a git process the agent's start waits for.
        let base_branch = if branch_existed {
            Some(task.base_branch.clone().unwrap_or_default())
        } else {
            task.base_branch.clone().or(default_branch)
        };
        let (head, created) = tokio::join!(git.run(&["rev-parse", "HEAD"]), async {
            if branch_existed {
                return Ok(None);
            }
            git.run(&["checkout", "-q", "-b", &branch]).await.map(Some)
        });
        let start_sha = head.map_err(Outcome::failed)?.text();
        if let Some(out) = created.map_err(Outcome::failed)?
            && !out.ok
        {
            return Err(Outcome::failed(format!(
                "could not create the branch {branch}: {}",
                last_line(&out.stderr)
            )));
        }
        let base_branch = match base_branch {
            Some(base) => base,
            // The server did not name its default branch: it is the one the clone checked out
            // (still named by `origin/HEAD`).
            None => git
                .run(&["rev-parse", "--abbrev-ref", "origin/HEAD"])
                .await
                .map_err(Outcome::failed)?
                .text()
                .trim_start_matches("origin/")
                .to_owned(),
        };
        if !branch_existed {
            let _ = self
                .inner
                .store
                .set_task_branch(&task.id, &base_branch, &branch, &start_sha)
                .await;
        }
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
            // Diffs start from the start commit; the empty tree is only for a repository that
            // had none (see `first_commit`).
            empty_tree: String::new(),
            branch,
            branch_existed,
        })
    }
}

/// Lists the branches of the repository at `url` and where its `HEAD` points (`git ls-remote
/// --symref`, one request to the server).
async fn remote_branches(git: &HostGit, url: &str, repo: &str) -> StepResult<RemoteBranches> {
    let out = git
        .run(&["ls-remote", "--symref", "--", url, "HEAD", "refs/heads/*"])
        .await
        .map_err(Outcome::failed)?;
    if !out.ok {
        return Err(Outcome::failed(format!(
            "could not reach {repo}: {}",
            last_line(&out.stderr)
        )));
    }
    Ok(parse_remote_branches(&out.text()))
}

/// Reads `git ls-remote --symref` output: `ref: refs/heads/<name>\tHEAD` names the default
/// branch, `<sha>\trefs/heads/<name>` a branch; anything else (the `HEAD` line itself) is
/// skipped.
fn parse_remote_branches(listing: &str) -> RemoteBranches {
    let mut heads = Vec::new();
    let mut default = None;
    for line in listing.lines() {
        let Some((left, name)) = line.split_once('\t') else {
            continue;
        };
        if let Some(target) = left.strip_prefix("ref: ") {
            if name == "HEAD" {
                default = target.strip_prefix("refs/heads/").map(str::to_owned);
            }
        } else if let Some(branch) = name.strip_prefix("refs/heads/") {
            heads.push(branch.to_owned());
        }
    }
    RemoteBranches { heads, default }
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

#[cfg(test)]
mod tests {
    use super::parse_remote_branches;

    #[test]
    fn a_listing_names_the_branches_and_the_default_one() {
        let listing = "ref: refs/heads/trunk\tHEAD\n\
                       c18962c301ca4927e4a44b17216447e6ae82912c\tHEAD\n\
                       c18962c301ca4927e4a44b17216447e6ae82912c\trefs/heads/feature/x\n\
                       c18962c301ca4927e4a44b17216447e6ae82912c\trefs/heads/trunk\n";
        let found = parse_remote_branches(listing);
        assert_eq!(found.heads, ["feature/x", "trunk"]);
        assert_eq!(found.default.as_deref(), Some("trunk"));
        // An empty repository lists nothing; a server that does not say where HEAD points
        // leaves the default to the clone.
        let found = parse_remote_branches("");
        assert!(found.heads.is_empty() && found.default.is_none());
        let found = parse_remote_branches("c18962c3\trefs/heads/main\n");
        assert_eq!(found.heads, ["main"]);
        assert!(found.default.is_none());
    }
}
