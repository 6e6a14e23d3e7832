//! Redaction throughput over realistic log text, against naive baselines.
//!
//! Run with `cargo bench -p drydock --bench redact`. Results go to docs/BENCHMARKS.md.
//!
//! Time is the benchmark thread's own CPU time (Linux `/proc/thread-self/schedstat`),
//! not wall-clock time: the build machine is shared with parallel builds that keep
//! both cores busy, which makes wall-clock figures swing by 2x between runs. For this
//! single-threaded code the two agree on an idle machine. `DRYDOCK_BENCH_CLOCK=wall`
//! measures wall-clock time instead (also the fallback where schedstat is missing).

use std::hint::black_box;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use drydock::redact::{Redactor, SecretSet};
use regex::Regex;

/// Size of the log text the redactor runs over.
const TEXT_BYTES: usize = 4 * 1024 * 1024;
/// The naive per-secret baseline is too slow for 4 MiB with many secrets; it runs on a
/// prefix of this size (throughput is per byte either way).
const NAIVE_BYTES: usize = 256 * 1024;

/// Nanoseconds of CPU time used by the calling thread (see the module docs).
struct ThreadCpuTime;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
static WALL: LazyLock<bool> =
    LazyLock::new(|| std::env::var("DRYDOCK_BENCH_CLOCK").is_ok_and(|v| v == "wall"));

fn now_ns() -> u64 {
    let cpu = || {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        stat.split_whitespace().next()?.parse::<u64>().ok()
    };
    match (*WALL, cpu()) {
        (false, Some(ns)) => ns,
        _ => u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX),
    }
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        now_ns()
    }
    fn end(&self, start: u64) -> u64 {
        now_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &NanosFormatter
    }
}

/// Formats nanoseconds, and byte throughput in decimal MB/s.
struct NanosFormatter;

impl ValueFormatter for NanosFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match typical {
            t if t < 1e3 => (1.0, "ns"),
            t if t < 1e6 => (1e-3, "µs"),
            t if t < 1e9 => (1e-6, "ms"),
            _ => (1e-9, "s"),
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (amount, unit) = match *throughput {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => (n as f64 / 1e6, "MB/s"),
            Throughput::Elements(n) | Throughput::ElementsAndBytes { elements: n, .. } => {
                (n as f64, "elem/s")
            }
            Throughput::Bits(n) => (n as f64 / 1e6, "Mbit/s"),
        };
        values.iter_mut().for_each(|v| *v = amount * 1e9 / *v);
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

/// Lines like the ones a build, a test run or an agent prints.
const LINES: &[&str] = &[
    "   Compiling serde_json v1.0.128",
    "   Compiling drydock-sandbox v0.1.0 (/work/main/sandbox)",
    "warning: unused variable: `task_id`",
    "  --> server/src/runner/mod.rs:142:13",
    "    |",
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

fn make_secrets(n: usize) -> Vec<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut rng = Rng(0x5EC2E7);
    (0..n)
        .map(|i| {
            let len = 16 + rng.below(49);
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

/// About `bytes` of log lines; one line in 500 carries a known secret, one in 1,000 a
/// well-known shape.
fn make_text(bytes: usize, secrets: &[String]) -> String {
    let mut rng = Rng(0xD0C4);
    let mut text = String::with_capacity(bytes + 256);
    while text.len() < bytes {
        let roll = rng.below(1000);
        if roll < 2 && !secrets.is_empty() {
            let secret = &secrets[rng.below(secrets.len())];
            text.push_str(&format!("export CONNECTOR_ENV={secret} # from settings"));
        } else if roll == 2 {
            text.push_str("remote: https://x-access-token:ghs_0123456789abcdefABCDEF0123456789abcd@github.com/o/r.git");
        } else {
            text.push_str(LINES[rng.below(LINES.len())]);
        }
        text.push('\n');
    }
    text
}

/// `text` as a terminal program prints it: every 10th line in colour, every 100th after a
/// `\r` progress frame.
fn colour(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i % 100 == 0 {
            out.push_str("\rdownloading 42%\r\x1b[K");
        }
        if i % 10 == 0 {
            out.push_str("\x1b[1;32m");
            out.push_str(line.trim_end_matches('\n'));
            out.push_str("\x1b[0m\n");
        } else {
            out.push_str(line);
        }
    }
    out
}

fn redactor(secrets: &[String]) -> Redactor {
    let mut set = SecretSet::new();
    for (i, s) in secrets.iter().enumerate() {
        let kind = ["anthropic-key", "github-token", "connector-secret"][i % 3];
        set.add(kind, s);
    }
    Redactor::new(set).expect("redactor builds")
}

/// The shapes as separate regexes, applied one at a time per line, the way a naive
/// redactor does it.
fn naive_shapes() -> Vec<Regex> {
    [
        r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY[A-Z ]{0,10}-----[A-Za-z0-9+/=\\ \t:,.-]*",
        r"\bsk-ant-[A-Za-z0-9_-]{20,}",
        r"\bsk-[A-Za-z0-9_-]{20,}",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})",
        r"\bAIza[A-Za-z0-9_-]{30,}",
        r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
        r"\b(?:xox[abeoprs]-[A-Za-z0-9-]{10,}|xapp-[0-9]+-[A-Za-z0-9-]{10,})",
        r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{20,}",
        r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
        r#"://[^\s/?#@:"'<>]{1,256}:[^\s/?#@"'<>]{1,256}@"#,
        r#"(?i)authorization["']?[ \t]*[:=][ \t]*["']?(?:(?:basic|bearer|token)[ \t]+)?[^\s"',;]{8,}"#,
        r"(?i)\bbearer[ \t]+[A-Za-z0-9._~+/=-]{8,}",
        r#"(?i)[A-Za-z0-9_.-]*(?:password|passwd|passphrase|secret)["']?[ \t]*[:=][ \t]*[^\s"',;]+"#,
        r#"(?i)[A-Za-z0-9_.-]*(?:token|key)["']?[ \t]*[:=][ \t]*[^\s"',;]{8,}"#,
    ]
    .iter()
    .map(|p| Regex::new(p).expect("baseline regex compiles"))
    .collect()
}

fn naive_shapes_per_line(shapes: &[Regex], text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let mut line = line.to_owned();
        for shape in shapes {
            if let std::borrow::Cow::Owned(replaced) = shape.replace_all(&line, "[REDACTED]") {
                line = replaced;
            }
        }
        out.push_str(&line);
    }
    out
}

fn naive_replace_per_secret(forms: &[String], text: &str) -> String {
    let mut out = text.to_owned();
    for form in forms {
        if out.contains(form.as_str()) {
            out = out.replace(form.as_str(), "[REDACTED]");
        }
    }
    out
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    let all_secrets = make_secrets(1000);
    let text = make_text(TEXT_BYTES, &all_secrets[..10]);
    let naive_text = &text[..text[..NAIVE_BYTES]
        .rfind('\n')
        .map_or(NAIVE_BYTES, |i| i + 1)];

    let mut group = c.benchmark_group("redactor");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::BytesDecimal(text.len() as u64));
    for n in [0usize, 10, 100, 1000] {
        let r = redactor(&all_secrets[..n]);
        group.bench_with_input(BenchmarkId::new("redact_bytes", n), &n, |b, _| {
            b.iter(|| black_box(r.redact_bytes(black_box(text.as_bytes()))));
        });
        group.bench_with_input(BenchmarkId::new("stream_64k_chunks", n), &n, |b, _| {
            b.iter(|| {
                let mut stream = r.stream();
                let mut out = Vec::with_capacity(text.len());
                for chunk in text.as_bytes().chunks(64 * 1024) {
                    stream.push_into(black_box(chunk), &mut out);
                }
                out.extend(stream.finish());
                black_box(out)
            });
        });
    }
    // Terminal output: every 10th line coloured (SGR) and every 100th a `\r` progress frame,
    // so the see-through path (escapes, rewrites) is measured too.
    let coloured = colour(&text);
    let r = redactor(&all_secrets[..1000]);
    group.throughput(Throughput::BytesDecimal(coloured.len() as u64));
    group.bench_with_input(
        BenchmarkId::new("stream_64k_chunks_coloured", 1000),
        &1000,
        |b, _| {
            b.iter(|| {
                let mut stream = r.stream();
                let mut out = Vec::with_capacity(coloured.len());
                for chunk in coloured.as_bytes().chunks(64 * 1024) {
                    stream.push_into(black_box(chunk), &mut out);
                }
                out.extend(stream.finish());
                black_box(out)
            });
        },
    );
    group.finish();

    // Building a task's redactor (once per task).
    let mut group = c.benchmark_group("build");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    for n in [10usize, 1000] {
        group.bench_with_input(BenchmarkId::new("redactor_new", n), &n, |b, &n| {
            b.iter(|| black_box(redactor(&all_secrets[..n])));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("naive");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let shapes = naive_shapes();
    group.throughput(Throughput::BytesDecimal(text.len() as u64));
    group.bench_function("shapes_one_regex_at_a_time_per_line", |b| {
        b.iter(|| black_box(naive_shapes_per_line(&shapes, black_box(&text))));
    });
    group.throughput(Throughput::BytesDecimal(naive_text.len() as u64));
    for n in [10usize, 100, 1000] {
        // The value and its base64 form, one `str::replace` each.
        let forms: Vec<String> = all_secrets[..n]
            .iter()
            .flat_map(|s| [s.clone(), STANDARD.encode(s)])
            .collect();
        group.bench_with_input(BenchmarkId::new("str_replace_per_secret", n), &n, |b, _| {
            b.iter(|| black_box(naive_replace_per_secret(&forms, black_box(naive_text))));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench
}
criterion_main!(benches);
