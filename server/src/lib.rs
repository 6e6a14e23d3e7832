//! drydock server library: configuration, HTTP API and pages, auth, store, secrets, task runner.
//!
//! [`run`] is the whole server; `main` and the tests both call it.

pub mod agents_api;
pub mod auth;
pub mod config;
pub mod connectors;
pub mod error;
pub mod github;
pub mod http;
pub mod keys;
pub mod redact;
pub mod repos;
pub mod secrets;
pub mod state;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod web;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::secrets::{SecretBox, ServerKeys};
use crate::state::{AppState, Services};
use crate::store::Store;

/// Opens the data directory, keys and database, then serves HTTP on `listener` until `shutdown`
/// resolves; in-flight requests then get `shutdown_grace` seconds to finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    let state = build_state(config, addr).await?;
    state.runner.start().await;
    let grace = Duration::from_secs(state.config.shutdown_grace);
    let app = http::router(state.clone());

    tracing::info!(%addr, public_url = %state.public_url, backend = ?state.store.backend(), "drydock is listening");

    // Signal twice: once to axum (stop accepting, drain), once to the grace timer.
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let mut drain_rx = rx.clone();
    let mut grace_rx = rx;
    let hub = state.hub.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = drain_rx.wait_for(|stop| *stop).await;
        tracing::info!("shutting down: finishing in-flight requests");
        // Live event streams never finish by themselves: end them cleanly now.
        hub.close();
    });
    let grace_timer = async move {
        let _ = grace_rx.wait_for(|stop| *stop).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result.context("serving HTTP")?,
        () = grace_timer => tracing::warn!(grace_s = grace.as_secs(), "shutdown grace period over; dropping remaining requests"),
    }
    state.runner.shutdown().await;
    state.store.close().await;
    tracing::info!("drydock stopped");
    Ok(())
}

/// Applies database migrations and returns (the `migrate` subcommand).
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    create_data_dir(&config.data_dir)?;
    let store = Store::open(config.database_url().expose()).await?;
    tracing::info!(backend = ?store.backend(), "migrations applied");
    store.close().await;
    Ok(())
}

async fn build_state(config: Config, bound: std::net::SocketAddr) -> anyhow::Result<AppState> {
    create_data_dir(&config.data_dir)?;
    let keys = ServerKeys::load(
        &config.data_dir,
        config.encryption_key.as_ref(),
        config.jwe_secret.as_ref(),
    )?;
    let agents = load_agents(&config)?;
    let providers = providers_of(&agents);
    let store = Store::open(config.database_url().expose()).await?;
    let secrets = SecretBox::new(&keys.encryption_key);
    let github = github::Github::new(&config)?;
    let public_url = config.public_url_for(bound);
    let hub = Arc::new(tasks::EventHub::default());
    let runner = tasks::TaskRunner::new(
        tasks::RunnerSettings::from_config(&config, instance_id(&config)?, public_url.clone()),
        store.clone(),
        secrets.clone(),
        github.clone(),
        agents.clone(),
        hub.clone(),
    );
    let services = Services {
        agents,
        providers,
        secrets,
        keys,
        store,
        hub,
        runner,
        github,
        used_oauth_states: auth::UsedStates::default(),
        metrics: http::install_recorder(),
        public_url,
        config,
    };
    Ok(AppState(Arc::new(services)))
}

/// Providers users can always store keys for, whatever the agents.
const BUILTIN_PROVIDERS: [&str; 5] = ["anthropic", "openai", "gemini", "cursor", "copilot"];

fn load_agents(config: &Config) -> anyhow::Result<drydock_agents::AgentRegistry> {
    match &config.agents_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading DRYDOCK_AGENTS_FILE {}", path.display()))?;
            drydock_agents::AgentRegistry::with_agents_file(&text)
                .with_context(|| format!("in DRYDOCK_AGENTS_FILE {}", path.display()))
        }
        None => Ok(drydock_agents::AgentRegistry::builtin()?),
    }
}

fn providers_of(agents: &drydock_agents::AgentRegistry) -> Vec<String> {
    let mut providers: Vec<String> = BUILTIN_PROVIDERS.iter().map(|p| (*p).to_owned()).collect();
    for agent in agents.agents() {
        for key in &agent.keys {
            if !providers.contains(&key.provider) {
                providers.push(key.provider.clone());
            }
        }
    }
    providers
}

/// This server's id: the setting, or one generated once into the data directory.
fn instance_id(config: &Config) -> anyhow::Result<String> {
    if let Some(id) = config.instance_id.as_ref().filter(|id| !id.is_empty()) {
        return Ok(id.clone());
    }
    let path = config.data_dir.join("instance.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => {
            let id = format!(
                "drydock-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
    }
}

/// Creates the data directory (keys, SQLite database) readable by the server's user only. A
/// directory that already exists is the operator's choice and keeps its mode.
fn create_data_dir(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating the data directory {}", path.display()))
}
