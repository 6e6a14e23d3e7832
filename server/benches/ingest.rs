//! Event ingest: realistic log output through a task's redactor into `task_events`, with the
//! product's batch append, against the naive design (a JSON array column rewritten per line) in
//! the same run and the same database.
//!
//! Run with `cargo bench -p drydock --bench ingest` (or `bench/run`). SQLite always runs;
//! PostgreSQL runs when `DRYDOCK_TEST_POSTGRES_URL` names a server where the user may
//! `CREATE DATABASE` (a fresh database is created and dropped). A markdown summary goes to
//! stdout and, when `DRYDOCK_BENCH_OUT` is set, to that file.
//!
//! The naive design is quadratic (each line rewrites the whole array), so it runs once per
//! backend, on the 10k input, with a time limit; its 100k figure is extrapolated from that run
//! and labelled so.
//!
//! A custom harness rather than criterion: one 100k-line run takes seconds and the naive design
//! is quadratic, so a few repetitions with their median say more than criterion's sampling.
//! Knobs: `DRYDOCK_BENCH_REPS` (product repetitions, default 5) and `DRYDOCK_BENCH_NAIVE_SECS`
//! (time limit of the naive run, default
//! 240).

use std::fmt::Write as _;
use std::str::FromStr;
use std::time::{Duration, Instant};

use drydock::redact::{RedactingStream, Redactor, SecretSet};
use drydock::store::{GithubProfile, NewEvent, NewTask, Store};
use drydock::tasks::{LineSplitter, LogLine};
use drydock::terminal::shorten;
use sqlx::Connection as _;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Events per `append_task_events` call, as the runner's log sink batches them.
const BATCH: usize = 256;
/// Bytes per simulated exec output chunk fed to the redacting stream.
const CHUNK: usize = 4096;
/// Known secrets of the simulated task.
const SECRETS: usize = 10;

/// Lines like the ones a build, a test run or an agent prints.
const LINES: &[&str] = &[
    "   Compiling serde_json v1.0.128",
    "   Compiling drydock-sandbox v0.1.0 (/work/main/sandbox)",
    "warning: unused variable: `task_id`",
    "  --> server/src/runner/mod.rs:142:13",
    "    |",
    "",
    "142 |         let task_id = spec.task_id.clone();",
    "    |             ^^^^^^^ help: if this is intentional, prefix it with an underscore: `_task_id`",
    "    Finished `dev` profile [unoptimized + debuginfo] target(s) in 42.17s",
    "     Running unittests src/lib.rs (target/debug/deps/drydock-5f1e2d3c4b5a6978)",
    "test redact::tests::stream_holds_partial_secret ... ok",
    "test result: ok. 128 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.42s",
    "npm warn deprecated inflight@1.0.6: This module is not supported, and leaks memory.",
    "added 312 packages, and audited 313 packages in 7s",
    r#"{"type":"assistant","message":{"id":"msg_01XyZ","content":[{"type":"text","text":"Let me look at the failing test first."}]}}"#,
    r#"{"type":"result","usage":{"input_tokens":1234,"output_tokens":567,"cache_read_input_tokens":8910}}"#,
    r#"{"type":"tool_use","name":"Bash","input":{"command":"cargo test -p drydock --lib"}}"#,
    "Cloning into 'repo'... remote: Enumerating objects: 1532, done.",
    "Downloading https://registry.npmjs.org/typescript/-/typescript-5.6.2.tgz",
    "I'll update the function so it returns early when the key is missing.",
    "diff --git a/src/lib.rs b/src/lib.rs",
    "+    let config = Config::from_env()?;",
    "-    let x = 1;",
    "error[E0308]: mismatched types",
    "   |     expected `String`, found `&str`",
    "2026-11-22T04:16:45.123Z INFO drydock::runner: step finished step=clone elapsed_ms=812",
];

/// Deterministic xorshift so every run measures the same text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn make_secrets() -> Vec<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = Rng(0x5EC2E7);
    (0..SECRETS)
        .map(|i| {
            let len = 24 + rng.below(40);
            let body: String = (0..len)
                .map(|_| char::from(ALPHABET[rng.below(ALPHABET.len())]))
                .collect();
            match i % 3 {
                0 => format!("sk-ant-api03-{body}"),
                1 => format!("ghp_{body}"),
                _ => body,
            }
        })
        .collect()
}

/// `n` lines of output as one byte string: mostly short build and test lines, some agent JSON,
/// one in 50 a long tool result (1–6 KiB), one in 200 with a known secret, one in 1,000 with a
/// well-known token shape.
fn make_output(n: usize, secrets: &[String]) -> Vec<u8> {
    let mut rng = Rng(0xD0C4 + n as u64);
    let mut out = String::new();
    for i in 0..n {
        let roll = rng.below(1000);
        if roll < 5 {
            let secret = &secrets[rng.below(secrets.len())];
            let _ = write!(out, "export CONNECTOR_ENV={secret} # line {i}");
        } else if roll == 5 {
            out.push_str("remote: https://x-access-token:ghs_0123456789abcdefABCDEF0123456789abcd@github.com/o/r.git");
        } else if roll < 26 {
            let len = 1024 + rng.below(5 * 1024);
            let start = out.len();
            out.push_str(r#"{"type":"tool_result","content":""#);
            while out.len() - start < len {
                out.push_str(&LINES[rng.below(LINES.len())].replace(['"', '\\'], "'"));
                out.push_str("\\n");
            }
            out.push_str(r#""}"#);
        } else {
            out.push_str(LINES[rng.below(LINES.len())]);
        }
        out.push('\n');
    }
    out.into_bytes()
}

fn redactor(secrets: &[String]) -> Redactor {
    let mut set = SecretSet::new();
    for (i, s) in secrets.iter().enumerate() {
        let kind = ["anthropic-key", "github-token", "connector-secret"][i % 3];
        set.add(kind, s);
    }
    Redactor::new(set).expect("redactor builds")
}

/// One exec stream: redacts reads and splits the clean bytes into lines with the product's
/// [`LineSplitter`], as the runner's log sink does (a line rendered from terminal controls is
/// redacted again, as there).
struct LineFeed {
    redactor: Redactor,
    stream: RedactingStream,
    splitter: LineSplitter,
}

impl LineFeed {
    fn new(redactor: &Redactor) -> Self {
        Self {
            redactor: redactor.clone(),
            stream: redactor.stream(),
            splitter: LineSplitter::new(false),
        }
    }

    /// Feeds one read.
    fn push(&mut self, chunk: &[u8], mut line: impl FnMut(String)) {
        let clean = self.stream.push(chunk);
        let redactor = &self.redactor;
        self.splitter.push(&clean, |l| line(text_of(redactor, l)));
    }

    /// Ends the stream.
    fn finish(self, mut line: impl FnMut(String)) {
        let Self {
            redactor,
            stream,
            mut splitter,
        } = self;
        splitter.push(&stream.finish(), |l| line(text_of(&redactor, l)));
        splitter.finish(|l| line(text_of(&redactor, l)));
    }
}

/// The text the log sink stores for a line.
fn text_of(redactor: &Redactor, line: LogLine) -> String {
    let text = match line {
        LogLine::Plain(text) => text,
        LogLine::Rendered(text) => redactor.redact(&text),
        LogLine::Dropped(bytes) => format!("dropped {bytes} bytes"),
    };
    match shorten(&text, 16 * 1024) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(short) => short,
    }
}

/// Redacts `output` as one exec stream in `CHUNK`-byte reads and hands each line on.
fn redact_lines(redactor: &Redactor, output: &[u8], mut line: impl FnMut(String)) {
    let mut feed = LineFeed::new(redactor);
    for chunk in output.chunks(CHUNK) {
        feed.push(chunk, &mut line);
    }
    feed.finish(line);
}

/// One backend under test: the product's store and a plain pool on the same database for the
/// naive table.
struct Backend {
    name: &'static str,
    store: Store,
    raw: Raw,
    user_id: String,
}

enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever raw pool is configured.
macro_rules! with_raw {
    ($raw:expr, $pool:ident => $body:expr) => {
        match $raw {
            Raw::Sqlite($pool) => $body,
            Raw::Postgres($pool) => $body,
        }
    };
}

impl Backend {
    async fn new(name: &'static str, url: &str) -> Self {
        let store = Store::open(url).await.expect("open store");
        let raw = if url.starts_with("sqlite") {
            // The same settings as the product's own SQLite pool.
            let options = SqliteConnectOptions::from_str(url)
                .expect("SQLite URL")
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10));
            Raw::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await
                    .expect("SQLite pool"),
            )
        } else {
            Raw::Postgres(
                PgPoolOptions::new()
                    .max_connections(1)
                    .connect(url)
                    .await
                    .expect("PostgreSQL pool"),
            )
        };
        with_raw!(&raw, pool => {
            sqlx::query("CREATE TABLE IF NOT EXISTS naive_logs (task_id TEXT PRIMARY KEY, lines TEXT NOT NULL)")
                .execute(pool)
                .await
                .expect("create naive_logs");
        });
        let user = store
            .upsert_user(&GithubProfile {
                github_id: 4242,
                login: "bench",
                name: None,
                email: None,
                avatar_url: None,
            })
            .await
            .expect("bench user");
        Self {
            name,
            store,
            raw,
            user_id: user.id,
        }
    }

    async fn new_task(&self) -> String {
        self.store
            .insert_task(&NewTask {
                user_id: &self.user_id,
                title: "ingest bench",
                prompt: "bench",
                repo: "bench/bench",
                base_branch: None,
                agent: "scripted",
                model: None,
                install_deps: false,
                max_duration_s: 3600,
                keep_alive: false,
                create_pr: false,
                origin: "api",
                source_url: None,
                network_policy: None,
                key_in_sandbox: false,
            })
            .await
            .expect("bench task")
            .id
    }

    /// The product: redact, split, append in batches of `BATCH`.
    async fn product(&self, redactor: &Redactor, output: &[u8]) -> (Duration, usize) {
        let task_id = self.new_task().await;
        let started = Instant::now();
        let mut feed = LineFeed::new(redactor);
        let mut pending: Vec<NewEvent> = Vec::with_capacity(BATCH);
        let mut stored = 0;
        let to_event = |text| NewEvent {
            kind: "stdout",
            text,
            source: None,
        };
        for chunk in output.chunks(CHUNK) {
            feed.push(chunk, |text| pending.push(to_event(text)));
            if pending.len() >= BATCH {
                let batch = std::mem::take(&mut pending);
                for part in batch.chunks(BATCH) {
                    stored += self
                        .store
                        .append_task_events(&task_id, part)
                        .await
                        .expect("append")
                        .len();
                }
            }
        }
        feed.finish(|text| pending.push(to_event(text)));
        for part in pending.chunks(BATCH) {
            stored += self
                .store
                .append_task_events(&task_id, part)
                .await
                .expect("append")
                .len();
        }
        (started.elapsed(), stored)
    }

    /// The naive design: per line, read the task's JSON array, push, write it back. Stops after
    /// `limit`; answers the elapsed time after each line.
    async fn naive(&self, redactor: &Redactor, output: &[u8], limit: Duration) -> Vec<Duration> {
        let task_id = self.new_task().await;
        with_raw!(&self.raw, pool => {
            sqlx::query("INSERT INTO naive_logs (task_id, lines) VALUES ($1, '[]')")
                .bind(&task_id)
                .execute(pool)
                .await
                .expect("naive row");
        });
        let started = Instant::now();
        let mut lines = Vec::new();
        redact_lines(redactor, output, |text| lines.push(text));
        let mut marks = Vec::with_capacity(lines.len());
        for text in lines {
            with_raw!(&self.raw, pool => {
                let json: String = sqlx::query_scalar("SELECT lines FROM naive_logs WHERE task_id = $1")
                    .bind(&task_id)
                    .fetch_one(pool)
                    .await
                    .expect("naive read");
                let mut array: Vec<String> = serde_json::from_str(&json).expect("naive json");
                array.push(text);
                sqlx::query("UPDATE naive_logs SET lines = $2 WHERE task_id = $1")
                    .bind(&task_id)
                    .bind(serde_json::to_string(&array).expect("naive json"))
                    .execute(pool)
                    .await
                    .expect("naive write");
            });
            let elapsed = started.elapsed();
            marks.push(elapsed);
            if elapsed >= limit {
                break;
            }
        }
        marks
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Least-squares fit of `t(k) = a·k + b·k²` (per-line cost growing linearly with the array);
/// answers the predicted seconds for `n` lines.
fn extrapolate(marks: &[Duration], n: usize) -> f64 {
    let (mut s22, mut s23, mut s24, mut s2t, mut s3t) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (i, t) in marks.iter().enumerate() {
        let k = (i + 1) as f64;
        let t = t.as_secs_f64();
        s22 += k * k;
        s23 += k * k * k;
        s24 += k * k * k * k;
        s2t += k * t;
        s3t += k * k * t;
    }
    let det = s22 * s24 - s23 * s23;
    let a = (s2t * s24 - s3t * s23) / det;
    let b = (s22 * s3t - s23 * s2t) / det;
    let n = n as f64;
    a * n + b * n * n
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Row {
    backend: &'static str,
    lines: usize,
    product_runs: usize,
    product_rate: f64,
    product_ms: f64,
    naive: String,
    ratio: String,
}

async fn bench_backend(
    backend: &Backend,
    inputs: &[(usize, Vec<u8>)],
    redactor: &Redactor,
) -> Vec<Row> {
    let reps = env_num("DRYDOCK_BENCH_REPS", 5).max(1) as usize;
    let naive_limit = Duration::from_secs(env_num("DRYDOCK_BENCH_NAIVE_SECS", 240));
    let mut rows = Vec::new();
    let mut naive_marks = Vec::new();
    for (n, output) in inputs {
        let n = *n;
        // One warm-up run, not counted.
        let _ = backend.product(redactor, output).await;
        let mut times = Vec::new();
        for _ in 0..reps {
            let (took, stored) = backend.product(redactor, output).await;
            assert_eq!(stored, n, "every line stored");
            times.push(took.as_secs_f64());
        }
        let product_s = median(times);
        let product_rate = n as f64 / product_s;
        eprintln!(
            "{} {n} lines: product median {:.3} s ({:.0} lines/s) over {reps} runs",
            backend.name, product_s, product_rate
        );

        // The naive design runs once, on the smallest input (capped in time); larger inputs
        // are extrapolated from the same curve.
        if naive_marks.is_empty() {
            naive_marks = backend.naive(redactor, output, naive_limit).await;
        }
        let marks = &naive_marks;
        let done = marks.len();
        let took = marks.last().map_or(0.0, Duration::as_secs_f64);
        let naive_rate = done as f64 / took;
        let tail = &marks[done.saturating_sub(1000)..];
        let tail_rate = (tail.len() - 1) as f64
            / (tail[tail.len() - 1] - tail[0])
                .as_secs_f64()
                .max(f64::EPSILON);
        let (naive, ratio) = if done == n {
            (
                format!(
                    "**{naive_rate:.0} lines/s** measured (all {n} lines in {took:.1} s, 1 run; \
                     last 1,000 lines at {tail_rate:.0} lines/s)"
                ),
                format!("{:.0}×", product_rate / naive_rate),
            )
        } else {
            let full = extrapolate(marks, n);
            (
                format!(
                    "**~{:.0} lines/s EXTRAPOLATED** (~{full:.0} s for {n} lines, from a fit \
                     t = a·k + b·k² to the measured run of {done} lines, {naive_rate:.0} lines/s \
                     over {took:.1} s)",
                    n as f64 / full
                ),
                format!(
                    "~{:.0}× (extrapolated); ≥{:.0}× vs the rate measured on fewer lines",
                    product_rate / (n as f64 / full),
                    product_rate / naive_rate,
                ),
            )
        };
        eprintln!("{} {n} lines: naive {naive}", backend.name);
        rows.push(Row {
            backend: backend.name,
            lines: n,
            product_runs: reps,
            product_rate,
            product_ms: product_s * 1000.0,
            naive,
            ratio,
        });
    }
    rows
}

/// A fresh PostgreSQL database on the server `admin` names; answers its URL and name.
async fn create_pg_database(admin: &str) -> (String, String) {
    let name = format!("drydock_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("reach DRYDOCK_TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create bench database");
    conn.close().await.ok();
    let (base, query) = match admin.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin, None),
    };
    let base = match base.rfind('/') {
        Some(slash) if slash > "postgres://".len() => &base[..slash],
        _ => base,
    };
    let url = match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    };
    (url, name)
}

async fn drop_pg_database(admin: &str, name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
        let _ = conn.close().await;
    }
}

async fn run() -> String {
    let secrets = make_secrets();
    let redactor = redactor(&secrets);
    let inputs: Vec<(usize, Vec<u8>)> = [10_000usize, 100_000]
        .into_iter()
        .map(|n| (n, make_output(n, &secrets)))
        .collect();

    // Redaction and line splitting alone, for scale.
    let mut redact_rows = Vec::new();
    for (n, output) in &inputs {
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let mut count = 0usize;
            redact_lines(&redactor, output, |_| count += 1);
            times.push(started.elapsed().as_secs_f64());
            assert_eq!(count, *n);
        }
        let s = median(times);
        redact_rows.push((*n, output.len(), s));
        // The fixture really carries secrets, and none survive.
        let mut all = String::new();
        redact_lines(&redactor, output, |l| {
            all.push_str(&l);
            all.push('\n');
        });
        assert!(secrets.iter().all(|s| !all.contains(s.as_str())));
        assert!(all.contains("[REDACTED"), "the fixture holds secrets");
    }

    let mut rows = Vec::new();
    let dir = tempfile::tempdir().expect("temporary directory");
    let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let sqlite = Backend::new("SQLite", &sqlite_url).await;
    rows.extend(bench_backend(&sqlite, &inputs, &redactor).await);
    sqlite.store.close().await;

    let mut notes = Vec::new();
    match std::env::var("DRYDOCK_TEST_POSTGRES_URL") {
        Ok(admin) => {
            let (url, name) = create_pg_database(&admin).await;
            let pg = Backend::new("PostgreSQL", &url).await;
            let pg_version: String = with_raw!(&pg.raw, pool => {
                sqlx::query_scalar("SHOW server_version").fetch_one(pool).await.unwrap_or_default()
            });
            let fsync: String = with_raw!(&pg.raw, pool => {
                sqlx::query_scalar("SHOW fsync").fetch_one(pool).await.unwrap_or_default()
            });
            let sync_commit: String = with_raw!(&pg.raw, pool => {
                sqlx::query_scalar("SHOW synchronous_commit").fetch_one(pool).await.unwrap_or_default()
            });
            notes.push(format!(
                "PostgreSQL {pg_version} on 127.0.0.1 (fsync={fsync}, synchronous_commit={sync_commit}); \
                 SQLite in WAL mode with synchronous=NORMAL, as the product opens it"
            ));
            rows.extend(bench_backend(&pg, &inputs, &redactor).await);
            pg.store.close().await;
            with_raw!(&pg.raw, pool => pool.close().await);
            drop_pg_database(&admin, &name).await;
        }
        Err(_) => notes.push("PostgreSQL skipped: DRYDOCK_TEST_POSTGRES_URL is not set".into()),
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "| backend | lines | product: batch append (256) | naive: JSON array rewritten per line | ratio |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for row in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | **{:.0} lines/s** (median of {}: {:.0} ms) | {} | **{}** |",
            row.backend,
            row.lines,
            row.product_rate,
            row.product_runs,
            row.product_ms,
            row.naive,
            row.ratio
        );
    }
    let _ = writeln!(out);
    for (n, bytes, s) in redact_rows {
        let _ = writeln!(
            out,
            "Redaction + line splitting alone ({SECRETS} known secrets + shapes, {CHUNK}-byte reads), {n} lines / {:.1} MB: {:.0} lines/s ({:.1} ms, median of 5).",
            bytes as f64 / 1e6,
            n as f64 / s,
            s * 1000.0
        );
    }
    for note in notes {
        let _ = writeln!(out, "{note}.");
    }
    out
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing we need: only run
    // when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let summary = runtime.block_on(run());
    println!("{summary}");
    if let Ok(path) = std::env::var("DRYDOCK_BENCH_OUT") {
        std::fs::write(&path, &summary).expect("write DRYDOCK_BENCH_OUT");
    }
}
