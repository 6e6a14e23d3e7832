//! The task pipeline end to end, on a real server with real Docker: live latency from a line
//! written in the container to an SSE client, and task start (submit → first agent output over
//! SSE), with the warm pool and without, against `docker run --rm <image> true` measured in the
//! same run.
//!
//! Run with `cargo bench -p drydock-tests --bench pipeline` (or `bench/run`); needs Docker and
//! `DRYDOCK_SANDBOX_IMAGE`; PostgreSQL rows run when `DRYDOCK_TEST_POSTGRES_URL` is set. A
//! markdown summary goes to stdout and, when `DRYDOCK_BENCH_OUT` is set, to that file.
//! Knobs: `DRYDOCK_BENCH_SECONDS` (seconds of 10 lines/s per latency run, default 20),
//! `DRYDOCK_BENCH_BURST_SECONDS` (seconds of 1,000 lines/s, default 10),
//! `DRYDOCK_BENCH_STARTS` (task starts and `docker run`s, default 9) and `DRYDOCK_BENCH_RAW`
//! (a directory: each latency run's lines are written there, one per line of text, as
//! `floor-<rate>.txt`: written (ns) read (ns), and `<backend>-<rate>.txt`: written (ns), `ts`
//! (ms), received (ns), seq; to see when in a run the slow lines came).
//!
//! The servers run in processes of their own, as in a deployment: the SSE client here does not
//! share their runtime.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drydock_tests::TestDb;
use drydock_tests::stats::{env_num, median, percentile, stats_row};
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

/// The line generator run in the container: `lines` lines `t=<unix ns>` at `rate` lines/s,
/// paced against its start (so a late line does not delay the ones after it), flushed each.
fn generator(lines: usize, rate: usize) -> String {
    format!(
        "python3 -c '\nimport sys, time\nn, rate = int(sys.argv[1]), float(sys.argv[2])\nt0 = time.time()\nfor i in range(n):\n    d = t0 + i / rate - time.time()\n    if d > 0:\n        time.sleep(d)\n    sys.stdout.write(\"t=%d\\n\" % time.time_ns())\n    sys.stdout.flush()\n' {lines} {rate}"
    )
}

/// The nanosecond stamp of a generator line.
fn stamp(text: &str) -> Option<i128> {
    text.strip_prefix("t=")?.trim().parse().ok()
}

/// Latencies in ms of one run of the generator.
#[derive(Default)]
struct Latency {
    total: Vec<f64>,
    to_store: Vec<f64>,
    to_client: Vec<f64>,
}

fn p99(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    percentile(&xs, 99.0)
}

/// The floor: the same generator run by `docker exec` in a container of the same image, each
/// line timestamped as this process reads it from the exec's output stream (no store, no
/// broadcast, no HTTP). The container is this bench's own, removed at the end.
fn floor(image: &str, lines: usize, rate: usize) -> Vec<f64> {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};
    let name = format!("drydock-bench-floor-{}", std::process::id());
    let started = Command::new("docker")
        .args(["run", "-d", "--rm", "--network", "none", "--name", &name])
        .args(["--entrypoint", "sleep", image, "600"])
        .stdout(Stdio::null())
        .status()
        .expect("docker run");
    assert!(started.success(), "could not start the floor's container");
    let mut exec = Command::new("docker")
        .args(["exec", &name, "sh", "-c", &generator(lines, rate)])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker exec");
    let mut out = Vec::new();
    let mut raw = String::new();
    if let Some(stdout) = exec.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let read = now_ns();
            if let Some(sent) = line.ok().as_deref().and_then(stamp) {
                let _ = writeln!(raw, "{sent} {read}");
                out.push((read - sent) as f64 / 1e6);
            }
        }
    }
    let _ = exec.wait();
    write_raw(&format!("floor-{rate}"), &raw);
    let _ = Command::new("docker")
        .args(["rm", "-f", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert_eq!(out.len(), lines, "the floor read every line");
    out
}

/// Latency of `lines` generator lines at `rate` lines/s written in the task's container, read
/// over SSE.
async fn latency(env: &TaskEnv, backend: &str, lines: usize, rate: usize) -> Latency {
    let id = env
        .submit(&generator(lines, rate), json!({ "create_pr": false }))
        .await;
    let events = read_sse(env, &id, |_| false).await;
    let mut latency = Latency::default();
    let mut raw = String::new();
    for event in &events {
        let Some(sent) = event.data["text"].as_str().and_then(stamp) else {
            continue;
        };
        let _ = writeln!(
            raw,
            "{sent} {} {} {}",
            event.data["ts"], event.wall_ns, event.data["seq"]
        );
        latency.total.push((event.wall_ns - sent) as f64 / 1e6);
        if let Some(ts) = event.data["ts"].as_i64() {
            let stored_ns = i128::from(ts) * 1_000_000;
            latency.to_store.push((stored_ns - sent) as f64 / 1e6);
            latency
                .to_client
                .push((event.wall_ns - stored_ns) as f64 / 1e6);
        }
    }
    assert_eq!(
        latency.total.len(),
        lines,
        "every timestamped line arrived over SSE"
    );
    write_raw(&format!("{backend}-{rate}"), &raw);
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    latency
}

/// Writes one run's lines to `$DRYDOCK_BENCH_RAW/<name>.txt`, when that is set.
fn write_raw(name: &str, lines: &str) {
    if let Some(dir) = std::env::var_os("DRYDOCK_BENCH_RAW") {
        let path = std::path::Path::new(&dir).join(format!("{name}.txt"));
        if let Err(err) = std::fs::write(&path, lines) {
            eprintln!("could not write {}: {err}", path.display());
        }
    }
}

/// The stages of a task start, told by the lines the task logs on its way (each stamped with
/// `ts` as its append begins, in whole ms): the names of the rows, in order.
const STAGES: [&str; 5] = [
    "submit → `Cloning …` logged (claim, turn set-up, branch listing, sandbox taken or being created)",
    "`Cloning …` → `Working on …` (host `git clone` and branch bookkeeping)",
    "`Working on …` → `Uploading the working tree` (submodules/LFS check, waiting for the sandbox, environment)",
    "`Uploading the working tree` → agent's line stored (upload, agent files, exec, agent start)",
    "agent's line stored → seen over SSE (the store hop)",
];

/// One task start: submit → the agent's first line seen over SSE and → the first event of any
/// kind, in ms, and the time spent in each of [`STAGES`] (NaN where a line was missing).
struct Start {
    agent: f64,
    first: f64,
    stages: [f64; 5],
}

async fn task_start(env: &TaskEnv) -> Start {
    const MARKER: &str = "drydock-bench-agent-started";
    let started = Instant::now();
    let submitted_ns = now_ns();
    let id = env
        .submit(&format!("echo {MARKER}"), json!({ "create_pr": false }))
        .await;
    let events = read_sse(env, &id, |e| e.data["text"] == MARKER).await;
    let first = events.first().expect("some event").at - started;
    let marker = events
        .iter()
        .find(|e| e.data["text"] == MARKER)
        .expect("the agent's line arrived");
    let agent = marker.at - started;
    // Milliseconds since submit at which a line starting with `prefix` was stored.
    let stored_at = |prefix: &str| {
        events
            .iter()
            .find(|e| {
                e.data["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(prefix))
            })
            .and_then(|e| e.data["ts"].as_i64())
            .map_or(f64::NAN, |ts| {
                (i128::from(ts) * 1_000_000 - submitted_ns) as f64 / 1e6
            })
    };
    let cloning = stored_at("Cloning ");
    let working = stored_at("Working on ");
    let uploading = stored_at("Uploading the working tree");
    let stored = stored_at(MARKER);
    let seen = agent.as_secs_f64() * 1000.0;
    env.wait_done(&id).await;
    Start {
        agent: seen,
        first: first.as_secs_f64() * 1000.0,
        stages: [
            cloning,
            working - cloning,
            uploading - working,
            stored - uploading,
            seen - stored,
        ],
    }
}

/// Waits until server `instance` has a warm sandbox running, and a moment more for the pool to
/// have it ready.
async fn wait_warm(instance: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while drydock_tests::tasks::warm_sandboxes(instance).is_empty() {
        assert!(Instant::now() < deadline, "the warm pool never filled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    let seconds = env_num("DRYDOCK_BENCH_SECONDS", 20).max(1);
    let burst = env_num("DRYDOCK_BENCH_BURST_SECONDS", 10).max(1);
    let rates = [10, 1000];
    let starts = env_num("DRYDOCK_BENCH_STARTS", 9).max(1);
    let mut latency_rows = Vec::new();
    let mut start_rows = Vec::new();
    let mut ratios = Vec::new();
    let mut goals = Vec::new();

    // The floor, once per rate (it involves no database), in the same run as the rest.
    let mut floors = Vec::new();
    for rate in rates {
        let lines = rate * if rate > 100 { burst } else { seconds };
        let image = image.clone();
        let floor = tokio::task::spawn_blocking(move || floor(&image, lines, rate))
            .await
            .expect("floor thread");
        latency_rows.push(stats_row(
            &format!("floor, {rate} lines/s: container write → `docker exec` client"),
            &floor,
        ));
        floors.push(floor);
    }

    let mut dbs: Vec<(&str, TestDb, TestDb)> =
        vec![("SQLite", TestDb::sqlite().await, TestDb::sqlite().await)];
    if std::env::var_os("DRYDOCK_TEST_POSTGRES_URL").is_some() {
        dbs.push((
            "PostgreSQL",
            TestDb::postgres().await,
            TestDb::postgres().await,
        ));
    }
    for (backend, db, cold_db) in dbs {
        // The product's default, a warm pool of one, and the same server without a pool.
        let env = TaskEnv::start_process(db, &[]).await;
        let cold = TaskEnv::start_process(cold_db, &["--warm-pool", "0"]).await;
        let instance = env.app.server.instance_id.clone();
        // Warm-up: one task start of each and one docker run, not counted.
        wait_warm(&instance).await;
        let _ = task_start(&env).await;
        let _ = task_start(&cold).await;
        let _ = docker_run_true(&image);

        let mut warm_ms = Vec::new();
        let mut cold_ms = Vec::new();
        let mut first_ms = Vec::new();
        let mut warm_stages: [Vec<f64>; 5] = Default::default();
        let mut cold_stages: [Vec<f64>; 5] = Default::default();
        let mut docker_ms = Vec::new();
        // Interleaved, so all three see the same machine load.
        for _ in 0..starts {
            wait_warm(&instance).await;
            let start = task_start(&env).await;
            warm_ms.push(start.agent);
            first_ms.push(start.first);
            for (all, one) in warm_stages.iter_mut().zip(start.stages) {
                all.push(one);
            }
            let image = image.clone();
            docker_ms.push(
                tokio::task::spawn_blocking(move || docker_run_true(&image))
                    .await
                    .expect("docker run thread"),
            );
            let start = task_start(&cold).await;
            cold_ms.push(start.agent);
            for (all, one) in cold_stages.iter_mut().zip(start.stages) {
                all.push(one);
            }
        }
        eprintln!(
            "{backend}: task start median warm {:.0} ms, cold {:.0} ms, docker run median {:.0} ms",
            median(&warm_ms),
            median(&cold_ms),
            median(&docker_ms)
        );
        start_rows.push(stats_row(
            &format!("{backend}, warm pool: submit → first agent line over SSE"),
            &warm_ms,
        ));
        for (stage, times) in STAGES.iter().zip(&warm_stages) {
            start_rows.push(stats_row(
                &format!("{backend}, warm pool: … {stage}"),
                times,
            ));
        }
        start_rows.push(stats_row(
            &format!("{backend}, warm pool: submit → first event of any kind over SSE"),
            &first_ms,
        ));
        start_rows.push(stats_row(
            &format!(
                "{backend}, no pool (`DRYDOCK_WARM_POOL=0`): submit → first agent line over SSE"
            ),
            &cold_ms,
        ));
        for (stage, times) in STAGES.iter().zip(&cold_stages) {
            start_rows.push(stats_row(&format!("{backend}, no pool: … {stage}"), times));
        }
        start_rows.push(stats_row(
            &format!("{backend}: `docker run --rm --network none <image> true`"),
            &docker_ms,
        ));
        ratios.push(format!(
            "{backend}: task start / docker run = **{:.2}** with the pool warm (goal < 1.0), **{:.2}** without a pool (1.87 before the overlap; ratio of medians)",
            median(&warm_ms) / median(&docker_ms),
            median(&cold_ms) / median(&docker_ms)
        ));
        cold.app.server.stop().await.expect("clean stop");

        for (rate, floor) in rates.iter().zip(&floors) {
            let lines = floor.len();
            let l = latency(&env, backend, lines, *rate).await;
            let rows = [
                stats_row(
                    &format!("{backend}, {rate} lines/s: container write → SSE client"),
                    &l.total,
                ),
                stats_row(
                    &format!("{backend}, {rate} lines/s: … of which → append begins (`ts`)"),
                    &l.to_store,
                ),
                stats_row(
                    &format!(
                        "{backend}, {rate} lines/s: … of which append begins → SSE client (the store hop)"
                    ),
                    &l.to_client,
                ),
            ];
            eprintln!("{}", rows.join("\n"));
            latency_rows.extend(rows);
            let goal = 1.5 * p99(floor) + p99(&l.to_client);
            let got = p99(&l.total);
            goals.push(format!(
                "{backend}, {rate} lines/s: p99 {got:.1} ms vs goal 1.5 × floor p99 {:.1} ms + store hop p99 {:.1} ms = {goal:.1} ms: **{}** (p99 / floor p99 = {:.2})",
                p99(floor),
                p99(&l.to_client),
                if got <= goal { "met" } else { "not met" },
                got / p99(floor),
            ));
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "Live latency: the scripted agent runs a small Python generator that prints `t=<unix ns>` \
         at a steady rate (10 lines/s for {seconds} s, 1,000 lines/s for {burst} s), each line \
         flushed; the client subtracts that from its clock when the SSE event arrives (same \
         host clock). The floor is the same generator run by `docker exec` in a container of \
         the same image, each line stamped as the bench reads it from the exec's output stream. \
         Event `ts` is stamped as the append begins, in whole ms (hence minimums slightly below \
         zero), so *→ append begins* is the wait for the log's writer and *append begins → SSE \
         client* is the store hop: the database transaction, the broadcast and HTTP."
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
         SSE, interleaved with `docker run` of the same image ({starts} each after one warm-up): \
         *warm pool* on a server with the default pool of one, each start once the pool holds a \
         started sandbox again; *no pool* on a second server with `--warm-pool 0` (creates its \
         sandbox while it clones)."
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
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Live latency against its goal (p99 ≤ 1.5 × the floor's p99 + the store hop's p99):"
    );
    let _ = writeln!(out);
    for goal in goals {
        let _ = writeln!(out, "- {goal}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Image `{image}`.");
    out
}

fn main() {
    drydock_tests::server::serve_child_if_asked();
    drydock_tests::stats::bench_main(run);
}
