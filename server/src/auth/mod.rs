//! Sign-in with GitHub (OAuth web flow with state and PKCE), revocable sessions, and who is asking.

mod bearer;
pub mod cookies;
mod csrf;
mod session;
pub mod tokens;

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header::{SET_COOKIE, USER_AGENT};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::cookies::{OAUTH_COOKIE, OAUTH_TTL_S, OAuthClaims, SESSION_COOKIE, SessionClaims};
pub use self::csrf::refuse_cross_site;
pub use self::session::{AuthRejection, CurrentUser};
pub use self::tokens::{GithubTokens, TokenError};
use crate::config::SecretString;
use crate::error::{AppError, ErrorBody};
use crate::github::GithubError;
use crate::state::AppState;
use crate::store::{GithubProfile, now_ms};
use crate::web::ErrorPage;

/// Routes of sign-in, sign-out and `/api/me`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route("/auth/github", axum::routing::get(start_sign_in))
        .route("/auth/github/callback", axum::routing::get(finish_sign_in))
        .route("/auth/logout", axum::routing::post(sign_out))
        .routes(routes!(get_me))
}

/// States already used in a callback, kept until they expire, so a replayed callback fails even
/// if the browser still holds the state cookie. Per process: across replicas, GitHub's one-time
/// codes are what stop a replay.
#[derive(Debug, Default)]
pub struct UsedStates(Mutex<HashMap<String, i64>>);

impl UsedStates {
    /// Marks a state used; answers false when it already was.
    fn first_use(&self, state: &str, expires_s: i64) -> bool {
        let now = now_ms() / 1000;
        let Ok(mut used) = self.0.lock() else {
            return false;
        };
        used.retain(|_, exp| *exp > now);
        used.insert(state.to_owned(), expires_s).is_none()
    }
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A path on this site, or `/`: never `//host`, `/\host`, a scheme, or control characters.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(char::is_control)
                && !has_encoded_separator(path) =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// Percent-encoded backslashes or a leading encoded slash: harmless in most browsers, but there is
/// no reason for drydock's own paths to contain them, so refuse rather than reason about each one.
fn has_encoded_separator(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.contains("%5c") || lower.starts_with("/%2f")
}

fn secure_cookies(state: &AppState) -> bool {
    state.public_url.starts_with("https://")
}

fn callback_url(state: &AppState) -> String {
    format!("{}/auth/github/callback", state.public_url)
}

#[derive(Deserialize)]
struct StartParams {
    next: Option<String>,
}

/// `GET /auth/github`: send the browser to GitHub with a fresh state and PKCE challenge.
async fn start_sign_in(
    State(state): State<AppState>,
    Query(params): Query<StartParams>,
) -> Response {
    if !state.github.oauth_configured() {
        return ErrorPage::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is not set up",
            "This drydock server has no GitHub OAuth app configured yet. The home page explains how to set one up.",
        )
        .with_link("/", "Set-up instructions")
        .into_response();
    }
    let verifier = random_token(48);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let claims = OAuthClaims {
        state: random_token(24),
        verifier,
        next: safe_next(params.next.as_deref()),
        exp: now_ms() / 1000 + OAUTH_TTL_S,
    };
    let (Some(cookie), Ok(url)) = (
        cookies::sign_oauth(&state.keys.jwe_secret, &claims),
        state
            .github
            .authorize_url(&callback_url(&state), &claims.state, &challenge),
    ) else {
        return AppError::internal("could not prepare the sign-in").into_response();
    };
    let secure = secure_cookies(&state);
    (
        AppendHeaders([(
            SET_COOKIE,
            cookies::set_cookie(OAUTH_COOKIE, &cookie, "/auth", OAUTH_TTL_S, secure),
        )]),
        Redirect::to(&url),
    )
        .into_response()
}

#[derive(Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

fn retry_page(status: StatusCode, title: &str, message: &str) -> ErrorPage {
    ErrorPage::new(status, title, message).with_link("/auth/github", "Try signing in again")
}

/// `GET /auth/github/callback`: check state, exchange the code, create the user and session.
async fn finish_sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<CallbackParams>,
) -> Response {
    let secure = secure_cookies(&state);
    let clear_oauth = AppendHeaders([(
        SET_COOKIE,
        cookies::clear_cookie(OAUTH_COOKIE, "/auth", secure),
    )]);
    match complete_sign_in(&state, &headers, params).await {
        Ok((session_cookie, next)) => (
            AppendHeaders([
                (
                    SET_COOKIE,
                    cookies::clear_cookie(OAUTH_COOKIE, "/auth", secure),
                ),
                (SET_COOKIE, session_cookie),
            ]),
            Redirect::to(&next),
        )
            .into_response(),
        Err(page) => (clear_oauth, page).into_response(),
    }
}

async fn complete_sign_in(
    state: &AppState,
    headers: &HeaderMap,
    params: CallbackParams,
) -> Result<(String, String), ErrorPage> {
    if params.error.as_deref() == Some("access_denied") {
        return Err(retry_page(
            StatusCode::OK,
            "Sign-in cancelled",
            "You chose not to authorize drydock on GitHub, so you are not signed in. Nothing was changed.",
        ));
    }
    if params.error.as_deref() == Some("redirect_uri_mismatch") {
        // GitHub sends this to the app's registered callback URL, which is not where this server
        // asked it to return: the operator has to make the two agree.
        return Err(retry_page(
            StatusCode::BAD_REQUEST,
            "GitHub refused the sign-in: the callback URL does not match",
            &format!(
                "The GitHub OAuth app's \"Authorization callback URL\" is not where this drydock \
                 asked GitHub to return. Set it to {} in the OAuth app's settings on GitHub, or, \
                 if people reach drydock at another address, set DRYDOCK_PUBLIC_URL to that \
                 address and restart.",
                callback_url(state)
            ),
        ));
    }
    if let Some(error) = params.error {
        tracing::info!(error = %error.chars().take(64).collect::<String>(), "GitHub returned an OAuth error");
        return Err(retry_page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "GitHub could not complete the sign-in.",
        ));
    }
    let expired = || {
        retry_page(
            StatusCode::BAD_REQUEST,
            "This sign-in link is no longer valid",
            "It has expired, was already used, or was started in another browser. Start again to sign in.",
        )
    };
    let claims = cookies::read_cookie(headers, OAUTH_COOKIE)
        .and_then(|token| cookies::verify_oauth(&state.keys.jwe_secret, token))
        .ok_or_else(expired)?;
    let (Some(code), Some(returned_state)) = (params.code, params.state) else {
        return Err(expired());
    };
    if returned_state != claims.state
        || !state.used_oauth_states.first_use(&claims.state, claims.exp)
    {
        return Err(expired());
    }

    let token = state
        .github
        .exchange_code(&code, &callback_url(state), &claims.verifier)
        .await
        .map_err(|err| github_failure_page(&err))?;
    let profile = state
        .github
        .user(&token.access_token)
        .await
        .map_err(|err| github_failure_page(&err))?;
    let user = state
        .store
        .upsert_user(&GithubProfile {
            github_id: profile.id,
            login: &profile.login,
            name: profile.name.as_deref(),
            email: profile.email.as_deref(),
            avatar_url: profile.avatar_url.as_deref(),
        })
        .await
        .map_err(internal_page)?;
    let sealed = state.secrets.seal_str(token.access_token.expose());
    let refresh = token
        .refresh_token
        .as_ref()
        .map(|t: &SecretString| state.secrets.seal_str(t.expose()));
    let expires_at = token.expires_in.map(|s| now_ms() + s * 1000);
    state
        .store
        .upsert_github_account(
            &user.id,
            &sealed,
            &token.scopes,
            expires_at,
            refresh.as_deref(),
        )
        .await
        .map_err(internal_page)?;

    let lifetime_ms = i64::from(state.config.session_days) * 86_400_000;
    let expires_at = now_ms() + lifetime_ms;
    let user_agent = headers
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(256).collect::<String>());
    let session = state
        .store
        .create_session(&user.id, expires_at, user_agent.as_deref())
        .await
        .map_err(internal_page)?;
    let sealed_session = cookies::seal_session(
        &state.keys.jwe_secret,
        &SessionClaims {
            sid: session.id,
            exp: expires_at / 1000,
        },
    )
    .ok_or_else(|| internal_page("could not seal the session"))?;
    tracing::info!(user_id = %user.id, login = %user.login, "signed in");
    let cookie = cookies::set_cookie(
        SESSION_COOKIE,
        &sealed_session,
        "/",
        lifetime_ms / 1000,
        secure_cookies(state),
    );
    Ok((cookie, safe_next(Some(&claims.next))))
}

fn github_failure_page(err: &GithubError) -> ErrorPage {
    tracing::warn!(error = %err, "sign-in failed at GitHub");
    retry_page(
        StatusCode::BAD_GATEWAY,
        "GitHub did not complete the sign-in",
        &err.to_string(),
    )
}

fn internal_page(err: impl std::fmt::Display) -> ErrorPage {
    tracing::error!(error = %err, "sign-in failed");
    retry_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Sign-in failed",
        "Something went wrong on the server; it has been logged.",
    )
}

/// `POST /auth/logout`: revoke the session and clear the cookie.
async fn sign_out(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
) -> Result<Response, AppError> {
    if let Some(user) = user {
        state.store.revoke_session(&user.session_id).await?;
        tracing::info!(user_id = %user.user.id, "signed out");
    }
    let secure = secure_cookies(&state);
    Ok((
        AppendHeaders([(
            SET_COOKIE,
            cookies::clear_cookie(SESSION_COOKIE, "/", secure),
        )]),
        Redirect::to("/"),
    )
        .into_response())
}

/// The signed-in user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    /// drydock's user id.
    pub id: String,
    /// GitHub login.
    pub login: String,
    /// Display name.
    pub name: Option<String>,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// Today's task quota.
    pub quota: crate::tasks::Quota,
}

/// Who is signed in.
#[utoipa::path(get, path = "/api/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn get_me(State(state): State<AppState>, user: CurrentUser) -> Result<Json<Me>, AppError> {
    let quota = crate::tasks::quota_of(&state, &user.user.id).await?;
    let user = user.user;
    Ok(Json(Me {
        id: user.id,
        login: user.login,
        name: user.name,
        avatar_url: user.avatar_url,
        quota,
    }))
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_is_a_same_site_path_or_home() {
        for (input, want) in [
            (Some("/tasks/1?x=y"), "/tasks/1?x=y"),
            (Some("//evil.example"), "/"),
            (Some("https://evil.example"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("/%5Cevil.example"), "/"),
            (Some("/%2F%2Fevil.example"), "/"),
            (Some("/ok\r\nSet-Cookie: x"), "/"),
            (Some("evil"), "/"),
            (None, "/"),
        ] {
            assert_eq!(safe_next(input), want, "{input:?}");
        }
    }
}
