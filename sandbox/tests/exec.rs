//! Exec: streams, exit codes, bytes, stdin, cancellation, env isolation.

mod common;

use std::time::Duration;

use common::*;
use drydock_sandbox::{ExecExit, ExecSpec, OutputStream};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_keep_their_order_and_exit_codes_come_back() {
    let sbx = sandboxes("exec-order").await;
    let (sb, _g) = sandbox(&sbx, "exec-order").await;

    let script = "i=1; while [ $i -le 300 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done";
    let out = run(&sb, ExecSpec::shell(script)).await;
    assert_eq!(out.exit, ExecExit::Code(0));
    let expect = |prefix: &str| {
        (1..=300)
            .map(|i| format!("{prefix}{i}\n"))
            .collect::<String>()
    };
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expect("out"));
    assert_eq!(String::from_utf8(out.stderr).unwrap(), expect("err"));

    assert_eq!(
        run(&sb, ExecSpec::shell("exit 42")).await.exit,
        ExecExit::Code(42)
    );
    assert_eq!(
        run(&sb, ExecSpec::new(["false"])).await.exit,
        ExecExit::Code(1)
    );
    let missing = run(&sb, ExecSpec::new(["no-such-program-here"])).await;
    assert_eq!(missing.exit, ExecExit::Code(127), "{missing:?}");
    // Killed by a signal: 128 + signal, as a shell reports it.
    assert_eq!(
        run(&sb, ExecSpec::shell("kill -TERM $$")).await.exit,
        ExecExit::Code(143)
    );

    // argv is passed as is: no shell expansion of any element.
    let literal = run(&sb, ExecSpec::new(["echo", "$HOME", "*", "a b;c", "`id`"])).await;
    assert_eq!(literal.stdout_str(), "$HOME * a b;c `id`\n");

    // Working directory and user can be chosen per exec.
    let c = run(
        &sb,
        ExecSpec::new(["sh", "-c", "pwd; id -u"])
            .workdir("/tmp")
            .user("0"),
    )
    .await;
    assert_eq!(c.stdout_str(), "/tmp\n0\n");
    sb.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_invalid_utf8_output_arrive_byte_for_byte() {
    let sbx = sandboxes("exec-binary").await;
    let (sb, _g) = sandbox(&sbx, "exec-binary").await;

    let out = run(
        &sb,
        ExecSpec::new([
            "python3",
            "-c",
            "import sys\nsys.stdout.buffer.write(bytes(range(256)) * 4096)\nsys.stderr.buffer.write(b'\\xff\\xfe\\x00bad\\xc3')",
        ]),
    )
    .await;
    assert_eq!(out.exit, ExecExit::Code(0));
    let expected: Vec<u8> = (0..4096).flat_map(|_| 0u8..=255).collect();
    assert_eq!(out.stdout.len(), expected.len());
    assert!(out.stdout == expected, "stdout bytes differ");
    assert_eq!(out.stderr, b"\xff\xfe\x00bad\xc3");
    sb.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_exec_env_is_not_visible_to_a_later_exec() {
    let sbx = sandboxes("exec-env").await;
    let spec = sbx.spec("exec-env").env("VISIBLE_TO_ALL", "plain");
    let sb = sbx.create(spec).await.unwrap();
    let _g = Cleanup(sb.id().to_owned());

    let first = run(
        &sb,
        ExecSpec::shell("echo \"$AGENT_KEY/$VISIBLE_TO_ALL\"").env("AGENT_KEY", "sk-test-123"),
    )
    .await;
    assert_eq!(first.stdout_str(), "sk-test-123/plain\n");

    // A later exec sees neither the variable nor the value anywhere in the
    // environments of the processes it can read.
    let later = run(
        &sb,
        ExecSpec::shell(
            "echo \"[$AGENT_KEY]\"; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c sk-test-123; true",
        ),
    )
    .await;
    assert_eq!(later.stdout_str(), "[]\n0\n");
    sb.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_can_be_fed_and_closed() {
    let sbx = sandboxes("exec-stdin").await;
    let (sb, _g) = sandbox(&sbx, "exec-stdin").await;

    let mut exec = sb
        .exec(&ExecSpec::new(["wc", "-c"]).with_stdin())
        .await
        .unwrap();
    let mut stdin = exec.take_stdin().expect("stdin was requested");
    let block = vec![b'x'; 1 << 20];
    let writer = tokio::spawn(async move {
        for _ in 0..10 {
            stdin.write_all(&block).await.unwrap();
        }
        stdin.shutdown().await.unwrap();
    });
    let mut stdout = Vec::new();
    while let Some(chunk) = exec.next().await {
        let chunk = chunk.unwrap();
        if chunk.stream == OutputStream::Stdout {
            stdout.extend_from_slice(&chunk.data);
        }
    }
    writer.await.unwrap();
    assert_eq!(exec.exit().await.unwrap(), ExecExit::Code(0));
    assert_eq!(
        String::from_utf8_lossy(&stdout).trim(),
        (10 << 20).to_string()
    );

    // Without stdin, a reader sees end-of-file at once instead of hanging.
    let c = run(&sb, ExecSpec::new(["wc", "-c"])).await;
    assert_eq!(c.stdout_str().trim(), "0");
    sb.remove().await.unwrap();
}

async fn marker_processes(sb: &drydock_sandbox::Sandbox) -> String {
    // Only processes named `sleep` (not the shells whose command line
    // mentions it).
    sh(sb, "pgrep -a -x sleep | grep ' 4242$' || true").await
}

/// Waits until `n` marker processes run (a background job becomes `sleep`
/// only once it has exec'd, a moment after the shell moved on).
async fn await_markers(sb: &drydock_sandbox::Sandbox, n: usize) {
    let mut seen = 0;
    for _ in 0..100 {
        seen = marker_processes(sb).await.lines().count();
        if seen == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {n} marker processes, saw {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_kills_the_process_and_its_children() {
    let sbx = sandboxes("exec-cancel").await;
    let (sb, _g) = sandbox(&sbx, "exec-cancel").await;

    let mut exec = sb
        .exec(&ExecSpec::shell(
            "sleep 4242 & sleep 4242 & echo started; wait",
        ))
        .await
        .unwrap();
    let first = exec.next().await.unwrap().unwrap();
    assert_eq!(&first.data[..], b"started\n");
    await_markers(&sb, 2).await;

    let canceller = exec.canceller();
    tokio::spawn(async move { canceller.cancel().await.unwrap() })
        .await
        .unwrap();
    assert_eq!(exec.exit().await.unwrap(), ExecExit::Cancelled);
    assert_eq!(marker_processes(&sb).await, "");

    // Dropping an unfinished exec cancels it too.
    let mut dropped = sb
        .exec(&ExecSpec::shell("sleep 4242 & echo started; wait"))
        .await
        .unwrap();
    dropped.next().await.unwrap().unwrap();
    await_markers(&sb, 1).await;
    drop(dropped);
    let mut left = String::from("not checked");
    for _ in 0..100 {
        left = marker_processes(&sb).await;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, "", "an abandoned exec kept running");

    // The sandbox itself is unharmed, and the bookkeeping files of finished
    // and cancelled execs are gone (the one left is this exec's own).
    assert_eq!(sh(&sb, "echo alive").await, "alive");
    assert_eq!(sh(&sb, "ls -a /tmp | grep -c '^.drydock-exec-'").await, "1");
    sb.remove().await.unwrap();
}
