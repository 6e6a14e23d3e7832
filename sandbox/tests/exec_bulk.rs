//! 1 GiB through an exec's stdout in bounded memory. Alone in its own test
//! binary so the process's peak RSS belongs to this test only.

mod common;

use common::*;
use drydock_sandbox::{ExecExit, ExecSpec, OutputStream};
use futures::StreamExt;

/// Resident set size figures of this process, in KiB.
fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} missing from /proc/self/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_of_output_flows_through_in_bounded_memory() {
    let sbx = sandboxes("exec-bulk").await;
    let (sb, _g) = sandbox(&sbx, "exec-bulk").await;
    const TOTAL: u64 = 1 << 30;

    let before = rss_kib("VmRSS:");
    let mut exec = sb
        .exec(&ExecSpec::shell(format!(
            "head -c {TOTAL} /dev/zero | tr '\\0' 'z'; echo done >&2"
        )))
        .await
        .unwrap();
    let (mut stdout_bytes, mut stderr) = (0u64, Vec::new());
    let mut max_rss = before;
    let mut chunks = 0u64;
    while let Some(chunk) = exec.next().await {
        let chunk = chunk.unwrap();
        match chunk.stream {
            OutputStream::Stdout => {
                assert!(
                    chunk.data.iter().all(|b| *b == b'z'),
                    "unexpected byte in stdout"
                );
                stdout_bytes += chunk.data.len() as u64;
            }
            OutputStream::Stderr => stderr.extend_from_slice(&chunk.data),
        }
        chunks += 1;
        if chunks.is_multiple_of(256) {
            max_rss = max_rss.max(rss_kib("VmRSS:"));
        }
    }
    assert_eq!(exec.exit().await.unwrap(), ExecExit::Code(0));
    assert_eq!(stdout_bytes, TOTAL);
    assert_eq!(stderr, b"done\n");
    let peak = rss_kib("VmHWM:");
    eprintln!(
        "1 GiB in {chunks} chunks; RSS before {before} KiB, max sampled {max_rss} KiB, peak (VmHWM) {peak} KiB"
    );
    // Holding the output would need over 1 GiB; streaming needs a few frames.
    assert!(
        peak < before + 128 * 1024,
        "peak RSS {peak} KiB grew more than 128 MiB over {before} KiB"
    );
    sb.remove().await.unwrap();
}
