//! A local stand-in for GitHub that speaks the real protocol drydock uses: the OAuth web flow
//! (authorize with state and PKCE S256, one-time codes, the token endpoint's JSON answers and
//! errors), the REST endpoints `/user`, `/user/emails`, `/user/repos` with `Link` paging,
//! `/repos/{owner}/{repo}` and its pull requests, served under `/api/v3` as GitHub Enterprise
//! Server does, and git over smart HTTP at `/{owner}/{repo}.git` (see [`crate::git_http`]).
//!
//! Tokens carry the scopes asked for at authorization; a push that adds or changes a file under
//! `.github/workflows/` without the `workflow` scope is refused with GitHub's words. Tokens can be
//! made to expire (as GitHub App user tokens do, with a one-time refresh token renewed through
//! `grant_type=refresh_token`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::git_http::{self, GitPath};

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
    /// Scopes asked for, comma-separated as GitHub reports them.
    scope: String,
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
    /// Scopes of each token, comma-separated.
    token_scopes: HashMap<String, String>,
    /// When each expiring token stops working (unix seconds).
    token_expiry: HashMap<String, i64>,
    /// Lifetime of the tokens issued, in seconds; `None`: OAuth app tokens that never expire.
    token_lifetime: Option<i64>,
    /// Unspent refresh tokens and whose they are.
    refresh_tokens: HashMap<String, String>,
    /// How many times a token was refreshed.
    refreshes: usize,
    /// Smart-HTTP requests received: the path and whether they carried credentials.
    git_requests: Vec<(String, bool)>,
    /// Scopes granted whatever is asked (a token from before drydock asked for more).
    granted_scopes: Option<String>,
    /// The next pull request is created but its answer is a 502, as when GitHub's response is
    /// lost on the way.
    lose_next_pull_answer: bool,
    authorize_queries: Vec<HashMap<String, String>>,
    corrupt_next_challenge: bool,
    /// The OAuth app's "Authorization callback URL", when the test sets one.
    registered_callback: Option<String>,
    /// Repositories with real git behind them, by `owner/name`.
    hosted: HashMap<String, HostedRepo>,
    pulls: Vec<StoredPull>,
    next_id: i64,
    /// Read-only collaborators: login → `owner/name` they may pull but not push.
    readers: HashMap<String, Vec<String>>,
    /// Issue and pull request comments posted through the API.
    issue_comments: Vec<PostedComment>,
    /// Reactions posted through the API.
    reactions: Vec<PostedReaction>,
}

/// A repository backed by a bare git repository.
#[derive(Debug, Clone)]
struct HostedRepo {
    id: i64,
    owner: String,
    name: String,
    private: bool,
    default_branch: String,
}

#[derive(Debug, Clone)]
struct StoredPull {
    id: i64,
    number: u64,
    /// `owner/name` of the repository.
    repo: String,
    title: String,
    body: Option<String>,
    head: String,
    head_sha: String,
    base: String,
    base_sha: String,
    draft: bool,
    state: String,
    user: String,
    created_at: String,
    updated_at: String,
}

impl Inner {
    /// The owner of a token that still works (known, not expired).
    fn live_login(&self, token: &str) -> Option<&String> {
        let expired = self
            .token_expiry
            .get(token)
            .is_some_and(|at| *at <= chrono::Utc::now().timestamp());
        if expired {
            return None;
        }
        self.tokens.get(token)
    }

    /// Mints an access token for `login` with `scope`; answers the token endpoint's JSON.
    fn mint(&mut self, login: &str, scope: &str) -> Value {
        let Some(lifetime) = self.token_lifetime else {
            let token = random("gho_");
            self.tokens.insert(token.clone(), login.into());
            self.token_scopes.insert(token.clone(), scope.into());
            return json!({"access_token": token, "token_type": "bearer", "scope": scope});
        };
        let token = random("ghu_");
        let refresh = random("ghr_");
        self.tokens.insert(token.clone(), login.into());
        self.token_scopes.insert(token.clone(), scope.into());
        self.token_expiry
            .insert(token.clone(), chrono::Utc::now().timestamp() + lifetime);
        self.refresh_tokens.insert(refresh.clone(), login.into());
        json!({"access_token": token, "token_type": "bearer", "scope": scope,
            "expires_in": lifetime, "refresh_token": refresh,
            "refresh_token_expires_in": 15_897_600})
    }

    fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// The repository `full` (`owner/name`) as the API shows it, hosted or merely listed.
    fn find_repo(&self, full: &str) -> Option<RepoView> {
        if let Some(h) = self.hosted.get(full) {
            return Some(RepoView {
                id: h.id,
                owner: h.owner.clone(),
                name: h.name.clone(),
                private: h.private,
                default_branch: h.default_branch.clone(),
            });
        }
        // A repository only named in someone's list: same attributes as `/user/repos` shows.
        self.users.values().find_map(|u| {
            let i = u.repos.iter().position(|r| r == full)?;
            let (owner, name) = full.split_once('/').unwrap_or((&u.login, full));
            Some(RepoView {
                id: 1000 + i64::try_from(i).unwrap_or(0),
                owner: owner.into(),
                name: name.into(),
                private: i % 3 == 0,
                default_branch: "main".into(),
            })
        })
    }

    /// What `login` (or an anonymous caller) may do with `repo`; `None` when they cannot see it.
    fn permissions(&self, login: Option<&str>, repo: &RepoView) -> Option<Permissions> {
        let full = repo.full_name();
        let listed = login
            .and_then(|l| self.users.get(l))
            .is_some_and(|u| u.repos.contains(&full));
        let reader = login
            .and_then(|l| self.readers.get(l))
            .is_some_and(|repos| repos.contains(&full));
        if listed {
            Some(Permissions {
                admin: login == Some(repo.owner.as_str()),
                push: true,
                pull: true,
            })
        } else if reader || !repo.private {
            Some(Permissions {
                admin: false,
                push: false,
                pull: true,
            })
        } else {
            None
        }
    }

    fn user_id(&self, login: &str) -> i64 {
        self.users.get(login).map_or(0, |u| u.id)
    }
}

#[derive(Debug, Clone)]
struct RepoView {
    id: i64,
    owner: String,
    name: String,
    private: bool,
    default_branch: String,
}

impl RepoView {
    fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

#[derive(Debug, Clone, Copy)]
struct Permissions {
    admin: bool,
    push: bool,
    pull: bool,
}

/// The running stand-in.
#[derive(Clone)]
pub struct GithubStandIn {
    /// `http://127.0.0.1:PORT` (the web URL, `GITHUB_URL`).
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    /// Holds the bare repositories; removed when the last handle goes.
    git_root: Arc<tempfile::TempDir>,
}

impl GithubStandIn {
    /// Starts the stand-in on `127.0.0.1:0`.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stand-in");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let inner = Arc::new(Mutex::new(Inner {
            next_id: 5000,
            ..Inner::default()
        }));
        let git_root = Arc::new(tempfile::tempdir().expect("git root"));
        let shared = Shared {
            inner: inner.clone(),
            url: url.clone(),
            git_root: git_root.path().to_owned(),
        };
        let app = Router::new()
            .route("/login/oauth/authorize", get(authorize))
            .route("/login/oauth/access_token", post(access_token))
            .route("/api/v3/user", get(user))
            .route("/api/v3/user/emails", get(emails))
            .route("/api/v3/user/repos", get(repos))
            .route("/api/v3/repos/{owner}/{repo}", get(get_repo))
            .route(
                "/api/v3/repos/{owner}/{repo}/pulls",
                get(list_pulls).post(create_pull),
            )
            .route(
                "/api/v3/repos/{owner}/{repo}/pulls/{number}",
                get(get_pull).patch(update_pull),
            )
            .route(
                "/api/v3/repos/{owner}/{repo}/issues/{number}/comments",
                post(create_issue_comment),
            )
            .route(
                "/api/v3/repos/{owner}/{repo}/issues/comments/{id}/reactions",
                post(react_on_comment),
            )
            .route(
                "/api/v3/repos/{owner}/{repo}/issues/{number}/reactions",
                post(react_on_issue),
            )
            .fallback(git_smart_http)
            .with_state(shared);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            inner,
            git_root,
        }
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

    /// Sets the OAuth app's registered callback URL. As on GitHub, an authorization whose
    /// `redirect_uri` has another scheme, host or port, or a path outside the registered one, is
    /// sent to the registered URL with `error=redirect_uri_mismatch`.
    pub fn register_callback(&self, url: &str) {
        self.lock().registered_callback = Some(url.to_owned());
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

    /// Makes the tokens issued from now on expire after `seconds` with a refresh token, as GitHub
    /// App user tokens do (`None`: OAuth app tokens that never expire).
    pub fn set_token_lifetime(&self, seconds: Option<i64>) {
        self.lock().token_lifetime = seconds;
    }

    /// Mints a token for `login` with `scope` (comma-separated) without the OAuth dance, as the
    /// token endpoint would (with `expires_in` and a refresh token when tokens expire, see
    /// [`Self::set_token_lifetime`]); answers the token endpoint's JSON.
    pub fn issue_token_with(&self, login: &str, scope: &str) -> Value {
        let mut inner = self.lock();
        assert!(inner.users.contains_key(login), "no stand-in user {login}");
        inner.mint(login, scope)
    }

    /// Makes every access token of `login` expire now, as if their lifetime had passed.
    pub fn expire_tokens_of(&self, login: &str) {
        let mut inner = self.lock();
        let now = chrono::Utc::now().timestamp();
        let theirs: Vec<String> = inner
            .tokens
            .iter()
            .filter(|(_, owner)| *owner == login)
            .map(|(token, _)| token.clone())
            .collect();
        for token in theirs {
            inner.token_expiry.insert(token, now);
        }
    }

    /// Grants only `scopes` (comma-separated) at the next authorizations, whatever drydock asks
    /// for, like a token issued before drydock asked for more (`None`: what is asked).
    pub fn grant_only(&self, scopes: Option<&str>) {
        self.lock().granted_scopes = scopes.map(str::to_owned);
    }

    /// Creates the next pull request but answers 502, as when GitHub's answer is lost.
    pub fn lose_next_pull_answer(&self) {
        self.lock().lose_next_pull_answer = true;
    }

    /// Spends every refresh token of `login` (as when they are revoked or expire).
    pub fn revoke_refresh_tokens_of(&self, login: &str) {
        self.lock().refresh_tokens.retain(|_, owner| owner != login);
    }

    /// How many times a token was refreshed.
    pub fn refresh_count(&self) -> usize {
        self.lock().refreshes
    }

    /// The smart-HTTP requests received so far: path and whether they carried credentials.
    pub fn git_requests(&self) -> Vec<(String, bool)> {
        self.lock().git_requests.clone()
    }

    /// Revokes every token of a user (as when they revoke the app on GitHub).
    pub fn revoke_tokens_of(&self, login: &str) {
        self.lock().tokens.retain(|_, owner| owner != login);
    }

    /// The query strings the authorize endpoint received.
    pub fn authorize_queries(&self) -> Vec<HashMap<String, String>> {
        self.lock().authorize_queries.clone()
    }

    /// Mints a token for `login` without the OAuth dance.
    pub fn issue_token_for(&self, login: &str) -> String {
        let mut inner = self.lock();
        assert!(inner.users.contains_key(login), "no stand-in user {login}");
        let token = random("gho_");
        inner.tokens.insert(token.clone(), login.into());
        inner
            .token_scopes
            .insert(token.clone(), "repo,workflow,read:user,user:email".into());
        token
    }

    /// Creates the private repository `owner/name` backed by a bare git repository whose
    /// `default_branch` holds one commit with `files` (path, contents), by a fixed author at a
    /// fixed date, and lists it first among `owner`'s repositories. Returns the commit id.
    pub fn create_repo(
        &self,
        owner: &str,
        name: &str,
        files: &[(&str, &str)],
        default_branch: &str,
    ) -> String {
        self.create_repo_with_submodules(owner, name, files, &[], default_branch)
    }

    /// [`Self::create_repo`] with submodules: `gitlinks` are (path, commit) entries, and a
    /// `.gitmodules` among `files` says where each comes from.
    pub fn create_repo_with_submodules(
        &self,
        owner: &str,
        name: &str,
        files: &[(&str, &str)],
        gitlinks: &[(&str, &str)],
        default_branch: &str,
    ) -> String {
        let bare = self.register_repo(owner, name, default_branch);
        git_http::create_bare_repo_with_gitlinks(
            self.git_root.path(),
            &bare,
            files,
            gitlinks,
            default_branch,
        )
    }

    /// Creates the private repository `owner/name` with no commits at all, as GitHub makes it
    /// when created without a README; `default_branch` is what the API reports and what HEAD
    /// names.
    pub fn create_empty_repo(&self, owner: &str, name: &str, default_branch: &str) {
        let bare = self.register_repo(owner, name, default_branch);
        git_http::create_empty_bare_repo(self.git_root.path(), &bare, default_branch);
    }

    /// Lists `owner/name` as hosted (private, first among `owner`'s repositories); answers where
    /// its bare repository goes.
    fn register_repo(&self, owner: &str, name: &str, default_branch: &str) -> PathBuf {
        let full = format!("{owner}/{name}");
        assert!(
            self.lock().users.contains_key(owner),
            "no stand-in user {owner}; add_user first"
        );
        assert!(
            GitPath::parse(&format!("/{full}.git/info/refs")).is_some(),
            "unusable repository name {full}"
        );
        let mut inner = self.lock();
        let id = inner.next_id();
        inner.hosted.insert(
            full.clone(),
            HostedRepo {
                id,
                owner: owner.into(),
                name: name.into(),
                private: true,
                default_branch: default_branch.into(),
            },
        );
        if let Some(user) = inner.users.get_mut(owner) {
            user.repos.retain(|r| r != &full);
            user.repos.insert(0, full);
        }
        self.repo_path(owner, name)
    }

    /// Makes a repository made by [`Self::create_repo`] public or private again.
    pub fn set_private(&self, owner: &str, name: &str, private: bool) {
        let mut inner = self.lock();
        let repo = inner
            .hosted
            .get_mut(&format!("{owner}/{name}"))
            .expect("no such stand-in repository");
        repo.private = private;
    }

    /// Makes `login` a collaborator (pull and push) on `owner/name`.
    pub fn grant_access(&self, login: &str, owner: &str, name: &str) {
        let full = format!("{owner}/{name}");
        let mut inner = self.lock();
        let user = inner.users.get_mut(login).expect("no such stand-in user");
        if !user.repos.contains(&full) {
            user.repos.insert(0, full);
        }
    }

    /// The bare repository behind `owner/name`.
    pub fn repo_path(&self, owner: &str, name: &str) -> PathBuf {
        git_http::bare_path(self.git_root.path(), owner, name)
    }

    /// The URL git clones `owner/name` from (`clone_url` in the API).
    pub fn clone_url(&self, owner: &str, name: &str) -> String {
        format!("{}/{owner}/{name}.git", self.url)
    }

    /// The pull requests opened on `owner/name`, oldest first, as the API shows them.
    pub fn pulls(&self, owner: &str, name: &str) -> Vec<Value> {
        let full = format!("{owner}/{name}");
        let stored: Vec<StoredPull> = self
            .lock()
            .pulls
            .iter()
            .filter(|p| p.repo == full)
            .cloned()
            .collect();
        let bare = self.repo_path(owner, name);
        let root = self.git_root.path();
        let shas: Vec<(String, String)> = stored
            .iter()
            .map(|p| {
                (
                    git_http::branch_sha_blocking(root, &bare, &p.head)
                        .unwrap_or_else(|| p.head_sha.clone()),
                    git_http::branch_sha_blocking(root, &bare, &p.base)
                        .unwrap_or_else(|| p.base_sha.clone()),
                )
            })
            .collect();
        let inner = self.lock();
        stored
            .iter()
            .zip(shas)
            .map(|(p, (head, base))| pull_json(&self.url, &inner, p, &head, &base))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("stand-in state")
    }
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    url: String,
    git_root: PathBuf,
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
    if let Some(registered) = inner.registered_callback.clone()
        && !callback_allowed(&registered, redirect_uri)
    {
        let target = format!(
            "{registered}?error=redirect_uri_mismatch&error_description=The+redirect_uri+MUST+match+the+registered+callback+URL+for+this+application.&error_uri=https%3A%2F%2Fdocs.github.com%2Fapps%2Fmanaging-oauth-apps%2Ftroubleshooting-authorization-request-errors%2F%23redirect-uri-mismatch&state={state}"
        );
        return Redirect::to(&target).into_response();
    }
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
    // GitHub grants the scopes asked for and reports them comma-separated.
    let scope = inner.granted_scopes.clone().unwrap_or_else(|| {
        q.get("scope")
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    });
    inner.codes.insert(
        code.clone(),
        PendingCode {
            login,
            scope,
            challenge,
            redirect_uri: redirect_uri.clone(),
        },
    );
    Redirect::to(&format!("{redirect_uri}?code={code}&state={state}")).into_response()
}

/// GitHub's rule for a `redirect_uri`: the registered URL's scheme, host and port, and its path
/// or a path below it.
fn callback_allowed(registered: &str, redirect_uri: &str) -> bool {
    let (Ok(registered), Ok(asked)) = (
        reqwest::Url::parse(registered),
        reqwest::Url::parse(redirect_uri),
    ) else {
        return false;
    };
    let base = registered.path().trim_end_matches('/');
    registered.scheme() == asked.scheme()
        && registered.host_str() == asked.host_str()
        && registered.port_or_known_default() == asked.port_or_known_default()
        && (asked.path() == registered.path() || asked.path().starts_with(&format!("{base}/")))
}

#[derive(Deserialize)]
struct TokenForm {
    client_id: String,
    client_secret: String,
    code: Option<String>,
    grant_type: Option<String>,
    refresh_token: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
}

async fn access_token(State(s): State<Shared>, Form(form): Form<TokenForm>) -> Json<Value> {
    let mut inner = s.inner.lock().expect("state");
    if form.client_id != CLIENT_ID || form.client_secret != CLIENT_SECRET {
        return Json(json!({"error": "incorrect_client_credentials",
            "error_description": "The client_id and/or client_secret passed are incorrect."}));
    }
    if form.grant_type.as_deref() == Some("refresh_token") {
        // Refresh tokens are one-time: spent on use.
        let owner = form
            .refresh_token
            .as_deref()
            .and_then(|t| inner.refresh_tokens.remove(t));
        let Some(login) = owner else {
            return Json(json!({"error": "bad_refresh_token",
                "error_description": "The refresh token passed is incorrect or expired.",
                "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-refresh-token"}));
        };
        inner.refreshes += 1;
        return Json(inner.mint(&login, ""));
    }
    // Codes are one-time: removed on first use, whatever the outcome.
    let code = form.code.unwrap_or_default();
    let Some(pending) = inner.codes.remove(&code) else {
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
    Json(inner.mint(&pending.login, &pending.scope))
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
    let login = inner.live_login(token)?;
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
    let inner = s.inner.lock().expect("state");
    let items: Vec<Value> = u
        .repos
        .iter()
        .enumerate()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|(i, full)| {
            if inner.hosted.contains_key(full)
                && let Some(view) = inner.find_repo(full)
            {
                let perms = inner.permissions(Some(&u.login), &view);
                return repo_json(&s.url, &inner, &view, perms);
            }
            let (owner, name) = full.split_once('/').unwrap_or((&u.login, full));
            json!({
                "id": 1000 + i, "node_id": format!("R_{i}"), "name": name, "full_name": full,
                "private": i % 3 == 0, "owner": {"login": owner, "id": u.id},
                "html_url": format!("{}/{full}", s.url), "default_branch": "main",
                "updated_at": format!("2026-11-{:02}T00:00:00Z", 28 - (i % 27)),
            })
        })
        .collect();
    drop(inner);
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

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

fn requires_authentication() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"message": "Requires authentication", "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

fn validation_failed(errors: Value) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"message": "Validation Failed", "errors": errors,
            "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"})),
    )
        .into_response()
}

/// Why a REST call is refused before it does anything.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    BadCredentials,
    RequiresAuthentication,
    NotFound,
    BadJson,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::BadCredentials => bad_credentials(),
            Refusal::RequiresAuthentication => requires_authentication(),
            Refusal::NotFound => not_found(),
            Refusal::BadJson => (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": "Problems parsing JSON",
                    "documentation_url": "https://docs.github.com/rest"})),
            )
                .into_response(),
        }
    }
}

/// The REST caller: `Ok(None)` when anonymous, `Err` (401) when the token is not accepted.
fn api_caller(s: &Shared, headers: &HeaderMap) -> Result<Option<FakeUser>, Refusal> {
    if !headers.contains_key(header::AUTHORIZATION) {
        return Ok(None);
    }
    authed(s, headers).map(Some).ok_or(Refusal::BadCredentials)
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A user as GitHub embeds it in other objects (every field octocrab's `Author` requires).
fn author_json(url: &str, login: &str, id: i64) -> Value {
    let api = format!("{url}/api/v3/users/{login}");
    json!({
        "login": login, "id": id, "node_id": format!("U_{id}"),
        "avatar_url": format!("{url}/avatars/u/{id}"), "gravatar_id": "",
        "url": api, "html_url": format!("{url}/{login}"),
        "followers_url": format!("{api}/followers"),
        "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"),
        "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"),
        "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"),
        "type": "User", "site_admin": false
    })
}

fn repo_json(url: &str, inner: &Inner, repo: &RepoView, perms: Option<Permissions>) -> Value {
    let full = repo.full_name();
    let api = format!("{url}/api/v3/repos/{full}");
    let mut value = json!({
        "id": repo.id, "node_id": format!("R_{}", repo.id), "name": repo.name,
        "full_name": full, "private": repo.private,
        "owner": author_json(url, &repo.owner, inner.user_id(&repo.owner)),
        "html_url": format!("{url}/{full}"), "description": null, "fork": false,
        "url": api, "pulls_url": format!("{api}/pulls{{/number}}"),
        "git_url": format!("{url}/{full}.git"),
        "clone_url": format!("{url}/{full}.git"),
        "default_branch": repo.default_branch,
        "visibility": if repo.private { "private" } else { "public" },
        "archived": false, "disabled": false,
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-11-28T00:00:00Z",
        "pushed_at": "2026-11-28T00:00:00Z",
    });
    if let Some(p) = perms {
        value["permissions"] = json!({
            "admin": p.admin, "maintain": p.admin, "push": p.push, "triage": p.push, "pull": p.pull
        });
    }
    value
}

fn pull_json(url: &str, inner: &Inner, pr: &StoredPull, head_sha: &str, base_sha: &str) -> Value {
    let (owner, _) = pr.repo.split_once('/').unwrap_or((&pr.repo, ""));
    let repo = inner.find_repo(&pr.repo).map(|view| {
        let perms = inner.permissions(Some(&pr.user), &view);
        repo_json(url, inner, &view, perms)
    });
    let owner_json = author_json(url, owner, inner.user_id(owner));
    let api = format!("{url}/api/v3/repos/{}", pr.repo);
    let html = format!("{url}/{}/pull/{}", pr.repo, pr.number);
    let closed = pr.state == "closed";
    json!({
        "id": pr.id, "node_id": format!("PR_{}", pr.id), "number": pr.number,
        "url": format!("{api}/pulls/{}", pr.number),
        "html_url": html, "diff_url": format!("{html}.diff"), "patch_url": format!("{html}.patch"),
        "issue_url": format!("{api}/issues/{}", pr.number),
        "commits_url": format!("{api}/pulls/{}/commits", pr.number),
        "comments_url": format!("{api}/issues/{}/comments", pr.number),
        "statuses_url": format!("{api}/statuses/{head_sha}"),
        "state": pr.state, "locked": false, "title": pr.title, "body": pr.body,
        "draft": pr.draft,
        "user": author_json(url, &pr.user, inner.user_id(&pr.user)),
        "created_at": pr.created_at, "updated_at": pr.updated_at,
        "closed_at": if closed { Value::from(pr.updated_at.clone()) } else { Value::Null },
        "merged_at": null, "merged": false, "mergeable": null, "merge_commit_sha": null,
        "head": {"label": format!("{owner}:{}", pr.head), "ref": pr.head, "sha": head_sha,
            "user": owner_json, "repo": repo},
        "base": {"label": format!("{owner}:{}", pr.base), "ref": pr.base, "sha": base_sha,
            "user": owner_json, "repo": repo},
        "author_association": "OWNER",
    })
}

/// The repository and what the caller may do with it, or the answer to give instead.
fn visible_repo(
    s: &Shared,
    headers: &HeaderMap,
    owner: &str,
    name: &str,
) -> Result<(Option<FakeUser>, RepoView, Permissions), Refusal> {
    let caller = api_caller(s, headers)?;
    let inner = s.inner.lock().expect("state");
    let view = inner
        .find_repo(&format!("{owner}/{name}"))
        .ok_or(Refusal::NotFound)?;
    let perms = inner
        .permissions(caller.as_ref().map(|u| u.login.as_str()), &view)
        .ok_or(Refusal::NotFound)?;
    Ok((caller, view, perms))
}

async fn get_repo(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    match visible_repo(&s, &headers, &owner, &name) {
        Ok((caller, view, perms)) => {
            let inner = s.inner.lock().expect("state");
            Json(repo_json(&s.url, &inner, &view, caller.map(|_| perms))).into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}

#[derive(Deserialize)]
struct CreatePull {
    title: Option<String>,
    body: Option<String>,
    head: Option<String>,
    base: Option<String>,
    #[serde(default)]
    draft: bool,
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|_| Refusal::BadJson)
}

/// The repository of a pull request call: hosted, visible, and a signed-in caller.
fn pull_repo(
    s: &Shared,
    headers: &HeaderMap,
    owner: &str,
    name: &str,
    need_caller: bool,
) -> Result<(Option<FakeUser>, RepoView, PathBuf), Refusal> {
    // Writes ask for credentials before saying anything about the repository.
    if need_caller && api_caller(s, headers)?.is_none() {
        return Err(Refusal::RequiresAuthentication);
    }
    let (caller, view, _) = visible_repo(s, headers, owner, name)?;
    if !s
        .inner
        .lock()
        .expect("state")
        .hosted
        .contains_key(&view.full_name())
    {
        return Err(Refusal::NotFound);
    }
    let bare = git_http::bare_path(&s.git_root, &view.owner, &view.name);
    Ok((caller, view, bare))
}

async fn create_pull(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (caller, view, bare) = match pull_repo(&s, &headers, &owner, &name, true) {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(caller) = caller else {
        return requires_authentication();
    };
    let req: CreatePull = match parse_json(&body) {
        Ok(req) => req,
        Err(refusal) => return refusal.into_response(),
    };
    let missing = |field: &str| {
        validation_failed(
            json!([{"resource": "PullRequest", "field": field, "code": "missing_field"}]),
        )
    };
    let invalid = |field: &str| {
        validation_failed(json!([{"resource": "PullRequest", "field": field, "code": "invalid"}]))
    };
    let Some(title) = req.title.filter(|t| !t.trim().is_empty()) else {
        return missing("title");
    };
    let Some(head_spec) = req.head else {
        return missing("head");
    };
    let Some(base) = req.base else {
        return missing("base");
    };
    // `head` is `branch` or `owner:branch`; only same-repository heads exist here (no forks).
    let head = match head_spec.split_once(':') {
        Some((head_owner, branch)) if head_owner == view.owner => branch.to_owned(),
        Some(_) => return invalid("head"),
        None => head_spec.clone(),
    };
    let Some(base_sha) = git_http::branch_sha(&s.git_root, &bare, &base).await else {
        return invalid("base");
    };
    let Some(head_sha) = git_http::branch_sha(&s.git_root, &bare, &head).await else {
        return invalid("head");
    };
    let full = view.full_name();
    let exists = |inner: &Inner| {
        inner
            .pulls
            .iter()
            .any(|p| p.repo == full && p.head == head && p.base == base && p.state == "open")
    };
    let already = || {
        validation_failed(json!([{"resource": "PullRequest", "code": "custom",
            "message": format!("A pull request already exists for {}:{head}.", view.owner)}]))
    };
    if exists(&s.inner.lock().expect("state")) {
        return already();
    }
    let ahead = git_http::commits_ahead(&s.git_root, &bare, &base, &head)
        .await
        .unwrap_or(0);
    if ahead == 0 {
        return validation_failed(json!([{"resource": "PullRequest", "code": "custom",
            "message": format!("No commits between {base} and {head}")}]));
    }
    let mut inner = s.inner.lock().expect("state");
    if exists(&inner) {
        return already();
    }
    let id = inner.next_id();
    let number = 1 + inner.pulls.iter().filter(|p| p.repo == full).count() as u64;
    let now = now_rfc3339();
    let pr = StoredPull {
        id,
        number,
        repo: full,
        title,
        body: req.body,
        head,
        head_sha: head_sha.clone(),
        base,
        base_sha: base_sha.clone(),
        draft: req.draft,
        state: "open".into(),
        user: caller.login,
        created_at: now.clone(),
        updated_at: now,
    };
    let value = pull_json(&s.url, &inner, &pr, &head_sha, &base_sha);
    inner.pulls.push(pr);
    if std::mem::take(&mut inner.lose_next_pull_answer) {
        return (
            StatusCode::BAD_GATEWAY,
            Json(json!({"message": "Server Error"})),
        )
            .into_response();
    }
    let location = value["url"].as_str().unwrap_or_default().to_owned();
    let mut response = (StatusCode::CREATED, Json(value)).into_response();
    if let Ok(location) = location.parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Renders stored pull requests with their branches' current commits.
async fn render_pulls(s: &Shared, bare: &std::path::Path, pulls: Vec<StoredPull>) -> Vec<Value> {
    let mut shas = Vec::with_capacity(pulls.len());
    for p in &pulls {
        let head = git_http::branch_sha(&s.git_root, bare, &p.head).await;
        let base = git_http::branch_sha(&s.git_root, bare, &p.base).await;
        shas.push((
            head.unwrap_or_else(|| p.head_sha.clone()),
            base.unwrap_or_else(|| p.base_sha.clone()),
        ));
    }
    let inner = s.inner.lock().expect("state");
    pulls
        .iter()
        .zip(shas)
        .map(|(p, (head, base))| pull_json(&s.url, &inner, p, &head, &base))
        .collect()
}

#[derive(Deserialize)]
struct PullFilter {
    state: Option<String>,
    head: Option<String>,
    base: Option<String>,
    per_page: Option<usize>,
    page: Option<usize>,
}

async fn list_pulls(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
    Query(f): Query<PullFilter>,
) -> Response {
    let (_, view, bare) = match pull_repo(&s, &headers, &owner, &name, false) {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    let full = view.full_name();
    let state = f.state.unwrap_or_else(|| "open".into());
    let per_page = f.per_page.unwrap_or(30).clamp(1, 100);
    let page = f.page.unwrap_or(1).max(1);
    let matches_head = |p: &StoredPull| match f.head.as_deref() {
        None => true,
        Some(spec) => match spec.split_once(':') {
            Some((o, branch)) => o == view.owner && branch == p.head,
            None => spec == p.head,
        },
    };
    // Newest first, as GitHub sorts by default.
    let selected: Vec<StoredPull> = s
        .inner
        .lock()
        .expect("state")
        .pulls
        .iter()
        .rev()
        .filter(|p| p.repo == full)
        .filter(|p| state == "all" || p.state == state)
        .filter(|p| f.base.as_deref().is_none_or(|b| b == p.base))
        .filter(|p| matches_head(p))
        .skip((page - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    Json(render_pulls(&s, &bare, selected).await).into_response()
}

async fn get_pull(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((owner, name, number)): Path<(String, String, u64)>,
) -> Response {
    let (_, view, bare) = match pull_repo(&s, &headers, &owner, &name, false) {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    let full = view.full_name();
    let found: Vec<StoredPull> = s
        .inner
        .lock()
        .expect("state")
        .pulls
        .iter()
        .filter(|p| p.repo == full && p.number == number)
        .cloned()
        .collect();
    match render_pulls(&s, &bare, found).await.pop() {
        Some(value) => Json(value).into_response(),
        None => not_found(),
    }
}

#[derive(Deserialize)]
struct UpdatePull {
    title: Option<String>,
    body: Option<String>,
    state: Option<String>,
    base: Option<String>,
}

async fn update_pull(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((owner, name, number)): Path<(String, String, u64)>,
    body: Bytes,
) -> Response {
    let (_, view, bare) = match pull_repo(&s, &headers, &owner, &name, true) {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    let req: UpdatePull = match parse_json(&body) {
        Ok(req) => req,
        Err(refusal) => return refusal.into_response(),
    };
    if req
        .state
        .as_deref()
        .is_some_and(|st| st != "open" && st != "closed")
    {
        return validation_failed(
            json!([{"resource": "PullRequest", "field": "state", "code": "invalid"}]),
        );
    }
    if let Some(base) = &req.base
        && git_http::branch_sha(&s.git_root, &bare, base)
            .await
            .is_none()
    {
        return validation_failed(
            json!([{"resource": "PullRequest", "field": "base", "code": "invalid"}]),
        );
    }
    let full = view.full_name();
    let updated = {
        let mut inner = s.inner.lock().expect("state");
        let Some(pr) = inner
            .pulls
            .iter_mut()
            .find(|p| p.repo == full && p.number == number)
        else {
            return not_found();
        };
        if let Some(title) = req.title {
            pr.title = title;
        }
        if let Some(body) = req.body {
            pr.body = Some(body);
        }
        if let Some(state) = req.state {
            pr.state = state;
        }
        if let Some(base) = req.base {
            pr.base = base;
        }
        pr.updated_at = now_rfc3339();
        pr.clone()
    };
    match render_pulls(&s, &bare, vec![updated]).await.pop() {
        Some(value) => Json(value).into_response(),
        None => not_found(),
    }
}

/// How a git client identified itself.
enum GitCaller {
    Anonymous,
    Invalid,
    User {
        login: String,
        /// The token may add or change workflow files.
        workflow: bool,
    },
}

/// HTTP Basic as GitHub takes it for git: the token as password (any username, usually
/// `x-access-token`), or the token as username with an empty or `x-oauth-basic` password.
fn git_caller(s: &Shared, headers: &HeaderMap) -> GitCaller {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return GitCaller::Anonymous;
    };
    let decoded = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b64)| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let Some(decoded) = decoded else {
        return GitCaller::Invalid;
    };
    let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
    let inner = s.inner.lock().expect("state");
    let (token, login) = match inner.live_login(password) {
        Some(login) => (password, Some(login)),
        None if password.is_empty() || password == "x-oauth-basic" => {
            (user, inner.live_login(user))
        }
        None => (password, None),
    };
    match login {
        Some(login) if inner.users.contains_key(login) => GitCaller::User {
            login: login.clone(),
            // Tokens minted without the OAuth flow, and GitHub App tokens, may change workflows.
            workflow: inner
                .token_scopes
                .get(token)
                .is_none_or(|s| s.is_empty() || s.split(',').any(|s| s == "workflow")),
        },
        _ => GitCaller::Invalid,
    }
}

fn git_text(status: StatusCode, message: &str) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Basic realm=\"GitHub\""),
        );
    }
    response
}

/// Git smart HTTP at `/{owner}/{repo}.git/...`, authorised as GitHub does, served by
/// `git http-backend`.
async fn git_smart_http(State(s): State<Shared>, req: Request) -> Response {
    let Some(path) = GitPath::parse(req.uri().path()) else {
        return git_text(StatusCode::NOT_FOUND, "Not Found");
    };
    let push = path.is_push(req.uri().query().unwrap_or(""));
    s.inner.lock().expect("state").git_requests.push((
        req.uri().path().to_owned(),
        req.headers().contains_key(header::AUTHORIZATION),
    ));
    let mut workflow = false;
    let login = match git_caller(&s, req.headers()) {
        GitCaller::Invalid => {
            return git_text(
                StatusCode::UNAUTHORIZED,
                "Invalid username or token. Password authentication is not supported for Git operations.",
            );
        }
        GitCaller::Anonymous => None,
        GitCaller::User {
            login,
            workflow: may,
        } => {
            workflow = may;
            Some(login)
        }
    };
    let full = path.full_name();
    let perms = {
        let inner = s.inner.lock().expect("state");
        inner.hosted.get(&full).map(|h| {
            let view = RepoView {
                id: h.id,
                owner: h.owner.clone(),
                name: h.name.clone(),
                private: h.private,
                default_branch: h.default_branch.clone(),
            };
            inner.permissions(login.as_deref(), &view)
        })
    };
    match (&login, perms) {
        // Anonymous reads of public repositories need no credentials; anything else asks for
        // them, without saying whether the repository exists.
        (None, Some(Some(p))) if p.pull && !push => {}
        (None, _) => return git_text(StatusCode::UNAUTHORIZED, "Authentication required."),
        (Some(_), None | Some(None)) => {
            return git_text(StatusCode::NOT_FOUND, "Repository not found.");
        }
        (Some(user), Some(Some(p))) if push && !p.push => {
            return git_text(
                StatusCode::FORBIDDEN,
                &format!("Permission to {full}.git denied to {user}."),
            );
        }
        (Some(_), Some(Some(_))) => {}
    }
    git_http::serve(&s.git_root, &path, login.as_deref(), workflow, req).await
}

// ---- Issues: comments and reactions posted through the API, and webhook deliveries ----

/// A comment posted on an issue or pull request through the API.
#[derive(Debug, Clone)]
pub struct PostedComment {
    /// `owner/name`.
    pub repo: String,
    /// Issue or pull request number.
    pub number: i64,
    /// Who posted it (the token's owner).
    pub login: String,
    /// Its text.
    pub body: String,
}

/// A reaction posted through the API.
#[derive(Debug, Clone)]
pub struct PostedReaction {
    /// `owner/name`.
    pub repo: String,
    /// The comment reacted on, or `None` for the issue itself.
    pub comment_id: Option<i64>,
    /// The issue, when reacting on the issue.
    pub issue_number: Option<i64>,
    /// Who reacted.
    pub login: String,
    /// `+1`, `eyes`, `rocket`…
    pub content: String,
}

/// One issue or pull request comment as a webhook describes it.
#[derive(Debug, Clone)]
pub struct CommentEvent<'a> {
    /// `owner/name`.
    pub repo: &'a str,
    /// Issue or pull request number.
    pub number: i64,
    /// Its title.
    pub title: &'a str,
    /// Its body.
    pub body: &'a str,
    /// A pull request rather than an issue.
    pub is_pull: bool,
    /// Who commented.
    pub commenter: &'a str,
    /// The comment.
    pub comment: &'a str,
}

impl GithubStandIn {
    /// Makes `login` a read-only collaborator (pull, no push) on `owner/name`.
    pub fn grant_read_access(&self, login: &str, owner: &str, name: &str) {
        self.lock()
            .readers
            .entry(login.into())
            .or_default()
            .push(format!("{owner}/{name}"));
    }

    /// Comments posted on `owner/name` through the API, oldest first.
    pub fn issue_comments(&self, owner: &str, name: &str) -> Vec<PostedComment> {
        let full = format!("{owner}/{name}");
        self.lock()
            .issue_comments
            .iter()
            .filter(|c| c.repo == full)
            .cloned()
            .collect()
    }

    /// Reactions posted on `owner/name` through the API, oldest first.
    pub fn reactions(&self, owner: &str, name: &str) -> Vec<PostedReaction> {
        let full = format!("{owner}/{name}");
        self.lock()
            .reactions
            .iter()
            .filter(|r| r.repo == full)
            .cloned()
            .collect()
    }

    fn user_json(&self, login: &str) -> Value {
        let inner = self.lock();
        author_json(&self.url, login, inner.user_id(login))
    }

    /// The `issue_comment` (`created`) payload GitHub sends for `event`; answers it with the
    /// comment's id.
    pub fn issue_comment_payload(&self, event: &CommentEvent<'_>) -> (Value, i64) {
        let comment_id = self.lock().next_id();
        let issue_url = format!(
            "{}/{}/{}/{}",
            self.url,
            event.repo,
            if event.is_pull { "pull" } else { "issues" },
            event.number
        );
        let mut issue = json!({
            "number": event.number, "title": event.title, "body": event.body,
            "html_url": issue_url, "state": "open", "user": self.user_json(event.commenter),
        });
        if event.is_pull {
            issue["pull_request"] = json!({
                "url": format!("{}/repos/{}/pulls/{}", self.api_url(), event.repo, event.number),
                "html_url": issue_url,
            });
        }
        let payload = json!({
            "action": "created",
            "issue": issue,
            "comment": {
                "id": comment_id, "body": event.comment,
                "html_url": format!("{issue_url}#issuecomment-{comment_id}"),
                "user": self.user_json(event.commenter),
            },
            "repository": { "full_name": event.repo, "name": event.repo.split('/').nth(1) },
            "sender": self.user_json(event.commenter),
        });
        (payload, comment_id)
    }

    /// The `issues` (`labeled`) payload GitHub sends when `labeller` adds `label` to an issue.
    pub fn issue_labeled_payload(
        &self,
        repo: &str,
        number: i64,
        title: &str,
        body: &str,
        label: &str,
        labeller: &str,
    ) -> Value {
        json!({
            "action": "labeled",
            "issue": {
                "number": number, "title": title, "body": body,
                "html_url": format!("{}/{repo}/issues/{number}", self.url), "state": "open",
                "user": self.user_json(labeller),
            },
            "label": { "name": label },
            "repository": { "full_name": repo },
            "sender": self.user_json(labeller),
        })
    }

    /// Delivers a webhook as GitHub does: POSTs `payload` to `url` with `X-GitHub-Event`,
    /// `X-GitHub-Delivery` and `X-Hub-Signature-256` (HMAC-SHA256 of the body with `secret`).
    /// Answers the status and the JSON answer (`null` if not JSON).
    pub async fn deliver(
        &self,
        url: &str,
        secret: &str,
        event: &str,
        delivery: &str,
        payload: &Value,
    ) -> (StatusCode, Value) {
        use hmac::{Hmac, Mac};
        let body = serde_json::to_vec(payload).expect("payload");
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
        mac.update(&body);
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        self.deliver_raw(url, event, delivery, Some(&signature), body)
            .await
    }

    /// Delivers `body` with the given signature header (or none).
    pub async fn deliver_raw(
        &self,
        url: &str,
        event: &str,
        delivery: &str,
        signature: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/standin")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .body(body);
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        let resp = request.send().await.expect("deliver webhook");
        let status = StatusCode::from_u16(resp.status().as_u16()).expect("status");
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

#[derive(Deserialize)]
struct NewIssueComment {
    body: String,
}

async fn create_issue_comment(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((owner, name, number)): Path<(String, String, i64)>,
    body: Bytes,
) -> Response {
    let (caller, view) = match visible_repo(&s, &headers, &owner, &name) {
        Ok((Some(caller), view, _)) => (caller, view),
        Ok((None, ..)) => return requires_authentication(),
        Err(refusal) => return refusal.into_response(),
    };
    let comment: NewIssueComment = match parse_json(&body) {
        Ok(c) => c,
        Err(refusal) => return refusal.into_response(),
    };
    let mut inner = s.inner.lock().expect("state");
    let id = inner.next_id();
    let full = view.full_name();
    inner.issue_comments.push(PostedComment {
        repo: full.clone(),
        number,
        login: caller.login.clone(),
        body: comment.body.clone(),
    });
    let html_url = format!("{}/{full}/issues/{number}#issuecomment-{id}", s.url);
    (
        StatusCode::CREATED,
        Json(json!({
            "id": id, "body": comment.body, "html_url": html_url,
            "user": author_json(&s.url, &caller.login, caller.id),
            "created_at": now_rfc3339(), "updated_at": now_rfc3339(),
        })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct NewReaction {
    content: String,
}

fn react(
    s: &Shared,
    headers: &HeaderMap,
    owner: &str,
    name: &str,
    comment_id: Option<i64>,
    issue_number: Option<i64>,
    body: &[u8],
) -> Response {
    let (caller, view) = match visible_repo(s, headers, owner, name) {
        Ok((Some(caller), view, _)) => (caller, view),
        Ok((None, ..)) => return requires_authentication(),
        Err(refusal) => return refusal.into_response(),
    };
    let reaction: NewReaction = match parse_json(body) {
        Ok(r) => r,
        Err(refusal) => return refusal.into_response(),
    };
    const CONTENTS: [&str; 8] = [
        "+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes",
    ];
    if !CONTENTS.contains(&reaction.content.as_str()) {
        return validation_failed(
            json!([{"resource": "Reaction", "field": "content", "code": "invalid"}]),
        );
    }
    let mut inner = s.inner.lock().expect("state");
    let id = inner.next_id();
    inner.reactions.push(PostedReaction {
        repo: view.full_name(),
        comment_id,
        issue_number,
        login: caller.login.clone(),
        content: reaction.content.clone(),
    });
    (
        StatusCode::CREATED,
        Json(json!({
            "id": id, "node_id": format!("REA_{id}"), "content": reaction.content,
            "user": author_json(&s.url, &caller.login, caller.id), "created_at": now_rfc3339(),
        })),
    )
        .into_response()
}

async fn react_on_comment(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((owner, name, id)): Path<(String, String, i64)>,
    body: Bytes,
) -> Response {
    react(&s, &headers, &owner, &name, Some(id), None, &body)
}

async fn react_on_issue(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((owner, name, number)): Path<(String, String, i64)>,
    body: Bytes,
) -> Response {
    react(&s, &headers, &owner, &name, None, Some(number), &body)
}
