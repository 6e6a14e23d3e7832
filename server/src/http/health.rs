//! Liveness and readiness probes.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{AppError, ErrorBody};
use crate::state::AppState;

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(get_sandbox_image))
}

/// The sandbox image's state: ready, or being built (which step, since when), or why not.
#[utoipa::path(
    get,
    path = "/api/sandbox-image",
    tag = "ops",
    security(()),
    responses((status = 200, body = crate::sandbox_image::ImageStatus))
)]
async fn get_sandbox_image(
    State(state): State<AppState>,
) -> Json<crate::sandbox_image::ImageStatus> {
    Json(state.image.status())
}

/// A probe's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
    /// `/readyz` only: the sandbox image's state (`ready`, `building`, `checking`, `failed`,
    /// `missing`, `unknown`), or `not_checked` on Kubernetes, where the nodes pull the image
    /// and drydock cannot see it (a pod that cannot get it fails its task with that reason).
    /// drydock stays ready while it builds its image: tasks wait in the queue, and everything
    /// else works.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_image: Option<&'static str>,
}

/// Answers 200 while the process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", security(()), responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        sandbox_image: None,
    })
}

/// Answers 200 when the database and the sandbox backend (Docker, or the Kubernetes API server
/// granting every right drydock uses) are reachable (with the sandbox image's state), 503 with
/// the reason otherwise (on Kubernetes naming each missing right).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    security(()),
    responses((status = 200, body = Health), (status = 503, body = ErrorBody))
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, AppError> {
    match tokio::time::timeout(PROBE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: database unreachable");
            return Err(AppError::Unavailable("database unreachable".into()));
        }
        Err(_) => {
            tracing::warn!("readiness: database did not answer in time");
            return Err(AppError::Unavailable(
                "database did not answer in time".into(),
            ));
        }
    }
    // The sandbox backend: the Docker daemon, or the Kubernetes API server.
    let backend = match state.config.sandbox_backend {
        crate::config::SandboxBackend::Kubernetes => "the Kubernetes API server",
        crate::config::SandboxBackend::Docker => "Docker",
    };
    let sandboxes = async {
        let sandboxes = state.runner.sandboxes().await?;
        sandboxes.ping().await
    };
    match tokio::time::timeout(PROBE_TIMEOUT * 3, sandboxes).await {
        Ok(Ok(())) => Ok(Json(Health {
            status: "ready",
            sandbox_image: Some(match state.config.sandbox_backend {
                crate::config::SandboxBackend::Kubernetes => "not_checked",
                crate::config::SandboxBackend::Docker => state.image.status().state,
            }),
        })),
        // Rights taken away since start-up: say which, as the start-up check does.
        Ok(Err(err @ drydock_sandbox::SandboxError::MissingRights { .. })) => {
            tracing::warn!(error = %err, "readiness: the sandbox backend refuses what drydock needs");
            Err(AppError::Unavailable(format!("{err}: tasks cannot run")))
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %err, backend, "readiness: the sandbox backend is unreachable");
            Err(AppError::Unavailable(format!(
                "{backend} unreachable: tasks cannot run"
            )))
        }
        Err(_) => Err(AppError::Unavailable(format!(
            "{backend} did not answer in time"
        ))),
    }
}
