//! Tasks end to end: the real server, real Docker sandboxes, real git over smart HTTP against
//! the GitHub stand-in, and an operator-defined scripted agent.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use drydock_tests::TestDb;
use drydock_tests::sse::{SseEvent, next_event};
use drydock_tests::tasks::{ACME_KEY, TaskEnv, containers_of, git_in};
use serde_json::{Value, json};

async fn happy_path(db: TestDb) {
    let env = TaskEnv::start(db, &[]).await;
    let id = env
        .submit(
            "printf 'hello from the agent\\n' >> README.md && mkdir -p src && echo 'fn main() {}' > src/main.rs && echo 'edited README and added src/main.rs'",
            json!({}),
        )
        .await;
    let task = env.wait_done(&id).await;
    let log = env.log(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
    assert!(
        has_line(&log, "edited README and added src/main.rs"),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("info: Cloning alice/demo"))
    );

    // The branch is in the repository with the agent's change, authored by the user.
    let branch = task["branch"].as_str().unwrap();
    assert!(
        branch.starts_with("drydock/printf-hello-from-the-agent"),
        "{branch}"
    );
    let bare = env.app.gh.repo_path("alice", "demo");
    let (ok, readme) = git_in(&bare, &["show", &format!("{branch}:README.md")]);
    assert!(ok);
    assert_eq!(readme, "# demo\nhello from the agent\n");
    let (_, author) = git_in(&bare, &["log", "-1", "--format=%an <%ae>%n%s", branch]);
    assert!(
        author.starts_with("alice Example <101+alice@users.noreply.127.0.0.1>"),
        "{author}"
    );
    let (_, sha) = git_in(&bare, &["rev-parse", branch]);
    assert_eq!(task["commit_sha"].as_str().unwrap(), sha.trim());
    assert_eq!(task["base_branch"], "main");

    // The pull request is open on the stand-in and recorded on the task.
    let pulls = env.app.gh.pulls("alice", "demo");
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0]["head"]["ref"], branch);
    assert_eq!(pulls[0]["base"]["ref"], "main");
    assert!(
        pulls[0]["body"]
            .as_str()
            .unwrap()
            .contains(&format!("/tasks/{id}"))
    );
    assert_eq!(task["pr_number"], pulls[0]["number"]);
    assert_eq!(task["pr_url"], pulls[0]["html_url"]);

    // The diff lists both files with stats.
    let diff: Value = env
        .alice
        .get(env.app.url(&format!("/api/tasks/{id}/diff")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let files = diff["files"].as_array().unwrap();
    let readme = files.iter().find(|f| f["path"] == "README.md").unwrap();
    assert_eq!(
        (readme["status"].as_str(), readme["additions"].as_i64()),
        (Some("modified"), Some(1))
    );
    assert!(
        files
            .iter()
            .any(|f| f["path"] == "src/main.rs" && f["status"] == "added")
    );
    assert!(
        diff["patch"]
            .as_str()
            .unwrap()
            .contains("+hello from the agent")
    );

    assert!(containers_of(&id).is_empty(), "the sandbox is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_pushes_a_branch_and_opens_a_pull_request_on_sqlite() {
    happy_path(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_pushes_a_branch_and_opens_a_pull_request_on_postgres() {
    happy_path(TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_leave_redaction_and_the_token_never_enters_the_sandbox() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let script = r#"
echo "whole: $ACME_API_KEY"
printf 'split: %s' "$(printf %s "$ACME_API_KEY" | cut -c1-10)"; sleep 0.3; printf '%s\n' "$(printf %s "$ACME_API_KEY" | cut -c11-)"
echo "b64: $(printf %s "$ACME_API_KEY" | base64 -w0)"
echo "--- environment"; env | sort
echo "--- processes"; ps -eo args 2>/dev/null || cat /proc/[0-9]*/cmdline | tr '\0' ' '
echo "--- git config"; cat .git/config
echo "--- files"; grep -rl "gho_" /workspace /home /tmp 2>/dev/null || echo "no token-looking files"
echo 'note' > NOTES.md
"#;
    let id = env.submit(script, json!({ "create_pr": false })).await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let log = env.log(&id).await.join("\n");
    let token = env.app.gh.issued_tokens();
    assert!(!token.is_empty());

    assert!(
        !log.contains(ACME_KEY),
        "the key appears in the log:\n{log}"
    );
    assert!(!log.contains(&ACME_KEY[..20]));
    let b64 = base64_of(ACME_KEY);
    assert!(!log.contains(&b64), "the key's base64 appears in the log");
    assert!(
        log.contains("whole: [REDACTED"),
        "the key was printed and redacted:\n{log}"
    );
    assert!(
        log.contains("split: [REDACTED"),
        "a key split across writes is caught:\n{log}"
    );
    assert!(log.contains("b64: [REDACTED"), "{log}");
    for t in &token {
        assert!(
            !log.contains(t.as_str()),
            "the GitHub token appears in the log"
        );
    }
    assert!(
        !log.contains("REDACTED:github-token"),
        "the GitHub token reached the sandbox (it was printed, then redacted):\n{log}"
    );
    assert!(
        !log.contains("extraHeader") && !log.contains("x-access-token"),
        "{log}"
    );
    assert!(log.contains("no token-looking files"), "{log}");

    // Every other way out: SSE, the task API, messages, the diff.
    let sse = env
        .alice
        .get(env.app.url(&format!("/api/tasks/{id}/events")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(sse.contains("event: end"), "{sse}");
    let mut everything = sse;
    for path in ["", "/diff", "/messages"] {
        everything.push_str(&env.get_page(&format!("/api/tasks/{id}{path}")).await);
    }
    assert!(!everything.contains(ACME_KEY) && !everything.contains(&b64));
    for t in &token {
        assert!(!everything.contains(t.as_str()));
    }
}

/// Whether the log has a line with this text, whatever its kind.
fn has_line(log: &[String], text: &str) -> bool {
    log.iter()
        .any(|l| l.split_once(": ").is_some_and(|(_, t)| t == text))
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_explained() {
    let env = TaskEnv::start(TestDb::sqlite().await, &["--sandbox-memory-mb", "128"]).await;

    let id = env.submit("echo about to fail; exit 3", json!({})).await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "failed");
    // The reason quotes the last thing the agent said.
    assert_eq!(
        task["status_reason"],
        "the agent exited with code 3: about to fail"
    );
    assert!(has_line(&env.log(&id).await, "about to fail"));

    let id = env
        .submit("echo hi", json!({ "base_branch": "no-such-branch" }))
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "failed");
    let reason = task["status_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the base branch no-such-branch does not exist on alice/demo"),
        "{reason}"
    );

    let id = env
        .submit(
            "python3 -c 'b = bytearray(512 * 1024 * 1024); print(len(b))'",
            json!({}),
        )
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        task["status_reason"]
            .as_str()
            .unwrap()
            .contains("ran out of memory"),
        "{task}"
    );

    let id = env
        .submit("echo sleeping; sleep 600", json!({ "max_duration_s": 10 }))
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "timed_out", "{task}");
    assert!(
        task["status_reason"].as_str().unwrap().contains("10 s"),
        "{task}"
    );
    assert!(containers_of(&id).is_empty());

    let id = env.submit("true", json!({})).await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded");
    assert!(
        task["status_reason"]
            .as_str()
            .unwrap()
            .starts_with("no changes"),
        "{task}"
    );
    assert!(task["commit_sha"].is_null() && task["pr_url"].is_null());
    assert!(env.app.gh.pulls("alice", "demo").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_get_clear_errors() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let cases = [
        (json!({ "repo": "not a repo" }), "repo"),
        (json!({ "repo": "alice/missing" }), "repo"),
        (json!({ "prompt": "  " }), "prompt"),
        (json!({ "prompt": "x".repeat(64 * 1024 + 1) }), "prompt"),
        (json!({ "agent": "nope" }), "agent"),
        (json!({ "model": "gpt-0" }), "model"),
        (json!({ "max_duration_s": 999_999 }), "max_duration_s"),
        (json!({ "connectors": ["not-mine"] }), "connectors"),
        (json!({ "base_branch": "bad..branch" }), "base_branch"),
    ];
    for (patch, field) in cases {
        let mut body = json!({ "repo": "alice/demo", "prompt": "echo", "agent": "scripted" });
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let resp = env
            .alice
            .post(env.app.url("/api/tasks"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 422, "{field}: {body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    // A missing key names the provider.
    env.alice
        .delete(env.app.url("/api/keys/acme"))
        .send()
        .await
        .unwrap();
    let (status, body) = env.submit_raw("echo", json!({})).await;
    assert_eq!(status, 422);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("acme API key"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_task_ends_it_and_removes_its_sandbox() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let id = env.submit("echo working; sleep 600", json!({})).await;
    env.wait_for(&id, "its first output", |t| {
        t["event_count"].as_i64().unwrap_or(0) > 0 && t["status"] == "running"
    })
    .await;
    env.wait_for(&id, "a sandbox", |_| !containers_of(&id).is_empty())
        .await;
    let resp = env
        .alice
        .post(env.app.url(&format!("/api/tasks/{id}/stop")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let task: Value = resp.json().await.unwrap();
    assert_eq!(task["status"], "stopped", "{task}");
    assert!(
        containers_of(&id).is_empty(),
        "the container is gone when stop answers"
    );
    let again = env
        .alice
        .post(env.app.url(&format!("/api/tasks/{id}/stop")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_and_concurrency_limits_queue_and_refuse() {
    let env = TaskEnv::start(
        TestDb::sqlite().await,
        &["--max-tasks-per-day", "3", "--max-concurrent-tasks", "1"],
    )
    .await;
    let first = env.submit("echo first; sleep 600", json!({})).await;
    env.wait_for(&first, "running", |t| t["status"] == "running")
        .await;
    let second = env.submit("echo second", json!({})).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        env.task(&second).await["status"],
        "queued",
        "waits for a free slot"
    );

    // Deleting a task does not give its quota back.
    let third = env.submit("echo third", json!({})).await;
    env.alice
        .delete(env.app.url(&format!("/api/tasks/{third}")))
        .send()
        .await
        .unwrap();
    let (status, body) = env.submit_raw("echo fourth", json!({})).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["details"]["remaining"], 0);
    assert!(body["error"]["details"]["reset_at"].as_i64().unwrap() > 0);

    env.alice
        .post(env.app.url(&format!("/api/tasks/{first}/stop")))
        .send()
        .await
        .unwrap();
    let second_task = env.wait_done(&second).await;
    assert_eq!(
        second_task["status"], "succeeded",
        "the queued task started once the slot freed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_after_a_disconnect_without_losing_or_repeating_lines() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let id = env
        .submit(
            "for i in $(seq 1 40); do echo line-$i; sleep 0.05; done",
            json!({ "create_pr": false }),
        )
        .await;

    // First connection: read a few events, then drop it.
    let mut seen: Vec<(i64, String)> = Vec::new();
    let resp = env
        .alice
        .get(env.app.url(&format!("/api/tasks/{id}/events")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    read_sse(resp, &mut seen, 5).await;
    assert!(seen.len() >= 5);
    let last = seen.last().unwrap().0;

    // Second connection resumes after the last id and reads to the end.
    let resp = env
        .alice
        .get(env.app.url(&format!("/api/tasks/{id}/events")))
        .header("accept", "text/event-stream")
        .header("last-event-id", last.to_string())
        .send()
        .await
        .unwrap();
    let ended = read_sse(resp, &mut seen, usize::MAX).await;
    assert!(ended.is_some(), "the stream ends with an end event");
    assert_eq!(ended.unwrap()["status"], "succeeded");
    let seqs: Vec<i64> = seen.iter().map(|(s, _)| *s).collect();
    let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
    assert_eq!(seqs, expected, "every seq exactly once, in order");
    let lines: Vec<&str> = seen
        .iter()
        .filter_map(|(_, t)| t.strip_prefix("line-"))
        .collect();
    assert_eq!(
        lines,
        (1..=40)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    let stored = env.log(&id).await;
    assert_eq!(
        stored.len(),
        seen.len(),
        "SSE delivered exactly what is stored"
    );
}

/// Reads SSE events into `seen` until `max` more were read or the stream ended; answers the
/// `end` event's data if it came.
async fn read_sse(
    mut resp: reqwest::Response,
    seen: &mut Vec<(i64, String)>,
    max: usize,
) -> Option<Value> {
    let mut buf = String::new();
    let mut read = 0;
    loop {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(120), resp.chunk())
            .await
            .ok()?
            .ok()??;
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(SseEvent { id, event, data }) = next_event(&mut buf) {
            if event.as_deref() == Some("end") {
                return serde_json::from_str(&data).ok();
            }
            if let Some(id) = id {
                let value: Value = serde_json::from_str(&data).unwrap();
                seen.push((id, value["text"].as_str().unwrap_or("").to_owned()));
                read += 1;
                if read >= max {
                    return None;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_the_agent_makes_itself_are_pushed_unless_they_carry_a_secret() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let commit = "git -c user.name=agent -c user.email=agent@sandbox commit -qm";
    // The agent commits its own work and leaves nothing uncommitted: the work is pushed.
    let id = env
        .submit(
            &format!("echo mine > mine.txt && git add mine.txt && {commit} 'agent made this'"),
            json!({}),
        )
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(
        task["status"],
        "succeeded",
        "{task}\n{:#?}",
        env.log(&id).await
    );
    let branch = task["branch"].as_str().unwrap();
    let bare = env.app.gh.repo_path("alice", "demo");
    let (_, subjects) = git_in(&bare, &["log", "--format=%s", &format!("main..{branch}")]);
    assert_eq!(subjects.trim(), "agent made this");
    // Work left on another branch the agent checked out still lands on the task's branch.
    let id = env
        .submit(
            "git checkout -q -b agent-own-branch && echo there > there.txt",
            json!({}),
        )
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(
        task["status"],
        "succeeded",
        "{task}\n{:#?}",
        env.log(&id).await
    );
    let branch = task["branch"].as_str().unwrap();
    let (ok, there) = git_in(&bare, &["show", &format!("{branch}:there.txt")]);
    assert!(ok, "there.txt is on {branch}");
    assert_eq!(there, "there\n");
    // A key in a commit message is refused like a key in a file.
    let id = env
        .submit(
            &format!("echo x > x.txt && git add x.txt && {commit} \"key $ACME_API_KEY\""),
            json!({}),
        )
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        task["status_reason"]
            .as_str()
            .unwrap()
            .starts_with("refused to push"),
        "{task}"
    );
    let branch = task["branch"].as_str().unwrap();
    let (exists, _) = git_in(
        &bare,
        &["rev-parse", "--verify", &format!("refs/heads/{branch}")],
    );
    assert!(!exists, "the branch was not pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_containing_a_secret_is_not_pushed() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let id = env
        .submit(
            "printf 'key=%s\\n' \"$ACME_API_KEY\" > config.env",
            json!({}),
        )
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "failed");
    assert!(
        task["status_reason"]
            .as_str()
            .unwrap()
            .starts_with("refused to push"),
        "{task}"
    );
    let branch = task["branch"].as_str().unwrap();
    let (exists, _) = git_in(
        &env.app.gh.repo_path("alice", "demo"),
        &["rev-parse", "--verify", &format!("refs/heads/{branch}")],
    );
    assert!(!exists, "the branch was not pushed");
    assert!(env.app.gh.pulls("alice", "demo").is_empty());
    let diff = env.get_page(&format!("/api/tasks/{id}/diff")).await;
    assert!(!diff.contains(ACME_KEY), "the stored diff is redacted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_task_is_a_404_everywhere() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let id = env.submit("echo mine", json!({ "create_pr": false })).await;
    env.wait_done(&id).await;
    let bob = env.app.sign_in("bob").await;
    for path in ["", "/events", "/diff", "/messages"] {
        let resp = bob
            .get(env.app.url(&format!("/api/tasks/{id}{path}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "GET {path}");
    }
    assert_eq!(
        bob.post(env.app.url(&format!("/api/tasks/{id}/stop")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        bob.delete(env.app.url(&format!("/api/tasks/{id}")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let list: Value = bob
        .get(env.app.url("/api/tasks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list["tasks"].as_array().unwrap().is_empty());
    assert_eq!(
        env.task(&id).await["status"],
        "succeeded",
        "Alice's task is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_task_leaves_no_orphan_and_explains_the_task() {
    let db = TestDb::sqlite().await;
    let url = db.url.clone();
    let env = TaskEnv::start(db, &["--instance-id", "restart-test"]).await;
    let id = env.submit("echo long; sleep 600", json!({})).await;
    env.wait_for(&id, "a sandbox", |t| {
        t["status"] == "running" && !containers_of(&id).is_empty()
    })
    .await;
    let drydock_tests::App { server, db, gh } = env.app;
    server.stop().await.unwrap();
    assert!(
        containers_of(&id).is_empty(),
        "shutting down removes the sandbox"
    );
    let task = db.store.get_task_for_runner(&id).await.unwrap().unwrap();
    assert_eq!(task.status, "failed");
    assert_eq!(
        task.status_reason.as_deref(),
        Some("server shut down during the task")
    );

    // A crash: a task left running by this instance and its container. The next start
    // explains the task and removes the container.
    let user = task.user_id.clone();
    let crashed = db
        .store
        .insert_task(&drydock::store::NewTask {
            user_id: &user,
            title: "crashed",
            prompt: "crashed",
            repo: "alice/demo",
            base_branch: None,
            agent: "scripted",
            model: None,
            install_deps: false,
            max_duration_s: 600,
            keep_alive: false,
            create_pr: false,
            origin: "api",
            source_url: None,
            network_policy: None,
            key_in_sandbox: false,
        })
        .await
        .unwrap();
    assert!(
        db.store
            .claim_task_for(&crashed.id, "restart-test")
            .await
            .unwrap()
    );
    let image = drydock_tests::tasks::sandbox_image();
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--network",
            "none",
            "--label",
            "drydock.instance=restart-test",
            "--label",
        ])
        .arg(format!("drydock.task={}", crashed.id))
        .args([image.as_str(), "sleep", "600"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(containers_of(&crashed.id).len(), 1);

    let mut settings = gh.settings();
    settings.extend(["--instance-id".to_owned(), "restart-test".to_owned()]);
    let restarted = drydock_tests::TestServer::start_with(&url, settings).await;
    let task = db
        .store
        .get_task_for_runner(&crashed.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(task.status, "failed");
    assert_eq!(
        task.status_reason.as_deref(),
        Some("server restarted during the task")
    );
    assert!(containers_of(&crashed.id).is_empty(), "no orphan container");
    restarted.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_reach_the_agent_config_and_their_secrets_are_redacted() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let create = |body: Value| {
        let req = env.alice.post(env.app.url("/api/connectors")).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        }
    };
    create(json!({
        "name": "files", "transport": "stdio", "command": "files-mcp", "args": ["--root", "/workspace"],
        "env": { "FILES_TOKEN": "files-secret-value-0123456789" }
    }))
    .await;
    create(json!({
        "name": "remote", "transport": "http", "url": "https://mcp.example.com/mcp",
        "headers": { "Authorization": "Bearer remote-secret-abcdef0123456789" }
    }))
    .await;
    create(json!({ "name": "off", "transport": "stdio", "command": "off-mcp", "enabled": false }))
        .await;

    let script = r#"
stat -c 'mode=%a owner=%u' /home/agent/.drydock/mcp.json
cat /home/agent/.drydock/mcp.json
echo "echoed: files-secret-value-0123456789"
"#;
    let id = env.submit(script, json!({ "create_pr": false })).await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let log = env.log(&id).await.join("\n");
    assert!(log.contains("mode=600 owner=1000"), "{log}");
    assert!(
        log.contains("\"files\"") && log.contains("\"remote\""),
        "both enabled connectors are configured:\n{log}"
    );
    assert!(
        log.contains("files-mcp") && log.contains("https://mcp.example.com/mcp"),
        "{log}"
    );
    assert!(
        !log.contains("off-mcp"),
        "a disabled connector is left out by default"
    );
    assert!(
        !log.contains("files-secret-value-0123456789"),
        "a connector secret echoed by the agent is redacted:\n{log}"
    );
    assert!(!log.contains("remote-secret-abcdef0123456789"), "{log}");
    assert!(log.contains("echoed: [REDACTED"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_ends_live_streams_cleanly_and_explains_running_tasks() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let id = env.submit("echo streaming; sleep 600", json!({})).await;
    env.wait_for(&id, "running", |t| {
        t["status"] == "running" && t["event_count"].as_i64().unwrap_or(0) > 0
    })
    .await;
    let open = |path: String| {
        let req = env
            .alice
            .get(env.app.url(&path))
            .header("accept", "text/event-stream");
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp
        }
    };
    let mut log = open(format!("/api/tasks/{id}/events")).await;
    let mut statuses = open("/api/tasks/events".to_owned()).await;
    assert!(
        log.chunk().await.unwrap().is_some(),
        "the log stream is live"
    );

    let drydock_tests::App { server, db, .. } = env.app;
    server.stop().await.unwrap();
    // A clean end of stream (Ok(None)), not a connection cut when the grace period ran out.
    for stream in [&mut log, &mut statuses] {
        let ended = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            loop {
                match stream.chunk().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(err) => panic!("the stream was cut instead of ended: {err}"),
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "the stream never ended after the server stopped"
        );
    }
    let task = db.store.get_task_for_runner(&id).await.unwrap().unwrap();
    assert_eq!(task.status, "failed");
    assert_eq!(
        task.status_reason.as_deref(),
        Some("server shut down during the task")
    );
    assert!(containers_of(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_does_not_read_neither_holds_up_the_task_nor_misses_lines() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let id = env
        .submit(
            "seq 1 5000 | sed 's/^/line-/'",
            json!({ "create_pr": false }),
        )
        .await;
    // Connect, then read nothing while the task runs to the end.
    let resp = env
        .alice
        .get(env.app.url(&format!("/api/tasks/{id}/events")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let task = env.wait_done(&id).await;
    assert_eq!(
        task["status"], "succeeded",
        "the task finished while its viewer was stalled"
    );
    let mut seen = Vec::new();
    let end = read_sse(resp, &mut seen, usize::MAX).await;
    assert_eq!(end.unwrap()["status"], "succeeded");
    let lines: Vec<&str> = seen
        .iter()
        .filter_map(|(_, t)| t.strip_prefix("line-"))
        .collect();
    assert_eq!(
        lines.len(),
        5000,
        "every line arrives, from the database where the stream fell behind"
    );
    assert!(
        lines
            .iter()
            .enumerate()
            .all(|(i, l)| *l == (i + 1).to_string()),
        "in order"
    );
    let seqs: Vec<i64> = seen.iter().map(|(s, _)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no seq repeated or skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_viewers_of_one_task_each_get_every_line_in_order() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let id = env
        .submit(
            "sleep 1; seq 1 3000 | sed 's/^/line-/'",
            json!({ "create_pr": false }),
        )
        .await;
    // Viewers join before and while the lines come: some follow them live, some replay them
    // from the database, and those that fall behind catch up from it.
    let mut viewers = Vec::new();
    for i in 0..20 {
        let resp = env
            .alice
            .get(env.app.url(&format!("/api/tasks/{id}/events")))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        viewers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let end = read_sse(resp, &mut seen, usize::MAX).await;
            (end, seen)
        }));
        if i % 5 == 4 {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
    let task = env.wait_done(&id).await;
    let stored = task["event_count"].as_u64().unwrap() as usize;
    for viewer in viewers {
        let (end, seen) = viewer.await.unwrap();
        assert_eq!(end.unwrap()["status"], "succeeded");
        let seqs: Vec<i64> = seen.iter().map(|(s, _)| *s).collect();
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, expected, "every seq exactly once, in order");
        let lines: Vec<&str> = seen
            .iter()
            .filter_map(|(_, t)| t.strip_prefix("line-"))
            .collect();
        assert_eq!(lines.len(), 3000);
        assert!(
            lines
                .iter()
                .enumerate()
                .all(|(i, l)| *l == (i + 1).to_string()),
            "in order"
        );
        assert_eq!(seen.len(), stored, "what is stored, nothing more");
    }
}
