//! The sandbox contract: one set of test bodies, run against every backend.
//!
//! `docker::NAME` runs against the Docker daemon (`DOCKER_HOST` or the default socket), as the
//! other sandbox tests do; `kubernetes::NAME` runs against the cluster whose admin kubeconfig
//! `DRYDOCK_TEST_KUBECONFIG` names (`eval "$(scripts/services --kubernetes)"`), each test in a
//! namespace of its own that is deleted afterwards. Both need `DRYDOCK_SANDBOX_IMAGE` (loaded
//! into the cluster's nodes by the same script). A missing setting fails the test, never skips it.
//!
//! Run one backend with `cargo test -p drydock-sandbox --test contract -- docker::` (or
//! `kubernetes::`).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use drydock_sandbox::{
    ExecExit, ExecSpec, ExitReason, KubernetesOptions, LABEL_INSTANCE, LABEL_TASK, Limits,
    NetworkMode, OutputStream, Reap, Sandbox, SandboxDefaults, SandboxError, Sandboxes,
};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{Collected, image, instance_id, run, sh};

/// Which backend a test body runs against, and what it must clean up afterwards.
struct Env {
    backend: Backend,
    /// Every instance id handed out, so the Docker containers they label can be removed.
    instances: Mutex<Vec<String>>,
}

enum Backend {
    Docker,
    Kubernetes {
        kubeconfig: PathBuf,
        namespace: String,
        admin: kube::Client,
    },
}

impl Env {
    fn docker() -> Env {
        Env {
            backend: Backend::Docker,
            instances: Mutex::new(Vec::new()),
        }
    }

    /// A fresh namespace on the test cluster.
    async fn kubernetes(what: &str) -> Env {
        let kubeconfig = match std::env::var("DRYDOCK_TEST_KUBECONFIG") {
            Ok(v) if !v.is_empty() => PathBuf::from(v),
            _ => panic!(
                "DRYDOCK_TEST_KUBECONFIG is not set. Start the test cluster with \
                 `eval \"$(scripts/services --kubernetes)\"`; it exports the admin kubeconfig path"
            ),
        };
        let admin = admin_client(&kubeconfig).await;
        let namespace = kube_name(&format!("dd-{what}"));
        let ns = k8s_openapi::api::core::v1::Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(namespace.clone()),
                labels: Some(BTreeMap::from([(
                    "drydock.test".to_owned(),
                    "contract".to_owned(),
                )])),
                ..Default::default()
            },
            ..Default::default()
        };
        kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
            .create(&Default::default(), &ns)
            .await
            .expect("create the test namespace");
        Env {
            backend: Backend::Kubernetes {
                kubeconfig,
                namespace,
                admin,
            },
            instances: Mutex::new(Vec::new()),
        }
    }

    fn is_kubernetes(&self) -> bool {
        matches!(self.backend, Backend::Kubernetes { .. })
    }

    /// Test defaults (no network, small limits) for a new instance id.
    fn defaults(&self, what: &str) -> SandboxDefaults {
        let id = instance_id(what);
        self.instances.lock().expect("lock").push(id.clone());
        self.defaults_for(&id)
    }

    fn defaults_for(&self, instance: &str) -> SandboxDefaults {
        let mut d = SandboxDefaults::new(image(), instance);
        d.network = NetworkMode::None;
        d.limits = Limits {
            pids: 256,
            memory_bytes: 512 * 1024 * 1024,
            cpus: 1.0,
        };
        d.deadline = Duration::from_secs(300);
        d.stop_grace = Duration::from_secs(2);
        d
    }

    async fn connect(&self, defaults: SandboxDefaults) -> Sandboxes {
        match &self.backend {
            Backend::Docker => Sandboxes::connect(defaults)
                .await
                .expect("the Docker daemon must be running for these tests"),
            Backend::Kubernetes {
                kubeconfig,
                namespace,
                ..
            } => {
                let mut options = KubernetesOptions::new(namespace.clone());
                options.kubeconfig = Some(kubeconfig.clone());
                Sandboxes::connect_kubernetes(defaults, options)
                    .await
                    .expect("the test cluster must be up")
            }
        }
    }

    async fn sandboxes(&self, what: &str) -> Sandboxes {
        self.connect(self.defaults(what)).await
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        match &self.backend {
            Backend::Docker => {
                for id in self.instances.lock().map(|i| i.clone()).unwrap_or_default() {
                    let ids = std::process::Command::new("docker")
                        .args(["ps", "-aq", "--filter"])
                        .arg(format!("label={LABEL_INSTANCE}={id}"))
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default();
                    for c in ids.split_whitespace() {
                        let _ = std::process::Command::new("docker")
                            .args(["rm", "-f", "-v", c])
                            .output();
                    }
                }
            }
            Backend::Kubernetes {
                namespace, admin, ..
            } => {
                let (namespace, admin) = (namespace.clone(), admin.clone());
                // Drop cannot await, and the test's runtime may be shutting down.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async move {
                        let api = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(admin);
                        let _ = api.delete(&namespace, &Default::default()).await;
                    });
                })
                .join();
            }
        }
    }
}

async fn admin_client(kubeconfig: &std::path::Path) -> kube::Client {
    let file = kube::config::Kubeconfig::read_from(kubeconfig).expect("read the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .expect("load the kubeconfig");
    kube::Client::try_from(config).expect("kube client")
}

/// A unique DNS-label name beginning with `prefix`.
fn kube_name(prefix: &str) -> String {
    let id = instance_id("x");
    let tail = &id[id.len().saturating_sub(12)..];
    let mut name: String = format!("{prefix}-{}-{tail}", std::process::id())
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(63);
    name.trim_matches('-').to_owned()
}

/// Waits (bounded, as a backstop for a hung test) until `sandbox` has ended, and says why.
async fn ended(sandbox: &Sandbox) -> ExitReason {
    for _ in 0..600 {
        if let Some(reason) = sandbox.exit_reason().await.expect("exit reason") {
            return reason;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the sandbox did not end within two minutes");
}

// ---------------------------------------------------------------------------------------------
// The contract.

async fn create_is_hardened_and_labelled(env: Env) {
    let sbx = env.sandboxes("create").await;
    let sb = sbx
        .create(sbx.spec("contract-create").label("team", "blue"))
        .await
        .expect("create");
    assert!(sb.is_running().await.expect("is_running"));
    assert_eq!(sb.task_id(), "contract-create");
    assert_eq!(sh(&sb, "id -u; id -g").await, "1000\n1000");
    // No capabilities at all, not even in the bounding set, and no way to gain privileges.
    let status = sh(
        &sb,
        "grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/self/status",
    )
    .await;
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("CapBnd:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert_eq!(sh(&sb, "pwd").await, "/workspace");
    // The agent's exec names its user (`agent` in the image, uid 1000).
    let named = run(&sb, ExecSpec::new(["id", "-u"]).user("agent")).await;
    assert_eq!(named.exit, ExecExit::Code(0), "{named:?}");
    assert_eq!(named.stdout_str(), "1000\n");

    let listed = sbx.list(&[]).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    let info = &listed[0];
    assert_eq!(info.id, sb.id());
    assert_eq!(info.task_id.as_deref(), Some("contract-create"));
    assert_eq!(
        info.labels.get(LABEL_INSTANCE),
        Some(&sbx.defaults().instance_id)
    );
    assert_eq!(
        info.labels.get(LABEL_TASK).map(String::as_str),
        Some("contract-create")
    );
    assert_eq!(info.labels.get("team").map(String::as_str), Some("blue"));
    assert_eq!(info.state, "running");
    assert_eq!(
        sbx.of_task("contract-create").await.expect("of_task").len(),
        1
    );
    // Found again by id, as after a restart.
    let again = sbx.get(sb.id()).await.expect("get");
    assert_eq!(sh(&again, "echo hi").await, "hi");

    sb.remove().await.expect("remove");
    assert!(sbx.list(&[]).await.expect("list").is_empty());
    sb.remove().await.expect("remove is idempotent");
}

async fn exec_streams_output_and_exit_code(env: Env) {
    let sbx = env.sandboxes("exec").await;
    let sb = sbx.create(sbx.spec("contract-exec")).await.expect("create");
    // The first line must arrive while the command still runs: it waits for a file that only
    // a second exec creates after that line was read.
    let spec = ExecSpec::shell(
        "echo first; echo oops >&2; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo \"second $SECRET_NAME\"; exit 3",
    )
    .env("SECRET_NAME", "it's \"quoted\"\nand two lines");
    let mut out = sb.exec(&spec).await.expect("exec");
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    while !stdout.ends_with(b"first\n") {
        let chunk = out
            .next()
            .await
            .expect("output before the end")
            .expect("chunk");
        match chunk.stream {
            OutputStream::Stdout => stdout.extend_from_slice(&chunk.data),
            OutputStream::Stderr => stderr.extend_from_slice(&chunk.data),
        }
    }
    assert_eq!(sh(&sb, "touch /tmp/go && echo ok").await, "ok");
    while let Some(chunk) = out.next().await {
        let chunk = chunk.expect("chunk");
        match chunk.stream {
            OutputStream::Stdout => stdout.extend_from_slice(&chunk.data),
            OutputStream::Stderr => stderr.extend_from_slice(&chunk.data),
        }
    }
    assert_eq!(out.exit().await.expect("exit"), ExecExit::Code(3));
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        "first\nsecond it's \"quoted\"\nand two lines\n"
    );
    assert_eq!(String::from_utf8_lossy(&stderr), "oops\n");
    // The variable was this exec's only.
    assert_eq!(sh(&sb, "echo \"[${SECRET_NAME:-}]\"").await, "[]");

    // Working directory, success, a missing program, a large output in order.
    assert_eq!(
        run(&sb, ExecSpec::new(["pwd"]).workdir("/tmp"))
            .await
            .stdout_str(),
        "/tmp\n"
    );
    let missing = run(&sb, ExecSpec::new(["no-such-program-here"])).await;
    assert_eq!(missing.exit, ExecExit::Code(127), "{missing:?}");
    let big = run(&sb, ExecSpec::shell("seq 1 200000")).await;
    assert!(big.exit.success());
    let expected: String = (1..=200000).map(|n| format!("{n}\n")).collect();
    assert!(big.stdout == expected.as_bytes(), "large output differs");

    // Cancelling kills the command and what it started.
    let long = sb
        .exec(&ExecSpec::shell("sleep 300 & sleep 300; echo never"))
        .await
        .expect("exec");
    let canceller = long.canceller();
    canceller.cancel().await.expect("cancel");
    assert_eq!(long.exit().await.expect("exit"), ExecExit::Cancelled);
    // Only the main `sleep` is left once the killed ones are reaped.
    assert_eq!(
        sh(
            &sb,
            "for i in $(seq 100); do [ \"$(pgrep -c -x sleep)\" = 1 ] && break; sleep 0.1; done; pgrep -c -x sleep"
        )
        .await,
        "1"
    );
    sb.remove().await.expect("remove");
}

async fn an_exec_readied_ahead_runs_like_any_other(env: Env) {
    let sbx = env.sandboxes("ready").await;
    let sb = sbx
        .create(sbx.spec("contract-ready"))
        .await
        .expect("create");
    sb.ready_exec(None).await.expect("ready an exec");
    // On Docker the readied shell is running (once Docker has spawned it: starting an exec
    // returns before that), waiting on its stdin; an exec as another user does not take it.
    let waiting = if env.is_kubernetes() {
        None
    } else {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let line = loop {
            let ps = run(&sb, ExecSpec::new(["ps", "-eo", "pid=,args="]).user("root")).await;
            if let Some(line) = ps.stdout_str().lines().find(|l| l.contains("read -r n")) {
                break line.to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the readied shell runs: {}",
                ps.stdout_str()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Some(line.split_whitespace().next().expect("pid").to_owned())
    };
    let spec = ExecSpec::shell(
        "echo \"parent $PPID\"; echo oops >&2; pwd; echo \"[$SECRET_NAME]\"; exit 3",
    )
    .workdir("/tmp")
    .env("SECRET_NAME", "it's \"quoted\"\nand $HOME `two` lines");
    let out = run(&sb, spec).await;
    assert_eq!(out.exit, ExecExit::Code(3), "{out:?}");
    let stdout = out.stdout_str();
    let mut lines = stdout.lines();
    let parent = lines.next().expect("parent line");
    assert_eq!(
        lines.collect::<Vec<_>>().join("\n"),
        "/tmp\n[it's \"quoted\"\nand $HOME `two` lines]"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    // The command ran in the readied shell (its wrapper is the shell that was waiting).
    if let Some(pid) = waiting {
        assert_eq!(parent, format!("parent {pid}"));
    }
    // Used once: the next exec starts as usual.
    assert_eq!(sh(&sb, "echo again").await, "again");

    // A readied exec is cancelled like any other.
    sb.ready_exec(None).await.expect("ready an exec");
    let long = sb
        .exec(&ExecSpec::shell("sleep 300 & sleep 300; echo never"))
        .await
        .expect("exec");
    long.canceller().cancel().await.expect("cancel");
    assert_eq!(long.exit().await.expect("exit"), ExecExit::Cancelled);

    // An upload takes the sandbox user's readied exec: the tree arrives whole, modes kept,
    // owned by the sandbox user, and the readied shell is used up.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("sub")).expect("mkdir");
    std::fs::write(dir.path().join("sub/run.sh"), "#!/bin/sh\necho ran\n").expect("write");
    std::fs::write(dir.path().join("a.txt"), "alpha\n").expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        let exe = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(dir.path().join("sub/run.sh"), exe).expect("chmod");
    }
    sh(&sb, "mkdir -p /tmp/up").await;
    sb.ready_exec(None).await.expect("ready an exec");
    sb.upload_dir("/tmp/up", dir.path()).await.expect("upload");
    let owner = sb.user();
    assert_eq!(
        sh(
            &sb,
            "cat /tmp/up/a.txt; /tmp/up/sub/run.sh; stat -c '%u:%g %a' /tmp/up/sub/run.sh"
        )
        .await,
        format!("alpha\nran\n{}:{} 755", owner.uid, owner.gid)
    );
    if !env.is_kubernetes() {
        let ps = run(&sb, ExecSpec::new(["ps", "-eo", "args="]).user("root")).await;
        assert!(
            !ps.stdout_str().contains("read -r n"),
            "{}",
            ps.stdout_str()
        );
    }
    sb.remove().await.expect("remove");
}

async fn stdin_reaches_the_command_and_ends_with_eof(env: Env) {
    let sbx = env.sandboxes("stdin").await;
    let sb = sbx
        .create(sbx.spec("contract-stdin"))
        .await
        .expect("create");
    let mut out = sb
        .exec(&ExecSpec::shell("sha256sum; echo after-eof").with_stdin())
        .await
        .expect("exec");
    let mut stdin = out.take_stdin().expect("stdin");
    // More than one frame, with every byte value, including what looks like frame headers.
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| match i % 7 {
            0 => b'\n',
            1 => b'0',
            _ => (i % 256) as u8,
        })
        .collect();
    let expected = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&data);
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let writer = tokio::spawn(async move {
        stdin.write_all(&data).await.expect("write stdin");
        stdin.shutdown().await.expect("end stdin");
    });
    let mut collected = Collected {
        exit: ExecExit::Code(-1),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    while let Some(chunk) = out.next().await {
        let chunk = chunk.expect("chunk");
        match chunk.stream {
            OutputStream::Stdout => collected.stdout.extend_from_slice(&chunk.data),
            OutputStream::Stderr => collected.stderr.extend_from_slice(&chunk.data),
        }
    }
    writer.await.expect("writer");
    collected.exit = out.exit().await.expect("exit");
    assert!(collected.exit.success(), "{collected:?}");
    assert_eq!(
        collected.stdout_str(),
        format!("{expected}  -\nafter-eof\n")
    );

    // A command that ends without reading its input ends the exec all the same, and input
    // written after that goes nowhere without blocking the caller.
    let mut early = sb
        .exec(&ExecSpec::shell("echo bye; exit 4").with_stdin())
        .await
        .expect("exec");
    let mut stdin = early.take_stdin().expect("stdin");
    let mut said = Vec::new();
    while let Some(chunk) = early.next().await {
        said.extend_from_slice(&chunk.expect("chunk").data);
    }
    assert_eq!(said, b"bye\n");
    assert_eq!(early.exit().await.expect("exit"), ExecExit::Code(4));
    let _ = stdin.write_all(&[0u8; 4096]).await;
    drop(stdin);
    // Nothing an exec started to carry its input outlives it (the de-framer on Kubernetes,
    // whose script has `o=1; while`; the pattern below does not match its own command line).
    assert_eq!(
        sh(
            &sb,
            "for i in $(seq 100); do [ \"$(pgrep -c -f 'o=[1]; while')\" = 0 ] && break; sleep 0.1; done; pgrep -c -f 'o=[1]; while' || true"
        )
        .await,
        "0"
    );
    sb.remove().await.expect("remove");
}

async fn upload_and_write_file(env: Env) {
    let sbx = env.sandboxes("upload").await;
    let sb = sbx
        .create(sbx.spec("contract-upload"))
        .await
        .expect("create");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("src/deep")).expect("mkdir");
    std::fs::write(dir.path().join("README.md"), "hello\n").expect("write");
    std::fs::write(dir.path().join("src/deep/data.bin"), vec![7u8; 1 << 20]).expect("write");
    std::fs::write(dir.path().join("run.sh"), "#!/bin/sh\necho ran\n").expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("README.md", dir.path().join("link")).expect("symlink");
    }
    sb.upload_dir("/workspace", dir.path())
        .await
        .expect("upload");
    assert_eq!(sh(&sb, "cat README.md").await, "hello");
    assert_eq!(
        sh(&sb, "wc -c < src/deep/data.bin").await,
        (1 << 20).to_string()
    );
    assert_eq!(sh(&sb, "./run.sh").await, "ran");
    assert_eq!(sh(&sb, "readlink link").await, "README.md");
    assert_eq!(
        sh(&sb, "stat -c '%u:%g' README.md src/deep/data.bin").await,
        "1000:1000\n1000:1000"
    );

    sb.write_file(
        "/home/agent/.config/tool/secret.json",
        b"{\"k\":1}",
        0o600,
        None,
    )
    .await
    .expect("write_file");
    assert_eq!(
        sh(&sb, "stat -c '%a %u' /home/agent/.config/tool/secret.json").await,
        "600 1000"
    );
    assert_eq!(
        sh(&sb, "cat /home/agent/.config/tool/secret.json").await,
        "{\"k\":1}"
    );
    // A destination that does not exist is an error, not a silent no-op.
    assert!(
        sb.upload_dir("/no/such/dir", dir.path()).await.is_err(),
        "upload into a missing directory"
    );
    sb.remove().await.expect("remove");
}

async fn bundle_export(env: Env) {
    let sbx = env.sandboxes("export").await;
    let sb = sbx
        .create(sbx.spec("contract-export"))
        .await
        .expect("create");
    sh(
        &sb,
        "git init -q -b main . && git -c user.name=a -c user.email=a@b commit -q --allow-empty -m first \
         && echo work > file.txt && git add file.txt \
         && git -c user.name=a -c user.email=a@b commit -q -m 'the work' && echo ok",
    )
    .await;
    let mut bundle = sb
        .export(&ExecSpec::new(["git", "bundle", "create", "-", "--all"]))
        .await
        .expect("export");
    let mut bytes = Vec::new();
    while let Some(chunk) = bundle.next().await {
        bytes.extend_from_slice(&chunk.expect("bundle bytes"));
    }
    let host = tempfile::tempdir().expect("tempdir");
    let file = host.path().join("work.bundle");
    std::fs::write(&file, &bytes).expect("write bundle");
    let clone = host.path().join("clone");
    let status = std::process::Command::new("git")
        .args(["clone", "-q", "-b", "main"])
        .arg(&file)
        .arg(&clone)
        .status()
        .expect("git clone");
    assert!(status.success(), "the exported bundle clones");
    assert_eq!(
        std::fs::read_to_string(clone.join("file.txt")).expect("file"),
        "work\n"
    );

    // A failing export ends its stream with the command's error output.
    let mut failing = sb
        .export(&ExecSpec::shell(
            "echo partial; echo 'fatal: bad' >&2; exit 2",
        ))
        .await
        .expect("export");
    let mut last = None;
    while let Some(item) = failing.next().await {
        last = Some(item);
    }
    match last {
        Some(Err(SandboxError::ExportFailed { exit, stderr })) => {
            assert!(exit.contains('2'), "{exit}");
            assert!(stderr.contains("fatal: bad"), "{stderr}");
        }
        other => panic!("expected ExportFailed, got {other:?}"),
    }
    sb.remove().await.expect("remove");
}

async fn memory_limit_is_reported_as_oom(env: Env) {
    let sbx = env.sandboxes("oom").await;
    let spec = sbx.spec("contract-oom").limits(Limits {
        pids: 64,
        memory_bytes: 128 * 1024 * 1024,
        cpus: 1.0,
    });
    let sb = sbx.create(spec).await.expect("create");
    let ok = run(
        &sb,
        ExecSpec::new(["python3", "-c", "x = b'a' * (32 << 20); print(len(x))"]),
    )
    .await;
    assert_eq!(ok.exit, ExecExit::Code(0), "{ok:?}");
    let big = run(
        &sb,
        ExecSpec::new(["python3", "-c", "x = b'a' * (512 << 20); print(len(x))"]),
    )
    .await;
    assert_eq!(big.exit, ExecExit::OutOfMemory, "{big:?}");
    // The sandbox survives, and a SIGKILL that is not an OOM is not mistaken for one.
    assert_eq!(sh(&sb, "echo still here").await, "still here");
    let killed = run(&sb, ExecSpec::shell("kill -KILL $$")).await;
    assert_eq!(killed.exit, ExecExit::Code(137));
    sb.remove().await.expect("remove");
}

async fn deadline_ends_the_sandbox(env: Env) {
    let sbx = env.sandboxes("deadline").await;
    let sb = sbx
        .create(
            sbx.spec("contract-deadline")
                .deadline(Duration::from_secs(4)),
        )
        .await
        .expect("create");
    let running = sb.exec(&ExecSpec::shell("sleep 600")).await.expect("exec");
    // The exec in flight ends with the sandbox, and says why.
    assert_eq!(
        running.exit().await.expect("exit"),
        ExecExit::SandboxEnded(ExitReason::Deadline)
    );
    assert_eq!(ended(&sb).await, ExitReason::Deadline);
    match sb.exec(&ExecSpec::new(["true"])).await {
        Err(SandboxError::NotRunning { reason, .. }) => assert_eq!(reason, ExitReason::Deadline),
        Err(SandboxError::NotFound(_)) if env.is_kubernetes() => {
            panic!("a pod ended by its deadline should still report it")
        }
        other => panic!("exec after the deadline: {other:?}"),
    }
    sb.remove().await.expect("remove");
}

async fn reaping_after_restart_touches_only_this_instance(env: Env) {
    let ours = env.defaults("reap-ours");
    let theirs = env.defaults("reap-theirs");
    let first = env.connect(ours.clone()).await;
    let other = env.connect(theirs).await;
    let kept = first.create(first.spec("task-kept")).await.expect("create");
    let stale = first
        .create(first.spec("task-stale"))
        .await
        .expect("create");
    let foreign = other
        .create(other.spec("task-stale"))
        .await
        .expect("create foreign");

    // A restarted server: a new handle with the same instance id.
    let restarted = env.connect(ours).await;
    let removed = restarted
        .reap(Reap::NotIn(HashSet::from(["task-kept".to_owned()])))
        .await
        .expect("reap");
    assert_eq!(
        removed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec![stale.id()]
    );
    assert!(kept.is_running().await.expect("kept"));
    assert!(
        foreign.is_running().await.expect("foreign"),
        "another instance's sandbox must survive"
    );
    assert_eq!(
        restarted
            .list(&[])
            .await
            .expect("list")
            .into_iter()
            .map(|i| i.id)
            .collect::<Vec<_>>(),
        vec![kept.id().to_owned()]
    );
    // Another instance's sandbox is not even reachable through this one.
    assert!(matches!(
        restarted.get(foreign.id()).await,
        Err(SandboxError::NotFound(_))
    ));
    restarted.reap(Reap::All).await.expect("reap the rest");
    assert!(foreign.is_running().await.expect("foreign"));
    foreign.remove().await.expect("remove");
}

async fn port_relay_connects_to_a_port_inside(env: Env) {
    let sbx = env.sandboxes("port").await;
    let sb = sbx.create(sbx.spec("contract-port")).await.expect("create");
    // An upper-casing server that answers once the client has half-closed.
    let server = sb
        .exec(&ExecSpec::new([
            "python3",
            "-c",
            "import socket\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('127.0.0.1', 8765)); s.listen(1); print('listening', flush=True)\n\
             c, _ = s.accept(); data = b''\n\
             while True:\n    d = c.recv(65536)\n    if not d: break\n    data += d\n\
             c.sendall(data.upper()); c.close()\n",
        ]))
        .await
        .expect("server");
    let mut server = server;
    let first = server.next().await.expect("server output").expect("chunk");
    assert_eq!(&first.data[..], b"listening\n");

    let mut conn = sb.connect_port(8765).await.expect("connect");
    let payload: Vec<u8> = b"hello sandbox ".repeat(10_000);
    conn.write_all(&payload).await.expect("send");
    conn.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer)
        .await
        .expect("read the answer");
    assert!(
        answer == payload.to_ascii_uppercase(),
        "the answer differs ({} bytes back, {} sent)",
        answer.len(),
        payload.len()
    );
    assert!(server.exit().await.expect("server exit").success());

    assert!(matches!(
        sb.connect_port(8766).await,
        Err(SandboxError::PortClosed { port: 8766 })
    ));
    sb.remove().await.expect("remove");
}

async fn egress_listener_carries_connections_out(env: Env) {
    let sbx = env.sandboxes("egress").await;
    let sb = sbx
        .create(sbx.spec("contract-egress"))
        .await
        .expect("create");
    let mut listener = sb.egress_listener(8811).await.expect("listener");
    let host = tokio::spawn(async move {
        let mut conn = listener.accept().await.expect("a connection");
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.expect("read");
        conn.write_all(&[b"echo:".as_slice(), &got].concat())
            .await
            .expect("answer");
        conn.shutdown().await.expect("close");
        // Dropping the listener ends the relay and its connections: keep it until the
        // client has read the answer.
        listener
    });
    let client = sh(
        &sb,
        "python3 -c \"import socket\n\
         s = socket.create_connection(('127.0.0.1', 8811)); s.sendall(b'ping'); s.shutdown(socket.SHUT_WR)\n\
         print(s.makefile('rb').read().decode())\"",
    )
    .await;
    assert_eq!(client, "echo:ping");
    drop(host.await.expect("host side"));
    sb.remove().await.expect("remove");
}

async fn a_pooled_sandbox_is_claimed_by_a_task_and_reaped_unclaimed(env: Env) {
    let defaults = env.defaults("pool");
    let sbx = env.connect(defaults.clone()).await;
    let shape = sbx.spec("any").shape();
    let pool_life = Duration::from_secs(600);
    let pooled = sbx
        .create_pooled(&shape, pool_life)
        .await
        .expect("create a pooled sandbox");
    let listed = sbx.list(&[]).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].is_unclaimed_warm(), "{listed:?}");
    assert_eq!(
        listed[0].task_id, None,
        "a pooled sandbox belongs to no task"
    );
    assert_eq!(listed[0].pool.as_deref(), Some(shape.key().as_str()));
    // The pool's image check: what the image names now is what the pooled sandbox runs.
    assert_eq!(
        sbx.image_id(&image()).await.expect("image id"),
        Some(pooled.image_id().await.expect("its image id"))
    );
    let pool_deadline = pooled.deadline_unix().expect("a deadline");

    let claimed = pooled
        .clone()
        .claim("task-claims", Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(claimed.id(), pooled.id(), "the same sandbox, not a new one");
    assert_eq!(claimed.task_id(), "task-claims");
    let until = claimed.deadline_unix().expect("a deadline");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        until < pool_deadline && until <= now + 61 && until + 5 >= now + 60,
        "the task's deadline ({until}, now {now}) replaces the pool's ({pool_deadline})"
    );
    let of_task = sbx.of_task("task-claims").await.expect("of_task");
    assert_eq!(of_task.len(), 1, "{of_task:?}");
    assert!(!of_task[0].is_unclaimed_warm(), "{of_task:?}");
    assert_eq!(sh(&claimed, "echo claimed").await, "claimed");

    if let Backend::Kubernetes {
        admin, namespace, ..
    } = &env.backend
    {
        // What the cluster enforces: the task's labels and the lowered activeDeadlineSeconds.
        let pod =
            kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(admin.clone(), namespace)
                .get(claimed.id())
                .await
                .expect("the claimed pod");
        let labels = pod.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get(LABEL_TASK).map(String::as_str),
            Some("task-claims")
        );
        assert_eq!(labels.get(drydock_sandbox::LABEL_POOL), None, "{labels:?}");
        assert_eq!(
            labels.get(drydock_sandbox::LABEL_DEADLINE),
            Some(&until.to_string())
        );
        let spec = pod.spec.expect("spec");
        let active = spec.active_deadline_seconds.expect("activeDeadlineSeconds");
        let status = pod.status.expect("status");
        let started = status.start_time.expect("startTime").0.as_second() as u64;
        assert_eq!(
            started + active as u64,
            until,
            "activeDeadlineSeconds {active}"
        );
        assert!((60..600).contains(&active), "{active}");
    }

    // A restart adopts the claimed sandbox and removes the pooled one nobody took.
    let stale = sbx
        .create_pooled(&shape, pool_life)
        .await
        .expect("another pooled sandbox");
    let restarted = env.connect(defaults).await;
    let removed = restarted
        .reap(Reap::AllExcept(HashSet::from([claimed.id().to_owned()])))
        .await
        .expect("reap");
    assert_eq!(
        removed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec![stale.id()]
    );
    assert!(claimed.is_running().await.expect("claimed"));
    restarted.reap(Reap::All).await.expect("reap the rest");
}

/// One `docker::NAME` and one `kubernetes::NAME` test per body.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod docker {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Env::docker()).await
                }
            )*
        }
        mod kubernetes {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Env::kubernetes(stringify!($name)).await).await
                }
            )*
        }
    };
}

contract!(
    create_is_hardened_and_labelled,
    exec_streams_output_and_exit_code,
    an_exec_readied_ahead_runs_like_any_other,
    stdin_reaches_the_command_and_ends_with_eof,
    upload_and_write_file,
    bundle_export,
    memory_limit_is_reported_as_oom,
    deadline_ends_the_sandbox,
    reaping_after_restart_touches_only_this_instance,
    port_relay_connects_to_a_port_inside,
    egress_listener_carries_connections_out,
    a_pooled_sandbox_is_claimed_by_a_task_and_reaped_unclaimed,
);

// ---------------------------------------------------------------------------------------------
// What only the Kubernetes backend has: the pod as the API server keeps it, the default-deny
// NetworkPolicy, the Role drydock needs, and the clear refusals.

mod kubernetes_only {
    use super::*;
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
    use kube::Api;

    fn cluster(env: &Env) -> (kube::Client, String, PathBuf) {
        match &env.backend {
            Backend::Kubernetes {
                admin,
                namespace,
                kubeconfig,
            } => (admin.clone(), namespace.clone(), kubeconfig.clone()),
            Backend::Docker => unreachable!("a Kubernetes environment"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pod_keeps_every_hardening_field() {
        let env = Env::kubernetes("pod-spec").await;
        let (admin, ns, _) = cluster(&env);
        let sbx = env.sandboxes("pod-spec").await;
        let sb = sbx.create(sbx.spec("k8s-spec")).await.expect("create");
        // Read back from the API server: a 1.20 server drops fields it does not know, so this
        // is what the cluster actually enforces.
        let pod = Api::<Pod>::namespaced(admin, &ns)
            .get(sb.id())
            .await
            .expect("the pod");
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(LABEL_TASK).map(String::as_str), Some("k8s-spec"));
        assert_eq!(
            labels.get(LABEL_INSTANCE),
            Some(&sbx.defaults().instance_id)
        );
        assert!(labels.contains_key(drydock_sandbox::LABEL_DEADLINE));
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.enable_service_links, Some(false));
        assert_ne!(spec.host_network, Some(true));
        let deadline = spec.active_deadline_seconds.expect("activeDeadlineSeconds");
        assert!((299..=300).contains(&deadline), "{deadline}");
        let psc = spec.security_context.expect("pod securityContext");
        assert_eq!(psc.run_as_user, Some(1000));
        assert_eq!(psc.run_as_group, Some(1000));
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault")
        );
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some(image().as_str()));
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        let sc = c
            .security_context
            .clone()
            .expect("container securityContext");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(
            sc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault")
        );
        let limits = c.resources.clone().and_then(|r| r.limits).expect("limits");
        assert_eq!(
            limits.get("memory").map(|q| q.0.as_str()),
            Some("536870912")
        );
        assert_eq!(limits.get("cpu").map(|q| q.0.as_str()), Some("1"));
        // And inside: the seccomp filter is on.
        assert_eq!(
            sh(&sb, "grep '^Seccomp:' /proc/self/status").await,
            "Seccomp:\t2"
        );
        sb.remove().await.expect("remove");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_network_means_a_default_deny_policy_for_that_pod() {
        let env = Env::kubernetes("netpol").await;
        let (admin, ns, _) = cluster(&env);
        let policies = Api::<NetworkPolicy>::namespaced(admin, &ns);
        let sbx = env.sandboxes("netpol").await;
        let fenced = sbx.create(sbx.spec("k8s-fenced")).await.expect("create");
        let open = sbx
            .create(sbx.spec("k8s-open").network(NetworkMode::Bridge))
            .await
            .expect("create");
        // The test cluster's CNI (the `bridge` plugin) does not enforce NetworkPolicy, so this
        // checks the object an enforcing CNI acts on, not traffic.
        let policy = policies.get(fenced.id()).await.expect("the pod's policy");
        let spec = policy.spec.expect("spec");
        assert_eq!(
            spec.pod_selector
                .and_then(|s| s.match_labels)
                .unwrap_or_default(),
            BTreeMap::from([(
                drydock_sandbox::LABEL_POD.to_owned(),
                fenced.id().to_owned()
            )])
        );
        let mut types = spec.policy_types.unwrap_or_default();
        types.sort();
        assert_eq!(types, ["Egress", "Ingress"]);
        assert!(spec.ingress.unwrap_or_default().is_empty());
        assert!(spec.egress.unwrap_or_default().is_empty());
        assert!(policies.get_opt(open.id()).await.expect("get").is_none());
        let listed = policies
            .list(&Default::default())
            .await
            .expect("list")
            .items;
        assert_eq!(listed.len(), 1, "one policy, for the fenced pod only");

        fenced.remove().await.expect("remove");
        assert!(
            policies.get_opt(fenced.id()).await.expect("get").is_none(),
            "the policy goes with its pod"
        );
        open.remove().await.expect("remove");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn docker_only_operations_are_refused_naming_the_backend() {
        let env = Env::kubernetes("refusals").await;
        let sbx = env.sandboxes("refusals").await;
        let sb = sbx.create(sbx.spec("k8s-refusals")).await.expect("create");
        let err = sb
            .commit("drydock-snapshot", "x", BTreeMap::new())
            .await
            .expect_err("no docker commit on Kubernetes");
        assert!(
            matches!(
                err,
                SandboxError::Unsupported {
                    backend: "kubernetes",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("registry"), "{err}");
        assert!(sbx.list_images(&[]).await.is_err());
        assert!(matches!(
            sb.exec(&ExecSpec::new(["id"]).user("0")).await,
            Err(SandboxError::Unsupported { .. })
        ));
        sb.remove().await.expect("remove");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_api_server_that_does_not_answer_is_named_at_connect() {
        // Nothing listens on port 1 of this machine's loopback.
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": true}}],
            "users": [{"name": "u", "user": {"token": "not-a-token"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        });
        let file = tempfile::NamedTempFile::new().expect("tempfile");
        std::fs::write(file.path(), config.to_string()).expect("write kubeconfig");
        let mut options = KubernetesOptions::new("drydock");
        options.kubeconfig = Some(file.path().to_owned());
        let err = Sandboxes::connect_kubernetes(SandboxDefaults::new(image(), "x"), options)
            .await
            .expect_err("nothing answers");
        assert!(
            matches!(&err, SandboxError::ClusterUnavailable { server, .. } if server.contains("127.0.0.1:1")),
            "{err:?}"
        );
        assert!(err.to_string().contains("does not answer"), "{err}");
    }

    /// A kubeconfig for service account `sa` in `ns`, with a fresh token.
    async fn kubeconfig_for(
        admin: &kube::Client,
        admin_kubeconfig: &std::path::Path,
        ns: &str,
        sa: &str,
    ) -> tempfile::NamedTempFile {
        let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), ns);
        let account = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(sa.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        accounts
            .create(&Default::default(), &account)
            .await
            .expect("create the service account");
        let request = k8s_openapi::api::authentication::v1::TokenRequest {
            spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(3600),
                bound_object_ref: None,
            },
            ..Default::default()
        };
        let token = accounts
            .create_token_request(sa, &Default::default(), &request)
            .await
            .expect("a token")
            .status
            .expect("token status")
            .token;
        let file = kube::config::Kubeconfig::read_from(admin_kubeconfig).expect("read");
        let cluster = file.clusters[0].cluster.clone().expect("cluster");
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {
                "server": cluster.server,
                "certificate-authority": cluster.certificate_authority,
                "certificate-authority-data": cluster.certificate_authority_data,
            }}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": ns}}],
            "current-context": "x",
        });
        let out = tempfile::NamedTempFile::new().expect("tempfile");
        std::fs::write(out.path(), config.to_string()).expect("write kubeconfig");
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn works_with_exactly_the_documented_role_and_says_what_is_missing() {
        let env = Env::kubernetes("rbac").await;
        let (admin, ns, admin_kubeconfig) = cluster(&env);
        let kubeconfig = kubeconfig_for(&admin, &admin_kubeconfig, &ns, "drydock").await;
        let connect_with = |namespace: &str, warm_pool: bool| {
            let mut options = KubernetesOptions::new(namespace);
            options.kubeconfig = Some(kubeconfig.path().to_owned());
            options.warm_pool = warm_pool;
            let defaults = env.defaults("rbac");
            async move { Sandboxes::connect_kubernetes(defaults, options).await }
        };
        let connect = |namespace: &str| connect_with(namespace, false);
        let missing = |err: &SandboxError| match err {
            SandboxError::MissingRights { missing, .. } => missing.clone(),
            other => panic!("expected missing rights, got {other:?}"),
        };

        // No Role yet: start-up asks the API server about each right and names every one refused.
        let err = connect(&ns).await.expect_err("forbidden");
        assert_eq!(
            missing(&err),
            [
                "create pods",
                "get pods",
                "list pods",
                "watch pods",
                "delete pods",
                "create pods/exec",
                "get pods/exec",
                "get pods/log",
                "create networkpolicies",
                "get networkpolicies",
                "list networkpolicies",
                "delete networkpolicies",
            ]
        );
        assert!(err.to_string().contains(&format!("{ns:?}")), "{err}");

        // The Role of the Helm chart, verb for verb (notes: s5-common.md).
        let rule = |resources: &[&str], verbs: &[&str]| PolicyRule {
            api_groups: Some(vec![if resources[0] == "networkpolicies" {
                "networking.k8s.io".to_owned()
            } else {
                String::new()
            }]),
            resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            ..Default::default()
        };
        let role = Role {
            metadata: kube::api::ObjectMeta {
                name: Some("drydock".into()),
                ..Default::default()
            },
            rules: Some(vec![
                rule(&["pods"], &["create", "get", "list", "watch", "delete"]),
                rule(&["pods/exec"], &["create", "get"]),
                rule(&["pods/log"], &["get"]),
                rule(&["networkpolicies"], &["create", "get", "list", "delete"]),
            ]),
        };
        Api::<Role>::namespaced(admin.clone(), &ns)
            .create(&Default::default(), &role)
            .await
            .expect("create role");
        let binding = RoleBinding {
            metadata: kube::api::ObjectMeta {
                name: Some("drydock".into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: "drydock".into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: "drydock".into(),
                namespace: Some(ns.clone()),
                ..Default::default()
            }]),
        };
        Api::<RoleBinding>::namespaced(admin.clone(), &ns)
            .create(&Default::default(), &binding)
            .await
            .expect("create binding");

        // A namespace that does not exist is named as such.
        let err = connect("no-such-namespace-here")
            .await
            .expect_err("missing");
        assert!(
            matches!(&err, SandboxError::NamespaceMissing(n) if n == "no-such-namespace-here")
                || matches!(&err, SandboxError::MissingRights { namespace, .. } if namespace == "no-such-namespace-here"),
            "{err:?}"
        );

        // RBAC changes take a moment to reach the authorizer's cache.
        let mut sbx = None;
        for _ in 0..50 {
            match connect(&ns).await {
                Ok(s) => {
                    sbx = Some(s);
                    break;
                }
                Err(SandboxError::Forbidden { .. } | SandboxError::MissingRights { .. }) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("connect with the role: {e}"),
            }
        }
        let sbx = sbx.expect("the role is enough to connect");
        // With a warm pool, claiming relabels pods: the same Role lacks exactly `patch pods`.
        let err = connect_with(&ns, true).await.expect_err("no patch");
        assert_eq!(missing(&err), ["patch pods"]);
        let sb = sbx.create(sbx.spec("k8s-rbac")).await.expect("create");
        let mut input = sb
            .exec(&ExecSpec::shell("cat").with_stdin())
            .await
            .expect("exec");
        let mut stdin = input.take_stdin().expect("stdin");
        stdin.write_all(b"through the role").await.expect("write");
        stdin.shutdown().await.expect("eof");
        let mut got = Vec::new();
        while let Some(chunk) = input.next().await {
            got.extend_from_slice(&chunk.expect("chunk").data);
        }
        assert_eq!(got, b"through the role");
        assert!(input.exit().await.expect("exit").success());
        sb.upload_dir("/workspace", tempfile::tempdir().expect("dir").path())
            .await
            .expect("upload");
        assert_eq!(sbx.reap(Reap::All).await.expect("reap").len(), 1);

        // Rights taken away while running: the readiness check names them.
        Api::<RoleBinding>::namespaced(admin.clone(), &ns)
            .delete("drydock", &Default::default())
            .await
            .expect("delete binding");
        let mut refused = None;
        for _ in 0..50 {
            match sbx.ping().await {
                Ok(()) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let err = refused.expect("ping fails once the binding is gone");
        assert!(
            missing(&err).contains(&"create pods/exec".to_owned()),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_runtime_class_is_named_as_such() {
        let env = Env::kubernetes("runtimeclass").await;
        let (_, ns, kubeconfig) = cluster(&env);
        let mut options = KubernetesOptions::new(ns);
        options.kubeconfig = Some(kubeconfig);
        options.runtime_class = Some("no-such-runtime".into());
        let err = Sandboxes::connect_kubernetes(env.defaults("runtimeclass"), options)
            .await
            .expect_err("no such RuntimeClass");
        assert!(
            matches!(&err, SandboxError::RuntimeClassMissing(c) if c == "no-such-runtime"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("RuntimeClass \"no-such-runtime\" does not exist"),
            "{err}"
        );
    }

    /// An image the node cannot pull is named as a pull failure with the kubelet's reason, not
    /// as an image missing from a Docker host. (An invalid reference fails in the kubelet with
    /// no registry asked.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_image_the_node_cannot_pull_is_named_as_such() {
        let env = Env::kubernetes("nopull").await;
        let sbx = env.sandboxes("nopull").await;
        let mut spec = sbx.spec("contract-nopull");
        spec.image = "drydock/Not_A_Valid:Reference".into();
        let err = sbx
            .create(spec)
            .await
            .expect_err("an invalid image reference");
        assert!(
            matches!(&err, SandboxError::ImageNotPulled { reason, .. } if reason == "InvalidImageName"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("cannot pull the sandbox image") && !text.contains("Docker host"),
            "{text}"
        );
    }

    /// Credentials the API server refuses are named as such, not as a server that does not
    /// answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_credentials_are_named_as_such() {
        let env = Env::kubernetes("badtoken").await;
        let (_, ns, kubeconfig) = cluster(&env);
        let mut file = kube::config::Kubeconfig::read_from(&kubeconfig).expect("read");
        for user in &mut file.auth_infos {
            if let Some(auth) = user.auth_info.as_mut() {
                auth.client_certificate = None;
                auth.client_certificate_data = None;
                auth.client_key = None;
                auth.client_key_data = None;
                auth.token = Some("not-a-token-this-cluster-issued".to_owned().into());
            }
        }
        let bad = tempfile::NamedTempFile::new().expect("tempfile");
        std::fs::write(bad.path(), serde_json::to_string(&file).expect("json")).expect("write");
        let mut options = KubernetesOptions::new(ns);
        options.kubeconfig = Some(bad.path().to_owned());
        let err = Sandboxes::connect_kubernetes(env.defaults("badtoken"), options)
            .await
            .expect_err("a refused token");
        let text = err.to_string();
        assert!(
            text.contains("refused its credentials (401 Unauthorized)")
                && !text.contains("does not answer"),
            "{text}"
        );
    }
}
