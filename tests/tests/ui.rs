//! drydock's pages in headless Chromium over WebDriver, against the real server, real Docker
//! sandboxes and the GitHub stand-in: what a person clicks, and what they see.
//!
//! Screenshots of every page land in `target/ui-screenshots/`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use drydock_tests::browser::{Browser, screenshot_path};
use drydock_tests::tasks::{ACME_KEY, SCRIPTED_AGENT, sandbox_image};
use drydock_tests::{App, TestDb};
use serde_json::{Value, json};

/// A server with the scripted agent and Alice's repository `alice/demo`, nobody signed in.
async fn start_app() -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agents.toml");
    std::fs::write(&file, SCRIPTED_AGENT).unwrap();
    let image = sandbox_image();
    let app = App::start(
        TestDb::sqlite().await,
        &[
            "--agents-file",
            file.to_str().unwrap(),
            "--sandbox-image",
            &image,
            "--sandbox-network",
            "none",
        ],
    )
    .await;
    app.gh
        .create_repo("alice", "demo", &[("README.md", "# demo\n")], "main");
    (app, dir)
}

async fn shot(browser: &Browser, name: &str) {
    browser.screenshot(&screenshot_path(name)).await;
}

/// The page's own marker survives only as long as the page is not reloaded.
async fn mark_page(browser: &Browser) {
    browser
        .eval(
            "window.__drydockNoReload = 'still here'; return null;",
            json!([]),
        )
        .await;
}

async fn assert_not_reloaded(browser: &Browser) {
    let marker = browser
        .eval("return window.__drydockNoReload || null;", json!([]))
        .await;
    assert_eq!(marker, json!("still here"), "the page was reloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_in_sets_a_key_adds_a_connector_runs_and_stops_tasks_and_signs_out() {
    let (app, _agents) = start_app().await;
    let browser = Browser::start().await;

    // --- Sign in through GitHub by clicking the button.
    browser.goto(&app.url("/")).await;
    browser
        .wait_text("main", "Run coding agents in isolated, hardened sandboxes")
        .await;
    shot(&browser, "sign-in").await;
    app.gh.approve_as(Some("alice"));
    browser.click("a.button[href^='/auth/github']").await;
    browser.wait_text("h1", "Tasks").await;
    let header = browser.text(".site-header").await;
    assert!(header.contains("alice"), "{header}");
    assert!(header.contains("tasks left today"), "{header}");
    browser.wait_text("#empty", "No tasks yet").await;
    shot(&browser, "tasks-empty").await;

    // --- Settings → API keys: set the key the scripted agent needs; it is never shown back.
    browser.click("nav a[href='/settings/keys']").await;
    browser.wait_text("#state-acme", "not set").await;
    browser.type_into("#key-acme", "has spaces in it").await;
    browser
        .click("form[data-provider='acme'] button[type='submit']")
        .await;
    browser
        .wait_text("#err-key-acme", "spaces or control characters")
        .await;
    browser.type_into("#key-acme", ACME_KEY).await;
    browser
        .click("form[data-provider='acme'] button[type='submit']")
        .await;
    browser.wait_text("#state-acme", "configured").await;
    let state = browser.text("#state-acme").await;
    assert!(state.contains("ends in fXYZ"), "{state}");
    assert_eq!(browser.property("#key-acme", "value").await, json!(""));
    assert_eq!(
        browser.property("#key-acme", "type").await,
        json!("password")
    );
    let page = browser.text("main").await;
    assert!(!page.contains(ACME_KEY), "the key is shown back");
    // After a reload the page still says configured, from the server.
    browser.goto(&app.url("/settings/keys")).await;
    browser.wait_text("#state-acme", "ends in fXYZ").await;
    shot(&browser, "keys").await;

    // --- Settings → Connectors: add a blank HTTP connector and test it; the loopback address is
    // refused and the error is shown.
    browser.click("nav a[href='/settings/connectors']").await;
    browser.wait_text("#connectors", "No connectors yet").await;
    browser.click("#add").await;
    browser.type_into("#c-name", "internal-docs").await;
    browser
        .type_into("#c-description", "Docs server on the office network")
        .await;
    browser.type_into("#c-url", "http://127.0.0.1:9/mcp").await;
    browser
        .type_into(
            "#c-secrets",
            "Authorization: Bearer internal-docs-token-1234",
        )
        .await;
    browser.click("#c-save").await;
    browser.wait_text("#connectors", "internal-docs").await;
    let card = browser.text("#connectors").await;
    assert!(card.contains("not tested"), "{card}");
    assert!(card.contains("headers: Authorization"), "{card}");
    assert!(!card.contains("internal-docs-token-1234"), "{card}");
    browser
        .click("#connectors li[data-name='internal-docs'] button[data-action='test']")
        .await;
    let result = browser.wait_text("#connectors", "Test failed").await;
    assert!(result.contains("loopback"), "{result}");
    assert!(result.contains("error"), "{result}");
    shot(&browser, "connectors").await;
    // A second, disabled connector: it is offered unchecked on the new-task form.
    browser.click("#add").await;
    browser.type_into("#c-name", "bad name!").await;
    browser
        .type_into("#c-url", "https://mcp.example.com/mcp")
        .await;
    browser.click("#c-save").await;
    browser
        .wait_text("#err-name", "may contain only letters, digits")
        .await;
    browser.type_into("#c-name", "spare").await;
    browser.click("#c-enabled").await;
    browser.click("#c-save").await;
    browser.wait_text("#connectors", "spare").await;
    browser
        .wait_text("#connectors li[data-name='spare']", "disabled")
        .await;

    // Edit: a new description, and the stored header removed; values are never shown.
    browser
        .click("#connectors li[data-name='internal-docs'] button[data-action='edit']")
        .await;
    browser.wait_text("#c-existing", "Authorization").await;
    browser
        .type_into("#c-description", "Docs server, moved")
        .await;
    browser
        .click("#c-existing input[name='remove-secret'][value='Authorization']")
        .await;
    shot(&browser, "connector-editor").await;
    browser.click("#c-save").await;
    browser.wait_text("#connectors", "Docs server, moved").await;
    let card = browser
        .text("#connectors li[data-name='internal-docs']")
        .await;
    assert!(!card.contains("headers:"), "{card}");
    // A preset fills the form with its endpoint and the secrets it needs.
    browser
        .eval(
            "const p = document.getElementById('preset'); p.value = 'github'; return null;",
            json!([]),
        )
        .await;
    browser.click("#add").await;
    browser.wait_text("#preset-help", "Authorization").await;
    assert_eq!(
        browser.property("#c-url", "value").await,
        json!("https://api.githubcopilot.com/mcp/")
    );
    browser.click("#c-cancel").await;

    // --- New task: an error from the API appears next to its field; then a task that succeeds.
    browser.click("nav a[href='/tasks/new']").await;
    browser.wait_text("#agent", "Scripted agent").await;
    browser.wait_text("#connectors", "internal-docs").await;
    let checked = browser
        .eval(
            "return Array.from(document.querySelectorAll('#connectors label')).map(l => [l.textContent.trim().split(' ')[0], l.querySelector('input').checked]);",
            json!([]),
        )
        .await;
    assert_eq!(
        checked,
        json!([["internal-docs", true], ["spare", false]]),
        "enabled connectors are pre-checked"
    );
    browser.type_into("#repo", "alice/").await;
    browser.wait_text("#repo-state", "match").await;
    let options = browser
        .eval(
            "return Array.from(document.querySelectorAll('#repo-options option')).map(o => o.value);",
            json!([]),
        )
        .await;
    assert!(
        options.as_array().unwrap().contains(&json!("alice/demo")),
        "{options}"
    );
    browser.type_into("#repo", "alice/nope").await;
    browser.type_into("#prompt", "echo hi").await;
    browser.click("#submit").await;
    browser.wait_text("#err-repo", "does not exist").await;
    shot(&browser, "new-task-error").await;

    let script = "for i in 1 2 3 4 5 6; do echo \"working on step $i\"; sleep 1; done; echo 'made by the agent' > AGENT.md; echo 'all steps done'";
    browser.type_into("#repo", "alice/demo").await;
    browser.type_into("#prompt", script).await;
    // Connectors are offered but the internal one cannot be reached from the sandbox: leave it out.
    browser
        .click("#connectors input[type='checkbox']:checked")
        .await;
    shot(&browser, "new-task").await;
    browser.click("#submit").await;
    let url = browser
        .wait_url("a task page", |u| {
            u.contains("/tasks/") && !u.ends_with("/tasks/new")
        })
        .await;
    let task_id = url.rsplit('/').next().unwrap().to_owned();
    mark_page(&browser).await;

    // The log streams in while the task runs, then the status turns to succeeded by itself.
    let log = browser
        .wait_text_for("#log", "working on step 1", Duration::from_secs(120))
        .await;
    let status = browser.text("#status").await;
    assert!(
        !log.contains("all steps done"),
        "the first line arrived only at the end: {log}"
    );
    assert_eq!(status, "running", "the log streams while running");
    browser
        .wait_text_for("#status", "succeeded", Duration::from_secs(120))
        .await;
    let log = browser.text("#log").await;
    assert!(log.contains("working on step 6"), "{log}");
    assert!(log.contains("all steps done"), "{log}");
    assert_not_reloaded(&browser).await;
    assert!(browser.find_all("#stop").await.len() == 1);
    assert_eq!(browser.text("#stop").await, "", "the stop button is hidden");
    browser.wait_text("#pr", "#").await;
    // Search within the log.
    browser.type_into("#log-search", "step 4").await;
    browser.wait_text("#log-matches", "1 matching line").await;
    let visible = browser.text("#log").await;
    assert!(visible.contains("working on step 4"), "{visible}");
    assert!(!visible.contains("working on step 3"), "{visible}");
    browser.type_into("#log-search", "").await;
    browser
        .eval(
            "document.getElementById('log-search').dispatchEvent(new Event('input')); return null;",
            json!([]),
        )
        .await;

    // The diff shows the file the agent added.
    let diff = browser.wait_text("#diff", "AGENT.md").await;
    assert!(diff.contains("added"), "{diff}");
    assert!(diff.contains("+made by the agent"), "{diff}");
    shot(&browser, "task-succeeded").await;
    browser.prefer_dark(true).await;
    shot(&browser, "task-succeeded-dark").await;
    browser.prefer_dark(false).await;

    // --- A long task is stopped from its page.
    browser.goto(&app.url("/tasks/new")).await;
    browser.wait_text("#agent", "Scripted agent").await;
    browser.type_into("#repo", "alice/demo").await;
    browser
        .type_into(
            "#prompt",
            "seq 1 300 | sed 's/^/output line /'; echo 'a long job begins'; sleep 600",
        )
        .await;
    browser.click("#submit").await;
    browser
        .wait_url("the long task's page", |u| {
            u.contains("/tasks/") && !u.ends_with("/tasks/new")
        })
        .await;
    mark_page(&browser).await;
    browser
        .wait_text_for("#log", "a long job begins", Duration::from_secs(120))
        .await;
    shot(&browser, "task-running").await;
    // The log follows new lines; scrolling up pauses that and offers a way back.
    let at_bottom = "const l = document.getElementById('log'); return l.scrollHeight - l.scrollTop - l.clientHeight < 30;";
    let started = std::time::Instant::now();
    while browser.eval(at_bottom, json!([])).await != json!(true) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the log does not follow"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        browser.text("#log-jump").await,
        "",
        "no jump button while following"
    );
    browser
        .eval("const l = document.getElementById('log'); l.scrollTop = 0; l.dispatchEvent(new Event('scroll')); return null;", json!([]))
        .await;
    browser.wait_text("#log-jump", "Jump to latest").await;
    browser.click("#log-jump").await;
    assert_eq!(browser.eval(at_bottom, json!([])).await, json!(true));
    assert_eq!(browser.text("#log-jump").await, "");
    browser.click("#stop").await;
    let question = browser.accept_dialog().await;
    assert!(question.contains("Stop this task"), "{question}");
    browser
        .wait_text_for("#status", "stopped", Duration::from_secs(60))
        .await;
    assert_not_reloaded(&browser).await;

    // --- The tasks list: both tasks with their badges; a task started elsewhere appears and
    // finishes live.
    browser.click("nav a[href='/']").await;
    browser.wait_text("#task-rows", "succeeded").await;
    browser.wait_text("#task-rows", "stopped").await;
    mark_page(&browser).await;
    let alice = app.sign_in("alice").await;
    let resp: Value = alice
        .post(app.url("/api/tasks"))
        .json(&json!({ "repo": "alice/demo", "prompt": "sleep 2; echo 'from the API'", "agent": "scripted", "create_pr": false, "connectors": [] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api_task = resp["id"].as_str().unwrap().to_owned();
    let row = format!("#task-rows tr[data-id='{api_task}']");
    browser.find(&row).await;
    browser
        .wait_text_for(&row, "succeeded", Duration::from_secs(120))
        .await;
    assert_not_reloaded(&browser).await;
    let rows = browser.find_all("#task-rows tr").await;
    assert_eq!(rows.len(), 3);
    shot(&browser, "tasks").await;
    browser.prefer_dark(true).await;
    shot(&browser, "tasks-dark").await;
    browser.prefer_dark(false).await;
    // Filter by status.
    browser
        .eval("const s = document.getElementById('filter-status'); s.value = 'stopped'; s.dispatchEvent(new Event('change')); return null;", json!([]))
        .await;
    let started = std::time::Instant::now();
    while browser.find_all("#task-rows tr").await.len() != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the filter never applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.wait_text("#task-rows", "stopped").await;
    browser
        .eval("const s = document.getElementById('filter-status'); s.value = ''; s.dispatchEvent(new Event('change')); return null;", json!([]))
        .await;
    // Narrow screens.
    browser.set_size(360, 800).await;
    let width = browser.eval("return window.innerWidth;", json!([])).await;
    assert!(width.as_u64().unwrap() <= 420, "window is {width} wide");
    let overflow = browser
        .eval(
            "return document.documentElement.scrollWidth > window.innerWidth + 1;",
            json!([]),
        )
        .await;
    assert_eq!(
        overflow,
        json!(false),
        "the page scrolls sideways at 360 px"
    );
    shot(&browser, "tasks-360").await;
    browser.goto(&app.url(&format!("/tasks/{task_id}"))).await;
    browser.wait_text("#log", "all steps done").await;
    browser.wait_text("#diff", "AGENT.md").await;
    shot(&browser, "task-360").await;
    for (path, ready, name) in [
        (format!("/tasks/{task_id}"), "#diff", "AGENT.md"),
        ("/tasks/new".to_owned(), "#agent", "Scripted agent"),
        ("/settings/keys".to_owned(), "#state-acme", "configured"),
        ("/settings/connectors".to_owned(), "#connectors", "spare"),
    ] {
        browser.goto(&app.url(&path)).await;
        browser.wait_text(ready, name).await;
        let overflow = browser
            .eval(
                "return document.documentElement.scrollWidth > window.innerWidth + 1;",
                json!([]),
            )
            .await;
        assert_eq!(overflow, json!(false), "{path} scrolls sideways at 360 px");
    }
    shot(&browser, "connectors-360").await;
    browser.goto(&app.url("/tasks/new")).await;
    browser.wait_text("#agent", "Scripted agent").await;
    shot(&browser, "new-task-360").await;
    browser.set_size(1280, 900).await;

    // Delete with confirmation.
    browser.goto(&app.url("/")).await;
    let delete = format!("#task-rows tr[data-id='{api_task}'] button[data-action='delete']");
    browser.click(&delete).await;
    let question = browser.accept_dialog().await;
    assert!(question.contains("Delete the task"), "{question}");
    let started = std::time::Instant::now();
    while !browser.find_all(&row).await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the row never went away"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Another user's task is a 404 page.
    browser
        .goto(&app.url("/tasks/00000000-0000-0000-0000-000000000000"))
        .await;
    browser.wait_text("h1", "Task not found").await;
    shot(&browser, "task-not-found").await;

    // Bob cannot see Alice's task: a 404 page.
    let bob = app.sign_in("bob").await;
    let resp = bob
        .get(app.url(&format!("/tasks/{task_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("Task not found"));

    // --- Sign out.
    browser.goto(&app.url("/")).await;
    browser.click(".sign-out button").await;
    browser.wait_text("main", "Sign in with GitHub").await;
    browser.goto(&app.url("/settings/keys")).await;
    browser.wait_text("main", "Sign in with GitHub").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_a_strict_content_security_policy() {
    let (app, _agents) = start_app().await;
    let alice = app.sign_in("alice").await;
    for path in ["/", "/tasks/new", "/settings/keys", "/settings/connectors"] {
        let resp = alice.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let csp = resp
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        let html = resp.text().await.unwrap();
        assert!(!html.contains("<script>"), "{path} has an inline script");
        assert!(!html.contains("style="), "{path} has an inline style");
        assert!(!html.contains("<style"), "{path} has an inline style");
    }
    let signed_out = reqwest::get(app.url("/")).await.unwrap();
    assert!(signed_out.headers().contains_key("content-security-policy"));
}

/// The Python MCP server of `tests/mcp/server.py` over Streamable HTTP on 127.0.0.1.
struct McpServer {
    port: u16,
    _child: tokio::process::Child,
}

const MCP_TOKEN: &str = "ui-test-mcp-token-5678";

impl McpServer {
    async fn start() -> Self {
        use tokio::io::AsyncBufReadExt;
        let python = std::env::var("DRYDOCK_TEST_MCP_PYTHON")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| {
                std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../target/mcp-venv/bin/python")
            });
        assert!(
            python.exists(),
            "no Python with the mcp SDK: run scripts/test, or set DRYDOCK_TEST_MCP_PYTHON"
        );
        let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp/server.py");
        let mut child = tokio::process::Command::new(python)
            .arg(script)
            .args(["--token", MCP_TOKEN, "--transport", "streamable"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start tests/mcp/server.py");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the MCP server printed its port in time")
            .unwrap()
            .expect("the MCP server printed its port");
        let port: u16 = line.strip_prefix("PORT ").unwrap().trim().parse().unwrap();
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testing_a_working_connector_lists_its_tools() {
    let mcp = McpServer::start().await;
    let app = App::start(
        TestDb::sqlite().await,
        &["--allow-private-connector-urls", "true"],
    )
    .await;
    let browser = Browser::start().await;
    app.gh.approve_as(Some("alice"));
    browser.goto(&app.url("/settings/connectors")).await;
    // Signed out: the sign-in page, and back to the connectors after signing in.
    browser.click("a.button[href^='/auth/github']").await;
    browser.wait_text("h1", "Connectors").await;
    browser.wait_text("#connectors", "No connectors yet").await;
    browser.click("#add").await;
    browser.type_into("#c-name", "test-tools").await;
    browser
        .type_into("#c-url", &format!("http://127.0.0.1:{}/mcp", mcp.port))
        .await;
    browser
        .type_into("#c-secrets", &format!("Authorization: Bearer {MCP_TOKEN}"))
        .await;
    browser.click("#c-save").await;
    browser
        .click("#connectors li[data-name='test-tools'] button[data-action='test']")
        .await;
    let result = browser.wait_text("#connectors", "Connected").await;
    assert!(result.contains("2 tools"), "{result}");
    assert!(result.contains("Adds two integers"), "{result}");
    assert!(result.contains("echo"), "{result}");
    assert!(!result.contains(MCP_TOKEN), "{result}");
    let badge = browser
        .text("#connectors li[data-name='test-tools'] .badge")
        .await;
    assert_eq!(badge, "connected", "the connector states of the API");
    shot(&browser, "connectors-tested").await;
    // Disabling it shows at once.
    browser
        .click("#connectors li[data-name='test-tools'] input[type='checkbox']")
        .await;
    browser
        .wait_text("#connectors li[data-name='test-tools'] .badge", "disabled")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_continued_from_its_page_and_its_kept_sandbox_ended() {
    let (app, _agents) = start_app().await;
    let browser = Browser::start().await;
    browser.goto(&app.url("/")).await;
    app.gh.approve_as(Some("alice"));
    browser.click("a.button[href^='/auth/github']").await;
    browser.wait_text("h1", "Tasks").await;
    browser.click("nav a[href='/settings/keys']").await;
    browser.type_into("#key-acme", ACME_KEY).await;
    browser
        .click("form[data-provider='acme'] button[type='submit']")
        .await;
    browser.wait_text("#state-acme", "configured").await;

    // A task that keeps its sandbox.
    browser.goto(&app.url("/tasks/new")).await;
    browser.wait_text("#agent", "Scripted agent").await;
    browser.type_into("#repo", "alice/demo").await;
    browser
        .type_into("#prompt", "echo one > one.txt; echo 'first turn answer'")
        .await;
    browser.click("#keep_alive").await;
    browser.click("#submit").await;
    browser
        .wait_url("the task's page", |u| {
            u.contains("/tasks/") && !u.ends_with("/tasks/new")
        })
        .await;
    mark_page(&browser).await;
    browser
        .wait_text_for("#status", "succeeded", Duration::from_secs(120))
        .await;
    browser.wait_text("#sandbox", "kept until").await;
    browser
        .wait_text("#conversation", "first turn answer")
        .await;

    // An empty follow-up is refused next to the field; a real one runs as turn 2 on the page.
    browser
        .eval(
            "document.getElementById('follow-up').removeAttribute('required'); return null;",
            json!([]),
        )
        .await;
    browser.click("#follow-up-send").await;
    browser
        .wait_text("#err-prompt", "the prompt is empty")
        .await;
    browser
        .type_into(
            "#follow-up",
            "echo two > two.txt; echo \"second turn answer, resumed with $2\"",
        )
        .await;
    browser.click("#follow-up-send").await;
    browser
        .wait_text("#flash", "Sent: the next turn starts shortly")
        .await;
    browser
        .wait_text_for(
            "#conversation",
            "second turn answer, resumed with --resume-session",
            Duration::from_secs(120),
        )
        .await;
    browser
        .wait_text_for("#status", "succeeded", Duration::from_secs(120))
        .await;
    browser.wait_text("#turns", "2 turns").await;
    let log = browser
        .wait_text("#log", "second turn answer, resumed with --resume-session")
        .await;
    assert!(log.contains("first turn answer"), "{log}");
    assert!(log.contains("Follow-up (turn 2)"), "{log}");
    let conversation = browser.text("#conversation").await;
    assert!(conversation.contains("turn 1"), "{conversation}");
    assert_eq!(browser.property("#follow-up", "value").await, json!(""));
    assert_not_reloaded(&browser).await;
    shot(&browser, "task-follow-up").await;

    // Ending the kept sandbox from the page.
    browser.click("#sandbox-stop").await;
    let question = browser.accept_dialog().await;
    assert!(question.contains("End this task's sandbox"), "{question}");
    browser
        .wait_text("#sandbox", "kept between turns while idle")
        .await;
    browser.wait_text("#flash", "The sandbox was removed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_task_shows_its_log_as_a_terminal_would() {
    let (app, _agents) = start_app().await;
    let browser = Browser::start().await;
    browser.goto(&app.url("/")).await;
    app.gh.approve_as(Some("alice"));
    browser.click("a.button[href^='/auth/github']").await;
    browser.wait_text("h1", "Tasks").await;
    browser.click("nav a[href='/settings/keys']").await;
    browser.type_into("#key-acme", ACME_KEY).await;
    browser
        .click("form[data-provider='acme'] button[type='submit']")
        .await;
    browser.wait_text("#state-acme", "configured").await;

    browser.goto(&app.url("/tasks/new")).await;
    browser.wait_text("#agent", "Scripted agent").await;
    browser.type_into("#repo", "alice/demo").await;
    browser
        .type_into(
            "#prompt",
            r"printf '\033[1;31mred alert\033[0m\n'; for i in 1 2 3; do printf '\rstep %d of 3' $i; done; echo; echo x > x.txt",
        )
        .await;
    browser.click("#submit").await;
    let url = browser
        .wait_url("the task's page", |u| {
            u.contains("/tasks/") && !u.ends_with("/tasks/new")
        })
        .await;
    browser
        .wait_text_for("#status", "succeeded", Duration::from_secs(120))
        .await;

    // A fresh visit to the finished task: its whole log is replayed and ends at once.
    browser.goto(&url).await;
    let log = browser.wait_text("#log", "red alert").await;
    assert!(log.contains("step 3 of 3"), "{log}");
    assert!(
        !log.contains("step 1") && !log.contains('\u{1b}') && !log.contains("[1;31m"),
        "{log}"
    );
    // The end of the stream loads the changes; by then the log's state is settled.
    browser.wait_text("#diff", "1 file changed").await;
    let state = browser.text("#log-state").await;
    assert!(!state.contains("wrote no log"), "{state:?} under {log}");
    shot(&browser, "task-finished-log").await;
}
