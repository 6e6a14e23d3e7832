//! Connection tests of stdio connectors: the command runs inside a short-lived sandbox (never on
//! the server host), and MCP is spoken over the exec's stdin and stdout.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drydock_sandbox::{ExecSpec, OutputStream};
use futures::StreamExt;
use tokio_util::io::StreamReader;

use super::mcp_client::{Probe, probe_stdio};
use crate::tasks::TaskRunner;

/// Starts `command args` with `env` in a fresh sandbox, lists its tools, removes the sandbox.
/// Errors are sentences for people (the caller scrubs secret values out of them).
pub async fn probe_in_sandbox(
    runner: &TaskRunner,
    connector_id: &str,
    command: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<Probe, String> {
    let sandboxes = runner.sandboxes().await.map_err(|_| {
        "Docker is not reachable from the drydock server, and stdio connectors are tested inside a sandbox"
            .to_owned()
    })?;
    let spec = sandboxes
        .spec(format!("connector-test-{connector_id}"))
        .deadline(timeout + Duration::from_secs(30));
    let sandbox = sandboxes
        .create(spec)
        .await
        .map_err(|err| format!("could not start a sandbox to run the command: {err}"))?;
    let result = talk(&sandbox, command, args, env, timeout).await;
    if let Err(err) = sandbox.remove().await {
        tracing::warn!(error = %err, "could not remove the connector test sandbox");
    }
    result
}

async fn talk(
    sandbox: &drydock_sandbox::Sandbox,
    command: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<Probe, String> {
    let argv = std::iter::once(command.to_owned()).chain(args.iter().cloned());
    let mut spec = ExecSpec::new(argv).with_stdin();
    for (name, value) in env {
        spec = spec.env(name.clone(), value.clone());
    }
    let mut output = sandbox
        .exec(&spec)
        .await
        .map_err(|err| format!("could not start the command: {err}"))?;
    let stdin = output
        .take_stdin()
        .ok_or_else(|| "the command's input could not be attached".to_owned())?;
    let canceller = output.canceller();
    // Keep the end of stderr: it usually says why a server did not answer.
    let stderr = Arc::new(Mutex::new(Vec::<u8>::new()));
    let stderr_in = stderr.clone();
    let stdout = output.filter_map(move |chunk| {
        let item = match chunk {
            Ok(chunk) if chunk.stream == OutputStream::Stdout => Some(Ok(chunk.data)),
            Ok(chunk) => {
                if let Ok(mut tail) = stderr_in.lock() {
                    tail.extend_from_slice(&chunk.data);
                    let excess = tail.len().saturating_sub(4096);
                    tail.drain(..excess);
                }
                None
            }
            Err(err) => Some(Err(std::io::Error::other(err.to_string()))),
        };
        std::future::ready(item)
    });
    let reader = StreamReader::new(Box::pin(stdout));
    let result = probe_stdio(stdin, reader, timeout).await;
    let _ = canceller.cancel().await;
    result.map_err(|err| {
        let tail = stderr
            .lock()
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .unwrap_or_default();
        match tail.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(line) => format!("{err}; the command printed: {}", line.trim()),
            None => err.to_string(),
        }
    })
}
