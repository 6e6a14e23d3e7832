//! Running commands in a sandbox: streamed output, stdin, exit status, cancellation.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWrite;
use tracing::{debug, warn};

use crate::error::{Result, SandboxError};
use crate::sandbox::{ExitReason, Shared};

/// Wraps every exec so it can be cancelled: the command runs in its own
/// session (process group = its pid, written to a pid file named by `$0`),
/// which `kill -KILL -- -PGID` ends together with all its children. The
/// caller's argv is passed through `"$@"`, never interpreted by the shell.
const WRAPPER_NO_STDIN: &str =
    r#"setsid "$@" </dev/null & p=$!; echo "$p" > "$0"; wait "$p"; r=$?; rm -f "$0"; exit $r"#;
/// Same, keeping the attached stdin (a background job would get /dev/null).
const WRAPPER_STDIN: &str = r#"exec 3<&0; setsid "$@" <&3 3<&- & p=$!; exec 3<&-; echo "$p" > "$0"; wait "$p"; r=$?; rm -f "$0"; exit $r"#;
/// Kills the process group recorded in the pid file `$1`, waiting briefly for
/// the file in case cancellation races the start. (`kill -9 -PGID`, not
/// `kill -KILL -- -PGID`: dash's builtin rejects the latter.)
const CANCEL_SCRIPT: &str = r#"i=0; while [ ! -s "$1" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; [ -s "$1" ] && kill -9 "-$(cat "$1")"; rm -f "$1"; exit 0"#;

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One piece of output, in the order the daemon delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    /// Which stream the bytes belong to.
    pub stream: OutputStream,
    /// The raw bytes (not necessarily UTF-8, not line-aligned).
    pub data: Bytes,
}

/// A command to run in a sandbox.
#[derive(Clone, Default)]
pub struct ExecSpec {
    /// Program and arguments, executed directly (no shell). To use a shell,
    /// pass `["sh", "-c", script]` explicitly.
    pub argv: Vec<String>,
    /// Environment for this exec only; later execs do not see it. This is
    /// where agent keys go. Values are never logged.
    pub env: Vec<(String, String)>,
    /// Working directory; the sandbox's (`/workspace`) when `None`.
    pub workdir: Option<String>,
    /// `uid`, `uid:gid` or a user name; the sandbox user when `None`.
    pub user: Option<String>,
    /// Attach stdin so the caller can feed it through [`ExecOutput::take_stdin`].
    pub stdin: bool,
}

impl std::fmt::Debug for ExecSpec {
    // Hand-written so env values (possibly secrets) never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSpec")
            .field("program", &self.argv.first())
            .field("args", &self.argv.len().saturating_sub(1))
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .field("workdir", &self.workdir)
            .field("user", &self.user)
            .field("stdin", &self.stdin)
            .finish()
    }
}

impl ExecSpec {
    /// A spec running `argv` directly.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            ..ExecSpec::default()
        }
    }

    /// A spec running `script` with `sh -c`.
    pub fn shell(script: impl Into<String>) -> Self {
        ExecSpec::new(["sh".to_owned(), "-c".to_owned(), script.into()])
    }

    /// Adds an environment variable for this exec only.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Sets the working directory.
    pub fn workdir(mut self, dir: impl Into<String>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// Sets the user (`uid`, `uid:gid` or a name).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Attaches stdin.
    pub fn with_stdin(mut self) -> Self {
        self.stdin = true;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.argv.is_empty() {
            return Err(SandboxError::Invalid("argv is empty".into()));
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return Err(SandboxError::Invalid("argv contains a NUL byte".into()));
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(SandboxError::Invalid(format!(
                    "invalid environment variable name {name:?}"
                )));
            }
            if value.contains('\0') {
                return Err(SandboxError::Invalid(format!(
                    "environment variable {name} contains a NUL byte"
                )));
            }
        }
        Ok(())
    }
}

/// How an exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExecExit {
    /// The command exited with this code (128+N when killed by signal N).
    Code(i64),
    /// The command was killed because the sandbox ran out of memory.
    OutOfMemory,
    /// The command was cancelled through [`ExecOutput::cancel`] or an
    /// [`ExecCanceller`].
    Cancelled,
    /// The whole sandbox ended while the command ran (deadline, stop, kill).
    SandboxEnded(ExitReason),
}

impl ExecExit {
    /// True when the command exited with code 0.
    pub fn success(&self) -> bool {
        matches!(self, ExecExit::Code(0))
    }

    /// The exit code, when the command exited by itself.
    pub fn code(&self) -> Option<i64> {
        match self {
            ExecExit::Code(c) => Some(*c),
            _ => None,
        }
    }
}

impl std::fmt::Display for ExecExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecExit::Code(c) => write!(f, "exit code {c}"),
            ExecExit::OutOfMemory => f.write_str("killed: out of memory"),
            ExecExit::Cancelled => f.write_str("cancelled"),
            ExecExit::SandboxEnded(r) => write!(f, "sandbox ended: {r}"),
        }
    }
}

pub(crate) type RawOutput = Pin<Box<dyn Stream<Item = Result<LogOutput>> + Send>>;

/// How to learn an exec's exit code once its output has closed.
pub(crate) enum ExecHandle {
    /// Docker's exec id, inspected for the code.
    Docker(String),
    /// The status Kubernetes sends on the exec's WebSocket when the command ends.
    Kubernetes(crate::k8s::ExecStatus),
}

impl ExecHandle {
    fn label(&self) -> String {
        match self {
            ExecHandle::Docker(id) => id.clone(),
            ExecHandle::Kubernetes(_) => "kubernetes exec".to_owned(),
        }
    }
}

/// Writes to a running exec's stdin. Call
/// [`shutdown`](tokio::io::AsyncWriteExt::shutdown) to send end-of-file.
pub struct ExecStdin {
    inner: Pin<Box<dyn AsyncWrite + Send>>,
}

impl AsyncWrite for ExecStdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.inner.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_shutdown(cx)
    }
}

/// Cancels a running exec from anywhere (clone it into another task).
#[derive(Clone)]
pub struct ExecCanceller {
    shared: Arc<Shared>,
    pidfile: String,
    user: String,
    cancelled: Arc<AtomicBool>,
    /// Set once the output closed: the command is over, nothing to kill.
    done: Arc<AtomicBool>,
}

impl ExecCanceller {
    /// Kills the command and every process it started (its process group).
    /// Safe to call more than once and after the command has ended.
    pub async fn cancel(&self) -> Result<()> {
        if self.done.load(Ordering::SeqCst) || self.cancelled.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        debug!(container_id = %self.shared.id, "cancelling exec");
        let spec = ExecSpec::new(["sh", "-c", CANCEL_SCRIPT, "sh", self.pidfile.as_str()])
            .user(self.user.clone());
        match run_plain(&self.shared, &spec).await {
            Ok(_) => Ok(()),
            // The sandbox is gone, and with it the process.
            Err(SandboxError::NotFound(_) | SandboxError::NotRunning { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A running exec: a [`Stream`] of [`OutputChunk`]s in arrival order, then
/// [`exit`](ExecOutput::exit) for how it ended. Nothing is buffered beyond
/// one frame from the daemon, so output of any size flows in bounded memory
/// as fast as the caller consumes it. Dropping it before the command ended
/// cancels the command.
pub struct ExecOutput {
    shared: Arc<Shared>,
    handle: Option<ExecHandle>,
    output: RawOutput,
    stdin: Option<ExecStdin>,
    canceller: ExecCanceller,
    ended: bool,
    finished: bool,
}

impl ExecOutput {
    /// The stdin writer, if the spec asked for stdin (only once).
    pub fn take_stdin(&mut self) -> Option<ExecStdin> {
        self.stdin.take()
    }

    /// A handle that cancels this exec from another task.
    pub fn canceller(&self) -> ExecCanceller {
        self.canceller.clone()
    }

    /// Cancels the command (see [`ExecCanceller::cancel`]).
    pub fn cancel(&self) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        let canceller = self.canceller.clone();
        async move { canceller.cancel().await }
    }

    /// Waits for the command to end and says how. Output not yet read is
    /// read and discarded.
    pub async fn exit(mut self) -> Result<ExecExit> {
        while let Some(item) = self.next().await {
            item?;
        }
        self.finished = true;
        let cancelled = self.canceller.cancelled.clone();
        let handle = self
            .handle
            .take()
            .ok_or_else(|| SandboxError::Invalid("exec status already taken".into()))?;
        status(self.shared.clone(), handle, cancelled).await
    }
}

/// The exit code of an exec whose output stream has closed; `None` when it
/// cannot be known (the sandbox went away under it).
async fn exit_code(shared: &Arc<Shared>, handle: ExecHandle) -> Result<Option<i64>> {
    let exec_id = match handle {
        ExecHandle::Docker(id) => id,
        ExecHandle::Kubernetes(status) => return Ok(status.code().await),
    };
    let docker = shared.backend.docker("a Docker exec", "")?;
    // The output stream can close a moment before Docker records the exit
    // code; poll briefly, and give up if the container itself is gone.
    for attempt in 0..250u32 {
        let info = docker.inspect_exec(&exec_id).await?;
        if info.running != Some(true) {
            return Ok(info.exit_code);
        }
        if attempt % 10 == 9 && !shared.is_running().await? {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(None)
}

/// How an exec ended, once its output stream has closed.
async fn status(
    shared: Arc<Shared>,
    handle: ExecHandle,
    cancelled: Arc<AtomicBool>,
) -> Result<ExecExit> {
    let code = exit_code(&shared, handle).await?;
    if cancelled.load(Ordering::SeqCst) {
        return Ok(ExecExit::Cancelled);
    }
    match code {
        Some(c) if c != 137 => Ok(ExecExit::Code(c)),
        other => {
            // 137 = SIGKILL: the OOM killer, the deadline, a kill, or the
            // command's own doing. Ask the sandbox which. When we ended
            // the sandbox ourselves (or its deadline passed), its
            // processes die a moment before Docker marks it exited: wait
            // for that instead of reporting a bare 137.
            if shared.ending() {
                for _ in 0..50 {
                    if !shared.is_running().await? {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            if !shared.is_running().await? {
                let reason = shared.exit_reason().await?;
                return Ok(ExecExit::SandboxEnded(
                    reason.unwrap_or(ExitReason::Exited(-1)),
                ));
            }
            if shared.oom_kills_increased().await? {
                return Ok(ExecExit::OutOfMemory);
            }
            Ok(ExecExit::Code(other.unwrap_or(-1)))
        }
    }
}

impl Stream for ExecOutput {
    type Item = Result<OutputChunk>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        loop {
            return match self.output.as_mut().poll_next(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => {
                    self.ended = true;
                    self.canceller.done.store(true, Ordering::SeqCst);
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Err(e))) => {
                    self.ended = true;
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let (stream, data) = match frame {
                        LogOutput::StdOut { message } | LogOutput::Console { message } => {
                            (OutputStream::Stdout, message)
                        }
                        LogOutput::StdErr { message } => (OutputStream::Stderr, message),
                        LogOutput::StdIn { .. } => continue,
                    };
                    Poll::Ready(Some(Ok(OutputChunk { stream, data })))
                }
            };
        }
    }
}

impl Drop for ExecOutput {
    fn drop(&mut self) {
        // `ended`: the output closed, so the command is done (or has detached
        // from its output on purpose); nothing to cancel.
        if self.finished || self.ended || self.canceller.cancelled.load(Ordering::SeqCst) {
            return;
        }
        // Abandoned mid-run: do not leave the command running unobserved.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let canceller = self.canceller.clone();
            let exec_id = self
                .handle
                .as_ref()
                .map(ExecHandle::label)
                .unwrap_or_default();
            handle.spawn(async move {
                if let Err(e) = canceller.cancel().await {
                    warn!(exec_id, error = %e, "could not cancel an abandoned exec");
                }
            });
        }
    }
}

static EXEC_SEQ: AtomicU64 = AtomicU64::new(0);

/// Starts `spec` wrapped for cancellation.
pub(crate) async fn start(shared: &Arc<Shared>, spec: &ExecSpec) -> Result<ExecOutput> {
    spec.validate()?;
    let user = spec.user.clone().unwrap_or_else(|| shared.default_user());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let pidfile = format!(
        "/tmp/.drydock-exec-{}-{nanos:x}-{}",
        std::process::id(),
        EXEC_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let wrapper = match (&shared.backend, spec.stdin) {
        (crate::sandbox::Backend::Kubernetes(_), true) => crate::k8s::STDIN_WRAPPER,
        (_, true) => WRAPPER_STDIN,
        (_, false) => WRAPPER_NO_STDIN,
    };
    let mut argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), wrapper.to_owned()];
    argv.push(pidfile.clone());
    argv.extend(spec.argv.iter().cloned());
    let workdir = spec.workdir.as_deref().unwrap_or(&shared.workdir);
    let spare = crate::spare::launch(shared, &user, workdir, &spec.env, &argv, spec.stdin).await;
    let (handle, output, input) = match spare {
        Some(started) => started,
        None => create_and_start(shared, spec, argv, &user).await?,
    };
    debug!(container_id = %shared.id, exec_id = handle.label(), program = ?spec.argv.first(), env_names = spec.env.len(), "exec started");
    Ok(ExecOutput {
        shared: shared.clone(),
        handle: Some(handle),
        output,
        stdin: spec.stdin.then_some(ExecStdin { inner: input }),
        canceller: ExecCanceller {
            shared: shared.clone(),
            pidfile,
            user,
            cancelled: Arc::new(AtomicBool::new(false)),
            done: Arc::new(AtomicBool::new(false)),
        },
        ended: false,
        finished: false,
    })
}

/// Runs a short internal helper command without the wrapper and collects its
/// stdout (bounded) and exit code.
pub(crate) async fn run_plain(shared: &Arc<Shared>, spec: &ExecSpec) -> Result<(i64, Vec<u8>)> {
    spec.validate()?;
    let user = spec.user.clone().unwrap_or_else(|| shared.default_user());
    let (handle, mut output, _input) =
        create_and_start(shared, spec, spec.argv.clone(), &user).await?;
    let mut stdout = Vec::new();
    while let Some(frame) = output.next().await {
        if let LogOutput::StdOut { message } = frame?
            && stdout.len() < 64 * 1024
        {
            stdout.extend_from_slice(&message);
        }
    }
    Ok((exit_code(shared, handle).await?.unwrap_or(-1), stdout))
}

/// Turns a failed exec request into "not found" / "not running (why)" when
/// the sandbox is the problem; Docker reports those as 404, 409 or 500.
pub(crate) async fn explain(shared: &Arc<Shared>, e: SandboxError) -> SandboxError {
    match shared.exit_reason().await {
        Ok(Some(ExitReason::Removed)) => SandboxError::NotFound(shared.id.clone()),
        Ok(Some(reason)) => SandboxError::NotRunning {
            id: shared.id.clone(),
            reason,
        },
        _ => match e {
            SandboxError::Docker(e) => shared.map_gone(e),
            e => e,
        },
    }
}

async fn create_and_start(
    shared: &Arc<Shared>,
    spec: &ExecSpec,
    argv: Vec<String>,
    user: &str,
) -> Result<(ExecHandle, RawOutput, Pin<Box<dyn AsyncWrite + Send>>)> {
    let docker = match &shared.backend {
        crate::sandbox::Backend::Docker(d) => d,
        crate::sandbox::Backend::Kubernetes(k) => {
            return crate::k8s::exec(k, shared, spec, argv, user).await;
        }
    };
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let options = CreateExecOptions::<String> {
        attach_stdin: Some(spec.stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        env: Some(env),
        cmd: Some(argv),
        privileged: Some(false),
        user: Some(user.to_owned()),
        working_dir: Some(
            spec.workdir
                .clone()
                .unwrap_or_else(|| shared.workdir.clone()),
        ),
        ..Default::default()
    };
    let (id, output, input) = create_attached(shared, docker, options).await?;
    Ok((ExecHandle::Docker(id), output, input))
}

/// Creates a Docker exec from `options` and starts it attached: its id, output and stdin.
pub(crate) async fn create_attached(
    shared: &Arc<Shared>,
    docker: &bollard::Docker,
    options: CreateExecOptions<String>,
) -> Result<(String, RawOutput, Pin<Box<dyn AsyncWrite + Send>>)> {
    let created = match docker.create_exec(&shared.id, options).await {
        Ok(created) => created,
        Err(e) => return Err(explain(shared, e.into()).await),
    };
    let start = StartExecOptions {
        detach: false,
        tty: false,
        output_capacity: Some(64 * 1024),
    };
    let started = match docker.start_exec(&created.id, Some(start)).await {
        Ok(started) => started,
        Err(e) => return Err(explain(shared, e.into()).await),
    };
    match started {
        StartExecResults::Attached { output, input } => Ok((
            created.id,
            output.map(|item| item.map_err(SandboxError::from)).boxed(),
            input,
        )),
        StartExecResults::Detached => Err(SandboxError::Invalid(
            "docker started the exec detached".into(),
        )),
    }
}

impl std::fmt::Debug for ExecOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecOutput")
            .field("container_id", &self.shared.id)
            .field(
                "exec_id",
                &self
                    .handle
                    .as_ref()
                    .map(ExecHandle::label)
                    .unwrap_or_default(),
            )
            .field("ended", &self.ended)
            .finish()
    }
}

impl std::fmt::Debug for ExecStdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExecStdin")
    }
}

impl std::fmt::Debug for ExecCanceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecCanceller")
            .field("container_id", &self.shared.id)
            .field("cancelled", &self.cancelled.load(Ordering::SeqCst))
            .finish()
    }
}
