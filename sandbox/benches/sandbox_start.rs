//! Sandbox start latency: `Sandboxes::create` + first exec output, against
//! `docker run --rm <same image> true`, measured in the same run.
//!
//! Needs a running dockerd and `DRYDOCK_SANDBOX_IMAGE`. `bench/sandbox-start`
//! runs it and writes the figures to docs/BENCHMARKS.md; when
//! `DRYDOCK_BENCH_OUT` names a file, a markdown summary is written there.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use drydock_sandbox::{ExecSpec, NetworkMode, SandboxDefaults, Sandboxes};
use futures::StreamExt;

static SANDBOX: Mutex<Vec<Duration>> = Mutex::new(Vec::new());
static SANDBOX_WITH_REMOVE: Mutex<Vec<Duration>> = Mutex::new(Vec::new());
static DOCKER_RUN: Mutex<Vec<Duration>> = Mutex::new(Vec::new());

fn image() -> String {
    std::env::var("DRYDOCK_SANDBOX_IMAGE").unwrap_or_else(|_| {
        panic!("DRYDOCK_SANDBOX_IMAGE is not set: run `sandbox/image/build-offline` and export the tag it prints")
    })
}

fn record(store: &Mutex<Vec<Duration>>, d: Duration) {
    if let Ok(mut v) = store.lock() {
        v.push(d);
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let image = image();
    let mut defaults = SandboxDefaults::new(image.clone(), format!("bench-{}", std::process::id()));
    defaults.network = NetworkMode::None;
    let sandboxes = rt
        .block_on(Sandboxes::connect(defaults))
        .expect("dockerd must be running");

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .configure_from_args();
    let mut group = c.benchmark_group("sandbox_start");
    group.sampling_mode(SamplingMode::Flat);

    group.bench_function("sandbox_create_start_first_output", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (to_output, with_remove) = rt.block_on(async {
                    let start = Instant::now();
                    let sb = sandboxes
                        .create(sandboxes.spec("bench"))
                        .await
                        .expect("create");
                    let mut out = sb
                        .exec(&ExecSpec::new(["echo", "ready"]))
                        .await
                        .expect("exec");
                    let first = out.next().await.expect("output").expect("chunk");
                    let to_output = start.elapsed();
                    assert_eq!(&first.data[..], b"ready\n");
                    out.exit().await.expect("exit");
                    sb.remove().await.expect("remove");
                    (to_output, start.elapsed())
                });
                record(&SANDBOX, to_output);
                record(&SANDBOX_WITH_REMOVE, with_remove);
                total += to_output;
            }
            total
        })
    });

    group.bench_function("docker_run_rm_true", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let status = std::process::Command::new("docker")
                    .args(["run", "--rm", "--network", "none", &image, "true"])
                    .status()
                    .expect("docker CLI");
                let elapsed = start.elapsed();
                assert!(status.success());
                record(&DOCKER_RUN, elapsed);
                total += elapsed;
            }
            total
        })
    });
    group.finish();
    c.final_summary();

    let summary = summarize(&image);
    println!("{summary}");
    if let Ok(path) = std::env::var("DRYDOCK_BENCH_OUT") {
        std::fs::write(&path, summary).expect("write DRYDOCK_BENCH_OUT");
    }
}

struct Stats {
    n: usize,
    median: f64,
    mean: f64,
    min: f64,
    max: f64,
}

fn stats(store: &Mutex<Vec<Duration>>) -> Stats {
    let mut ms: Vec<f64> = store
        .lock()
        .map(|v| v.iter().map(|d| d.as_secs_f64() * 1000.0).collect())
        .unwrap_or_default();
    ms.sort_by(|a, b| a.total_cmp(b));
    let n = ms.len().max(1);
    Stats {
        n: ms.len(),
        median: ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN),
        mean: ms.iter().sum::<f64>() / n as f64,
        min: ms.first().copied().unwrap_or(f64::NAN),
        max: ms.last().copied().unwrap_or(f64::NAN),
    }
}

fn summarize(image: &str) -> String {
    let sandbox = stats(&SANDBOX);
    let with_remove = stats(&SANDBOX_WITH_REMOVE);
    let docker = stats(&DOCKER_RUN);
    let row = |name: &str, s: &Stats| {
        format!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            s.n, s.median, s.mean, s.min, s.max
        )
    };
    let mut out = String::new();
    out.push_str(
        "| what | runs | median ms | mean ms | min ms | max ms |\n|---|---|---|---|---|---|\n",
    );
    out.push_str(&row(
        "sandbox: create + start + first exec output",
        &sandbox,
    ));
    out.push_str(&row("sandbox: the same, then remove", &with_remove));
    out.push_str(&row(
        "`docker run --rm --network none <image> true`",
        &docker,
    ));
    out.push_str(&format!(
        "\nRatio of medians, sandbox first output / docker run: **{:.2}** (with removal: {:.2}).\nImage `{image}`; all figures from one run of `bench/sandbox-start`, warm-up included.\nThe sandbox figure runs from `Sandboxes::create` (hardened create + start) to the first output chunk of an `echo` exec; the `docker run` figure includes the docker CLI's own start-up and waits for the container's removal. Other load on the machine shows up as run-to-run variation of the ratio.\n",
        sandbox.median / docker.median,
        with_remove.median / docker.median,
    ));
    out
}
