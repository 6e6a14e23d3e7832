//! drydock at scale, on a real server in a process of its own (so its memory and CPU time are
//! its alone), real Docker and the scripted agent:
//! - many viewers: `DRYDOCK_BENCH_VIEWERS` (default 1,000) SSE clients on one task printing
//!   1,000 lines/s for `DRYDOCK_BENCH_VIEWER_SECONDS` (default 30) s: every viewer must receive
//!   every line in order; the server's resident memory before the viewers connect, with them
//!   connected and idle, and at its peak while the lines stream; the viewers' latency;
//! - many tasks: `DRYDOCK_BENCH_TASKS` (default 50) tasks at once with
//!   `DRYDOCK_MAX_CONCURRENT_TASKS` as high, each printing 200 lines over about 10 s: all must
//!   succeed; the server's peak resident memory, its CPU seconds per 1,000 stored lines, and no
//!   container of the server left once it stopped.
//!
//! Run with `cargo bench -p drydock-tests --bench scale` (or `bench/run scale`); needs Docker and
//! `DRYDOCK_SANDBOX_IMAGE`; SQLite. A markdown summary goes to stdout and, when
//! `DRYDOCK_BENCH_OUT` is set, to that file.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drydock_tests::TestDb;
use drydock_tests::stats::env_num;
use drydock_tests::tasks::{TaskEnv, docker_ps};
use serde_json::json;

/// What `/proc` says of the server process.
#[derive(Debug, Clone, Copy)]
struct Usage {
    /// Resident memory now, KiB.
    rss_kib: u64,
    /// Peak resident memory so far, KiB.
    peak_kib: u64,
    /// User + system CPU time, seconds.
    cpu_s: f64,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command name: state is the first, utime the 12th, stime the 13th.
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Usage {
        rss_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
        cpu_s: (ticks(11) + ticks(12)) / clock_ticks(),
    }
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// The generator of `tests/benches/pipeline.rs`: `lines` lines `t=<unix ns>` at `rate` lines/s,
/// paced against its start, flushed each; started after `wait` seconds.
fn generator(wait: u64, lines: usize, rate: usize) -> String {
    format!(
        "sleep {wait}; python3 -c '\nimport sys, time\nn, rate = int(sys.argv[1]), float(sys.argv[2])\nt0 = time.time()\nfor i in range(n):\n    d = t0 + i / rate - time.time()\n    if d > 0:\n        time.sleep(d)\n    sys.stdout.write(\"t=%d\\n\" % time.time_ns())\n    sys.stdout.flush()\n' {lines} {rate}"
    )
}

/// Latencies of every line at every viewer, in 0.1 ms buckets up to a minute.
struct Histogram {
    buckets: Vec<AtomicU64>,
}

impl Histogram {
    const BUCKETS: usize = 600_000;

    fn new() -> Self {
        Self {
            buckets: (0..Self::BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn add(&self, ms: f64) {
        let i = ((ms * 10.0).max(0.0) as usize).min(Self::BUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// (count, p50, p90, p99, max) in ms.
    fn summary(&self) -> (u64, f64, f64, f64, f64) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let at = |p: f64| {
            let rank = (p / 100.0 * total as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return i as f64 / 10.0;
                }
            }
            f64::NAN
        };
        let max = counts
            .iter()
            .rposition(|c| *c > 0)
            .map_or(f64::NAN, |i| i as f64 / 10.0);
        (total, at(50.0), at(90.0), at(99.0), max)
    }
}

/// What one viewer saw.
struct Seen {
    lines: usize,
    in_order: bool,
}

/// One SSE viewer of a task: a raw HTTP/1.1 connection to `addr` asking for `path` with API token
/// `token`, its chunked body decoded and its events parsed by hand (a full HTTP client per
/// viewer costs the bench more CPU than the server spends on it, on the same two cores). Counts
/// generator lines, checks they come in order with rising `seq`, adds each line's latency to
/// `hist`, and says it is connected (status and headers read) through `connected`.
async fn view(
    addr: std::net::SocketAddr,
    path: String,
    token: String,
    hist: Arc<Histogram>,
    connected: Arc<AtomicUsize>,
) -> Seen {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut seen = Seen {
        lines: 0,
        in_order: true,
    };
    let mut sock = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect a viewer");
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\
         authorization: Bearer {token}\r\n\r\n"
    );
    sock.write_all(request.as_bytes())
        .await
        .expect("send a viewer's request");
    // Raw bytes read, not yet decoded; the decoded body (SSE text) not yet parsed.
    let mut raw: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut body: Vec<u8> = Vec::new();
    let mut chunk = vec![0_u8; 16 * 1024];
    let mut headers_done = false;
    let mut last_seq = 0_i64;
    let mut last_stamp = 0_i128;
    let mut seq = None;
    loop {
        let read = match tokio::time::timeout(Duration::from_secs(300), sock.read(&mut chunk)).await
        {
            Ok(Ok(n)) if n > 0 => n,
            _ => return seen,
        };
        let at = now_ns();
        raw.extend_from_slice(&chunk[..read]);
        let mut pos = 0;
        if !headers_done {
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "viewer: {head}");
            assert!(
                head.contains("transfer-encoding: chunked"),
                "viewer: {head}"
            );
            headers_done = true;
            connected.fetch_add(1, Ordering::SeqCst);
            pos = end + 4;
        }
        // Chunked transfer coding (RFC 9112 §7.1): `<hex size>\r\n<data>\r\n`, size 0 last.
        while let Some(nl) = raw[pos..].windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&raw[pos..pos + nl]);
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).expect("a chunk size");
            if size == 0 {
                return seen;
            }
            let data = pos + nl + 2;
            if raw.len() < data + size + 2 {
                break;
            }
            body.extend_from_slice(&raw[data..data + size]);
            pos = data + size + 2;
        }
        raw.drain(..pos);
        // Server-sent events: `id:` and `data:` lines, a blank line after each event.
        let mut start = 0;
        while let Some(nl) = body[start..].iter().position(|b| *b == b'\n') {
            let line = &body[start..start + nl];
            start += nl + 1;
            if let Some(v) = line.strip_prefix(b"id:") {
                seq = std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.trim().parse::<i64>().ok());
            } else if line.starts_with(b"event: end") || line.starts_with(b"event:end") {
                return seen;
            } else if line.starts_with(b"data:") {
                if let Some(s) = seq.take() {
                    seen.in_order &= s > last_seq;
                    last_seq = s;
                }
                if let Some(at_t) = line.windows(3).position(|w| w == b"\"t=") {
                    let digits: Vec<u8> = line[at_t + 3..]
                        .iter()
                        .copied()
                        .take_while(u8::is_ascii_digit)
                        .collect();
                    if let Some(stamp) = std::str::from_utf8(&digits)
                        .ok()
                        .and_then(|d| d.parse::<i128>().ok())
                    {
                        seen.in_order &= stamp >= last_stamp;
                        last_stamp = stamp;
                        seen.lines += 1;
                        hist.add((at - stamp) as f64 / 1e6);
                    }
                }
            }
        }
        body.drain(..start);
    }
}

async fn viewers(out: &mut String) {
    let n = env_num("DRYDOCK_BENCH_VIEWERS", 1000);
    let seconds = env_num("DRYDOCK_BENCH_VIEWER_SECONDS", 30);
    let rate = 1000;
    let lines = rate * seconds;
    let env = TaskEnv::start_process(TestDb::sqlite().await, &[]).await;
    let pid = env.app.server.pid().expect("a server process");
    // Warm-up: one task, so the server's caches and pools exist before the baseline.
    let warm = env.submit("echo warm", json!({ "create_pr": false })).await;
    env.wait_done(&warm).await;
    let token = drydock_tests::triggers::create_token(&env.app, &env.alice, "viewers", "read")
        .await["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let wait = 20;
    let id = env
        .submit(&generator(wait, lines, rate), json!({ "create_pr": false }))
        .await;
    env.wait_for(&id, "running", |t| t["status"] == "running")
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = usage(pid);
    let hist = Arc::new(Histogram::new());
    let connected = Arc::new(AtomicUsize::new(0));
    let path = format!("/api/tasks/{id}/events");
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..n {
        handles.push(tokio::spawn(view(
            env.app.server.addr,
            path.clone(),
            token.clone(),
            hist.clone(),
            connected.clone(),
        )));
    }
    while connected.load(Ordering::SeqCst) < n {
        assert!(
            started.elapsed() < Duration::from_secs(wait - 2),
            "only {} of {n} viewers connected before the lines began",
            connected.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = usage(pid);
    eprintln!(
        "viewers: {n} connected in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut complete = 0;
    let mut ordered = 0;
    for handle in handles {
        let seen = handle.await.expect("viewer");
        complete += usize::from(seen.lines == lines);
        ordered += usize::from(seen.in_order);
    }
    let after = usage(pid);
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let (count, p50, p90, p99, max) = hist.summary();
    let kib = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / n as f64;
    let _ = writeln!(
        out,
        "**{n} viewers** of one task printing {rate} lines/s for {seconds} s ({lines} lines; the \
         generator starts {wait} s after the task, once every viewer is connected):"
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| | value |");
    let _ = writeln!(out, "|---|---|");
    let _ = writeln!(
        out,
        "| viewers that received every line | {complete} of {n} |"
    );
    let _ = writeln!(
        out,
        "| viewers that received them in order (rising `seq` and stamps) | {ordered} of {n} |"
    );
    let _ = writeln!(
        out,
        "| server RSS before the viewers connect | {} KiB |",
        before.rss_kib
    );
    let _ = writeln!(
        out,
        "| server RSS with {n} viewers connected, idle | {} KiB (**{:.1} KiB per viewer**) |",
        idle.rss_kib,
        kib(idle.rss_kib, before.rss_kib)
    );
    let _ = writeln!(
        out,
        "| server RSS after the stream (viewers gone) | {} KiB |",
        after.rss_kib
    );
    let _ = writeln!(
        out,
        "| server peak RSS (whole run) | {} KiB (**{:.1} KiB per viewer** over the baseline) |",
        after.peak_kib,
        kib(after.peak_kib, before.rss_kib)
    );
    let _ = writeln!(
        out,
        "| server CPU during the stream | {:.1} s |",
        after.cpu_s - idle.cpu_s
    );
    let _ = writeln!(
        out,
        "| latency, container write → viewer, all lines at all viewers | n {count}, p50 {p50:.1} ms, p90 {p90:.1} ms, **p99 {p99:.1} ms**, max {max:.1} ms |"
    );
    let _ = writeln!(out);
    env.app.server.stop().await.expect("clean stop");
}

async fn many_tasks(out: &mut String) {
    let n = env_num("DRYDOCK_BENCH_TASKS", 50);
    let per_task = 200;
    let limit = n.to_string();
    let env = TaskEnv::start_process(
        TestDb::sqlite().await,
        &[
            "--max-concurrent-tasks",
            &limit,
            "--max-concurrent-tasks-per-user",
            &limit,
            "--max-tasks-per-day",
            "100000",
        ],
    )
    .await;
    let pid = env.app.server.pid().expect("a server process");
    let instance = env.app.server.instance_id.clone();
    let before = usage(pid);
    let script = format!(
        "i=0; while [ $i -lt {per_task} ]; do echo \"line $i of the scripted agent, printing and sleeping\"; i=$((i+1)); sleep 0.05; done"
    );
    let started = Instant::now();
    let ids: Vec<String> = futures::future::join_all(
        (0..n).map(|_| env.submit(&script, json!({ "create_pr": false }))),
    )
    .await;
    let mut succeeded = 0;
    let mut events = 0;
    for id in &ids {
        let task = env.wait_done(id).await;
        succeeded += usize::from(task["status"] == "succeeded");
        events += task["event_count"].as_i64().unwrap_or(0);
    }
    let elapsed = started.elapsed();
    let after = usage(pid);
    let lines_k = events as f64 / 1000.0;
    env.app.server.stop().await.expect("clean stop");
    let left = docker_ps(&[
        "--filter",
        &format!("label=drydock.instance={instance}"),
        "--format",
        "{{.ID}}",
    ]);
    let _ = writeln!(
        out,
        "**{n} tasks at once** (`DRYDOCK_MAX_CONCURRENT_TASKS={n}`), each a scripted agent printing {per_task} lines 50 ms apart:"
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| | value |");
    let _ = writeln!(out, "|---|---|");
    let _ = writeln!(out, "| tasks that succeeded | {succeeded} of {n} |");
    let _ = writeln!(
        out,
        "| submit of the first → end of the last | {:.1} s |",
        elapsed.as_secs_f64()
    );
    let _ = writeln!(out, "| lines stored (all kinds) | {events} |");
    let _ = writeln!(
        out,
        "| server peak RSS (whole run) | **{:.1} MB** ({} KiB; {} KiB before the tasks) |",
        after.peak_kib as f64 / 1024.0,
        after.peak_kib,
        before.rss_kib
    );
    let _ = writeln!(
        out,
        "| server CPU | {:.1} s, **{:.2} s per 1,000 lines** |",
        after.cpu_s - before.cpu_s,
        (after.cpu_s - before.cpu_s) / lines_k.max(0.001)
    );
    let _ = writeln!(
        out,
        "| containers of the server left after it stopped | **{}** |",
        left.len()
    );
    let _ = writeln!(out);
}

async fn run() -> String {
    let mut out = String::new();
    viewers(&mut out).await;
    many_tasks(&mut out).await;
    out
}

fn main() {
    drydock_tests::server::serve_child_if_asked();
    drydock_tests::stats::bench_main(run);
}
