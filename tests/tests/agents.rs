//! `GET /api/agents`: agents, their models, and the signed-in user's key state; operator agents.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use drydock_tests::{App, TestDb};
use serde_json::{Value, json};

fn agent<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("{id} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_show_which_keys_the_user_has() {
    let app = App::start(TestDb::sqlite().await, &[]).await;
    let alice = app.sign_in("alice").await;
    let list: Value = alice
        .get(app.url("/api/agents"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<_> = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    for id in ["claude", "codex", "gemini", "cursor", "copilot", "opencode"] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let claude = agent(&list, "claude");
    assert_eq!(claude["has_key"], false);
    assert_eq!(claude["missing_providers"], json!(["anthropic"]));
    assert!(!claude["models"].as_array().unwrap().is_empty());

    alice
        .put(app.url("/api/keys/anthropic"))
        .json(&json!({"key": "sk-ant-test-key-000011112222"}))
        .send()
        .await
        .unwrap();
    let list: Value = alice
        .get(app.url("/api/agents"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(agent(&list, "claude")["has_key"], true);
    assert_eq!(agent(&list, "claude")["missing_providers"], json!([]));
    // opencode offers models of several providers: only the anthropic ones are usable now.
    let opencode = agent(&list, "opencode");
    assert_eq!(opencode["has_key"], true);
    let usable: Vec<_> = opencode["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["has_key"] == true)
        .map(|m| m["provider"].as_str().unwrap())
        .collect();
    assert!(
        !usable.is_empty() && usable.iter().all(|p| *p == "anthropic"),
        "{opencode}"
    );
    assert!(
        opencode["missing_providers"]
            .as_array()
            .unwrap()
            .contains(&json!("openai"))
    );

    let bob = app.sign_in("bob").await;
    let list: Value = bob
        .get(app.url("/api/agents"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        agent(&list, "claude")["has_key"],
        false,
        "Alice's key is not Bob's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_agents_file_adds_an_agent_and_its_provider() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agents.toml");
    std::fs::write(
        &file,
        r#"
[[agents]]
id = "scripted"
name = "Scripted agent"
argv = ["/usr/local/bin/scripted-agent", "{prompt}"]
parser = "text"
keys = [{ provider = "acme", env = ["ACME_API_KEY"] }]
models = [{ id = "acme-1", name = "Acme One" }]
"#,
    )
    .unwrap();
    let app = App::start(
        TestDb::sqlite().await,
        &["--agents-file", file.to_str().unwrap()],
    )
    .await;
    let alice = app.sign_in("alice").await;
    let list: Value = alice
        .get(app.url("/api/agents"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(agent(&list, "scripted")["models"][0]["id"], "acme-1");
    let resp = alice
        .put(app.url("/api/keys/acme"))
        .json(&json!({"key": "acme-secret-key-123456"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the operator agent's provider takes keys"
    );
    let list: Value = alice
        .get(app.url("/api/agents"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(agent(&list, "scripted")["has_key"], true);
}
