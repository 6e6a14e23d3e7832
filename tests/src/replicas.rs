//! Several real drydock processes on one PostgreSQL database, for the replica tests and
//! benchmarks: each runs the `drydock-replica` binary (the same `drydock::run` as `drydock
//! serve`), so one can be killed with SIGKILL. Only integration tests and benches know the
//! binary's path (`env!("CARGO_BIN_EXE_drydock-replica")`), so they pass it in.

#![allow(clippy::unwrap_used)] // test support: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::tasks::{ACME_KEY, SCRIPTED_AGENT, sandbox_image};
use crate::{GithubStandIn, TestDb};

/// The keys every replica shares (sessions and sealed secrets work on all of them).
const ENCRYPTION_KEY: &str = "7f3e2d1c0b0a09080706050403020100f0e0d0c0b0a090807060504030201000";
const JWE_SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// One `drydock serve` process.
pub struct Replica {
    /// Its instance id.
    pub id: String,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
    /// The lines of its log so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _data: tempfile::TempDir,
}

impl Replica {
    /// Starts a replica with instance id `id` on `database_url`; `extra` are more settings.
    pub fn start(
        bin: &str,
        id: &str,
        database_url: &str,
        gh: &GithubStandIn,
        agents: &str,
        extra: &[&str],
    ) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,sqlx=warn")
            .args(["--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .args(["--database-url", database_url])
            .args(["--instance-id", id])
            .args([
                "--encryption-key",
                ENCRYPTION_KEY,
                "--jwe-secret",
                JWE_SECRET,
            ])
            .args(["--agents-file", agents])
            .args(["--sandbox-image", &sandbox_image()])
            .args(["--sandbox-image-build", "off", "--sandbox-network", "none"])
            .args(["--shutdown-grace", "5"])
            .args(gh.settings())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Ok(host) = std::env::var("DOCKER_HOST") {
            cmd.env("DOCKER_HOST", host);
        }
        let mut child = cmd.spawn().unwrap();
        // The server's log goes to the test's output (shown when a test fails).
        let stderr = child.stderr.take().unwrap();
        let tag = id.to_owned();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
                kept.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("replica {id} did not start: {line:?}"))
            .to_owned();
        Self {
            id: id.to_owned(),
            url: format!("http://{addr}"),
            child,
            log,
            _data: data,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Waits until the replica answers `/healthz`.
    pub async fn wait_healthy(&self) {
        for _ in 0..400 {
            if let Ok(resp) = reqwest::get(self.url("/healthz")).await
                && resp.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("replica {} never became healthy", self.id);
    }

    /// Waits up to `within` for a line of the replica's log that contains `needle`; whether
    /// one came.
    pub async fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// SIGKILL: the process ends at once, without any clean-up of its own.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits up to `within` for the process to exit by itself; its status, or `None` if it
    /// still runs.
    pub async fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// SIGTERM, without waiting for the process to end.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &nix_pid(&self.child)])
            .status();
    }

    /// SIGTERM, then waits for the process to end.
    pub fn stop(&mut self) {
        let pid = nix_pid(&self.child);
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill_9();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
        // A replica killed with SIGKILL leaves its warm sandbox behind: another replica removes
        // it only a whole lease period later, and the test may be over by then. Nothing of this
        // instance id outlives the test.
        let ids = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=drydock.instance={}", self.id))
            .output();
        if let Ok(out) = ids {
            let ids = String::from_utf8_lossy(&out.stdout);
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

fn nix_pid(child: &Child) -> String {
    child.id().to_string()
}

/// Two replicas on one PostgreSQL database, a GitHub stand-in with `alice/demo`, and Alice
/// signed in (one session cookie, valid on both: they share their keys).
pub struct Cluster {
    /// The GitHub stand-in.
    pub gh: GithubStandIn,
    /// The shared database.
    pub db: TestDb,
    /// The replicas, in start order.
    pub replicas: Vec<Replica>,
    /// Alice's browser (her session works on every replica).
    pub alice: Client,
    _agents: tempfile::TempDir,
}

impl Cluster {
    /// Starts `count` replicas of `bin` (the `drydock-replica` binary) with `extra` settings on a
    /// fresh PostgreSQL database, with Alice signed in and her key set.
    pub async fn start(bin: &str, count: usize, extra: &[&str]) -> Self {
        Self::start_with_agents(bin, count, extra, SCRIPTED_AGENT).await
    }

    /// Like [`start`](Self::start), with these operator-defined agents (TOML).
    pub async fn start_with_agents(
        bin: &str,
        count: usize,
        extra: &[&str],
        agents_toml: &str,
    ) -> Self {
        let gh = GithubStandIn::start().await;
        gh.add_user(101, "alice", 1);
        gh.create_repo("alice", "demo", &[("README.md", "# demo\n")], "main");
        let db = TestDb::postgres().await;
        let agents = tempfile::tempdir().unwrap();
        let file = agents.path().join("agents.toml");
        std::fs::write(&file, agents_toml).unwrap();
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let replicas: Vec<Replica> = (0..count)
            .map(|i| {
                let name = (b'a' + i as u8) as char;
                Replica::start(
                    bin,
                    &format!("replica-{name}-{suffix}"),
                    &db.url,
                    &gh,
                    file.to_str().unwrap(),
                    extra,
                )
            })
            .collect();
        for replica in &replicas {
            replica.wait_healthy().await;
        }
        let alice = sign_in(&gh, &replicas[0]).await;
        let resp = alice
            .put(replicas[0].url("/api/keys/acme"))
            .json(&json!({ "key": ACME_KEY }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        Self {
            gh,
            db,
            replicas,
            alice,
            _agents: agents,
        }
    }

    /// The first replica.
    pub fn a(&self) -> &Replica {
        &self.replicas[0]
    }

    /// The second replica.
    pub fn b(&self) -> &Replica {
        &self.replicas[1]
    }

    /// Kills replica `id` with SIGKILL.
    pub fn kill_9(&mut self, id: &str) {
        if let Some(replica) = self.replicas.iter_mut().find(|r| r.id == id) {
            replica.kill_9();
        }
    }

    /// Submits a task through `via`; answers its id.
    pub async fn submit(&self, via: &Replica, script: &str) -> String {
        self.submit_with(via, script, "scripted").await
    }

    /// Submits a task for `agent` through `via`; answers its id.
    pub async fn submit_with(&self, via: &Replica, script: &str, agent: &str) -> String {
        let resp = self
            .alice
            .post(via.url("/api/tasks"))
            .json(&json!({ "repo": "alice/demo", "prompt": script, "agent": agent, "create_pr": false }))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Waits (two minutes at most) until task `id` runs in a sandbox and its stored log holds the
    /// line `line`; answers who runs it, the other replica and the sandbox.
    pub async fn running_agent(&self, id: &str, line: &str) -> RunningAgent {
        let running = self
            .wait_row(id, "running with a sandbox", |t| {
                t.status == "running" && t.container_id.is_some()
            })
            .await;
        self.wait_for_line(id, line).await;
        let owner = running
            .runner_id
            .clone()
            .expect("a running task has its replica");
        RunningAgent {
            survivor: self.other(&owner).id.clone(),
            owner,
            sandbox: running.container_id.clone().expect("a sandbox"),
        }
    }

    /// Waits (two minutes at most) until the stored log of task `id` holds the line `line`.
    pub async fn wait_for_line(&self, id: &str, line: &str) {
        let started = std::time::Instant::now();
        while !self.log(id).await.iter().any(|t| t == line) {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no {line:?} in {:?}",
                self.log(id).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The task's row, as the runner sees it.
    pub async fn row(&self, id: &str) -> drydock::store::Task {
        self.db
            .store
            .get_task_for_runner(id)
            .await
            .unwrap()
            .unwrap()
    }

    /// Waits until `pred` holds for the task's row.
    pub async fn wait_row(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&drydock::store::Task) -> bool,
    ) -> drydock::store::Task {
        let started = Instant::now();
        loop {
            let task = self.row(id).await;
            if pred(&task) {
                return task;
            }
            assert!(
                started.elapsed() < Duration::from_secs(240),
                "task {id} never reached {what}; last seen: {task:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_ended(&self, id: &str) -> drydock::store::Task {
        self.wait_row(id, "an end", |t| {
            !matches!(t.status.as_str(), "queued" | "running")
        })
        .await
    }

    /// The stored log's texts.
    pub async fn log(&self, id: &str) -> Vec<String> {
        let events = self
            .db
            .store
            .list_task_events_after(id, 0, 10_000)
            .await
            .unwrap();
        events.into_iter().map(|e| e.text).collect()
    }

    /// Replica `id`.
    pub fn replica(&self, id: &str) -> &Replica {
        self.replicas.iter().find(|r| r.id == id).unwrap()
    }

    /// A replica other than `id`.
    pub fn other(&self, id: &str) -> &Replica {
        self.replicas.iter().find(|r| r.id != id).unwrap()
    }
}

/// Signs Alice in on `replica` through the stand-in's OAuth pages.
pub async fn sign_in(gh: &GithubStandIn, replica: &Replica) -> Client {
    let (client, _jar) = crate::app::browser();
    gh.approve_as(Some("alice"));
    let resp = client
        .get(replica.url("/auth/github"))
        .send()
        .await
        .unwrap();
    let authorize = crate::app::location(&resp);
    let resp = client.get(&authorize).send().await.unwrap();
    let callback = crate::app::location(&resp);
    let resp = client.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "sign-in failed");
    client
}

/// A task's agent running on one replica of a two-replica [`Cluster`].
#[derive(Debug)]
pub struct RunningAgent {
    /// The replica running it.
    pub owner: String,
    /// The other replica.
    pub survivor: String,
    /// Its sandbox (container id, or pod name on Kubernetes).
    pub sandbox: String,
}
