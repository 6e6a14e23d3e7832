//! The check before a push: no added line and no commit message or name of the turn's commits
//! may hold one of the task's secrets (or its base64) or a well-known token shape. A refusal
//! names the file and line (or the commit), never the value. Fails closed when git cannot say.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};

use super::{RESULT_REF, Workspace};
use crate::config::SecretString;
use crate::redact::scan::{describe_kind, token_kind_in};
use crate::tasks::run::outcome::{Outcome, StepResult};

/// Where a secret was found and what it looked like.
struct Finding {
    /// "config.yml line 3", "the message or names of commit 1a2b3c4d".
    place: String,
    /// "one of this task's secrets", "a GitHub token".
    what: &'static str,
}

impl Workspace {
    /// Refuses to push when the turn's work holds a secret of the task or a token shape.
    pub async fn refuse_secrets(&self, secrets: &[SecretString]) -> StepResult<()> {
        let range = format!("{}..{RESULT_REF}", self.diff_base());
        let diff = self
            .git
            .run(&[
                "-c",
                "core.quotePath=false",
                "diff",
                "-U0",
                "--no-color",
                "--no-ext-diff",
                &range,
            ])
            .await
            .map_err(Outcome::failed)?;
        // The agent may have committed itself: its messages and names are pushed too.
        let log_range = if self.start_sha.is_empty() {
            RESULT_REF.to_owned()
        } else {
            format!("{}..{RESULT_REF}", self.start_sha)
        };
        let log = self
            .git
            .run(&[
                "log",
                "--format=%H%x00%an%n%ae%n%cn%n%ce%n%B%x1e",
                &log_range,
            ])
            .await
            .map_err(Outcome::failed)?;
        if !diff.ok || !log.ok {
            return Err(Outcome::failed(
                "could not check the changes for secrets; refusing to push",
            ));
        }
        let needles: Vec<String> = secrets
            .iter()
            .map(SecretString::expose)
            .filter(|v| v.len() >= 8)
            .flat_map(|v| [v.to_owned(), B64.encode(v), URL_SAFE_NO_PAD.encode(v)])
            .collect();
        let check = |place: &dyn Fn() -> String, text: &str| -> StepResult<Option<Finding>> {
            if needles.iter().any(|n| text.contains(n.as_str())) {
                return Ok(Some(Finding {
                    place: place(),
                    what: "one of this task's secrets (an API key or token)",
                }));
            }
            match token_kind_in(text) {
                Ok(Some(kind)) => Ok(Some(Finding {
                    place: place(),
                    what: describe_kind(kind),
                })),
                Ok(None) => Ok(None),
                Err(_) => Err(Outcome::failed(
                    "could not check the changes for secrets; refusing to push",
                )),
            }
        };
        let patch = String::from_utf8_lossy(&diff.stdout);
        for path in new_paths(&patch) {
            if let Some(found) = check(&|| "a file name".to_owned(), path)? {
                return Err(refused(&found));
            }
        }
        for (path, line, text) in added_lines(&patch) {
            if let Some(found) = check(&|| format!("{path} line {line}"), text)? {
                return Err(refused(&found));
            }
        }
        for entry in String::from_utf8_lossy(&log.stdout).split('\u{1e}') {
            let Some((sha, text)) = entry.trim_start().split_once('\0') else {
                continue;
            };
            let short = &sha[..sha.len().min(12)];
            let place = || format!("the message or author of commit {short}");
            if let Some(found) = check(&place, text)? {
                return Err(refused(&found));
            }
        }
        Ok(())
    }
}

fn refused(found: &Finding) -> Outcome {
    Outcome::failed(format!(
        "refused to push: {} contains {}; remove it (and revoke it if it is real), then ask again",
        found.place, found.what
    ))
}

/// The paths of the files a patch adds or changes (its `+++ b/` headers).
fn new_paths(patch: &str) -> Vec<&str> {
    added_lines_and_paths(patch).1
}

/// The added lines of a `git diff -U0` patch as (path, line number in the new file, text).
fn added_lines(patch: &str) -> Vec<(String, u64, &str)> {
    added_lines_and_paths(patch).0
}

/// The added lines of a `git diff -U0` patch as (path, line number in the new file, text), and
/// the paths of its `+++` headers.
fn added_lines_and_paths(patch: &str) -> (Vec<(String, u64, &str)>, Vec<&str>) {
    let mut out = Vec::new();
    let mut paths = Vec::new();
    let mut path = String::new();
    let (mut old_left, mut new_left, mut line_no) = (0u64, 0u64, 0u64);
    for line in patch.lines() {
        if old_left > 0 || new_left > 0 {
            if let Some(text) = line.strip_prefix('+') {
                out.push((path.clone(), line_no, text));
                line_no += 1;
                new_left = new_left.saturating_sub(1);
            } else if line.starts_with('-') {
                old_left = old_left.saturating_sub(1);
            } else if line.starts_with(' ') {
                line_no += 1;
                old_left = old_left.saturating_sub(1);
                new_left = new_left.saturating_sub(1);
            }
            continue;
        }
        if let Some(name) = line.strip_prefix("+++ ") {
            let name = name.strip_prefix("b/").unwrap_or(name);
            paths.push(name);
            path = name.to_owned();
        } else if let Some(hunk) = line.strip_prefix("@@ ") {
            // `@@ -a[,b] +c[,d] @@`: b old lines and d new lines follow, the first new one is c.
            let mut ranges = hunk.split(' ');
            let count = |r: Option<&str>| -> (u64, u64) {
                let r = r.unwrap_or_default();
                let mut parts = r[1.min(r.len())..].split(',');
                let start = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let count = parts.next().and_then(|s| s.parse().ok()).unwrap_or(1);
                (start, count)
            };
            let (_, old) = count(ranges.next());
            let (start, new) = count(ranges.next());
            (old_left, new_left, line_no) = (old, new, start);
        }
    }
    (out, paths)
}

#[cfg(test)]
mod tests {
    use super::{added_lines, new_paths};

    #[test]
    fn added_lines_carry_their_file_and_line() {
        let patch = "diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -2 +2,2 @@\n-old\n+new\n++++ not a header\ndiff --git a/n.yml b/n.yml\nnew file mode 100644\n--- /dev/null\n+++ b/n.yml\n@@ -0,0 +1 @@\n+key: 1\n";
        let lines = added_lines(patch);
        assert_eq!(
            lines,
            vec![
                ("a.txt".to_owned(), 2, "new"),
                ("a.txt".to_owned(), 3, "+++ not a header"),
                ("n.yml".to_owned(), 1, "key: 1"),
            ]
        );
        assert_eq!(new_paths(patch), vec!["a.txt", "n.yml"]);
    }
}
