//! drydock server library: configuration, HTTP API and pages, auth, store, secrets, task runner.
//!
//! [`run`] is the whole server; `main` and the tests both call it.

pub mod agents_api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod egress;
pub mod environments;
pub mod error;
pub mod github;
pub mod http;
pub mod keys;
pub mod redact;
pub mod repos;
pub mod sandbox_image;
pub mod secrets;
pub mod state;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod terminal;
pub mod tokens;
pub mod triggers;
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
    // SQLite has one replica: a second server on the same file is refused before it touches it.
    // A signal while it waits for a `drydock migrate` stops it there.
    let mut shutdown = Box::pin(shutdown);
    let _single = tokio::select! {
        held = hold_sqlite_file(&config, LockFor::Serving) => held?,
        () = &mut shutdown => {
            tracing::info!("drydock stopped before it started");
            return Ok(());
        }
    };
    let state = build_state(config, addr).await?;
    let image_watch = tokio_util::sync::CancellationToken::new();
    state.image.start(image_watch.clone());
    state.runner.claim_instance().await?;
    state.runner.start().await;
    tasks::relay::start(
        state.store.clone(),
        state.hub.clone(),
        state.runner.clone(),
        state.runner.runner_id().to_owned(),
        image_watch.clone(),
    )
    .await
    .context("listening for other replicas' events")?;
    let grace = Duration::from_secs(state.config.shutdown_grace);
    let app = http::router(state.clone());

    tracing::info!(%addr, public_url = %state.public_url, database = ?state.store.backend(), sandboxes = ?state.config.sandbox_backend, "drydock is listening");

    // Signal twice: once to axum (stop accepting, drain), once to the grace timer.
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let mut drain_rx = rx.clone();
    let mut grace_rx = rx;
    let hub = state.hub.clone();
    let server =
        axum::serve(listener, app.into_make_service()).with_graceful_shutdown(async move {
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
    image_watch.cancel();
    state.runner.shutdown().await;
    state.store.close().await;
    tracing::info!("drydock stopped");
    Ok(())
}

/// What the SQLite lock is taken for. The holder writes it into the lock file, so that whoever
/// finds the lock taken knows whether to give up (a server holds it) or wait (a migration does,
/// which ends by itself).
#[derive(Clone, Copy, PartialEq, Eq)]
enum LockFor {
    /// `drydock serve`: SQLite has one replica.
    Serving,
    /// `drydock migrate`: a running server's open connections would keep the schema they read.
    Migrating,
}

impl LockFor {
    /// The first word of the lock file's content while held for this.
    fn word(self) -> &'static str {
        match self {
            LockFor::Serving => "serve",
            LockFor::Migrating => "migrate",
        }
    }
}

/// Takes the lock that makes a SQLite database single-replica: an exclusive advisory lock on
/// `<database file>.serve-lock`, held until the returned file is dropped (when `run` returns,
/// or the kernel releases it when the process dies, however it dies), with `serve PID` or
/// `migrate PID` written in it. `None` for PostgreSQL, where replicas coordinate through the
/// database. When a `drydock migrate` holds the lock, waits for it (saying so); when a server
/// holds it, errors with what to do.
async fn hold_sqlite_file(
    config: &Config,
    purpose: LockFor,
) -> anyhow::Result<Option<std::fs::File>> {
    use std::io::{Seek, Write};
    let url = config.database_url();
    let Some(db) = store::sqlite_file(url.expose()) else {
        return Ok(None);
    };
    create_data_dir(&config.data_dir)?;
    if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // One lock per file, however it is named (a symbolic link, `..`, a relative path).
    let db = std::fs::canonicalize(&db)
        .ok()
        .or_else(|| {
            let parent = db.parent().filter(|p| !p.as_os_str().is_empty())?;
            Some(std::fs::canonicalize(parent).ok()?.join(db.file_name()?))
        })
        .unwrap_or(db);
    let mut name = db.clone().into_os_string();
    name.push(".serve-lock");
    let path = std::path::PathBuf::from(name);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // A `drydock migrate` ends by itself: wait for it (polled, so that the wait can be given
    // up); a server does not: refuse. The holder is read again on each try, since a server may
    // take the lock the migration let go of.
    let mut said_waiting = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("locking {}", path.display()));
            }
        }
        // Written by the holder just after it took the lock; empty for a moment, and in a lock
        // file from before holders wrote it, both of which are read as a server.
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        if holder.split_whitespace().next() != Some(LockFor::Migrating.word()) {
            match purpose {
                LockFor::Serving => anyhow::bail!(
                    "another drydock server is already running on the SQLite database {}: \
                     SQLite supports one server only (stop the other one, or use PostgreSQL to \
                     run several replicas)",
                    db.display()
                ),
                LockFor::Migrating => anyhow::bail!(
                    "a drydock server is running on the SQLite database {}: stop it before \
                     migrating (a server applies the migrations itself when it starts; one left \
                     running would go on reading the schema it started with)",
                    db.display()
                ),
            }
        }
        if !said_waiting {
            tracing::info!(database = %db.display(), "waiting for a `drydock migrate` on this database to finish");
            said_waiting = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{} {}", purpose.word(), std::process::id()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(file))
}

/// Applies database migrations and returns (the `migrate` subcommand). On SQLite, refused while
/// a server runs on the same database file.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let _single = hold_sqlite_file(config, LockFor::Migrating).await?;
    let url = config.database_url();
    let new_file = store::sqlite_file(url.expose()).filter(|file| !file.exists());
    let store = Store::open(url.expose()).await?;
    let version = store.migration_version().await?.unwrap_or_default();
    store.close().await;
    match new_file {
        Some(file) => tracing::info!(
            database = ?store.backend(),
            version,
            "there was no database at {}: created it, with the schema at version {version}",
            file.display()
        ),
        None => tracing::info!(
            database = ?store.backend(),
            version,
            "migrations applied: the schema is at version {version}"
        ),
    }
    Ok(())
}

async fn build_state(config: Config, bound: std::net::SocketAddr) -> anyhow::Result<AppState> {
    config.check().map_err(anyhow::Error::msg)?;
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
    check_preview_host(config.preview_host.as_deref(), &public_url)?;
    let hub = Arc::new(tasks::EventHub::default());
    let github_tokens = auth::GithubTokens::new(store.clone(), secrets.clone(), github.clone());
    let image = sandbox_image::SandboxImage::new(&config);
    let egress = Arc::new(egress::Egress::new(
        egress_settings(&config)?,
        store.clone(),
        hub.clone(),
        &keys.encryption_key,
    ));
    let runner = tasks::TaskRunner::new(
        tasks::RunnerSettings::from_config(&config, instance_id(&config)?, public_url.clone()),
        tasks::RunnerServices {
            store: store.clone(),
            secrets: secrets.clone(),
            github: github.clone(),
            tokens: github_tokens.clone(),
            agents: agents.clone(),
            hub: hub.clone(),
            image: image.clone(),
            egress: egress.clone(),
        },
    );
    if config.sandbox_backend == config::SandboxBackend::Kubernetes {
        // Refuse a wrong cluster setting now (unreachable API server, missing namespace,
        // missing permission) rather than at the first task.
        runner
            .sandboxes()
            .await
            .map_err(|e| anyhow::anyhow!("DRYDOCK_SANDBOX_BACKEND=kubernetes: {e}"))?;
    }
    let services = Services {
        egress,
        image,
        agents,
        providers,
        secrets,
        keys,
        store,
        hub,
        runner,
        github,
        github_tokens,
        used_oauth_states: auth::UsedStates::default(),
        metrics: http::install_recorder(),
        preview_origin: tasks::preview::origin(config.preview_host.as_deref(), &public_url),
        public_url,
        config,
    };
    Ok(AppState(Arc::new(services)))
}

/// The egress proxy's and model gateway's settings; a bad policy setting or price table stops
/// start-up with the reason.
fn egress_settings(config: &Config) -> anyhow::Result<egress::EgressSettings> {
    let bounds = egress::PolicyBounds::parse(
        &config.network_policy,
        &config.network_policy_max,
        &config.egress_allow,
    )
    .map_err(anyhow::Error::msg)?;
    let prices = match &config.prices_file {
        Some(path) => egress::meter::PriceTable::load(path).map_err(anyhow::Error::msg)?,
        None => egress::meter::PriceTable::builtin(),
    };
    let mut upstreams = std::collections::HashMap::new();
    for (provider, url) in [
        ("anthropic", &config.anthropic_base_url),
        ("openai", &config.openai_base_url),
        ("gemini", &config.gemini_base_url),
    ] {
        let url = url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .or(egress::default_upstream(provider));
        if let Some(url) = url {
            upstreams.insert(provider.to_owned(), url.trim_end_matches('/').to_owned());
        }
    }
    Ok(egress::EgressSettings {
        bounds,
        allow_private: config.egress_allow_private,
        upstreams,
        prices,
        budget: egress::Budget {
            tokens: config.daily_token_budget,
            cost_usd: config.daily_cost_budget_usd,
        },
    })
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

/// Refuses a preview host that shares the public URL's host name: cookies are shared across ports,
/// so preview pages there could act as the signed-in user.
fn check_preview_host(preview_host: Option<&str>, public_url: &str) -> anyhow::Result<()> {
    let Some(preview) = preview_host.map(str::trim).filter(|h| !h.is_empty()) else {
        return Ok(());
    };
    let name_of = |authority: &str| -> String {
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let name = if authority.starts_with('[') {
            authority
                .split(']')
                .next()
                .map(|h| format!("{h}]"))
                .unwrap_or_default()
        } else {
            authority.split(':').next().unwrap_or_default().to_owned()
        };
        name.to_ascii_lowercase()
    };
    let public_authority = public_url
        .split_once("://")
        .map_or(public_url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    if preview.contains('/') || name_of(preview).is_empty() {
        anyhow::bail!(
            "DRYDOCK_PREVIEW_HOST must be a host name (with an optional :PORT), such as preview.drydock.example"
        );
    }
    if name_of(preview) == name_of(public_authority) {
        anyhow::bail!(
            "DRYDOCK_PREVIEW_HOST ({preview}) must be another host name than the public URL's ({public_authority}): browsers share cookies across ports, so previews there could act as the signed-in user"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_preview_host;

    #[test]
    fn the_preview_host_must_be_another_host_name() {
        assert!(check_preview_host(None, "https://drydock.example").is_ok());
        assert!(
            check_preview_host(Some("preview.drydock.example"), "https://drydock.example").is_ok()
        );
        assert!(check_preview_host(Some("localhost"), "http://127.0.0.1:8080").is_ok());
        let same = check_preview_host(Some("drydock.example:8443"), "https://drydock.example")
            .unwrap_err()
            .to_string();
        assert!(same.contains("another host name"), "{same}");
        assert!(check_preview_host(Some("DRYDOCK.example"), "https://drydock.example/").is_err());
        assert!(check_preview_host(Some("https://x.example/"), "https://drydock.example").is_err());
    }
}
