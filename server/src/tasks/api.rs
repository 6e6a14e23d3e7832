//! `/api/tasks`: submit, list, read, stop and delete tasks; their logs, diffs and conversation.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::hub::StatusChange;
use super::run::title_of;
use crate::auth::CurrentUser;
use crate::error::{ApiJson, ApiPath, ApiQuery, AppError, ErrorBody};
use crate::github::GithubError;
use crate::repos::github_token;
use crate::state::AppState;
use crate::store::{NewTask, Task, TaskEvent, TaskFilter};

/// Longest prompt accepted, in bytes.
const MAX_PROMPT: usize = 64 * 1024;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tasks, create_task))
        .routes(routes!(task_status_events))
        .routes(routes!(get_task, delete_task))
        .routes(routes!(stop_task))
        .routes(routes!(task_events))
        .routes(routes!(task_diff))
        .routes(routes!(task_messages, post_message))
        .routes(routes!(stop_sandbox))
}

/// A task as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskView {
    /// Task id.
    pub id: String,
    /// Short title.
    pub title: String,
    /// The prompt.
    pub prompt: String,
    /// `owner/name`.
    pub repo: String,
    /// Branch the work started from.
    pub base_branch: Option<String>,
    /// Branch the work is pushed to.
    pub branch: Option<String>,
    /// Agent id.
    pub agent: String,
    /// Model id.
    pub model: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed`, `stopped` or `timed_out`.
    pub status: String,
    /// Why it ended so.
    pub status_reason: Option<String>,
    /// Dependencies installed first.
    pub install_deps: bool,
    /// Deadline in seconds.
    pub max_duration_s: i64,
    /// A pull request is opened.
    pub create_pr: bool,
    /// Commit pushed.
    pub commit_sha: Option<String>,
    /// Pull request.
    pub pr_url: Option<String>,
    /// Pull request number.
    pub pr_number: Option<i64>,
    /// Submitted, unix ms.
    pub created_at: i64,
    /// Started, unix ms.
    pub started_at: Option<i64>,
    /// Ended, unix ms.
    pub finished_at: Option<i64>,
    /// Log lines so far.
    pub event_count: i64,
    /// The sandbox is kept after each turn for follow-ups (until idle).
    pub keep_alive: bool,
    /// Turns started: the first run and each follow-up.
    pub turns: i64,
    /// While a kept-alive sandbox waits for a follow-up: when it will be removed, unix ms.
    pub sandbox_expires_at: Option<i64>,
    /// Where the dev server running in the kept sandbox is shown, while it runs.
    pub preview_url: Option<String>,
    /// Where it was started from: `web`, `api`, `cli` or `github`.
    pub origin: String,
    /// The link to what started it (a GitHub comment or issue), when there is one.
    pub source_url: Option<String>,
    /// The sandbox's network policy; `None` when policies are off on this server.
    pub network: Option<crate::egress::NetworkPolicy>,
    /// Requests the egress proxy refused, all turns.
    pub blocked_requests: i64,
    /// The agent's CLI cannot use drydock's model gateway, so its key is inside the sandbox.
    pub key_in_sandbox: bool,
    /// Model use metered by drydock's model gateway, all turns.
    pub usage: UsageView,
    /// The newest refused requests (only on `GET /api/tasks/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Vec<crate::store::BlockedRequest>>,
    /// Use per turn and model (only on `GET /api/tasks/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_by_turn: Option<Vec<crate::store::TurnUsage>>,
}

/// Tokens and cost of a task's model calls through the gateway.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageView {
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Tokens read from the prompt cache.
    pub cache_read_tokens: i64,
    /// Tokens written to the prompt cache.
    pub cache_write_tokens: i64,
    /// Cost in US dollars from the operator's price table.
    pub cost_usd: f64,
}

impl From<Task> for TaskView {
    fn from(t: Task) -> Self {
        let preview_url = t
            .preview_port
            .and(t.container_id.as_ref())
            .map(|_| format!("/tasks/{}/preview/", t.id));
        TaskView {
            id: t.id,
            title: t.title,
            prompt: t.prompt,
            repo: t.repo,
            base_branch: t.base_branch,
            branch: t.branch,
            agent: t.agent,
            model: t.model,
            status: t.status,
            status_reason: t.status_reason,
            install_deps: t.install_deps,
            max_duration_s: t.max_duration_s,
            create_pr: t.create_pr,
            commit_sha: t.commit_sha,
            pr_url: t.pr_url,
            pr_number: t.pr_number,
            created_at: t.created_at,
            started_at: t.started_at,
            finished_at: t.finished_at,
            event_count: t.event_seq,
            keep_alive: t.keep_alive,
            turns: t.turns,
            sandbox_expires_at: t.container_id.as_ref().and(t.sandbox_expires_at),
            preview_url,
            origin: t.origin,
            source_url: t.source_url,
            network: t
                .network_policy
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok()),
            blocked_requests: t.blocked_requests,
            key_in_sandbox: t.key_in_sandbox,
            usage: UsageView {
                input_tokens: t.input_tokens,
                output_tokens: t.output_tokens,
                cache_read_tokens: t.cache_read_tokens,
                cache_write_tokens: t.cache_write_tokens,
                cost_usd: t.cost_micro_usd as f64 / 1e6,
            },
            blocked: None,
            usage_by_turn: None,
        }
    }
}

/// Body of `POST /api/tasks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// `owner/name`.
    pub repo: String,
    /// Branch to start from (the repository's default when absent).
    pub base_branch: Option<String>,
    /// What the agent should do.
    pub prompt: String,
    /// Agent id (see `GET /api/agents`).
    pub agent: String,
    /// Model id (the agent's default when absent).
    pub model: Option<String>,
    /// Connector ids to run with (all enabled ones when absent).
    pub connectors: Option<Vec<String>>,
    /// Install dependencies first.
    #[serde(default)]
    pub install_deps: bool,
    /// Deadline in seconds (the operator's maximum when absent).
    pub max_duration_s: Option<i64>,
    /// Open a pull request when done (default true).
    pub create_pr: Option<bool>,
    /// Keep the sandbox after each turn so follow-ups continue in it (removed when idle).
    #[serde(default)]
    pub keep_alive: bool,
    /// The sandbox's network policy, within what the operator allows (the operator's default
    /// when absent).
    #[serde(default)]
    pub network: Option<crate::egress::NetworkRequest>,
}

fn valid_repo(repo: &str) -> bool {
    let mut parts = repo.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.len() <= 100
                && p != "."
                && p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

fn valid_branch(branch: &str) -> bool {
    !branch.is_empty()
        && branch.len() <= 200
        && !branch.starts_with(['-', '/'])
        && !branch.ends_with(['/', '.'])
        && !branch.contains("..")
        && !branch.contains("@{")
        && branch
            .chars()
            .all(|c| !c.is_control() && !" ~^:?*[\\".contains(c))
}

/// The prompt trimmed, or why it cannot be run.
fn valid_prompt(prompt: &str) -> Result<&str, AppError> {
    let prompt = prompt.trim();
    if prompt.is_empty() {
        return Err(AppError::invalid(
            "prompt",
            "the prompt is empty: say what the agent should do",
        ));
    }
    if prompt.len() > MAX_PROMPT {
        return Err(AppError::invalid(
            "prompt",
            "the prompt is longer than 64 KiB",
        ));
    }
    Ok(prompt)
}

/// Start of the current UTC day and of the next, unix ms.
fn utc_day() -> (i64, i64) {
    crate::egress::utc_day()
}

/// A user's tasks of today (UTC): each task and follow-up counts once; deleting gives nothing back.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Quota {
    /// Tasks allowed per day.
    pub limit: i64,
    /// Started today.
    pub used: i64,
    /// Left today.
    pub remaining: i64,
    /// When the count starts again, unix ms.
    pub reset_at: i64,
}

/// The user's quota now.
pub async fn quota_of(state: &AppState, user_id: &str) -> Result<Quota, AppError> {
    let (day_start, reset_at) = utc_day();
    let used = state
        .store
        .count_task_starts_since(user_id, day_start)
        .await?;
    let limit = i64::from(state.config.max_tasks_per_day);
    Ok(Quota {
        limit,
        used,
        remaining: (limit - used).max(0),
        reset_at,
    })
}

/// Refuses when the user has used up today's tasks.
pub async fn check_quota(state: &AppState, user_id: &str) -> Result<(), AppError> {
    let Quota {
        limit,
        used,
        reset_at,
        ..
    } = quota_of(state, user_id).await?;
    if used >= limit {
        return Err(AppError::RateLimited {
            message: format!(
                "you have used all {limit} tasks of today; more are available after midnight UTC"
            ),
            details: serde_json::json!({ "limit": limit, "remaining": 0, "reset_at": reset_at }),
        });
    }
    check_budget(state, user_id).await
}

/// Refuses when the user's model use today (through the gateway) reached the operator's daily
/// token or cost budget.
async fn check_budget(state: &AppState, user_id: &str) -> Result<(), AppError> {
    match state.egress.budget_spent(user_id).await? {
        Some(spent) => Err(AppError::RateLimited {
            message: spent.message,
            details: spent.details,
        }),
        None => Ok(()),
    }
}

/// Submits a task; it runs in the background.
#[utoipa::path(post, path = "/api/tasks", tag = "tasks", request_body = CreateTask,
    responses((status = 201, body = TaskView), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn create_task(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateTask>,
) -> Result<(StatusCode, Json<TaskView>), AppError> {
    let origin = origin_of(&user, &headers);
    let task = submit_task(&state, &user.user.id, &body, origin, None).await?;
    Ok((StatusCode::CREATED, Json(task.into())))
}

/// Where an API request comes from: `web` with a browser session, `cli` with a token from the
/// `drydock` client (its User-Agent), `api` with any other token.
fn origin_of(user: &CurrentUser, headers: &HeaderMap) -> &'static str {
    if user.token_scope.is_none() {
        return "web";
    }
    let from_cli = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with(crate::cli::USER_AGENT_PREFIX));
    if from_cli { "cli" } else { "api" }
}

/// Validates and queues a task of `user_id` (the API's and the GitHub trigger's common path):
/// checks the repository, agent, model, key, connectors and quota, then stores and schedules it.
pub async fn submit_task(
    state: &AppState,
    user_id: &str,
    body: &CreateTask,
    origin: &str,
    source_url: Option<&str>,
) -> Result<Task, AppError> {
    let state = state.clone();
    let user_id = &user_id.to_owned();
    let repo = body.repo.trim();
    if !valid_repo(repo) {
        return Err(AppError::invalid(
            "repo",
            "the repository must be written owner/name",
        ));
    }
    let prompt = valid_prompt(&body.prompt)?;
    let base_branch = body
        .base_branch
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty());
    if base_branch.is_some_and(|b| !valid_branch(b)) {
        return Err(AppError::invalid(
            "base_branch",
            "that is not a valid branch name",
        ));
    }
    let Ok(agent) = state.agents.get(&body.agent) else {
        let known: Vec<&str> = state
            .agents
            .agents()
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        return Err(AppError::invalid(
            "agent",
            format!(
                "unknown agent {:?}; choose one of {}",
                body.agent,
                known.join(", ")
            ),
        ));
    };
    let model = match body.model.as_deref().filter(|m| !m.is_empty()) {
        Some(id) => match agent.models.iter().find(|m| m.id == id) {
            Some(model) => Some(model),
            None => {
                let offered: Vec<&str> = agent.models.iter().map(|m| m.id.as_str()).collect();
                return Err(AppError::invalid(
                    "model",
                    format!(
                        "{} does not offer the model {id:?}; choose one of {}",
                        agent.name,
                        offered.join(", ")
                    ),
                ));
            }
        },
        None => agent.models.first(),
    };
    let provider =
        crate::agents_api::model_provider(agent, model.and_then(|m| m.provider.as_deref()));
    if let Some(provider) = provider
        && state.store.get_api_key(user_id, provider).await?.is_none()
    {
        return Err(AppError::Invalid {
            field: Some("agent".into()),
            message: format!(
                "{} needs your {provider} API key: add it in Settings → API keys first",
                agent.name
            ),
        });
    }
    let max = i64::try_from(state.config.max_task_duration).unwrap_or(i64::MAX);
    let max_duration_s = body.max_duration_s.unwrap_or(max);
    if !(10..=max).contains(&max_duration_s) {
        return Err(AppError::invalid(
            "max_duration_s",
            format!("the duration must be between 10 and {max} seconds"),
        ));
    }
    let connector_ids = match &body.connectors {
        Some(ids) => {
            for id in ids {
                if state.store.get_connector(user_id, id).await?.is_none() {
                    return Err(AppError::invalid(
                        "connectors",
                        format!("no connector {id:?} of yours exists"),
                    ));
                }
            }
            ids.clone()
        }
        None => state
            .store
            .list_connectors(user_id)
            .await?
            .into_iter()
            .filter(|c| c.enabled)
            .map(|c| c.id)
            .collect(),
    };
    let token = github_token(&state, user_id).await?;
    match state.github.repo(&token, repo).await {
        Ok(_) => {}
        Err(GithubError::NotFound) => {
            return Err(AppError::invalid(
                "repo",
                format!("{repo} does not exist on GitHub or you cannot read it"),
            ));
        }
        Err(err) => return Err(err.into()),
    }
    check_quota(&state, user_id).await?;
    let network = state
        .egress
        .settings
        .bounds
        .resolve(body.network.as_ref())
        .map_err(|message| AppError::invalid("network", message))?;
    let key_in_sandbox = network.is_some()
        && provider.is_some_and(|p| {
            !agent.takes_base_url(p) || state.egress.upstream_for(agent, p).is_none()
        });
    let network_json = network.as_ref().and_then(|n| serde_json::to_string(n).ok());

    let task = state
        .store
        .insert_task(&NewTask {
            user_id,
            title: &title_of(prompt),
            prompt,
            repo,
            base_branch,
            agent: &agent.id,
            model: model.map(|m| m.id.as_str()),
            install_deps: body.install_deps,
            max_duration_s,
            keep_alive: body.keep_alive,
            create_pr: body.create_pr.unwrap_or(true),
            origin,
            source_url,
            network_policy: network_json.as_deref(),
            key_in_sandbox,
        })
        .await?;
    state
        .store
        .set_task_connectors(&task.id, &connector_ids)
        .await?;
    state.store.record_task_start(user_id, &task.id).await?;
    state
        .store
        .insert_task_message(&task.id, "user", prompt, None)
        .await?;
    tracing::info!(task_id = %task.id, user_id = %user_id, repo = %repo, agent = %agent.id, origin, "task submitted");
    state.hub.status_changed(StatusChange {
        user_id: user_id.clone(),
        task_id: task.id.clone(),
        status: "queued".into(),
        status_reason: None,
    });
    let runner = state.runner.clone();
    tokio::spawn(async move { runner.schedule().await });
    Ok(task)
}

/// Query of `GET /api/tasks`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Only tasks with this status.
    pub status: Option<String>,
    /// Only tasks on this repository.
    pub repo: Option<String>,
    /// Page from 1.
    pub page: Option<u32>,
    /// Tasks per page (1–100, default 25).
    pub per_page: Option<u32>,
}

/// A page of tasks.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskList {
    /// Newest first.
    pub tasks: Vec<TaskView>,
    /// This page.
    pub page: u32,
    /// Another page follows.
    pub has_next: bool,
}

const STATUSES: [&str; 6] = [
    "queued",
    "running",
    "succeeded",
    "failed",
    "stopped",
    "timed_out",
];

/// The user's tasks, newest first.
#[utoipa::path(get, path = "/api/tasks", tag = "tasks", params(ListQuery),
    responses((status = 200, body = TaskList), (status = 401, body = ErrorBody)))]
async fn list_tasks(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<TaskList>, AppError> {
    let status = query.status.as_deref().filter(|s| !s.is_empty());
    if status.is_some_and(|s| !STATUSES.contains(&s)) {
        return Err(AppError::invalid(
            "status",
            format!("status must be one of {}", STATUSES.join(", ")),
        ));
    }
    let page = query.page.unwrap_or(1).max(1);
    let per_page = query.per_page.unwrap_or(25).clamp(1, 100);
    let filter = TaskFilter {
        status,
        repo: query.repo.as_deref().filter(|r| !r.is_empty()),
        limit: i64::from(per_page) + 1,
        offset: i64::from(page - 1) * i64::from(per_page),
    };
    let mut tasks = state.store.list_tasks(&user.user.id, &filter).await?;
    let has_next = tasks.len() > per_page as usize;
    tasks.truncate(per_page as usize);
    Ok(Json(TaskList {
        tasks: tasks.into_iter().map(TaskView::from).collect(),
        page,
        has_next,
    }))
}

async fn own_task(state: &AppState, user: &CurrentUser, id: &str) -> Result<Task, AppError> {
    state
        .store
        .get_task(&user.user.id, id)
        .await?
        .ok_or(AppError::NotFound("task"))
}

/// One of the user's tasks.
#[utoipa::path(get, path = "/api/tasks/{id}", tag = "tasks", params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = TaskView), (status = 404, body = ErrorBody)))]
async fn get_task(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TaskView>, AppError> {
    let mut view: TaskView = own_task(&state, &user, &id).await?.into();
    view.blocked = Some(state.store.list_blocked(&id, 100).await?);
    view.usage_by_turn = Some(state.store.list_turn_usage(&id).await?);
    Ok(Json(view))
}

/// Stops a task: a running one within seconds, its sandbox removed; a queued one never starts.
#[utoipa::path(post, path = "/api/tasks/{id}/stop", tag = "tasks", params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = TaskView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn stop_task(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TaskView>, AppError> {
    let task = own_task(&state, &user, &id).await?;
    if !matches!(task.status.as_str(), "queued" | "running") {
        return Err(AppError::Conflict(format!(
            "the task already ended ({})",
            task.status
        )));
    }
    state.runner.stop(&task).await;
    Ok(Json(own_task(&state, &user, &id).await?.into()))
}

/// Deletes a task with its log and messages (stopping it first if it runs).
#[utoipa::path(delete, path = "/api/tasks/{id}", tag = "tasks", params(("id" = String, Path, description = "Task id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_task(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    let task = own_task(&state, &user, &id).await?;
    if matches!(task.status.as_str(), "queued" | "running") {
        state.runner.stop(&task).await;
    }
    if let Some(task) = state.store.get_task(&user.user.id, &id).await? {
        state
            .runner
            .remove_kept_sandbox(&task, None, "the task was deleted")
            .await;
    }
    state.store.delete_task(&user.user.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /api/tasks/{id}/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Only events with a greater seq.
    pub after: Option<i64>,
    /// Events per page (1–1000, default 500).
    pub limit: Option<i64>,
}

/// A page of log events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// Events in order.
    pub events: Vec<TaskEvent>,
    /// Pass as `after` for the next page.
    pub next_after: i64,
}

/// The task's log: a JSON page, or with `Accept: text/event-stream` a live SSE stream (replay
/// after `Last-Event-ID` or `after`, then live; `id:` is the seq; a final `end` event).
#[utoipa::path(get, path = "/api/tasks/{id}/events", tag = "tasks",
    params(("id" = String, Path, description = "Task id"), EventsQuery),
    responses((status = 200, body = EventPage), (status = 404, body = ErrorBody)))]
async fn task_events(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, AppError> {
    let task = own_task(&state, &user, &id).await?;
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = last_event_id.or(query.after).unwrap_or(0).max(0);
    if wants_sse {
        return Ok(super::sse::task_log(state, task.id, after).into_response());
    }
    let limit = query.limit.unwrap_or(500).clamp(1, 1000);
    let events = state
        .store
        .list_task_events_after(&task.id, after, limit)
        .await?;
    let next_after = events.last().map_or(after, |e| e.seq);
    Ok(Json(EventPage { events, next_after }).into_response())
}

/// Status changes of the user's tasks as SSE (`status` events; `resync` when some were missed).
#[utoipa::path(get, path = "/api/tasks/events", tag = "tasks", responses((status = 200, description = "text/event-stream")))]
async fn task_status_events(State(state): State<AppState>, user: CurrentUser) -> Response {
    super::sse::task_statuses(state, user.user.id).into_response()
}

/// The changes a task made.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DiffView {
    /// `[{path, status, additions, deletions}]`.
    #[schema(value_type = Vec<Object>)]
    pub files: serde_json::Value,
    /// Unified diff, redacted.
    pub patch: String,
}

/// The files a task changed, with stats and the unified diff (redacted).
#[utoipa::path(get, path = "/api/tasks/{id}/diff", tag = "tasks", params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = DiffView), (status = 404, body = ErrorBody)))]
async fn task_diff(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DiffView>, AppError> {
    let task = own_task(&state, &user, &id).await?;
    let diff = state
        .store
        .get_task_diff(&task.id)
        .await?
        .ok_or(AppError::NotFound("diff"))?;
    let files = serde_json::from_str(&diff.files).unwrap_or(serde_json::Value::Array(Vec::new()));
    Ok(Json(DiffView {
        files,
        patch: diff.patch,
    }))
}

/// A message of a task's conversation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    /// Message id.
    pub id: String,
    /// `user` or `agent`.
    pub role: String,
    /// Text (an agent's reply is redacted).
    pub content: String,
    /// The turn it belongs to; null for a follow-up waiting for its turn, 0 for one that never
    /// ran because the task was stopped.
    pub turn: Option<i64>,
    /// Written, unix ms.
    pub created_at: i64,
}

impl From<crate::store::TaskMessage> for MessageView {
    fn from(m: crate::store::TaskMessage) -> Self {
        MessageView {
            id: m.id,
            role: m.role,
            content: m.content,
            turn: m.turn,
            created_at: m.created_at,
        }
    }
}

/// Body of `POST /api/tasks/{id}/messages`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// What the agent should do next.
    pub prompt: String,
}

/// Continues a task: the message runs as the task's next turn on the same branch (at once when
/// the task has ended, after the running turn otherwise). Counts against the daily quota.
#[utoipa::path(post, path = "/api/tasks/{id}/messages", tag = "tasks", request_body = NewMessage,
    params(("id" = String, Path, description = "Task id")),
    responses((status = 201, body = MessageView), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn post_message(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<NewMessage>,
) -> Result<(StatusCode, Json<MessageView>), AppError> {
    let task = own_task(&state, &user, &id).await?;
    let message = continue_task(&state, &task, &body.prompt).await?;
    Ok((StatusCode::CREATED, Json(message.into())))
}

/// Queues `prompt` as the next turn of `task` (the caller has checked it is the user's): the
/// API's and the GitHub trigger's common path.
pub async fn continue_task(
    state: &AppState,
    task: &Task,
    prompt: &str,
) -> Result<crate::store::TaskMessage, AppError> {
    let prompt = valid_prompt(prompt)?;
    check_quota(state, &task.user_id).await?;
    let message = state
        .store
        .insert_task_message(&task.id, "user", prompt, None)
        .await?;
    state
        .store
        .record_task_start(&task.user_id, &task.id)
        .await?;
    tracing::info!(task_id = %task.id, "follow-up message received");
    if state.store.requeue_task(&task.id).await? {
        state.hub.status_changed(StatusChange {
            user_id: task.user_id.clone(),
            task_id: task.id.clone(),
            status: "queued".into(),
            status_reason: None,
        });
        let runner = state.runner.clone();
        tokio::spawn(async move { runner.schedule().await });
    }
    Ok(message)
}

/// Ends the task's kept-alive sandbox now (the next follow-up starts a fresh one from the branch).
#[utoipa::path(post, path = "/api/tasks/{id}/sandbox/stop", tag = "tasks", params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = TaskView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn stop_sandbox(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TaskView>, AppError> {
    let task = own_task(&state, &user, &id).await?;
    if task.status == "running" {
        return Err(AppError::Conflict(
            "a turn is running in the sandbox; stop the task to end both".into(),
        ));
    }
    if !state
        .runner
        .remove_kept_sandbox(&task, None, "stopped by the user")
        .await
    {
        return Err(AppError::Conflict(
            "the task has no kept-alive sandbox".into(),
        ));
    }
    Ok(Json(own_task(&state, &user, &id).await?.into()))
}

/// A task's conversation, oldest first.
#[utoipa::path(get, path = "/api/tasks/{id}/messages", tag = "tasks", params(("id" = String, Path, description = "Task id")),
    responses((status = 200, body = Vec<MessageView>), (status = 404, body = ErrorBody)))]
async fn task_messages(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<MessageView>>, AppError> {
    let task = own_task(&state, &user, &id).await?;
    let messages = state.store.list_task_messages(&task.id).await?;
    Ok(Json(messages.into_iter().map(MessageView::from).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_and_branch_names_are_checked() {
        assert!(valid_repo("octo/hello-world.rs"));
        for bad in ["octo", "octo/", "/x", "a/b/c", "a/..", "a b/c", "a/c;rm"] {
            assert!(!valid_repo(bad), "{bad}");
        }
        assert!(valid_branch("feature/x-1"));
        for bad in ["-x", "a..b", "a b", "x/", "a~1", "a:b", "@{x"] {
            assert!(!valid_branch(bad), "{bad}");
        }
    }
}
