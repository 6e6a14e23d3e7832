//! `/api/connectors`: each user's MCP servers (stdio commands or HTTP endpoints), their write-only
//! secrets, connection tests and a catalog of presets.
//!
//! Env and header values are secrets: the map is sealed as one JSON object at rest, and responses
//! show only names and hints. Connection tests reach out only to public addresses unless the
//! operator allows private ones (see [`outbound`]).

pub mod breaker;
pub mod catalog;
pub mod mcp_client;
pub mod oauth;
mod oauth_flow;
pub mod outbound;
mod sandboxed;
pub mod tokens;
pub mod validate;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::validate::Draft;
use crate::auth::CurrentUser;
use crate::error::{ApiJson, ApiPath, AppError, ErrorBody};
use crate::redact::{Redactor, SecretSet};
use crate::secrets::{SecretBox, SecretsError};
use crate::state::AppState;
use crate::store::{Connector, ConnectorCheck, ConnectorUpdate, NewConnector, StoreError};

/// How long a connection test may take, from DNS to the last tool.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_connectors, create_connector))
        .routes(routes!(list_catalog))
        .routes(routes!(get_connector, update_connector, delete_connector))
        .routes(routes!(test_connector))
        .routes(routes!(oauth_flow::start_oauth))
        .route(
            oauth_flow::CALLBACK_PATH,
            axum::routing::get(oauth_flow::finish_oauth),
        )
}

/// A secret entry as the user sees it: its name and, for long values, the last four characters.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecretEntry {
    /// Variable or header name.
    pub name: String,
    /// Last four characters of the value (absent for values under 8 characters).
    pub hint: Option<String>,
}

/// A connector as the user sees it; secret values never appear.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectorView {
    /// Connector id.
    pub id: String,
    /// Name, unique per user.
    pub name: String,
    /// Free text.
    pub description: String,
    /// `stdio` or `http`.
    pub transport: String,
    /// stdio: the program.
    pub command: Option<String>,
    /// stdio: its arguments.
    pub args: Vec<String>,
    /// stdio: environment variables (names and hints).
    pub env: Vec<SecretEntry>,
    /// http: the endpoint.
    pub url: Option<String>,
    /// http: headers (names and hints).
    pub headers: Vec<SecretEntry>,
    /// `headers` (static headers) or `oauth` (signs in through the authorization-code flow).
    pub auth: String,
    /// `connected`, `needs_auth` (OAuth, never signed in), `needs_reauth` (refresh refused or
    /// revoked), `error` (last test failed; see `last_error`) or `disabled`.
    pub status: String,
    /// Why the connector is `needs_reauth`, redacted.
    pub status_detail: Option<String>,
    /// Circuit breaker: drydock leaves the server alone until this time (unix ms), after
    /// repeated failures to reach it.
    pub paused_until: Option<i64>,
    /// OAuth: the issuer signed in with.
    pub oauth_issuer: Option<String>,
    /// OAuth: scopes granted.
    pub oauth_scopes: Vec<String>,
    /// Used by tasks by default.
    pub enabled: bool,
    /// `ok` or `error` from the last connection test.
    pub last_status: Option<String>,
    /// When it was last tested, unix ms.
    pub last_checked_at: Option<i64>,
    /// What went wrong at the last test.
    pub last_error: Option<String>,
    /// Tools offered at the last successful test.
    pub tool_count: Option<i64>,
    /// Created, unix ms.
    pub created_at: i64,
    /// Last changed, unix ms.
    pub updated_at: i64,
}

/// The user's connectors.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectorList {
    /// By name.
    pub connectors: Vec<ConnectorView>,
}

/// The presets.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Catalog {
    /// Well-known MCP servers.
    pub presets: Vec<catalog::Preset>,
}

/// Body of `POST /api/connectors`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnector {
    /// Unique per user: letters, digits, `-` and `_`, at most 64.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// `stdio` or `http`.
    pub transport: String,
    /// stdio: the program, e.g. `npx`.
    pub command: Option<String>,
    /// stdio: its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// stdio: environment variables (values are secrets).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// http: the MCP endpoint.
    pub url: Option<String>,
    /// http: headers sent with every request (values are secrets).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `headers` (default) or `oauth` (http only: sign in with Connect).
    pub auth: Option<String>,
    /// Used by tasks by default (true when absent).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// Body of `PATCH /api/connectors/{id}`: absent fields are kept.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConnector {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New transport; the other transport's fields are dropped.
    pub transport: Option<String>,
    /// New command.
    pub command: Option<String>,
    /// New arguments (replaces the list).
    pub args: Option<Vec<String>>,
    /// Env changes by name: a string sets the value, `null` removes it, absent names are kept.
    #[schema(value_type = Option<BTreeMap<String, Option<String>>>)]
    pub env: Option<BTreeMap<String, Option<String>>>,
    /// New URL.
    pub url: Option<String>,
    /// Header changes by name: a string sets the value, `null` removes it, absent names are kept.
    #[schema(value_type = Option<BTreeMap<String, Option<String>>>)]
    pub headers: Option<BTreeMap<String, Option<String>>>,
    /// `headers` or `oauth`; changing it (or the URL) forgets the OAuth tokens.
    pub auth: Option<String>,
    /// Used by tasks by default.
    pub enabled: Option<bool>,
}

/// A tool a connector offers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolView {
    /// Tool name.
    pub name: String,
    /// What it does, as the server says.
    pub description: Option<String>,
}

/// The outcome of a connection test.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectorTest {
    /// `ok` or `error`.
    pub status: String,
    /// When it ran, unix ms.
    pub checked_at: i64,
    /// The tools offered (empty on error).
    pub tools: Vec<ToolView>,
    /// Number of tools, when the test succeeded.
    pub tool_count: Option<i64>,
    /// What went wrong, for people; never contains a secret value.
    pub error: Option<String>,
    /// `streamable-http` or `sse`, when the test succeeded.
    pub transport_used: Option<String>,
    /// The server's name and version, when it gave them.
    pub server: Option<String>,
    /// Circuit breaker: the server was not contacted, or will not be, before this time (unix ms).
    pub paused_until: Option<i64>,
}

/// Refuses an unknown auth, and OAuth on anything but HTTP.
fn check_auth(auth: &str, transport: &str) -> Result<(), AppError> {
    match auth {
        "headers" => Ok(()),
        "oauth" if transport == "http" => Ok(()),
        "oauth" => Err(AppError::invalid(
            "auth",
            "OAuth is for remote HTTP connectors; a stdio connector takes env values",
        )),
        _ => Err(AppError::invalid("auth", "auth must be headers or oauth")),
    }
}

/// The state shown for a connector (see [`ConnectorView::status`]).
pub fn status_of(row: &Connector) -> &'static str {
    if !row.enabled {
        "disabled"
    } else if row.auth == "oauth" && row.oauth_error.is_some() {
        "needs_reauth"
    } else if row.auth == "oauth" && row.oauth_enc.is_none() {
        "needs_auth"
    } else if row.last_status.as_deref() == Some("error") {
        "error"
    } else {
        "connected"
    }
}

fn not_found() -> AppError {
    AppError::NotFound("connector")
}

/// A connector's env and header values, opened. For the runner: it writes them into the agent's
/// MCP config and adds every value to the task's redaction set.
#[derive(Default)]
pub struct ConnectorSecrets {
    /// Environment variables of a stdio connector.
    pub env: BTreeMap<String, String>,
    /// Headers of an HTTP connector.
    pub headers: BTreeMap<String, String>,
}

impl std::fmt::Debug for ConnectorSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorSecrets")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Opens a connector's sealed env and header maps.
pub fn open_secrets(
    secrets: &SecretBox,
    row: &Connector,
) -> Result<ConnectorSecrets, SecretsError> {
    Ok(ConnectorSecrets {
        env: open_sealed_map(secrets, row.env_enc.as_deref())?,
        headers: open_sealed_map(secrets, row.headers_enc.as_deref())?,
    })
}

fn open_sealed_map(
    secrets: &SecretBox,
    sealed: Option<&str>,
) -> Result<BTreeMap<String, String>, SecretsError> {
    match sealed {
        None => Ok(BTreeMap::new()),
        Some(sealed) => {
            let json = secrets.open_str(sealed)?;
            serde_json::from_str(&json).map_err(|_| SecretsError::Malformed)
        }
    }
}

fn open_map(state: &AppState, sealed: Option<&str>) -> Result<BTreeMap<String, String>, AppError> {
    Ok(open_sealed_map(&state.secrets, sealed)?)
}

fn seal_map(state: &AppState, map: &BTreeMap<String, String>) -> Result<Option<String>, AppError> {
    if map.is_empty() {
        return Ok(None);
    }
    let json = serde_json::to_string(map).map_err(AppError::internal)?;
    Ok(Some(state.secrets.seal_str(&json)))
}

fn entries(map: &BTreeMap<String, String>) -> Vec<SecretEntry> {
    map.iter()
        .map(|(name, value)| SecretEntry {
            name: name.clone(),
            hint: validate::hint_of(value),
        })
        .collect()
}

fn parse_args(row: &Connector) -> Result<Vec<String>, AppError> {
    serde_json::from_str(&row.args).map_err(AppError::internal)
}

fn view(state: &AppState, row: Connector) -> Result<ConnectorView, AppError> {
    let env = open_map(state, row.env_enc.as_deref())?;
    let headers = open_map(state, row.headers_enc.as_deref())?;
    let grant = row
        .oauth_enc
        .as_deref()
        .and_then(|sealed| token_source(state).open(sealed).ok());
    Ok(ConnectorView {
        status: status_of(&row).to_owned(),
        status_detail: row.oauth_error.clone(),
        paused_until: breaker::paused(&row, crate::store::now_ms()),
        oauth_issuer: grant.as_ref().map(|g| g.issuer.clone()),
        oauth_scopes: grant.map(|g| g.scopes).unwrap_or_default(),
        auth: row.auth.clone(),
        args: parse_args(&row)?,
        env: entries(&env),
        headers: entries(&headers),
        id: row.id,
        name: row.name,
        description: row.description,
        transport: row.transport,
        command: row.command,
        url: row.url,
        enabled: row.enabled,
        last_status: row.last_status,
        last_checked_at: row.last_checked_at,
        last_error: row.last_error,
        tool_count: row.tool_count,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn draft_of(state: &AppState, row: &Connector) -> Result<Draft, AppError> {
    Ok(Draft {
        name: row.name.clone(),
        description: row.description.clone(),
        transport: row.transport.clone(),
        command: row.command.clone(),
        args: parse_args(row)?,
        env: open_map(state, row.env_enc.as_deref())?,
        url: row.url.clone(),
        headers: open_map(state, row.headers_enc.as_deref())?,
        enabled: row.enabled,
    })
}

fn conflict(name: &str) -> AppError {
    AppError::Conflict(format!(
        "you already have a connector named {name}; pick another name"
    ))
}

/// Lists the user's connectors with the outcome of their last test.
#[utoipa::path(get, path = "/api/connectors", tag = "connectors",
    responses((status = 200, body = ConnectorList), (status = 401, body = ErrorBody)))]
async fn list_connectors(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Json<ConnectorList>, AppError> {
    let rows = state.store.list_connectors(&user.user.id).await?;
    let connectors = rows
        .into_iter()
        .map(|row| view(&state, row))
        .collect::<Result<_, _>>()?;
    Ok(Json(ConnectorList { connectors }))
}

/// The catalog of presets that fill the connector form.
#[utoipa::path(get, path = "/api/connectors/catalog", tag = "connectors",
    responses((status = 200, body = Catalog), (status = 401, body = ErrorBody)))]
async fn list_catalog(_user: CurrentUser) -> Json<Catalog> {
    Json(Catalog {
        presets: catalog::presets(),
    })
}

/// Creates a connector.
#[utoipa::path(post, path = "/api/connectors", tag = "connectors", request_body = CreateConnector,
    responses((status = 201, body = ConnectorView), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn create_connector(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(body): ApiJson<CreateConnector>,
) -> Result<(StatusCode, Json<ConnectorView>), AppError> {
    let draft = Draft {
        name: body.name,
        description: body.description,
        transport: body.transport,
        command: body.command,
        args: body.args,
        env: body.env,
        url: body.url.map(|u| u.trim().to_owned()),
        headers: body.headers,
        enabled: body.enabled,
    };
    validate::check(&draft)?;
    let auth = body.auth.unwrap_or_else(|| "headers".to_owned());
    check_auth(&auth, &draft.transport)?;
    let args = serde_json::to_string(&draft.args).map_err(AppError::internal)?;
    let env_enc = seal_map(&state, &draft.env)?;
    let headers_enc = seal_map(&state, &draft.headers)?;
    let row = state
        .store
        .insert_connector(&NewConnector {
            auth: &auth,
            user_id: &user.user.id,
            name: &draft.name,
            description: &draft.description,
            transport: &draft.transport,
            command: draft.command.as_deref(),
            args: &args,
            url: draft.url.as_deref(),
            env_enc: env_enc.as_deref(),
            headers_enc: headers_enc.as_deref(),
            enabled: draft.enabled,
        })
        .await
        .map_err(|err| match err {
            StoreError::Conflict => conflict(&draft.name),
            other => other.into(),
        })?;
    tracing::info!(user_id = %user.user.id, connector_id = %row.id, transport = %row.transport, "connector created");
    Ok((StatusCode::CREATED, Json(view(&state, row)?)))
}

/// One connector.
#[utoipa::path(get, path = "/api/connectors/{id}", tag = "connectors",
    params(("id" = String, Path, description = "Connector id")),
    responses((status = 200, body = ConnectorView), (status = 404, body = ErrorBody)))]
async fn get_connector(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConnectorView>, AppError> {
    let row = state
        .store
        .get_connector(&user.user.id, &id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(view(&state, row)?))
}

/// Changes a connector: absent fields are kept; in `env` and `headers` a string sets a value,
/// `null` removes it and absent names are kept.
#[utoipa::path(patch, path = "/api/connectors/{id}", tag = "connectors", request_body = UpdateConnector,
    params(("id" = String, Path, description = "Connector id")),
    responses((status = 200, body = ConnectorView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_connector(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<UpdateConnector>,
) -> Result<Json<ConnectorView>, AppError> {
    let row = state
        .store
        .get_connector(&user.user.id, &id)
        .await?
        .ok_or_else(not_found)?;
    let mut draft = draft_of(&state, &row)?;
    if let Some(transport) = patch.transport
        && transport != draft.transport
    {
        // Switching transport drops what only the old one used.
        draft.command = None;
        draft.args.clear();
        draft.env.clear();
        draft.url = None;
        draft.headers.clear();
        draft.transport = transport;
    }
    if let Some(name) = patch.name {
        draft.name = name;
    }
    if let Some(description) = patch.description {
        draft.description = description;
    }
    if let Some(command) = patch.command {
        draft.command = Some(command);
    }
    if let Some(args) = patch.args {
        draft.args = args;
    }
    if let Some(url) = patch.url {
        draft.url = Some(url.trim().to_owned());
    }
    if let Some(enabled) = patch.enabled {
        draft.enabled = enabled;
    }
    for (changes, map) in [
        (patch.env, &mut draft.env),
        (patch.headers, &mut draft.headers),
    ] {
        for (name, value) in changes.unwrap_or_default() {
            match value {
                Some(value) => map.insert(name, value),
                None => map.remove(&name),
            };
        }
    }
    validate::check(&draft)?;
    let auth = patch.auth.unwrap_or_else(|| row.auth.clone());
    check_auth(&auth, &draft.transport)?;
    // The tokens were issued for this resource: a new URL or auth needs a new sign-in.
    let keep_grant = auth == row.auth && draft.url == row.url;
    if !keep_grant {
        revoke_grant(&state, &row).await;
    }
    let args = serde_json::to_string(&draft.args).map_err(AppError::internal)?;
    let env_enc = seal_map(&state, &draft.env)?;
    let headers_enc = seal_map(&state, &draft.headers)?;
    let row = state
        .store
        .update_connector(
            &user.user.id,
            &id,
            &ConnectorUpdate {
                auth: &auth,
                keep_grant,
                name: &draft.name,
                description: &draft.description,
                transport: &draft.transport,
                command: draft.command.as_deref(),
                args: &args,
                url: draft.url.as_deref(),
                env_enc: env_enc.as_deref(),
                headers_enc: headers_enc.as_deref(),
                enabled: draft.enabled,
            },
        )
        .await
        .map_err(|err| match err {
            StoreError::Conflict => conflict(&draft.name),
            other => other.into(),
        })?
        .ok_or_else(not_found)?;
    tracing::info!(user_id = %user.user.id, connector_id = %row.id, "connector updated");
    Ok(Json(view(&state, row)?))
}

/// Deletes a connector.
#[utoipa::path(delete, path = "/api/connectors/{id}", tag = "connectors",
    params(("id" = String, Path, description = "Connector id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_connector(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    if let Some(row) = state.store.get_connector(&user.user.id, &id).await? {
        revoke_grant(&state, &row).await;
    }
    if state.store.delete_connector(&user.user.id, &id).await? {
        tracing::info!(user_id = %user.user.id, connector_id = %id, "connector deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

/// Connects to a connector (an HTTP endpoint directly; a stdio command inside a short-lived
/// sandbox), speaks MCP (initialize, tools/list) and records the outcome.
/// Connection failures are a 200 with `status: error` and a message for people.
#[utoipa::path(post, path = "/api/connectors/{id}/test", tag = "connectors",
    params(("id" = String, Path, description = "Connector id")),
    responses((status = 200, body = ConnectorTest), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn test_connector(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConnectorTest>, AppError> {
    let row = state
        .store
        .get_connector(&user.user.id, &id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(run_test(&state, &user.user.id, row).await?))
}

/// Where the connector code reads and writes OAuth grants.
pub fn token_source(state: &AppState) -> tokens::TokenSource<'_> {
    tokens::TokenSource {
        store: &state.store,
        secrets: &state.secrets,
        allow_private: state.config.allow_private_connector_urls,
        locks: state.runner.connector_refresh_locks(),
        backoff_ms: i64::from(state.config.connector_backoff_secs) * 1000,
    }
}

/// Revokes a connector's OAuth tokens at the authorization server when it offers revocation
/// (RFC 7009); failures are logged (the tokens are erased by the caller either way).
async fn revoke_grant(state: &AppState, row: &Connector) {
    let Some(sealed) = row.oauth_enc.as_deref() else {
        return;
    };
    let Ok(grant) = token_source(state).open(sealed) else {
        return;
    };
    match oauth::revoke(&grant, state.config.allow_private_connector_urls).await {
        Ok(true) => tracing::info!(connector_id = %row.id, "connector tokens revoked"),
        Ok(false) => {
            tracing::info!(connector_id = %row.id, "the authorization server offers no revocation")
        }
        Err(err) => {
            let text = Scrubber::new(grant.secret_values().iter())
                .map(|s| s.scrub(&err.to_string()))
                .unwrap_or_default();
            tracing::warn!(connector_id = %row.id, error = %text, "connector token revocation failed");
        }
    }
}

async fn probe_http(
    state: &AppState,
    row: &Connector,
    headers: &BTreeMap<String, String>,
) -> Result<Result<mcp_client::Probe, mcp_client::ProbeError>, AppError> {
    let url = validate::check_url(row.url.as_deref().unwrap_or_default())?;
    let mut header_map = HeaderMap::new();
    for (name, value) in headers {
        let (name, value) = mcp_client::header_pair(name, value).ok_or_else(|| {
            AppError::invalid(format!("headers.{name}"), "not a valid HTTP header")
        })?;
        header_map.append(name, value);
    }
    let target = mcp_client::HttpTarget {
        url,
        headers: header_map,
        allow_private: state.config.allow_private_connector_urls,
    };
    Ok(mcp_client::probe(&target, TEST_TIMEOUT).await)
}

/// Runs a connection test of `row` (the user's) and records its outcome. An OAuth connector's
/// token is refreshed first when it is about to expire, and once more when the server refuses
/// it with a 401.
pub(crate) async fn run_test(
    state: &AppState,
    user_id: &str,
    row: Connector,
) -> Result<ConnectorTest, AppError> {
    let id = row.id.clone();
    let now = crate::store::now_ms();
    if row.transport == "http"
        && let Some(until) = breaker::paused(&row, now)
    {
        // The breaker is open: answer without contacting the server.
        let when = chrono::DateTime::from_timestamp_millis(until).map_or_else(String::new, |t| {
            t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
        });
        return Ok(ConnectorTest {
            status: "error".into(),
            checked_at: now,
            tools: Vec::new(),
            tool_count: None,
            error: Some(format!(
                "paused until {when} after {} failed attempts to reach the server (last: {}); drydock tries again after that",
                row.failures,
                row.last_error.as_deref().unwrap_or("unreachable")
            )),
            transport_used: None,
            server: None,
            paused_until: Some(until),
        });
    }
    // Whether the server was reached (`Some(false)`: it was down), for the breaker.
    let mut reached: Option<bool> = None;
    let mut seen = |result: Result<mcp_client::Probe, mcp_client::ProbeError>| {
        match &result {
            Err(err) if breaker::is_outage(err) => reached = Some(false),
            _ => reached = Some(true),
        }
        result
    };
    let mut headers = open_map(state, row.headers_enc.as_deref())?;
    let env = open_map(state, row.env_enc.as_deref())?;
    let mut secret_values: Vec<String> = headers.values().chain(env.values()).cloned().collect();
    let outcome: Result<mcp_client::Probe, String> =
        if row.transport == "http" && row.auth == "oauth" {
            let source = token_source(state);
            match source.fresh_grant(&row, false).await {
                Err(problem) => Err(format!("not used: {problem}")),
                Ok(grant) => {
                    secret_values.extend(grant.secret_values());
                    headers.insert(
                        "Authorization".into(),
                        format!("Bearer {}", grant.access_token),
                    );
                    match seen(probe_http(state, &row, &headers).await?) {
                        Err(mcp_client::ProbeError::Unauthorized { .. }) => {
                            match source.fresh_grant(&row, true).await {
                                Err(problem) => {
                                    Err(format!("the server refused the token, and {problem}"))
                                }
                                Ok(grant) => {
                                    secret_values.extend(grant.secret_values());
                                    headers.insert(
                                        "Authorization".into(),
                                        format!("Bearer {}", grant.access_token),
                                    );
                                    seen(probe_http(state, &row, &headers).await?)
                                        .map_err(|err| err.to_string())
                                }
                            }
                        }
                        other => other.map_err(|err| err.to_string()),
                    }
                }
            }
        } else if row.transport == "http" {
            seen(probe_http(state, &row, &headers).await?).map_err(|err| err.to_string())
        } else {
            let args: Vec<String> = serde_json::from_str(&row.args).unwrap_or_default();
            sandboxed::probe_in_sandbox(
                &state.runner,
                &row.id,
                row.command.as_deref().unwrap_or_default(),
                &args,
                &env,
                TEST_TIMEOUT,
            )
            .await
        };
    let paused_until = match reached {
        Some(false) => {
            let until = breaker::pause_after_failure(
                row.failures,
                now,
                i64::from(state.config.connector_backoff_secs) * 1000,
            );
            state
                .store
                .record_connector_reachability(&id, Some(until))
                .await?;
            until
        }
        Some(true) if row.failures > 0 => {
            state.store.record_connector_reachability(&id, None).await?;
            None
        }
        _ => None,
    };
    let scrubber = Scrubber::new(secret_values.iter())?;
    let (status, error, tools, transport_used, server) = match outcome {
        Ok(probe) => {
            let tools: Vec<ToolView> = probe
                .tools
                .into_iter()
                .map(|t| ToolView {
                    name: scrubber.scrub(&t.name),
                    description: t.description.map(|d| scrubber.scrub(&d)),
                })
                .collect();
            let server = probe.server_name.map(|name| {
                let text = match probe.server_version {
                    Some(version) => format!("{name} {version}"),
                    None => name,
                };
                scrubber.scrub(&text)
            });
            ("ok", None, tools, Some(probe.transport.to_owned()), server)
        }
        Err(err) => ("error", Some(scrubber.scrub(&err)), Vec::new(), None, None),
    };
    let tool_count = (status == "ok").then(|| i64::try_from(tools.len()).unwrap_or(i64::MAX));
    let row = state
        .store
        .record_connector_check(
            user_id,
            &id,
            &ConnectorCheck {
                status,
                error: error.as_deref(),
                tool_count,
            },
        )
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(user_id = %user_id, connector_id = %id, status, tool_count, "connector tested");
    Ok(ConnectorTest {
        status: status.to_owned(),
        checked_at: row.last_checked_at.unwrap_or_default(),
        tools,
        tool_count,
        error,
        transport_used,
        server,
        paused_until,
    })
}

/// Authorization schemes that are not part of a secret.
const AUTH_SCHEMES: [&str; 4] = ["Bearer", "Basic", "Token", "Digest"];

/// Removes a connector's secret values from text that may quote them (errors, server answers).
pub(crate) struct Scrubber {
    redactor: Redactor,
    /// Values too short for the redactor, and the parts of `Bearer <token>`-style values.
    literals: Vec<String>,
}

impl Scrubber {
    pub(crate) fn new<'a>(values: impl Iterator<Item = &'a String>) -> Result<Self, AppError> {
        let mut set = SecretSet::new();
        let mut literals = Vec::new();
        for value in values {
            set.add("connector-secret", value);
            literals.push(value.trim().to_owned());
            // The token of `Bearer <token>` on its own; the scheme word is no secret.
            for part in value
                .split_whitespace()
                .filter(|p| !AUTH_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(p)))
            {
                set.add("connector-secret", part);
                literals.push(part.to_owned());
            }
        }
        // Longest first so that a value is replaced before a part of it; very short values
        // would mangle ordinary words and carry little of a secret.
        literals.retain(|l| l.chars().count() >= 4);
        literals.sort_by_key(|l| std::cmp::Reverse(l.len()));
        literals.dedup();
        let redactor = Redactor::new(set).map_err(AppError::internal)?;
        Ok(Self { redactor, literals })
    }

    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = self.redactor.redact(text);
        for literal in &self.literals {
            if out.contains(literal.as_str()) {
                out = out.replace(literal.as_str(), "[REDACTED:connector-secret]");
            }
        }
        out
    }
}
