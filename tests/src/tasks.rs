//! A server ready to run tasks: a GitHub stand-in with a repository, a signed-in user with a key,
//! and an operator-defined "scripted" agent whose prompt is the shell script it runs, so tests
//! can make an agent do exactly what they need without an LLM.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::{App, TestDb};

/// The scripted agent: runs its prompt with `sh`, with the user's `acme` key in `ACME_API_KEY`.
/// The script sees the whole prompt as `$1` and, when drydock resumes its session, the resume
/// flag as `$2`; of a follow-up's prompt (earlier turns, then drydock's `## New request` line,
/// then the message) only the part after that line is run.
pub const SCRIPTED_AGENT: &str = r#"
[[agents]]
id = "scripted"
name = "Scripted agent"
argv = ["sh", "-c", "eval \"${1##*## New request}\"", "scripted-agent", "{prompt}", "{resume}"]
resume = ["--resume-session"]
parser = "text"
keys = [{ provider = "acme", env = ["ACME_API_KEY"] }]
models = [{ id = "acme-1", name = "Acme One" }]
mcp = { format = "claude", path = "/home/agent/.drydock/mcp.json" }
"#;

/// A scripted agent whose output is read as Claude Code's `stream-json` (one JSON event per
/// line), for tests of structured output; its prompt is the shell script it runs.
pub const SCRIPTED_JSON_AGENT: &str = r#"
[[agents]]
id = "scripted-json"
name = "Scripted stream-json agent"
argv = ["sh", "-c", "eval \"${1##*## New request}\"", "scripted-agent", "{prompt}"]
parser = "claude-stream-json"
keys = [{ provider = "acme", env = ["ACME_API_KEY"] }]
models = [{ id = "acme-1", name = "Acme One" }]
mcp = { format = "claude", path = "/home/agent/.drydock/mcp.json" }
"#;

/// Alice's key for the scripted agent.
pub const ACME_KEY: &str = "acme-live-key-0123456789abcdefXYZ";

/// The sandbox image the tests run (built by `sandbox/image/build-offline`).
pub fn sandbox_image() -> String {
    std::env::var("DRYDOCK_SANDBOX_IMAGE").unwrap_or_else(|_| {
        panic!("DRYDOCK_SANDBOX_IMAGE is not set: run scripts/test, or build the image with sandbox/image/build-offline and export the tag it prints")
    })
}

/// A running server with Alice signed in, her key set and her repository `alice/demo`.
pub struct TaskEnv {
    /// Server, stand-in and database.
    pub app: App,
    /// Alice's browser.
    pub alice: Client,
    _agents_dir: tempfile::TempDir,
    _images: EnvironmentImages,
}

/// Removes the environment images (snapshots, bases built from Dockerfiles) drydock made for a
/// user when dropped, whatever way the test ends: they carry the user's id as a label.
#[derive(Debug)]
pub struct EnvironmentImages(pub String);

impl Drop for EnvironmentImages {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let out = std::process::Command::new("docker")
            .args([
                "images",
                "-q",
                "--no-trunc",
                "--filter",
                &format!("label=drydock.env.user={}", self.0),
            ])
            .output();
        let Ok(out) = out else { return };
        let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        ids.dedup();
        for id in ids {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", &id])
                .output();
        }
    }
}

impl TaskEnv {
    /// Starts everything; `extra` are more server settings.
    pub async fn start(db: TestDb, extra: &[&str]) -> Self {
        Self::start_with_agents(db, SCRIPTED_AGENT, extra).await
    }

    /// Like [`start`](Self::start), with these operator-defined agents (TOML).
    pub async fn start_with_agents(db: TestDb, agents: &str, extra: &[&str]) -> Self {
        Self::start_with(db, agents, Some(&sandbox_image()), extra).await
    }

    /// Like [`TaskEnv::start`], with the sandbox image named by `image`, or none named (drydock's
    /// own image, as a first run has it).
    pub async fn start_with_image(db: TestDb, image: Option<&str>, extra: &[&str]) -> Self {
        Self::start_with(db, SCRIPTED_AGENT, image, extra).await
    }

    /// Like [`TaskEnv::start`], with the server in a process of its own (for benchmarks that
    /// measure its memory and CPU time; see [`crate::server::serve_child_if_asked`]).
    pub async fn start_process(db: TestDb, extra: &[&str]) -> Self {
        Self::start_in(db, SCRIPTED_AGENT, Some(&sandbox_image()), extra, true).await
    }

    async fn start_with(db: TestDb, agents: &str, image: Option<&str>, extra: &[&str]) -> Self {
        Self::start_in(db, agents, image, extra, false).await
    }

    async fn start_in(
        db: TestDb,
        agents: &str,
        image: Option<&str>,
        extra: &[&str],
        process: bool,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("agents.toml");
        std::fs::write(&file, agents).expect("write agents file");
        let mut settings = vec!["--agents-file", file.to_str().expect("utf-8 path")];
        // No network unless the caller names one (benches compare with the host network).
        if !extra.contains(&"--sandbox-network") {
            settings.extend(["--sandbox-network", "none"]);
        }
        // No image named: an empty setting, as an operator would unset it (scripts/test exports
        // DRYDOCK_SANDBOX_IMAGE, which the server would otherwise read).
        settings.extend(["--sandbox-image", image.unwrap_or("")]);
        settings.extend_from_slice(extra);
        let app = if process {
            App::start_process(db, &settings).await
        } else {
            App::start(db, &settings).await
        };
        app.gh
            .create_repo("alice", "demo", &[("README.md", "# demo\n")], "main");
        let alice = app.sign_in("alice").await;
        let resp = alice
            .put(app.url("/api/keys/acme"))
            .json(&json!({ "key": ACME_KEY }))
            .send()
            .await
            .expect("set key");
        assert_eq!(resp.status(), StatusCode::OK);
        let me: Value = alice
            .get(app.url("/api/me"))
            .send()
            .await
            .expect("me")
            .json()
            .await
            .unwrap_or(Value::Null);
        let user_id = me["id"].as_str().unwrap_or_default().to_owned();
        Self {
            app,
            alice,
            _agents_dir: dir,
            _images: EnvironmentImages(user_id),
        }
    }

    /// Submits a task on `alice/demo` whose agent runs `script`; `extra` fields are merged into
    /// the request. Answers the status and body.
    pub async fn submit_raw(&self, script: &str, extra: Value) -> (StatusCode, Value) {
        let mut body = json!({ "repo": "alice/demo", "prompt": script, "agent": "scripted" });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                body.insert(k.clone(), v.clone());
            }
        }
        let resp = self
            .alice
            .post(self.app.url("/api/tasks"))
            .json(&body)
            .send()
            .await
            .expect("submit");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Submits and expects 201; answers the task id.
    pub async fn submit(&self, script: &str, extra: Value) -> String {
        let (status, body) = self.submit_raw(script, extra).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("task id").to_owned()
    }

    /// `GET path` as Alice, as JSON (`null` when the body is not JSON).
    pub async fn get_json(&self, path: &str) -> Value {
        self.alice
            .get(self.app.url(path))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .unwrap_or(Value::Null)
    }

    /// `GET path` as Alice, the body as text (a page).
    pub async fn get_page(&self, path: &str) -> String {
        self.alice
            .get(self.app.url(path))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("the page's body")
    }

    /// `POST path` as Alice, without a body.
    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.alice
            .post(self.app.url(path))
            .send()
            .await
            .expect("POST")
    }

    /// The task as Alice sees it.
    pub async fn task(&self, id: &str) -> Value {
        self.alice
            .get(self.app.url(&format!("/api/tasks/{id}")))
            .send()
            .await
            .expect("get task")
            .json()
            .await
            .expect("task json")
    }

    /// Waits until the task has ended (or `pred` holds) and answers it.
    pub async fn wait_for(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let task = self.task(id).await;
            if pred(&task) {
                return task;
            }
            assert!(
                started.elapsed() < Duration::from_secs(240),
                "task {id} never reached {what}; last seen: {task}\nlog:\n{}",
                self.log(id).await.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the task has ended.
    pub async fn wait_done(&self, id: &str) -> Value {
        self.wait_for(id, "an end", |t| {
            !matches!(t["status"].as_str(), Some("queued" | "running"))
        })
        .await
    }

    /// The task's log as `kind: text` lines.
    pub async fn log(&self, id: &str) -> Vec<String> {
        let page: Value = self
            .alice
            .get(
                self.app
                    .url(&format!("/api/tasks/{id}/events?after=0&limit=1000")),
            )
            .send()
            .await
            .expect("events")
            .json()
            .await
            .unwrap_or(Value::Null);
        page["events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e["kind"].as_str().unwrap_or("?"),
                            e["text"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Ids of Docker containers of this task, running or not: those labelled with it, and warm-pool
/// sandboxes it took (named `drydock-<task>-…`, as drydock names every sandbox of a task).
pub fn containers_of(task_id: &str) -> Vec<String> {
    let mut ids = docker_ps(&[
        "--filter",
        &format!("label=drydock.task={task_id}"),
        "--format",
        "{{.ID}}",
    ]);
    let prefix = format!("drydock-{task_id}-");
    for line in docker_ps(&[
        "--filter",
        "label=drydock.pool",
        "--format",
        "{{.ID}} {{.Names}}",
    ]) {
        if let Some((id, name)) = line.split_once(' ')
            && name.starts_with(&prefix)
            && !ids.iter().any(|i| i == id)
        {
            ids.push(id.to_owned());
        }
    }
    ids
}

/// Ids of the warm sandboxes of server `instance` not taken by a task (named `drydock-pool-…`).
pub fn warm_sandboxes(instance: &str) -> Vec<String> {
    docker_ps(&[
        "--filter",
        &format!("label=drydock.instance={instance}"),
        "--filter",
        "label=drydock.pool",
        "--format",
        "{{.ID}} {{.Names}}",
    ])
    .into_iter()
    .filter_map(|line| {
        let (id, name) = line.split_once(' ')?;
        name.starts_with("drydock-pool-").then(|| id.to_owned())
    })
    .collect()
}

/// Removes the warm sandboxes of server `instance` (for a server dropped without stopping).
pub fn remove_warm_sandboxes(instance: &str) {
    let ids = warm_sandboxes(instance);
    if !ids.is_empty() {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
}

/// `docker ps -a --no-trunc` with `args` (filters and a `--format`), a line of output each.
pub fn docker_ps(args: &[&str]) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-a", "--no-trunc"])
        .args(args)
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `git` in a bare repository of the stand-in.
pub fn git_in(bare: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(bare)
        .args(args)
        .output()
        .expect("git");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
