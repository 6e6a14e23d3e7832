//! Personal API tokens: shown once, stored as a hash, scoped, revocable, expiring, refused on
//! pages, and never written to the server's log.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use drydock_tests::triggers::{LogCapture, create_token, execute, text_rows};
use drydock_tests::{App, TestDb};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn script() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn tokens_are_shown_once_hashed_scoped_and_revocable(db: TestDb) {
    let logs = LogCapture::install();
    let app = App::start(db, &[]).await;
    let alice = app.sign_in("alice").await;
    let curl = script();

    // Created: the value is in this answer only.
    let created = create_token(&app, &alice, "laptop", "write").await;
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ddt_"), "{created}");
    let raw = base64_url_len(&token["ddt_".len()..]);
    assert!(raw >= 32, "at least 32 random bytes: {raw}");
    assert_eq!(created["scope"], "write");
    assert!(created["last_used_at"].is_null());
    let id = created["id"].as_str().unwrap().to_owned();

    let listed = alice.get(app.url("/api/tokens")).send().await.unwrap();
    let listed_text = listed.text().await.unwrap();
    assert!(!listed_text.contains(&token[4..]), "listing never shows it");
    let listed: Value = serde_json::from_str(&listed_text).unwrap();
    assert_eq!(listed[0]["name"], "laptop");
    assert_eq!(listed[0]["hint"], &token[..8]);

    // Stored as its SHA-256 only.
    let rows = text_rows(
        &app.db,
        "SELECT token_hash, hint, name, scope FROM api_tokens",
    )
    .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], hex::encode(Sha256::digest(token.as_bytes())));
    assert!(rows[0].iter().all(|cell| !cell.contains(&token[8..])));

    // Works on the API (no cookie, no CSRF check even from another origin), updates last_used.
    let me: Value = curl
        .get(app.url("/api/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["login"], "alice");
    let resp = curl
        .put(app.url("/api/keys/anthropic"))
        .bearer_auth(&token)
        .header("origin", "https://elsewhere.example")
        .json(&json!({ "key": "sk-ant-api03-token-written-key-0123456789abcdef" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "a write token may change things"
    );
    let listed: Value = alice
        .get(app.url("/api/tokens"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed[0]["last_used_at"].as_i64().unwrap() > 0, "{listed}");

    // A token cannot mint tokens, and pages are cookie-only.
    let resp = curl
        .post(app.url("/api/tokens"))
        .bearer_auth(&token)
        .json(&json!({ "name": "child", "scope": "write" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let page = curl
        .get(app.url("/settings/keys"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER, "pages ignore tokens");

    // A read token may GET, and nothing else.
    let read = create_token(&app, &alice, "dashboards", "read").await;
    let read_token = read["token"].as_str().unwrap();
    let resp = curl
        .get(app.url("/api/tasks"))
        .bearer_auth(read_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = curl
        .post(app.url("/api/tasks"))
        .bearer_auth(read_token)
        .json(&json!({ "repo": "alice/repo-0", "prompt": "x", "agent": "claude" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");

    // A bad token is refused even with a valid cookie alongside (no fallback).
    let resp = alice
        .get(app.url("/api/me"))
        .bearer_auth("ddt_not-a-real-token-0000000000000000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("this API token is not valid"),
        "{body}"
    );

    // Revoked: refused at once.
    let resp = alice
        .delete(app.url(&format!("/api/tokens/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = curl
        .get(app.url("/api/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("this API token was revoked"),
        "{body}"
    );

    // Expired: refused.
    let read_id = read["id"].as_str().unwrap();
    assert_eq!(
        execute(
            &app.db,
            "UPDATE api_tokens SET expires_at = 1 WHERE id = $1",
            &[read_id]
        )
        .await,
        1
    );
    let resp = curl
        .get(app.url("/api/me"))
        .bearer_auth(read_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Another user's token id is not found for them.
    let bob = app.sign_in("bob").await;
    let other = create_token(&app, &alice, "other", "read").await;
    let resp = bob
        .delete(app.url(&format!("/api/tokens/{}", other["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Bad input is a JSON error.
    let resp = alice
        .post(app.url("/api/tokens"))
        .json(&json!({ "name": "", "scope": "write" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resp = alice
        .post(app.url("/api/tokens"))
        .json(&json!({ "name": "x", "scope": "admin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // None of the token values ever reached the log (which did record the requests).
    let log = logs.text();
    assert!(log.contains("API token created"), "the capture works");
    for t in [&token, read_token, other["token"].as_str().unwrap()] {
        assert!(!log.contains(&t[4..]), "a token value is in the log");
    }
}

fn base64_url_len(text: &str) -> usize {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_or(0, |b| b.len())
}

drydock_tests::on_both_backends!(tokens_are_shown_once_hashed_scoped_and_revocable);
