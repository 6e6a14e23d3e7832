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
    /// The server's instance id (its sandboxes' `drydock.instance` label).
    pub instance_id: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    /// The server's own process, for [`TestServer::start_process`].
    child: Option<std::process::Child>,
}

/// The first argument that makes an executable serve as a [`TestServer::start_process`] child.
const SERVE_CHILD: &str = "--serve-drydock-child";

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
        let (args, named_instance) = server_args(addr, &data_dir, database_url, extra);
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
            instance_id: String::new(),
            data_dir,
            shutdown: Some(tx),
            handle: Some(handle),
            child: None,
        };
        server.ready(named_instance).await
    }

    /// Like [`TestServer::start_with`], with the server in a process of its own, so its memory
    /// and CPU time are its alone (for benchmarks): this executable run again with a first
    /// argument that [`serve_child_if_asked`] (called first thing in its `main`) recognises.
    pub async fn start_process(database_url: &str, extra: Vec<String>) -> Self {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let (args, named_instance) = server_args(addr, &data_dir, database_url, extra);
        let child = std::process::Command::new(std::env::current_exe().expect("this executable"))
            .arg(SERVE_CHILD)
            .args(&args[1..])
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start the server process");
        let server = Self {
            url: format!("http://{addr}"),
            addr,
            instance_id: String::new(),
            data_dir,
            shutdown: None,
            handle: None,
            child: Some(child),
        };
        server.ready(named_instance).await
    }

    /// The server process's id, for [`TestServer::start_process`] servers.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    async fn ready(mut self, named_instance: Option<String>) -> Self {
        self.wait_healthy().await;
        self.instance_id = named_instance.unwrap_or_else(|| {
            std::fs::read_to_string(self.data_dir.path().join("instance.id"))
                .map(|id| id.trim().to_owned())
                .unwrap_or_default()
        });
        self
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
        if let Some(mut child) = self.child.take() {
            let status = tokio::task::spawn_blocking(move || {
                terminate(&child);
                child.wait()
            })
            .await??;
            anyhow::ensure!(status.success(), "the server process ended with {status}");
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
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let _ = child.wait();
        }
        // A server dropped without `stop` (a test that returns or panics) must finish its
        // shutdown before the test's runtime ends and drops it half-way: its runner removes the
        // warm pool, including a sandbox Docker is still creating, which nothing else would
        // ever remove (a later server gets a new instance id).
        if let Some(handle) = self.handle.take() {
            let waited = match tokio::runtime::Handle::try_current() {
                Ok(runtime)
                    if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
                {
                    tokio::task::block_in_place(|| {
                        runtime
                            .block_on(tokio::time::timeout(SHUTDOWN_WAIT, handle))
                            .is_ok()
                    })
                }
                // A single-threaded runtime cannot be blocked on from inside: remove what the
                // server lists as warm, as the next best thing.
                _ => false,
            };
            if !waited && !self.instance_id.is_empty() {
                for _ in 0..2 {
                    crate::tasks::remove_warm_sandboxes(&self.instance_id);
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
        }
    }
}

/// How long a dropped server's shutdown is waited for: its grace period for requests (5 s, see
/// [`server_args`]), its runner stopping tasks (up to 10 s) and removing the pool.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The command line of a test server (program name first) and the instance id it names, if any.
fn server_args(
    addr: SocketAddr,
    data_dir: &tempfile::TempDir,
    database_url: &str,
    extra: Vec<String>,
) -> (Vec<String>, Option<String>) {
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
    let named_instance = extra
        .iter()
        .position(|a| a == "--instance-id")
        .and_then(|i| extra.get(i + 1).cloned());
    args.extend(extra);
    (args, named_instance)
}

/// Asks a server process to stop as an operator would (SIGTERM).
fn terminate(child: &std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

/// In a [`TestServer::start_process`] child: serves drydock with the command line it was given
/// until SIGTERM, then exits the process. Returns (doing nothing) in any other process.
pub fn serve_child_if_asked() {
    let mut args = std::env::args();
    if args.nth(1).as_deref() != Some(SERVE_CHILD) {
        return;
    }
    let args = std::iter::once("drydock".to_owned()).chain(args);
    let config = Config::parse_from_args(args).expect("valid server configuration");
    if std::env::var_os("DRYDOCK_TEST_LOG").is_some() {
        drydock::telemetry::init(&config);
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.addr).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        drydock::run(config, listener, async move {
            term.recv().await;
        })
        .await
    });
    if let Err(err) = &result {
        eprintln!("drydock (bench server): {err:#}");
    }
    std::process::exit(i32::from(result.is_err()));
}
