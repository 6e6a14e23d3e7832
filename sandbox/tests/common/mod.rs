//! Helpers shared by the Docker integration tests.
#![allow(dead_code)]

use std::time::Duration;

use drydock_sandbox::{
    ExecExit, ExecSpec, Limits, NetworkMode, OutputStream, Sandbox, SandboxDefaults, Sandboxes,
};
use futures::StreamExt;

/// The image under test; the test fails (not skips) without one.
pub fn image() -> String {
    match std::env::var("DRYDOCK_SANDBOX_IMAGE") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "DRYDOCK_SANDBOX_IMAGE is not set. Build the sandbox image with \
             `sandbox/image/build-offline` and export DRYDOCK_SANDBOX_IMAGE=<the tag it prints on its last line>"
        ),
    }
}

/// A fresh instance id, so parallel tests and earlier runs never see each
/// other's containers.
pub fn instance_id(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("test-{what}-{}-{nanos:x}", std::process::id())
}

/// Defaults for tests: no network, small limits, a deadline long enough for
/// any single test.
pub fn defaults(what: &str) -> SandboxDefaults {
    let mut d = SandboxDefaults::new(image(), instance_id(what));
    d.network = NetworkMode::None;
    d.limits = Limits {
        pids: 256,
        memory_bytes: 512 * 1024 * 1024,
        cpus: 1.0,
    };
    // Also the backstop that fails a hung test.
    d.deadline = Duration::from_secs(180);
    d.stop_grace = Duration::from_secs(2);
    d
}

pub async fn sandboxes(what: &str) -> Sandboxes {
    Sandboxes::connect(defaults(what))
        .await
        .expect("the Docker daemon must be running for these tests")
}

/// Removes a container when the test ends, even when it panics.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", "-v", &self.0])
            .output();
    }
}

/// Creates a sandbox for `task` with the instance's defaults.
pub async fn sandbox(sbx: &Sandboxes, task: &str) -> (Sandbox, Cleanup) {
    let sandbox = sbx.create(sbx.spec(task)).await.expect("create sandbox");
    let guard = Cleanup(sandbox.id().to_owned());
    (sandbox, guard)
}

/// What a finished exec produced.
#[derive(Debug)]
pub struct Collected {
    pub exit: ExecExit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Collected {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `spec` and gathers everything (only for small outputs).
pub async fn run(sandbox: &Sandbox, spec: ExecSpec) -> Collected {
    let mut out = sandbox.exec(&spec).await.expect("start exec");
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    while let Some(chunk) = out.next().await {
        let chunk = chunk.expect("exec output");
        match chunk.stream {
            OutputStream::Stdout => stdout.extend_from_slice(&chunk.data),
            OutputStream::Stderr => stderr.extend_from_slice(&chunk.data),
        }
    }
    let exit = out.exit().await.expect("exec exit");
    Collected {
        exit,
        stdout,
        stderr,
    }
}

/// Runs a shell script and returns its trimmed stdout, asserting success.
pub async fn sh(sandbox: &Sandbox, script: &str) -> String {
    let c = run(sandbox, ExecSpec::shell(script)).await;
    assert!(
        c.exit.success(),
        "`{script}` failed: {:?}, stderr: {}",
        c.exit,
        String::from_utf8_lossy(&c.stderr)
    );
    c.stdout_str().trim().to_owned()
}
