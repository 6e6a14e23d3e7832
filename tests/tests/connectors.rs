//! Users' MCP connectors: CRUD with write-only secrets sealed at rest, owner scoping, PATCH
//! semantics, validation, the preset catalog, and connection tests against a real MCP server
//! (the official Python SDK, tests/mcp/server.py) with outbound address checks.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use drydock_tests::{App, TestDb};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const GITHUB_PAT: &str = "github_pat_11ALICE0123456789abcdefghijklmnopqrstuvw-QRST";
const NOTION_TOKEN: &str = "ntn_alice_notion_secret_0123456789abcdef-MNOP";
const REPLACED_TOKEN: &str = "ntn_replacement_secret_99887766554433-ZZYX";
const MCP_TOKEN: &str = "mcp-test-token-4f1d9c2b7a6e5d3c";
const WRONG_TOKEN: &str = "wrong-token-8e7d6c5b4a39281706";

/// Every response text the test saw, to check that none contains a secret value.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    async fn send(&mut self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        self.0.push(text);
        (status, value)
    }

    fn assert_never_contains(&self, secrets: &[&str]) {
        for text in &self.0 {
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "a response contains a secret value: {text}"
                );
            }
        }
    }
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn connectors_crud(db: TestDb) {
    let app = App::start(db, &[]).await;
    let alice = app.sign_in("alice").await;
    let bob = app.sign_in("bob").await;
    let mut seen = Seen::default();
    let api = |path: &str| app.url(&format!("/api/connectors{path}"));

    let (status, github) = seen
        .send(alice.post(api("")).json(&json!({
            "name": "github",
            "description": "GitHub's MCP server",
            "transport": "http",
            "url": "https://api.githubcopilot.com/mcp/",
            "headers": {"Authorization": format!("Bearer {GITHUB_PAT}")},
        })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{github}");
    assert_eq!(github["transport"], "http");
    assert_eq!(github["url"], "https://api.githubcopilot.com/mcp/");
    assert_eq!(github["enabled"], true);
    assert_eq!(
        github["headers"],
        json!([{"name": "Authorization", "hint": "QRST"}])
    );
    assert_eq!(github["env"], json!([]));
    assert!(github["last_status"].is_null() && github["tool_count"].is_null());
    let github_id = github["id"].as_str().unwrap().to_owned();

    let (status, notion) = seen
        .send(alice.post(api("")).json(&json!({
            "name": "notion_docs",
            "transport": "stdio",
            "command": "npx",
            "args": ["-y", "@notionhq/notion-mcp-server"],
            "env": {"NOTION_TOKEN": NOTION_TOKEN, "DEBUG": "1"},
            "enabled": false,
        })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{notion}");
    assert_eq!(notion["command"], "npx");
    assert_eq!(notion["args"], json!(["-y", "@notionhq/notion-mcp-server"]));
    assert_eq!(notion["enabled"], false);
    assert_eq!(notion["description"], "");
    // Short values get no hint: four characters of them would give too much away.
    assert_eq!(
        notion["env"],
        json!([{"name": "DEBUG", "hint": null}, {"name": "NOTION_TOKEN", "hint": "MNOP"}])
    );
    let notion_id = notion["id"].as_str().unwrap().to_owned();

    // At rest: one sealed JSON object per map, no plaintext.
    let me: Value = alice
        .get(app.url("/api/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alice_id = me["id"].as_str().unwrap().to_owned();
    let row = app
        .db
        .store
        .get_connector(&alice_id, &notion_id)
        .await
        .unwrap()
        .unwrap();
    let env_enc = row.env_enc.clone().unwrap();
    assert!(env_enc.starts_with("v1:"), "{env_enc}");
    assert!(!env_enc.contains(NOTION_TOKEN) && !env_enc.contains("NOTION_TOKEN"));
    assert!(row.headers_enc.is_none());
    // ... which the server's key opens to the values given (what the runner will use).
    let keys = drydock::secrets::ServerKeys::load(app.server.data_dir.path(), None, None).unwrap();
    let secret_box = drydock::secrets::SecretBox::new(&keys.encryption_key);
    let opened = drydock::connectors::open_secrets(&secret_box, &row).unwrap();
    assert_eq!(opened.env["NOTION_TOKEN"], NOTION_TOKEN);
    assert_eq!(opened.env["DEBUG"], "1");
    assert!(opened.headers.is_empty());
    let row = app
        .db
        .store
        .get_connector(&alice_id, &github_id)
        .await
        .unwrap()
        .unwrap();
    assert!(row.headers_enc.as_deref().unwrap().starts_with("v1:"));
    assert!(!row.headers_enc.as_deref().unwrap().contains(GITHUB_PAT));

    // The list carries the last test's outcome fields; names are sorted.
    let (status, list) = seen.send(alice.get(api(""))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&list["connectors"]), ["github", "notion_docs"]);
    for c in list["connectors"].as_array().unwrap() {
        for field in ["last_status", "last_checked_at", "last_error", "tool_count"] {
            assert!(c.get(field).is_some(), "{field} missing from {c}");
        }
    }
    let (status, one) = seen.send(alice.get(api(&format!("/{github_id}")))).await;
    assert_eq!((status, &one["name"]), (StatusCode::OK, &json!("github")));

    // Names are unique per user, not across users.
    let (status, body) = seen
        .send(alice.post(api("")).json(&json!({
            "name": "github", "transport": "http", "url": "https://example.com/mcp",
        })))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    let (status, bobs) = seen
        .send(bob.post(api("")).json(&json!({
            "name": "github", "transport": "http", "url": "https://example.com/mcp",
        })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bobs}");

    // Another user's connector is a 404 everywhere.
    let (_, bob_list) = seen.send(bob.get(api(""))).await;
    assert_eq!(bob_list["connectors"].as_array().unwrap().len(), 1);
    assert_eq!(bob_list["connectors"][0]["id"], bobs["id"]);
    for req in [
        bob.get(api(&format!("/{github_id}"))),
        bob.patch(api(&format!("/{github_id}")))
            .json(&json!({"description": "mine now"})),
        bob.delete(api(&format!("/{github_id}"))),
        bob.post(api(&format!("/{github_id}/test"))),
        alice.get(api("/no-such-id")),
    ] {
        let (status, body) = seen.send(req).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (_, still) = seen.send(alice.get(api(&format!("/{github_id}")))).await;
    assert_eq!(still["description"], "GitHub's MCP server");

    // PATCH: absent fields kept; a value replaces, null removes, absent names stay.
    let (status, patched) = seen
        .send(alice.patch(api(&format!("/{notion_id}"))).json(&json!({
            "env": {"NOTION_TOKEN": REPLACED_TOKEN, "DEBUG": null, "LOG_LEVEL": "verbose-logging"},
        })))
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        patched["env"],
        json!([{"name": "LOG_LEVEL", "hint": "ging"}, {"name": "NOTION_TOKEN", "hint": "ZZYX"}])
    );
    assert_eq!(patched["command"], "npx");
    assert_eq!(patched["args"], notion["args"]);
    assert_eq!(patched["enabled"], false);
    let (status, patched) = seen
        .send(
            alice
                .patch(api(&format!("/{notion_id}")))
                .json(&json!({"enabled": true, "description": "Team wiki", "env": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        (&patched["enabled"], &patched["description"]),
        (&json!(true), &json!("Team wiki"))
    );
    assert_eq!(names(&patched["env"]), ["LOG_LEVEL", "NOTION_TOKEN"]);
    assert!(patched["updated_at"].as_i64().unwrap() >= patched["created_at"].as_i64().unwrap());

    // Renaming onto an existing name is a conflict; renaming elsewhere is fine.
    let (status, body) = seen
        .send(
            alice
                .patch(api(&format!("/{notion_id}")))
                .json(&json!({"name": "github"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = seen
        .send(
            alice
                .patch(api(&format!("/{notion_id}")))
                .json(&json!({"name": "notion"})),
        )
        .await;
    assert_eq!((status, &body["name"]), (StatusCode::OK, &json!("notion")));

    // Switching transport drops what only the old one used.
    let (status, switched) = seen
        .send(alice.patch(api(&format!("/{notion_id}"))).json(&json!({
            "transport": "http",
            "url": "https://mcp.notion.com/mcp",
            "headers": {"Authorization": format!("Bearer {NOTION_TOKEN}")},
        })))
        .await;
    assert_eq!(status, StatusCode::OK, "{switched}");
    assert_eq!(switched["env"], json!([]));
    assert!(switched["command"].is_null());
    assert_eq!(switched["args"], json!([]));
    assert_eq!(names(&switched["headers"]), ["Authorization"]);
    let row = app
        .db
        .store
        .get_connector(&alice_id, &notion_id)
        .await
        .unwrap()
        .unwrap();
    assert!(row.env_enc.is_none(), "old env is gone");
    // Removing the last header leaves no sealed value behind.
    let (status, body) = seen
        .send(
            alice
                .patch(api(&format!("/{notion_id}")))
                .json(&json!({"headers": {"Authorization": null}})),
        )
        .await;
    assert_eq!((status, &body["headers"]), (StatusCode::OK, &json!([])));
    let row = app
        .db
        .store
        .get_connector(&alice_id, &notion_id)
        .await
        .unwrap()
        .unwrap();
    assert!(row.headers_enc.is_none());

    // Validation of a PATCH sees the merged result.
    let (status, body) = seen
        .send(
            alice
                .patch(api(&format!("/{github_id}")))
                .json(&json!({"command": "npx"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "command");

    // Delete.
    let (status, _) = seen.send(alice.delete(api(&format!("/{notion_id}")))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = seen.send(alice.get(api(&format!("/{notion_id}")))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = seen.send(alice.delete(api(&format!("/{notion_id}")))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = seen.send(alice.get(api(""))).await;
    assert_eq!(names(&list["connectors"]), ["github"]);

    seen.assert_never_contains(&[GITHUB_PAT, NOTION_TOKEN, REPLACED_TOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_crud_on_sqlite() {
    connectors_crud(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_crud_on_postgres() {
    connectors_crud(TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_connectors_get_422_naming_the_field() {
    let app = App::start(TestDb::sqlite().await, &[]).await;
    let alice = app.sign_in("alice").await;
    let http = |extra: Value| {
        let mut body = json!({"name": "x", "transport": "http", "url": "https://example.com/mcp"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let stdio = json!({"name": "x", "transport": "stdio", "command": "npx"});
    let mut with_env = stdio.clone();
    with_env["env"] = json!({"1BAD": "value-1234"});
    let mut empty_env = stdio.clone();
    empty_env["env"] = json!({"TOKEN": ""});
    let mut stdio_url = stdio.clone();
    stdio_url["url"] = json!("https://example.com/mcp");
    for (body, field, why) in [
        (http(json!({"name": ""})), "name", "empty"),
        (
            http(json!({"name": "has space"})),
            "name",
            "letters, digits",
        ),
        (http(json!({"name": "a/b"})), "name", "letters, digits"),
        (http(json!({"name": "x".repeat(65)})), "name", "64"),
        (
            http(json!({"transport": "websocket"})),
            "transport",
            "stdio",
        ),
        (http(json!({"url": null})), "url", "needs a URL"),
        (
            http(json!({"url": "ftp://example.com/"})),
            "url",
            "https://",
        ),
        (http(json!({"url": "not a url"})), "url", "not valid"),
        (
            http(json!({"url": "https://me:pw@example.com/mcp"})),
            "url",
            "header",
        ),
        (
            http(json!({"headers": {"Authorization": "Bearer a\r\nX-Injected: 1"}})),
            "headers.Authorization",
            "header value",
        ),
        (
            http(json!({"headers": {"bad header": "v"}})),
            "headers.bad header",
            "header name",
        ),
        (
            http(json!({"headers": {"Content-Type": "text/plain"}})),
            "headers.Content-Type",
            "itself",
        ),
        (http(json!({"env": {"A": "b"}})), "env", "headers"),
        (http(json!({"command": "npx"})), "command", "stdio"),
        (
            http(json!({"description": "d".repeat(501)})),
            "description",
            "500",
        ),
        (
            json!({"name": "x", "transport": "stdio"}),
            "command",
            "needs a command",
        ),
        (stdio_url, "url", "no URL"),
        (with_env, "env.1BAD", "letters"),
        (empty_env, "env.TOKEN", "null"),
    ] {
        let resp = alice
            .post(app.url("/api/connectors"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{why} not in {message}");
        assert!(!message.contains("a\r\nX-Injected"));
    }
    let resp = alice
        .post(app.url("/api/connectors"))
        .json(&json!({"name": "x", "transport": "http", "url": "https://e.com", "secret": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let anonymous = Client::new()
        .get(app.url("/api/connectors"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_lists_presets_and_what_users_supply() {
    let app = App::start(TestDb::sqlite().await, &[]).await;
    let alice = app.sign_in("alice").await;
    let resp = alice
        .get(app.url("/api/connectors/catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let catalog: Value = resp.json().await.unwrap();
    let presets = catalog["presets"].as_array().unwrap();
    let ids: Vec<_> = presets.iter().map(|p| p["id"].as_str().unwrap()).collect();
    for id in [
        "github",
        "context7",
        "linear",
        "notion",
        "sentry",
        "playwright",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let github = presets.iter().find(|p| p["id"] == "github").unwrap();
    assert_eq!(github["transport"], "http");
    assert_eq!(github["url"], "https://api.githubcopilot.com/mcp/");
    assert_eq!(
        (
            &github["fields"][0]["kind"],
            &github["fields"][0]["name"],
            &github["fields"][0]["required"]
        ),
        (&json!("header"), &json!("Authorization"), &json!(true))
    );
    assert_eq!(github["auth"], "headers");
    // Servers that follow the MCP authorization spec sign in with Connect: no fields to fill.
    for id in ["linear", "notion-hosted", "sentry-hosted"] {
        let preset = presets.iter().find(|p| p["id"] == id).unwrap();
        assert_eq!(
            (&preset["auth"], &preset["fields"]),
            (&json!("oauth"), &json!([])),
            "{id}"
        );
    }
    let playwright = presets.iter().find(|p| p["id"] == "playwright").unwrap();
    assert_eq!(
        (&playwright["transport"], &playwright["command"]),
        (&json!("stdio"), &json!("npx"))
    );
    assert!(
        playwright["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("@playwright/mcp"))
    );
    // Every preset fills a form the API accepts.
    for preset in presets {
        let mut body = json!({
            "name": preset["name"], "transport": preset["transport"], "description": preset["description"],
        });
        if preset["transport"] == "http" {
            body["url"] = preset["url"].clone();
            body["auth"] = preset["auth"].clone();
        } else {
            body["command"] = preset["command"].clone();
            body["args"] = preset["args"].clone();
        }
        let kind = if preset["transport"] == "http" {
            "headers"
        } else {
            "env"
        };
        let mut secrets = json!({});
        for field in preset["fields"].as_array().unwrap() {
            secrets[field["name"].as_str().unwrap()] = json!("value-supplied-by-user");
        }
        body[kind] = secrets;
        let resp = alice
            .post(app.url("/api/connectors"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{preset}");
    }
    let api: Value = Client::new()
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/connectors",
        "/api/connectors/catalog",
        "/api/connectors/{id}",
        "/api/connectors/{id}/test",
    ] {
        assert!(api["paths"].get(path).is_some(), "{path} not documented");
    }
}

/// The Python interpreter with the `mcp` SDK (scripts/test makes it).
fn mcp_python() -> PathBuf {
    if let Ok(path) = std::env::var("DRYDOCK_TEST_MCP_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/mcp-venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the mcp SDK: run scripts/test, or set DRYDOCK_TEST_MCP_PYTHON to a python \
         that has `pip install 'mcp>=2'`"
    );
    venv
}

/// tests/mcp/server.py running on a free port of 127.0.0.1; killed when dropped.
struct McpServer {
    port: u16,
    _child: tokio::process::Child,
}

impl McpServer {
    async fn start(transport: &str) -> Self {
        Self::start_with(&["--transport", transport]).await
    }

    async fn start_with(args: &[&str]) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp/server.py");
        let mut child = tokio::process::Command::new(mcp_python())
            .arg(script)
            .args(["--token", MCP_TOKEN])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start tests/mcp/server.py");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the MCP server printed its port in time")
            .unwrap()
            .expect("the MCP server printed its port");
        let port: u16 = line.strip_prefix("PORT ").unwrap().trim().parse().unwrap();
        // Bound is not yet listening: wait until it answers.
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self {
                    port,
                    _child: child,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the MCP server on port {port} never answered");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

async fn create(app: &App, client: &Client, name: &str, url: &str, token: &str) -> String {
    let resp = client
        .post(app.url("/api/connectors"))
        .json(&json!({
            "name": name, "transport": "http", "url": url,
            "headers": {"Authorization": format!("Bearer {token}")},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn test_connector(app: &App, client: &Client, id: &str, seen: &mut Seen) -> Value {
    let (status, body) = seen
        .send(client.post(app.url(&format!("/api/connectors/{id}/test"))))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_tests_speak_mcp_to_a_real_server() {
    let (streamable, legacy, tls) = tokio::join!(
        McpServer::start("streamable"),
        McpServer::start("sse"),
        McpServer::start_with(&["--transport", "streamable", "--tls"]),
    );
    let app = App::start(
        TestDb::sqlite().await,
        &["--allow-private-connector-urls", "true"],
    )
    .await;
    let alice = app.sign_in("alice").await;
    let mut seen = Seen::default();

    // Streamable HTTP with the right token: the tools, their descriptions, the time.
    let good = create(&app, &alice, "good", &streamable.url("/mcp"), MCP_TOKEN).await;
    let before = chrono_now_ms();
    let result = test_connector(&app, &alice, &good, &mut seen).await;
    assert_eq!(result["status"], "ok", "{result}");
    assert!(result["error"].is_null());
    assert_eq!(result["transport_used"], "streamable-http");
    assert_eq!(result["server"], "drydock-test-server 1.2.3");
    assert_eq!(result["tool_count"], 2);
    let mut tools: Vec<(String, String)> = result["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["description"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    tools.sort();
    assert_eq!(
        tools,
        [
            (
                "add".to_owned(),
                "Adds two integers and returns the sum.".to_owned()
            ),
            ("echo".to_owned(), "Echoes the given text back.".to_owned()),
        ]
    );
    assert!(result["checked_at"].as_i64().unwrap() >= before);

    // The older HTTP+SSE transport, reached through the fallback.
    let old = create(&app, &alice, "old", &legacy.url("/sse"), MCP_TOKEN).await;
    let result = test_connector(&app, &alice, &old, &mut seen).await;
    assert_eq!(result["status"], "ok", "{result}");
    assert_eq!(result["transport_used"], "sse");
    assert_eq!(result["tool_count"], 2);

    // A wrong token: a readable 401 that does not repeat the token (the server quotes it).
    let wrong = create(&app, &alice, "wrong", &streamable.url("/mcp"), WRONG_TOKEN).await;
    let result = test_connector(&app, &alice, &wrong, &mut seen).await;
    assert_eq!(result["status"], "error", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("401"), "{error}");
    assert!(error.contains("credentials"), "{error}");
    assert!(result["tool_count"].is_null() && result["tools"] == json!([]));

    // Not an MCP server: drydock's own health check.
    let health = create(&app, &alice, "health", &app.url("/healthz"), MCP_TOKEN).await;
    let result = test_connector(&app, &alice, &health, &mut seen).await;
    assert_eq!(result["status"], "error", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(
        error.contains("does not look like an MCP server"),
        "{error}"
    );

    // Nothing listening.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let closed = create(
        &app,
        &alice,
        "closed",
        &format!("http://127.0.0.1:{closed_port}/mcp"),
        MCP_TOKEN,
    )
    .await;
    let result = test_connector(&app, &alice, &closed, &mut seen).await;
    assert_eq!(result["status"], "error", "{result}");
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("could not connect"),
        "{result}"
    );

    // HTTPS with a certificate no one vouches for.
    let untrusted = create(
        &app,
        &alice,
        "untrusted",
        &format!("https://127.0.0.1:{}/mcp", tls.port),
        MCP_TOKEN,
    )
    .await;
    let result = test_connector(&app, &alice, &untrusted, &mut seen).await;
    assert_eq!(result["status"], "error", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(
        error.contains("TLS") && error.contains("certificate"),
        "{error}"
    );

    // A host name that does not resolve.
    let nowhere = create(
        &app,
        &alice,
        "nowhere",
        "https://no-such-host.invalid/mcp",
        MCP_TOKEN,
    )
    .await;
    let result = test_connector(&app, &alice, &nowhere, &mut seen).await;
    assert_eq!(result["status"], "error", "{result}");
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("could not resolve"),
        "{result}"
    );

    // The outcomes are stored and listed.
    let (_, list) = seen.send(alice.get(app.url("/api/connectors"))).await;
    let by_name = |name: &str| {
        list["connectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    let listed = by_name("good");
    assert_eq!(
        (
            &listed["last_status"],
            &listed["tool_count"],
            &listed["last_error"]
        ),
        (&json!("ok"), &json!(2), &Value::Null)
    );
    assert!(listed["last_checked_at"].as_i64().unwrap() >= before);
    let listed = by_name("wrong");
    assert_eq!(listed["last_status"], "error");
    assert!(listed["last_error"].as_str().unwrap().contains("401"));
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
        .get_connector(me["id"].as_str().unwrap(), &wrong)
        .await
        .unwrap()
        .unwrap();
    assert!(!row.last_error.unwrap().contains(WRONG_TOKEN));

    // stdio connectors are tested inside a sandbox: see stdio_connection_tests_run_inside_a_sandbox.

    seen.assert_never_contains(&[MCP_TOKEN, WRONG_TOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_unless_the_operator_allows_them() {
    let server = McpServer::start("streamable").await;
    let app = App::start(TestDb::sqlite().await, &[]).await;
    let alice = app.sign_in("alice").await;
    let mut seen = Seen::default();
    // Only addresses on this machine: the cloud-metadata and private ranges are refused by the
    // same check, covered without traffic by `connectors::outbound`'s unit tests.
    for (name, url, kind) in [
        ("loopback", server.url("/mcp"), "loopback"),
        (
            "by-name",
            format!("http://localhost:{}/mcp", server.port),
            "loopback",
        ),
        ("ipv6", "http://[::1]:9/mcp".to_owned(), "loopback"),
        (
            "mapped",
            "http://[::ffff:127.0.0.1]:9/mcp".to_owned(),
            "loopback",
        ),
    ] {
        let id = create(&app, &alice, name, &url, MCP_TOKEN).await;
        let result = test_connector(&app, &alice, &id, &mut seen).await;
        assert_eq!(result["status"], "error", "{url}: {result}");
        let error = result["error"].as_str().unwrap();
        assert!(error.contains("refused"), "{url}: {error}");
        assert!(error.contains(kind), "{url}: {error}");
        assert!(
            error.contains("DRYDOCK_ALLOW_PRIVATE_CONNECTOR_URLS"),
            "{url}: {error}"
        );
    }
    seen.assert_never_contains(&[MCP_TOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_slow_servers_time_out() {
    use axum::routing::any;
    let stand_in = axum::Router::new()
        .route(
            "/redirect",
            any(|| async {
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [(
                        "location",
                        // `.invalid` never resolves (RFC 2606): nothing is sent there.
                        "http://redirect-target.invalid/latest/?token=leaky-query-value",
                    )],
                )
            }),
        )
        .route(
            "/slow",
            any(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, stand_in).await });
    let app = App::start(
        TestDb::sqlite().await,
        &["--allow-private-connector-urls", "true"],
    )
    .await;
    let alice = app.sign_in("alice").await;
    let mut seen = Seen::default();

    let id = create(
        &app,
        &alice,
        "redirect",
        &format!("http://{addr}/redirect"),
        MCP_TOKEN,
    )
    .await;
    let result = test_connector(&app, &alice, &id, &mut seen).await;
    assert_eq!(result["status"], "error", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("307"), "{error}");
    assert!(error.contains("do not follow redirects"), "{error}");
    assert!(error.contains("redirect-target.invalid"), "{error}");
    assert!(!error.contains("leaky-query-value"), "{error}");

    let id = create(
        &app,
        &alice,
        "slow",
        &format!("http://{addr}/slow"),
        MCP_TOKEN,
    )
    .await;
    let started = std::time::Instant::now();
    let result = test_connector(&app, &alice, &id, &mut seen).await;
    let took = started.elapsed();
    assert_eq!(result["status"], "error", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(
        error.contains("timed out") && error.contains("10 s"),
        "{error}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    seen.assert_never_contains(&[MCP_TOKEN]);
}

/// The stdio prober against the SDK's stdio server, run here as a child of the test: the server
/// never runs a user's command on the host; the runner hands it a sandbox exec's pipes instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stdio_probe_speaks_mcp_over_pipes() {
    use drydock::connectors::mcp_client::probe_stdio;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp/server.py");
    let start = |token: Option<&str>| {
        let mut cmd = tokio::process::Command::new(mcp_python());
        cmd.arg(&script)
            .args(["--token", MCP_TOKEN, "--transport", "stdio"])
            .env_remove("MCP_TEST_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(token) = token {
            cmd.env("MCP_TEST_TOKEN", token);
        }
        cmd.spawn().expect("start tests/mcp/server.py")
    };

    let mut child = start(Some(MCP_TOKEN));
    let probe = probe_stdio(
        child.stdin.take().unwrap(),
        BufReader::new(child.stdout.take().unwrap()),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(probe.transport, "stdio");
    assert_eq!(probe.server_name.as_deref(), Some("drydock-test-server"));
    let mut tools: Vec<_> = probe.tools.iter().map(|t| t.name.as_str()).collect();
    tools.sort();
    assert_eq!(tools, ["add", "echo"]);
    // Closing stdin lets the server exit.
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the stdio server exits once stdin closes")
        .unwrap();
    assert!(status.success(), "{status}");

    let mut child = start(None);
    let err = probe_stdio(
        child.stdin.take().unwrap(),
        BufReader::new(child.stdout.take().unwrap()),
        Duration::from_secs(60),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("ended before answering initialize"), "{err}");
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A stdio MCP server in plain Python (the sandbox image has python3 but not the mcp package):
/// newline-delimited JSON-RPC, one tool, and it checks the secret it is given in its env.
const TINY_STDIO_SERVER: &str = r#"
import json, os, sys
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    if msg["method"] == "initialize":
        ok = os.environ.get("TINY_TOKEN") == "tiny-secret-token-123456"
        result = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "tiny" if ok else "tiny-without-token", "version": "1.0"}}
    elif msg["method"] == "tools/list":
        result = {"tools": [{"name": "shout", "description": "Says it louder", "inputSchema": {"type": "object"}}]}
    else:
        result = {}
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
"#;

/// stdio connectors are tested by running their command inside a short-lived sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_connection_tests_run_inside_a_sandbox() {
    let image = drydock_tests::tasks::sandbox_image();
    let app = App::start(
        TestDb::sqlite().await,
        &["--sandbox-image", &image, "--sandbox-network", "none"],
    )
    .await;
    let alice = app.sign_in("alice").await;
    let resp = alice
        .post(app.url("/api/connectors"))
        .json(&json!({
            "name": "tiny", "transport": "stdio", "command": "python3", "args": ["-c", TINY_STDIO_SERVER],
            "env": { "TINY_TOKEN": "tiny-secret-token-123456" }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let result: Value = alice
        .post(app.url(&format!("/api/connectors/{id}/test")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(result["status"], "ok", "{result}");
    assert_eq!(result["transport_used"], "stdio");
    assert_eq!(result["server"], "tiny 1.0", "the command got its env");
    assert_eq!(result["tools"][0]["name"], "shout");
    let listed: Value = alice
        .get(app.url(&format!("/api/connectors/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            listed["last_status"].as_str(),
            listed["tool_count"].as_i64()
        ),
        (Some("ok"), Some(1))
    );
    let tiny = id;

    let resp = alice
        .post(app.url("/api/connectors"))
        .json(&json!({ "name": "missing", "transport": "stdio", "command": "no-such-mcp-server" }))
        .send()
        .await
        .unwrap();
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let result: Value = alice
        .post(app.url(&format!("/api/connectors/{id}/test")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(result["status"], "error", "{result}");
    let error = result["error"].as_str().unwrap();
    assert!(
        error.contains("no-such-mcp-server") || error.contains("not found"),
        "{error}"
    );
    let labels = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            "label=drydock.task",
            "--format",
            "{{.Label \"drydock.task\"}}",
        ])
        .output()
        .unwrap();
    let labels = String::from_utf8_lossy(&labels.stdout).into_owned();
    // This test's own sandboxes only: other tests (and other test processes) run theirs at the
    // same time.
    let ours = [
        format!("connector-test-{tiny}"),
        format!("connector-test-{id}"),
    ];
    assert!(
        !labels.lines().any(|l| ours.iter().any(|o| o == l)),
        "connector test sandboxes are removed: {labels}"
    );
}
