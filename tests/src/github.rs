//! A local stand-in for GitHub that speaks the real protocol drydock uses: the OAuth web flow
//! (authorize with state and PKCE S256, one-time codes, the token endpoint's JSON answers and
//! errors) and the REST endpoints `/user`, `/user/emails` and `/user/repos` with `Link` paging,
//! served under `/api/v3` as GitHub Enterprise Server does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The client id and secret of the OAuth app the stand-in knows.
pub const CLIENT_ID: &str = "Iv1.standin-client";
/// The matching client secret.
pub const CLIENT_SECRET: &str = "standin-client-secret-0123456789";

/// A GitHub account on the stand-in.
#[derive(Debug, Clone)]
pub struct FakeUser {
    /// Numeric id.
    pub id: i64,
    /// Login.
    pub login: String,
    /// Display name.
    pub name: String,
    /// Public profile email (GitHub often has none).
    pub public_email: Option<String>,
    /// Primary verified email from `/user/emails`.
    pub primary_email: String,
    /// Names of the repositories they can access, most recently updated first.
    pub repos: Vec<String>,
}

#[derive(Debug, Clone)]
struct PendingCode {
    login: String,
    challenge: String,
    redirect_uri: String,
}

#[derive(Default)]
struct Inner {
    users: HashMap<String, FakeUser>,
    /// Who approves the next authorization; `None` denies it.
    approve_as: Option<String>,
    codes: HashMap<String, PendingCode>,
    tokens: HashMap<String, String>,
    authorize_queries: Vec<HashMap<String, String>>,
    corrupt_next_challenge: bool,
}

/// The running stand-in.
#[derive(Clone)]
pub struct GithubStandIn {
    /// `http://127.0.0.1:PORT` (the web URL, `GITHUB_URL`).
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl GithubStandIn {
    /// Starts the stand-in on `127.0.0.1:0`.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stand-in");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = Shared {
            inner: inner.clone(),
            url: url.clone(),
        };
        let app = Router::new()
            .route("/login/oauth/authorize", get(authorize))
            .route("/login/oauth/access_token", post(access_token))
            .route("/api/v3/user", get(user))
            .route("/api/v3/user/emails", get(emails))
            .route("/api/v3/user/repos", get(repos))
            .with_state(shared);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner }
    }

    /// `GITHUB_API_URL` for drydock.
    pub fn api_url(&self) -> String {
        format!("{}/api/v3", self.url)
    }

    /// drydock settings pointing at this stand-in.
    pub fn settings(&self) -> Vec<String> {
        vec![
            "--github-url".into(),
            self.url.clone(),
            "--github-api-url".into(),
            self.api_url(),
            "--github-client-id".into(),
            CLIENT_ID.into(),
            "--github-client-secret".into(),
            CLIENT_SECRET.into(),
        ]
    }

    /// Adds an account with `repo_count` repositories named `{login}/repo-{i}`.
    pub fn add_user(&self, id: i64, login: &str, repo_count: usize) -> FakeUser {
        let user = FakeUser {
            id,
            login: login.into(),
            name: format!("{login} Example"),
            public_email: None,
            primary_email: format!("{login}@users.example"),
            repos: (0..repo_count)
                .map(|i| format!("{login}/repo-{i}"))
                .collect(),
        };
        self.lock().users.insert(login.into(), user.clone());
        user
    }

    /// The account that approves the next authorization (`None`: the user clicks "Cancel").
    pub fn approve_as(&self, login: Option<&str>) {
        self.lock().approve_as = login.map(str::to_owned);
    }

    /// Makes the next authorization remember a different PKCE challenge, so the verifier drydock
    /// sends at the token endpoint will not match.
    pub fn corrupt_next_challenge(&self) {
        self.lock().corrupt_next_challenge = true;
    }

    /// Every token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().tokens.keys().cloned().collect()
    }

    /// Revokes every token of a user (as when they revoke the app on GitHub).
    pub fn revoke_tokens_of(&self, login: &str) {
        self.lock().tokens.retain(|_, owner| owner != login);
    }

    /// The query strings the authorize endpoint received.
    pub fn authorize_queries(&self) -> Vec<HashMap<String, String>> {
        self.lock().authorize_queries.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("stand-in state")
    }
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    url: String,
}

fn random(prefix: &str) -> String {
    let bytes: [u8; 18] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

async fn authorize(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut inner = s.inner.lock().expect("state");
    inner.authorize_queries.push(q.clone());
    if q.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return (StatusCode::NOT_FOUND, "unknown OAuth app").into_response();
    }
    let (Some(redirect_uri), Some(state)) = (q.get("redirect_uri"), q.get("state")) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri and state required").into_response();
    };
    let Some(login) = inner.approve_as.clone() else {
        let target = format!(
            "{redirect_uri}?error=access_denied&error_description=The+user+has+denied+your+application+access.&state={state}"
        );
        return Redirect::to(&target).into_response();
    };
    let mut challenge = q.get("code_challenge").cloned().unwrap_or_default();
    if std::mem::take(&mut inner.corrupt_next_challenge) {
        challenge = "not-the-challenge".into();
    }
    let code = random("");
    inner.codes.insert(
        code.clone(),
        PendingCode {
            login,
            challenge,
            redirect_uri: redirect_uri.clone(),
        },
    );
    Redirect::to(&format!("{redirect_uri}?code={code}&state={state}")).into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    client_id: String,
    client_secret: String,
    code: String,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
}

async fn access_token(State(s): State<Shared>, Form(form): Form<TokenForm>) -> Json<Value> {
    let mut inner = s.inner.lock().expect("state");
    if form.client_id != CLIENT_ID || form.client_secret != CLIENT_SECRET {
        return Json(json!({"error": "incorrect_client_credentials",
            "error_description": "The client_id and/or client_secret passed are incorrect."}));
    }
    // Codes are one-time: removed on first use, whatever the outcome.
    let Some(pending) = inner.codes.remove(&form.code) else {
        return Json(json!({"error": "bad_verification_code",
            "error_description": "The code passed is incorrect or expired."}));
    };
    let verifier = form.code_verifier.unwrap_or_default();
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    if computed != pending.challenge {
        return Json(json!({"error": "bad_verification_code",
            "error_description": "The code_verifier does not match the code_challenge."}));
    }
    if form
        .redirect_uri
        .is_some_and(|uri| uri != pending.redirect_uri)
    {
        return Json(json!({"error": "redirect_uri_mismatch",
            "error_description": "The redirect_uri MUST match the registered callback URL for this application."}));
    }
    let token = random("gho_");
    inner.tokens.insert(token.clone(), pending.login);
    Json(
        json!({"access_token": token, "token_type": "bearer", "scope": "repo,read:user,user:email"}),
    )
}

fn bad_credentials() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

fn authed(s: &Shared, headers: &HeaderMap) -> Option<FakeUser> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))?;
    let inner = s.inner.lock().ok()?;
    let login = inner.tokens.get(token)?;
    inner.users.get(login).cloned()
}

async fn user(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let Some(u) = authed(&s, &headers) else {
        return bad_credentials();
    };
    let api = format!("{}/api/v3", s.url);
    Json(json!({
        "login": u.login, "id": u.id, "node_id": format!("U_{}", u.id),
        "avatar_url": format!("{}/avatars/u/{}", s.url, u.id), "gravatar_id": "",
        "url": format!("{api}/users/{}", u.login), "html_url": format!("{}/{}", s.url, u.login),
        "type": "User", "site_admin": false, "name": u.name, "company": null, "blog": "",
        "location": null, "email": u.public_email, "hireable": null, "bio": null,
        "public_repos": u.repos.len(), "followers": 0, "following": 0,
        "created_at": "2020-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
    }))
    .into_response()
}

async fn emails(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let Some(u) = authed(&s, &headers) else {
        return bad_credentials();
    };
    Json(json!([
        {"email": format!("{}@old.example", u.login), "primary": false, "verified": true, "visibility": null},
        {"email": u.primary_email, "primary": true, "verified": true, "visibility": "private"}
    ]))
    .into_response()
}

#[derive(Deserialize)]
struct RepoParams {
    per_page: Option<usize>,
    page: Option<usize>,
}

async fn repos(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(p): Query<RepoParams>,
) -> Response {
    let Some(u) = authed(&s, &headers) else {
        return bad_credentials();
    };
    let per_page = p.per_page.unwrap_or(30).clamp(1, 100);
    let page = p.page.unwrap_or(1).max(1);
    let total = u.repos.len();
    let last = total.div_ceil(per_page).max(1);
    let items: Vec<Value> = u
        .repos
        .iter()
        .enumerate()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|(i, full)| {
            let (owner, name) = full.split_once('/').unwrap_or((&u.login, full));
            json!({
                "id": 1000 + i, "node_id": format!("R_{i}"), "name": name, "full_name": full,
                "private": i % 3 == 0, "owner": {"login": owner, "id": u.id},
                "html_url": format!("{}/{full}", s.url), "default_branch": "main",
                "updated_at": format!("2026-11-{:02}T00:00:00Z", 28 - (i % 27)),
            })
        })
        .collect();
    let link_for = |n: usize, rel: &str| {
        format!(
            "<{}/api/v3/user/repos?per_page={per_page}&page={n}>; rel=\"{rel}\"",
            s.url
        )
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(link_for(page - 1, "prev"));
        links.push(link_for(1, "first"));
    }
    if page < last {
        links.push(link_for(page + 1, "next"));
        links.push(link_for(last, "last"));
    }
    let mut response = Json(items).into_response();
    if !links.is_empty()
        && let Ok(value) = links.join(", ").parse()
    {
        response.headers_mut().insert(header::LINK, value);
    }
    response
}
