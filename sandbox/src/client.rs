//! The `Sandboxes` handle: the Docker connection, creation, listing and reconciliation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, ListContainersOptionsBuilder};
use tracing::{info, instrument, warn};

use crate::error::{Result, SandboxError, docker_status};
use crate::k8s::{Cluster, KubernetesOptions};
use crate::sandbox::{Backend, Sandbox, Shared, remove_container, unix_now};
use crate::spec::{
    LABEL_DEADLINE, LABEL_INSTANCE, LABEL_POOL, LABEL_TASK, SandboxDefaults, SandboxSpec, Shape,
};

/// How long one Docker request may take before it fails. Long, because an
/// upload request lasts as long as the whole tar takes to send.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long [`Sandboxes::ping`] waits for the daemon.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Docker's default local socket.
pub(crate) const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Which of this server's sandboxes [`Sandboxes::reap`] removes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reap {
    /// Every container labelled with this server's instance id.
    All,
    /// Those created longer ago than this.
    OlderThan(Duration),
    /// Those whose task id is not in the set (the tasks the server still runs).
    NotIn(HashSet<String>),
    /// Those past their deadline label (the timer of a crashed server never fired).
    Expired,
    /// Every one but the containers with these ids (the sandboxes a restarted server
    /// adopts): also removes warm-pool sandboxes, which belong to no task.
    AllExcept(HashSet<String>),
}

/// A sandbox container as listed by Docker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    /// Container id.
    pub id: String,
    /// Container name, without the leading `/`.
    pub name: String,
    /// The `drydock.task` label (none on a sandbox started for a warm pool).
    pub task_id: Option<String>,
    /// The `drydock.pool` label: the [`Shape::key`] of a sandbox started for a warm pool.
    pub pool: Option<String>,
    /// The id of the image it runs (`sha256:…`).
    pub image_id: String,
    /// Creation time, unix seconds.
    pub created_unix: i64,
    /// Docker's state word (`running`, `exited`, ...).
    pub state: String,
    /// All labels.
    pub labels: BTreeMap<String, String>,
}

impl SandboxInfo {
    /// Whether this is a warm-pool sandbox no task has claimed yet (claiming renames it after
    /// its task on Docker, and replaces its pool label by the task's on Kubernetes).
    pub fn is_unclaimed_warm(&self) -> bool {
        self.pool.is_some() && self.name.starts_with(&name_prefix("pool"))
    }
}

/// The entry point: a Docker or Kubernetes connection plus operator defaults. Cheap to clone.
#[derive(Clone)]
pub struct Sandboxes {
    backend: Backend,
    host: Arc<str>,
    defaults: Arc<SandboxDefaults>,
}

impl std::fmt::Debug for Sandboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandboxes")
            .field("backend", &self.backend.name())
            .field("host", &self.host)
            .field("instance_id", &self.defaults.instance_id)
            .finish()
    }
}

static NAME_SEQ: AtomicU64 = AtomicU64::new(0);

/// A bollard client for `host` (`unix:///path`, `tcp://host:port`, `http://...`). With
/// `tls_cert_path`, a `tcp://` or `https://` host is reached over mutual TLS: the daemon's
/// certificate must chain to `ca.pem` in that directory, and drydock presents `cert.pem` with
/// `key.pem` (the files `dockerd --tlsverify` and `docker --tlsverify` use; Docker's
/// "Protect the Docker daemon socket" guide). Without it a `tcp://` host is plain HTTP.
pub fn docker_client(
    host: &str,
    tls_cert_path: Option<&std::path::Path>,
) -> std::result::Result<Docker, bollard::errors::Error> {
    match tls_cert_path {
        Some(dir) if host.starts_with("tcp://") || host.starts_with("https://") => {
            Docker::connect_with_ssl(
                host,
                &dir.join("key.pem"),
                &dir.join("cert.pem"),
                &dir.join("ca.pem"),
                REQUEST_TIMEOUT.as_secs(),
                bollard::API_DEFAULT_VERSION,
            )
        }
        _ => Docker::connect_with_host(host),
    }
}

/// Why [`docker_client`] failed, as a [`SandboxError`]: with TLS files the client reads them
/// before any connection, so a failure there is about the files, not the daemon.
pub(crate) fn client_error(
    host: &str,
    tls_cert_path: Option<&std::path::Path>,
    err: &bollard::errors::Error,
) -> SandboxError {
    match tls_cert_path {
        Some(dir) if host.starts_with("tcp://") || host.starts_with("https://") => {
            SandboxError::TlsFiles {
                dir: dir.display().to_string(),
                detail: err.to_string(),
            }
        }
        _ => SandboxError::DaemonUnavailable {
            host: host.to_owned(),
            detail: err.to_string(),
        },
    }
}

impl Sandboxes {
    /// Connects to the daemon named by `DOCKER_HOST` (or the default local
    /// socket); see [`connect_to`](Sandboxes::connect_to).
    pub async fn connect(defaults: SandboxDefaults) -> Result<Self> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        Self::connect_to(&host, defaults).await
    }

    /// Connects to the daemon at `host` (`unix:///path`, `tcp://host:port`,
    /// `http://...`) and negotiates the API version, so older daemons (API
    /// 1.41) and newer ones both work. Fails with
    /// [`SandboxError::DaemonUnavailable`] when no daemon answers.
    pub async fn connect_to(host: &str, defaults: SandboxDefaults) -> Result<Self> {
        let unavailable = |detail: String| SandboxError::DaemonUnavailable {
            host: host.to_owned(),
            detail,
        };
        let docker = docker_client(host, defaults.tls_cert_path.as_deref())
            .map_err(|e| client_error(host, defaults.tls_cert_path.as_deref(), &e))?
            .with_timeout(REQUEST_TIMEOUT);
        let docker = tokio::time::timeout(PING_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| unavailable("no answer within 5 s".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        info!(docker_host = %host, api_version = %docker.client_version(), instance_id = %defaults.instance_id, "connected to Docker");
        Ok(Sandboxes {
            backend: Backend::Docker(docker),
            host: host.into(),
            defaults: Arc::new(defaults),
        })
    }

    /// Uses Kubernetes instead of Docker: each sandbox is a Pod in `options.namespace` (see
    /// the `k8s` module's documentation for what maps and what does not). Loads the
    /// kubeconfig (or the in-cluster configuration) and checks at once that the API server
    /// answers ([`SandboxError::ClusterUnavailable`]), the namespace exists
    /// ([`SandboxError::NamespaceMissing`]) and pods may be listed and created there
    /// ([`SandboxError::Forbidden`], through a server-side dry run).
    /// [`SandboxDefaults::tls_cert_path`] does not apply.
    pub async fn connect_kubernetes(
        defaults: SandboxDefaults,
        options: KubernetesOptions,
    ) -> Result<Self> {
        let cluster = Cluster::connect(options).await?;
        info!(server = %cluster.server, namespace = %cluster.options.namespace, instance_id = %defaults.instance_id, "sandboxes are Kubernetes pods");
        Ok(Sandboxes {
            host: format!("{} namespace {}", cluster.server, cluster.options.namespace).into(),
            backend: Backend::Kubernetes(Arc::new(cluster)),
            defaults: Arc::new(defaults),
        })
    }

    /// `docker` or `kubernetes`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The underlying bollard client, for what this crate does not cover;
    /// [`SandboxError::Unsupported`] on Kubernetes.
    pub fn docker(&self) -> Result<&Docker> {
        self.backend.docker("the Docker API", "")
    }

    /// Checks that the daemon (or the Kubernetes API server) answers (for a readiness probe).
    pub async fn ping(&self) -> Result<()> {
        let docker = match &self.backend {
            Backend::Docker(d) => d,
            Backend::Kubernetes(k) => return k.ping().await,
        };
        let unavailable = |detail: String| SandboxError::DaemonUnavailable {
            host: self.host.to_string(),
            detail,
        };
        tokio::time::timeout(PING_TIMEOUT, docker.ping())
            .await
            .map_err(|_| unavailable("no answer within 5 s".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(())
    }

    /// The same Docker host seen as another drydock replica sees it: the sandboxes labelled with
    /// `instance_id` (a replica sharing this host, or one that was lost), for reaching a sandbox
    /// that replica keeps or removing what it left. Containers without a drydock instance label
    /// stay out of reach, as with [`list`](Sandboxes::list) and [`get`](Sandboxes::get).
    pub fn of_instance(&self, instance_id: &str) -> Sandboxes {
        if instance_id == self.defaults.instance_id {
            return self.clone();
        }
        let mut defaults = (*self.defaults).clone();
        defaults.instance_id = instance_id.to_owned();
        Sandboxes {
            backend: self.backend.clone(),
            host: self.host.clone(),
            defaults: Arc::new(defaults),
        }
    }

    /// The operator defaults.
    pub fn defaults(&self) -> &SandboxDefaults {
        &self.defaults
    }

    /// A spec for `task_id` filled in from the operator defaults.
    pub fn spec(&self, task_id: impl Into<String>) -> SandboxSpec {
        let d = &self.defaults;
        SandboxSpec {
            task_id: task_id.into(),
            image: d.image.clone(),
            env: Vec::new(),
            labels: BTreeMap::new(),
            network: d.network.clone(),
            limits: d.limits.clone(),
            deadline: d.deadline,
            uid: d.uid,
            gid: d.gid,
            workdir: d.workdir.clone(),
        }
    }

    /// Creates and starts a hardened sandbox for `spec`: non-root user, all
    /// capabilities dropped, no-new-privileges, an init process, pids, memory
    /// (no swap) and CPU limits, no mounts, and a hard deadline enforced both
    /// by this process and by the container's own main process.
    #[instrument(skip_all, fields(task_id = %spec.task_id))]
    pub async fn create(&self, spec: SandboxSpec) -> Result<Sandbox> {
        self.create_labelled(spec, None).await
    }

    /// Creates and starts a sandbox of `shape` for no task yet, living `deadline`,
    /// hardened like [`create`](Sandboxes::create). It carries the
    /// [`LABEL_POOL`](crate::LABEL_POOL) label (the shape's key) instead of a task
    /// label, and no task data; a task takes it with [`Sandbox::claim`].
    #[instrument(skip_all, fields(shape = %shape.key()))]
    pub async fn create_pooled(&self, shape: &Shape, deadline: Duration) -> Result<Sandbox> {
        self.create_labelled(shape.spec(deadline), Some(shape.key()))
            .await
    }

    async fn create_labelled(&self, spec: SandboxSpec, pool: Option<String>) -> Result<Sandbox> {
        if spec.uid == 0 {
            return Err(SandboxError::Invalid("sandboxes never run as root".into()));
        }
        if spec.deadline.is_zero() {
            return Err(SandboxError::Invalid("deadline must be positive".into()));
        }
        let deadline_secs = spec.deadline.as_secs().max(1);
        let deadline_unix = unix_now() + deadline_secs;
        let mut labels: BTreeMap<String, String> = spec.labels.clone();
        match &pool {
            Some(key) => labels.insert(LABEL_POOL.into(), key.clone()),
            None => labels.insert(LABEL_TASK.into(), spec.task_id.clone()),
        };
        labels.insert(LABEL_INSTANCE.into(), self.defaults.instance_id.clone());
        labels.insert(LABEL_DEADLINE.into(), deadline_unix.to_string());
        let docker = match &self.backend {
            Backend::Docker(d) => d,
            Backend::Kubernetes(k) => {
                let name = crate::k8s::pod_name(if pool.is_some() {
                    "pool"
                } else {
                    &spec.task_id
                });
                k.create_pod(
                    &name,
                    &spec,
                    labels,
                    deadline_secs,
                    self.defaults.stop_grace,
                )
                .await?;
                info!(pod = %name, network = spec.network.as_docker(), deadline_s = deadline_secs, "sandbox pod started");
                return Ok(self.started(name, spec, deadline_unix, deadline_secs));
            }
        };
        match docker.inspect_image(&spec.image).await {
            Ok(_) => {}
            Err(e) if docker_status(&e) == Some(404) => {
                return Err(SandboxError::ImageNotFound(spec.image.clone()));
            }
            Err(e) => return Err(e.into()),
        }
        let labels: HashMap<String, String> = labels.into_iter().collect();

        let host_config = HostConfig {
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            privileged: Some(false),
            init: Some(true),
            pids_limit: Some(spec.limits.pids),
            memory: Some(spec.limits.memory_bytes),
            // Equal to memory: no swap, so the limit is a real limit.
            memory_swap: Some(spec.limits.memory_bytes),
            nano_cpus: Some((spec.limits.cpus * 1e9) as i64),
            network_mode: Some(spec.network.as_docker().to_owned()),
            // No binds, no volumes, no devices: nothing from the host.
            binds: None,
            mounts: None,
            auto_remove: Some(false),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            // The main process outlives nothing: when the deadline passes it
            // exits and the kernel kills everything else in the container.
            // This holds even if the server is not running at that moment.
            cmd: Some(vec!["sleep".into(), deadline_secs.to_string()]),
            entrypoint: Some(vec![]),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            working_dir: Some(spec.workdir.clone()),
            user: Some(format!("{}:{}", spec.uid, spec.gid)),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            tty: Some(false),
            open_stdin: Some(false),
            stop_timeout: Some(i64::try_from(self.defaults.stop_grace.as_secs()).unwrap_or(10)),
            host_config: Some(host_config),
            ..Default::default()
        };
        let name = container_name(if pool.is_some() {
            "pool"
        } else {
            &spec.task_id
        });
        let opts = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = docker.create_container(Some(opts), body).await?;
        let id = created.id;
        if let Err(e) = docker.start_container(&id, None).await {
            // Never leave a half-made sandbox behind.
            if let Err(rm) = remove_container(docker, &id).await {
                warn!(container_id = %id, error = %rm, "could not remove a sandbox that failed to start");
            }
            return Err(e.into());
        }
        info!(container_id = %id, name, network = spec.network.as_docker(), deadline_s = deadline_secs, "sandbox started");
        Ok(self.started(id, spec, deadline_unix, deadline_secs))
    }

    /// The handle of a sandbox just started from `spec` (a container id or a pod name), its
    /// deadline armed: `deadline_unix` as a wall-clock time, `deadline_secs` from now.
    fn started(
        &self,
        id: String,
        spec: SandboxSpec,
        deadline_unix: u64,
        deadline_secs: u64,
    ) -> Sandbox {
        let shared = Shared::new(
            self.backend.clone(),
            id,
            spec.task_id,
            spec.uid,
            spec.gid,
            spec.workdir,
            Some(deadline_unix),
            self.defaults.stop_grace,
        );
        shared.arm_deadline(Duration::from_secs(deadline_secs));
        Sandbox { shared }
    }

    /// This server's sandboxes (by instance label) that also carry all of
    /// `labels`, running or not.
    pub async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<SandboxInfo>> {
        let docker = match &self.backend {
            Backend::Docker(d) => d,
            Backend::Kubernetes(k) => {
                let mut selector =
                    vec![(LABEL_INSTANCE.to_owned(), self.defaults.instance_id.clone())];
                selector.extend(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
                );
                let pods = k.list(&selector).await?;
                return Ok(pods
                    .into_iter()
                    // The API server already filtered; checking again guards the promise
                    // that matters most: never touch another program's pod.
                    .filter(|p| {
                        p.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(LABEL_INSTANCE))
                            .is_some_and(|v| *v == self.defaults.instance_id)
                    })
                    .map(|p| {
                        let labels = p.metadata.labels.clone().unwrap_or_default();
                        let name = p.metadata.name.clone().unwrap_or_default();
                        SandboxInfo {
                            id: name.clone(),
                            name,
                            task_id: labels.get(LABEL_TASK).cloned(),
                            pool: labels.get(LABEL_POOL).cloned(),
                            image_id: p
                                .status
                                .as_ref()
                                .and_then(|s| s.container_statuses.as_ref())
                                .and_then(|cs| cs.iter().find(|c| c.name == crate::k8s::CONTAINER))
                                .map(|c| c.image_id.clone())
                                .unwrap_or_default(),
                            created_unix: crate::k8s::created_unix(&p),
                            state: crate::k8s::state_word(&p),
                            labels,
                        }
                    })
                    .collect());
            }
        };
        let mut label_filters = vec![format!("{LABEL_INSTANCE}={}", self.defaults.instance_id)];
        label_filters.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
        let mut filters = HashMap::new();
        filters.insert("label", label_filters);
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker.list_containers(Some(opts)).await?;
        Ok(containers
            .into_iter()
            // Docker already filtered; checking again guards the one promise
            // that matters most: never touch another program's container.
            .filter(|c| {
                c.labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_INSTANCE))
                    .is_some_and(|v| *v == self.defaults.instance_id)
            })
            .map(|c| {
                let labels: BTreeMap<String, String> =
                    c.labels.unwrap_or_default().into_iter().collect();
                SandboxInfo {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .map(|n| n.trim_start_matches('/').to_owned())
                        .unwrap_or_default(),
                    task_id: labels.get(LABEL_TASK).cloned(),
                    pool: labels.get(LABEL_POOL).cloned(),
                    image_id: c.image_id.unwrap_or_default(),
                    created_unix: c.created.unwrap_or_default(),
                    state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                    labels,
                }
            })
            .collect())
    }

    /// The id (`sha256:…`) of the image `image` (a tag or an id) names now, or
    /// `None` when it is not on the Docker host. A tag that is built again
    /// names a new id: how a warm pool tells that its sandboxes run an old image.
    ///
    /// On Kubernetes the images live on the nodes, out of drydock's sight: the answer is
    /// `image` itself, as [`Sandbox::image_id`] answers the reference a pod was created with
    /// (so a warm pool there notices a changed image setting, not a tag pushed again).
    pub async fn image_id(&self, image: &str) -> Result<Option<String>> {
        let docker = match &self.backend {
            Backend::Docker(d) => d,
            Backend::Kubernetes(_) => return Ok(Some(image.to_owned())),
        };
        match docker.inspect_image(image).await {
            Ok(i) => Ok(i.id),
            Err(e) if docker_status(&e) == Some(404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// This server's sandboxes of task `task_id`: those labelled with it, and
    /// warm-pool sandboxes the task took (named for it by [`Sandbox::claim`]).
    pub async fn of_task(&self, task_id: &str) -> Result<Vec<SandboxInfo>> {
        let prefix = name_prefix(task_id);
        Ok(self
            .list(&[])
            .await?
            .into_iter()
            .filter(|info| match &info.task_id {
                Some(task) => task == task_id,
                None => info.pool.is_some() && info.name.starts_with(&prefix),
            })
            .collect())
    }

    /// Removes this server's sandboxes selected by `rule`, for reconciliation
    /// after a restart; returns what was removed. Containers (pods) without this
    /// server's instance label are never touched. On Kubernetes the instance's
    /// NetworkPolicies whose pod is gone are removed too.
    #[instrument(skip_all)]
    pub async fn reap(&self, rule: Reap) -> Result<Vec<SandboxInfo>> {
        let now = unix_now() as i64;
        let mut removed = Vec::new();
        for info in self.list(&[]).await? {
            let selected = match &rule {
                Reap::All => true,
                Reap::OlderThan(age) => now - info.created_unix >= age.as_secs() as i64,
                Reap::NotIn(keep) => info.task_id.as_ref().is_none_or(|t| !keep.contains(t)),
                Reap::AllExcept(keep) => !keep.contains(&info.id),
                Reap::Expired => info
                    .labels
                    .get(LABEL_DEADLINE)
                    .and_then(|d| d.parse::<i64>().ok())
                    .is_some_and(|d| d <= now),
            };
            if selected {
                match &self.backend {
                    Backend::Docker(d) => remove_container(d, &info.id).await?,
                    Backend::Kubernetes(k) => k.remove(&info.id).await?,
                }
                info!(container_id = %info.id, task_id = ?info.task_id, "reaped sandbox");
                removed.push(info);
            }
        }
        if let Backend::Kubernetes(k) = &self.backend {
            k.remove_orphan_policies(&self.defaults.instance_id).await?;
        }
        Ok(removed)
    }

    /// A handle to an existing sandbox of this server (e.g. found by
    /// [`list`](Sandboxes::list) after a restart). Its deadline timer is
    /// re-armed from the deadline label.
    pub async fn get(&self, id: &str) -> Result<Sandbox> {
        let docker = match &self.backend {
            Backend::Docker(d) => d,
            Backend::Kubernetes(k) => return self.get_pod(k, id).await,
        };
        let c = match docker.inspect_container(id, None).await {
            Ok(c) => c,
            Err(e) if docker_status(&e) == Some(404) => {
                return Err(SandboxError::NotFound(id.to_owned()));
            }
            Err(e) => return Err(e.into()),
        };
        let config = c.config.unwrap_or_default();
        let labels = config.labels.unwrap_or_default();
        if labels.get(LABEL_INSTANCE) != Some(&self.defaults.instance_id) {
            // Not ours: behave as if it did not exist.
            return Err(SandboxError::NotFound(id.to_owned()));
        }
        let (uid, gid) = config
            .user
            .as_deref()
            .and_then(|u| u.split_once(':'))
            .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
            .unwrap_or((self.defaults.uid, self.defaults.gid));
        let deadline_unix = labels
            .get(LABEL_DEADLINE)
            .and_then(|d| d.parse::<u64>().ok());
        let shared = Shared::new(
            self.backend.clone(),
            c.id.unwrap_or_else(|| id.to_owned()),
            labels.get(LABEL_TASK).cloned().unwrap_or_default(),
            uid,
            gid,
            config
                .working_dir
                .unwrap_or_else(|| self.defaults.workdir.clone()),
            deadline_unix,
            self.defaults.stop_grace,
        );
        if let Some(deadline) = deadline_unix {
            shared.arm_deadline(Duration::from_secs(deadline.saturating_sub(unix_now())));
        }
        Ok(Sandbox { shared })
    }
}

impl Sandboxes {
    async fn get_pod(&self, cluster: &Cluster, name: &str) -> Result<Sandbox> {
        let pod = cluster
            .pod(name)
            .await?
            .ok_or_else(|| SandboxError::NotFound(name.to_owned()))?;
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if labels.get(LABEL_INSTANCE) != Some(&self.defaults.instance_id) {
            // Not ours: behave as if it did not exist.
            return Err(SandboxError::NotFound(name.to_owned()));
        }
        let spec = pod.spec.unwrap_or_default();
        let security = spec.security_context.unwrap_or_default();
        let uid = security
            .run_as_user
            .and_then(|u| u32::try_from(u).ok())
            .unwrap_or(self.defaults.uid);
        let gid = security
            .run_as_group
            .and_then(|g| u32::try_from(g).ok())
            .unwrap_or(self.defaults.gid);
        let workdir = spec
            .containers
            .into_iter()
            .find(|c| c.name == crate::k8s::CONTAINER)
            .and_then(|c| c.working_dir)
            .unwrap_or_else(|| self.defaults.workdir.clone());
        let deadline_unix = labels
            .get(LABEL_DEADLINE)
            .and_then(|d| d.parse::<u64>().ok());
        let shared = Shared::new(
            self.backend.clone(),
            name.to_owned(),
            labels.get(LABEL_TASK).cloned().unwrap_or_default(),
            uid,
            gid,
            workdir,
            deadline_unix,
            self.defaults.stop_grace,
        );
        if let Some(deadline) = deadline_unix {
            shared.arm_deadline(Duration::from_secs(deadline.saturating_sub(unix_now())));
        }
        Ok(Sandbox { shared })
    }
}

/// `drydock-<task>-<unique>`: readable in `docker ps`, unique across retries.
pub(crate) fn container_name(task_id: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let seq = NAME_SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}{:x}{nanos:08x}{seq:x}",
        name_prefix(task_id),
        std::process::id()
    )
}

/// `drydock-<task>-`: how the names of a task's sandboxes begin.
fn name_prefix(task_id: &str) -> String {
    let task: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    format!("drydock-{task}-")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Missing TLS files are named as such: the client reads them before it connects, so no
    /// daemon is involved (nothing listens on the address, and nothing is sent to it).
    #[tokio::test]
    async fn missing_tls_files_are_named_not_reported_as_a_silent_daemon() {
        let dir = std::path::Path::new("/nonexistent/drydock-docker-certs");
        let mut defaults = SandboxDefaults::new("drydock-sandbox:offline", "server-1");
        defaults.tls_cert_path = Some(dir.to_path_buf());
        let Err(err) = Sandboxes::connect_to("tcp://127.0.0.1:2376", defaults).await else {
            panic!("no TLS files, no client");
        };
        assert!(matches!(err, SandboxError::TlsFiles { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("DOCKER_CERT_PATH (/nonexistent/drydock-docker-certs)"),
            "{text}"
        );
        assert!(!text.contains("does not answer"), "{text}");
        let Err(err) = crate::Images::connect(Some("tcp://127.0.0.1:2376"), Some(dir)).await else {
            panic!("no TLS files, no client");
        };
        assert!(matches!(err, SandboxError::TlsFiles { .. }), "{err:?}");
    }

    #[test]
    fn container_names_are_docker_safe_and_unique() {
        let a = container_name("task/with spaces:and*stuff");
        let b = container_name("task/with spaces:and*stuff");
        assert_ne!(a, b);
        assert!(a.starts_with("drydock-task-with-spaces-and-stuff-"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{a}"
        );
    }
}
