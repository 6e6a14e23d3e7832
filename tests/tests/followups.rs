//! Follow-up messages and kept-alive sandboxes, end to end: the real server, real Docker, real git
//! against the GitHub stand-in, and the scripted agent (which sees the whole prompt as `$1` and a
//! resume flag as `$2`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use drydock_tests::TestDb;
use drydock_tests::tasks::{TaskEnv, containers_of, git_in, warm_sandboxes};
use reqwest::StatusCode;
use reqwest::cookie::CookieStore;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends a follow-up; answers the status and body.
async fn follow_up(env: &TaskEnv, id: &str, prompt: &str) -> (StatusCode, Value) {
    let resp = env
        .alice
        .post(env.app.url(&format!("/api/tasks/{id}/messages")))
        .json(&json!({ "prompt": prompt }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Waits until the task has ended its `turns`-th turn.
async fn wait_turn(env: &TaskEnv, id: &str, turns: i64) -> Value {
    env.wait_for(id, &format!("the end of turn {turns}"), |t| {
        t["turns"] == turns && !matches!(t["status"].as_str(), Some("queued" | "running"))
    })
    .await
}

async fn messages(env: &TaskEnv, id: &str) -> Vec<(String, Option<i64>, String)> {
    let list = env.get_json(&format!("/api/tasks/{id}/messages")).await;
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["turn"].as_i64(),
                m["content"].as_str().unwrap().trim().to_owned(),
            )
        })
        .collect()
}

/// Subjects of the branch's commits after `main`, oldest first.
fn commits_on(env: &TaskEnv, branch: &str) -> Vec<String> {
    let bare = env.app.gh.repo_path("alice", "demo");
    let (ok, out) = git_in(
        &bare,
        &[
            "log",
            "--reverse",
            "--format=%s",
            &format!("main..{branch}"),
        ],
    );
    assert!(ok, "branch {branch} is in the repository");
    out.lines().map(str::to_owned).collect()
}

fn show(env: &TaskEnv, branch: &str, path: &str) -> String {
    let bare = env.app.gh.repo_path("alice", "demo");
    let (ok, out) = git_in(&bare, &["show", &format!("{branch}:{path}")]);
    assert!(ok, "{path} is on {branch}");
    out
}

async fn quota_used(env: &TaskEnv) -> i64 {
    let me = env.get_json("/api/me").await;
    me["quota"]["used"].as_i64().unwrap()
}

async fn a_follow_up_continues_in_the_kept_sandbox(db: TestDb) {
    let env = TaskEnv::start(db, &[]).await;
    let id = env
        .submit(
            "touch /tmp/turn-one-was-here && echo one > one.txt && echo 'first turn done'",
            json!({ "keep_alive": true }),
        )
        .await;
    let task = wait_turn(&env, &id, 1).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert!(task["keep_alive"].as_bool().unwrap());
    assert!(
        task["sandbox_expires_at"].as_i64().unwrap() > chrono_now_ms(),
        "{task}"
    );
    assert_eq!(containers_of(&id).len(), 1, "the sandbox is kept");
    let pr_number = task["pr_number"].as_i64().unwrap();

    let (status, message) = follow_up(
        &env,
        &id,
        "echo \"resume flag: $2\"; test -f /tmp/turn-one-was-here && echo 'same sandbox'; echo two > two.txt",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{message}");
    assert!(message["turn"].is_null(), "not run yet: {message}");
    let task = wait_turn(&env, &id, 2).await;
    let log = env.log(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
    assert!(
        log.iter()
            .any(|l| l == "agent: resume flag: --resume-session"),
        "the agent resumes its session: {log:#?}"
    );
    assert!(log.iter().any(|l| l == "agent: same sandbox"), "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.starts_with("info: Continuing in the task's sandbox")),
        "{log:#?}"
    );

    // Both turns' commits are on the one branch, in order, and the pull request follows it.
    let branch = task["branch"].as_str().unwrap();
    let commits = commits_on(&env, branch);
    assert_eq!(commits.len(), 2, "{commits:?}");
    assert!(commits[0].starts_with("touch /tmp/turn-one"), "{commits:?}");
    assert!(commits[1].starts_with("echo \"resume flag"), "{commits:?}");
    assert_eq!(show(&env, branch, "one.txt"), "one\n");
    assert_eq!(show(&env, branch, "two.txt"), "two\n");
    assert_eq!(
        task["pr_number"].as_i64(),
        Some(pr_number),
        "same pull request"
    );
    assert_eq!(env.app.gh.pulls("alice", "demo").len(), 1, "no second PR");
    assert_eq!(
        task["status_reason"],
        format!(
            "pushed {} to pull request #{pr_number}",
            &task["commit_sha"].as_str().unwrap()[..12]
        )
    );
    // The diff is the whole task's work.
    let diff = env.get_json(&format!("/api/tasks/{id}/diff")).await;
    let files: Vec<&str> = diff["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["one.txt", "two.txt"]);

    // The conversation, each reply with its turn; each turn counted once.
    let conversation = messages(&env, &id).await;
    let roles: Vec<(&str, Option<i64>)> = conversation
        .iter()
        .map(|(role, turn, _)| (role.as_str(), *turn))
        .collect();
    assert_eq!(
        roles,
        [
            ("user", Some(1)),
            ("agent", Some(1)),
            ("user", Some(2)),
            ("agent", Some(2))
        ]
    );
    assert_eq!(conversation[1].2, "first turn done");
    assert!(conversation[3].2.contains("same sandbox"));
    assert_eq!(quota_used(&env).await, 2);
    assert_eq!(containers_of(&id).len(), 1, "still kept after turn 2");

    // Ending the sandbox early; a second time there is none; another user cannot.
    let bob = env.app.sign_in("bob").await;
    let resp = bob
        .post(env.app.url(&format!("/api/tasks/{id}/sandbox/stop")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = env.post(&format!("/api/tasks/{id}/sandbox/stop")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let task: Value = resp.json().await.unwrap();
    assert!(task["sandbox_expires_at"].is_null(), "{task}");
    assert!(containers_of(&id).is_empty(), "the sandbox is gone");
    let resp = env.post(&format!("/api/tasks/{id}/sandbox/stop")).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conflict", "{body}");
}

fn chrono_now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

drydock_tests::on_both_backends!(a_follow_up_continues_in_the_kept_sandbox);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_idle_reaper_a_follow_up_starts_afresh_with_the_earlier_turns() {
    let env = TaskEnv::start(
        TestDb::sqlite().await,
        &[
            "--sandbox-idle-timeout",
            "2",
            "--sandbox-max-lifetime",
            "7200",
        ],
    )
    .await;
    let id = env
        .submit(
            "echo a > a.txt && echo 'reply of turn one'",
            json!({ "keep_alive": true }),
        )
        .await;
    let task = wait_turn(&env, &id, 1).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    // The idle reaper removes the container and says so.
    env.wait_for(&id, "the sandbox reaped", |t| {
        t["sandbox_expires_at"].is_null() && containers_of(&id).is_empty()
    })
    .await;
    assert!(
        env.log(&id)
            .await
            .iter()
            .any(|l| l == "info: Sandbox removed: idle for 2 s"),
        "{:#?}",
        env.log(&id).await
    );

    let (status, body) = follow_up(
        &env,
        &id,
        "printf '%s' \"$1\" > context.txt; echo \"resume flag: [$2]\"; test -f a.txt && echo 'turn one work is here'",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let task = wait_turn(&env, &id, 2).await;
    let log = env.log(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
    assert!(
        log.iter().any(|l| l == "agent: resume flag: []"),
        "a fresh sandbox has no session to resume: {log:#?}"
    );
    assert!(log.iter().any(|l| l == "agent: turn one work is here"));

    // What the agent was given: the earlier turns, then the new request.
    let branch = task["branch"].as_str().unwrap();
    let context = show(&env, branch, "context.txt");
    let request = context
        .find("### Request (turn 1)\necho a > a.txt")
        .unwrap();
    let reply = context
        .find("### Your reply (turn 1)\nreply of turn one")
        .unwrap();
    let new = context.find("## New request\nprintf").unwrap();
    assert!(request < reply && reply < new, "{context}");
    assert!(context.contains(branch), "{context}");
    assert_eq!(commits_on(&env, branch).len(), 2);
    // A fresh sandbox was started for the turn and kept again, with the kept-alive lifetime as
    // its hard deadline (not the turn's hour). One taken from the warm pool carries the pool's
    // backstop in its label, which its maximum age (900 s) and a 5 s check interval past the
    // lifetime; drydock's own timer holds it to the lifetime (`sandbox/tests/reconcile.rs`).
    let kept = containers_of(&id);
    assert_eq!(kept.len(), 1);
    let out = std::process::Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{index .Config.Labels \"drydock.deadline\"}} {{index .Config.Labels \"drydock.pool\"}}",
            &kept[0],
        ])
        .output()
        .unwrap();
    let labels = String::from_utf8_lossy(&out.stdout);
    let (deadline, pool) = labels.trim_end_matches('\n').split_once(' ').unwrap();
    let lifetime = deadline.parse::<i64>().unwrap() - chrono_now_ms() / 1000;
    let most = if pool.is_empty() { 7200 } else { 7200 + 905 };
    assert!(
        (7000..=most).contains(&lifetime),
        "deadline in {lifetime} s"
    );
    let resp = env.post(&format!("/api/tasks/{id}/sandbox/stop")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(containers_of(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_mid_turn_run_next_in_order_and_each_counts_once() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let id = env
        .submit("sleep 4; echo one >> order.txt; echo 'turn one'", json!({}))
        .await;
    env.wait_for(&id, "running", |t| t["status"] == "running")
        .await;
    for prompt in [
        "echo two >> order.txt; echo 'turn two'",
        "echo three >> order.txt; echo 'turn three'",
    ] {
        let (status, body) = follow_up(&env, &id, prompt).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let task = wait_turn(&env, &id, 3).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let branch = task["branch"].as_str().unwrap();
    assert_eq!(show(&env, branch, "order.txt"), "one\ntwo\nthree\n");
    assert_eq!(commits_on(&env, branch).len(), 3);
    let turns: Vec<(String, Option<i64>)> = messages(&env, &id)
        .await
        .into_iter()
        .map(|(role, turn, _)| (role, turn))
        .collect();
    assert_eq!(
        turns,
        [
            ("user".to_owned(), Some(1)),
            ("agent".to_owned(), Some(1)),
            ("user".to_owned(), Some(2)),
            ("agent".to_owned(), Some(2)),
            ("user".to_owned(), Some(3)),
            ("agent".to_owned(), Some(3)),
        ]
    );
    assert_eq!(quota_used(&env).await, 3);
    assert!(containers_of(&id).is_empty(), "no keep-alive: removed");

    // Bad follow-ups are refused and cost nothing.
    let (status, body) = follow_up(&env, &id, "   ").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let bob = env.app.sign_in("bob").await;
    let resp = bob
        .post(env.app.url(&format!("/api/tasks/{id}/messages")))
        .json(&json!({ "prompt": "echo hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(quota_used(&env).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_are_refused_past_the_daily_quota() {
    let env = TaskEnv::start(TestDb::sqlite().await, &["--max-tasks-per-day", "2"]).await;
    let id = env.submit("echo hi > hi.txt", json!({})).await;
    wait_turn(&env, &id, 1).await;
    let (status, _) = follow_up(&env, &id, "echo again >> hi.txt").await;
    assert_eq!(status, StatusCode::CREATED);
    wait_turn(&env, &id, 2).await;
    let (status, body) = follow_up(&env, &id, "echo more >> hi.txt").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let asked = messages(&env, &id)
        .await
        .into_iter()
        .filter(|(role, _, _)| role == "user")
        .count();
    assert_eq!(asked, 2, "the refused message is not stored");
}

/// Waits until server `instance` has a warm sandbox, and answers its id.
async fn wait_warm(instance: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(id) = warm_sandboxes(instance).into_iter().next() {
            return id;
        }
        assert!(std::time::Instant::now() < deadline, "no warm sandbox");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_adopts_kept_sandboxes_and_removes_the_rest() {
    let db = TestDb::sqlite().await;
    let url = db.url.clone();
    let env = TaskEnv::start(db, &["--instance-id", "keep-test"]).await;
    // The kept task takes the warm sandbox (which carries no task label: the database links it).
    let warm = wait_warm("keep-test").await;
    let kept = env
        .submit("echo kept > kept.txt", json!({ "keep_alive": true }))
        .await;
    wait_turn(&env, &kept, 1).await;
    let other = env
        .submit("echo gone > gone.txt", json!({ "keep_alive": true }))
        .await;
    wait_turn(&env, &other, 1).await;
    assert_eq!(containers_of(&kept), vec![warm.clone()]);
    assert_eq!(containers_of(&other).len(), 1);
    let drydock_tests::App { server, db, gh } = env.app;
    server.stop().await.unwrap();
    assert_eq!(
        containers_of(&kept).len(),
        1,
        "a kept sandbox outlives a graceful stop"
    );
    assert!(
        warm_sandboxes("keep-test").is_empty(),
        "the warm pool is removed"
    );
    // A warm sandbox a crashed server of this instance left behind.
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &format!("drydock-pool-stale-{}", &kept[..8]),
            "--label",
            "drydock.instance=keep-test",
            "--label",
            "drydock.pool=0123456789abcdef",
            &drydock_tests::tasks::sandbox_image(),
            "sleep",
            "600",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stale = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // While the server is down, one sandbox disappears.
    let gone = containers_of(&other);
    let out = std::process::Command::new("docker")
        .args(["rm", "-f", &gone[0]])
        .output()
        .unwrap();
    assert!(out.status.success());

    let mut settings = gh.settings();
    settings.extend(["--instance-id".to_owned(), "keep-test".to_owned()]);
    settings.extend(["--sandbox-idle-timeout".to_owned(), "600".to_owned()]);
    let restarted = drydock_tests::TestServer::start_with(&url, settings).await;
    let adopted = db.store.get_task_for_runner(&kept).await.unwrap().unwrap();
    assert_eq!(adopted.container_id, Some(warm), "adopted: {adopted:?}");
    assert_eq!(containers_of(&kept).len(), 1);
    // The stale warm sandbox is gone, and the new process has its own.
    assert!(
        drydock_tests::tasks::docker_ps(&[
            "--filter",
            &format!("id={stale}"),
            "--format",
            "{{.ID}}"
        ])
        .is_empty(),
        "the stale warm sandbox is removed"
    );
    assert_ne!(wait_warm("keep-test").await, stale);
    let lost = db.store.get_task_for_runner(&other).await.unwrap().unwrap();
    assert!(lost.container_id.is_none(), "forgotten: {lost:?}");
    let events = db
        .store
        .list_task_events_after(&other, 0, 100)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.text == "Sandbox removed: it did not survive the server restart"),
        "{events:?}"
    );
    restarted.stop().await.unwrap();

    // A restart with a short idle limit reaps the adopted sandbox: nothing is left behind.
    db.store
        .keep_task_sandbox(&kept, chrono_now_ms() - 1)
        .await
        .unwrap();
    let mut settings = gh.settings();
    settings.extend(["--instance-id".to_owned(), "keep-test".to_owned()]);
    let restarted = drydock_tests::TestServer::start_with(&url, settings).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !containers_of(&kept).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired sandbox was never reaped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    restarted.stop().await.unwrap();
}

/// The agent's first turn writes a project whose dev script is a small HTTP server (serving a
/// page under the base path drydock gives it, showing the cookies it received, and echoing
/// bytes after an `Upgrade: echo` request) inside the sandbox.
const DEV_PROJECT: &str = r#"cat > package.json <<'JSON'
{"name": "demo", "version": "1.0.0", "private": true, "scripts": {"dev": "python3 serve.py"}}
JSON
cat > serve.py <<'PY'
import os, socketserver
base = os.environ["DRYDOCK_PREVIEW_BASE"]
page = open("index.html", "rb").read()
class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            line = self.rfile.readline()
            if not line:
                return
            method, path, _ = line.decode().split(" ", 2)
            headers = {}
            while True:
                header = self.rfile.readline().decode().strip()
                if not header:
                    break
                name, value = header.split(":", 1)
                headers[name.strip().lower()] = value.strip()
            if headers.get("upgrade") == "echo":
                self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
                self.wfile.flush()
                while True:
                    data = self.request.recv(65536)
                    if not data:
                        return
                    self.request.sendall(data)
            if path.startswith(base):
                status, body = "200 OK", page + ("cookies: [%s]" % headers.get("cookie", "")).encode()
            else:
                status, body = "404 Not Found", b"not under the base path"
            head = "HTTP/1.1 %s\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % (status, len(body))
            self.wfile.write(head.encode() + body)
            self.wfile.flush()
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
PY
echo '<h1>Preview of the demo</h1>' > index.html
echo 'project written'"#;

fn location(resp: &reqwest::Response) -> String {
    resp.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_shows_the_dev_server_to_its_owner_only() {
    // The public URL is http://127.0.0.1:PORT; previews are served as http://localhost:PORT.
    let env = TaskEnv::start(TestDb::sqlite().await, &["--preview-host", "localhost"]).await;
    let id = env
        .submit(
            DEV_PROJECT,
            json!({ "keep_alive": true, "install_deps": true }),
        )
        .await;
    let task = env
        .wait_for(&id, "a preview", |t| t["preview_url"].is_string())
        .await;
    let preview = task["preview_url"].as_str().unwrap();
    assert_eq!(preview, format!("/tasks/{id}/preview/"));
    // The preview is recorded, then said in the log.
    for _ in 0..50 {
        if env
            .log(&id)
            .await
            .iter()
            .any(|l| l.starts_with("info: Preview ready: "))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        env.log(&id)
            .await
            .iter()
            .any(|l| l.starts_with("info: Preview ready: ")),
        "{:#?}",
        env.log(&id).await
    );

    // The owner is sent to the preview host with a hand-off, which becomes a cookie there.
    let (alice, jar) = env.app.sign_in_with_jar("alice").await;
    let resp = alice.get(env.app.url(preview)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let handoff = location(&resp);
    let port = env.app.server.addr.port();
    let preview_origin = format!("http://localhost:{port}");
    assert!(
        handoff.starts_with(&format!("{preview_origin}{preview}?drydock_preview_token=")),
        "{handoff}"
    );
    let resp = alice.get(&handoff).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), *preview, "the token leaves the address");
    let page = alice
        .get(format!("{preview_origin}{preview}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("<h1>Preview of the demo</h1>"), "{page}");
    assert!(
        page.ends_with("cookies: []"),
        "drydock's cookies never reach the sandbox: {page}"
    );
    // Nothing else of drydock is served on the preview host.
    let resp = alice
        .get(format!("{preview_origin}/api/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // A WebSocket-style upgrade goes through to the dev server and bytes flow both ways.
    let cookie = jar
        .cookies(&format!("{preview_origin}{preview}").parse().unwrap())
        .unwrap();
    let mut socket = tokio::net::TcpStream::connect(env.app.server.addr)
        .await
        .unwrap();
    let request = format!(
        "GET {preview}live HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: Upgrade\r\nUpgrade: echo\r\nCookie: {}\r\n\r\n",
        cookie.to_str().unwrap()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(socket.read(&mut byte).await.unwrap(), 1, "{head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    socket.write_all(b"ping through the relay").await.unwrap();
    let mut echo = [0u8; 22];
    socket.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping through the relay");
    drop(socket);

    // Another user gets nothing, on either host.
    let bob = env.app.sign_in("bob").await;
    let resp = bob.get(env.app.url(preview)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = bob
        .get(format!("{preview_origin}{preview}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let forged = handoff.replace("drydock_preview_token=", "drydock_preview_token=x");
    let resp = bob.get(&forged).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // No port of the sandbox is published on the host.
    let container = &containers_of(&id)[0];
    let out = std::process::Command::new("docker")
        .args(["port", container])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());

    // Ending the sandbox ends the preview.
    let resp = env.post(&format!("/api/tasks/{id}/sandbox/stop")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(env.task(&id).await["preview_url"].is_null());
    let resp = alice
        .get(format!("{preview_origin}{preview}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_turn_drops_the_follow_ups_waiting_behind_it() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let id = env.submit("echo started; sleep 600", json!({})).await;
    let started = std::time::Instant::now();
    while !env.log(&id).await.iter().any(|l| l == "agent: started") {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the agent never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (status, _) = follow_up(&env, &id, "echo never > never.txt").await;
    assert_eq!(status, StatusCode::CREATED);
    let resp = env.post(&format!("/api/tasks/{id}/stop")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "stopped", "{task}");
    // The stop holds: the waiting follow-up is marked as not run, and no turn starts for it.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let task = env.task(&id).await;
    assert_eq!(
        (task["status"].as_str(), task["turns"].as_i64()),
        (Some("stopped"), Some(1))
    );
    let conversation = messages(&env, &id).await;
    assert_eq!(
        conversation
            .last()
            .map(|(role, turn, text)| (role.as_str(), *turn, text.as_str())),
        Some(("user", Some(0), "echo never > never.txt"))
    );
    // A new follow-up runs on its own.
    let (status, _) = follow_up(&env, &id, "echo later > later.txt; echo 'later ran'").await;
    assert_eq!(status, StatusCode::CREATED);
    let task = wait_turn(&env, &id, 2).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let log = env.log(&id).await;
    assert!(log.iter().any(|l| l == "agent: later ran"), "{log:#?}");
    assert!(!log.iter().any(|l| l.contains("never")), "{log:#?}");
}
