//! How a turn ends: its status and the human reason shown for it, decided here for every stage
//! (an exec's exit, a sandbox failure, a step cut short).

use std::time::Duration;

use drydock_agents::Verdict;
use drydock_sandbox::{ExecExit, ExitReason, SandboxError};

/// How a turn ended: the status recorded on the task and the reason shown with it.
#[derive(Debug)]
pub(super) struct Outcome {
    /// One of the task statuses (`succeeded`, `failed`, `stopped`, `timed_out`).
    pub status: &'static str,
    /// What happened, in words; redacted before it is stored.
    pub reason: String,
    /// The commit pushed, when one was.
    pub commit_sha: Option<String>,
    /// The pull request opened: its URL and number.
    pub pr: Option<(String, i64)>,
}

impl Outcome {
    /// A failure with its reason.
    pub fn failed(reason: impl Into<String>) -> Self {
        Self::ended("failed", reason)
    }

    /// An end with `status` and its reason.
    pub fn ended(status: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            commit_sha: None,
            pr: None,
        }
    }

    /// A turn that ended with nothing to push.
    pub fn no_changes(follow_up: bool) -> Self {
        Self::ended(
            "succeeded",
            if follow_up {
                "no changes in this turn, so nothing was pushed"
            } else {
                "no changes: the agent changed nothing, so nothing was pushed"
            },
        )
    }

    /// Whether the turn ran to its end (the sandbox may then be kept for a follow-up), rather
    /// than being stopped, timed out or shut down.
    pub fn ran_to_end(&self) -> bool {
        matches!(self.status, "succeeded" | "failed")
    }

    /// The kind of the last log line that reports this outcome.
    pub fn log_kind(&self) -> &'static str {
        if self.status == "succeeded" {
            "success"
        } else {
            "error"
        }
    }
}

/// What a stage answers: its result, or the outcome that ends the turn early.
pub(super) type StepResult<T> = Result<T, Outcome>;

/// The outcome of a stop arriving from outside the turn: the user, or the server shutting down.
pub(super) fn cancelled(shutting_down: bool) -> Outcome {
    if shutting_down {
        Outcome::failed("server shut down during the task")
    } else {
        Outcome::ended("stopped", "stopped by the user")
    }
}

/// The outcome of a turn that outlived its allowed duration.
pub(super) fn timed_out(allowed: Duration) -> Outcome {
    Outcome::ended(
        "timed_out",
        format!("took longer than the {} s allowed", allowed.as_secs()),
    )
}

/// A sandbox error in words a user can act on.
pub(super) fn sandbox_failure(err: &SandboxError) -> String {
    match err {
        SandboxError::ImageNotFound(image) => format!(
            "the sandbox image {image} is not on the Docker host; build it with sandbox/image/build-offline (or sandbox/image/Dockerfile) and set DRYDOCK_SANDBOX_IMAGE"
        ),
        SandboxError::ImageNotPulled { image, reason, .. } => format!(
            "the Kubernetes node could not pull the sandbox image {image} ({reason}); push it to a registry the nodes reach, or load it on every node"
        ),
        SandboxError::DaemonUnavailable { .. } => {
            "Docker is not reachable from the drydock server".to_owned()
        }
        other => format!("the sandbox failed: {other}"),
    }
}

/// A sandbox error as the outcome that ends the turn.
pub(super) fn sandbox_failed(err: &SandboxError) -> Outcome {
    Outcome::failed(sandbox_failure(err))
}

/// The outcome of an exec that did not succeed; `what` names it ("the agent", "committing the
/// changes"), `said` is the last meaningful line it printed (redacted), quoted after an exit
/// code because that is usually where a program says what went wrong.
pub(super) fn exit_outcome(exit: &ExecExit, what: &str, said: Option<&str>) -> Outcome {
    match exit {
        ExecExit::Code(code) => Outcome::failed(match said {
            Some(line) => format!("{what} {}: {line}", exit_code_words(*code)),
            None => format!("{what} {}", exit_code_words(*code)),
        }),
        ExecExit::OutOfMemory | ExecExit::SandboxEnded(ExitReason::OutOfMemory) => Outcome::failed(
            format!("{what} ran out of memory (the sandbox's memory limit)"),
        ),
        ExecExit::SandboxEnded(ExitReason::Deadline) => {
            Outcome::ended("timed_out", "the sandbox reached its deadline")
        }
        ExecExit::Cancelled | ExecExit::SandboxEnded(ExitReason::Stopped) => {
            Outcome::ended("stopped", "stopped")
        }
        ExecExit::SandboxEnded(reason) => {
            Outcome::failed(format!("the sandbox ended while {what} ran: {reason}"))
        }
        _ => Outcome::failed(format!("{what} ended unexpectedly")),
    }
}

/// What the agent's run means for the turn, from how its process exited and its CLI's own
/// verdict (`said` is the last meaningful line it printed, quoted in a failure): `Ok(None)` to
/// go on, `Ok(Some(warning))` to go on with a warning (the CLI reported
/// success but exited non-zero: its work is kept and pushed, and the reason says so), or the
/// outcome that ends the turn (the CLI reported an error, whatever its exit status; or it exited
/// non-zero without a verdict; or it was stopped, timed out or killed).
pub(super) fn judge_agent(
    exit: &ExecExit,
    verdict: Option<&Verdict>,
    said: Option<&str>,
) -> StepResult<Option<String>> {
    let ExecExit::Code(code) = exit else {
        return Err(exit_outcome(exit, "the agent", said));
    };
    match (verdict, *code) {
        (Some(Verdict::Failed(message)), 0) => Err(Outcome::failed(format!(
            "the agent reported an error: {message}"
        ))),
        (Some(Verdict::Failed(message)), code) => Err(Outcome::failed(format!(
            "the agent reported an error: {message} ({})",
            exit_code_words(code)
        ))),
        (_, 0) => Ok(None),
        (Some(Verdict::Succeeded), code) => Ok(Some(format!(
            "the agent reported success but {}",
            exit_code_words(code)
        ))),
        (_, _) => Err(exit_outcome(exit, "the agent", said)),
    }
}

/// "exited with code 3", or for a signal "was killed by SIGKILL (exit code 137)".
fn exit_code_words(code: i64) -> String {
    let signal = code
        .checked_sub(128)
        .filter(|n| *n > 0)
        .and_then(|n| i32::try_from(n).ok())
        .and_then(|n| nix::sys::signal::Signal::try_from(n).ok());
    match signal {
        Some(signal) => format!("was killed by {} (exit code {code})", signal.as_str()),
        None => format!("exited with code {code}"),
    }
}

/// The last non-blank line of a command's output, trimmed and at most 300 characters: the detail
/// a failure reason quotes.
pub(super) fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .chars()
        .take(300)
        .collect()
}

/// "30 min", "2 h", "45 s".
pub(super) fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// Why GitHub refused a push, in words, from git's standard error: the `[remote rejected]` or
/// `[rejected]` line's reason (a workflow file without the `workflow` scope, a protected branch,
/// a branch that moved), or the HTTP refusal. Says that the work is kept in the task's diff.
pub(super) fn push_refused(branch: &str, stderr: &str) -> String {
    let kept = "the changes are kept in the task's diff";
    let rejected = stderr
        .lines()
        .find(|l| l.contains("[remote rejected]") || l.contains("[rejected]"));
    let reason = rejected
        .and_then(|l| Some(&l[l.find(" (")? + 2..l.rfind(')')?]))
        .unwrap_or_default();
    if reason.contains("`workflow` scope") || reason.contains("`workflows` permission") {
        let file = reason
            .split('`')
            .nth(1)
            .filter(|f| f.contains(".github/workflows"))
            .unwrap_or("under .github/workflows");
        if reason.contains("`workflows` permission") {
            return format!(
                "GitHub refused the push of {branch}: the agent changed the workflow file {file}, and the GitHub App drydock signs in with lacks the `workflows` permission (its owner can grant it); {kept}"
            );
        }
        return format!(
            "GitHub refused the push of {branch}: the agent changed the workflow file {file}, and your GitHub sign-in does not allow drydock to change workflows (the `workflow` scope). Sign out and sign in again to grant it, then send a follow-up; {kept}"
        );
    }
    if reason.contains("protected branch") {
        return format!(
            "GitHub refused the push: {branch} is a protected branch ({reason}); {kept}"
        );
    }
    if reason.contains("fetch first") || reason.contains("non-fast-forward") {
        return format!(
            "GitHub refused the push: {branch} has commits drydock's work does not include (someone pushed to it meanwhile); {kept}"
        );
    }
    if !reason.is_empty() {
        return format!("GitHub refused the push of {branch}: {reason}; {kept}");
    }
    if stderr.contains("Permission to") || stderr.contains("returned error: 403") {
        return format!(
            "GitHub refused the push of {branch}: your account may not push to this repository; {kept}"
        );
    }
    if stderr.contains("returned error: 401") || stderr.contains("Authentication failed") {
        return format!(
            "GitHub did not accept your sign-in for the push of {branch}; sign in again, then send a follow-up ({kept})"
        );
    }
    format!("pushing {branch} failed: {}; {kept}", last_line(stderr))
}

#[cfg(test)]
mod push_refusal_tests {
    use super::push_refused;

    #[test]
    fn refusals_are_explained() {
        let workflow = "To https://github.com/o/r.git\n ! [remote rejected] refs/drydock/result -> drydock/x (refusing to allow an OAuth App to create or update workflow `.github/workflows/ci.yml` without `workflow` scope)\nerror: failed to push some refs to 'https://github.com/o/r.git'\n";
        let text = push_refused("drydock/x", workflow);
        assert!(text.contains(".github/workflows/ci.yml"), "{text}");
        assert!(text.contains("sign in again"), "{text}");
        let app = workflow
            .replace("an OAuth App", "a GitHub App")
            .replace("`workflow` scope", "`workflows` permission");
        assert!(push_refused("drydock/x", &app).contains("lacks the `workflows` permission"));
        let moved = " ! [rejected]        refs/drydock/result -> drydock/x (fetch first)\nerror: failed to push some refs\n";
        assert!(push_refused("drydock/x", moved).contains("someone pushed to it"));
        let other = " ! [remote rejected] a -> b (pre-receive hook declined)\n";
        assert!(push_refused("b", other).contains("pre-receive hook declined"));
    }
}
