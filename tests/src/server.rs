//! A real drydock server, started with `drydock::run` on `127.0.0.1:0`, as `main` would.

use std::net::SocketAddr;

use drydock::config::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server and what a test needs to talk to it.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The listening address.
    pub addr: SocketAddr,
    /// The data directory (generated keys live here).
    pub data_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server on the given database with settings `extra` (command-line form, e.g.
    /// `["--github-url", "http://..."]`).
    pub async fn start(database_url: &str, extra: &[&str]) -> Self {
        Self::start_with(database_url, extra.iter().map(|s| s.to_string()).collect()).await
    }

    /// Like [`TestServer::start`], with owned settings.
    pub async fn start_with(database_url: &str, extra: Vec<String>) -> Self {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let mut args: Vec<String> = vec![
            "drydock".into(),
            "--addr".into(),
            addr.to_string(),
            "--data-dir".into(),
            data_dir.path().display().to_string(),
            "--database-url".into(),
            database_url.into(),
            "--shutdown-grace".into(),
            "5".into(),
        ];
        // Sandboxes started by tests never get a network unless the test asks for one
        // (`--sandbox-network host` to reach stand-ins on loopback).
        if !extra.iter().any(|a| a == "--sandbox-network") {
            args.extend(["--sandbox-network".to_owned(), "none".to_owned()]);
        }
        // Network policies (issue 17) change how sandboxes reach anything; the tests that are
        // about them ask for one, the others keep the sandbox network they name.
        if !extra.iter().any(|a| a == "--network-policy") {
            args.extend(["--network-policy".to_owned(), "off".to_owned()]);
        }
        // drydock builds its own sandbox image when it is missing; tests that want that say so
        // (`--sandbox-image-build offline`), the others must not start a build as a side effect.
        if !extra.iter().any(|a| a == "--sandbox-image-build") {
            args.extend(["--sandbox-image-build".to_owned(), "off".to_owned()]);
        }
        args.extend(extra);
        let config = Config::parse_from_args(args).expect("valid test configuration");
        if std::env::var_os("DRYDOCK_TEST_LOG").is_some() {
            drydock::telemetry::init(&config);
        }
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(drydock::run(config, listener, async move {
            let _ = rx.await;
        }));
        let server = Self {
            url: format!("http://{addr}"),
            addr,
            data_dir,
            shutdown: Some(tx),
            handle: Some(handle),
        };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(resp) = client.get(format!("{}/healthz", self.url)).send().await
                && resp.status().is_success()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("drydock did not become healthy at {}", self.url);
    }

    /// Signals shutdown and waits for `run` to return, giving its result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(handle) => handle.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
