//! The runner's settings, taken from the server configuration once at start-up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use drydock_sandbox::Limits;

use crate::config::Config;

/// Settings of the runner, taken from [`Config`] at start-up.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// This server's id in sandbox labels and `tasks.runner_id`.
    pub runner_id: String,
    /// Where checkouts live while a task runs.
    pub work_dir: PathBuf,
    /// Tasks running at once, all users.
    pub max_concurrent: i64,
    /// Tasks running at once per user.
    pub max_concurrent_per_user: i64,
    /// Docker daemon, when not the default.
    pub docker_host: Option<String>,
    /// Certificates for a Docker daemon reached over TLS (`DOCKER_CERT_PATH`).
    pub docker_cert_path: Option<PathBuf>,
    /// Kubernetes instead of Docker, with where and how pods are made (`DRYDOCK_SANDBOX_BACKEND`).
    pub kubernetes: Option<drydock_sandbox::KubernetesOptions>,
    /// Sandbox image.
    pub image: String,
    /// Sandbox network mode.
    pub network: String,
    /// Sandbox limits.
    pub limits: Limits,
    /// Gateway base URLs by provider.
    pub base_urls: BTreeMap<String, String>,
    /// Public URL, for links in commits and pull requests.
    pub public_url: String,
    /// GitHub's web URL (for the noreply email domain).
    pub github_url: String,
    /// How long a kept-alive sandbox may sit idle after a turn.
    pub idle_timeout: Duration,
    /// Hard deadline of a kept-alive sandbox, however busy.
    pub keep_alive_lifetime: Duration,
    /// Longest a task may run (`DRYDOCK_MAX_TASK_DURATION`).
    pub max_task_duration: Duration,
    /// Warm sandboxes kept per sandbox shape (`DRYDOCK_WARM_POOL`; 0: no warm pool).
    pub warm_pool: usize,
    /// How long a warm sandbox waits for a task before it is replaced.
    pub warm_pool_max_age: Duration,
    /// Port of dev-server previews inside sandboxes; `None` when previews are off.
    pub preview_port: Option<u16>,
    /// Connector token refreshes may reach private addresses (`DRYDOCK_ALLOW_PRIVATE_CONNECTOR_URLS`).
    pub allow_private_connector_urls: bool,
    /// One OAuth connector refresh at a time per connector in this server (shared with the API).
    pub connector_refresh_locks: crate::connectors::tokens::RefreshLocks,
    /// The connector circuit breaker's base back-off (`DRYDOCK_CONNECTOR_BACKOFF_SECS`).
    pub connector_backoff: Duration,
    /// Operator-registered environment images by name (`DRYDOCK_ENVIRONMENT_IMAGES`).
    pub environment_images: BTreeMap<String, String>,
    /// Environment snapshots older than this are pruned (`DRYDOCK_SNAPSHOT_MAX_AGE`).
    pub snapshot_max_age: Duration,
    /// Environment snapshots kept per user and repository (`DRYDOCK_SNAPSHOTS_PER_REPO`).
    pub snapshots_per_repo: usize,
    /// How long a running turn's lease lasts without renewal (`DRYDOCK_LEASE_SECS`).
    pub lease: Duration,
}

impl RunnerSettings {
    /// Settings from the server configuration.
    pub fn from_config(config: &Config, runner_id: String, public_url: String) -> Self {
        let mut base_urls = BTreeMap::new();
        for (provider, url) in [
            ("anthropic", &config.anthropic_base_url),
            ("openai", &config.openai_base_url),
            ("gemini", &config.gemini_base_url),
        ] {
            if let Some(url) = url.as_ref().filter(|u| !u.is_empty()) {
                base_urls.insert(provider.to_owned(), url.clone());
            }
        }
        Self {
            runner_id,
            work_dir: config.data_dir.join("work"),
            max_concurrent: i64::from(config.max_concurrent_tasks),
            max_concurrent_per_user: i64::from(config.max_concurrent_tasks_per_user),
            docker_host: config.docker_host.clone(),
            docker_cert_path: config.docker_cert_path.clone(),
            kubernetes: kubernetes_options(config),
            image: config.resolve_sandbox_image(),
            network: config.sandbox_network.clone(),
            limits: Limits {
                pids: config.sandbox_pids,
                memory_bytes: i64::from(config.sandbox_memory_mb) * 1024 * 1024,
                cpus: config.sandbox_cpus,
            },
            base_urls,
            public_url,
            github_url: config.github_url.clone(),
            idle_timeout: Duration::from_secs(config.sandbox_idle_timeout),
            keep_alive_lifetime: Duration::from_secs(config.sandbox_max_lifetime),
            max_task_duration: Duration::from_secs(config.max_task_duration),
            warm_pool: config.warm_pool as usize,
            warm_pool_max_age: Duration::from_secs(config.warm_pool_max_age),
            preview_port: config
                .preview_host
                .as_deref()
                .filter(|h| !h.trim().is_empty())
                .map(|_| config.preview_port),
            allow_private_connector_urls: config.allow_private_connector_urls,
            connector_refresh_locks: crate::connectors::tokens::RefreshLocks::default(),
            connector_backoff: Duration::from_secs(u64::from(config.connector_backoff_secs)),
            environment_images: crate::environments::registered_images(&config.environment_images),
            snapshot_max_age: Duration::from_secs(config.snapshot_max_age),
            snapshots_per_repo: usize::try_from(config.snapshots_per_repo).unwrap_or(3),
            lease: Duration::from_secs(config.lease_secs),
        }
    }
}

/// The Kubernetes backend's options, when `DRYDOCK_SANDBOX_BACKEND=kubernetes`.
fn kubernetes_options(config: &Config) -> Option<drydock_sandbox::KubernetesOptions> {
    match config.sandbox_backend {
        crate::config::SandboxBackend::Docker => None,
        crate::config::SandboxBackend::Kubernetes => {
            let mut options =
                drydock_sandbox::KubernetesOptions::new(config.kubernetes_namespace.trim());
            options.runtime_class = config
                .kubernetes_runtime_class
                .as_deref()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned);
            options.node_selector = config.kubernetes_node_selector.clone().unwrap_or_default();
            // Claiming a pooled pod relabels it: the start-up check asks for `patch pods` too.
            options.warm_pool = config.warm_pool > 0;
            // One file is read here; a `:` list is left to kube's own lookup, which merges it.
            options.kubeconfig = config
                .kubeconfig
                .clone()
                .filter(|p| !p.as_os_str().is_empty() && !p.to_string_lossy().contains(':'));
            Some(options)
        }
    }
}
