//! Sign-in with GitHub end to end: the real server, a GitHub stand-in speaking OAuth and REST,
//! and a cookie-keeping HTTP client playing the browser.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;

use drydock_tests::app::{browser, location};
use drydock_tests::{App, GithubStandIn, TestDb, TestServer};
use reqwest::cookie::CookieStore;
use reqwest::redirect::Policy;
use reqwest::{Client, StatusCode};
use serde_json::Value;

type Env = App;

async fn env_on(db: TestDb) -> Env {
    App::start(db, &[]).await
}

async fn env() -> Env {
    env_on(TestDb::sqlite().await).await
}

async fn oauth_dance(client: &Client, env: &Env, start: &str) -> (reqwest::Response, ()) {
    (env.oauth_dance(client, start).await, ())
}

async fn sign_in(env: &Env, login: &str) -> (Client, Arc<reqwest::cookie::Jar>) {
    env.sign_in_with_jar(login).await
}

async fn me(client: &Client, env: &Env) -> (StatusCode, Value) {
    let resp = client
        .get(format!("{}/api/me", env.server.url))
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap_or(Value::Null))
}

fn session_cookie(jar: &reqwest::cookie::Jar, env: &Env) -> String {
    let header = jar.cookies(&env.server.url.parse().unwrap()).unwrap();
    header
        .to_str()
        .unwrap()
        .split("; ")
        .find(|c| c.starts_with("drydock_session="))
        .unwrap()
        .trim_start_matches("drydock_session=")
        .to_owned()
}

async fn me_with_cookie(env: &Env, cookie: &str) -> StatusCode {
    Client::new()
        .get(format!("{}/api/me", env.server.url))
        .header("cookie", format!("drydock_session={cookie}"))
        .send()
        .await
        .unwrap()
        .status()
}

async fn happy_path_on(db: TestDb) {
    let env = env_on(db).await;
    let (client, jar) = browser();
    assert_eq!(
        me(&client, &env).await.0,
        StatusCode::UNAUTHORIZED,
        "signed out at first"
    );
    env.gh.approve_as(Some("alice"));
    let (resp, _) = oauth_dance(&client, &env, "/auth/github?next=/api/me").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/api/me", "back to where the user started");
    let set_cookies: Vec<_> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session = set_cookies
        .iter()
        .find(|c| c.starts_with("drydock_session="))
        .unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    assert!(
        !session.contains("Secure"),
        "plain http public URL: no Secure flag"
    );

    let query = &env.gh.authorize_queries()[0];
    assert_eq!(query["scope"], "repo workflow read:user user:email");
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(
        query["redirect_uri"],
        format!("{}/auth/github/callback", env.server.url)
    );
    assert!(query["state"].len() >= 16 && query["code_challenge"].len() >= 43);

    let (status, body) = me(&client, &env).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["login"], "alice");
    assert_eq!(body["name"], "alice Example");
    assert!(
        body["avatar_url"]
            .as_str()
            .unwrap()
            .contains("/avatars/u/101")
    );

    // The GitHub token is stored sealed and never reaches the browser.
    let token = env.gh.issued_tokens().pop().unwrap();
    assert!(!body.to_string().contains(&token));
    assert!(!session_cookie(&jar, &env).contains(&token));
    let user = env
        .db
        .store
        .get_user(body["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        user.email.as_deref(),
        Some("alice@users.example"),
        "primary verified email used"
    );
    let account = env
        .db
        .store
        .get_github_account(&user.id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        account.access_token_enc.starts_with("v1:") && !account.access_token_enc.contains(&token)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_happy_path_on_sqlite() {
    happy_path_on(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_happy_path_on_postgres() {
    happy_path_on(TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_consent_shows_a_friendly_page() {
    let env = env().await;
    let (client, _) = browser();
    env.gh.approve_as(None);
    let (resp, _) = oauth_dance(&client, &env, "/auth/github").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("Sign-in cancelled") && html.contains("chose not to authorize"),
        "{html}"
    );
    assert!(
        html.contains("href=\"/auth/github\""),
        "offers to try again"
    );
    assert_eq!(me(&client, &env).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_url_that_does_not_match_the_oauth_app_says_what_to_register() {
    let env = env().await;
    let (client, _) = browser();
    env.gh.approve_as(Some("alice"));
    // The OAuth app was registered for `localhost`, while this server is reached at 127.0.0.1:
    // GitHub returns the browser to the registered URL with an error instead of a code.
    let port = env.server.url.rsplit(':').next().unwrap();
    env.gh
        .register_callback(&format!("http://localhost:{port}/auth/github/callback"));
    let start = client
        .get(format!("{}/auth/github", env.server.url))
        .send()
        .await
        .unwrap();
    let authorize = client.get(location(&start)).send().await.unwrap();
    let callback = location(&authorize);
    assert!(
        callback.starts_with(&format!(
            "http://localhost:{port}/auth/github/callback?error=redirect_uri_mismatch"
        )),
        "{callback}"
    );
    let resp = client.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let html = resp.text().await.unwrap();
    let expected = format!("{}/auth/github/callback", env.server.url);
    assert!(
        html.contains("callback URL does not match") && html.contains(&expected),
        "the page names the URL to register: {html}"
    );
    assert!(html.contains("DRYDOCK_PUBLIC_URL"), "{html}");
    assert_eq!(me(&client, &env).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_missing_expired_and_replayed_state_are_refused() {
    let env = env().await;
    env.gh.approve_as(Some("alice"));

    // Wrong state: the callback's state does not match the cookie's.
    let (client, _) = browser();
    client
        .get(format!("{}/auth/github", env.server.url))
        .send()
        .await
        .unwrap();
    let resp = client
        .get(format!(
            "{}/auth/github/callback?code=x&state=forged",
            env.server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("no longer valid") && html.contains("Try signing in again"),
        "{html}"
    );

    // No state cookie at all (another browser, or cookies cleared).
    let (fresh, _) = browser();
    let resp = fresh
        .get(format!(
            "{}/auth/github/callback?code=x&state=y",
            env.server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Expired: a state cookie issued eleven minutes ago, signed with the server's own key.
    let key_hex = std::fs::read_to_string(env.server.data_dir.path().join("jwe.secret")).unwrap();
    let key: [u8; 32] = hex::decode(key_hex.trim()).unwrap().try_into().unwrap();
    let claims = drydock::auth::cookies::OAuthClaims {
        state: "old-state".into(),
        verifier: "v".repeat(43),
        next: "/".into(),
        exp: chrono_now() - 60,
    };
    let old = drydock::auth::cookies::sign_oauth(&key, &claims).unwrap();
    let resp = Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
        .get(format!(
            "{}/auth/github/callback?code=x&state=old-state",
            env.server.url
        ))
        .header("cookie", format!("drydock_oauth={old}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "expired state refused"
    );

    // Replayed: the same callback, with the same state cookie, a second time.
    let plain = Client::builder().redirect(Policy::none()).build().unwrap();
    let start = plain
        .get(format!("{}/auth/github", env.server.url))
        .send()
        .await
        .unwrap();
    let set_cookie = start.headers().get("set-cookie").unwrap().to_str().unwrap();
    let oauth_cookie = set_cookie.split(';').next().unwrap().to_owned();
    let gh_resp = plain.get(location(&start)).send().await.unwrap();
    let callback = location(&gh_resp);
    let resp = plain;
    let first = resp
        .get(&callback)
        .header("cookie", oauth_cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER, "first use signs in");
    let again = resp
        .get(&callback)
        .header("cookie", oauth_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        StatusCode::BAD_REQUEST,
        "a replayed callback is refused"
    );
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_verifier_or_failed_code_exchange_is_a_readable_error() {
    let env = env().await;
    env.gh.approve_as(Some("alice"));
    env.gh.corrupt_next_challenge();
    let (client, _) = browser();
    let (resp, _) = oauth_dance(&client, &env, "/auth/github").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("code_verifier does not match"),
        "GitHub's reason is shown: {html}"
    );
    assert_eq!(me(&client, &env).await.0, StatusCode::UNAUTHORIZED);

    // A server configured with the wrong client secret.
    let gh = GithubStandIn::start().await;
    gh.add_user(1, "alice", 0);
    gh.approve_as(Some("alice"));
    let mut settings = gh.settings();
    let last = settings.len() - 1;
    settings[last] = "wrong-secret".into();
    let db = TestDb::sqlite().await;
    let server = TestServer::start_with(&db.url, settings).await;
    let wrong = App { gh, server, db };
    let (client, _) = browser();
    let (resp, _) = oauth_dance(&client, &wrong, "/auth/github").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("client_secret passed are incorrect")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_expired_and_revoked_sessions_are_signed_out() {
    let env = env().await;
    let (client, jar) = sign_in(&env, "alice").await;
    let cookie = session_cookie(&jar, &env);
    assert_eq!(me_with_cookie(&env, &cookie).await, StatusCode::OK);

    let mut tampered: Vec<char> = cookie.chars().collect();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == 'x' { 'y' } else { 'x' };
    assert_eq!(
        me_with_cookie(&env, &tampered.into_iter().collect::<String>()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        me_with_cookie(&env, "not-a-jwe").await,
        StatusCode::UNAUTHORIZED
    );

    // The session row expires (the cookie itself still looks fine).
    let (_, jar2) = sign_in(&env, "alice").await;
    let second = session_cookie(&jar2, &env);
    let pool = sqlx::SqlitePool::connect(&env.db.url).await.unwrap();
    let user_id = me(&client, &env).await.1["id"].as_str().unwrap().to_owned();
    sqlx::query("UPDATE sessions SET expires_at = 1 WHERE user_id = $1")
        .bind(&user_id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        me_with_cookie(&env, &second).await,
        StatusCode::UNAUTHORIZED,
        "expired row"
    );
    assert_eq!(
        me_with_cookie(&env, &cookie).await,
        StatusCode::UNAUTHORIZED
    );

    // Pages redirect a signed-out browser to sign in instead of answering JSON.
    let page = Client::builder().redirect(Policy::none()).build().unwrap();
    let resp = page
        .post(format!("{}/auth/logout", env.server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_session_even_for_a_copied_cookie() {
    let env = env().await;
    let (client, jar) = sign_in(&env, "alice").await;
    let cookie = session_cookie(&jar, &env);
    let resp = client
        .post(format!("{}/auth/logout", env.server.url))
        .header("origin", &env.server.url)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let cleared = resp.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        cleared.starts_with("drydock_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(me(&client, &env).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        me_with_cookie(&env, &cookie).await,
        StatusCode::UNAUTHORIZED,
        "the row is revoked, not just the cookie"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirects_are_refused() {
    let env = env().await;
    env.gh.approve_as(Some("alice"));
    for evil in [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "/%5Cevil.example",
    ] {
        let (client, _) = browser();
        let start = format!("/auth/github?next={}", urlencode(evil));
        let (resp, _) = oauth_dance(&client, &env, &start).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let to = location(&resp);
        assert!(
            to == "/"
                || (to.starts_with('/')
                    && !to.starts_with("//")
                    && !to.contains('\\')
                    && !to.contains("evil")),
            "{evil} -> {to}"
        );
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_state_changes_are_refused() {
    let env = env().await;
    let (client, jar) = sign_in(&env, "alice").await;
    let resp = client
        .post(format!("{}/auth/logout", env.server.url))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cross-site")
    );
    let resp = client
        .post(format!("{}/auth/logout", env.server.url))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        me_with_cookie(&env, &session_cookie(&jar, &env)).await,
        StatusCode::OK,
        "still signed in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_each_see_only_themselves() {
    let env = env().await;
    let (alice, _) = sign_in(&env, "alice").await;
    let (bob, _) = sign_in(&env, "bob").await;
    let (_, a) = me(&alice, &env).await;
    let (_, b) = me(&bob, &env).await;
    assert_eq!(
        (a["login"].as_str(), b["login"].as_str()),
        (Some("alice"), Some("bob"))
    );
    assert_ne!(a["id"], b["id"]);
    let bob_repos: Value = bob
        .get(format!("{}/api/repos", env.server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<_> = bob_repos["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["full_name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec!["bob/repo-0", "bob/repo-1", "bob/repo-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_are_listed_searched_and_paged() {
    let env = env().await;
    let (client, _) = sign_in(&env, "alice").await;
    let get = |q: &str| {
        let client = client.clone();
        let url = format!("{}/api/repos{q}", env.server.url);
        async move {
            let resp = client.get(url).send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, page1) = get("").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page1["repos"].as_array().unwrap().len(), 30);
    assert_eq!(page1["has_next"], true);
    let first = &page1["repos"][0];
    assert_eq!(
        (
            first["owner"].as_str(),
            first["name"].as_str(),
            first["private"].as_bool()
        ),
        (Some("alice"), Some("repo-0"), Some(true))
    );
    assert_eq!(first["default_branch"], "main");
    assert!(
        first["updated_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-")
    );
    let (_, page3) = get("?page=3").await;
    assert_eq!(page3["repos"].as_array().unwrap().len(), 15);
    assert_eq!(page3["has_next"], false);
    assert_eq!(page3["repos"][0]["name"], "repo-60");

    let (_, found) = get("?q=REPO-7").await;
    let names: Vec<_> = found["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "repo-7", "repo-70", "repo-71", "repo-72", "repo-73", "repo-74"
        ]
    );
    assert_eq!(found["has_next"], false);

    let (status, body) = get("?page=0").await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("page"))
    );
    let (status, body) = get("?page=abc").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request"))
    );

    // The user revokes drydock on GitHub: they are told to sign in again.
    env.gh.revoke_tokens_of("alice");
    let (status, body) = get("").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "sign_in_again");

    let anonymous = Client::new()
        .get(format!("{}/api/repos", env.server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_oauth_app_the_home_page_explains_set_up() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(&db.url, &[]).await;
    let html = reqwest::get(format!("{}/", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Set up sign-in"), "{html}");
    assert!(
        html.contains(&format!("{}/auth/github/callback", server.url)),
        "shows the exact callback URL"
    );
    assert!(html.contains("https://github.com/settings/applications/new"));
    assert!(!html.contains("Sign in with GitHub"), "no broken button");
    let resp = Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/auth/github", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

    let gh = GithubStandIn::start().await;
    let configured = TestServer::start_with(&TestDb::sqlite().await.url, gh.settings()).await;
    let html = reqwest::get(format!("{}/?next=/tasks", configured.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("Sign in with GitHub") && html.contains("/auth/github?next=%2Ftasks"),
        "{html}"
    );
}
