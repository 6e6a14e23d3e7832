//! The operator page, `/admin`: Docker, the sandbox image, the database, GitHub sign-in, the
//! queue across users, kept sandboxes, the replicas sharing the database and the settings that
//! differ from their defaults. Users
//! listed in `DRYDOCK_ADMINS` see it; anyone else gets 404.

use std::time::Duration;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{Chrome, ErrorPage};
use crate::auth::CurrentUser;
use crate::sandbox_image::ImageStatus;
use crate::state::AppState;

/// How long the Docker daemon gets to say its version.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether `user` is one of `DRYDOCK_ADMINS` (GitHub logins, compared case-insensitively).
pub fn is_admin(state: &AppState, user: &CurrentUser) -> bool {
    state
        .config
        .admins
        .iter()
        .any(|login| login.trim().eq_ignore_ascii_case(&user.user.login))
}

/// How far back the replica list reaches: a replica lost longer ago than this is not shown.
const REPLICAS_SHOWN_FOR_MS: i64 = 24 * 3600 * 1000;

/// One replica as the operator page shows it.
#[derive(Debug)]
pub struct ReplicaView {
    /// Its instance id.
    pub id: String,
    /// Whether it is the replica serving this page.
    pub this_one: bool,
    /// "alive" or "lost".
    pub state: &'static str,
    /// Its last heartbeat, as "3 s ago".
    pub heartbeat: String,
    /// Turns it runs now.
    pub running: i64,
    /// Sandboxes it keeps alive between turns.
    pub kept: i64,
}

/// "just now", "12 s ago", "4 min ago", "2 h ago" for a time `ms` milliseconds before now.
fn ago(ms: i64) -> String {
    match ms.max(0) / 1000 {
        0 => "just now".to_owned(),
        s @ 1..60 => format!("{s} s ago"),
        s @ 60..3600 => format!("{} min ago", s / 60),
        s => format!("{} h ago", s / 3600),
    }
}

/// The replicas that shared this database within the last day, alive ones first.
async fn replicas(state: &AppState) -> Result<Vec<ReplicaView>, String> {
    let now = crate::store::now_ms();
    let rows = state
        .store
        .list_replicas(now - REPLICAS_SHOWN_FOR_MS, now)
        .await
        .map_err(|err| {
            tracing::warn!(error = %err, "operator page: cannot list replicas");
            "cannot be read (see the log)".to_owned()
        })?;
    let me = state.runner.runner_id();
    let mut views: Vec<ReplicaView> = rows
        .into_iter()
        .map(|row| ReplicaView {
            this_one: row.id == me,
            state: if row.alive { "alive" } else { "lost" },
            heartbeat: ago(now - row.heartbeat_at),
            running: row.running,
            kept: row.kept,
            id: row.id,
        })
        .collect();
    views.sort_by_key(|v| (v.state != "alive", v.id.clone()));
    Ok(views)
}

/// What the operator checks show.
#[derive(Debug)]
pub struct Checks {
    /// Where sandboxes run: `Docker` or `Kubernetes`.
    pub backend: &'static str,
    /// The Docker daemon's address, or the Kubernetes namespace.
    pub sandbox_host: String,
    /// What the backend answered (Docker's version; on Kubernetes that every right drydock
    /// needs is granted), or why it could not be had.
    pub sandbox_answer: Result<String, String>,
    /// The sandbox image and its state.
    pub image: ImageStatus,
    /// The failed build's last lines.
    pub image_tail: Vec<String>,
    /// `SQLite` or `PostgreSQL`.
    pub database: &'static str,
    /// The newest applied migration, or why it could not be read.
    pub migration: Result<String, String>,
    /// Whether a GitHub OAuth app is configured.
    pub github_configured: bool,
    /// The callback URL to register with it.
    pub callback_url: String,
    /// GitHub's web URL.
    pub github_url: String,
    /// Tasks waiting, running, and sandboxes kept alive, across users.
    pub counts: Result<(i64, i64, i64), String>,
}

/// Reads every check now.
pub async fn checks(state: &AppState) -> Checks {
    let (backend, sandbox_host, sandbox_answer) = match state.config.sandbox_backend {
        crate::config::SandboxBackend::Kubernetes => kubernetes_check(state).await,
        crate::config::SandboxBackend::Docker => docker_check(state).await,
    };
    let migration = match state.store.migration_version().await {
        Ok(Some(v)) => Ok(v.to_string()),
        Ok(None) => Ok("none applied".into()),
        Err(err) => {
            tracing::warn!(error = %err, "operator page: cannot read the migration version");
            Err("cannot be read (see the log)".into())
        }
    };
    let counts = state.store.count_queue_running_kept().await.map_err(|err| {
        tracing::warn!(error = %err, "operator page: cannot count tasks");
        "cannot be read (see the log)".to_owned()
    });
    Checks {
        backend,
        sandbox_host,
        sandbox_answer,
        image: state.image.status(),
        image_tail: state.image.failure_tail(),
        database: match state.store.backend() {
            crate::store::Backend::Sqlite => "SQLite",
            crate::store::Backend::Postgres => "PostgreSQL",
        },
        migration,
        github_configured: state.github.oauth_configured(),
        callback_url: format!("{}/auth/github/callback", state.public_url),
        github_url: state.github.web_url().trim_end_matches('/').to_owned(),
        counts,
    }
}

/// The Docker check: the daemon's address and version.
async fn docker_check(state: &AppState) -> (&'static str, String, Result<String, String>) {
    let mut docker_host = state
        .config
        .docker_host
        .clone()
        .unwrap_or_else(|| "Docker's default (DOCKER_HOST unset)".into());
    let docker = tokio::time::timeout(DOCKER_TIMEOUT, async {
        let images = drydock_sandbox::Images::connect(
            state.config.docker_host.as_deref(),
            state.config.docker_cert_path.as_deref(),
        )
        .await?;
        Ok::<_, drydock_sandbox::SandboxError>((images.host().to_owned(), images.version().await?))
    })
    .await;
    let answer = match docker {
        Ok(Ok((host, version))) => {
            docker_host = host;
            Ok(format!("version {version}"))
        }
        Ok(Err(err)) => Err(format!("does not answer: {err}")),
        Err(_) => Err("does not answer: no answer within 3 s".to_owned()),
    };
    ("Docker", docker_host, answer)
}

/// The Kubernetes check: the namespace, and whether the API server grants every right drydock
/// needs there (the access reviews `/readyz` asks too).
async fn kubernetes_check(state: &AppState) -> (&'static str, String, Result<String, String>) {
    let place = format!("namespace {}", state.config.kubernetes_namespace);
    let ping = async { state.runner.sandboxes().await?.ping().await };
    let answer = match tokio::time::timeout(DOCKER_TIMEOUT * 3, ping).await {
        Ok(Ok(())) => Ok("the API server answers and grants every right drydock needs".to_owned()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("the API server did not answer within 9 s".to_owned()),
    };
    ("Kubernetes", place, answer)
}

#[derive(Template, WebTemplate)]
#[template(path = "admin.html")]
struct AdminPage {
    chrome: Chrome,
    checks: Checks,
    /// The replicas sharing the database.
    replicas: Result<Vec<ReplicaView>, String>,
    /// Settings that differ from their defaults, secrets as `(set)`.
    settings: Vec<(String, String)>,
    /// Whether the GitHub webhook is configured.
    webhook_configured: bool,
    /// Its recent deliveries across users, newest first.
    deliveries: Vec<super::triggers::DeliveryRow>,
}

/// `/admin`: the operator page for `DRYDOCK_ADMINS`, 404 for anyone else.
pub(super) async fn admin_page(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
) -> Response {
    let Some(user) = user.filter(|u| is_admin(&state, u)) else {
        return ErrorPage::new(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no page at this address.",
        )
        .with_link("/", "Go to your tasks")
        .into_response();
    };
    let quota = crate::tasks::quota_of(&state, &user.user.id).await.ok();
    // Decoration like the other checks: a failed read shows an empty table, not an error page.
    let deliveries = state
        .store
        .list_recent_deliveries(super::triggers::DELIVERIES_SHOWN)
        .await
        .unwrap_or_else(|err| {
            tracing::warn!(error = %err, "operator page: cannot list webhook deliveries");
            Vec::new()
        });
    AdminPage {
        chrome: Chrome {
            user: Some(user.user.clone()),
            quota,
            nav: "admin",
            image: None,
            admin: true,
        },
        checks: checks(&state).await,
        replicas: replicas(&state).await,
        settings: state.config.changed_settings.clone(),
        webhook_configured: state.config.github_webhook_secret.is_some(),
        deliveries: super::triggers::delivery_rows(deliveries),
    }
    .into_response()
}
