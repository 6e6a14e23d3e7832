//! Triggers from where people already work: GitHub webhooks (`POST /webhooks/github`).
//!
//! A delivery is checked (`X-Hub-Signature-256`), recorded once per `X-GitHub-Delivery` (a
//! redelivery answers the first outcome and starts nothing), then judged: an issue or pull
//! request comment mentioning `@handle`, or an issue given the trigger label, starts a task as
//! the drydock user who asked (matched by GitHub user id, with write access to the repository,
//! asked of GitHub with their own token); a comment on a pull request drydock opened continues
//! that task. Everyone else is ignored. What happened is kept for the status page
//! (`/settings/webhooks`).

pub mod feedback;
pub mod prompt;
pub mod signature;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::state::AppState;
use crate::store::{DeliveryOutcome, NewDelivery, User, WebhookDelivery, now_ms};
use crate::tasks::CreateTask;

/// How long a refused (unsigned) delivery stays in the status view, ms.
const REJECTED_KEPT_MS: i64 = 86_400_000;

/// Routes of this module.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/webhooks/github", axum::routing::post(github_webhook))
}

/// What drydock answers GitHub (and shows in the delivery's "Response" tab).
#[derive(Debug, Serialize)]
struct Answer {
    outcome: String,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_id: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// The outcome of handling one delivery.
#[derive(Debug, Clone)]
struct Handled {
    outcome: &'static str,
    detail: String,
    user_id: Option<String>,
    task_id: Option<String>,
}

impl Handled {
    fn ignored(detail: impl Into<String>) -> Self {
        Handled {
            outcome: "ignored",
            detail: detail.into(),
            user_id: None,
            task_id: None,
        }
    }

    fn for_user(mut self, user: &User) -> Self {
        self.user_id = Some(user.id.clone());
        self
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `POST /webhooks/github`.
async fn github_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = state.config.github_webhook_secret.as_ref() else {
        return AppError::Unavailable(
            "GitHub webhooks are not set up on this server (DRYDOCK_GITHUB_WEBHOOK_SECRET)".into(),
        )
        .into_response();
    };
    let event: String = header(&headers, "x-github-event")
        .unwrap_or("unknown")
        .chars()
        .take(64)
        .collect();
    let delivery: Option<String> = header(&headers, "x-github-delivery")
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.chars().take(100).collect());
    let expires_at = now_ms() + i64::from(state.config.webhook_receipt_days.max(1)) * 86_400_000;
    if let Err(err) = state.store.prune_deliveries(now_ms()).await {
        tracing::warn!(error = %err, "could not prune old webhook deliveries");
    }
    if !signature::verify(
        secret.expose().as_bytes(),
        &body,
        header(&headers, "x-hub-signature-256"),
    ) {
        // Never the body: it is unauthenticated input.
        tracing::warn!(event = %event, delivery = ?delivery, body_bytes = body.len(), "GitHub webhook refused: bad or missing signature");
        let _ = state
            .store
            .record_rejected_delivery(&NewDelivery {
                delivery_id: delivery.as_deref(),
                event: &event,
                outcome: "bad_signature",
                detail: "the X-Hub-Signature-256 header is missing or does not match the secret",
                // Anyone can send these: keep them a day, not as long as real receipts.
                expires_at: now_ms() + REJECTED_KEPT_MS,
                ..NewDelivery::default()
            })
            .await;
        return AppError::Rejected(
            "the X-Hub-Signature-256 header is missing or does not match the webhook secret".into(),
        )
        .into_response();
    }
    let Some(delivery) = delivery else {
        return AppError::BadRequest("the X-GitHub-Delivery header is missing".into())
            .into_response();
    };
    let payload: Payload = match serde_json::from_slice(&body) {
        Ok(payload) => payload,
        Err(_) => {
            return AppError::BadRequest("the body is not a GitHub webhook payload".into())
                .into_response();
        }
    };
    let repo = payload.repository.as_ref().map(|r| r.full_name.as_str());
    let sender = payload.sender.as_ref().map(|s| s.login.as_str());
    let claimed = state
        .store
        .claim_delivery(&NewDelivery {
            delivery_id: Some(&delivery),
            event: &event,
            outcome: "processing",
            detail: "being handled",
            repo,
            sender,
            expires_at,
        })
        .await;
    let row_id = match claimed {
        Ok(Some(id)) => id,
        Ok(None) => return answer_duplicate(&state, &delivery, expires_at).await,
        Err(err) => return AppError::from(err).into_response(),
    };
    tracing::info!(event = %event, delivery = %delivery, repo = ?repo, sender = ?sender, "GitHub webhook received");
    let handled = match handle(&state, &event, &payload).await {
        Ok(handled) => handled,
        Err(failure) => failure,
    };
    let done = DeliveryOutcome {
        outcome: handled.outcome,
        detail: &handled.detail,
        user_id: handled.user_id.as_deref(),
        task_id: handled.task_id.as_deref(),
    };
    if let Err(err) = state.store.finish_delivery(&row_id, &done).await {
        tracing::error!(error = %err, "could not record a webhook delivery's outcome");
    }
    tracing::info!(delivery = %delivery, outcome = handled.outcome, detail = %handled.detail, task_id = ?handled.task_id, "GitHub webhook handled");
    (
        StatusCode::OK,
        Json(Answer {
            outcome: handled.outcome.into(),
            detail: handled.detail,
            task_id: handled.task_id,
            duplicate: false,
        }),
    )
        .into_response()
}

async fn answer_duplicate(state: &AppState, delivery: &str, expires_at: i64) -> Response {
    let first: WebhookDelivery = match state.store.get_delivery_receipt(delivery).await {
        Ok(Some(first)) => first,
        Ok(None) => {
            return AppError::Conflict("this delivery is being handled; try again".into())
                .into_response();
        }
        Err(err) => return AppError::from(err).into_response(),
    };
    if let Err(err) = state
        .store
        .record_duplicate_delivery(&first, expires_at)
        .await
    {
        tracing::warn!(error = %err, "could not record a redelivery");
    }
    tracing::info!(delivery = %delivery, first_outcome = %first.outcome, "GitHub webhook redelivered; answering the first outcome");
    (
        StatusCode::OK,
        Json(Answer {
            outcome: first.outcome,
            detail: first.detail,
            task_id: first.task_id,
            duplicate: true,
        }),
    )
        .into_response()
}

/// The parts of GitHub's payloads drydock reads (`issue_comment`, `issues`).
#[derive(Debug, Deserialize)]
struct Payload {
    action: Option<String>,
    repository: Option<PayloadRepo>,
    sender: Option<PayloadUser>,
    issue: Option<PayloadIssue>,
    comment: Option<PayloadComment>,
    label: Option<PayloadLabel>,
}

#[derive(Debug, Deserialize)]
struct PayloadRepo {
    full_name: String,
}

#[derive(Debug, Deserialize)]
struct PayloadUser {
    id: i64,
    login: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PayloadIssue {
    number: i64,
    title: String,
    body: Option<String>,
    html_url: String,
    pull_request: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct PayloadComment {
    id: i64,
    body: Option<String>,
    html_url: String,
    user: PayloadUser,
}

#[derive(Debug, Deserialize)]
struct PayloadLabel {
    name: String,
}

/// What a trigger asks for, once the event is understood.
struct Request<'a> {
    repo: &'a str,
    issue: &'a PayloadIssue,
    /// Who asked.
    actor: &'a PayloadUser,
    /// The comment that asked, if a comment did.
    comment: Option<&'a PayloadComment>,
    /// The request text and agent, for a mention.
    mention: Option<prompt::Mention>,
}

async fn handle(state: &AppState, event: &str, payload: &Payload) -> Result<Handled, Handled> {
    let Some(repo) = payload.repository.as_ref().map(|r| r.full_name.as_str()) else {
        return Ok(Handled::ignored("no repository in the payload"));
    };
    let action = payload.action.as_deref().unwrap_or_default();
    let request = match event {
        "ping" => return Ok(Handled::ignored("ping: the webhook is set up")),
        "issue_comment" => {
            if action != "created" {
                return Ok(Handled::ignored(format!(
                    "comment {action}: only new comments count"
                )));
            }
            let (Some(issue), Some(comment)) = (&payload.issue, &payload.comment) else {
                return Ok(Handled::ignored("no issue or comment in the payload"));
            };
            if comment.user.kind.as_deref() == Some("Bot") {
                return Ok(Handled::ignored("comment by a bot"));
            }
            if comment
                .body
                .as_deref()
                .is_some_and(|b| b.contains(feedback::OWN_COMMENT_MARKER))
            {
                return Ok(Handled::ignored("drydock's own comment"));
            }
            let text = prompt::visible_text(comment.body.as_deref().unwrap_or_default());
            let Some(mention) = prompt::find_mention(&text, &state.config.github_handle, |w| {
                state.agents.get(w).is_ok()
            }) else {
                return Ok(Handled::ignored(format!(
                    "the comment does not mention @{}",
                    state.config.github_handle
                )));
            };
            Request {
                repo,
                issue,
                actor: &comment.user,
                comment: Some(comment),
                mention: Some(mention),
            }
        }
        "issues" => {
            let label = payload.label.as_ref().map(|l| l.name.as_str());
            if action != "labeled" || label != Some(state.config.github_trigger_label.as_str()) {
                return Ok(Handled::ignored(format!(
                    "issue {action}: only the label {:?} starts a task",
                    state.config.github_trigger_label
                )));
            }
            let (Some(issue), Some(sender)) = (&payload.issue, &payload.sender) else {
                return Ok(Handled::ignored("no issue or sender in the payload"));
            };
            Request {
                repo,
                issue,
                actor: sender,
                comment: None,
                mention: None,
            }
        }
        other => return Ok(Handled::ignored(format!("event {other} is not a trigger"))),
    };
    let user = authorize(state, &request).await?;
    let started = start_or_continue(state, &user, &request).await;
    started
        .map(|h| h.for_user(&user))
        .map_err(|h| h.for_user(&user))
}

/// The drydock user behind the request, if they may run tasks on the repository.
async fn authorize(state: &AppState, request: &Request<'_>) -> Result<User, Handled> {
    let ignored = |why: &str| Handled::ignored(why.to_owned());
    let user = match state.store.get_user_by_github_id(request.actor.id).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            feedback::reply_once_to_stranger(
                state,
                request.repo,
                request.issue.number,
                &request.actor.login,
            )
            .await;
            return Err(ignored(&format!(
                "@{} is not a drydock user",
                request.actor.login
            )));
        }
        Err(err) => return Err(failed(&err.to_string())),
    };
    let token = crate::repos::github_token(state, &user.id)
        .await
        .map_err(|_| {
            ignored(&format!(
                "drydock has no GitHub sign-in for @{}",
                user.login
            ))
        })?;
    match state.github.repo_permissions(&token, request.repo).await {
        Ok(perms) if perms.push || perms.admin => Ok(user),
        Ok(_) | Err(crate::github::GithubError::NotFound) => {
            feedback::reply_once_to_stranger(
                state,
                request.repo,
                request.issue.number,
                &request.actor.login,
            )
            .await;
            Err(ignored(&format!(
                "@{} has no write access to {}",
                user.login, request.repo
            ))
            .for_user(&user))
        }
        Err(err) => {
            Err(failed(&format!("could not ask GitHub about access: {err}")).for_user(&user))
        }
    }
}

fn failed(detail: &str) -> Handled {
    Handled {
        outcome: "failed",
        detail: detail.chars().take(300).collect(),
        user_id: None,
        task_id: None,
    }
}

async fn start_or_continue(
    state: &AppState,
    user: &User,
    request: &Request<'_>,
) -> Result<Handled, Handled> {
    let issue = request.issue;
    let source_url = request
        .comment
        .map_or(issue.html_url.as_str(), |c| c.html_url.as_str());
    // A comment on a pull request one of drydock's tasks opened continues that task.
    if issue.pull_request.is_some()
        && let Some(mention) = &request.mention
    {
        let task = state
            .store
            .find_task_by_pull(request.repo, issue.number)
            .await
            .map_err(|err| failed(&err.to_string()))?;
        if let Some(task) = task {
            if task.user_id != user.id {
                return Err(Handled::ignored(format!(
                    "the pull request belongs to another user's task; only they can continue it (@{})",
                    user.login
                )));
            }
            let text = prompt::follow_up_prompt(&mention.request, source_url);
            return match crate::tasks::continue_task(state, &task, &text).await {
                Ok(_) => {
                    let detail = format!("follow-up on task {} by @{}", task.id, user.login);
                    Ok(accepted(state, user, request, task.id, true, detail).await)
                }
                Err(err) => Err(refused(state, user, request, &err)),
            };
        }
    }
    let agent = request
        .mention
        .as_ref()
        .and_then(|m| m.agent.clone())
        .unwrap_or_else(|| state.config.github_default_agent.clone());
    let text = prompt::task_prompt(&prompt::Source {
        title: &issue.title,
        body: issue.body.as_deref(),
        request: request.mention.as_ref().map(|m| m.request.as_str()),
        login: &request.actor.login,
        url: source_url,
    });
    let body = CreateTask {
        repo: request.repo.to_owned(),
        base_branch: None,
        prompt: text,
        agent,
        model: None,
        connectors: None,
        install_deps: false,
        max_duration_s: None,
        create_pr: Some(true),
        keep_alive: false,
        network: None,
    };
    match crate::tasks::submit_task(state, &user.id, &body, "github", Some(source_url)).await {
        Ok(task) => {
            let detail = format!("task {} started for @{}", task.id, user.login);
            Ok(accepted(state, user, request, task.id, false, detail).await)
        }
        Err(err) => Err(refused(state, user, request, &err)),
    }
}

/// A task started or continued for a trigger: the issue becomes the task's thread on GitHub
/// (for its end comment), the requester gets the reaction and the start comment, and the
/// delivery is recorded as accepted with `detail`.
async fn accepted(
    state: &AppState,
    user: &User,
    request: &Request<'_>,
    task_id: String,
    follow_up: bool,
    detail: String,
) -> Handled {
    let number = request.issue.number;
    let _ = state
        .store
        .set_task_github_thread(&task_id, request.repo, number)
        .await;
    feedback::accepted(
        state,
        user,
        request.repo,
        number,
        request.comment.map(|c| c.id),
        &task_id,
        follow_up,
    );
    Handled {
        outcome: "accepted",
        detail,
        user_id: None,
        task_id: Some(task_id),
    }
}

/// The task could not start (a missing key, the quota…): say why on GitHub too.
fn refused(state: &AppState, user: &User, request: &Request<'_>, err: &AppError) -> Handled {
    let reason = match err {
        AppError::Internal(detail) => {
            tracing::error!(error = %detail, "a GitHub-triggered task could not start");
            "something went wrong on the server; it has been logged".to_owned()
        }
        other => other.to_string(),
    };
    feedback::could_not_start(state, user, request.repo, request.issue.number, &reason);
    Handled {
        outcome: "failed",
        detail: format!("could not start: {reason}"),
        user_id: None,
        task_id: None,
    }
}
