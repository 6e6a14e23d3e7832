//! The `drydock` command-line client against a real server running the scripted agent: login
//! saves the token privately, `task run` streams the log live and exits with the task's status,
//! a dropped connection loses no line, and `--json` output parses.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use drydock_tests::TestDb;
use drydock_tests::tasks::TaskEnv;
use drydock_tests::triggers::{Relay, create_token};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// The client, with its settings in `home` only.
fn client(home: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drydock-client"));
    cmd.env("XDG_CONFIG_HOME", home)
        .env("HOME", home)
        .env_remove("DRYDOCK_URL")
        .env_remove("DRYDOCK_TOKEN")
        .env_remove("DRYDOCK_CONFIG_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// `drydock login --url URL` with a new token of Alice's pasted on standard input.
async fn login(env: &TaskEnv, home: &std::path::Path, url: &str) -> String {
    let token = create_token(&env.app, &env.alice, "cli", "write").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut child = client(home).args(["login", "--url", url]).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{token}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Logged in as alice"), "{stderr}");
    token
}

async fn run_to_end(home: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = client(home).args(args).output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn the_cli_runs_tasks_and_exits_with_their_status(db: TestDb) {
    let env = TaskEnv::start(db, &[]).await;
    let home = tempfile::tempdir().unwrap();
    let token = login(&env, home.path(), &env.app.server.url).await;

    // The token is saved privately, in the user's config directory.
    let saved = home.path().join("drydock/client.json");
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert!(std::fs::read_to_string(&saved).unwrap().contains(&token));

    // Success: the log on stdout, exit 0, the task recorded as coming from the CLI.
    let (code, stdout, stderr) = run_to_end(
        home.path(),
        &[
            "task",
            "run",
            "--repo",
            "alice/demo",
            "--agent",
            "scripted",
            "echo 'hello from the cli' > cli.txt; echo done-writing",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.lines().any(|l| l == "done-writing"), "{stdout}");
    assert!(stderr.contains("succeeded"), "{stderr}");
    let tasks = env.get_json("/api/tasks").await;
    assert_eq!(tasks["tasks"][0]["origin"], "cli", "{tasks}");

    // Failure: non-zero, with the reason.
    let (code, stdout, stderr) = run_to_end(
        home.path(),
        &[
            "task",
            "run",
            "--repo",
            "alice/demo",
            "--agent",
            "scripted",
            "echo about-to-fail; exit 3",
        ],
    )
    .await;
    assert_ne!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("about-to-fail"), "{stdout}");
    assert!(stderr.contains("failed"), "{stderr}");

    // --json: every line parses; the last one is the end with the task's status.
    let (code, stdout, stderr) = run_to_end(
        home.path(),
        &[
            "task",
            "run",
            "--json",
            "--repo",
            "alice/demo",
            "--agent",
            "scripted",
            "echo json-line",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "task");
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "event" && l["text"] == "json-line"),
        "{stdout}"
    );
    let end = lines.last().unwrap();
    assert_eq!(end["type"], "end");
    assert_eq!(end["task"]["status"], "succeeded");
    let id = end["task"]["id"].as_str().unwrap();

    // The other commands.
    let (code, stdout, _) = run_to_end(home.path(), &["task", "list", "--json"]).await;
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(list["tasks"].as_array().unwrap().len(), 3);
    // People get a table: a header, then one row per task with its full id (to paste).
    let (code, stdout, _) = run_to_end(home.path(), &["task", "list"]).await;
    assert_eq!(code, 0);
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    assert!(
        rows[0].starts_with("ID") && rows[0].contains("STATUS") && rows[0].contains("REPO"),
        "{stdout}"
    );
    for (row, task) in rows[1..].iter().zip(list["tasks"].as_array().unwrap()) {
        assert!(row.starts_with(task["id"].as_str().unwrap()), "{stdout}");
    }
    let status_column = rows[0].find("STATUS").unwrap();
    assert!(
        rows[1..]
            .iter()
            .all(|row| row[status_column..].starts_with(|c: char| c.is_alphabetic())),
        "columns line up under their headers: {stdout}"
    );
    let (code, stdout, _) = run_to_end(home.path(), &["task", "show", id]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("status: succeeded") && stdout.contains("origin: cli"),
        "{stdout}"
    );
    let (code, stdout, _) = run_to_end(home.path(), &["task", "logs", id]).await;
    assert_eq!(code, 0);
    assert!(stdout.lines().any(|l| l == "json-line"), "{stdout}");
    let first = list["tasks"][2]["id"].as_str().unwrap();
    let (code, stdout, _) = run_to_end(home.path(), &["task", "diff", first]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("+hello from the cli"), "{stdout}");
    // A follow-up, then its log followed to the end.
    let (code, _, stderr) =
        run_to_end(home.path(), &["task", "message", id, "echo second-turn"]).await;
    assert_eq!(code, 0, "{stderr}");
    env.wait_for(id, "turn 2", |t| t["turns"] == 2).await;
    let (code, stdout, stderr) = run_to_end(home.path(), &["task", "logs", "-f", id]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.lines().any(|l| l == "second-turn"), "{stdout}");
    // Stop a running task.
    let long = env
        .submit("echo started-long; sleep 120", serde_json::json!({}))
        .await;
    env.wait_for(&long, "running", |t| t["status"] == "running")
        .await;
    let (code, _, stderr) = run_to_end(home.path(), &["task", "stop", &long]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(env.wait_done(&long).await["status"], "stopped");
    let (code, _, stderr) = run_to_end(home.path(), &["task", "show", "no-such-task"]).await;
    assert_eq!(code, 3, "the server's refusal, not a failed task");
    assert!(stderr.contains("not found"), "{stderr}");

    // Tasks record where they came from: a script with a token is `api`, a browser `web`.
    let by_script: Value = reqwest::Client::new()
        .post(env.app.url("/api/tasks"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "repo": "alice/demo", "prompt": "echo script", "agent": "scripted" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_script["origin"], "api", "{by_script}");
    let by_browser = env.submit("echo browser", serde_json::json!({})).await;
    assert_eq!(env.task(&by_browser).await["origin"], "web");
    env.wait_done(by_browser.as_str()).await;
    env.wait_done(by_script["id"].as_str().unwrap()).await;

    // Every path the client calls is in the server's OpenAPI document, its contract.
    let openapi: Value = reqwest::get(env.app.url("/api/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/me",
        "/api/tasks",
        "/api/tasks/{id}",
        "/api/tasks/{id}/events",
        "/api/tasks/{id}/diff",
        "/api/tasks/{id}/stop",
        "/api/tasks/{id}/messages",
        "/api/tokens",
    ] {
        assert!(
            openapi["paths"][path].is_object(),
            "{path} is not in the OpenAPI document"
        );
    }

    // A revoked token is refused with the server's reason.
    let listed = env.get_json("/api/tokens").await;
    let token_id = listed[0]["id"].as_str().unwrap();
    env.alice
        .delete(env.app.url(&format!("/api/tokens/{token_id}")))
        .send()
        .await
        .unwrap();
    let (code, _, stderr) = run_to_end(home.path(), &["task", "list"]).await;
    assert_eq!(code, 3, "a refusal is not a failed task: {stderr}");
    assert!(
        stderr.contains("this API token was revoked") && stderr.contains("401"),
        "{stderr}"
    );
}

async fn a_dropped_connection_loses_no_line(db: TestDb) {
    let env = TaskEnv::start(db, &[]).await;
    let relay = Relay::start(env.app.server.addr).await;
    let home = tempfile::tempdir().unwrap();
    login(&env, home.path(), &relay.url).await;

    let mut child = client(home.path())
        .args([
            "task",
            "run",
            "--repo",
            "alice/demo",
            "--agent",
            "scripted",
            "for i in $(seq 1 40); do echo line-$i; sleep 0.2; done",
        ])
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut cut = 0;
    while let Some(line) = stdout.next_line().await.unwrap() {
        if line.starts_with("line-") {
            seen.push(line.clone());
        }
        if line == "line-1" {
            // Live: the first line arrives while the task still runs.
            let tasks = env.get_json("/api/tasks").await;
            assert_eq!(tasks["tasks"][0]["status"], "running", "{tasks}");
        }
        if line == "line-5" {
            cut = relay.cut();
        }
    }
    let status = child.wait().await.unwrap();
    assert!(cut >= 1, "the relay dropped the live connection");
    assert!(status.success(), "exit status {status}");
    let want: Vec<String> = (1..=40).map(|i| format!("line-{i}")).collect();
    assert_eq!(seen, want, "every line exactly once, in order");
}

drydock_tests::on_both_backends!(
    the_cli_runs_tasks_and_exits_with_their_status,
    a_dropped_connection_loses_no_line
);
