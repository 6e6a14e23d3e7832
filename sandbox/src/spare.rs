//! A spare exec: on Docker, a shell started ahead in a sandbox that waits on its stdin for the
//! next command, so that command starts without Docker's exec start (`runc exec`: tens of
//! milliseconds on a busy host) on the task's critical path. It holds nothing until it is used:
//! the command, its directory and its variables (secrets included) travel as one
//! length-prefixed block on the exec's stdin, as on Kubernetes (see [`crate::k8s`]), then stdin
//! is closed (or handed to the command) and the shell becomes the command. At most one spare per
//! user, each used once, by the first exec that runs as its user; every other exec starts as
//! before.

use std::pin::Pin;
use std::sync::Arc;

use bollard::exec::CreateExecOptions;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::debug;

use crate::error::Result;
use crate::exec::{ExecHandle, RawOutput};
use crate::sandbox::{Backend, Shared};

/// A started shell waiting for its command.
pub(crate) struct SpareExec {
    /// The user it runs as, exactly as the exec that may use it names it.
    user: String,
    /// Docker's exec id.
    id: String,
    output: RawOutput,
    input: Pin<Box<dyn AsyncWrite + Send>>,
}

/// Starts a spare exec running as `user` in the sandbox, replacing an unused one. A no-op on
/// Kubernetes, whose execs already take their set-up from stdin.
pub(crate) async fn open(shared: &Arc<Shared>, user: &str) -> Result<()> {
    let Backend::Docker(docker) = &shared.backend else {
        return Ok(());
    };
    let options = CreateExecOptions::<String> {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        cmd: Some(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            crate::k8s::PROLOGUE.to_owned(),
            "drydock-exec".to_owned(),
        ]),
        privileged: Some(false),
        user: Some(user.to_owned()),
        working_dir: Some("/".to_owned()),
        ..Default::default()
    };
    let (id, output, input) = crate::exec::create_attached(shared, docker, options).await?;
    let spare = SpareExec {
        user: user.to_owned(),
        id,
        output,
        input,
    };
    debug!(container_id = %shared.id, exec_id = %spare.id, "spare exec ready");
    shared.put_spare(spare);
    Ok(())
}

/// Runs `argv` (already wrapped) with `env` in `workdir` through the sandbox's spare exec when it
/// has one for `user` that is still waiting; `None` when it has not (the caller starts an exec
/// as usual). With `stdin`, what follows the set-up block on the exec's stdin is the command's
/// (the shell reads the block byte by byte and `head -c` no further); without, stdin is closed.
pub(crate) async fn launch(
    shared: &Arc<Shared>,
    user: &str,
    workdir: &str,
    env: &[(String, String)],
    argv: &[String],
    stdin: bool,
) -> Option<(ExecHandle, RawOutput, Pin<Box<dyn AsyncWrite + Send>>)> {
    // Variables go through `export`: only shell names can.
    if !env.iter().all(|(name, _)| shell_name(name)) {
        return None;
    }
    let mut spare = shared.take_spare(user)?;
    let Backend::Docker(docker) = &shared.backend else {
        return None;
    };
    // A spare whose shell is gone (its sandbox was stopped) would swallow the command: ask first.
    match docker.inspect_exec(&spare.id).await {
        Ok(info) if info.running == Some(true) => {}
        _ => return None,
    }
    let mut setup = format!("cd -- {} || exit 125\n", quote(workdir));
    for (name, value) in env {
        setup.push_str(&format!("export {name}={}\n", quote(value)));
    }
    setup.push_str("set --");
    for arg in argv {
        setup.push(' ');
        setup.push_str(&quote(arg));
    }
    setup.push('\n');
    let mut block = format!("{}\n", setup.len()).into_bytes();
    block.extend_from_slice(setup.as_bytes());
    let written = async {
        spare.input.write_all(&block).await?;
        spare.input.flush().await?;
        if !stdin {
            spare.input.shutdown().await?;
        }
        Ok::<_, std::io::Error>(())
    };
    if let Err(err) = written.await {
        debug!(container_id = %shared.id, error = %err, "the spare exec did not take its command");
        return None;
    }
    debug!(container_id = %shared.id, exec_id = %spare.id, "exec started on the spare");
    Some((ExecHandle::Docker(spare.id), spare.output, spare.input))
}

impl SpareExec {
    /// Whether an exec running as `user` may use this spare.
    pub(crate) fn runs_as(&self, user: &str) -> bool {
        self.user == user
    }

    /// The user it runs as.
    pub(crate) fn user(&self) -> &str {
        &self.user
    }
}

/// A POSIX shell word that is exactly `value`.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Whether `name` can be set with `export` (letters, digits, `_`; not starting with a digit).
fn shell_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
}
