//! Hardened Docker sandboxes for drydock, through bollard.
//!
//! This crate owns everything Docker and knows nothing of HTTP, SQL, GitHub or
//! agents. The server's task runner uses it like this:
//!
//! ```no_run
//! # async fn run() -> Result<(), drydock_sandbox::SandboxError> {
//! use drydock_sandbox::{ExecSpec, NetworkMode, SandboxDefaults, Sandboxes};
//! use futures::StreamExt;
//!
//! // Once at start-up (honours DOCKER_HOST; fails clearly without a daemon).
//! let mut defaults = SandboxDefaults::new("drydock-sandbox:offline", "server-1");
//! defaults.network = NetworkMode::None;
//! let sandboxes = Sandboxes::connect(defaults).await?;
//! sandboxes.ping().await?; // for /readyz
//!
//! // Per task: a hardened container labelled with the task id.
//! let sandbox = sandboxes.create(sandboxes.spec("task-42")).await?;
//! sandbox.upload_dir("/workspace", std::path::Path::new("/tmp/checkout")).await?;
//! sandbox
//!     .write_file("/home/agent/.claude.json", br#"{"mcpServers":{}}"#, 0o600, None)
//!     .await?;
//!
//! // The agent's key goes to this exec only.
//! let mut run = sandbox
//!     .exec(&ExecSpec::new(["claude", "-p", "fix the bug"]).env("ANTHROPIC_API_KEY", "..."))
//!     .await?;
//! while let Some(chunk) = run.next().await {
//!     let chunk = chunk?; // (stdout|stderr, bytes) in arrival order
//!     # let _ = chunk;
//! }
//! let exit = run.exit().await?;
//! # let _ = exit;
//!
//! // Hand the work back as a git bundle streamed over stdout.
//! let mut bundle = sandbox
//!     .export(&ExecSpec::new(["git", "bundle", "create", "-", "--all"]))
//!     .await?;
//! while let Some(bytes) = bundle.next().await {
//!     let bytes = bytes?;
//!     # let _ = bytes;
//! }
//! sandbox.remove().await?;
//!
//! // After a restart: remove sandboxes of tasks that are no longer running.
//! sandboxes.reap(drydock_sandbox::Reap::NotIn(Default::default())).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Security properties of every sandbox: uid/gid 1000 (never root), all
//! capabilities dropped, `no-new-privileges`, Docker's init as PID 1, pids,
//! memory (swap equal, so no swap) and CPU limits, no mounts (never the Docker
//! socket), a configurable network mode, and a hard deadline. Images must
//! provide `/bin/sh`, `setsid` and `sleep` (any Debian-based image does);
//! `sandbox/image/` builds a suitable one. [`Sandbox::connect_port`] also
//! and [`Sandbox::egress_listener`] also need `python3` in the image.

mod client;
mod egress;
mod error;
mod exec;
pub mod image;
mod k8s;
mod port;
mod sandbox;
mod snapshot;
mod spare;
mod spec;
mod upload;

pub use client::{Reap, SandboxInfo, Sandboxes, docker_client};
pub use egress::{EgressConn, EgressListener};
pub use error::{Result, SandboxError};
pub use exec::{
    ExecCanceller, ExecExit, ExecOutput, ExecSpec, ExecStdin, OutputChunk, OutputStream,
};
pub use image::{BuildEvent, BuildMethod, BuildOptions, Images};
pub use k8s::{KubernetesOptions, LABEL_POD};
pub use port::PortStream;
pub use sandbox::{ExitReason, Owner, Sandbox};
pub use snapshot::{Change, ContextBuild, ImageInfo};
pub use spec::{
    LABEL_DEADLINE, LABEL_INSTANCE, LABEL_POOL, LABEL_TASK, Limits, NetworkMode, SandboxDefaults,
    SandboxSpec, Shape,
};
