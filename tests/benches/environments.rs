//! Environments on a real server with real Docker: how long a task takes to reach its agent when
//! its environment is cached (started from the snapshot, maintenance only) against the same
//! environment with setup run again (after "rebuild", so the key is new), alternately in the same
//! run; and the snapshot's size against its base image.
//!
//! The setup is synthetic but does real work: it creates a Python virtual environment (a few
//! thousand files) and then waits, so it takes at least 10 s as a dependency install would.
//!
//! Run with `cargo bench -p drydock-tests --bench environments` (or `bench/run environments`);
//! needs Docker and `DRYDOCK_SANDBOX_IMAGE`. A markdown summary goes to stdout and, when
//! `DRYDOCK_BENCH_OUT` is set, to that file. Knob: `DRYDOCK_BENCH_ROUNDS` (starts of each kind,
//! default 3).

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use drydock_tests::TestDb;
use drydock_tests::stats::{env_num, median, stats_row};
use drydock_tests::tasks::{TaskEnv, sandbox_image};
use serde_json::{Value, json};

const ENVIRONMENT: &str = r#"setup = """
python3 -m venv /home/agent/venv
sleep 10
"""
maintenance = "test -x /home/agent/venv/bin/python"
"#;

/// Submits a task whose agent prints `marker`; answers the milliseconds until that line is
/// stored, and waits for the task to end.
async fn start_ms(env: &TaskEnv, marker: &str) -> f64 {
    let started = Instant::now();
    let id = env
        .submit(
            &format!("echo {marker}"),
            json!({ "repo": "alice/bench-env", "create_pr": false }),
        )
        .await;
    let took = loop {
        let page: Value = env
            .get_json(&format!("/api/tasks/{id}/events?after=0&limit=1000"))
            .await;
        if page["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["text"] == marker))
        {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the agent never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    took.as_secs_f64() * 1000.0
}

fn image_size(image: &str) -> f64 {
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Size}}", image])
        .output()
        .expect("docker image inspect");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<f64>()
        .unwrap_or(f64::NAN)
}

async fn run() -> String {
    let rounds = env_num("DRYDOCK_BENCH_ROUNDS", 3);
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    env.app.gh.create_repo(
        "alice",
        "bench-env",
        &[(".drydock/environment.toml", ENVIRONMENT)],
        "main",
    );
    // The first task makes the snapshot; not measured.
    start_ms(&env, "warm-up").await;
    let mut cached = Vec::new();
    let mut rerun = Vec::new();
    for i in 0..rounds {
        cached.push(start_ms(&env, &format!("cached-{i}")).await);
        let resp = env.post("/api/environments/alice/bench-env/rebuild").await;
        assert!(resp.status().is_success());
        rerun.push(start_ms(&env, &format!("rerun-{i}")).await);
    }
    let view = env.get_json("/api/environments/alice/bench-env").await;
    let snapshot = view["snapshots"][0]["tag"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let base = sandbox_image();
    let (snap_size, base_size) = (image_size(&snapshot), image_size(&base));

    let mut out = String::new();
    let _ = writeln!(
        out,
        "| what | n | p50 ms | p90 ms | p99 ms | min ms | max ms |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "{}",
        stats_row(
            "task start → agent's first line, environment cached (maintenance only)",
            &cached
        )
    );
    let _ = writeln!(
        out,
        "{}",
        stats_row("the same, setup run again (≥ 10 s)", &rerun)
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Ratio of medians, cached start / start with setup: **{:.2}** ({:.1} s saved per task).  ",
        median(&cached) / median(&rerun),
        (median(&rerun) - median(&cached)) / 1000.0
    );
    let _ = writeln!(
        out,
        "Snapshot `{snapshot}`: {:.1} MB in all, of which {:.1} MB its own layer over the base image `{base}` ({:.1} MB): **{:.1}%** of the base.",
        snap_size / 1e6,
        (snap_size - base_size) / 1e6,
        base_size / 1e6,
        100.0 * (snap_size - base_size) / base_size
    );
    out
}

fn main() {
    drydock_tests::stats::bench_main(run);
}
