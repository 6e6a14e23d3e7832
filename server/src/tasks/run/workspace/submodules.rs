//! What a clone alone leaves out: submodules and Git LFS content. Submodules on the GitHub drydock
//! signs in to are fetched on the host with the user's token (the token's header is scoped to
//! that URL, see `tasks::git`); any other is skipped, and the log says which and why. LFS content
//! is fetched when `git-lfs` is installed on the host; otherwise the log says the files are
//! pointers.

use tracing::instrument;

use crate::tasks::git::HostGit;
use crate::tasks::run::TaskRunner;
use crate::tasks::run::outcome::{Outcome, StepResult, last_line};
use crate::tasks::run::turn::TurnContext;

/// The first line of a Git LFS pointer file.
const LFS_POINTER: &str = "version https://git-lfs.github.com/spec/v1";

/// A submodule named in `.gitmodules`.
struct Submodule {
    name: String,
    path: String,
    /// Its URL, resolved against the repository's own (relative URLs are common).
    url: String,
}

impl TaskRunner {
    /// Fetches the checkout's submodules on the same GitHub, and its LFS content when it can.
    #[instrument(skip_all, fields(task_id = %cx.task.id))]
    pub(in crate::tasks::run) async fn fetch_submodules_and_lfs(
        &self,
        cx: &mut TurnContext,
        git: &HostGit,
    ) -> StepResult<()> {
        let github_url = self.inner.settings.github_url.trim_end_matches('/');
        if git.dir().join(".gitmodules").exists() {
            fetch_submodules(cx, git, github_url).await?;
        }
        fetch_lfs(cx, git).await;
        Ok(())
    }
}

async fn fetch_submodules(cx: &mut TurnContext, git: &HostGit, github_url: &str) -> StepResult<()> {
    // `init` only copies the (resolved) URLs into the checkout's configuration: no network.
    let out = git
        .run(&["submodule", "init"])
        .await
        .map_err(Outcome::failed)?;
    if !out.ok {
        cx.say(
            "error",
            &format!(
                "Submodules were not fetched: .gitmodules could not be read ({})",
                last_line(&out.stderr)
            ),
        )
        .await;
        return Ok(());
    }
    let submodules = list_submodules(git).await?;
    let mut fetch = Vec::new();
    for sub in &submodules {
        if let Some(url) = on_github(&sub.url, github_url) {
            if url != sub.url {
                // An SSH URL of the same GitHub: fetched over HTTPS, where the token works.
                let key = format!("submodule.{}.url", sub.name);
                let out = git
                    .run(&["config", "--local", &key, &url])
                    .await
                    .map_err(Outcome::failed)?;
                if !out.ok {
                    continue;
                }
            }
            fetch.push(sub.path.as_str());
        } else {
            cx.say(
                "info",
                &format!(
                    "Skipped the submodule {} ({}): drydock fetches submodules only from {github_url}, where it can sign in as you; the directory stays empty",
                    sub.path, sub.url
                ),
            )
            .await;
        }
    }
    if fetch.is_empty() {
        return Ok(());
    }
    cx.say(
        "info",
        &format!("Fetching the submodule(s) {}", fetch.join(", ")),
    )
    .await;
    // One at a time, so one the user cannot read leaves only its own directory empty.
    for path in &fetch {
        let args = [
            "-c",
            "protocol.allow=never",
            "-c",
            "protocol.http.allow=always",
            "-c",
            "protocol.https.allow=always",
            "submodule",
            "update",
            "--",
            path,
        ];
        cx.line("command", &format!("git submodule update -- {path}"));
        let out = git.run(&args).await.map_err(Outcome::failed)?;
        cx.say_stderr(&out.stderr).await;
        if !out.ok {
            // git's first fatal line says why; the last only that it gave up.
            let why = out
                .stderr
                .lines()
                .find_map(|l| l.strip_prefix("fatal: "))
                .map_or_else(|| last_line(&out.stderr), str::to_owned);
            cx.say(
                "error",
                &format!("Could not fetch the submodule {path} ({why}); the directory stays empty"),
            )
            .await;
        }
    }
    for path in &fetch {
        if git.dir().join(path).join(".gitmodules").exists() {
            cx.say(
                "info",
                &format!("The submodule {path} has submodules of its own; they were not fetched"),
            )
            .await;
        }
    }
    Ok(())
}

/// The URL to fetch `url` from when it names a repository on the GitHub at `github_url`: itself
/// when under that URL, its HTTPS form for the SSH spellings of the same host
/// (`git@host:owner/name.git`, `ssh://git@host/owner/name.git`); `None` for anywhere else.
fn on_github(url: &str, github_url: &str) -> Option<String> {
    if url.starts_with(&format!("{github_url}/")) {
        return Some(url.to_owned());
    }
    let host = github_url.split_once("://")?.1.split(['/', ':']).next()?;
    let path = url
        .strip_prefix(&format!("git@{host}:"))
        .or_else(|| url.strip_prefix(&format!("ssh://git@{host}/")))?
        .trim_start_matches('/');
    let valid = !path.is_empty()
        && !path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    valid.then(|| format!("{github_url}/{path}"))
}

/// The submodules `git submodule init` registered, with their resolved URLs and paths.
async fn list_submodules(git: &HostGit) -> StepResult<Vec<Submodule>> {
    let urls = git
        .run(&["config", "--local", "--get-regexp", r"^submodule\..*\.url$"])
        .await
        .map_err(Outcome::failed)?;
    let mut found = Vec::new();
    for line in urls.text().lines() {
        let Some((key, url)) = line.split_once(' ') else {
            continue;
        };
        let Some(name) = key
            .strip_prefix("submodule.")
            .and_then(|k| k.strip_suffix(".url"))
        else {
            continue;
        };
        let path = git
            .run(&[
                "config",
                "-f",
                ".gitmodules",
                "--get",
                &format!("submodule.{name}.path"),
            ])
            .await
            .map_err(Outcome::failed)?
            .text();
        found.push(Submodule {
            name: name.to_owned(),
            path: if path.is_empty() {
                name.to_owned()
            } else {
                path
            },
            url: url.trim().to_owned(),
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Fetches LFS content with `git lfs pull` when git-lfs is installed; otherwise says which files
/// are pointers.
async fn fetch_lfs(cx: &mut TurnContext, git: &HostGit) {
    let Ok(pointers) = git
        .run(&[
            "grep",
            "-l",
            "--no-color",
            "-I",
            "-e",
            &format!("^{LFS_POINTER}$"),
        ])
        .await
    else {
        return;
    };
    let files: Vec<String> = pointers.text().lines().map(str::to_owned).collect();
    if files.is_empty() {
        return;
    }
    let lfs = git.run(&["lfs", "version"]).await.is_ok_and(|out| out.ok);
    if lfs {
        cx.say("info", "Fetching Git LFS content").await;
        cx.line("command", "git lfs pull");
        if let Ok(out) = git.run(&["lfs", "pull"]).await {
            cx.say_stderr(&out.stderr).await;
            if out.ok {
                return;
            }
        }
    }
    let shown: Vec<&str> = files.iter().take(5).map(String::as_str).collect();
    let more = files.len().saturating_sub(shown.len());
    let why = if lfs {
        "Git LFS content could not be fetched"
    } else {
        "This repository stores files with Git LFS, but git-lfs is not installed on the drydock host"
    };
    cx.say(
        "info",
        &format!(
            "{why}: {} file(s) are LFS pointers in the sandbox, not their content: {}{}",
            files.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::on_github;

    #[test]
    fn submodules_of_the_same_github_are_recognised_in_each_spelling() {
        let gh = "https://github.com";
        for (url, want) in [
            (
                "https://github.com/o/lib.git",
                Some("https://github.com/o/lib.git"),
            ),
            (
                "git@github.com:o/lib.git",
                Some("https://github.com/o/lib.git"),
            ),
            (
                "ssh://git@github.com/o/lib",
                Some("https://github.com/o/lib"),
            ),
            ("https://github.com.evil.example/o/lib.git", None),
            ("https://gitlab.com/o/lib.git", None),
            ("git@github.com:../../etc/passwd", None),
            ("file:///srv/git/lib.git", None),
        ] {
            assert_eq!(on_github(url, gh).as_deref(), want, "{url}");
        }
    }
}
