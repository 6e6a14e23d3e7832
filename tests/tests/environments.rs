//! Environments end to end (issue 18): `.drydock/environment.toml` and devcontainer.json in real
//! repositories, setup run once and cached as a Docker snapshot, maintenance on every start,
//! setup-only secrets, failing setups, pruning and a restart. Real Docker, real git, both
//! databases; the scripted agent reports what it sees.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

use drydock_tests::TestDb;
use drydock_tests::tasks::{ACME_KEY, SCRIPTED_AGENT, TaskEnv, sandbox_image};
use serde_json::{Value, json};

/// The snapshots of `user_id`'s `repo`.
fn snapshots(user_id: &str, repo: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "images",
            "-q",
            "--no-trunc",
            "--filter",
            "label=drydock.env.kind=snapshot",
            "--filter",
            &format!("label=drydock.env.user={user_id}"),
            "--filter",
            &format!("label=drydock.env.repo={repo}"),
        ])
        .output()
        .unwrap();
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

async fn user_id(env: &TaskEnv) -> String {
    env.get_json("/api/me").await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Commits `files` onto `main` of the stand-in's bare repository, as a push would.
fn push_change(bare: &Path, files: &[(&str, &str)], message: &str) {
    let work = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(work.path())
            .args([
                "-c",
                "user.name=Test",
                "-c",
                "user.email=test@example.invalid",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let out = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(bare)
        .arg(work.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    for (path, contents) in files {
        let file = work.path().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, contents).unwrap();
    }
    git(&["add", "-A"]);
    git(&["commit", "--quiet", "-m", message]);
    git(&["push", "--quiet", "origin", "HEAD:main"]);
}

async fn run(env: &TaskEnv, repo: &str, script: &str, extra: Value) -> (Value, Vec<String>) {
    let mut body = json!({ "repo": repo, "create_pr": false });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let id = env.submit(script, body).await;
    let task = env.wait_done(&id).await;
    let log = env.log(&id).await;
    (task, log)
}

fn has(log: &[String], needle: &str) -> bool {
    log.iter().any(|l| l.contains(needle))
}

/// The tool's sources: a Python package that setup builds into one executable with zipapp.
const TOOL_MAIN: &str =
    "import sys\nprint('greet v1 says hello to', sys.argv[1] if len(sys.argv) > 1 else 'nobody')\n";

fn environment_toml(version: &str) -> String {
    format!(
        r#"# setup runs as root so it can install into /usr/local (capabilities stay dropped)
setup_user = "root"
setup = """
echo "setup {version} starting"
python3 -m zipapp tool -o /usr/local/bin/greet -p '/usr/bin/env python3'
chmod 755 /usr/local/bin/greet
echo run >> /usr/local/share/setup-runs
"""
maintenance = "echo maintenance-ran >> /tmp/maintenance-runs; echo maintenance done"

[variables]
GREETING_MODE = "loud"
"#
    )
}

const AGENT_REPORT: &str = "echo \"tool: $(greet agent)\"; echo \"setup-runs: $(wc -l < /usr/local/share/setup-runs)\"; echo \"maintenance-runs: $(cat /tmp/maintenance-runs 2>/dev/null | wc -l)\"; echo \"mode: $GREETING_MODE\"";

async fn environment_toml_setup_is_cached_and_rerun_when_it_changes(db: TestDb) {
    let env = TaskEnv::start(db, &[]).await;
    env.app.gh.create_repo(
        "alice",
        "tooling",
        &[
            (".drydock/environment.toml", &environment_toml("v1")),
            ("tool/__main__.py", TOOL_MAIN),
            ("README.md", "# tooling\n"),
        ],
        "main",
    );

    // First task: setup runs, the agent uses the tool it built.
    let (task, log) = run(&env, "alice/tooling", AGENT_REPORT, json!({})).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
    assert!(
        has(
            &log,
            "Environment: from .drydock/environment.toml; running setup"
        ),
        "{log:#?}"
    );
    assert!(has(&log, "setup v1 starting"), "{log:#?}");
    assert!(has(&log, "tool: greet v1 says hello to agent"), "{log:#?}");
    assert!(has(&log, "setup-runs: 1"), "{log:#?}");
    assert!(has(&log, "maintenance-runs: 0"), "{log:#?}");
    assert!(has(&log, "mode: loud"), "{log:#?}");
    let uid = user_id(&env).await;
    assert_eq!(snapshots(&uid, "alice/tooling").len(), 1);

    // Second task: from the snapshot, setup skipped, maintenance ran.
    let (task, log) = run(&env, "alice/tooling", AGENT_REPORT, json!({})).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
    assert!(
        log.iter().any(|l| l
            .starts_with("info: Environment: from .drydock/environment.toml, cached ")
            && l.ends_with("(setup skipped)")),
        "{log:#?}"
    );
    assert!(!has(&log, "setup v1 starting"), "{log:#?}");
    assert!(has(&log, "maintenance done"), "{log:#?}");
    assert!(has(&log, "setup-runs: 1"), "{log:#?}");
    assert!(has(&log, "maintenance-runs: 1"), "{log:#?}");
    assert!(has(&log, "tool: greet v1 says hello to agent"), "{log:#?}");

    // A new commit changes the setup script: setup runs again, into a new snapshot.
    let bare = env.app.gh.repo_path("alice", "tooling");
    push_change(
        &bare,
        &[
            (".drydock/environment.toml", &environment_toml("v2")),
            ("tool/__main__.py", &TOOL_MAIN.replace("v1", "v2")),
        ],
        "setup v2",
    );
    let (task, log) = run(&env, "alice/tooling", AGENT_REPORT, json!({})).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
    assert!(has(&log, "setup v2 starting"), "{log:#?}");
    assert!(has(&log, "tool: greet v2 says hello to agent"), "{log:#?}");
    assert_eq!(snapshots(&uid, "alice/tooling").len(), 2);

    // The repository's environment shows the last setup and its snapshots.
    let view = env.get_json("/api/environments/alice/tooling").await;
    assert_eq!(view["last_setup"]["status"], "succeeded", "{view}");
    assert_eq!(view["last_setup"]["source"], ".drydock/environment.toml");
    assert!(
        view["last_setup"]["log"]
            .as_str()
            .unwrap()
            .contains("setup v2 starting")
    );
    assert_eq!(view["snapshots"].as_array().unwrap().len(), 2, "{view}");

    // So does its page, with the last setup's log and the snapshots.
    let page = env
        .alice
        .get(env.app.url("/environments/alice/tooling"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("From <strong id=\"env-source\">.drydock/environment.toml</strong>"),
        "{page}"
    );
    assert!(page.contains("setup v2 starting"), "{page}");
    assert_eq!(page.matches("<code>drydock-env:").count(), 2, "{page}");
    assert!(page.contains("id=\"rebuild\""), "{page}");

    // "Rebuild" makes the next task run setup afresh.
    let resp = env.post("/api/environments/alice/tooling/rebuild").await;
    assert_eq!(resp.status(), 200);
    let (task, log) = run(&env, "alice/tooling", AGENT_REPORT, json!({})).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
    assert!(has(&log, "setup v2 starting"), "{log:#?}");
}

async fn devcontainer_with_a_dockerfile_builds_runs_post_create_once_and_logs_ignored_keys(
    db: TestDb,
) {
    let env = TaskEnv::start(db, &[]).await;
    let devcontainer = format!(
        r#"{{
  // The common subset drydock honours, and two keys it does not.
  "name": "demo",
  "build": {{ "dockerfile": "Dockerfile", "args": {{ "BASE": "{}" }} }},
  "containerEnv": {{ "DEVCONTAINER_MODE": "on" }},
  "postCreateCommand": "echo created >> /home/agent/created-runs",
  "forwardPorts": [3000],
  "customizations": {{ "vscode": {{ "extensions": [] }} }},
}}"#,
        sandbox_image()
    );
    env.app.gh.create_repo(
        "alice",
        "devc",
        &[
            (".devcontainer/devcontainer.json", &devcontainer),
            (
                ".devcontainer/Dockerfile",
                "ARG BASE\nFROM ${BASE}\nUSER root\nRUN echo built-from-the-repository > /etc/devcontainer-marker\nUSER agent\n",
            ),
        ],
        "main",
    );
    let report = "echo \"marker: $(cat /etc/devcontainer-marker)\"; echo \"created-runs: $(wc -l < /home/agent/created-runs)\"; echo \"mode: $DEVCONTAINER_MODE\"";
    let (task, log) = run(&env, "alice/devc", report, json!({})).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
    assert!(
        has(
            &log,
            "Building the environment's image from .devcontainer/Dockerfile"
        ),
        "{log:#?}"
    );
    assert!(
        has(&log, ".devcontainer/devcontainer.json: ignored keys")
            && has(&log, "forwardPorts, customizations"),
        "{log:#?}"
    );
    assert!(has(&log, "marker: built-from-the-repository"), "{log:#?}");
    assert!(has(&log, "created-runs: 1"), "{log:#?}");
    assert!(has(&log, "mode: on"), "{log:#?}");

    let (task, log) = run(&env, "alice/devc", report, json!({})).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
    assert!(has(&log, "(setup skipped)"), "{log:#?}");
    assert!(!has(&log, "Building the environment's image"), "{log:#?}");
    assert!(has(&log, "created-runs: 1"), "{log:#?}");
}

/// Reads the whole filesystem of `image` (through `docker export` of a container that never
/// starts) and answers whether `needle` occurs in it.
fn image_contains(image: &str, needle: &str) -> bool {
    let out = Command::new("docker")
        .args(["create", image, "true"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let container = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let export = Command::new("docker")
        .args(["export", &container])
        .output()
        .unwrap();
    let _ = Command::new("docker")
        .args(["rm", "-f", &container])
        .output();
    assert!(export.status.success());
    assert!(
        export.stdout.len() > 1_000_000,
        "the export holds a filesystem"
    );
    export
        .stdout
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn setup_only_secrets_stay_out_of_the_agent_and_the_snapshot(db: TestDb) {
    let env = TaskEnv::start(db, &[]).await;
    let uid = user_id(&env).await;
    let secret = format!("envsecret-{}", uuid_like());
    let visible = format!("agentsees-{}", uuid_like());
    env.app.gh.create_repo(
        "alice",
        "secretive",
        &[(
            ".drydock/environment.toml",
            r#"setup = """
printf %s "$SETUP_TOKEN" | sha256sum | cut -c1-64 > /home/agent/token-hash
echo "the token is $SETUP_TOKEN"
"""
"#,
        )],
        "main",
    );
    let resp = env
        .alice
        .put(env.app.url("/api/environments/alice/secretive"))
        .json(&json!({
            "secrets": {
                "SETUP_TOKEN": { "value": secret },
                "SHARED_TOKEN": { "value": visible, "agent_may_see": true }
            }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let view: Value = resp.json().await.unwrap();
    assert_eq!(view["secrets"][0]["name"], "SETUP_TOKEN");
    assert!(!view.to_string().contains(&secret), "write-only: {view}");
    let page = env.get_page("/environments/alice/secretive").await;
    assert!(
        page.contains("<code>SETUP_TOKEN</code> <span class=\"badge badge-ok\">setup only</span>"),
        "{page}"
    );
    assert!(
        page.contains(
            "<code>SHARED_TOKEN</code> <span class=\"badge badge-none\">agent may see</span>"
        ),
        "{page}"
    );
    assert!(!page.contains(&secret) && !page.contains(&visible));

    // The agent looks for the secret everywhere it can: its environment, every process's
    // environment, every file. It searches for the prefix only, so the script holds no value.
    let script = r#"
echo "env-hits: $(env | grep -c SETUP_TOKEN)"
echo "proc-hits: $(cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -c '^SETUP_TOKEN=')"
echo "file-hits: $(grep -rlsF 'envsecret-' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null | wc -l)"
echo "hash: $(cat /home/agent/token-hash)"
echo "shared: ${#SHARED_TOKEN}"
"#;
    let (task, log) = run(&env, "alice/secretive", script, json!({})).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(secret.as_bytes()))
    };
    assert!(
        has(&log, &format!("hash: {hash}")),
        "setup saw the secret: {log:#?}"
    );
    assert!(has(&log, "env-hits: 0"), "{log:#?}");
    assert!(has(&log, "proc-hits: 0"), "{log:#?}");
    assert!(has(&log, "file-hits: 0"), "{log:#?}");
    assert!(has(&log, &format!("shared: {}", visible.len())), "{log:#?}");
    // Printed by setup, redacted in the log.
    assert!(has(&log, "the token is [REDACTED:"), "{log:#?}");
    assert!(!log.iter().any(|l| l.contains(&secret)), "{log:#?}");

    // The snapshot's whole filesystem holds no trace of the value.
    let snaps = snapshots(&uid, "alice/secretive");
    assert_eq!(snaps.len(), 1);
    assert!(!image_contains(&snaps[0], &secret));

    // A setup that writes the secret into a file makes no snapshot.
    push_change(
        &env.app.gh.repo_path("alice", "secretive"),
        &[(
            ".drydock/environment.toml",
            "setup = 'printf %s \"$SETUP_TOKEN\" > /home/agent/.leaked'\n",
        )],
        "leak",
    );
    let (task, log) = run(&env, "alice/secretive", "echo agent ran", json!({})).await;
    assert_eq!(task["status"], "failed", "{task}\n{}", log.join("\n"));
    let reason = task["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("setup left the setup-only secret SETUP_TOKEN in /home/agent/.leaked"),
        "{reason}"
    );
    assert!(!has(&log, "agent ran"));
    assert_eq!(snapshots(&uid, "alice/secretive").len(), 1);
}

async fn a_failing_setup_fails_the_task_quoting_its_last_line_and_makes_no_snapshot(db: TestDb) {
    let env = TaskEnv::start(db, &[]).await;
    let uid = user_id(&env).await;
    env.app.gh.create_repo(
        "alice",
        "broken",
        &[(
            ".drydock/environment.toml",
            "setup = '''\necho preparing\necho \"fatal: the widget toolchain is missing\" >&2\nexit 3\n'''\n",
        )],
        "main",
    );
    let (task, log) = run(&env, "alice/broken", "echo agent ran", json!({})).await;
    assert_eq!(task["status"], "failed", "{task}\n{}", log.join("\n"));
    let reason = task["status_reason"].as_str().unwrap();
    assert!(reason.contains("the environment's setup"), "{reason}");
    assert!(
        reason.contains("fatal: the widget toolchain is missing"),
        "{reason}"
    );
    assert!(reason.contains("/environments/alice/broken"), "{reason}");
    assert!(!has(&log, "agent ran"), "{log:#?}");
    assert!(snapshots(&uid, "alice/broken").is_empty());
    let view = env.get_json("/api/environments/alice/broken").await;
    assert_eq!(view["last_setup"]["status"], "failed", "{view}");
}

async fn snapshots_in_use_survive_pruning_expired_ones_go_and_a_restart_reuses_them(db: TestDb) {
    // Its own instance id: the restart below reconciles every container of that instance, and
    // the same test on the other database runs at the same time.
    let instance = format!("env-prune-{}", uuid_like());
    let keys = [
        "--encryption-key",
        "7f3a9c1e5b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a",
        "--instance-id",
        instance.as_str(),
        "--snapshot-max-age",
        "2",
    ];
    let env = TaskEnv::start(db, &keys).await;
    let uid = user_id(&env).await;
    env.app.gh.create_repo(
        "alice",
        "pruned",
        &[
            (".drydock/environment.toml", &environment_toml("v1")),
            ("tool/__main__.py", TOOL_MAIN),
        ],
        "main",
    );
    let bare = env.app.gh.repo_path("alice", "pruned");
    // A kept sandbox uses the first snapshot.
    let (task, log) = run(
        &env,
        "alice/pruned",
        AGENT_REPORT,
        json!({ "keep_alive": true }),
    )
    .await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
    let kept_id = task["id"].as_str().unwrap().to_owned();
    let first = snapshots(&uid, "alice/pruned");
    assert_eq!(first.len(), 1);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;

    push_change(
        &bare,
        &[(".drydock/environment.toml", &environment_toml("v2"))],
        "v2",
    );
    let (task, log) = run(&env, "alice/pruned", AGENT_REPORT, json!({})).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
    let second = snapshots(&uid, "alice/pruned");
    assert_eq!(second.len(), 2, "the expired snapshot in use stays");
    assert!(second.contains(&first[0]));

    // Once the kept sandbox is gone, the next pruning removes both expired snapshots.
    let resp = env
        .post(&format!("/api/tasks/{kept_id}/sandbox/stop"))
        .await;
    assert!(resp.status().is_success(), "{}", resp.status());
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    push_change(
        &bare,
        &[(".drydock/environment.toml", &environment_toml("v3"))],
        "v3",
    );
    let (task, log) = run(&env, "alice/pruned", AGENT_REPORT, json!({})).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
    let third = snapshots(&uid, "alice/pruned");
    assert_eq!(third.len(), 1, "{third:?}");
    assert!(!third.contains(&first[0]) && !second.iter().any(|s| third.contains(s)));

    // A restarted drydock (default retention) starts from the snapshot it finds by label.
    let agents = tempfile::tempdir().unwrap();
    let agents_file = agents.path().join("agents.toml");
    std::fs::write(&agents_file, SCRIPTED_AGENT).unwrap();
    let drydock_tests::App { server, db, gh } = env.app;
    server.stop().await.unwrap();
    let mut settings = gh.settings();
    settings.extend(
        [
            "--agents-file",
            agents_file.to_str().unwrap(),
            "--sandbox-image",
            &sandbox_image(),
            keys[0],
            keys[1],
            keys[2],
            keys[3],
        ]
        .map(str::to_owned),
    );
    let server = drydock_tests::TestServer::start_with(&db.url, settings).await;
    let app = drydock_tests::App { gh, server, db };
    let alice = app.sign_in("alice").await;
    let resp = alice
        .put(app.url("/api/keys/acme"))
        .json(&json!({ "key": ACME_KEY }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = alice
        .post(app.url("/api/tasks"))
        .json(&json!({ "repo": "alice/pruned", "prompt": AGENT_REPORT, "agent": "scripted", "create_pr": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    let task = loop {
        let task: Value = alice
            .get(app.url(&format!("/api/tasks/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !matches!(task["status"].as_str(), Some("queued" | "running")) {
            break task;
        }
        assert!(std::time::Instant::now() < deadline, "{task}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let page: Value = alice
        .get(app.url(&format!("/api/tasks/{id}/events?after=0&limit=1000")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let log: Vec<String> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
    assert!(has(&log, "(setup skipped)"), "{log:#?}");
    assert!(has(&log, "setup-runs: 1"), "{log:#?}");
    assert_eq!(snapshots(&uid, "alice/pruned"), third);
    app.server.stop().await.unwrap();
}

async fn environments_api_checks_input_and_ownership(db: TestDb) {
    let env = TaskEnv::start(db, &[]).await;
    env.app
        .gh
        .create_repo("bob", "private-one", &[("README.md", "# bob\n")], "main");
    // Another user's repository, or one that does not exist: 404, as for anything not theirs.
    for path in [
        "/api/environments/bob/private-one",
        "/api/environments/alice/nope",
    ] {
        let resp = env.alice.get(env.app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
    let page = env
        .alice
        .get(env.app.url("/environments/bob/private-one"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
    let put = |body: Value| {
        env.alice
            .put(env.app.url("/api/environments/alice/demo"))
            .json(&body)
            .send()
    };
    let resp = put(json!({ "image": "not-registered" })).await.unwrap();
    assert_eq!(resp.status(), 422);
    let resp = put(json!({ "variables": { "1BAD": "x" } })).await.unwrap();
    assert_eq!(resp.status(), 422);
    let resp = put(json!({ "secrets": { "TOKEN": { "agent_may_see": true } } }))
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let resp = put(json!({ "unknown": 1 })).await.unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    let resp = put(json!({ "setup": "make", "variables": { "A": "b" }, "secrets": { "T": { "value": "hidden-value-1" } } }))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let view = env.get_json("/api/environments/alice/demo").await;
    assert_eq!(view["setup"], "make");
    assert_eq!(view["variables"]["A"], "b");
    assert_eq!(view["secrets"][0]["name"], "T");
    assert!(!view.to_string().contains("hidden-value-1"));
    // The API is described like the others.
    let api = env.get_json("/api/openapi.json").await;
    assert!(api["paths"]["/api/environments/{owner}/{repo}"]["put"].is_object());
    assert!(api["paths"]["/api/environments/{owner}/{repo}/rebuild"]["post"].is_object());
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}{:x}", std::process::id())
}

drydock_tests::on_both_backends!(
    environment_toml_setup_is_cached_and_rerun_when_it_changes,
    devcontainer_with_a_dockerfile_builds_runs_post_create_once_and_logs_ignored_keys,
    setup_only_secrets_stay_out_of_the_agent_and_the_snapshot,
    a_failing_setup_fails_the_task_quoting_its_last_line_and_makes_no_snapshot,
    snapshots_in_use_survive_pruning_expired_ones_go_and_a_restart_reuses_them,
    environments_api_checks_input_and_ownership,
);

/// The environment page and the task page in a real browser: rebuild, a write-only secret saved
/// through the form, and the setup's output as a stage of the log that folds once setup made its
/// snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_page_and_the_setup_stage_work_in_a_browser() {
    use drydock_tests::browser::Browser;
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    env.app.gh.create_repo(
        "alice",
        "paged",
        &[(
            ".drydock/environment.toml",
            "setup = 'echo setup line one; echo setup line two'\n",
        )],
        "main",
    );
    let id = env
        .submit(
            "echo agent done",
            json!({ "repo": "alice/paged", "create_pr": false }),
        )
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");

    let browser = Browser::start().await;
    env.app.gh.approve_as(Some("alice"));
    browser
        .goto(&env.app.url("/environments/alice/paged"))
        .await;
    browser.click("a.button[href^='/auth/github']").await;
    browser.wait_text("h1", "Environment of").await;
    browser
        .wait_text("#env-source", ".drydock/environment.toml")
        .await;
    browser.wait_text("#env-snapshots", "drydock-env:").await;
    browser.click("#rebuild").await;
    browser
        .wait_text("#rebuild-form", "runs setup afresh")
        .await;
    assert_eq!(browser.text("#env-generation").await, "1");

    browser.type_into("#secret-name", "DEPLOY_TOKEN").await;
    browser
        .type_into("#secret-value", "page-secret-value-123")
        .await;
    browser.click("#secret-form button[type='submit']").await;
    browser.wait_text("#env-secrets", "DEPLOY_TOKEN").await;
    let html = browser
        .eval("return document.documentElement.outerHTML;", json!([]))
        .await;
    assert!(!html.as_str().unwrap().contains("page-secret-value-123"));
    let view = env.get_json("/api/environments/alice/paged").await;
    assert_eq!(view["secrets"][0]["name"], "DEPLOY_TOKEN", "{view}");

    // The task page: the setup's lines are folded under their stage line, and open on a click.
    browser.goto(&env.app.url(&format!("/tasks/{id}"))).await;
    browser.wait_text("#log", "agent done").await;
    let folded = "return document.querySelectorAll('#log li.stage-folded').length;";
    assert_eq!(
        browser.eval(folded, json!([])).await,
        json!(3),
        "setup's command and two lines"
    );
    browser.click("#log li.stage-head").await;
    assert_eq!(browser.eval(folded, json!([])).await, json!(0));
    browser.wait_text("#log", "setup line two").await;
}

/// An image built from the repository's Dockerfile that lacks what drydock needs fails the task
/// saying what is missing and why, before the agent runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_without_what_drydock_needs_fails_the_task_saying_what_is_missing() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let devcontainer = format!(
        r#"{{ "build": {{ "dockerfile": "Dockerfile", "args": {{ "BASE": "{}" }} }} }}"#,
        sandbox_image()
    );
    env.app.gh.create_repo(
        "alice",
        "gitless",
        &[
            (".devcontainer/devcontainer.json", &devcontainer),
            (
                ".devcontainer/Dockerfile",
                "ARG BASE\nFROM ${BASE}\nUSER root\nRUN rm -f /usr/bin/git\nUSER agent\n",
            ),
        ],
        "main",
    );
    let (task, log) = run(&env, "alice/gitless", "echo agent ran", json!({})).await;
    assert_eq!(task["status"], "failed", "{task}\n{}", log.join("\n"));
    let reason = task["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("the environment's image lacks what drydock needs")
            && reason.contains("git (drydock hands work back with it)"),
        "{reason}"
    );
    assert!(!reason.contains("python3"), "python3 is there: {reason}");
    assert!(reason.contains("/environments/alice/gitless"), "{reason}");
    assert!(!has(&log, "agent ran"), "{log:#?}");
}

/// Under a network policy the repository's own Dockerfile steps run with no network at all (the
/// build cannot go through the task's proxy): the routes a RUN step saw are none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_network_policy_a_repository_dockerfile_builds_without_network() {
    // Tasks without a policy would get Docker's bridge (the operator's sandbox network); no
    // traffic is sent, the build only lists its routes and interfaces.
    let env = TaskEnv::start(
        TestDb::sqlite().await,
        &[
            "--network-policy",
            "allowlist",
            "--sandbox-network",
            "bridge",
        ],
    )
    .await;
    let devcontainer = format!(
        r#"{{ "build": {{ "dockerfile": "Dockerfile", "args": {{ "BASE": "{}" }} }} }}"#,
        sandbox_image()
    );
    env.app.gh.create_repo(
        "alice",
        "offline-build",
        &[
            (".devcontainer/devcontainer.json", &devcontainer),
            (
                ".devcontainer/Dockerfile",
                "ARG BASE\nFROM ${BASE}\nUSER root\nRUN (tail -n +2 /proc/net/route; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ') > /etc/build-network\nUSER agent\n",
            ),
        ],
        "main",
    );
    let report = "sed 's/^/build saw: /' /etc/build-network; echo 'build network listed'";
    let (task, log) = run(&env, "alice/offline-build", report, json!({})).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
    assert!(has(&log, "build network listed"), "{log:#?}");
    let seen: Vec<&str> = log
        .iter()
        .filter_map(|l| l.split("build saw: ").nth(1))
        .collect();
    assert_eq!(seen, vec!["lo"], "the build had a network: {log:#?}");
}
