//! The two sandbox backends side by side, interleaved in one run: sandbox create → first exec
//! output through the sandbox crate, and task start (submit → the agent's first line in the
//! task's log) through a real server, on Docker and on the Kubernetes test cluster; and on
//! Kubernetes, task start with a warm pool (a pooled pod ready before each submission) against
//! without one.
//!
//! Run with `bench/run backends` (or `cargo bench -p drydock-tests --bench backends`); needs
//! Docker, the test cluster (`DRYDOCK_TEST_KUBECONFIG`) and `DRYDOCK_SANDBOX_IMAGE` loaded into
//! its nodes. `DRYDOCK_BENCH_STARTS` sets how many of each (default 9). A markdown summary goes
//! to stdout and, when `DRYDOCK_BENCH_OUT` is set, to that file.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use drydock_sandbox::{ExecSpec, NetworkMode, SandboxDefaults, Sandboxes};
use drydock_tests::TestDb;
use drydock_tests::kubernetes::TestNamespace;
use drydock_tests::stats::{bench_main, env_num, median, stats_row};
use drydock_tests::tasks::{TaskEnv, sandbox_image};
use futures::StreamExt;
use serde_json::json;

/// `Sandboxes::create` → the first output chunk of an `echo` exec, in ms (then removed).
async fn first_output(sandboxes: &Sandboxes) -> f64 {
    let started = Instant::now();
    let sb = sandboxes
        .create(sandboxes.spec("bench-backends"))
        .await
        .expect("create");
    let mut out = sb
        .exec(&ExecSpec::new(["echo", "ready"]))
        .await
        .expect("exec");
    let first = out.next().await.expect("output").expect("chunk");
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(&first.data[..], b"ready\n");
    out.exit().await.expect("exit");
    sb.remove().await.expect("remove");
    ms
}

/// Submit → the agent's first line stored in the task's log (polled every 10 ms), in ms.
async fn task_start(env: &TaskEnv) -> f64 {
    const MARKER: &str = "drydock-bench-agent-started";
    let started = Instant::now();
    let id = env
        .submit(&format!("echo {MARKER}"), json!({ "create_pr": false }))
        .await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let ms = loop {
        // The agent's own line (the prompt, which holds the marker too, is logged first).
        if env
            .log(&id)
            .await
            .iter()
            .any(|l| l.split_once(": ").is_some_and(|(_, text)| text == MARKER))
        {
            break started.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(Instant::now() < deadline, "the agent never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    ms
}

/// Waits until server `instance` has a pooled pod running in `ns` that is not being deleted,
/// then a moment for the server to list it as ready (it does right after the pod runs).
async fn wait_pooled(ns: &TestNamespace, instance: &str) {
    let selector = format!("drydock.instance={instance},drydock.pool");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pods = ns
            .pods()
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .expect("list pods");
        if pods.items.iter().any(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        }) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
        assert!(Instant::now() < deadline, "the pool never refilled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run() -> String {
    let image = sandbox_image();
    let n = env_num("DRYDOCK_BENCH_STARTS", 9).max(1);
    let ns = TestNamespace::create("dd-bench").await;
    let mut defaults = SandboxDefaults::new(image.clone(), format!("bench-{}", std::process::id()));
    defaults.network = NetworkMode::None;
    let docker = Sandboxes::connect(defaults).await.expect("Docker");
    let kube = ns
        .sandboxes(&image, &format!("bench-{}", std::process::id()))
        .await;

    // Backends compared without a warm pool; a third server on Kubernetes with one.
    let docker_env = TaskEnv::start(TestDb::sqlite().await, &["--warm-pool", "0"]).await;
    let mut settings = ns.server_settings();
    settings.extend(["--warm-pool".to_owned(), "0".to_owned()]);
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let kube_env = TaskEnv::start(TestDb::sqlite().await, &settings).await;
    let mut settings = ns.server_settings();
    settings.extend(["--warm-pool".to_owned(), "1".to_owned()]);
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let kube_warm_env = TaskEnv::start(TestDb::sqlite().await, &settings).await;
    let warm_instance = kube_warm_env.app.server.instance_id.clone();

    // Warm-up, not counted.
    let _ = first_output(&docker).await;
    let _ = first_output(&kube).await;
    let _ = task_start(&docker_env).await;
    let _ = task_start(&kube_env).await;
    wait_pooled(&ns, &warm_instance).await;
    let _ = task_start(&kube_warm_env).await;

    let (mut d_sb, mut k_sb, mut d_task, mut k_task) = (vec![], vec![], vec![], vec![]);
    let mut k_warm = vec![];
    // Interleaved, so both backends see the same machine load.
    for _ in 0..n {
        d_sb.push(first_output(&docker).await);
        k_sb.push(first_output(&kube).await);
        d_task.push(task_start(&docker_env).await);
        k_task.push(task_start(&kube_env).await);
        wait_pooled(&ns, &warm_instance).await;
        k_warm.push(task_start(&kube_warm_env).await);
    }
    let mut out = String::new();
    let _ = writeln!(out, "| ms | n | p50 | p90 | p99 | min | max |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for (what, xs) in [
        ("Docker: sandbox create → first exec output", &d_sb),
        ("Kubernetes: sandbox create → first exec output", &k_sb),
        ("Docker: task start (submit → agent's first line)", &d_task),
        (
            "Kubernetes: task start (submit → agent's first line)",
            &k_task,
        ),
        (
            "Kubernetes: task start, warm pool (a pooled pod ready)",
            &k_warm,
        ),
    ] {
        let _ = writeln!(out, "{}", stats_row(what, xs));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Ratios of medians, Kubernetes / Docker: sandbox create → first output **{:.2}**, task start **{:.2}**.",
        median(&k_sb) / median(&d_sb),
        median(&k_task) / median(&d_task)
    );
    let _ = writeln!(
        out,
        "Kubernetes task start, warm pool / no pool: **{:.2}** ({:.0} ms saved at the median).",
        median(&k_warm) / median(&k_task),
        median(&k_task) - median(&k_warm)
    );
    out
}

fn main() {
    bench_main(run);
}
