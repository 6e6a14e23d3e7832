//! The shared state every handler reaches through `State<AppState>`.

use std::ops::Deref;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::UsedStates;
use crate::config::Config;
use crate::github::Github;
use crate::secrets::{SecretBox, ServerKeys};
use crate::store::Store;

/// Long-lived services of one server instance.
#[derive(Debug)]
pub struct Services {
    /// Settings.
    pub config: Config,
    /// The URL people reach this server at, without a trailing slash.
    pub public_url: String,
    /// `scheme://host[:port]` dev-server previews are served at, when configured.
    pub preview_origin: Option<String>,
    /// The database.
    pub store: Store,
    /// Seals and opens secrets at rest.
    pub secrets: SecretBox,
    /// The server's keys (sessions are sealed with `jwe_secret`).
    pub keys: ServerKeys,
    /// The agents users can run.
    pub agents: drydock_agents::AgentRegistry,
    /// Providers users can store keys for: the built-in ones and any an agent names.
    pub providers: Vec<String>,
    /// GitHub, for sign-in and the user's repositories.
    pub github: Github,
    /// The users' GitHub tokens, renewed when they expire.
    pub github_tokens: crate::auth::GithubTokens,
    /// OAuth states already used in a callback.
    pub used_oauth_states: UsedStates,
    /// Live fan-out of task events and status changes.
    pub hub: std::sync::Arc<crate::tasks::EventHub>,
    /// Starts, runs and stops tasks.
    pub runner: crate::tasks::TaskRunner,
    /// The sandbox image's state (and its build, when drydock makes it).
    pub image: Arc<crate::sandbox_image::SandboxImage>,
    /// The egress proxy and model gateway.
    pub egress: Arc<crate::egress::Egress>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

/// Cheap-to-clone handle on [`Services`], the state of the axum router.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<Services>);

impl Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}
