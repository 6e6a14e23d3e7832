//! What drydock says on GitHub about a triggered task: a reaction when it accepts a request, a
//! comment with the task's link when it starts, one when a turn ends (status, pull request, a
//! short summary from the agent), and at most one reply per issue to people it ignores.
//!
//! Every text goes through a redactor first (the task's own when there is one: its keys, the
//! GitHub token, connector values; otherwise the well-known token shapes and the poster's
//! token), like everything else that leaves drydock. Posting happens in the background: GitHub
//! being slow never holds a webhook answer or the runner.

use crate::config::SecretString;
use crate::github::Github;
use crate::redact::{Redactor, SecretSet};
use crate::secrets::SecretBox;
use crate::state::AppState;
use crate::store::{Store, User};

/// Longest agent summary quoted in the end comment, characters.
const SUMMARY_CHARS: usize = 1200;

/// The user's GitHub token, opened.
async fn token_of(store: &Store, secrets: &SecretBox, user_id: &str) -> Option<SecretString> {
    let account = store.get_github_account(user_id).await.ok()??;
    secrets
        .open_str(&account.access_token_enc)
        .ok()
        .map(SecretString::new)
}

/// `text` redacted of the well-known shapes and `token`, or of the task's secrets when given.
fn redact(text: &str, redactor: Option<&Redactor>, token: &SecretString) -> String {
    let mut secrets = SecretSet::new();
    secrets.add("github-token", token.expose());
    let own = Redactor::new(secrets).ok();
    let text = match own.as_ref() {
        Some(own) => own.redact(text),
        // Without a redactor nothing may leave.
        None => {
            return "(this message could not be checked for secrets, so it is not shown)".into();
        }
    };
    match redactor {
        Some(task) => task.redact(&text),
        None => text,
    }
}

/// A request was accepted: react on the comment (or the issue), then link the task.
pub fn accepted(
    state: &AppState,
    user: &User,
    repo: &str,
    issue_number: i64,
    comment_id: Option<i64>,
    task_id: &str,
    follow_up: bool,
) {
    let state = state.clone();
    let user_id = user.id.clone();
    let repo = repo.to_owned();
    let link = format!("{}/tasks/{task_id}", state.public_url);
    tokio::spawn(async move {
        let Some(token) = token_of(&state.store, &state.secrets, &user_id).await else {
            return;
        };
        if let Err(err) = state
            .github
            .add_reaction(&token, &repo, issue_number, comment_id, "eyes")
            .await
        {
            tracing::warn!(error = %err, repo = %repo, "could not react on GitHub");
        }
        let text = if follow_up {
            format!("drydock continues the task on its branch: {link}")
        } else {
            format!("drydock started a task for this: {link}")
        };
        post(
            &state.github,
            &token,
            &repo,
            issue_number,
            &redact(&text, None, &token),
        )
        .await;
    });
}

/// A request was accepted but the task could not start.
pub fn could_not_start(state: &AppState, user: &User, repo: &str, issue_number: i64, reason: &str) {
    let state = state.clone();
    let user_id = user.id.clone();
    let repo = repo.to_owned();
    let reason = reason.to_owned();
    tokio::spawn(async move {
        let Some(token) = token_of(&state.store, &state.secrets, &user_id).await else {
            return;
        };
        let text = format!("drydock could not start a task: {reason}");
        post(
            &state.github,
            &token,
            &repo,
            issue_number,
            &redact(&text, None, &token),
        )
        .await;
    });
}

/// Someone drydock ignores mentioned it: reply once per issue, from the bot account when the
/// operator configured one (otherwise stay silent: there is nobody to post as).
pub async fn reply_once_to_stranger(state: &AppState, repo: &str, issue_number: i64, login: &str) {
    let Some(token) = state.config.github_bot_token.clone() else {
        return;
    };
    match state.store.first_reply_on_issue(repo, issue_number).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(err) => {
            tracing::warn!(error = %err, "could not record a reply");
            return;
        }
    }
    let github = state.github.clone();
    let repo = repo.to_owned();
    let text = format!(
        "Hi @{login}, drydock only takes requests from its users who can write to this repository, so it did nothing here. Ask a maintainer who uses drydock, or sign in to drydock first."
    );
    tokio::spawn(async move {
        post(
            &github,
            &token,
            &repo,
            issue_number,
            &redact(&text, None, &token),
        )
        .await;
    });
}

/// Marks drydock's own comments (which are posted as the user), so their webhooks never
/// trigger anything.
pub const OWN_COMMENT_MARKER: &str = "<!-- drydock:feedback -->";

/// `text` with every `@mention` defused (a zero-width space after the `@`), so quoting an
/// agent pings nobody on GitHub. (drydock's own comments are recognised by
/// [`OWN_COMMENT_MARKER`], not by this.)
fn defuse_mentions(text: &str) -> String {
    text.replace('@', "@\u{200B}")
}

async fn post(github: &Github, token: &SecretString, repo: &str, number: i64, text: &str) {
    let text = format!("{text}\n\n{OWN_COMMENT_MARKER}");
    if let Err(err) = github.comment_on_issue(token, repo, number, &text).await {
        tracing::warn!(error = %err, repo = %repo, number, "could not comment on GitHub");
    }
}

/// What the runner hands over when a turn ends.
#[derive(Debug, Clone)]
pub struct TurnEnd {
    /// The task.
    pub task_id: String,
    /// Its owner.
    pub user_id: String,
    /// Its title.
    pub title: String,
    /// `succeeded`, `failed`, `stopped` or `timed_out`.
    pub status: String,
    /// Why, already redacted.
    pub reason: String,
    /// The pull request, if one is open.
    pub pr_url: Option<String>,
}

/// A turn of a task ended: when the task came from GitHub, say so where it was asked for.
pub fn turn_ended(
    store: Store,
    secrets: SecretBox,
    github: Github,
    public_url: String,
    end: TurnEnd,
    redactor: Option<Redactor>,
) {
    tokio::spawn(async move {
        let thread = match store.get_task_github_thread(&end.task_id).await {
            Ok(Some(thread)) => thread,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, "could not read a task's GitHub thread");
                return;
            }
        };
        let Some(token) = token_of(&store, &secrets, &end.user_id).await else {
            return;
        };
        let summary = store
            .list_task_messages(&end.task_id)
            .await
            .ok()
            .and_then(|messages| messages.into_iter().rev().find(|m| m.role == "agent"))
            .map(|m| m.content);
        let mut text = format!(
            "drydock task **{}**: [{}]({}/tasks/{})\n",
            end.status.replace('_', " "),
            defuse_mentions(&end.title.replace(['[', ']'], "")),
            public_url,
            end.task_id
        );
        if let Some(pr) = &end.pr_url {
            text.push_str(&format!("\nPull request: {pr}\n"));
        }
        if !end.reason.is_empty() {
            text.push_str(&format!("\n{}\n", end.reason));
        }
        if let Some(summary) = summary.filter(|s| !s.trim().is_empty()) {
            let short: String = summary.trim().chars().take(SUMMARY_CHARS).collect();
            let more = if summary.trim().chars().count() > SUMMARY_CHARS {
                " …"
            } else {
                ""
            };
            let quoted: Vec<String> = defuse_mentions(&format!("{short}{more}"))
                .lines()
                .map(|l| format!("> {l}"))
                .collect();
            text.push_str(&format!(
                "\nThe agent's summary:\n\n{}\n",
                quoted.join("\n")
            ));
        }
        let text = redact(&text, redactor.as_ref(), &token);
        post(&github, &token, &thread.repo, thread.issue_number, &text).await;
    });
}

#[cfg(test)]
mod tests {
    use super::defuse_mentions;

    #[test]
    fn quoted_mentions_ping_nobody() {
        let quoted = defuse_mentions("done; ask @drydock or @alice");
        assert!(
            !quoted.contains("@drydock") && !quoted.contains("@alice"),
            "{quoted}"
        );
    }
}
