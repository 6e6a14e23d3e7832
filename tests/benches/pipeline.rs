//! The task pipeline end to end, on a real server with real Docker: live latency from a line
//! written in the container to an SSE client, and task start (submit → first agent output over
//! SSE) against `docker run --rm <image> true` measured in the same run.
//!
//! Run with `cargo bench -p drydock-tests --bench pipeline` (or `bench/run`); needs Docker and
//! `DRYDOCK_SANDBOX_IMAGE`; PostgreSQL rows run when `DRYDOCK_TEST_POSTGRES_URL` is set. A
//! markdown summary goes to stdout and, when `DRYDOCK_BENCH_OUT` is set, to that file.
//! Knobs: `DRYDOCK_BENCH_LINES` (latency lines per task, default 500) and
//! `DRYDOCK_BENCH_STARTS` (task starts and `docker run`s, default 9).

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drydock_tests::TestDb;
use drydock_tests::stats::{env_num, median, stats_row};
use drydock_tests::tasks::{TaskEnv, sandbox_image};
use serde_json::{Value, json};

/// One event read from the SSE stream, with when it arrived.
struct Received {
    at: Instant,
    wall_ns: i128,
    data: Value,
}

/// Reads a task's SSE stream until `stop` says so or the stream ends.
async fn read_sse(
    env: &TaskEnv,
    id: &str,
    mut stop: impl FnMut(&Received) -> bool,
) -> Vec<Received> {
    let mut resp = env
        .alice
        .get(env.app.url(&format!("/api/tasks/{id}/events")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("open SSE");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut seen = Vec::new();
    let mut buf = String::new();
    loop {
        let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_secs(120), resp.chunk()).await
        else {
            return seen;
        };
        let at = Instant::now();
        let wall_ns = now_ns();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if event.as_deref() == Some("end") {
                return seen;
            }
            if event.is_some() || data.is_empty() {
                continue;
            }
            let received = Received {
                at,
                wall_ns,
                data: serde_json::from_str(&data).unwrap_or(Value::Null),
            };
            let done = stop(&received);
            seen.push(received);
            if done {
                return seen;
            }
        }
    }
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Latency of `lines` timestamped lines written 10 ms apart in the container; answers the table
/// rows (total, container → stored, stored → client).
async fn latency(env: &TaskEnv, backend: &str, lines: usize) -> Vec<String> {
    let script =
        format!("for i in $(seq 1 {lines}); do echo \"t=$(date +%s%N)\"; sleep 0.01; done");
    let id = env.submit(&script, json!({ "create_pr": false })).await;
    let events = read_sse(env, &id, |_| false).await;
    let mut total = Vec::new();
    let mut to_store = Vec::new();
    let mut to_client = Vec::new();
    for event in &events {
        let Some(sent) = event.data["text"]
            .as_str()
            .and_then(|t| t.strip_prefix("t="))
            .and_then(|t| t.parse::<i128>().ok())
        else {
            continue;
        };
        total.push((event.wall_ns - sent) as f64 / 1e6);
        if let Some(ts) = event.data["ts"].as_i64() {
            let stored_ns = i128::from(ts) * 1_000_000;
            to_store.push((stored_ns - sent) as f64 / 1e6);
            to_client.push((event.wall_ns - stored_ns) as f64 / 1e6);
        }
    }
    assert_eq!(
        total.len(),
        lines,
        "every timestamped line arrived over SSE"
    );
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    vec![
        stats_row(&format!("{backend}: container write → SSE client"), &total),
        stats_row(
            &format!("{backend}: … of which container write → append begins (`ts`)"),
            &to_store,
        ),
        stats_row(
            &format!("{backend}: … of which append begins → SSE client"),
            &to_client,
        ),
    ]
}

/// Submit → the agent's first line seen over SSE, in ms; also answers submit → first event.
async fn task_start(env: &TaskEnv) -> (f64, f64) {
    const MARKER: &str = "drydock-bench-agent-started";
    let started = Instant::now();
    let id = env
        .submit(&format!("echo {MARKER}"), json!({ "create_pr": false }))
        .await;
    let events = read_sse(env, &id, |e| e.data["text"] == MARKER).await;
    let first = events.first().expect("some event").at - started;
    let agent = events
        .iter()
        .find(|e| e.data["text"] == MARKER)
        .expect("the agent's line arrived")
        .at
        - started;
    env.wait_done(&id).await;
    (agent.as_secs_f64() * 1000.0, first.as_secs_f64() * 1000.0)
}

fn docker_run_true(image: &str) -> f64 {
    let started = Instant::now();
    let status = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", "none", image, "true"])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("docker run");
    assert!(status.success(), "docker run failed");
    started.elapsed().as_secs_f64() * 1000.0
}

async fn run() -> String {
    let image = sandbox_image();
    let lines = env_num("DRYDOCK_BENCH_LINES", 500);
    let starts = env_num("DRYDOCK_BENCH_STARTS", 9).max(1);
    let mut latency_rows = Vec::new();
    let mut start_rows = Vec::new();
    let mut ratios = Vec::new();

    let mut dbs: Vec<(&str, TestDb)> = vec![("SQLite", TestDb::sqlite().await)];
    if std::env::var_os("DRYDOCK_TEST_POSTGRES_URL").is_some() {
        dbs.push(("PostgreSQL", TestDb::postgres().await));
    }
    for (backend, db) in dbs {
        let env = TaskEnv::start(db, &[]).await;
        // Warm-up: one task start and one docker run, not counted.
        let _ = task_start(&env).await;
        let _ = docker_run_true(&image);

        let mut task_ms = Vec::new();
        let mut first_ms = Vec::new();
        let mut docker_ms = Vec::new();
        // Interleaved, so both see the same machine load.
        for _ in 0..starts {
            let (agent, first) = task_start(&env).await;
            task_ms.push(agent);
            first_ms.push(first);
            let image = image.clone();
            docker_ms.push(
                tokio::task::spawn_blocking(move || docker_run_true(&image))
                    .await
                    .expect("docker run thread"),
            );
        }
        eprintln!(
            "{backend}: task start median {:.0} ms, docker run median {:.0} ms",
            median(&task_ms),
            median(&docker_ms)
        );
        start_rows.push(stats_row(
            &format!("{backend}: submit → first agent line over SSE"),
            &task_ms,
        ));
        start_rows.push(stats_row(
            &format!("{backend}: submit → first event of any kind over SSE"),
            &first_ms,
        ));
        start_rows.push(stats_row(
            &format!("{backend}: `docker run --rm --network none <image> true`"),
            &docker_ms,
        ));
        ratios.push(format!(
            "{backend}: task start / docker run = **{:.2}** (ratio of medians)",
            median(&task_ms) / median(&docker_ms)
        ));

        let rows = latency(&env, backend, lines).await;
        eprintln!("{}", rows.join("\n"));
        latency_rows.extend(rows);
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "Live latency: the scripted agent prints `t=$(date +%s%N)` {lines} times, 10 ms apart; \
         the client subtracts that from its clock when the SSE event arrives (same host clock). \
         Event `ts` is stamped as the batch's append begins, in whole ms (hence minimums slightly below zero), so *→ append begins* is the wait for a flush and *append begins → SSE client* is the database transaction, the broadcast and HTTP."
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| latency (ms) | n | p50 | p90 | p99 | min | max |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for row in latency_rows {
        let _ = writeln!(out, "{row}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Task start: submit (`POST /api/tasks`, `create_pr: false`) → the agent's `echo` seen over \
         SSE, interleaved with `docker run` of the same image ({starts} each after one warm-up)."
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| task start (ms) | n | p50 | p90 | p99 | min | max |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for row in start_rows {
        let _ = writeln!(out, "{row}");
    }
    let _ = writeln!(out);
    for ratio in ratios {
        let _ = writeln!(out, "{ratio}.  ");
    }
    let _ = writeln!(out, "Image `{image}`.");
    out
}

fn main() {
    drydock_tests::stats::bench_main(run);
}
