//! Replicas on one PostgreSQL, with real `drydock-replica` processes, the scripted agent and
//! real Docker: how long after a kill -9 the other replica adopts the task (median of runs),
//! the live-event delay for a viewer on the other replica against one on the replica running
//! the task (same task, same run), and tasks per minute with one and with two replicas.
//!
//! Run with `cargo bench -p drydock-tests --bench replicas` (or `bench/run replicas`); needs
//! Docker, `DRYDOCK_SANDBOX_IMAGE` and `DRYDOCK_TEST_POSTGRES_URL`. A markdown summary goes to
//! stdout and, when `DRYDOCK_BENCH_OUT` is set, to that file. Knobs: `DRYDOCK_BENCH_KILLS`
//! (default 5), `DRYDOCK_BENCH_LEASE` (seconds, default 6), `DRYDOCK_BENCH_TASKS` (default 20).

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drydock_tests::replicas::Cluster;
use drydock_tests::stats::{env_num, median, stats_row};

const BIN: &str = env!("CARGO_BIN_EXE_drydock-replica");

fn main() {
    drydock_tests::stats::bench_main(run);
}

async fn run() -> String {
    let mut out = String::new();
    let kills = env_num("DRYDOCK_BENCH_KILLS", 5);
    let lease = env_num("DRYDOCK_BENCH_LEASE", 6);
    let tasks = env_num("DRYDOCK_BENCH_TASKS", 20);

    let mut adoption = Vec::new();
    for _ in 0..kills {
        adoption.push(adoption_ms(lease).await);
    }
    let (owner, other) = live_delays().await;
    let one = tasks_per_minute(1, tasks).await;
    let two = tasks_per_minute(2, tasks).await;

    let _ = writeln!(
        out,
        "**Adoption after kill -9** (lease {lease} s, heartbeat every {:.1} s): median **{:.1} s** over {kills} runs (min {:.1} s, max {:.1} s), from the SIGKILL to the other replica's first line of the adopted turn (it follows the agent in its sandbox from where the log stops); the agent then goes on and every turn ended succeeded.",
        lease as f64 / 4.0,
        median(&adoption) / 1000.0,
        adoption.iter().copied().fold(f64::INFINITY, f64::min) / 1000.0,
        adoption.iter().copied().fold(0.0, f64::max) / 1000.0,
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "**Live-event delay**, container `date` → SSE client, one task printing a line every 50 ms, two viewers at once (ms):"
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| viewer | lines | p50 | p90 | p99 | min | max |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "{}",
        stats_row("on the replica running the task", &owner)
    );
    let _ = writeln!(
        out,
        "{}",
        stats_row("on the other replica (LISTEN/NOTIFY)", &other)
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Ratio of medians, other replica / same replica: **{:.2}**.",
        median(&other) / median(&owner)
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "**Tasks per minute** ({tasks} tasks `echo`, submitted round-robin, `--max-concurrent-tasks 4` counted across replicas): one replica **{one:.1}**, two replicas **{two:.1}** (ratio {:.2}).",
        two / one
    );
    out
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or_default()
}

/// One kill -9: milliseconds from the kill until the other replica says it follows the agent
/// (the adopted turn's first line), for an agent that waits for a file, which the bench then
/// creates; the turn must end succeeded.
async fn adoption_ms(lease: usize) -> f64 {
    let lease = lease.to_string();
    let mut c = Cluster::start(BIN, 2, &["--lease-secs", &lease]).await;
    let id = c
        .submit(
            c.a(),
            "echo started; while [ ! -f /tmp/go-on ]; do sleep 0.1; done; echo resumed",
        )
        .await;
    let running = c
        .wait_row(&id, "running with a sandbox", |t| {
            t.status == "running" && t.container_id.is_some()
        })
        .await;
    while !c.log(&id).await.iter().any(|t| t == "started") {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let owner = running.runner_id.unwrap_or_default();
    let container = running.container_id.unwrap_or_default();
    c.kill_9(&owner);
    let killed = Instant::now();
    while !c
        .log(&id)
        .await
        .iter()
        .any(|t| t.contains("follows the agent in its sandbox"))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let adopted = killed.elapsed().as_secs_f64() * 1000.0;
    let out = std::process::Command::new("docker")
        .args(["exec", &container, "touch", "/tmp/go-on"])
        .output()
        .expect("docker exec");
    assert!(out.status.success(), "{out:?}");
    let row = c.wait_ended(&id).await;
    assert_eq!(row.status, "succeeded", "{row:?}");
    assert!(c.log(&id).await.iter().any(|t| t == "resumed"));
    adopted
}

/// Delays (ms) of the same lines seen by a viewer on the running replica and one on the other.
async fn live_delays() -> (Vec<f64>, Vec<f64>) {
    let c = Cluster::start(BIN, 2, &[]).await;
    let id = c
        .submit(
            c.a(),
            "sleep 2; for i in $(seq 1 200); do echo \"t $(date +%s%N)\"; sleep 0.05; done",
        )
        .await;
    let running = c
        .wait_row(&id, "running", |t| {
            t.status == "running" && t.runner_id.is_some()
        })
        .await;
    let owner = running.runner_id.unwrap_or_default();
    let open = |url: String| {
        let alice = c.alice.clone();
        async move {
            alice
                .get(url)
                .header("accept", "text/event-stream")
                .send()
                .await
                .expect("events")
        }
    };
    let path = format!("/api/tasks/{id}/events");
    let same = open(c.replica(&owner).url(&path)).await;
    let other = open(c.other(&owner).url(&path)).await;
    let connected = now_ns();
    let (same, other) = tokio::join!(delays(same, connected), delays(other, connected));
    (same, other)
}

/// Reads a task's SSE stream to its end; answers the delay (ms) of each `t <ns>` line printed
/// after `since` (earlier lines are replayed from the database, not live).
async fn delays(mut resp: reqwest::Response, since: i128) -> Vec<f64> {
    let mut buf = String::new();
    let mut out = Vec::new();
    while let Ok(Ok(Some(chunk))) =
        tokio::time::timeout(Duration::from_secs(120), resp.chunk()).await
    {
        let arrived = now_ns();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if block.contains("event: end") {
                return out;
            }
            for line in block.lines() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let Ok(event) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                    continue;
                };
                if let Some(printed) = event["text"]
                    .as_str()
                    .and_then(|t| t.strip_prefix("t "))
                    .and_then(|t| t.parse::<i128>().ok())
                    && printed > since
                {
                    out.push((arrived - printed) as f64 / 1e6);
                }
            }
        }
    }
    out
}

/// Tasks per minute with `replicas` replicas: `count` one-line tasks submitted round-robin,
/// from the first submission to the last task's end.
async fn tasks_per_minute(replicas: usize, count: usize) -> f64 {
    let limits = [
        "--max-concurrent-tasks",
        "4",
        "--max-concurrent-tasks-per-user",
        "4",
        "--max-tasks-per-day",
        "1000",
    ];
    let c = Cluster::start(BIN, replicas, &limits).await;
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..count {
        let via = &c.replicas[i % replicas];
        ids.push(c.submit(via, &format!("echo task-{i}")).await);
    }
    for id in &ids {
        let task = c.wait_ended(id).await;
        assert_eq!(task.status, "succeeded", "{task:?}");
    }
    count as f64 / started.elapsed().as_secs_f64() * 60.0
}
