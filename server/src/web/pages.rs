//! The page handlers: each reads what the first paint needs and renders a template; the page's
//! script takes over for live updates and actions through the JSON API.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::{Chrome, ErrorPage};
use crate::auth::CurrentUser;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::{Task, TaskFilter, now_ms};

/// Every task status, in the order the filter offers them.
const STATUSES: [&str; 6] = [
    "queued",
    "running",
    "succeeded",
    "failed",
    "stopped",
    "timed_out",
];

/// Tasks shown on the first paint of the list.
const LIST_SIZE: i64 = 50;

/// The page header for a signed-in user on the page `nav`.
pub(super) async fn chrome(state: &AppState, user: &CurrentUser, nav: &'static str) -> Chrome {
    // The header is decoration: a failed quota lookup must not break the page.
    let quota = crate::tasks::quota_of(state, &user.user.id).await.ok();
    // People start tasks from these pages, so they say when the sandbox image is not ready.
    let image = matches!(nav, "tasks" | "new")
        .then(|| super::ImageBanner::of(&state.image, true))
        .flatten();
    Chrome {
        user: Some(user.user.clone()),
        quota,
        nav,
        image,
        admin: super::admin::is_admin(state, user),
    }
}

/// `2026-11-22 05:01 UTC` (the page's script shows it in local time).
pub(super) fn fmt_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// ISO 8601 for `<time datetime>`.
fn iso_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// `42s`, `3m 05s`, `2h 03m`.
fn fmt_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A time limit: `30 min`, `1 h 30 min`, `45 s`.
fn fmt_limit(seconds: i64) -> String {
    match seconds {
        s if s % 60 != 0 => format!("{s} s"),
        s if s < 3600 || s % 3600 != 0 && s < 7200 => format!("{} min", s / 60),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// A task as the pages show it.
pub struct TaskRow {
    id: String,
    title: String,
    prompt: String,
    repo: String,
    agent: String,
    model: String,
    status: String,
    status_reason: String,
    base_branch: String,
    branch: String,
    pr_url: String,
    pr_number: String,
    created: String,
    created_iso: String,
    started: String,
    started_iso: String,
    started_ms: String,
    finished: String,
    finished_iso: String,
    finished_ms: String,
    duration: String,
    active: bool,
    install_deps: bool,
    create_pr: bool,
    max_duration: String,
    keep_alive: bool,
    turns: i64,
    /// When the kept sandbox goes, while there is one.
    sandbox_until: String,
    sandbox_until_iso: String,
    preview_url: String,
    /// Where it came from: `web`, `api`, `cli` or `github`.
    origin: String,
    /// The link to what started it (only `https:`/`http:` links are kept).
    source_url: String,
    /// The network policy in words ("off" without one).
    network: String,
    /// The agent's key is inside the sandbox (its CLI cannot use the gateway).
    key_in_sandbox: bool,
    /// Requests the egress proxy refused.
    blocked_requests: i64,
    /// Model use through the gateway ("1,234 in · 56 out · $0.0123"), empty when none.
    usage: String,
}

impl TaskRow {
    fn from_task(t: Task) -> Self {
        let active = matches!(t.status.as_str(), "queued" | "running");
        let duration = match (t.started_at, t.finished_at) {
            (Some(start), Some(end)) => fmt_duration(end - start),
            (Some(start), None) if active => fmt_duration(now_ms() - start),
            _ => String::new(),
        };
        let opt_time = |ms: Option<i64>, f: fn(i64) -> String| ms.map(f).unwrap_or_default();
        let kept_until = t.container_id.as_ref().and(t.sandbox_expires_at);
        let preview_url = t
            .preview_port
            .and(t.container_id.as_ref())
            .map(|_| format!("/tasks/{}/preview/", t.id))
            .unwrap_or_default();
        let source_url = t
            .source_url
            .clone()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .unwrap_or_default();
        let network = match t
            .network_policy
            .as_deref()
            .and_then(|p| serde_json::from_str::<crate::egress::NetworkPolicy>(p).ok())
        {
            None => "off (the sandbox network the operator set)".to_owned(),
            Some(p) => describe_policy(&p),
        };
        let usage =
            if t.input_tokens + t.output_tokens + t.cache_read_tokens + t.cache_write_tokens == 0 {
                String::new()
            } else {
                let mut s = format!("{} in · {} out", t.input_tokens, t.output_tokens);
                if t.cache_read_tokens + t.cache_write_tokens > 0 {
                    s.push_str(&format!(
                        " · {} cache read · {} cache write",
                        t.cache_read_tokens, t.cache_write_tokens
                    ));
                }
                s.push_str(&format!(" · ${:.4}", t.cost_micro_usd as f64 / 1e6));
                s
            };
        Self {
            network,
            key_in_sandbox: t.key_in_sandbox,
            blocked_requests: t.blocked_requests,
            usage,
            origin: t.origin.clone(),
            source_url,
            keep_alive: t.keep_alive,
            turns: t.turns,
            sandbox_until: opt_time(kept_until, fmt_time),
            sandbox_until_iso: opt_time(kept_until, iso_time),
            preview_url,
            status_reason: t.status_reason.unwrap_or_default(),
            base_branch: t.base_branch.unwrap_or_default(),
            branch: t.branch.unwrap_or_default(),
            pr_url: t.pr_url.unwrap_or_default(),
            pr_number: t.pr_number.map(|n| n.to_string()).unwrap_or_default(),
            model: t.model.unwrap_or_default(),
            created: fmt_time(t.created_at),
            created_iso: iso_time(t.created_at),
            started: opt_time(t.started_at, fmt_time),
            started_iso: opt_time(t.started_at, iso_time),
            started_ms: t.started_at.map(|m| m.to_string()).unwrap_or_default(),
            finished: opt_time(t.finished_at, fmt_time),
            finished_iso: opt_time(t.finished_at, iso_time),
            finished_ms: t.finished_at.map(|m| m.to_string()).unwrap_or_default(),
            duration,
            active,
            install_deps: t.install_deps,
            create_pr: t.create_pr,
            max_duration: fmt_limit(t.max_duration_s),
            id: t.id,
            title: t.title,
            prompt: t.prompt,
            repo: t.repo,
            agent: t.agent,
            status: t.status,
        }
    }

    /// The status for people: `timed out`, not `timed_out`.
    fn status_label(&self) -> String {
        self.status.replace('_', " ")
    }
}

/// A policy in words: "allowlist: package registries, GitHub, example.org; read-only methods".
fn describe_policy(p: &crate::egress::NetworkPolicy) -> String {
    use crate::egress::{PolicyMode, Preset};
    let mut s = p.mode.as_str().to_owned();
    if p.mode == PolicyMode::Allowlist {
        let mut parts: Vec<String> = p
            .presets
            .iter()
            .map(|preset| match preset {
                Preset::PackageRegistries => "package registries".to_owned(),
                Preset::Github => "GitHub".to_owned(),
            })
            .collect();
        parts.extend(p.allow.iter().cloned());
        parts.extend(p.operator_allow.iter().cloned());
        if !parts.is_empty() {
            s = format!("{s}: {}", parts.join(", "));
        }
    }
    if p.read_only {
        s.push_str("; read-only methods");
    }
    s
}

#[derive(Template, WebTemplate)]
#[template(path = "home.html")]
struct SignInPage {
    chrome: Chrome,
    /// The operator checks, shown before sign-in is set up (there is no admin yet).
    checks: Option<super::admin::Checks>,
    oauth_configured: bool,
    sign_in_url: String,
    register_url: String,
    callback_url: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "tasks.html")]
struct TasksPage {
    chrome: Chrome,
    rows: Vec<TaskRow>,
    statuses: [&'static str; 6],
    status_filter: String,
    repo_filter: String,
    repos: Vec<String>,
    has_next: bool,
    github_url: String,
}

#[derive(serde::Deserialize)]
pub(super) struct HomeParams {
    next: Option<String>,
    status: Option<String>,
    repo: Option<String>,
}

/// The home page: the signed-in user's tasks, or sign-in, or set-up instructions.
pub(super) async fn home_page(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    Query(params): Query<HomeParams>,
) -> Result<Response, AppError> {
    let Some(user) = user else {
        let next = crate::auth::safe_next(params.next.as_deref());
        let sign_in_url = if next == "/" {
            "/auth/github".to_owned()
        } else {
            format!(
                "/auth/github?next={}",
                utf8_percent_encode(&next, NON_ALPHANUMERIC)
            )
        };
        let oauth_configured = state.github.oauth_configured();
        return Ok(SignInPage {
            chrome: Chrome {
                image: super::ImageBanner::of(&state.image, false),
                ..Chrome::default()
            },
            checks: if oauth_configured {
                None
            } else {
                Some(super::admin::checks(&state).await)
            },
            oauth_configured,
            sign_in_url,
            register_url: format!("{}/settings/applications/new", state.github.web_url()),
            callback_url: format!("{}/auth/github/callback", state.public_url),
        }
        .into_response());
    };
    let status_filter = params
        .status
        .filter(|s| STATUSES.contains(&s.as_str()))
        .unwrap_or_default();
    let repo_filter = params.repo.map(|r| r.trim().to_owned()).unwrap_or_default();
    let mut tasks = state
        .store
        .list_tasks(
            &user.user.id,
            &TaskFilter {
                status: Some(status_filter.as_str()).filter(|s| !s.is_empty()),
                repo: Some(repo_filter.as_str()).filter(|r| !r.is_empty()),
                limit: LIST_SIZE + 1,
                offset: 0,
            },
        )
        .await?;
    let has_next = tasks.len() > LIST_SIZE as usize;
    tasks.truncate(LIST_SIZE as usize);
    // The repositories the user has worked on, for the filter's suggestions.
    let recent = state
        .store
        .list_tasks(
            &user.user.id,
            &TaskFilter {
                status: None,
                repo: None,
                limit: 200,
                offset: 0,
            },
        )
        .await?;
    let mut repos: Vec<String> = recent.into_iter().map(|t| t.repo).collect();
    repos.sort();
    repos.dedup();
    Ok(TasksPage {
        chrome: chrome(&state, &user, "tasks").await,
        rows: tasks.into_iter().map(TaskRow::from_task).collect(),
        statuses: STATUSES,
        status_filter,
        repo_filter,
        repos,
        has_next,
        github_url: state.github.web_url().trim_end_matches('/').to_owned(),
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "task.html")]
struct TaskPage {
    chrome: Chrome,
    t: TaskRow,
    repo_url: String,
    branch_url: String,
    messages: Vec<MessageRow>,
    /// The newest requests the egress proxy refused.
    blocked: Vec<crate::store::BlockedRequest>,
}

/// A message of the conversation as the task page shows it.
struct MessageRow {
    role: String,
    who: &'static str,
    /// "turn 2", or "waiting" for a follow-up not run yet.
    turn: String,
    content: String,
}

/// One task: header, live log, changes.
pub(super) async fn task_page(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let chrome = chrome(&state, &user, "").await;
    let Some(task) = state.store.get_task(&user.user.id, &id).await? else {
        return Ok(ErrorPage::new(
            StatusCode::NOT_FOUND,
            "Task not found",
            "There is no task of yours at this address. It may have been deleted.",
        )
        .with_link("/", "Back to your tasks")
        .with_chrome(chrome)
        .into_response());
    };
    let web = state.github.web_url().trim_end_matches('/').to_owned();
    let repo_url = format!("{web}/{}", task.repo);
    let branch_url = task
        .branch
        .as_deref()
        .map(|b| format!("{repo_url}/tree/{b}"))
        .unwrap_or_default();
    let messages = state
        .store
        .list_task_messages(&task.id)
        .await?
        .into_iter()
        .map(|m| MessageRow {
            who: if m.role == "user" { "You" } else { "Agent" },
            turn: match m.turn {
                None => "waiting".to_owned(),
                Some(0) => "not run: the task was stopped".to_owned(),
                Some(n) => format!("turn {n}"),
            },
            role: m.role,
            content: m.content,
        })
        .collect();
    let blocked = state.store.list_blocked(&task.id, 50).await?;
    Ok(TaskPage {
        blocked,
        chrome,
        t: TaskRow::from_task(task),
        repo_url,
        branch_url,
        messages,
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "new_task.html")]
pub(super) struct NewTaskPage {
    chrome: Chrome,
    repo: String,
    max_minutes: u64,
    default_minutes: u64,
}

#[derive(serde::Deserialize)]
pub(super) struct NewTaskParams {
    repo: Option<String>,
}

/// The new-task form.
pub(super) async fn new_task_page(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(params): Query<NewTaskParams>,
) -> NewTaskPage {
    let max_minutes = (state.config.max_task_duration / 60).max(1);
    NewTaskPage {
        chrome: chrome(&state, &user, "new").await,
        repo: params.repo.unwrap_or_default(),
        max_minutes,
        default_minutes: max_minutes.min(30),
    }
}

/// A provider's key as the settings page shows it.
struct KeyRow {
    provider: String,
    hint: String,
    updated: String,
    updated_iso: String,
}

impl KeyRow {
    fn configured(&self) -> bool {
        !self.updated.is_empty()
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "keys.html")]
pub(super) struct KeysPage {
    chrome: Chrome,
    rows: Vec<KeyRow>,
}

/// Settings → API keys.
pub(super) async fn keys_page(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<KeysPage, AppError> {
    let stored = state.store.list_api_keys(&user.user.id).await?;
    let rows = state
        .providers
        .iter()
        .map(|provider| {
            let row = stored.iter().find(|k| &k.provider == provider);
            KeyRow {
                provider: provider.clone(),
                hint: row.map(|k| k.hint.clone()).unwrap_or_default(),
                updated: row.map(|k| fmt_time(k.updated_at)).unwrap_or_default(),
                updated_iso: row.map(|k| iso_time(k.updated_at)).unwrap_or_default(),
            }
        })
        .collect();
    Ok(KeysPage {
        chrome: chrome(&state, &user, "keys").await,
        rows,
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "connectors.html")]
pub(super) struct ConnectorsPage {
    chrome: Chrome,
}

/// Settings → Connectors (the list is drawn by the page's script from the API).
pub(super) async fn connectors_page(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ConnectorsPage {
    ConnectorsPage {
        chrome: chrome(&state, &user, "connectors").await,
    }
}

/// A snapshot as the environment page lists it.
pub(super) struct SnapshotRow {
    tag: String,
    made: String,
    made_iso: String,
    size: String,
    in_use: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "environment.html")]
pub(super) struct EnvironmentPage {
    chrome: Chrome,
    env: crate::environments::api::EnvironmentView,
    setup_at: String,
    setup_at_iso: String,
    variables: String,
    snapshots: Vec<SnapshotRow>,
}

/// A repository's environment: its source, snapshots, last setup log, rebuild, and the
/// configured scripts, variables and write-only secrets (edited by the page's script through
/// the API).
pub(super) async fn environment_page(
    State(state): State<AppState>,
    user: CurrentUser,
    crate::error::ApiPath((owner, repo)): crate::error::ApiPath<(String, String)>,
) -> Result<EnvironmentPage, AppError> {
    let repo = crate::environments::api::owned_repo(&state, &user, &owner, &repo).await?;
    let env = crate::environments::api::view(&state, &user.user.id, &repo).await?;
    let setup_at = env.last_setup.at.map(fmt_time).unwrap_or_default();
    let setup_at_iso = env.last_setup.at.map(iso_time).unwrap_or_default();
    let variables = env
        .variables
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n");
    let snapshots = env
        .snapshots
        .iter()
        .map(|s| SnapshotRow {
            tag: s.tag.clone(),
            made: fmt_time(s.created_unix * 1000),
            made_iso: iso_time(s.created_unix * 1000),
            size: format!("{:.1} MB", s.size_bytes as f64 / 1_000_000.0),
            in_use: s.in_use,
        })
        .collect();
    Ok(EnvironmentPage {
        chrome: chrome(&state, &user, "").await,
        env,
        setup_at,
        setup_at_iso,
        variables,
        snapshots,
    })
}

#[cfg(test)]
mod tests {
    use super::{fmt_duration, fmt_limit};

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(42_000), "42s");
        assert_eq!(fmt_duration(185_000), "3m 05s");
        assert_eq!(fmt_duration(7_380_000), "2h 03m");
        assert_eq!(fmt_duration(-5), "0s");
        assert_eq!(fmt_limit(1800), "30 min");
        assert_eq!(fmt_limit(5400), "90 min");
        assert_eq!(fmt_limit(7200), "2 h");
        assert_eq!(fmt_limit(9000), "2 h 30 min");
        assert_eq!(fmt_limit(45), "45 s");
    }
}
