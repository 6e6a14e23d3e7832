//! `/api/environments/{owner}/{repo}`: the environment a user configures in drydock for one
//! repository (image, scripts, variables, write-only secrets), its snapshots, its last setup,
//! and a rebuild.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{ApiJson, ApiPath, AppError, ErrorBody};
use crate::github::GithubError;
use crate::repos::github_token;
use crate::state::AppState;
use crate::store::EnvironmentUpdate;

/// Longest script accepted, in bytes.
const MAX_SCRIPT_BYTES: usize = 64 * 1024;
/// Longest variable or secret value, in bytes.
const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Most variables or secrets per environment.
const MAX_ENTRIES: usize = 100;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_environment, put_environment))
        .routes(routes!(rebuild_environment))
}

/// A secret as its owner sees it: never its value.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecretView {
    /// Variable name it is given as.
    pub name: String,
    /// Whether the agent's process sees it too (otherwise setup and maintenance only).
    pub agent_may_see: bool,
    /// When it was last set, unix ms.
    pub updated_at: i64,
}

/// A snapshot on the Docker host.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SnapshotView {
    /// `drydock-env:<key>`.
    pub tag: String,
    /// When it was made, unix seconds.
    pub created_unix: i64,
    /// Image size with its layers, bytes.
    pub size_bytes: i64,
    /// Whether a sandbox uses it now (it is not pruned then).
    pub in_use: bool,
    /// Where its environment came from.
    pub source: Option<String>,
}

/// How the last setup ended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LastSetup {
    /// Where the environment came from.
    pub source: Option<String>,
    /// `succeeded` or `failed`.
    pub status: Option<String>,
    /// When, unix ms.
    pub at: Option<i64>,
    /// Its log (last lines, redacted).
    pub log: Option<String>,
}

/// A repository's environment as configured in drydock.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EnvironmentView {
    /// `owner/name`.
    pub repo: String,
    /// Registered image name; `null` for drydock's image.
    pub image: Option<String>,
    /// Setup script.
    pub setup: Option<String>,
    /// Maintenance script.
    pub maintenance: Option<String>,
    /// Plain variables.
    pub variables: BTreeMap<String, String>,
    /// Secrets, names only.
    pub secrets: Vec<SecretView>,
    /// Rebuild generation (part of the snapshot key).
    pub generation: i64,
    /// The last setup run for this repository.
    pub last_setup: LastSetup,
    /// Snapshots of this repository on the Docker host, newest first (empty when Docker is
    /// unreachable).
    pub snapshots: Vec<SnapshotView>,
    /// Image names the operator registered, for `image`.
    pub registered_images: Vec<String>,
}

/// One secret in `PUT`: a new value, or (without `value`) a change of `agent_may_see` only.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretInput {
    /// New value (write-only).
    pub value: Option<String>,
    /// Whether the agent's process may see it (default false: setup and maintenance only).
    #[serde(default)]
    pub agent_may_see: bool,
}

/// Body of `PUT /api/environments/{owner}/{repo}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutEnvironment {
    /// Registered image name; absent or `null` for drydock's image.
    pub image: Option<String>,
    /// Setup script (`sh -e`), once per snapshot key.
    pub setup: Option<String>,
    /// Maintenance script, on every start from a snapshot.
    pub maintenance: Option<String>,
    /// Plain variables; replaces the stored ones.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Secrets to set (`{ "value": ... }`), change, or remove (`null`); others stay as they are.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub secrets: BTreeMap<String, Option<SecretInput>>,
}

/// Checks that the user can read `owner/repo` on GitHub; 404 otherwise, as for anything that
/// is not theirs.
pub(crate) async fn owned_repo(
    state: &AppState,
    user: &CurrentUser,
    owner: &str,
    repo: &str,
) -> Result<String, AppError> {
    let full = format!("{owner}/{repo}");
    let valid = |p: &str| {
        !p.is_empty()
            && p.len() <= 100
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if !valid(owner) || !valid(repo) {
        return Err(AppError::NotFound("repository"));
    }
    let token = github_token(state, &user.user.id).await?;
    match state.github.repo(&token, &full).await {
        Ok(_) => Ok(full),
        Err(GithubError::NotFound) => Err(AppError::NotFound("repository")),
        Err(err) => Err(err.into()),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(crate) async fn view(
    state: &AppState,
    user_id: &str,
    repo: &str,
) -> Result<EnvironmentView, AppError> {
    let row = state.store.get_environment(user_id, repo).await?;
    let secrets = if row.is_some() {
        state.store.list_environment_secrets(user_id, repo).await?
    } else {
        Vec::new()
    };
    let mut snapshots = Vec::new();
    if let Ok(sandboxes) = state.runner.sandboxes().await
        && let Ok(images) = super::snapshots_of(&sandboxes, user_id, repo).await
    {
        for image in images {
            snapshots.push(SnapshotView {
                tag: image
                    .tags
                    .first()
                    .cloned()
                    .unwrap_or_else(|| image.id.clone()),
                created_unix: image.created_unix,
                size_bytes: image.size_bytes,
                in_use: sandboxes.image_in_use(&image.id).await.unwrap_or(false),
                source: image.labels.get(super::LABEL_SOURCE).cloned(),
            });
        }
    }
    let registered_images = super::registered_images(&state.config.environment_images)
        .into_keys()
        .collect();
    Ok(match row {
        Some(row) => EnvironmentView {
            repo: repo.to_owned(),
            image: row.image,
            setup: row.setup,
            maintenance: row.maintenance,
            variables: serde_json::from_str(&row.variables).unwrap_or_default(),
            secrets: secrets
                .into_iter()
                .map(|s| SecretView {
                    name: s.name,
                    agent_may_see: s.agent_may_see,
                    updated_at: s.updated_at,
                })
                .collect(),
            generation: row.generation,
            last_setup: LastSetup {
                source: row.last_source,
                status: row.last_setup_status,
                at: row.last_setup_at,
                log: row.last_setup_log,
            },
            snapshots,
            registered_images,
        },
        None => EnvironmentView {
            repo: repo.to_owned(),
            image: None,
            setup: None,
            maintenance: None,
            variables: BTreeMap::new(),
            secrets: Vec::new(),
            generation: 0,
            last_setup: LastSetup {
                source: None,
                status: None,
                at: None,
                log: None,
            },
            snapshots,
            registered_images,
        },
    })
}

/// The repository's environment as configured in drydock, its snapshots and last setup.
#[utoipa::path(get, path = "/api/environments/{owner}/{repo}", tag = "environments",
    params(("owner" = String, Path, description = "Repository owner"),
           ("repo" = String, Path, description = "Repository name")),
    responses((status = 200, body = EnvironmentView), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn get_environment(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath((owner, repo)): ApiPath<(String, String)>,
) -> Result<Json<EnvironmentView>, AppError> {
    let repo = owned_repo(&state, &user, &owner, &repo).await?;
    Ok(Json(view(&state, &user.user.id, &repo).await?))
}

/// Stores the repository's environment. Files in the repository (`.drydock/environment.toml`,
/// `.devcontainer/devcontainer.json`) take precedence over image and scripts; variables and
/// secrets apply whatever the source. Secret values are write-only.
#[utoipa::path(put, path = "/api/environments/{owner}/{repo}", tag = "environments",
    request_body = PutEnvironment,
    params(("owner" = String, Path, description = "Repository owner"),
           ("repo" = String, Path, description = "Repository name")),
    responses((status = 200, body = EnvironmentView), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_environment(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath((owner, repo)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PutEnvironment>,
) -> Result<Json<EnvironmentView>, AppError> {
    let repo = owned_repo(&state, &user, &owner, &repo).await?;
    let user_id = &user.user.id;
    let image = body
        .image
        .as_deref()
        .map(str::trim)
        .filter(|i| !i.is_empty());
    if let Some(image) = image
        && !super::registered_images(&state.config.environment_images).contains_key(image)
    {
        return Err(AppError::invalid(
            "image",
            format!("{image:?} is not an image the operator registered"),
        ));
    }
    for (field, script) in [("setup", &body.setup), ("maintenance", &body.maintenance)] {
        if script.as_ref().is_some_and(|s| s.len() > MAX_SCRIPT_BYTES) {
            return Err(AppError::invalid(field, "the script is longer than 64 KiB"));
        }
    }
    if body.variables.len() > MAX_ENTRIES || body.secrets.len() > MAX_ENTRIES {
        return Err(AppError::invalid(
            "variables",
            "at most 100 variables and 100 secrets",
        ));
    }
    for (name, value) in &body.variables {
        if !valid_name(name) {
            return Err(AppError::invalid(
                "variables",
                format!("{name:?} is not a variable name (letters, digits, _)"),
            ));
        }
        if value.len() > MAX_VALUE_BYTES || value.contains('\0') {
            return Err(AppError::invalid(
                "variables",
                format!("the value of {name} is too long or holds a NUL byte"),
            ));
        }
    }
    for (name, secret) in &body.secrets {
        if !valid_name(name) {
            return Err(AppError::invalid(
                "secrets",
                format!("{name:?} is not a variable name (letters, digits, _)"),
            ));
        }
        if let Some(SecretInput {
            value: Some(value), ..
        }) = secret
            && (value.is_empty() || value.len() > MAX_VALUE_BYTES || value.contains('\0'))
        {
            return Err(AppError::invalid(
                "secrets",
                format!("the value of {name} is empty, too long or holds a NUL byte"),
            ));
        }
    }
    let variables = serde_json::to_string(&body.variables)
        .map_err(|_| AppError::invalid("variables", "cannot be stored"))?;
    let blank = |s: &Option<String>| {
        s.as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
    };
    let setup = blank(&body.setup);
    let maintenance = blank(&body.maintenance);
    state
        .store
        .upsert_environment(
            user_id,
            &repo,
            &EnvironmentUpdate {
                image,
                setup: setup.as_deref(),
                maintenance: maintenance.as_deref(),
                variables: &variables,
            },
        )
        .await?;
    for (name, secret) in &body.secrets {
        match secret {
            None => {
                state
                    .store
                    .delete_environment_secret(user_id, &repo, name)
                    .await?;
            }
            Some(SecretInput {
                value: Some(value),
                agent_may_see,
            }) => {
                let sealed = state.secrets.seal_str(value);
                state
                    .store
                    .upsert_environment_secret(user_id, &repo, name, &sealed, *agent_may_see)
                    .await?;
            }
            Some(SecretInput {
                value: None,
                agent_may_see,
            }) => {
                if !state
                    .store
                    .set_environment_secret_visibility(user_id, &repo, name, *agent_may_see)
                    .await?
                {
                    return Err(AppError::invalid(
                        "secrets",
                        format!("{name} has no value yet"),
                    ));
                }
            }
        }
    }
    tracing::info!(user_id = %user_id, repo = %repo, secrets = body.secrets.len(), "environment stored");
    Ok(Json(view(&state, user_id, &repo).await?))
}

/// Makes the next task on the repository run setup afresh (a new snapshot key); older
/// snapshots are pruned as usual.
#[utoipa::path(post, path = "/api/environments/{owner}/{repo}/rebuild", tag = "environments",
    params(("owner" = String, Path, description = "Repository owner"),
           ("repo" = String, Path, description = "Repository name")),
    responses((status = 200, body = EnvironmentView), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn rebuild_environment(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath((owner, repo)): ApiPath<(String, String)>,
) -> Result<Json<EnvironmentView>, AppError> {
    let repo = owned_repo(&state, &user, &owner, &repo).await?;
    let generation = state
        .store
        .bump_environment_generation(&user.user.id, &repo)
        .await?;
    tracing::info!(user_id = %user.user.id, repo = %repo, generation, "environment rebuild requested");
    Ok(Json(view(&state, &user.user.id, &repo).await?))
}
