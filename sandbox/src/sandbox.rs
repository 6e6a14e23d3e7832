//! One running sandbox: exec, file transfer, lifecycle and why it ended.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::{
    KillContainerOptionsBuilder, RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder,
    StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tracing::{debug, info, warn};

use crate::error::{Result, SandboxError, docker_status};
use crate::exec::{self, ExecExit, ExecOutput, ExecSpec, OutputStream};
use crate::port::{self, PortStream};
use crate::upload;

/// Why a sandbox stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitReason {
    /// Its main process exited by itself with this code.
    Exited(i64),
    /// The kernel's OOM killer fired inside it (Docker's `OOMKilled`).
    OutOfMemory,
    /// It reached its hard deadline and was killed.
    Deadline,
    /// It was stopped ([`Sandbox::stop`], or SIGTERM from outside).
    Stopped,
    /// It was killed ([`Sandbox::kill`], or SIGKILL from outside).
    Killed,
    /// The container no longer exists.
    Removed,
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Exited(c) => write!(f, "exited with code {c}"),
            ExitReason::OutOfMemory => f.write_str("killed: out of memory"),
            ExitReason::Deadline => f.write_str("killed: deadline reached"),
            ExitReason::Stopped => f.write_str("stopped"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Removed => f.write_str("removed"),
        }
    }
}

/// File owner for [`Sandbox::write_file`], as numeric ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Where sandboxes run: a Docker host, or a Kubernetes namespace (each sandbox a Pod).
#[derive(Clone)]
pub(crate) enum Backend {
    Docker(Docker),
    Kubernetes(Arc<crate::k8s::Cluster>),
}

impl Backend {
    /// `docker` or `kubernetes`, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Docker(_) => "docker",
            Backend::Kubernetes(_) => "kubernetes",
        }
    }

    /// The Docker client, or [`SandboxError::Unsupported`] naming `what` on Kubernetes.
    pub(crate) fn docker(&self, what: &str, why: &str) -> Result<&Docker> {
        match self {
            Backend::Docker(d) => Ok(d),
            Backend::Kubernetes(_) => Err(SandboxError::not_on_kubernetes(what, why)),
        }
    }
}

/// State shared by a [`Sandbox`], its execs and its deadline timer.
pub(crate) struct Shared {
    pub(crate) backend: Backend,
    pub(crate) id: String,
    pub(crate) task_id: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) workdir: String,
    pub(crate) deadline_unix: Option<u64>,
    pub(crate) stop_grace: Duration,
    /// Why *we* ended it, which is more precise than exit codes.
    recorded: Mutex<Option<ExitReason>>,
    /// OOM kills already attributed to an exec.
    oom_seen: AtomicU64,
    timer: Mutex<Option<tokio::task::AbortHandle>>,
    /// Shells started ahead for the next exec of their users (Docker only; see
    /// [`crate::spare`]).
    spare: Mutex<Vec<crate::spare::SpareExec>>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        backend: Backend,
        id: String,
        task_id: String,
        uid: u32,
        gid: u32,
        workdir: String,
        deadline_unix: Option<u64>,
        stop_grace: Duration,
    ) -> Arc<Self> {
        Arc::new(Shared {
            backend,
            id,
            task_id,
            uid,
            gid,
            workdir,
            deadline_unix,
            stop_grace,
            recorded: Mutex::new(None),
            oom_seen: AtomicU64::new(0),
            timer: Mutex::new(None),
            spare: Mutex::new(Vec::new()),
        })
    }

    /// Keeps `spare` for the next exec of its user, replacing (and so ending) an unused one.
    pub(crate) fn put_spare(&self, spare: crate::spare::SpareExec) {
        if let Ok(mut spares) = self.spare.lock() {
            spares.retain(|s| !s.runs_as(spare.user()));
            spares.push(spare);
        }
    }

    /// The spare exec for `user`, when there is one; it is used once.
    pub(crate) fn take_spare(&self, user: &str) -> Option<crate::spare::SpareExec> {
        let mut spares = self.spare.lock().ok()?;
        let at = spares.iter().position(|s| s.runs_as(user))?;
        Some(spares.swap_remove(at))
    }

    /// Whether a spare exec waits for `user`.
    pub(crate) fn has_spare(&self, user: &str) -> bool {
        self.spare
            .lock()
            .is_ok_and(|spares| spares.iter().any(|s| s.runs_as(user)))
    }

    pub(crate) fn default_user(&self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }

    fn record(&self, reason: ExitReason) {
        if let Ok(mut slot) = self.recorded.lock() {
            slot.get_or_insert(reason);
        }
    }

    fn recorded(&self) -> Option<ExitReason> {
        self.recorded.lock().ok().and_then(|r| r.clone())
    }

    /// Turns "no such container" into [`SandboxError::NotFound`].
    pub(crate) fn map_gone(&self, e: bollard::errors::Error) -> SandboxError {
        match docker_status(&e) {
            Some(404) => SandboxError::NotFound(self.id.clone()),
            Some(409) => SandboxError::NotRunning {
                id: self.id.clone(),
                reason: self.recorded().unwrap_or(ExitReason::Stopped),
            },
            _ => SandboxError::Docker(e),
        }
    }

    /// Whether this sandbox is on its way out: we stopped or killed it, or
    /// its deadline has passed.
    pub(crate) fn ending(&self) -> bool {
        self.recorded().is_some() || self.deadline_unix.is_some_and(|d| unix_now() + 1 >= d)
    }

    pub(crate) async fn is_running(&self) -> Result<bool> {
        let docker = match &self.backend {
            Backend::Docker(d) => d,
            Backend::Kubernetes(k) => return k.is_running(&self.id).await,
        };
        match docker.inspect_container(&self.id, None).await {
            Ok(c) => Ok(c.state.and_then(|s| s.running).unwrap_or(false)),
            Err(e) if docker_status(&e) == Some(404) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn exit_reason(&self) -> Result<Option<ExitReason>> {
        let docker = match &self.backend {
            Backend::Docker(d) => d,
            Backend::Kubernetes(k) => {
                return k
                    .exit_reason(&self.id, self.recorded(), self.deadline_unix)
                    .await;
            }
        };
        let inspect = match docker.inspect_container(&self.id, None).await {
            Ok(c) => c,
            Err(e) if docker_status(&e) == Some(404) => {
                return Ok(Some(self.recorded().unwrap_or(ExitReason::Removed)));
            }
            Err(e) => return Err(e.into()),
        };
        let Some(state) = inspect.state else {
            return Ok(None);
        };
        if state.running == Some(true)
            || state.status == Some(bollard::models::ContainerStateStatusEnum::CREATED)
        {
            return Ok(None);
        }
        if let Some(reason) = self.recorded() {
            return Ok(Some(reason));
        }
        let finished = state
            .finished_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp());
        if let (Some(finished), Some(deadline)) = (finished, self.deadline_unix) {
            // The deadline label survives a server restart, so this still
            // answers correctly for a sandbox the deadline timer of a previous
            // server process killed.
            if finished + 1 >= deadline as i64 {
                return Ok(Some(ExitReason::Deadline));
            }
        }
        let code = state.exit_code.unwrap_or(-1);
        // Docker 20.10 sets OOMKilled when anything in the container was
        // OOM-killed during its life, so a SIGTERM exit still reads as a stop.
        if code != 143 && state.oom_killed == Some(true) {
            return Ok(Some(ExitReason::OutOfMemory));
        }
        Ok(Some(match code {
            // The main process is `sleep <deadline>`: it only exits 0 when the
            // deadline passes.
            0 => ExitReason::Deadline,
            143 => ExitReason::Stopped,
            137 => ExitReason::Killed,
            code => ExitReason::Exited(code),
        }))
    }

    /// Whether the sandbox's cgroup counted an OOM kill not yet attributed.
    pub(crate) async fn oom_kills_increased(self: &Arc<Self>) -> Result<bool> {
        // cgroup v1 and v2 keep the counter in different files.
        let spec = ExecSpec::shell(
            "cat /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null || cat /sys/fs/cgroup/memory.events 2>/dev/null",
        );
        let (_, out) = exec::run_plain(self, &spec).await?;
        let text = String::from_utf8_lossy(&out);
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let before = self.oom_seen.fetch_max(count, Ordering::SeqCst);
        Ok(count > before)
    }

    pub(crate) fn arm_deadline(self: &Arc<Self>, after: Duration) {
        let shared = self.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(after).await;
            match shared.is_running().await {
                Ok(true) => {
                    info!(container_id = %shared.id, task_id = %shared.task_id, "sandbox deadline reached; killing it");
                    shared.record(ExitReason::Deadline);
                    if let Err(e) = shared.kill_raw().await {
                        warn!(container_id = %shared.id, error = %e, "could not kill a sandbox at its deadline");
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(container_id = %shared.id, error = %e, "could not check a sandbox at its deadline")
                }
            }
        });
        if let Ok(mut slot) = self.timer.lock() {
            *slot = Some(task.abort_handle());
        }
    }

    async fn kill_raw(&self) -> Result<()> {
        let docker = match &self.backend {
            Backend::Docker(d) => d,
            Backend::Kubernetes(k) => return k.delete_pod(&self.id, 0).await,
        };
        let opts = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        match docker.kill_container(&self.id, Some(opts)).await {
            Ok(()) => Ok(()),
            // Already dead or gone: the goal is met.
            Err(e) if matches!(docker_status(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Not reached while the timer holds a clone, i.e. only after it fired
        // or was aborted; aborting here is for tidiness.
        if let Some(t) = self.timer.lock().ok().and_then(|mut slot| slot.take()) {
            t.abort();
        }
    }
}

/// A handle to one sandbox container. Cheap to clone; all clones refer to the
/// same container. The container lives until [`remove`](Sandbox::remove),
/// its deadline, or reconciliation: dropping the handle does not remove it.
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.shared.id)
            .field("task_id", &self.shared.task_id)
            .finish()
    }
}

impl Sandbox {
    /// The Docker container id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The task id from the `drydock.task` label.
    pub fn task_id(&self) -> &str {
        &self.shared.task_id
    }

    /// The hard deadline as unix seconds, when known.
    pub fn deadline_unix(&self) -> Option<u64> {
        self.shared.deadline_unix
    }

    /// The sandbox user as `(uid, gid)`.
    pub fn user(&self) -> Owner {
        Owner {
            uid: self.shared.uid,
            gid: self.shared.gid,
        }
    }

    /// Hands a warm-pool sandbox (made by
    /// [`Sandboxes::create_pooled`](crate::Sandboxes::create_pooled)) to task
    /// `task_id` for `deadline` from now, never past the container's own hard
    /// deadline. Labels cannot change once a container exists, so the task is
    /// named by the container's name, renamed `drydock-<task>-<unique>` as if it
    /// had been created for the task (`docker ps` shows it, and
    /// [`Sandboxes::of_task`](crate::Sandboxes::of_task) finds it); the server's
    /// record of which container a task uses stays the durable link. The
    /// deadline timer is re-armed for the task's deadline. Fails with
    /// [`SandboxError::NotFound`] when the container is gone.
    ///
    /// On Kubernetes a pod's labels can change: the pod keeps its name and gets the task's
    /// labels, and its `activeDeadlineSeconds` is lowered to match (one `patch pods`).
    pub async fn claim(self, task_id: &str, deadline: Duration) -> Result<Sandbox> {
        let s = &self.shared;
        let now = unix_now();
        let mut until = (now + deadline.as_secs().max(1)).min(s.deadline_unix.unwrap_or(u64::MAX));
        let name = match &s.backend {
            Backend::Docker(docker) => {
                let name = crate::client::container_name(task_id);
                let opts = RenameContainerOptionsBuilder::new().name(&name).build();
                docker
                    .rename_container(&s.id, opts)
                    .await
                    .map_err(|e| s.map_gone(e))?;
                name
            }
            Backend::Kubernetes(k) => {
                until = k.claim(&s.id, task_id, deadline).await?;
                s.id.clone()
            }
        };
        if let Some(t) = s.timer.lock().ok().and_then(|mut slot| slot.take()) {
            t.abort();
        }
        let shared = Shared::new(
            s.backend.clone(),
            s.id.clone(),
            task_id.to_owned(),
            s.uid,
            s.gid,
            s.workdir.clone(),
            Some(until),
            s.stop_grace,
        );
        shared.arm_deadline(Duration::from_secs(until.saturating_sub(now)));
        let spares = s.spare.lock().map(|mut v| std::mem::take(&mut *v));
        for spare in spares.unwrap_or_default() {
            shared.put_spare(spare);
        }
        info!(container_id = %shared.id, name, task_id, "warm sandbox taken");
        Ok(Sandbox { shared })
    }

    /// The id of the image the container runs (`sha256:…`), from Docker; on Kubernetes the
    /// image reference the pod was created with (the nodes resolve tags out of drydock's sight).
    pub async fn image_id(&self) -> Result<String> {
        let s = &self.shared;
        let docker = match &s.backend {
            Backend::Docker(d) => d,
            Backend::Kubernetes(k) => return k.image_id(&s.id).await,
        };
        let c = docker
            .inspect_container(&s.id, None)
            .await
            .map_err(|e| s.map_gone(e))?;
        Ok(c.image.unwrap_or_default())
    }

    /// Starts `spec` and returns its output stream; see [`ExecOutput`].
    pub async fn exec(&self, spec: &ExecSpec) -> Result<ExecOutput> {
        exec::start(&self.shared, spec).await
    }

    /// Starts a shell that waits for the next exec whose [`ExecSpec::user`] is `user` (`None`:
    /// the sandbox user, which [`upload_dir`](Sandbox::upload_dir) then uses too), so that exec
    /// starts without Docker's exec start on its path (tens of milliseconds on a busy host). The
    /// shell holds nothing until then: the command, directory and variables reach it on its
    /// stdin. Used once; a no-op on Kubernetes. Errors: the sandbox is gone or not running.
    pub async fn ready_exec(&self, user: Option<&str>) -> Result<()> {
        let user = user.map_or_else(|| self.shared.default_user(), str::to_owned);
        crate::spare::open(&self.shared, &user).await
    }

    /// Runs `spec` and streams only its stdout, for commands whose stdout is
    /// the payload (`git bundle create - --all`). Stderr is kept (its last 16
    /// KiB) for the error the stream ends with if the command fails.
    pub async fn export(&self, spec: &ExecSpec) -> Result<BoxStream<'static, Result<Bytes>>> {
        let output = self.exec(spec).await?;
        struct State {
            output: Option<ExecOutput>,
            stderr: Vec<u8>,
        }
        let state = State {
            output: Some(output),
            stderr: Vec::new(),
        };
        let stream = futures::stream::unfold(state, |mut st| async move {
            loop {
                let out = st.output.as_mut()?;
                match out.next().await {
                    Some(Ok(chunk)) if chunk.stream == OutputStream::Stdout => {
                        return Some((Ok(chunk.data), st));
                    }
                    Some(Ok(chunk)) => {
                        st.stderr.extend_from_slice(&chunk.data);
                        let excess = st.stderr.len().saturating_sub(16 * 1024);
                        st.stderr.drain(..excess);
                    }
                    Some(Err(e)) => {
                        st.output = None;
                        return Some((Err(e), st));
                    }
                    None => {
                        let out = st.output.take()?;
                        return match out.exit().await {
                            Ok(ExecExit::Code(0)) => None,
                            Ok(exit) => {
                                let err = SandboxError::ExportFailed {
                                    exit: exit.to_string(),
                                    stderr: String::from_utf8_lossy(&st.stderr).into_owned(),
                                };
                                Some((Err(err), st))
                            }
                            Err(e) => Some((Err(e), st)),
                        };
                    }
                }
            }
        });
        Ok(stream.boxed())
    }

    /// Opens a TCP connection to `port` on `127.0.0.1` inside the sandbox,
    /// without publishing a port and without giving the container any
    /// network: it works with [`NetworkMode::None`](crate::NetworkMode::None).
    ///
    /// The connection is an exec. A small relay, `python3 -I -c <script>
    /// <port>` (the port is an argument, never spliced into code or a shell
    /// line), runs as the sandbox's unprivileged user, connects to
    /// `127.0.0.1:<port>` and copies bytes both ways between the socket and
    /// its stdin/stdout; the exec's stdin and stdout travel over the Docker
    /// API connection like any other exec's. Half-close is kept: shutting
    /// down the [`PortStream`]'s write side closes the relay's stdin, which
    /// becomes `shutdown(SHUT_WR)` on the socket; when the peer closes its
    /// side, the relay writes out what it has received and exits, and reads
    /// see end-of-file. Stderr carries only the relay's diagnostics, never
    /// data. Only IPv4 loopback is tried: a server listening on `::1` alone
    /// is not reached.
    ///
    /// Before returning, this waits for the relay to report: it writes a
    /// one-byte marker once connected, which is consumed here. When nothing
    /// listens, the relay exits with a distinct code and this returns
    /// [`SandboxError::PortClosed`] instead of a stream that just closes;
    /// other failures (no `python3`, the sandbox not running) are
    /// [`SandboxError::PortRelay`] or the usual exec errors.
    ///
    /// Memory stays bounded: the relay moves at most 64 KiB at a time with
    /// blocking writes, and the stream holds at most one output frame, so a
    /// slow reader on either end slows the other down. Dropping the stream
    /// cancels the exec, which kills the relay (and with it the connection).
    /// Each call opens a new, independent connection.
    pub async fn connect_port(&self, port: u16) -> Result<PortStream> {
        port::connect(&self.shared, port).await
    }

    /// Listens on `127.0.0.1:port` inside the sandbox and hands every connection made to it
    /// to the caller, carried over one exec (no network needed: it works with
    /// [`NetworkMode::None`](crate::NetworkMode::None), on any Docker host). The caller serves
    /// each [`EgressConn`](crate::EgressConn); the relay lives until the listener is dropped
    /// or the sandbox stops. Needs `python3` in the image ([`SandboxError::PortRelay`] otherwise).
    ///
    /// Back-pressure: bytes for a connection whose reader is slow hold up the others, so memory
    /// stays bounded (64 KiB per connection on the host side).
    pub async fn egress_listener(&self, port: u16) -> Result<crate::EgressListener> {
        crate::egress::listen(&self.shared, port).await
    }

    /// Extracts a tar stream into `dest` (an existing directory). Ownership
    /// and modes come from the tar headers; [`upload_dir`](Sandbox::upload_dir)
    /// sets them to the sandbox user.
    pub async fn upload<S>(&self, dest: &str, tar: S) -> Result<()>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        check_absolute(dest)?;
        let docker = match &self.shared.backend {
            Backend::Docker(d) => d,
            Backend::Kubernetes(_) => return upload::through_exec(&self.shared, dest, tar).await,
        };
        let opts = UploadToContainerOptionsBuilder::new()
            .path(dest)
            .no_overwrite_dir_non_dir("true")
            .build();
        debug!(container_id = %self.shared.id, dest, "uploading tar");
        docker
            .upload_to_container(&self.shared.id, Some(opts), bollard::body_try_stream(tar))
            .await
            .map_err(|e| self.shared.map_gone(e))
    }

    /// Uploads the contents of host directory `dir` into `dest`, streamed
    /// (never held whole in memory), every entry owned by the sandbox user.
    ///
    /// When a spare exec of the sandbox user waits ([`ready_exec`](Sandbox::ready_exec) with
    /// `None`), the archive goes to `tar -x` in it rather than through Docker's archive endpoint
    /// (which starts an extraction process of its own); should that fail, it is sent again the
    /// usual way.
    pub async fn upload_dir(&self, dest: &str, dir: &Path) -> Result<()> {
        let owner = self.user();
        if self.shared.has_spare(&self.shared.default_user()) {
            check_absolute(dest)?;
            let stream = upload::tar_dir(dir.to_path_buf(), owner)?;
            match upload::through_exec(&self.shared, dest, stream).await {
                Ok(()) => return Ok(()),
                Err(err) => {
                    debug!(container_id = %self.shared.id, error = %err, "upload through the spare exec failed; sending it again")
                }
            }
        }
        let stream = upload::tar_dir(dir.to_path_buf(), owner)?;
        self.upload(dest, stream).await
    }

    /// Writes one file with `mode` (e.g. `0o600`) and `owner` (the sandbox
    /// user when `None`), creating missing parent directories owned by the
    /// same owner. `path` must be absolute.
    pub async fn write_file(
        &self,
        path: &str,
        contents: &[u8],
        mode: u32,
        owner: Option<Owner>,
    ) -> Result<()> {
        check_absolute(path)?;
        let owner = owner.unwrap_or_else(|| self.user());
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) if !n.is_empty() => (if p.is_empty() { "/" } else { p }, n),
            _ => return Err(SandboxError::Invalid(format!("{path:?} names no file"))),
        };
        let mkdir = ExecSpec::new(["mkdir", "-p", "--", parent])
            .user(format!("{}:{}", owner.uid, owner.gid))
            .workdir("/");
        let (code, _) = exec::run_plain(&self.shared, &mkdir).await?;
        if code != 0 {
            return Err(SandboxError::Invalid(format!(
                "cannot create directory {parent:?} as {}:{}",
                owner.uid, owner.gid
            )));
        }
        let tar = upload::single_file_tar(name, contents, mode, owner)?;
        self.upload(parent, futures::stream::iter([Ok(Bytes::from(tar))]))
            .await
    }

    /// Stops the sandbox: SIGTERM, then SIGKILL after the grace period.
    /// Idempotent. On Kubernetes the pod is deleted with that grace period (a pod
    /// cannot be stopped and kept); [`exit_reason`](Sandbox::exit_reason) on this
    /// handle still answers [`ExitReason::Stopped`].
    pub async fn stop(&self) -> Result<()> {
        self.shared.record(ExitReason::Stopped);
        let grace = i32::try_from(self.shared.stop_grace.as_secs()).unwrap_or(10);
        let docker = match &self.shared.backend {
            Backend::Docker(d) => d,
            Backend::Kubernetes(k) => {
                return k.delete_pod(&self.shared.id, i64::from(grace.max(0))).await;
            }
        };
        let opts = StopContainerOptionsBuilder::new().t(grace).build();
        match docker.stop_container(&self.shared.id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(docker_status(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Kills the sandbox with SIGKILL. Idempotent. On Kubernetes the pod is deleted
    /// with no grace period.
    pub async fn kill(&self) -> Result<()> {
        self.shared.record(ExitReason::Killed);
        self.shared.kill_raw().await
    }

    /// Removes the container (forced, with its anonymous volumes), or on Kubernetes the
    /// pod and its NetworkPolicy. Idempotent.
    pub async fn remove(&self) -> Result<()> {
        if let Some(t) = self
            .shared
            .timer
            .lock()
            .ok()
            .and_then(|mut slot| slot.take())
        {
            t.abort();
        }
        match &self.shared.backend {
            Backend::Docker(d) => remove_container(d, &self.shared.id).await,
            Backend::Kubernetes(k) => k.remove(&self.shared.id).await,
        }
    }

    /// `None` while running; otherwise why it ended (exit code, OOM from
    /// Docker's inspect data, deadline, stop, kill, or removed).
    pub async fn exit_reason(&self) -> Result<Option<ExitReason>> {
        self.shared.exit_reason().await
    }

    /// Whether the container is running.
    pub async fn is_running(&self) -> Result<bool> {
        self.shared.is_running().await
    }
}

pub(crate) async fn remove_container(docker: &Docker, id: &str) -> Result<()> {
    let opts = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(opts)).await {
        Ok(()) => {
            debug!(container_id = id, "sandbox removed");
            Ok(())
        }
        // 404: already gone. 409: a removal is already in progress.
        Err(e) if matches!(docker_status(&e), Some(404 | 409)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn check_absolute(path: &str) -> Result<()> {
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(SandboxError::Invalid(format!(
            "{path:?} must be an absolute path without `..`"
        )));
    }
    Ok(())
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
