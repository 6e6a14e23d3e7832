//! What a sandbox is made of: operator defaults and the per-task spec.

use std::collections::BTreeMap;
use std::time::Duration;

/// Label holding the task id a sandbox belongs to.
pub const LABEL_TASK: &str = "drydock.task";
/// Label holding the id of the drydock server that created the sandbox;
/// reconciliation only ever touches containers carrying its own value.
pub const LABEL_INSTANCE: &str = "drydock.instance";
/// Label holding the hard deadline as unix seconds, so a restarted server can
/// still tell which sandboxes have outlived it.
pub const LABEL_DEADLINE: &str = "drydock.deadline";
/// Label of a sandbox started ahead of any task (a warm pool's), holding the
/// key of its [`Shape`]. Such a container has no `drydock.task` label: labels
/// cannot change once a container exists, so the task that takes it is named
/// by the container's name instead (see [`Sandbox::claim`](crate::Sandbox::claim)).
pub const LABEL_POOL: &str = "drydock.pool";

/// How a sandbox is attached to the network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NetworkMode {
    /// Docker's default bridge: outbound access, no inbound ports.
    #[default]
    Bridge,
    /// No network at all (only loopback inside the container).
    None,
    /// The host's network namespace: for local development and tests that
    /// reach stand-in services on the host's loopback. Not for production.
    Host,
    /// A named, operator-created Docker network.
    Named(String),
}

impl NetworkMode {
    /// The value Docker expects in `HostConfig.NetworkMode`.
    pub fn as_docker(&self) -> &str {
        match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
            NetworkMode::Named(name) => name,
        }
    }

    /// Parses `bridge`, `none`, `host`, or any other name as a named network.
    pub fn parse(s: &str) -> Self {
        match s {
            "bridge" | "" => NetworkMode::Bridge,
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            other => NetworkMode::Named(other.to_owned()),
        }
    }
}

/// Resource limits applied to every process in a sandbox together.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Maximum number of processes and threads (fork bombs stop here).
    pub pids: i64,
    /// Memory limit in bytes; swap is set equal so the sandbox cannot swap.
    pub memory_bytes: i64,
    /// CPU limit in cores (fractions allowed).
    pub cpus: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pids: 512,
            memory_bytes: 4 * 1024 * 1024 * 1024,
            cpus: 2.0,
        }
    }
}

/// Operator-wide defaults; every [`SandboxSpec`] starts from these.
#[derive(Debug, Clone)]
pub struct SandboxDefaults {
    /// Image to run (e.g. the tag printed by `sandbox/image/build-offline`).
    pub image: String,
    /// Identifies this drydock server in the `drydock.instance` label, so
    /// reconciliation after a restart finds exactly its own containers.
    pub instance_id: String,
    /// Network mode for new sandboxes.
    pub network: NetworkMode,
    /// Resource limits for new sandboxes.
    pub limits: Limits,
    /// Hard deadline after which a sandbox is killed.
    pub deadline: Duration,
    /// Numeric uid the sandbox runs as (never 0).
    pub uid: u32,
    /// Numeric gid the sandbox runs as.
    pub gid: u32,
    /// Working directory inside the sandbox.
    pub workdir: String,
    /// Grace period `stop` gives processes after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
    /// Directory of `ca.pem`, `cert.pem` and `key.pem` for a Docker host reached over TLS
    /// (`tcp://` with mutual TLS, as `DOCKER_CERT_PATH` names it for the Docker CLI); `None`
    /// for a local socket or plain TCP.
    pub tls_cert_path: Option<std::path::PathBuf>,
}

impl SandboxDefaults {
    /// Defaults for `image` and server `instance_id`: bridge network, 512
    /// pids, 4 GiB memory, 2 CPUs, a 2 hour deadline, uid/gid 1000,
    /// `/workspace`.
    pub fn new(image: impl Into<String>, instance_id: impl Into<String>) -> Self {
        SandboxDefaults {
            image: image.into(),
            instance_id: instance_id.into(),
            network: NetworkMode::Bridge,
            limits: Limits::default(),
            deadline: Duration::from_secs(2 * 60 * 60),
            uid: 1000,
            gid: 1000,
            workdir: "/workspace".to_owned(),
            stop_grace: Duration::from_secs(10),
            tls_cert_path: None,
        }
    }
}

/// Everything needed to start one sandbox. Build it with
/// [`Sandboxes::spec`](crate::Sandboxes::spec) so operator defaults apply,
/// then adjust fields.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Task id, written to the `drydock.task` label and the container name.
    pub task_id: String,
    /// Image to run.
    pub image: String,
    /// Environment of the container itself, visible to every exec. Nothing
    /// secret belongs here: per-exec secrets go in [`ExecSpec::env`](crate::ExecSpec::env).
    pub env: Vec<(String, String)>,
    /// Extra labels (the drydock labels are always added and win).
    pub labels: BTreeMap<String, String>,
    /// Network mode.
    pub network: NetworkMode,
    /// Resource limits.
    pub limits: Limits,
    /// Hard deadline measured from creation.
    pub deadline: Duration,
    /// Numeric uid for the container and default for execs (non-root).
    pub uid: u32,
    /// Numeric gid.
    pub gid: u32,
    /// Working directory.
    pub workdir: String,
}

impl SandboxSpec {
    /// Sets the network mode.
    pub fn network(mut self, network: NetworkMode) -> Self {
        self.network = network;
        self
    }

    /// Sets the deadline.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets the resource limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Adds a container environment variable (not for secrets).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

impl SandboxSpec {
    /// What this spec makes apart from the task it is for: the same spec with its
    /// task-specific fields blanked (`task_id` empty, `deadline` zero). Two specs
    /// with the same shape make interchangeable sandboxes, so one started ahead
    /// of time for the shape can serve either task.
    ///
    /// Every field is named here without `..`, so a field added to
    /// [`SandboxSpec`] does not compile until it is classified: task-specific
    /// (blanked here, applied when a task takes the sandbox) or part of the
    /// shape (kept, and so part of [`Shape::key`]).
    pub fn shape(&self) -> Shape {
        let SandboxSpec {
            // Task-specific: applied by `Sandbox::claim`.
            task_id: _,
            deadline: _,
            // The shape.
            image,
            env,
            labels,
            network,
            limits,
            uid,
            gid,
            workdir,
        } = self;
        Shape {
            spec: SandboxSpec {
                task_id: String::new(),
                deadline: Duration::ZERO,
                image: image.clone(),
                env: env.clone(),
                labels: labels.clone(),
                network: network.clone(),
                limits: limits.clone(),
                uid: *uid,
                gid: *gid,
                workdir: workdir.clone(),
            },
        }
    }
}

/// A [`SandboxSpec`] without its task: what a warm pool keeps sandboxes of.
/// Made by [`SandboxSpec::shape`].
#[derive(Debug, Clone)]
pub struct Shape {
    spec: SandboxSpec,
}

impl Shape {
    /// A stable key for this shape: 16 hex digits of the SHA-256 of every shape
    /// field (through their `Debug` form, so a new field joins the key without
    /// anyone remembering to add it). Written to the [`LABEL_POOL`] label.
    pub fn key(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{:?}", self.spec).as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// The image the shape runs (a tag or an id).
    pub fn image(&self) -> &str {
        &self.spec.image
    }

    /// The spec of a sandbox of this shape with no task, living `deadline`.
    pub(crate) fn spec(&self, deadline: Duration) -> SandboxSpec {
        SandboxSpec {
            deadline,
            ..self.spec.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SandboxSpec {
        let d = SandboxDefaults::new("img:1", "server-1");
        SandboxSpec {
            task_id: "task-1".into(),
            image: d.image,
            env: Vec::new(),
            labels: BTreeMap::new(),
            network: d.network,
            limits: d.limits,
            deadline: Duration::from_secs(60),
            uid: d.uid,
            gid: d.gid,
            workdir: d.workdir,
        }
    }

    #[test]
    fn task_specific_fields_are_not_part_of_the_shape() {
        let a = spec();
        let mut b = spec();
        b.task_id = "task-2".into();
        b.deadline = Duration::from_secs(3600);
        assert_eq!(a.shape().key(), b.shape().key());
        assert_eq!(a.shape().spec(Duration::from_secs(5)).task_id, "");
    }

    #[test]
    fn every_other_field_changes_the_shape() {
        let base = spec().shape().key();
        type Change = (&'static str, fn(&mut SandboxSpec));
        let changes: Vec<Change> = vec![
            ("image", |s| s.image = "img:2".into()),
            ("env", |s| s.env.push(("A".into(), "1".into()))),
            ("labels", |s| {
                s.labels.insert("k".into(), "v".into());
            }),
            ("network", |s| s.network = NetworkMode::None),
            ("limits", |s| s.limits.cpus = 1.5),
            ("uid", |s| s.uid = 1001),
            ("gid", |s| s.gid = 1001),
            ("workdir", |s| s.workdir = "/w".into()),
        ];
        for (field, change) in changes {
            let mut s = spec();
            change(&mut s);
            assert_ne!(s.shape().key(), base, "{field} is part of the shape");
        }
        assert_eq!(base.len(), 16);
    }
}
