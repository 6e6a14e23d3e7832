//! Connectors that sign in with OAuth (the MCP authorization spec), against an OAuth-protected
//! MCP server and authorization server on the official Python SDK (tests/mcp/oauth_server.py):
//! the browser flow (discovery, dynamic registration, PKCE, consent, callback), sealed tokens,
//! the bearer token in the agent's config and redacted from its output, single-flight refresh,
//! `needs_reauth`, the `state` checks and revocation on delete.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use drydock_tests::app::location;
use drydock_tests::oauth_mcp::OAuthMcpServer;
use drydock_tests::tasks::TaskEnv;
use drydock_tests::{TestDb, on_both_backends};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;

const CALLBACK: &str = "/connectors/oauth/callback";

/// A task script that prints the tracker's token as configured (to be redacted) and reversed
/// (which no redactor knows, so the test can recover it and try it at the server).
const PRINT_TOKEN: &str = r#"
tok=$(sed -n 's/.*"Bearer \([^"]*\)".*/\1/p' /home/agent/.drydock/mcp.json | head -n 1)
echo "token: $tok"
echo "reversed: $(python3 -c 'import sys; print(sys.argv[1][::-1])' "$tok")"
"#;

async fn start_env(db: TestDb) -> TaskEnv {
    TaskEnv::start(db, &["--allow-private-connector-urls", "true"]).await
}

async fn create_tracker(env: &TaskEnv, server: &OAuthMcpServer) -> String {
    let resp = env
        .alice
        .post(env.app.url("/api/connectors"))
        .json(&json!({
            "name": "tracker", "transport": "http", "url": server.mcp_url(), "auth": "oauth",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["auth"], "oauth");
    assert_eq!(body["status"], "needs_auth", "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// `POST .../oauth/start` as `browser`: answers the authorization URL.
async fn start_connect(env: &TaskEnv, browser: &Client, id: &str) -> String {
    let resp = browser
        .post(env.app.url(&format!("/api/connectors/{id}/oauth/start")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    body["authorization_url"].as_str().unwrap().to_owned()
}

/// The whole browser flow as Alice; answers drydock's answer to the callback.
async fn connect(env: &TaskEnv, server: &OAuthMcpServer, id: &str) -> reqwest::Response {
    let authorize = start_connect(env, &env.alice, id).await;
    let callback = server.consent(&env.alice, &authorize, true).await;
    env.alice.get(&callback).send().await.unwrap()
}

async fn connector(env: &TaskEnv, id: &str) -> Value {
    env.get_json(&format!("/api/connectors/{id}")).await
}

/// The token a finished task's script printed reversed.
async fn token_of(env: &TaskEnv, task_id: &str) -> String {
    let log = env.log(task_id).await;
    let reversed = log
        .iter()
        .find_map(|l| l.split_once("reversed: ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no token printed:\n{}", log.join("\n")))
        .trim()
        .to_owned();
    assert!(
        !reversed.is_empty(),
        "the agent config had no bearer token:\n{}",
        log.join("\n")
    );
    reversed.chars().rev().collect()
}

/// Every text the database holds about connectors and OAuth requests, and the task logs.
async fn database_text(db: &TestDb) -> Vec<String> {
    let queries = [
        "SELECT COALESCE(url, '') || ' ' || COALESCE(headers_enc, '') || ' ' || COALESCE(oauth_enc, '') || ' ' || COALESCE(oauth_error, '') || ' ' || COALESCE(last_error, '') FROM connectors",
        "SELECT pending_enc FROM connector_oauth_requests",
        "SELECT text FROM task_events",
    ];
    let mut out = Vec::new();
    if db.url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        for q in queries {
            let rows: Vec<(String,)> = sqlx::query_as(q).fetch_all(&mut conn).await.unwrap();
            out.extend(rows.into_iter().map(|r| r.0));
        }
    } else {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        for q in queries {
            let rows: Vec<(String,)> = sqlx::query_as(q).fetch_all(&mut conn).await.unwrap();
            out.extend(rows.into_iter().map(|r| r.0));
        }
    }
    out
}

async fn sealed_grant(db: &TestDb, id: &str) -> Option<String> {
    let q = "SELECT oauth_enc FROM connectors WHERE id = $1";
    if db.url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::query_as::<_, (Option<String>,)>(q)
            .bind(id)
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .0
    } else {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query_as::<_, (Option<String>,)>(q)
            .bind(id)
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .0
    }
}

async fn connect_lists_tools_seals_tokens_and_hands_the_agent_a_redacted_bearer(db: TestDb) {
    let server = OAuthMcpServer::start(&[]).await;
    let env = start_env(db).await;
    let id = create_tracker(&env, &server).await;

    let authorize = start_connect(&env, &env.alice, &id).await;
    let url = reqwest::Url::parse(&authorize).unwrap();
    assert_eq!(url.origin().ascii_serialization(), server.origin);
    assert_eq!(url.path(), "/authorize");
    let query: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["code_challenge"].len(), 43, "a SHA-256 challenge");
    assert_eq!(
        query["resource"],
        server.mcp_url(),
        "RFC 8707 resource indicator"
    );
    assert_eq!(query["redirect_uri"], env.app.url(CALLBACK));
    assert!(query["state"].len() >= 32);
    assert_eq!(
        server.count("registrations").await,
        1,
        "drydock registered itself"
    );

    let callback = server.consent(&env.alice, &authorize, true).await;
    assert!(callback.starts_with(&env.app.url(CALLBACK)), "{callback}");
    let resp = env.alice.get(&callback).send().await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "{}",
        resp.text().await.unwrap()
    );
    assert_eq!(
        location(&resp),
        format!("/settings/connectors?connected={id}")
    );
    assert_eq!(server.count("token_exchanges").await, 1);

    let c = connector(&env, &id).await;
    assert_eq!(c["status"], "connected", "{c}");
    assert_eq!(
        c["last_status"], "ok",
        "the callback ran the connection test: {c}"
    );
    assert_eq!(c["tool_count"], 2, "{c}");
    assert_eq!(c["oauth_scopes"], json!(["mcp"]));
    let list = env.get_json("/api/connectors").await;
    assert_eq!(list["connectors"][0]["status"], "connected");

    let task = env.submit(PRINT_TOKEN, json!({ "create_pr": false })).await;
    let done = env.wait_done(&task).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let token = token_of(&env, &task).await;
    assert_eq!(
        server.status_with_token(&token).await,
        StatusCode::OK,
        "the agent got the live token"
    );
    assert_eq!(
        server.status_with_token("not-the-token-0123456789").await,
        StatusCode::UNAUTHORIZED
    );
    let log = env.log(&task).await.join("\n");
    assert!(
        !log.contains(&token),
        "the token is redacted from the agent's output:\n{log}"
    );
    assert!(log.contains("token: [REDACTED"), "{log}");

    let sealed = sealed_grant(&env.app.db, &id).await.unwrap();
    assert!(sealed.starts_with("v1:"), "sealed like every other secret");
    for text in database_text(&env.app.db).await {
        assert!(
            !text.contains(&token),
            "a token in the database in plaintext: {text}"
        );
    }
    let api = env.get_page("/api/connectors").await;
    assert!(!api.contains(&token));

    // Deleting revokes at the authorization server (RFC 7009), then erases.
    let resp = env
        .alice
        .delete(env.app.url(&format!("/api/connectors/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(server.count("revocations").await >= 1);
    assert_eq!(
        server.status_with_token(&token).await,
        StatusCode::UNAUTHORIZED,
        "revoked"
    );
}

async fn five_tasks_on_an_expired_token_cause_one_refresh(db: TestDb) {
    let server = OAuthMcpServer::start(&[]).await;
    // All five run at once.
    let env = TaskEnv::start(
        db,
        &[
            "--allow-private-connector-urls",
            "true",
            "--max-concurrent-tasks",
            "5",
            "--max-concurrent-tasks-per-user",
            "5",
        ],
    )
    .await;
    let id = create_tracker(&env, &server).await;
    // 61 s: fresh at the callback's connection test, within drydock's 60 s margin a second later.
    server.set_expires_in(61).await;
    assert_eq!(
        connect(&env, &server, &id).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(connector(&env, &id).await["status"], "connected");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.set_expires_in(3600).await;
    server.set_refresh_delay(3.0).await;
    assert_eq!(server.count("refreshes").await, 0);

    let mut tasks = Vec::new();
    for _ in 0..5 {
        tasks.push(env.submit(PRINT_TOKEN, json!({ "create_pr": false })).await);
    }
    let mut tokens = Vec::new();
    for task in &tasks {
        let done = env.wait_done(task).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        tokens.push(token_of(&env, task).await);
    }
    assert_eq!(
        server.count("refreshes").await,
        1,
        "exactly one refresh for five tasks"
    );
    assert!(
        tokens.iter().all(|t| t == &tokens[0]),
        "all five use the new token: {tokens:?}"
    );
    assert_eq!(server.status_with_token(&tokens[0]).await, StatusCode::OK);
}

async fn a_revoked_refresh_token_means_needs_reauth_until_reconnected(db: TestDb) {
    let server = OAuthMcpServer::start(&[]).await;
    let env = start_env(db).await;
    let id = create_tracker(&env, &server).await;
    server.set_expires_in(61).await;
    assert_eq!(
        connect(&env, &server, &id).await.status(),
        StatusCode::SEE_OTHER
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.revoke_refresh_tokens().await;

    let script = "grep -c tracker /home/agent/.drydock/mcp.json || echo 'no tracker configured'";
    let task = env.submit(script, json!({ "create_pr": false })).await;
    let done = env.wait_done(&task).await;
    assert_eq!(
        done["status"], "succeeded",
        "the task starts without the connector: {done}"
    );
    let log = env.log(&task).await.join("\n");
    assert!(
        log.contains("Connector tracker is left out of this task: it must be connected again"),
        "the log says so:\n{log}"
    );
    assert!(log.contains("no tracker configured"), "{log}");
    let c = connector(&env, &id).await;
    assert_eq!(c["status"], "needs_reauth", "{c}");
    assert!(
        c["status_detail"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{c}"
    );

    server.set_expires_in(3600).await;
    assert_eq!(
        connect(&env, &server, &id).await.status(),
        StatusCode::SEE_OTHER
    );
    let c = connector(&env, &id).await;
    assert_eq!(c["status"], "connected", "reconnecting restores it: {c}");
    assert_eq!(c["status_detail"], Value::Null);
}

on_both_backends!(
    connect_lists_tools_seals_tokens_and_hands_the_agent_a_redacted_bearer,
    five_tasks_on_an_expired_token_cause_one_refresh,
    a_revoked_refresh_token_means_needs_reauth_until_reconnected,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_bound_to_the_session_used_once_and_errors_are_readable() {
    let server = OAuthMcpServer::start(&[]).await;
    let env = start_env(TestDb::sqlite().await).await;
    let id = create_tracker(&env, &server).await;

    // The user says no: a readable page, nothing stored.
    let authorize = start_connect(&env, &env.alice, &id).await;
    let callback = server.consent(&env.alice, &authorize, false).await;
    let resp = env.alice.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("did not grant access (access_denied: The user said no.)"),
        "{page}"
    );
    assert_eq!(connector(&env, &id).await["status"], "needs_auth");

    // A callback arriving in another session (another browser of Alice) is refused.
    let authorize = start_connect(&env, &env.alice, &id).await;
    let callback = server.consent(&env.alice, &authorize, true).await;
    let other = env.app.sign_in("alice").await;
    let resp = other.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("another session"));
    // ...and the state it carried is spent.
    let resp = env.alice.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("already used"));
    assert_eq!(connector(&env, &id).await["status"], "needs_auth");

    // The right session succeeds once; replaying its callback is refused.
    let authorize = start_connect(&env, &env.alice, &id).await;
    let callback = server.consent(&env.alice, &authorize, true).await;
    let resp = env.alice.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let resp = env.alice.get(&callback).send().await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "a replayed state is refused"
    );
    assert_eq!(
        server.count("token_exchanges").await,
        1,
        "a replay never reaches the token endpoint"
    );

    // A state that was never issued, and Bob poking at Alice's connector.
    let resp = env
        .alice
        .get(env.app.url(&format!("{CALLBACK}?state=forged&code=x")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let bob = env.app.sign_in("bob").await;
    let resp = bob
        .post(env.app.url(&format!("/api/connectors/{id}/oauth/start")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_client_is_used_where_registration_is_not_allowed() {
    let server = OAuthMcpServer::start(&[
        "--no-registration",
        "--client-id",
        "drydock-operator",
        "--client-secret",
        "operator-secret-0123456789",
    ])
    .await;
    let clients = json!({ server.origin.clone(): { "client_id": "drydock-operator", "client_secret": "operator-secret-0123456789" } }).to_string();
    let env = TaskEnv::start(
        TestDb::sqlite().await,
        &[
            "--allow-private-connector-urls",
            "true",
            "--connector-oauth-clients",
            &clients,
        ],
    )
    .await;
    let id = create_tracker(&env, &server).await;
    let authorize = start_connect(&env, &env.alice, &id).await;
    assert!(
        authorize.contains("client_id=drydock-operator"),
        "{authorize}"
    );
    let callback = server.consent(&env.alice, &authorize, true).await;
    let resp = env.alice.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(server.count("registrations").await, 0);
    assert_eq!(connector(&env, &id).await["status"], "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_browser_connect_signs_in_and_the_status_shows_everywhere() {
    let server = OAuthMcpServer::start(&[]).await;
    let app = drydock_tests::App::start(
        TestDb::sqlite().await,
        &["--allow-private-connector-urls", "true"],
    )
    .await;
    let browser = drydock_tests::browser::Browser::start().await;
    browser.goto(&app.url("/")).await;
    app.gh.approve_as(Some("alice"));
    browser.click("a.button[href^='/auth/github']").await;
    browser.wait_text("h1", "Tasks").await;

    // Tokens live 61 s: fresh now, within drydock's 60 s refresh margin a second later.
    server.set_expires_in(61).await;
    browser.goto(&app.url("/settings/connectors")).await;
    browser.wait_text("#connectors", "No connectors yet").await;
    browser.click("#add").await;
    browser.type_into("#c-name", "tracker").await;
    browser.type_into("#c-url", &server.mcp_url()).await;
    browser.click("#c-auth-oauth").await;
    browser.click("#c-save").await;
    let card = browser
        .wait_text("#connectors li[data-name='tracker']", "not signed in")
        .await;
    assert!(card.contains("Use Connect"), "{card}");

    // Connect: drydock → the authorization server's consent page → back to drydock.
    browser
        .click("#connectors li[data-name='tracker'] button[data-action='connect']")
        .await;
    browser
        .wait_url("the consent page", |u| {
            u.starts_with(&format!("{}/consent", server.origin))
        })
        .await;
    browser.wait_text("form", "Allow drydock").await;
    browser.click("button[value='allow']").await;
    browser
        .wait_url("the connectors page", |u| {
            u.contains("/settings/connectors?connected=")
        })
        .await;
    browser.wait_text("#flash", "Connected tracker.").await;
    let card = browser
        .wait_text("#connectors li[data-name='tracker']", "connected")
        .await;
    assert!(card.contains("2 tools"), "{card}");
    assert!(card.contains("Reconnect"), "{card}");
    assert!(
        card.contains(&format!("OAuth via {}", server.origin)),
        "{card}"
    );

    // The token runs out and the user revoked drydock at the provider: the next test's refresh
    // is refused, the card asks to sign in again and the new-task form says it is left out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.revoke_refresh_tokens().await;
    browser
        .click("#connectors li[data-name='tracker'] button[data-action='test']")
        .await;
    let card = browser
        .wait_text("#connectors li[data-name='tracker']", "sign in again")
        .await;
    assert!(card.contains("invalid_grant"), "{card}");
    browser.goto(&app.url("/tasks/new")).await;
    let field = browser.wait_text("#connectors", "tracker").await;
    assert!(
        field.contains("needs sign-in again: it will be left out"),
        "{field}"
    );
}

/// Two replicas on one PostgreSQL database: five connection tests at once, spread over both,
/// against an expired token cause one refresh (PostgreSQL advisory lock), and the others use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_postgres_refresh_once() {
    let server = OAuthMcpServer::start(&[]).await;
    let keys = [
        "--allow-private-connector-urls",
        "true",
        "--encryption-key",
        "7f3e2d1c0b0a09080706050403020100f0e0d0c0b0a090807060504030201000",
        "--jwe-secret",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    ];
    let env = TaskEnv::start(TestDb::postgres().await, &keys).await;
    let mut settings = env.app.gh.settings();
    settings.extend(keys.iter().map(|s| (*s).to_owned()));
    let replica = drydock_tests::TestServer::start_with(&env.app.db.url, settings).await;

    let id = create_tracker(&env, &server).await;
    server.set_expires_in(61).await;
    assert_eq!(
        connect(&env, &server, &id).await.status(),
        StatusCode::SEE_OTHER
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.set_expires_in(3600).await;
    server.set_refresh_delay(3.0).await;

    // The same session cookie works on both replicas (same database and keys).
    let urls: Vec<String> = (0..5)
        .map(|i| {
            let base = if i % 2 == 0 {
                env.app.server.url.clone()
            } else {
                replica.url.clone()
            };
            format!("{base}/api/connectors/{id}/test")
        })
        .collect();
    let tests = urls.iter().map(|url| {
        let req = env.alice.post(url);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    });
    for outcome in futures::future::join_all(tests).await {
        assert_eq!(outcome["status"], "ok", "{outcome}");
    }
    assert_eq!(
        server.count("refreshes").await,
        1,
        "one refresh across both replicas"
    );
    replica.stop().await.unwrap();
}

/// A server that accepts connections and drops them at once, counting them.
async fn dead_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    (port, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_is_tested_at_most_once_per_back_off_window() {
    let (port, contacts) = dead_server().await;
    let contacts = move || contacts.load(std::sync::atomic::Ordering::SeqCst);
    let app = drydock_tests::App::start(
        TestDb::sqlite().await,
        &[
            "--allow-private-connector-urls",
            "true",
            "--connector-backoff-secs",
            "2",
        ],
    )
    .await;
    let alice = app.sign_in("alice").await;
    let resp = alice
        .post(app.url("/api/connectors"))
        .json(&json!({ "name": "dead", "transport": "http", "url": format!("http://127.0.0.1:{port}/mcp") }))
        .send()
        .await
        .unwrap();
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let test = || async {
        let resp = alice
            .post(app.url(&format!("/api/connectors/{id}/test")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json::<Value>().await.unwrap()
    };

    // Three failures in a row, each a real attempt; the third opens the breaker.
    for attempt in 1..=3 {
        let before = contacts();
        let outcome = test().await;
        assert_eq!(outcome["status"], "error");
        assert!(contacts() > before, "attempt {attempt} reached the server");
        assert_eq!(outcome["paused_until"].is_i64(), attempt == 3, "{outcome}");
    }
    let c = alice
        .get(app.url(&format!("/api/connectors/{id}")))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(c["status"], "error");
    let until = c["paused_until"].as_i64().expect("paused");

    // While paused: answered at once, the server is left alone.
    let before = contacts();
    for _ in 0..3 {
        let outcome = test().await;
        assert!(
            outcome["error"].as_str().unwrap().contains("paused until"),
            "{outcome}"
        );
    }
    assert_eq!(contacts(), before, "no attempt while the breaker is open");

    // After the window: exactly one attempt, which fails and reopens it for longer.
    let wait = until - chrono::Utc::now().timestamp_millis() + 100;
    tokio::time::sleep(Duration::from_millis(u64::try_from(wait.max(0)).unwrap())).await;
    let outcome = test().await;
    assert!(contacts() > before, "one attempt after the window");
    let again = outcome["paused_until"].as_i64().expect("paused again");
    assert!(again > until);
    let before = contacts();
    let outcome = test().await;
    assert!(
        outcome["error"].as_str().unwrap().contains("paused until"),
        "{outcome}"
    );
    assert_eq!(contacts(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_explains_what_is_missing() {
    let server = OAuthMcpServer::start(&[]).await;
    let app = drydock_tests::App::start(
        TestDb::sqlite().await,
        &["--allow-private-connector-urls", "true"],
    )
    .await;
    let alice = app.sign_in("alice").await;
    let create = |body: Value| {
        let req = alice.post(app.url("/api/connectors")).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::CREATED);
            resp.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let start = |id: String| {
        let req = alice.post(app.url(&format!("/api/connectors/{id}/oauth/start")));
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    // A headers connector has nothing to connect.
    let headers =
        create(json!({ "name": "static", "transport": "http", "url": server.mcp_url() })).await;
    let (status, body) = start(headers).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "auth", "{body}");
    // OAuth on a stdio connector is refused when created.
    let resp = alice
        .post(app.url("/api/connectors"))
        .json(&json!({ "name": "local", "transport": "stdio", "command": "x", "auth": "oauth" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // A server that publishes no protected-resource metadata: a readable 502.
    let bare = create(json!({
        "name": "bare", "transport": "http", "url": format!("{}/elsewhere", server.origin), "auth": "oauth",
    }))
    .await;
    let (status, body) = start(bare).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("publishes no OAuth protected-resource metadata (RFC 9728)"),
        "{message}"
    );
}
