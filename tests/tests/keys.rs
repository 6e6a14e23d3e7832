//! Users' LLM API keys: write-only, sealed at rest, scoped to their owner, validated.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use drydock_tests::{App, TestDb};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ALICE_KEY: &str = "sk-ant-api03-alice-0123456789abcdefghijklmnopqrstuvwxyz-WXYZ";

async fn keys_are_write_only_sealed_and_owned(db: TestDb) {
    let app = App::start(db, &[]).await;
    let alice = app.sign_in("alice").await;
    let bob = app.sign_in("bob").await;

    let listed: Value = alice
        .get(app.url("/api/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let providers: Vec<_> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["provider"].as_str().unwrap().to_owned())
        .collect();
    for p in ["anthropic", "openai", "gemini", "cursor", "copilot"] {
        assert!(
            providers.contains(&p.to_owned()),
            "{p} missing from {listed}"
        );
    }
    assert!(
        listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["configured"] == false)
    );

    let resp = alice
        .put(app.url("/api/keys/anthropic"))
        .json(&json!({"key": format!("  {ALICE_KEY}\n")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.text().await.unwrap();
    assert!(
        !body.contains("alice-0123456789"),
        "the key is never sent back: {body}"
    );
    let entry: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (entry["configured"].as_bool(), entry["hint"].as_str()),
        (Some(true), Some("WXYZ"))
    );

    let listed = alice
        .get(app.url("/api/keys"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listed.contains("alice-0123456789"));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let anthropic = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["provider"] == "anthropic")
        .unwrap();
    assert_eq!(
        (
            anthropic["configured"].as_bool(),
            anthropic["hint"].as_str()
        ),
        (Some(true), Some("WXYZ"))
    );
    assert!(anthropic["updated_at"].as_i64().unwrap() > 0);

    // At rest: ciphertext only.
    let me: Value = alice
        .get(app.url("/api/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = app
        .db
        .store
        .get_api_key(me["id"].as_str().unwrap(), "anthropic")
        .await
        .unwrap()
        .unwrap();
    assert!(row.key_enc.starts_with("v1:"));
    assert!(!row.key_enc.contains("alice-0123456789") && !row.key_enc.contains(ALICE_KEY));

    // Bob sees none of Alice's keys and his writes touch only his own.
    let bobs: Value = bob
        .get(app.url("/api/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        bobs["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["configured"] == false),
        "{bobs}"
    );
    let resp = bob
        .put(app.url("/api/keys/anthropic"))
        .json(&json!({"key": "sk-ant-bob-key-000000000000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let after = app
        .db
        .store
        .get_api_key(me["id"].as_str().unwrap(), "anthropic")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after.key_enc, row.key_enc,
        "Alice's key unchanged by Bob's write"
    );
    assert_eq!(
        bob.delete(app.url("/api/keys/openai"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        bob.delete(app.url("/api/keys/anthropic"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert!(
        app.db
            .store
            .get_api_key(me["id"].as_str().unwrap(), "anthropic")
            .await
            .unwrap()
            .is_some(),
        "Alice's key survives Bob's delete"
    );

    // Replace, then remove.
    alice
        .put(app.url("/api/keys/anthropic"))
        .json(&json!({"key": "sk-ant-replacement-key-9876"}))
        .send()
        .await
        .unwrap();
    let listed: Value = alice
        .get(app.url("/api/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let anthropic = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["provider"] == "anthropic")
        .unwrap();
    assert_eq!(anthropic["hint"], "9876");
    assert_eq!(
        alice
            .delete(app.url("/api/keys/anthropic"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    let listed: Value = alice
        .get(app.url("/api/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["configured"] == false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_on_sqlite() {
    keys_are_write_only_sealed_and_owned(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_on_postgres() {
    keys_are_write_only_sealed_and_owned(TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_and_providers_get_clear_errors() {
    let app = App::start(TestDb::sqlite().await, &[]).await;
    let alice = app.sign_in("alice").await;
    let put = |provider: &str, body: Value| {
        let req = alice
            .put(app.url(&format!("/api/keys/{provider}")))
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = put("nosuchprovider", json!({"key": "sk-valid-looking-key-123"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    for (bad, why) in [
        (json!({"key": ""}), "empty"),
        (json!({"key": "   \n"}), "empty"),
        (json!({"key": "x".repeat(4097)}), "4 KiB"),
        (json!({"key": "sk-abc\u{0007}def-123456"}), "control"),
        (json!({"key": "sk-abc def\tghi-123456"}), "control"),
    ] {
        let (status, body) = put("openai", bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {body}");
        assert_eq!(body["error"]["field"], "key");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(why),
            "{why}: {body}"
        );
    }
    let (status, body) = put("openai", json!({"value": "sk-wrong-field-name-1234"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let resp = alice
        .put(app.url("/api/keys/openai"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "bad_request"
    );

    let anonymous = reqwest::Client::new()
        .get(app.url("/api/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let cross = alice
        .put(app.url("/api/keys/openai"))
        .header("origin", "https://evil.example")
        .json(&json!({"key": "sk-from-another-site-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
}
