//! Follow-ups and previews on a real server with real Docker: how long a follow-up takes to reach
//! the agent when the task's sandbox was kept (the agent resumes in it) against one that starts a
//! fresh sandbox from the branch (the baseline: what every follow-up costs without keep-alive),
//! both measured in the same run; and a preview request relayed into the sandbox against a plain
//! drydock response and a `docker exec … true`.
//!
//! Run with `cargo bench -p drydock-tests --bench followups` (or `bench/run followups`); needs
//! Docker and `DRYDOCK_SANDBOX_IMAGE`. A markdown summary goes to stdout and, when
//! `DRYDOCK_BENCH_OUT` is set, to that file. Knobs: `DRYDOCK_BENCH_TURNS` (follow-ups of each
//! kind, default 7) and `DRYDOCK_BENCH_REQUESTS` (preview requests, default 30).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use drydock_tests::TestDb;
use drydock_tests::stats::{env_num, median, stats_row};
use drydock_tests::tasks::TaskEnv;
use serde_json::{Value, json};

/// A project whose dev script serves one page under the preview's base path.
const DEV_PROJECT: &str = r#"cat > package.json <<'JSON'
{"name": "bench", "version": "1.0.0", "private": true, "scripts": {"dev": "sh serve.sh"}}
JSON
cat > serve.sh <<'SH'
mkdir -p "/tmp/site$DRYDOCK_PREVIEW_BASE"
echo '<h1>bench</h1>' > "/tmp/site$DRYDOCK_PREVIEW_BASE/index.html"
exec python3 -m http.server "$PORT" --bind 127.0.0.1 --directory /tmp/site
SH
echo 'project written'"#;

/// Sends a follow-up and answers the milliseconds until the agent's `marker` line is stored.
async fn follow_up_ms(env: &TaskEnv, id: &str, turn: i64, marker: &str) -> f64 {
    let after = env.task(id).await["event_count"].as_i64().unwrap_or(0);
    let started = Instant::now();
    let resp = env
        .alice
        .post(env.app.url(&format!("/api/tasks/{id}/messages")))
        .json(&json!({ "prompt": format!("echo {marker}") }))
        .send()
        .await
        .expect("follow-up");
    assert_eq!(resp.status(), 201, "follow-up refused");
    let took = loop {
        let page: Value = env
            .alice
            .get(
                env.app
                    .url(&format!("/api/tasks/{id}/events?after={after}")),
            )
            .send()
            .await
            .expect("events")
            .json()
            .await
            .expect("events json");
        let seen = page["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["text"] == marker));
        if seen {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the agent never answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    env.wait_for(id, "the end of the turn", |t| {
        t["turns"] == turn && !matches!(t["status"].as_str(), Some("queued" | "running"))
    })
    .await;
    took.as_secs_f64() * 1000.0
}

async fn stop_sandbox(env: &TaskEnv, id: &str) {
    let resp = env
        .alice
        .post(env.app.url(&format!("/api/tasks/{id}/sandbox/stop")))
        .send()
        .await
        .expect("sandbox stop");
    assert_eq!(resp.status(), 200, "no kept sandbox to stop");
}

async fn timed_get(client: &reqwest::Client, url: &str) -> f64 {
    let started = Instant::now();
    let resp = client.get(url).send().await.expect("GET");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    let _ = resp.bytes().await.expect("body");
    started.elapsed().as_secs_f64() * 1000.0
}

fn docker_exec_true(container: &str) -> f64 {
    let started = Instant::now();
    let status = std::process::Command::new("docker")
        .args(["exec", container, "true"])
        .status()
        .expect("docker exec");
    assert!(status.success());
    started.elapsed().as_secs_f64() * 1000.0
}

async fn run() -> String {
    let turns = env_num("DRYDOCK_BENCH_TURNS", 7).max(1);
    let requests = env_num("DRYDOCK_BENCH_REQUESTS", 30).max(1);
    let env = TaskEnv::start(TestDb::sqlite().await, &["--preview-host", "localhost"]).await;
    let id = env
        .submit(
            DEV_PROJECT,
            json!({ "keep_alive": true, "install_deps": true, "create_pr": false }),
        )
        .await;
    let task = env
        .wait_for(&id, "a preview", |t| t["preview_url"].is_string())
        .await;

    // Preview requests: each one is a new relay into the sandbox.
    let preview = task["preview_url"]
        .as_str()
        .expect("preview url")
        .to_owned();
    let (browser, _jar) = env.app.sign_in_with_jar("alice").await;
    let handoff = browser
        .get(env.app.url(&preview))
        .send()
        .await
        .expect("enter");
    let handoff = handoff.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let _ = browser.get(&handoff).send().await.expect("hand-off");
    let port = env.app.server.addr.port();
    let page = format!("http://localhost:{port}{preview}");
    let plain = env.app.url("/healthz");
    let container = drydock_tests::tasks::containers_of(&id)
        .into_iter()
        .next()
        .expect("the kept sandbox");
    let (mut relayed, mut direct, mut exec) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..requests {
        relayed.push(timed_get(&browser, &page).await);
        direct.push(timed_get(&browser, &plain).await);
        exec.push(docker_exec_true(&container));
    }

    // Follow-ups, alternating so that load on the machine hits both kinds alike.
    let (mut kept, mut fresh) = (Vec::new(), Vec::new());
    let mut turn = 1;
    for i in 0..turns {
        turn += 1;
        kept.push(follow_up_ms(&env, &id, turn, &format!("kept-{i}")).await);
        stop_sandbox(&env, &id).await;
        turn += 1;
        fresh.push(follow_up_ms(&env, &id, turn, &format!("fresh-{i}")).await);
    }

    stop_sandbox(&env, &id).await;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "| what | n | p50 ms | p90 ms | p99 ms | min ms | max ms |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for (what, xs) in [
        (
            "follow-up → agent's first line, kept sandbox (resumed)",
            &kept,
        ),
        (
            "follow-up → agent's first line, fresh sandbox from the branch",
            &fresh,
        ),
        (
            "preview GET relayed into the sandbox (new relay each)",
            &relayed,
        ),
        ("plain drydock GET (`/healthz`), same client", &direct),
        ("`docker exec <sandbox> true` (CLI)", &exec),
    ] {
        let _ = writeln!(out, "{}", stats_row(what, xs));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Ratio of medians, follow-up in a kept sandbox / in a fresh one: **{:.2}**.  ",
        median(&kept) / median(&fresh)
    );
    let _ = writeln!(
        out,
        "Ratio of medians, preview GET / `docker exec … true`: **{:.2}**; preview GET / plain drydock GET: {:.1}.",
        median(&relayed) / median(&exec),
        median(&relayed) / median(&direct)
    );
    out
}

fn main() {
    drydock_tests::stats::bench_main(run);
}
