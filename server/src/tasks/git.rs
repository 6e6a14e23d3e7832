//! git on the host: clone, fetch the sandbox's bundle, inspect, push. The user's GitHub token
//! reaches git only through the environment of the git process (`GIT_CONFIG_*` setting an
//! `http.<GitHub URL>.extraHeader`): never argv, a URL, `.git/config` or a file, and never the
//! sandbox. The header is scoped to the GitHub URL, so git never sends it to another host a
//! repository names (a submodule, an LFS server, a redirect).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::config::SecretString;

/// Longest one git command may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(600);

/// A git command's result.
#[derive(Debug)]
pub struct GitOutput {
    /// Exit status was zero.
    pub ok: bool,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error, for the log (the caller redacts).
    pub stderr: String,
}

impl GitOutput {
    /// Standard output as trimmed text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_owned()
    }
}

/// git on the host for one task: a checkout directory and the credentials to reach GitHub.
#[derive(Clone)]
pub struct HostGit {
    dir: PathBuf,
    /// `http.<GitHub URL>/.extraHeader`: the configuration key the header is set under.
    header_key: String,
    auth_header: SecretString,
}

impl std::fmt::Debug for HostGit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostGit")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl HostGit {
    /// git in `dir` authenticating as the owner of `token` to URLs under `github_url` (and to
    /// no other).
    pub fn new(dir: &Path, token: &SecretString, github_url: &str) -> Self {
        Self {
            dir: dir.to_owned(),
            header_key: format!("http.{}/.extraHeader", github_url.trim_end_matches('/')),
            auth_header: auth_header(token),
        }
    }

    /// Authenticates later commands with `token` (after a refresh).
    pub fn set_token(&mut self, token: &SecretString) {
        self.auth_header = auth_header(token);
    }

    /// The checkout.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs git with `args` (in the checkout, or in its parent for a clone).
    pub async fn run(&self, args: &[&str]) -> Result<GitOutput, String> {
        let cwd = if self.dir.exists() {
            self.dir.clone()
        } else {
            self.dir.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let mut cmd = tokio::process::Command::new("git");
        cmd.args(args)
            .current_dir(cwd)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", &self.header_key)
            .env("GIT_CONFIG_VALUE_0", self.auth_header.expose())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|err| format!("could not run git: {err}"))?;
        let output = tokio::time::timeout(GIT_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| "git took longer than 10 minutes".to_owned())?
            .map_err(|err| format!("git failed: {err}"))?;
        Ok(GitOutput {
            ok: output.status.success(),
            stdout: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

fn auth_header(token: &SecretString) -> SecretString {
    let basic = B64.encode(format!("x-access-token:{}", token.expose()));
    SecretString::new(format!("Authorization: Basic {basic}"))
}

/// A branch name for a task: `drydock/<slug of the prompt>-<6 chars of the id>`.
pub fn branch_name(prompt: &str, task_id: &str) -> String {
    let mut slug = String::new();
    for word in prompt
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if slug.len() + word.len() + 1 > 40 {
            break;
        }
        if !slug.is_empty() {
            slug.push('-');
        }
        slug.push_str(&word.to_ascii_lowercase());
    }
    if slug.is_empty() {
        slug.push_str("task");
    }
    let short: String = task_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(6)
        .collect();
    format!("drydock/{slug}-{short}")
}

#[cfg(test)]
mod tests {
    use super::{HostGit, branch_name};
    use crate::config::SecretString;

    #[tokio::test]
    async fn the_token_is_sent_to_the_github_url_only() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let git = HostGit::new(
            dir.path(),
            &SecretString::new("gho_example"),
            "http://127.0.0.1:9/",
        );
        let header_for = |url: &'static str| {
            let git = &git;
            async move {
                git.run(&["config", "--get-urlmatch", "http.extraHeader", url])
                    .await
                    .expect("git runs")
                    .text()
            }
        };
        assert!(
            header_for("http://127.0.0.1:9/alice/demo.git")
                .await
                .starts_with("Authorization: Basic ")
        );
        for other in [
            "http://127.0.0.1:10/alice/demo.git",
            "https://127.0.0.1:9/alice/demo.git",
            "http://lfs.example/alice/demo.git/info/lfs",
        ] {
            assert_eq!(header_for(other).await, "", "{other}");
        }
    }

    #[test]
    fn branch_names_are_slugs_with_the_task_id() {
        assert_eq!(
            branch_name("Fix the README typo!", "abc123-ffff"),
            "drydock/fix-the-readme-typo-abc123"
        );
        assert_eq!(branch_name("¿¿¿", "0d9f8e7a"), "drydock/task-0d9f8e");
        let long = branch_name(&"word ".repeat(40), "a1b2c3d4");
        assert!(long.len() <= "drydock/".len() + 41 + 7, "{long}");
    }
}
