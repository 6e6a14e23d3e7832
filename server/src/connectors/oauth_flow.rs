//! "Connect" for connectors of auth `oauth`: `POST /api/connectors/{id}/oauth/start` discovers
//! the authorization server, registers drydock (or uses the operator's client for that issuer)
//! and answers the authorization URL; `GET /connectors/oauth/callback` checks the `state` (bound
//! to the session that started it, used once, 10 minutes), exchanges the code with the PKCE
//! verifier, seals the tokens and runs the connection test.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::oauth::{self, ClientCredentials, Grant, Pending};
use super::{Scrubber, not_found, validate};
use crate::auth::CurrentUser;
use crate::error::{ApiPath, AppError, ErrorBody};
use crate::state::AppState;
use crate::store::{OAuthRequest, now_ms};
use crate::web::ErrorPage;

/// How long an authorization request may take, from Connect to the callback.
pub const REQUEST_TTL_MS: i64 = 10 * 60 * 1000;

/// Where authorization servers send the browser back to.
pub const CALLBACK_PATH: &str = "/connectors/oauth/callback";

/// Answer of `POST /api/connectors/{id}/oauth/start`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OAuthStart {
    /// Send the browser here; it comes back to drydock's callback.
    pub authorization_url: String,
}

/// An operator-configured client for one issuer (`DRYDOCK_CONNECTOR_OAUTH_CLIENTS`).
#[derive(Deserialize)]
struct ConfiguredClient {
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
}

fn configured_client(
    state: &AppState,
    issuer: &str,
) -> Result<Option<ClientCredentials>, AppError> {
    let Some(json) = state.config.connector_oauth_clients.as_ref() else {
        return Ok(None);
    };
    let clients: BTreeMap<String, ConfiguredClient> = serde_json::from_str(json.expose())
        .map_err(|_| AppError::Unavailable(
            "DRYDOCK_CONNECTOR_OAUTH_CLIENTS is not a JSON object of issuer to {client_id, client_secret}".into(),
        ))?;
    let wanted = issuer.trim_end_matches('/');
    Ok(clients
        .into_iter()
        .find(|(key, _)| key.trim_end_matches('/') == wanted)
        .map(|(_, c)| ClientCredentials {
            auth_method: if c.client_secret.is_some() {
                "client_secret_post"
            } else {
                "none"
            }
            .to_owned(),
            client_id: c.client_id,
            client_secret: c.client_secret,
        }))
}

/// Starts connecting an OAuth connector: answers the authorization server's URL to send the
/// browser to. The request is bound to this session and expires in 10 minutes.
#[utoipa::path(post, path = "/api/connectors/{id}/oauth/start", tag = "connectors",
    params(("id" = String, Path, description = "Connector id")),
    responses((status = 200, body = OAuthStart), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub(super) async fn start_oauth(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OAuthStart>, AppError> {
    let row = state
        .store
        .get_connector(&user.user.id, &id)
        .await?
        .ok_or_else(not_found)?;
    if row.auth != "oauth" {
        return Err(AppError::invalid(
            "auth",
            "this connector signs in with headers, not OAuth; set its auth to oauth first",
        ));
    }
    let url = validate::check_url(row.url.as_deref().unwrap_or_default())?;
    let allow_private = state.config.allow_private_connector_urls;
    let upstream = |err: oauth::OAuthError| AppError::Upstream(err.to_string());
    let discovery = oauth::discover(&url, allow_private)
        .await
        .map_err(upstream)?;
    let redirect_uri = format!("{}{CALLBACK_PATH}", state.public_url);
    let client = match configured_client(&state, &discovery.issuer)? {
        Some(client) => client,
        None => oauth::register(&discovery, &redirect_uri, allow_private)
            .await
            .map_err(upstream)?,
    };
    let verifier = oauth::random_value();
    let request_state = oauth::random_value();
    let authorization_url = oauth::authorization_url(
        &discovery,
        &client,
        &redirect_uri,
        &request_state,
        &verifier,
    )
    .map_err(upstream)?;
    let pending = Pending {
        verifier,
        redirect_uri,
        discovery,
        client,
    };
    let json = serde_json::to_string(&pending).map_err(AppError::internal)?;
    let now = now_ms();
    state
        .store
        .insert_oauth_request(&OAuthRequest {
            state: request_state,
            connector_id: row.id.clone(),
            user_id: user.user.id.clone(),
            session_id: user.session_id.clone(),
            pending_enc: state.secrets.seal_str(&json),
            created_at: now,
            expires_at: now + REQUEST_TTL_MS,
        })
        .await?;
    tracing::info!(user_id = %user.user.id, connector_id = %row.id, issuer = %pending.discovery.issuer, "connector OAuth started");
    Ok(Json(OAuthStart {
        authorization_url: authorization_url.to_string(),
    }))
}

/// The query of the callback (RFC 6749 §4.1.2): `code` and `state`, or `error`.
#[derive(Debug, Deserialize)]
pub(super) struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn refused(title: &str, message: &str) -> Response {
    ErrorPage::new(StatusCode::BAD_REQUEST, title, message)
        .with_link("/settings/connectors", "Back to connectors")
        .into_response()
}

/// `GET /connectors/oauth/callback`: finishes connecting, then back to the connectors page.
/// Every failure is a readable page.
pub(super) async fn finish_oauth(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(query): Query<CallbackQuery>,
) -> Response {
    match finish(&state, &user, query).await {
        Ok(response) => response,
        Err(err) => {
            tracing::error!(error = %err, "connector OAuth callback failed");
            ErrorPage::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Could not finish connecting",
                "Something went wrong on drydock's side. Try Connect again.",
            )
            .with_link("/settings/connectors", "Back to connectors")
            .into_response()
        }
    }
}

async fn finish(
    state: &AppState,
    user: &CurrentUser,
    query: CallbackQuery,
) -> Result<Response, AppError> {
    let Some(request_state) = query.state.filter(|s| !s.is_empty()) else {
        return Ok(refused(
            "Incomplete sign-in",
            "The authorization server sent the browser back without a state. Start again with Connect.",
        ));
    };
    let Some(request) = state.store.take_oauth_request(&request_state).await? else {
        return Ok(refused(
            "This sign-in link cannot be used",
            "It was already used, or it is not one drydock started. Start again with Connect on the connectors page.",
        ));
    };
    if request.user_id != user.user.id || request.session_id != user.session_id {
        tracing::warn!(user_id = %user.user.id, "connector OAuth callback from another session refused");
        return Ok(refused(
            "This sign-in belongs to another session",
            "It was started in another browser session, so drydock will not accept it here. Start again with Connect.",
        ));
    }
    if request.expires_at < now_ms() {
        return Ok(refused(
            "This sign-in has expired",
            "More than 10 minutes passed since Connect. Start again with Connect.",
        ));
    }
    if let Some(error) = query.error {
        let description = query
            .error_description
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        return Ok(refused(
            "The connector was not connected",
            &format!("The authorization server did not grant access ({error}{description})."),
        ));
    }
    let Some(code) = query.code.filter(|c| !c.is_empty()) else {
        return Ok(refused(
            "Incomplete sign-in",
            "The authorization server sent the browser back without a code. Start again with Connect.",
        ));
    };
    let Some(row) = state
        .store
        .get_connector(&user.user.id, &request.connector_id)
        .await?
    else {
        return Ok(refused(
            "Connector not found",
            "The connector was deleted while you signed in.",
        ));
    };
    let pending: Pending = state
        .secrets
        .open_str(&request.pending_enc)
        .ok()
        .and_then(|json| serde_json::from_str(&json).ok())
        .ok_or_else(|| AppError::internal("the authorization request could not be opened"))?;
    let allow_private = state.config.allow_private_connector_urls;
    let tokens = match oauth::exchange_code(&pending, &code, allow_private).await {
        Ok(tokens) => tokens,
        Err(err) => {
            let scrubber = Scrubber::new(pending.client.client_secret.iter().chain([&code]))?;
            return Ok(ErrorPage::new(
                StatusCode::BAD_GATEWAY,
                "The connector was not connected",
                &scrubber.scrub(&err.to_string()),
            )
            .with_link("/settings/connectors", "Back to connectors")
            .into_response());
        }
    };
    let grant = Grant::from_code(&pending, tokens, now_ms());
    let json = serde_json::to_string(&grant).map_err(AppError::internal)?;
    state
        .store
        .set_connector_grant(&user.user.id, &row.id, &state.secrets.seal_str(&json))
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(user_id = %user.user.id, connector_id = %row.id, issuer = %grant.issuer, "connector connected");
    let row = state
        .store
        .get_connector(&user.user.id, &row.id)
        .await?
        .ok_or_else(not_found)?;
    super::run_test(state, &user.user.id, row).await?;
    Ok(Redirect::to(&format!(
        "/settings/connectors?connected={}",
        request.connector_id
    ))
    .into_response())
}
