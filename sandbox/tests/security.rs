//! From inside a sandbox: who it runs as, what it may do, and how it ends.

mod common;

use std::time::Duration;

use bollard::query_parameters::StatsOptionsBuilder;
use common::*;
use drydock_sandbox::{ExecExit, ExecSpec, ExitReason, Limits, SandboxError, Sandboxes};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_uid_1000_without_capabilities_or_docker_socket() {
    let sbx = sandboxes("security").await;
    let (sb, _guard) = sandbox(&sbx, "sec-identity").await;

    assert_eq!(sh(&sb, "id -u").await, "1000");
    assert_eq!(sh(&sb, "id -g").await, "1000");
    assert_eq!(sh(&sb, "pwd").await, "/workspace");
    let status = sh(&sb, "cat /proc/self/status").await;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("{name} missing from /proc/self/status"))
    };
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert_eq!(field("CapPrm:"), "0000000000000000");
    assert_eq!(field("CapBnd:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");

    // Even an exec explicitly run as root has no capabilities.
    let root = run(
        &sb,
        ExecSpec::new(["grep", "CapEff", "/proc/self/status"]).user("0"),
    )
    .await;
    assert!(root.exit.success());
    assert!(
        root.stdout_str().contains("0000000000000000"),
        "{}",
        root.stdout_str()
    );

    // No Docker socket anywhere it usually lives, and no mounts from the host.
    let probe = run(
        &sb,
        ExecSpec::shell(
            "ls -la /var/run/docker.sock /run/docker.sock /var/run/docker /run/containerd 2>&1; \
             find / -xdev -name 'docker.sock' 2>/dev/null; true",
        ),
    )
    .await;
    let text = probe.stdout_str();
    assert!(
        !text.contains("docker.sock ->") && !text.contains("srw"),
        "{text}"
    );
    assert_eq!(
        text.matches("No such file or directory").count(),
        4,
        "{text}"
    );

    // What Docker itself says about the container.
    let inspect = sbx
        .docker()
        .unwrap()
        .inspect_container(sb.id(), None)
        .await
        .unwrap();
    let hc = inspect.host_config.unwrap();
    assert_eq!(hc.privileged, Some(false));
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
    assert!(
        hc.security_opt
            .unwrap()
            .iter()
            .any(|o| o.starts_with("no-new-privileges"))
    );
    assert_eq!(hc.init, Some(true));
    assert_eq!(hc.pids_limit, Some(256));
    assert_eq!(hc.memory, Some(512 * 1024 * 1024));
    assert_eq!(hc.memory_swap, Some(512 * 1024 * 1024));
    assert_eq!(hc.nano_cpus, Some(1_000_000_000));
    assert_eq!(hc.network_mode.as_deref(), Some("none"));
    assert!(hc.binds.unwrap_or_default().is_empty());
    assert!(inspect.mounts.unwrap_or_default().is_empty());
    let labels = inspect.config.unwrap().labels.unwrap();
    assert_eq!(
        labels.get("drydock.task").map(String::as_str),
        Some("sec-identity")
    );
    assert_eq!(
        labels.get("drydock.instance"),
        Some(&sbx.defaults().instance_id)
    );

    sb.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_hits_the_pids_limit_and_the_host_stays_healthy() {
    let sbx = sandboxes("forkbomb").await;
    let spec = sbx.spec("sec-forkbomb").limits(Limits {
        pids: 64,
        memory_bytes: 256 * 1024 * 1024,
        cpus: 0.5,
    });
    let sb = sbx.create(spec).await.unwrap();
    let _guard = Cleanup(sb.id().to_owned());

    let bomb = sb
        .exec(&ExecSpec::new(["bash", "-c", ":(){ :|:& };:"]))
        .await
        .unwrap();
    // Watch the pids cgroup through Docker until the bomb reaches the cap.
    let mut at_limit = None;
    for _ in 0..100 {
        let opts = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let stats = sbx
            .docker()
            .unwrap()
            .stats(sb.id(), Some(opts))
            .next()
            .await
            .unwrap()
            .unwrap();
        let pids = stats.pids_stats.unwrap();
        let (current, limit) = (pids.current.unwrap_or(0), pids.limit.unwrap_or(0));
        assert_eq!(limit, 64);
        assert!(
            current <= limit,
            "{current} processes with a limit of {limit}"
        );
        if current >= limit - 2 {
            at_limit = Some(current);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reached = at_limit.expect("the fork bomb never approached the pids limit");
    eprintln!("fork bomb held at {reached} processes (limit 64)");

    // The host can still start processes and the daemon still answers.
    let host = std::process::Command::new("sh")
        .args(["-c", "echo healthy"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&host.stdout).trim(), "healthy");
    sbx.ping().await.unwrap();
    let other = sbx
        .create(sbx.spec("sec-forkbomb-neighbour"))
        .await
        .unwrap();
    let _other_guard = Cleanup(other.id().to_owned());
    assert_eq!(sh(&other, "echo neighbour ok").await, "neighbour ok");
    other.remove().await.unwrap();

    // Killing the sandbox ends the bomb, and the reason is recorded.
    sb.kill().await.unwrap();
    drop(bomb);
    assert!(!sb.is_running().await.unwrap());
    assert_eq!(sb.exit_reason().await.unwrap(), Some(ExitReason::Killed));
    sb.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocating_beyond_the_memory_limit_is_reported_as_oom() {
    let sbx = sandboxes("oom").await;
    let spec = sbx.spec("sec-oom").limits(Limits {
        pids: 64,
        memory_bytes: 128 * 1024 * 1024,
        cpus: 1.0,
    });
    let sb = sbx.create(spec).await.unwrap();
    let _guard = Cleanup(sb.id().to_owned());

    // A small allocation is fine.
    let ok = run(
        &sb,
        ExecSpec::new(["python3", "-c", "x = b'a' * (32 << 20); print(len(x))"]),
    )
    .await;
    assert_eq!(ok.exit, ExecExit::Code(0));
    // Four times the limit is not.
    let big = run(
        &sb,
        ExecSpec::new(["python3", "-c", "x = b'a' * (512 << 20); print(len(x))"]),
    )
    .await;
    assert_eq!(
        big.exit,
        ExecExit::OutOfMemory,
        "stderr: {}",
        String::from_utf8_lossy(&big.stderr)
    );
    assert!(big.stdout.is_empty());
    // The sandbox survives its process being OOM-killed, and a later SIGKILL
    // that is not an OOM is not mistaken for one.
    assert_eq!(sh(&sb, "echo still here").await, "still here");
    let killed = run(&sb, ExecSpec::shell("kill -KILL $$")).await;
    assert_eq!(killed.exit, ExecExit::Code(137));

    // When the container then ends by a SIGKILL from outside (nothing
    // recorded by this handle), Docker's inspect data says OOM, and so do we.
    let kill = bollard::query_parameters::KillContainerOptionsBuilder::new()
        .signal("SIGKILL")
        .build();
    sbx.docker()
        .unwrap()
        .kill_container(sb.id(), Some(kill))
        .await
        .unwrap();
    let mut reason = None;
    for _ in 0..50 {
        reason = sb.exit_reason().await.unwrap();
        if reason.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reason, Some(ExitReason::OutOfMemory));
    sb.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleep_beyond_the_deadline_is_killed_and_reported() {
    let sbx = sandboxes("deadline").await;
    let spec = sbx.spec("sec-deadline").deadline(Duration::from_secs(3));
    let sb = sbx.create(spec).await.unwrap();
    let _guard = Cleanup(sb.id().to_owned());

    let out = run(&sb, ExecSpec::new(["sleep", "120"])).await;
    assert_eq!(out.exit, ExecExit::SandboxEnded(ExitReason::Deadline));
    assert!(!sb.is_running().await.unwrap());
    assert_eq!(sb.exit_reason().await.unwrap(), Some(ExitReason::Deadline));

    // A restarted server (fresh handle, nothing in memory) tells the same.
    let restarted = Sandboxes::connect(sbx.defaults().clone()).await.unwrap();
    let again = restarted.get(sb.id()).await.unwrap();
    assert_eq!(
        again.exit_reason().await.unwrap(),
        Some(ExitReason::Deadline)
    );

    // Nothing more runs in it.
    let err = sb.exec(&ExecSpec::new(["true"])).await.unwrap_err();
    assert!(matches!(err, SandboxError::NotRunning { .. }), "{err}");
    sb.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kill_and_remove_are_idempotent_and_say_why() {
    let sbx = sandboxes("lifecycle").await;
    let (a, _ga) = sandbox(&sbx, "sec-stop").await;
    assert_eq!(a.exit_reason().await.unwrap(), None);
    a.stop().await.unwrap();
    a.stop().await.unwrap();
    a.kill().await.unwrap();
    assert_eq!(a.exit_reason().await.unwrap(), Some(ExitReason::Stopped));
    // Also from a fresh handle, from Docker's data alone.
    let fresh = Sandboxes::connect(sbx.defaults().clone()).await.unwrap();
    assert_eq!(
        fresh
            .get(a.id())
            .await
            .unwrap()
            .exit_reason()
            .await
            .unwrap(),
        Some(ExitReason::Stopped)
    );
    a.remove().await.unwrap();
    a.remove().await.unwrap();
    a.stop().await.unwrap();
    a.kill().await.unwrap();
    assert_eq!(a.exit_reason().await.unwrap(), Some(ExitReason::Stopped));
    assert!(matches!(
        fresh.get(a.id()).await,
        Err(SandboxError::NotFound(_))
    ));

    let (b, _gb) = sandbox(&sbx, "sec-kill").await;
    b.kill().await.unwrap();
    assert_eq!(
        fresh
            .get(b.id())
            .await
            .unwrap()
            .exit_reason()
            .await
            .unwrap(),
        Some(ExitReason::Killed)
    );
    b.remove().await.unwrap();
    assert_eq!(b.exit_reason().await.unwrap(), Some(ExitReason::Killed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_daemon_is_a_clear_error() {
    let err = Sandboxes::connect_to("unix:///nonexistent/docker.sock", defaults("nodaemon"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SandboxError::DaemonUnavailable { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("unix:///nonexistent/docker.sock") && text.contains("does not answer"),
        "{text}"
    );

    let mut d = defaults("noimage");
    d.image = "drydock-test-no-such-image:never".into();
    let sbx = Sandboxes::connect(d).await.unwrap();
    sbx.ping().await.unwrap();
    let err = sbx.create(sbx.spec("no-image")).await.unwrap_err();
    assert!(matches!(err, SandboxError::ImageNotFound(_)), "{err}");
    assert!(err.to_string().contains("build-offline"), "{err}");
}

/// A one-shot HTTP responder on the host's loopback, standing in for a
/// service a sandbox in host mode may reach.
async fn loopback_responder() -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("local addr").port();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let _ = conn
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                )
                .await;
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_mode_none_isolates_and_host_reaches_loopback_services() {
    let (port, server) = loopback_responder().await;
    let url = format!("http://127.0.0.1:{port}/");
    let sbx = sandboxes("network").await;

    let isolated = sbx.create(sbx.spec("net-none")).await.unwrap();
    let _g1 = Cleanup(isolated.id().to_owned());
    // Only the loopback interface exists.
    let ifaces = sh(&isolated, "ls /sys/class/net").await;
    assert_eq!(ifaces, "lo");
    let refused = run(
        &isolated,
        ExecSpec::new(["curl", "-s", "--max-time", "5", &url]),
    )
    .await;
    assert!(
        !refused.exit.success(),
        "reached the host from network mode none"
    );

    let host = sbx
        .create(
            sbx.spec("net-host")
                .network(drydock_sandbox::NetworkMode::Host),
        )
        .await
        .unwrap();
    let _g2 = Cleanup(host.id().to_owned());
    let reached = run(
        &host,
        ExecSpec::new(["curl", "-s", "--max-time", "5", &url]),
    )
    .await;
    assert!(reached.exit.success(), "{reached:?}");
    assert_eq!(reached.stdout_str(), "hello");

    isolated.remove().await.unwrap();
    host.remove().await.unwrap();
    server.abort();
}
