//! The task runner: claims queued tasks and runs each turn as a pipeline of named stages. Durable
//! state lives in the database; this process only holds what is needed to stop a running turn.
//!
//! Reading order, following one task from claim to pull request:
//! - [`scheduler`]: claiming queued tasks within the limits, spawning a turn, stopping, shutdown;
//! - [`turn`]: one turn as its list of stages, and how it ends (cleanup, outcome recorded);
//! - the stages, in order: [`agent`] (what to run: prompt, launch plan, keys, connectors),
//!   [`workspace`] (the host checkout and every host git and GitHub step: which branch, clone,
//!   submodules, bundle import, diff, secret check, push, pull request), [`sandbox`] (continue
//!   the kept sandbox, or take a warm one from [`pool`] or create one, begun once the branch is
//!   known so it starts while the host clones; its image and setup come from [`environment`];
//!   upload), [`agent`] again (run it, streaming its output via
//!   [`exec`]), [`handback`] (commit in the sandbox and bring the commit back), [`publish`]
//!   (diff stored, secret check, push, pull request);
//! - [`lifetime`]: kept-alive sandboxes, the idle reaper, adoption and reaping after a restart;
//!   [`pool`]: the warm pool of sandboxes started ahead of tasks;
//!   [`replicas`]: leases and heartbeats, adoption of a lost replica's tasks, requests from
//!   other replicas; [`reattach`]: the agent's output kept in its sandbox, and following it
//!   from the replica that adopted the turn;
//!   [`dev_server`]: dev-server previews in kept sandboxes;
//! - [`outcome`]: how a status and its reason are decided; [`prompt`]: the words drydock writes
//!   (titles, follow-up prompts, commit messages, pull request bodies);
//! - [`settings`]: the runner's settings.

mod agent;
mod dev_server;
mod environment;
mod exec;
mod handback;
mod lifetime;
mod outcome;
mod pool;
mod prompt;
mod publish;
mod reattach;
mod replicas;
mod sandbox;
mod scheduler;
mod settings;
mod turn;
mod workspace;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use drydock_agents::AgentRegistry;
use drydock_sandbox::{NetworkMode, SandboxDefaults, SandboxError, Sandboxes};
use tokio_util::sync::CancellationToken;

use super::hub::EventHub;
use crate::auth::GithubTokens;
use crate::github::Github;
use crate::secrets::SecretBox;
use crate::store::{NewEvent, Store};

pub use prompt::title_of;
pub use settings::RunnerSettings;

/// Starts, stops and follows tasks. Cheap to clone.
#[derive(Clone)]
pub struct TaskRunner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TaskRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRunner")
            .field("runner_id", &self.inner.settings.runner_id)
            .finish_non_exhaustive()
    }
}

/// What the runner works with, shared with the rest of the server.
#[derive(Debug, Clone)]
pub struct RunnerServices {
    /// The database.
    pub store: Store,
    /// Opens sealed secrets (API keys, tokens, connector values).
    pub secrets: SecretBox,
    /// GitHub's API.
    pub github: Github,
    /// The users' GitHub tokens, renewed when they expire.
    pub tokens: GithubTokens,
    /// The agents on offer.
    pub agents: AgentRegistry,
    /// Live events and status changes for viewers.
    pub hub: Arc<EventHub>,
    /// The sandbox image: queued tasks wait while it is being built.
    pub image: Arc<crate::sandbox_image::SandboxImage>,
    /// The egress proxy and model gateway.
    pub egress: Arc<crate::egress::Egress>,
}

struct Inner {
    settings: RunnerSettings,
    store: Store,
    secrets: SecretBox,
    github: Github,
    tokens: GithubTokens,
    agents: AgentRegistry,
    hub: Arc<EventHub>,
    image: Arc<crate::sandbox_image::SandboxImage>,
    egress: Arc<crate::egress::Egress>,
    sandboxes: tokio::sync::Mutex<Option<Sandboxes>>,
    /// Sandboxes started ahead of tasks.
    pool: pool::WarmPool,
    /// Tasks this process runs, with what stops each.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// One scheduling pass at a time.
    schedule_lock: tokio::sync::Mutex<()>,
    /// Held while acting on other replicas' requests, so two passes (a notification and a
    /// heartbeat at once) never act on one request together: the second would find the work
    /// under way, clear the request, and the asking replica would answer before it was done.
    requests_lock: tokio::sync::Mutex<()>,
    /// Cancelled when the server shuts down.
    shutdown: CancellationToken,
}

impl TaskRunner {
    /// A runner; call [`TaskRunner::start`] to recover and begin scheduling.
    pub fn new(settings: RunnerSettings, services: RunnerServices) -> Self {
        let RunnerServices {
            store,
            secrets,
            github,
            tokens,
            agents,
            hub,
            image,
            egress,
        } = services;
        // The longest a task's sandbox lives: a turn's deadline plus its minute of slack, or a
        // kept-alive sandbox's lifetime.
        let longest_task = (settings.max_task_duration + std::time::Duration::from_secs(60))
            .max(settings.keep_alive_lifetime);
        let pool =
            pool::WarmPool::new(settings.warm_pool, settings.warm_pool_max_age, longest_task);
        Self {
            inner: Arc::new(Inner {
                settings,
                store,
                secrets,
                github,
                tokens,
                agents,
                hub,
                image,
                egress,
                sandboxes: tokio::sync::Mutex::new(None),
                pool,
                running: Mutex::new(HashMap::new()),
                schedule_lock: tokio::sync::Mutex::new(()),
                requests_lock: tokio::sync::Mutex::new(()),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// Docker (or Kubernetes), connected on first use (and again after a failure), so the
    /// server starts and serves everything else while Docker is down. With Kubernetes, start-up
    /// connects once to refuse a wrong cluster setting early.
    pub async fn sandboxes(&self) -> Result<Sandboxes, SandboxError> {
        let mut slot = self.inner.sandboxes.lock().await;
        if let Some(sandboxes) = slot.as_ref() {
            return Ok(sandboxes.clone());
        }
        let s = &self.inner.settings;
        let mut defaults = SandboxDefaults::new(s.image.clone(), s.runner_id.clone());
        defaults.network = NetworkMode::parse(&s.network);
        defaults.limits = s.limits.clone();
        defaults.tls_cert_path = s.docker_cert_path.clone();
        let sandboxes = match (&s.kubernetes, &s.docker_host) {
            (Some(options), _) => Sandboxes::connect_kubernetes(defaults, options.clone()).await?,
            (None, Some(host)) => Sandboxes::connect_to(host, defaults).await?,
            (None, None) => Sandboxes::connect(defaults).await?,
        };
        *slot = Some(sandboxes.clone());
        Ok(sandboxes)
    }

    /// This replica's instance id (sandbox labels, `tasks.runner_id`, `replicas.id`).
    pub fn runner_id(&self) -> &str {
        &self.inner.settings.runner_id
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.inner.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a line of drydock's own (no secrets in it) to a task's log outside a run, and shows
    /// it to live viewers.
    async fn note(&self, task_id: &str, kind: &'static str, text: String) {
        match self
            .inner
            .store
            .append_task_events(
                task_id,
                &[NewEvent {
                    kind,
                    text,
                    source: None,
                }],
            )
            .await
        {
            Ok(stored) => self.inner.hub.publish(task_id, &stored),
            Err(err) => tracing::error!(task_id, error = %err, "could not add to the task's log"),
        }
    }

    /// Tells the task's viewers (the task table and its page) that its row changed.
    fn announce(&self, user_id: &str, task_id: &str, status: &str, reason: Option<String>) {
        self.inner.hub.status_changed(super::hub::StatusChange {
            user_id: user_id.to_owned(),
            task_id: task_id.to_owned(),
            status: status.to_owned(),
            status_reason: reason,
        });
    }
}
