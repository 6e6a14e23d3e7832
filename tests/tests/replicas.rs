//! Several drydock replicas: real server processes (`drydock-replica`, the same `drydock::run`
//! as `drydock serve`) on one test PostgreSQL database, with the scripted agent on the real
//! Docker daemon; and the refusal of a second server on one SQLite file.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drydock_tests::replicas::{Cluster, Replica, RunningAgent};
use drydock_tests::sse::{SseEvent, next_event};
use drydock_tests::tasks::{ACME_KEY, SCRIPTED_AGENT, containers_of};
use drydock_tests::{GithubStandIn, TestDb};
use reqwest::StatusCode;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_drydock-replica");

/// Docker's record of the sandboxes started for tasks, followed live from before the first task
/// (the daemon's own event history is a short ring buffer shared with every other user of it): a
/// container created with a task's label, or a warm-pool sandbox renamed after the task that
/// claimed it.
struct Creations(Child);

impl Creations {
    fn follow() -> Self {
        let child = Command::new("docker")
            .args(["events", "--filter", "type=container"])
            .args(["--filter", "event=create", "--filter", "event=rename"])
            .args([
                "--format",
                "{{.Action}} {{index .Actor.Attributes \"drydock.task\"}} {{.Actor.Attributes.name}}",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The replicas start after this (well over a second), long after `docker events` has
        // subscribed.
        Self(child)
    }

    /// Sandboxes started per task so far (stops following).
    fn count(mut self) -> BTreeMap<String, usize> {
        // Every task has ended: its events were delivered long ago.
        let _ = self.0.kill();
        let out = std::mem::replace(&mut self.0, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        let mut counts = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut words = line.split(' ');
            let (action, label, name) = (
                words.next().unwrap_or_default(),
                words.next().unwrap_or_default(),
                words.next().unwrap_or_default(),
            );
            let task = match action {
                "create" if !label.is_empty() => label.to_owned(),
                // A claimed warm sandbox is named `drydock-<task id>-<suffix>`.
                "rename" if label.is_empty() => match name.strip_prefix("drydock-") {
                    Some(rest) if rest.len() > 36 && !rest.starts_with("pool-") => {
                        rest[..36].to_owned()
                    }
                    _ => continue,
                },
                _ => continue,
            };
            *counts.entry(task).or_insert(0) += 1;
        }
        counts
    }
}

impl Drop for Creations {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads SSE events into `seen` (seq, text) until `max` more were read or the stream ended;
/// answers the `end` event's data if it came.
async fn read_sse(
    mut resp: reqwest::Response,
    seen: &mut Vec<(i64, String)>,
    max: usize,
) -> Option<Value> {
    let mut buf = String::new();
    let mut read = 0;
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(120), resp.chunk())
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

/// Reads the task list's live stream until a status event says `task_id` ended; answers that
/// status (`None` when the stream ended first).
async fn final_status_of(mut resp: reqwest::Response, task_id: &str) -> Option<String> {
    let mut buf = String::new();
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            let Ok(change) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            if change["task_id"] == task_id
                && let Some(status) = change["status"].as_str()
                && !matches!(status, "queued" | "running")
            {
                return Some(status.to_owned());
            }
        }
        match tokio::time::timeout(Duration::from_secs(120), resp.chunk()).await {
            Ok(Ok(Some(chunk))) => buf.push_str(&String::from_utf8_lossy(&chunk)),
            _ => return None,
        }
    }
}

/// Reads SSE events into `seen` until one with text `needle` came; answers whether it did
/// (false when the stream ended first). The response is dropped: the connection closes.
async fn read_until(
    mut resp: reqwest::Response,
    seen: &mut Vec<(i64, String)>,
    needle: &str,
) -> bool {
    loop {
        let before = seen.len();
        let ended = read_sse_one(&mut resp, seen).await;
        if seen[before..].iter().any(|(_, t)| t == needle) {
            return true;
        }
        if ended {
            return false;
        }
    }
}

/// Reads one SSE event block into `seen`; answers true when the stream ended or sent `end`.
async fn read_sse_one(resp: &mut reqwest::Response, seen: &mut Vec<(i64, String)>) -> bool {
    let mut buf = String::new();
    loop {
        if let Some(SseEvent { id, event, data }) = next_event(&mut buf) {
            if event.as_deref() == Some("end") {
                return true;
            }
            if let Some(id) = id {
                let value: Value = serde_json::from_str(&data).unwrap();
                seen.push((id, value["text"].as_str().unwrap_or("").to_owned()));
            }
            if buf.is_empty() {
                return false;
            }
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(120), resp.chunk()).await {
            Ok(Ok(Some(chunk))) => buf.push_str(&String::from_utf8_lossy(&chunk)),
            _ => return true,
        }
    }
}

/// 20 tasks submitted through both replicas each run exactly once (one sandbox each, one turn,
/// their line printed once); a viewer on the replica that does not run a task sees every line
/// of it, in order, across a reconnect in the middle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_through_two_replicas_run_once_and_are_followed_from_either() {
    let creations = Creations::follow();
    let c = Cluster::start(
        BIN,
        2,
        &[
            "--max-concurrent-tasks",
            "6",
            "--max-concurrent-tasks-per-user",
            "6",
            "--max-tasks-per-day",
            "100",
        ],
    )
    .await;

    // A task to watch from the replica that does not run it.
    let watched = c
        .submit(
            c.a(),
            "for i in $(seq 1 60); do echo watched-$i; sleep 0.1; done",
        )
        .await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let via = if i % 2 == 0 { c.a() } else { c.b() };
        ids.push(c.submit(via, &format!("echo only-once-{i}")).await);
    }

    let running = c
        .wait_row(&watched, "running", |t| {
            t.status == "running" && t.runner_id.is_some()
        })
        .await;
    let owner = running.runner_id.clone().unwrap();
    let viewer = c.other(&owner);
    // The task list's live stream on the other replica hears how the task ended.
    let statuses = c
        .alice
        .get(viewer.url("/api/tasks/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(statuses.status(), StatusCode::OK);
    let watched_id = watched.clone();
    let status_end = tokio::spawn(async move { final_status_of(statuses, &watched_id).await });
    let mut seen: Vec<(i64, String)> = Vec::new();
    let resp = c
        .alice
        .get(viewer.url(&format!("/api/tasks/{watched}/events")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Read until some of the agent's lines came, then drop the connection mid-run.
    let first = read_until(resp, &mut seen, "watched-5").await;
    assert!(
        first,
        "the viewer on {} saw the task's first lines live",
        viewer.id
    );
    let last = seen.last().unwrap().0;
    let resp = c
        .alice
        .get(viewer.url(&format!("/api/tasks/{watched}/events")))
        .header("accept", "text/event-stream")
        .header("last-event-id", last.to_string())
        .send()
        .await
        .unwrap();
    let ended = read_sse(resp, &mut seen, usize::MAX).await;
    let ended = ended.expect("the stream on the other replica ends with an end event");
    assert_eq!(ended["status"], "succeeded", "{ended}");
    let seqs: Vec<i64> = seen.iter().map(|(s, _)| *s).collect();
    let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
    assert_eq!(seqs, expected, "every seq exactly once, in order");
    let lines: Vec<String> = seen
        .iter()
        .filter(|(_, t)| t.starts_with("watched-"))
        .map(|(_, t)| t.clone())
        .collect();
    let want: Vec<String> = (1..=60).map(|i| format!("watched-{i}")).collect();
    assert_eq!(
        lines, want,
        "every line of the task run by {owner}, in order"
    );
    let stored = c.log(&watched).await;
    assert_eq!(
        seen.len(),
        stored.len(),
        "the viewer saw exactly what is stored; the last it saw: {:?}; the last stored: {:?}",
        &seen[seen.len().saturating_sub(3)..],
        &stored[stored.len().saturating_sub(3)..]
    );
    let listed = status_end.await.unwrap();
    assert_eq!(
        listed.as_deref(),
        Some("succeeded"),
        "the task list on {} heard the end of a task run by {owner}",
        viewer.id
    );

    // Every task ran exactly once.
    let mut ran_on: BTreeMap<String, usize> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let task = c.wait_ended(id).await;
        assert_eq!(task.status, "succeeded", "{task:?}");
        assert_eq!(task.turns, 1, "one turn: {task:?}");
        let log = c.log(id).await;
        let printed = log
            .iter()
            .filter(|t| **t == format!("only-once-{i}"))
            .count();
        assert_eq!(printed, 1, "the agent ran once: {log:?}");
        *ran_on.entry(task.runner_id.clone().unwrap()).or_insert(0) += 1;
    }
    let creations = creations.count();
    for id in ids.iter().chain([&watched]) {
        assert_eq!(
            creations.get(id),
            Some(&1),
            "one sandbox for task {id}: {creations:?}"
        );
    }
    eprintln!("tasks per replica: {ran_on:?}");
    for id in &ids {
        assert!(containers_of(id).is_empty(), "no sandbox left for {id}");
    }
}

/// A task that prints 3,000 lines as fast as it can (one write each) is followed line for line
/// by a viewer on the other replica, every seq once, in order, and the last line reaches that
/// viewer live, while the task still runs (not only from the database when it ends), although
/// the notices that wake that viewer are coalesced while appends keep coming. (That the last
/// notice of a burst is never left out is pinned down in `store.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_printer_is_followed_to_its_last_line_from_the_other_replica() {
    let c = Cluster::start(BIN, 2, &[]).await;
    let id = c
        .submit(
            c.a(),
            "sleep 3; for i in $(seq 1 3000); do echo \"n $i\"; done; sleep 10; echo done > done.txt",
        )
        .await;
    let running = c
        .wait_row(&id, "running", |t| {
            t.status == "running" && t.runner_id.is_some()
        })
        .await;
    let owner = running.runner_id.clone().unwrap();
    let viewer = c.other(&owner);
    let resp = c
        .alice
        .get(viewer.url(&format!("/api/tasks/{id}/events")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut seen: Vec<(i64, String)> = Vec::new();
    assert!(
        read_until(resp, &mut seen, "n 3000").await,
        "the viewer on {} saw the last line",
        viewer.id
    );
    assert_eq!(
        c.row(&id).await.status,
        "running",
        "the last line reached the viewer on {} while the task still ran (not only when it \
         ended)",
        viewer.id
    );
    let seqs: Vec<i64> = seen.iter().map(|(s, _)| *s).collect();
    let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
    assert_eq!(seqs, expected, "every seq exactly once, in order");
    let lines: Vec<&str> = seen
        .iter()
        .filter(|(_, t)| t.starts_with("n "))
        .map(|(_, t)| t.as_str())
        .collect();
    let want: Vec<String> = (1..=3000).map(|i| format!("n {i}")).collect();
    assert_eq!(
        lines, want,
        "every line of the task run by {owner}, in order"
    );
    let task = c.wait_ended(&id).await;
    assert_eq!(task.status, "succeeded", "{task:?}");
}

/// kill -9 of the replica running a task whose sandbox is gone too: the other replica adopts it
/// once its lease has run out, ends it failed with a reason naming the lost replica, leaves no
/// sandbox, and keeps the log written before the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_task_is_adopted_by_the_other() {
    let mut c = Cluster::start(BIN, 2, &["--lease-secs", "6", "--admins", "alice"]).await;
    let id = c
        .submit(c.b(), "echo before-the-kill; sleep 600; echo never-printed")
        .await;
    let running = c
        .wait_row(&id, "running with a sandbox", |t| {
            t.status == "running" && t.container_id.is_some()
        })
        .await;
    let owner = running.runner_id.clone().unwrap();
    let survivor = c.other(&owner).id.clone();
    let started = Instant::now();
    loop {
        if c.log(&id).await.iter().any(|t| t == "before-the-kill") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{:?}",
            c.log(&id).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(containers_of(&id).len(), 1);
    // The operator page of either replica lists both, alive, and which one runs the turn.
    let replicas = replica_rows(&c, &survivor).await;
    assert_eq!(
        replicas.get(&owner),
        Some(&("alive".to_owned(), 1)),
        "{replicas:?}"
    );
    assert_eq!(
        replicas.get(&survivor),
        Some(&("alive".to_owned(), 0)),
        "{replicas:?}"
    );

    c.kill_9(&owner);
    let killed_at = Instant::now();
    // The sandbox goes too (its host lost with the replica): nothing is left to follow.
    remove_containers(&containers_of(&id));
    let ended = c.wait_ended(&id).await;
    let adopted_after = killed_at.elapsed();
    eprintln!("adopted {adopted_after:?} after the kill (lease 6 s)");
    assert_eq!(ended.status, "failed", "{ended:?}");
    let reason = ended.status_reason.clone().unwrap_or_default();
    assert!(
        reason.contains(&format!("replica {owner} was lost"))
            && reason.contains(&survivor)
            && reason.contains("its sandbox is gone"),
        "the reason names the lost replica, the adopter and why: {reason}"
    );
    assert_eq!(ended.runner_id.as_deref(), Some(survivor.as_str()));
    assert!(containers_of(&id).is_empty(), "no orphan sandbox");
    let log = c.log(&id).await;
    assert!(
        log.iter().any(|t| t == "before-the-kill"),
        "the log up to the kill is kept: {log:?}"
    );
    assert!(!log.iter().any(|t| t == "never-printed"), "{log:?}");
    assert_eq!(
        log.iter()
            .filter(|t| t.contains("was lost while running"))
            .count(),
        1,
        "adopted once: {log:?}"
    );
    // The survivor's operator page shows the killed replica lost (once a whole lease period
    // passed without its heartbeat), owning nothing now.
    let replicas = loop {
        let replicas = replica_rows(&c, &survivor).await;
        if replicas.get(&owner).is_some_and(|r| r.0 == "lost")
            || killed_at.elapsed() > Duration::from_secs(60)
        {
            break replicas;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        replicas.get(&owner),
        Some(&("lost".to_owned(), 0)),
        "{replicas:?}"
    );
    assert_eq!(
        replicas.get(&survivor).map(|r| r.0.as_str()),
        Some("alive"),
        "{replicas:?}"
    );
    // The survivor goes on running new tasks.
    let next = c.submit(c.replica(&survivor), "echo after-the-kill").await;
    let next = c.wait_ended(&next).await;
    assert_eq!(next.status, "succeeded", "{next:?}");
    assert_eq!(next.runner_id.as_deref(), Some(survivor.as_str()));
}

/// `docker rm -f` of these containers.
fn remove_containers(ids: &[String]) {
    if !ids.is_empty() {
        let out = Command::new("docker")
            .args(["rm", "-f"])
            .args(ids)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

/// kill -9 of the replica running an agent that prints, waits, prints more and changes a file:
/// the other replica adopts the turn, follows the agent in the same sandbox from where the log
/// stops, and the task succeeds: every line before and after the kill exactly once and in
/// order, no secret, the branch pushed, one sandbox created, none left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_agent_is_followed_by_the_other_and_the_turn_succeeds() {
    let creations = Creations::follow();
    let mut c = Cluster::start(BIN, 2, &["--lease-secs", "6"]).await;
    let script = "for i in 1 2 3; do echo before-$i; done; echo \"secret-before $ACME_API_KEY\"; \
                  echo err-before >&2; printf 'half-\\033[1m'; \
                  while [ ! -f /tmp/go-on ]; do sleep 0.2; done; \
                  printf 'line\\033[0m\\n'; printf 'progress-10%%\\rprogress-100%%\\n'; \
                  for i in 1 2 3; do echo after-$i; done; \
                  echo \"secret-after $ACME_API_KEY\"; echo err-after >&2; \
                  echo adopted > adopted.txt";
    let id = c.submit(c.a(), script).await;
    let RunningAgent {
        owner,
        survivor,
        sandbox: container,
    } = c.running_agent(&id, "before-3").await;
    c.wait_for_line(&id, "err-before").await;

    c.kill_9(&owner);
    let killed_at = Instant::now();
    // The agent goes on once its replica is gone: what it prints now nobody reads live.
    let out = Command::new("docker")
        .args(["exec", &container, "touch", "/tmp/go-on"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ended = c.wait_ended(&id).await;
    eprintln!(
        "reattached and ended {:?} after the kill (lease 6 s)",
        killed_at.elapsed()
    );
    assert_eq!(ended.status, "succeeded", "{ended:?}");
    assert_eq!(ended.runner_id.as_deref(), Some(survivor.as_str()));

    let log = c.log(&id).await;
    // Each stream's lines in order, each once (the order of stdout lines relative to stderr
    // lines is not kept: they travel separate pipes).
    let stream = |prefixes: &[&str]| -> Vec<String> {
        log.iter()
            .filter(|t| prefixes.iter().any(|p| t.starts_with(p)))
            .cloned()
            .collect()
    };
    let redacted = |line: &str| format!("{line} [REDACTED:secret]");
    assert_eq!(
        stream(&["before-", "after-", "secret-", "half-", "progress-"]),
        [
            "before-1",
            "before-2",
            "before-3",
            &redacted("secret-before"),
            // The line cut by the kill is whole, once, rendered as live output is (its escapes
            // taken out; a `\r` rewrite shown as a terminal shows it).
            "half-line",
            "progress-100%",
            "after-1",
            "after-2",
            "after-3",
            &redacted("secret-after"),
        ],
        "{log:?}"
    );
    assert_eq!(stream(&["err-"]), ["err-before", "err-after"], "{log:?}");
    assert!(
        !log.iter()
            .any(|t| t.contains(ACME_KEY) || t.contains(&ACME_KEY[..20])),
        "no secret in the log: {log:?}"
    );
    assert!(
        log.iter()
            .any(|t| t.contains(&format!("Replica {owner} was lost"))),
        "{log:?}"
    );
    // The work of the whole run was pushed.
    let branch = ended.branch.clone().unwrap();
    let pushed = Command::new("git")
        .arg("--git-dir")
        .arg(c.gh.repo_path("alice", "demo"))
        .args(["show", &format!("{branch}:adopted.txt")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&pushed.stdout),
        "adopted\n",
        "{pushed:?}"
    );
    assert!(containers_of(&id).is_empty(), "no orphan sandbox");
    drop(c);
    let created = creations.count();
    assert_eq!(
        created.get(&id),
        Some(&1),
        "one sandbox for the task: {created:?}"
    );
}

/// The model stand-in of the gateway test: records the key each call carried and answers one
/// Anthropic message.
async fn start_model_stand_in() -> (std::sync::Arc<std::sync::Mutex<Vec<String>>>, String) {
    use axum::http::HeaderMap;
    let keys = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = keys.clone();
    let app = axum::Router::new().route(
        "/v1/messages",
        axum::routing::post(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let key = headers
                    .get("x-api-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().unwrap().push(key);
                axum::Json(json!({
                    "id": "msg_1", "type": "message", "role": "assistant",
                    "model": "claude-sonnet-4-5",
                    "content": [{ "type": "text", "text": "adopted-answer" }],
                    "stop_reason": "end_turn",
                    "usage": { "input_tokens": 3, "output_tokens": 2 }
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (keys, url)
}

/// kill -9 of the replica running a task under a network policy whose agent calls its model
/// through drydock's gateway with a placeholder key: the survivor follows the agent and grants
/// the placeholder the agent already holds, so the agent's call after the kill reaches the model
/// with the user's real key, which never enters the sandbox or the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_gateway_task_keeps_its_placeholder_key_on_the_survivor() {
    const REAL_KEY: &str = "sk-ant-api03-replica-gateway-Zq8Xw3Lm5Nv7Bp2Rt4Yc6Hd9Kf1Gs0Ja";
    let (keys, model) = start_model_stand_in().await;
    let agents = format!(
        r#"{SCRIPTED_AGENT}
[[agents]]
id = "own-endpoint"
name = "Agent with its own model endpoint"
argv = ["sh", "-c", "eval \"${{1##*## New request}}\"", "scripted-agent", "{{prompt}}"]
parser = "text"
keys = [{{ provider = "acme-llm", env = ["ANTHROPIC_API_KEY"], base_url_env = "ANTHROPIC_BASE_URL" }}]
models = [{{ id = "claude-sonnet-4-5", name = "Sonnet at Acme" }}]
base_urls = {{ acme-llm = "{model}" }}
"#
    );
    let mut c = Cluster::start_with_agents(
        BIN,
        2,
        &["--lease-secs", "6", "--network-policy", "gateway"],
        &agents,
    )
    .await;
    let resp = c
        .alice
        .put(c.a().url("/api/keys/acme-llm"))
        .json(&json!({ "key": REAL_KEY }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let script = r#"echo waiting; while [ ! -f /tmp/go-on ]; do sleep 0.2; done
curl -sS --max-time 30 "$ANTHROPIC_BASE_URL/v1/messages" -H "x-api-key: $ANTHROPIC_API_KEY" -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' -d '{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
rc=$?; echo; echo "curl exit $rc"; echo adopted > adopted.txt"#;
    let id = c.submit_with(c.a(), script, "own-endpoint").await;
    let RunningAgent {
        owner,
        survivor,
        sandbox: container,
    } = c.running_agent(&id, "waiting").await;

    c.kill_9(&owner);
    // The agent calls its model once the survivor serves the sandbox's network again (a call
    // in between would find no relay: the old one ended with the lost replica).
    let started = Instant::now();
    loop {
        let log = c.log(&id).await;
        let adopted = log
            .iter()
            .position(|t| t.contains("follows the agent in its sandbox"));
        if adopted.is_some_and(|at| log[at..].iter().any(|t| t.starts_with("Network policy:"))) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never adopted: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = Command::new("docker")
        .args(["exec", &container, "touch", "/tmp/go-on"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ended = c.wait_ended(&id).await;
    let log = c.log(&id).await;
    assert_eq!(ended.status, "succeeded", "{ended:?}\n{log:?}");
    assert_eq!(ended.runner_id.as_deref(), Some(survivor.as_str()));
    assert!(
        log.iter().any(|t| t.contains("adopted-answer")),
        "the model's answer reached the agent: {log:?}"
    );
    assert!(log.iter().any(|t| t == "curl exit 0"), "{log:?}");
    // The call made after the kill carried the real key to the model, and only there.
    assert_eq!(*keys.lock().unwrap(), vec![REAL_KEY.to_owned()]);
    assert!(
        !log.iter()
            .any(|t| t.contains(REAL_KEY) || t.contains(&REAL_KEY[..24])),
        "{log:?}"
    );
    assert!(containers_of(&id).is_empty(), "no orphan sandbox");
}

/// A kept-alive sandbox of a killed replica is taken over by the survivor: a follow-up runs in
/// that same container there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_kept_sandbox_serves_the_follow_up_on_the_survivor() {
    let mut c = Cluster::start(BIN, 2, &["--lease-secs", "6"]).await;
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let resp = c
        .alice
        .post(c.a().url("/api/tasks"))
        .json(
            &json!({ "repo": "alice/demo", "agent": "scripted", "create_pr": false,
                       "keep_alive": true,
                       "prompt": format!("echo {marker} > /tmp/left-by-turn-one; echo one") }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = c
        .wait_row(&id, "kept", |t| {
            t.status == "succeeded" && t.container_id.is_some()
        })
        .await;
    let keeper = first.runner_id.clone().unwrap();
    let survivor = c.other(&keeper).id.clone();
    let container = first.container_id.clone().unwrap();
    c.kill_9(&keeper);
    let taken = c
        .wait_row(&id, "taken over", |t| {
            t.runner_id.as_deref() == Some(survivor.as_str())
        })
        .await;
    assert_eq!(taken.container_id.as_deref(), Some(container.as_str()));
    let resp = c
        .alice
        .post(
            c.replica(&survivor)
                .url(&format!("/api/tasks/{id}/messages")),
        )
        .json(&json!({ "prompt": "echo found-$(cat /tmp/left-by-turn-one)" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let second = c
        .wait_row(&id, "the second turn", |t| {
            t.turns == 2 && !matches!(t.status.as_str(), "queued" | "running")
        })
        .await;
    assert_eq!(second.status, "succeeded", "{second:?}");
    assert_eq!(second.runner_id.as_deref(), Some(survivor.as_str()));
    let log = c.log(&id).await;
    assert!(
        log.iter().any(|t| *t == format!("found-{marker}")),
        "the follow-up ran in the first turn's container: {log:?}"
    );
    assert_eq!(second.container_id.as_deref(), Some(container.as_str()));
    assert_eq!(containers_of(&id), vec![container.clone()]);
    // Its new owner removes it when asked.
    let resp = c
        .alice
        .post(
            c.replica(&survivor)
                .url(&format!("/api/tasks/{id}/sandbox/stop")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(containers_of(&id).is_empty());
}

/// The replica table of `via`'s operator page: instance id → (state, running turns).
async fn replica_rows(c: &Cluster, via: &str) -> std::collections::HashMap<String, (String, i64)> {
    let resp = c
        .alice
        .get(c.replica(via).url("/admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    let mut rows = std::collections::HashMap::new();
    for row in html.split("<tr data-replica=\"").skip(1) {
        let id = row.split('"').next().unwrap().to_owned();
        let state = row
            .split("data-state=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_owned();
        // Cells: instance, state, last heartbeat, running, kept.
        let cells: Vec<&str> = row
            .split("<td>")
            .skip(1)
            .map(|c| c.split("</td>").next().unwrap())
            .collect();
        rows.insert(id, (state, cells[3].trim().parse().unwrap()));
    }
    rows
}

/// Stop, follow-up and sandbox stop sent to the replica that does not run the task reach the
/// one that does, through the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_follow_up_and_sandbox_stop_reach_the_owning_replica() {
    let c = Cluster::start(BIN, 2, &[]).await;
    let id = c.submit(c.a(), "echo started; sleep 600").await;
    let running = c
        .wait_row(&id, "running with a sandbox", |t| {
            t.status == "running" && t.container_id.is_some()
        })
        .await;
    let owner = running.runner_id.clone().unwrap();
    let other = c.other(&owner);
    let resp = c
        .alice
        .post(other.url(&format!("/api/tasks/{id}/stop")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["status"], "stopped",
        "stopped by the time the answer came: {body}"
    );
    assert!(containers_of(&id).is_empty(), "its sandbox is gone");

    // A kept sandbox on one replica, a follow-up and a sandbox stop through the other.
    let kept = c
        .alice
        .post(c.a().url("/api/tasks"))
        .json(
            &json!({ "repo": "alice/demo", "prompt": "echo turn-one > one.txt", "agent": "scripted",
                       "create_pr": false, "keep_alive": true }),
        )
        .send()
        .await
        .unwrap();
    let kept: Value = kept.json().await.unwrap();
    let kept = kept["id"].as_str().unwrap().to_owned();
    let first = c
        .wait_row(&kept, "kept", |t| {
            t.status == "succeeded" && t.container_id.is_some()
        })
        .await;
    let keeper = first.runner_id.clone().unwrap();
    let other = c.other(&keeper);
    let resp = c
        .alice
        .post(other.url(&format!("/api/tasks/{kept}/messages")))
        .json(&json!({ "prompt": "cat one.txt; echo turn-two" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let second = c
        .wait_row(&kept, "the second turn", |t| {
            t.turns == 2 && t.status == "succeeded"
        })
        .await;
    assert_eq!(
        second.runner_id.as_deref(),
        Some(keeper.as_str()),
        "the follow-up ran where its sandbox lives"
    );
    let log = c.log(&kept).await;
    assert!(
        log.iter().any(|t| t == "turn-one"),
        "the kept sandbox was used: {log:?}"
    );
    assert_eq!(containers_of(&kept).len(), 1);
    let resp = c
        .alice
        .post(other.url(&format!("/api/tasks/{kept}/sandbox/stop")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    assert!(
        containers_of(&kept).is_empty(),
        "the owner removed its sandbox"
    );
    assert!(c.row(&kept).await.container_id.is_none());
}

/// A healthy server process (instance `id`) on a new SQLite file `shared.db` in a temporary
/// directory: its GitHub stand-in, the directory, the database URL and the server.
async fn server_on_a_sqlite_file(id: &str) -> (GithubStandIn, tempfile::TempDir, String, Replica) {
    let gh = GithubStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let agents = dir.path().join("agents.toml");
    std::fs::write(&agents, SCRIPTED_AGENT).unwrap();
    let server = Replica::start(BIN, id, &url, &gh, agents.to_str().unwrap(), &[]);
    server.wait_healthy().await;
    (gh, dir, url, server)
}

/// `drydock migrate` on `url`, with a data directory of its own.
fn migrate_command(url: &str, data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["--database-url", url])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("migrate");
    cmd
}

/// SQLite has one replica: a second server on the same database file is refused at start-up
/// with a message that says why and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_one_sqlite_file_is_refused() {
    let (_gh, dir, url, first) = server_on_a_sqlite_file("sqlite-first").await;
    let mut second = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args([
            "--addr",
            "127.0.0.1:0",
            "--database-url",
            &url,
            "--sandbox-image-build",
            "off",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("second"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The process binds its port first; then it either serves or exits refusing.
    let mut said = String::new();
    BufReader::new(second.stdout.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    let addr = said.trim().strip_prefix("listening on ").map(str::to_owned);
    loop {
        if second.try_wait().unwrap().is_some() {
            break;
        }
        if let Some(addr) = &addr
            && let Ok(resp) = reqwest::get(format!("http://{addr}/healthz")).await
            && resp.status().is_success()
        {
            second.kill().unwrap();
            second.wait().unwrap();
            panic!("a second server started on the same SQLite file");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = second.wait_with_output().unwrap();
    assert!(!second.status.success(), "the second server must not start");
    // The first one still serves.
    let resp = reqwest::get(first.url("/healthz")).await.unwrap();
    assert!(resp.status().is_success());
}

/// `drydock migrate` on a SQLite database a server is running on is refused, with a message that
/// says to stop the server first (a running server's open connections would go on reading the
/// schema they started with); the server keeps serving, and once it has stopped the migration runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_a_sqlite_database_a_server_runs_on_waits_for_the_server_to_stop() {
    let (_gh, dir, url, mut server) = server_on_a_sqlite_file("sqlite-serving").await;
    let migrate = || {
        migrate_command(&url, &dir.path().join("migrating"))
            .output()
            .unwrap()
    };
    let refused = migrate();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "migrate ran while a server runs on the database: {said}"
    );
    assert!(said.contains("stop it before migrating"), "{said}");
    // The same database under another name is the same database.
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(dir.path().join("shared.db"), &link).unwrap();
    let through_link = migrate_command(
        &format!("sqlite://{}", link.display()),
        &dir.path().join("migrating"),
    )
    .output()
    .unwrap();
    assert!(
        !through_link.status.success(),
        "migrate ran through a symbolic link to a database a server runs on: {}",
        String::from_utf8_lossy(&through_link.stderr)
    );
    let resp = reqwest::get(server.url("/healthz")).await.unwrap();
    assert!(resp.status().is_success(), "the server still serves");

    server.stop();
    let ran = migrate();
    assert!(
        ran.status.success(),
        "migrate after the server stopped: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
}

/// A `drydock migrate` on a new SQLite database in `dir`, held up by another connection's write
/// transaction, once it holds the database's server lock: the database URL, that connection
/// (ROLLBACK it to let the migration go on) and the migrate process.
async fn a_migration_held_up(
    dir: &std::path::Path,
) -> (String, sqlx::SqliteConnection, std::process::Child) {
    let url = format!("sqlite://{}", dir.join("shared.db").display());
    let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
        .unwrap()
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let mut other = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let migrating = migrate_command(&url, &dir.join("migrating"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = dir.join("shared.db.serve-lock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::File::open(&lock)
        .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
    {
        assert!(
            Instant::now() < deadline,
            "the migration never took the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (url, other, migrating)
}

/// Lets a held-up migration go on; asserts that it then succeeds.
async fn let_the_migration_finish(
    mut other: sqlx::SqliteConnection,
    migrating: std::process::Child,
) {
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    <sqlx::SqliteConnection as sqlx::Connection>::close(other)
        .await
        .unwrap();
    let migrated = migrating.wait_with_output().unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
}

/// A server started while `drydock migrate` runs on its SQLite database (two services started
/// together) waits for the migration to finish, saying so in its log, then serves (of two such
/// servers, one serves and the other is refused); told to stop while it waits, it stops there,
/// cleanly. Each migration is held up by another connection's
/// write transaction until the server waits (SQLite lets it wait 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_while_a_migration_runs_waits_for_it() {
    let gh = GithubStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agents = dir.path().join("agents.toml");
    std::fs::write(&agents, SCRIPTED_AGENT).unwrap();
    let agents = agents.to_str().unwrap();
    let waiting = "waiting for a `drydock migrate`";

    let first = tempfile::tempdir().unwrap();
    let (url, other, migrating) = a_migration_held_up(first.path()).await;
    let mut stopped = Replica::start(BIN, "stopped-waiting", &url, &gh, agents, &[]);
    let waited = stopped.wait_for_log(waiting, Duration::from_secs(30)).await;
    stopped.terminate();
    let status = stopped.exited_within(Duration::from_secs(60)).await;
    assert!(
        waited,
        "the server did not wait for the migration: {status:?}"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "a server stopped while it waited did not exit cleanly: {status:?}"
    );
    let_the_migration_finish(other, migrating).await;

    let second = tempfile::tempdir().unwrap();
    let (url, other, migrating) = a_migration_held_up(second.path()).await;
    let mut servers = [
        Replica::start(BIN, "after-migrate-a", &url, &gh, agents, &[]),
        Replica::start(BIN, "after-migrate-b", &url, &gh, agents, &[]),
    ];
    for server in &mut servers {
        let waited = server.wait_for_log(waiting, Duration::from_secs(30)).await;
        let id = server.id.clone();
        assert!(
            waited,
            "{id} did not wait for the migration (exit status: {:?})",
            server.exited_within(Duration::from_millis(200)).await
        );
    }
    let_the_migration_finish(other, migrating).await;
    // Then one of the two serves, and the other is refused as a second server (it does not wait
    // on the first server for ever).
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        let mut exited = None;
        for (i, server) in servers.iter_mut().enumerate() {
            if let Some(status) = server.exited_within(Duration::from_millis(100)).await {
                exited = Some((i, status));
            }
        }
        if let Some(found) = exited {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "neither server was refused after the migration: both still wait"
        );
    };
    assert!(
        !refused.1.success(),
        "the second server exited: {:?}",
        refused.1
    );
    servers[1 - refused.0].wait_healthy().await;
}

/// Two replicas with one instance id on one PostgreSQL would share a heartbeat row (neither's
/// tasks ever adopted) and reconcile each other's sandboxes away: the second is refused, and the
/// first keeps serving with its warm sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_with_the_same_instance_id_is_refused() {
    let gh = GithubStandIn::start().await;
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let agents = dir.path().join("agents.toml");
    std::fs::write(&agents, SCRIPTED_AGENT).unwrap();
    let id = format!("twin-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let lease = ["--lease-secs", "4"];
    let first = Replica::start(BIN, &id, &db.url, &gh, agents.to_str().unwrap(), &lease);
    first.wait_healthy().await;
    let started = Instant::now();
    let warm_before = loop {
        let warm = drydock_tests::tasks::warm_sandboxes(&id);
        if !warm.is_empty() {
            break warm;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no warm sandbox"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let mut second = Replica::start(BIN, &id, &db.url, &gh, agents.to_str().unwrap(), &lease);
    let status = second
        .exited_within(Duration::from_secs(30))
        .await
        .expect("the second replica must stop by itself");
    assert!(!status.success(), "the second replica must not start");
    let resp = reqwest::get(first.url("/healthz")).await.unwrap();
    assert!(resp.status().is_success(), "the first one still serves");
    for warm in &warm_before {
        assert!(
            drydock_tests::tasks::warm_sandboxes(&id).contains(warm),
            "the first replica's warm sandbox {warm} was removed"
        );
    }
}
