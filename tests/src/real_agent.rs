//! Shared set-up of the real-agent tests: drydock with Alice signed in and her repository
//! `alice/demo`, sandboxes on the host network so a CLI reaches model stand-ins on loopback, and
//! a stdio MCP server (standard-library Python) to configure as a connector.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::tasks::{containers_of, git_in, sandbox_image};
use crate::{App, TestDb};

/// The connector's name.
pub const CONNECTOR: &str = "echo";

/// A stdio MCP server with one tool, `echo`, in standard-library Python (the sandbox has
/// python3 but not the `mcp` package): newline-delimited JSON-RPC on stdin/stdout.
pub const ECHO_MCP_SERVER: &str = r#"import json, sys
for line in sys.stdin:
    if not line.strip():
        continue
    msg = json.loads(line)
    if "id" not in msg:
        continue
    method, params = msg.get("method"), msg.get("params") or {}
    if method == "initialize":
        result = {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                  "capabilities": {"tools": {}},
                  "serverInfo": {"name": "echo", "version": "1.0.0"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "echo", "description": "Echoes its text back.",
                             "inputSchema": {"type": "object",
                                             "properties": {"text": {"type": "string"}},
                                             "required": ["text"]}}]}
    elif method == "tools/call":
        text = (params.get("arguments") or {}).get("text", "")
        result = {"content": [{"type": "text", "text": "echo: " + text}]}
    elif method == "ping":
        result = {}
    else:
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"],
                          "error": {"code": -32601, "message": "no method " + str(method)}}), flush=True)
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
"#;

/// drydock with Alice signed in and her repository `alice/demo`.
pub struct AgentEnv {
    /// Server, stand-in and database.
    pub app: App,
    /// Alice's browser.
    pub alice: Client,
}

impl AgentEnv {
    #[allow(missing_docs)]
    pub async fn start(db: TestDb, extra: &[&str]) -> Self {
        let image = sandbox_image();
        let mut settings = vec!["--sandbox-image", &image, "--sandbox-network", "host"];
        settings.extend_from_slice(extra);
        let app = App::start(db, &settings).await;
        app.gh
            .create_repo("alice", "demo", &[("README.md", "# demo\n")], "main");
        let alice = app.sign_in("alice").await;
        Self { app, alice }
    }

    #[allow(missing_docs)]
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .alice
            .put(self.app.url(path))
            .json(&body)
            .send()
            .await
            .expect("request");
        (resp.status(), resp.json().await.unwrap_or(Value::Null))
    }

    #[allow(missing_docs)]
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .alice
            .post(self.app.url(path))
            .json(&body)
            .send()
            .await
            .expect("request");
        (resp.status(), resp.json().await.unwrap_or(Value::Null))
    }

    #[allow(missing_docs)]
    pub async fn get(&self, path: &str) -> Value {
        self.alice
            .get(self.app.url(path))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .unwrap_or(Value::Null)
    }

    /// Sets Alice's key for `provider` and creates her stdio MCP connector `echo`.
    #[allow(missing_docs)]
    pub async fn key_and_connector(&self, provider: &str, key: &str) {
        let (status, body) = self
            .put(&format!("/api/keys/{provider}"), json!({ "key": key }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, connector) = self
            .post(
                "/api/connectors",
                json!({
                    "name": CONNECTOR,
                    "description": "Echoes text (standard-library Python)",
                    "transport": "stdio",
                    "command": "python3",
                    "args": ["-c", ECHO_MCP_SERVER],
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{connector}");
    }

    /// Submits a task on `alice/demo` and waits for its end; answers the task and its log.
    #[allow(missing_docs)]
    pub async fn run(&self, agent: &str, model: &str, prompt: &str) -> (Value, Vec<String>) {
        let (status, task) = self
            .post(
                "/api/tasks",
                json!({ "repo": "alice/demo", "agent": agent, "model": model, "prompt": prompt }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        let id = task["id"].as_str().expect("request").to_owned();
        let task = self.wait_done(&id).await;
        let log = self.log(&id).await;
        (task, log)
    }

    /// HELLO.md on the task's branch in the stand-in's repository.
    #[allow(missing_docs)]
    pub fn hello_on_branch(&self, task: &Value) -> Option<String> {
        let branch = task["branch"].as_str()?;
        let bare = self.app.gh.repo_path("alice", "demo");
        let (ok, hello) = git_in(&bare, &["show", &format!("{branch}:HELLO.md")]);
        ok.then_some(hello)
    }

    /// Checks that the agent's final answer is the task's last message and the pull request's
    /// summary.
    #[allow(missing_docs)]
    pub async fn assert_final_message(&self, task: &Value, answer: &str) {
        let id = task["id"].as_str().expect("request");
        let messages = self.get(&format!("/api/tasks/{id}/messages")).await;
        let last = messages.as_array().and_then(|m| m.last()).cloned();
        assert_eq!(
            last.as_ref().map(|m| (&m["role"], &m["content"])),
            Some((&json!("agent"), &json!(answer))),
            "{messages}"
        );
        let pulls = self.app.gh.pulls("alice", "demo");
        let body = pulls[0]["body"].as_str().unwrap_or_default();
        assert!(
            body.contains("### Summary from the agent") && body.contains(answer),
            "{body}"
        );
    }

    /// The task's log as `kind: text` lines.
    #[allow(missing_docs)]
    pub async fn log(&self, id: &str) -> Vec<String> {
        let page = self
            .get(&format!("/api/tasks/{id}/events?after=0&limit=1000"))
            .await;
        page["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{}: {}",
                    e["kind"].as_str().unwrap_or("?"),
                    e["text"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// Polls the task until it has ended.
    #[allow(missing_docs)]
    pub async fn wait_done(&self, id: &str) -> Value {
        let started = Instant::now();
        loop {
            let task = self.get(&format!("/api/tasks/{id}")).await;
            if !matches!(task["status"].as_str(), Some("queued" | "running")) {
                return task;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "task {id} never ended; last seen: {task}\nlog:\n{}",
                self.log(id).await.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The follow-up of the resume test, and the model's answer to it.
pub const SECOND_TURN: &str = "Second turn: say what you did before.";
pub const SECOND_ANSWER: &str = "Before, I created HELLO.md.";

impl AgentEnv {
    /// Runs a keep-alive task with `agent`, then the follow-up [`SECOND_TURN`] in its kept sandbox,
    /// and checks the CLI resumed its own session: drydock gave it only the new message, yet the
    /// model's request (from `requests`, recorded by the stand-in) carries the first turn. The
    /// stand-in's script answers [`SECOND_ANSWER`] to a request carrying [`SECOND_TURN`].
    pub async fn assert_resumes_in_a_kept_sandbox(
        &self,
        agent: &str,
        model: &str,
        requests: impl Fn() -> Vec<crate::recorded::Recorded>,
    ) {
        let env = self;
        let first_prompt = HELLO_PROMPT;
        let (status, task) = env
            .post(
                "/api/tasks",
                json!({ "repo": "alice/demo", "agent": agent, "model": model,
                    "prompt": first_prompt, "keep_alive": true }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        let id = task["id"].as_str().expect("task id").to_owned();
        let task = env.wait_done(&id).await;
        assert_eq!(
            task["status"],
            "succeeded",
            "{task}\n{:#?}",
            env.log(&id).await
        );
        let first_turn_requests = requests().len();

        let (status, body) = env
            .post(
                &format!("/api/tasks/{id}/messages"),
                json!({ "prompt": SECOND_TURN }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let started = Instant::now();
        let task = loop {
            let task = env.get(&format!("/api/tasks/{id}")).await;
            if task["turns"] == 2 && !matches!(task["status"].as_str(), Some("queued" | "running"))
            {
                break task;
            }
            assert!(
                started.elapsed().as_secs() < 300,
                "turn 2 never ended: {task}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        };
        let log = env.log(&id).await;
        let text = log.join("\n");
        assert_eq!(task["status"], "succeeded", "{task}\n{text}");
        assert!(text.contains("Continuing in the task's sandbox"), "{text}");
        assert!(
            log.iter().any(|l| l == &format!("agent: {SECOND_ANSWER}")),
            "{text}"
        );

        let second: Vec<String> = requests()[first_turn_requests..]
            .iter()
            .map(|r| r.body.to_string())
            .filter(|body| body.contains(SECOND_TURN))
            .collect();
        assert!(!second.is_empty(), "no request carried the follow-up");
        assert!(
            second[0].contains(first_prompt),
            "the session was not resumed: {}",
            second[0]
        );
        assert!(second[0].contains("HELLO.md"), "{}", second[0]);
        assert!(
            !second[0].contains("## New request"),
            "a resumed session gets no replayed context"
        );
        let messages = env.get(&format!("/api/tasks/{id}/messages")).await;
        let last = messages
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .expect("a message");
        assert_eq!(
            (last["role"].as_str(), last["turn"].as_i64()),
            (Some("agent"), Some(2))
        );
        assert_eq!(last["content"], SECOND_ANSWER);

        let (status, _) = env
            .post(&format!("/api/tasks/{id}/sandbox/stop"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(containers_of(&id).is_empty());
    }
}

/// The prompt of the first-turn tests: write HELLO.md, then call the connector's tool.
pub const HELLO_PROMPT: &str = "Create HELLO.md with a greeting, then try the echo tool.";

/// A first turn that ran: the task, its log (lines and joined), the stand-in's requests, and
/// those as `METHOD path -> status` lines for failure messages.
pub struct Ran {
    /// The task as the API shows it.
    pub task: Value,
    /// Its log as `kind: text` lines.
    pub log: Vec<String>,
    /// The log joined with newlines.
    pub text: String,
    /// Every request the stand-in got.
    pub requests: Vec<crate::recorded::Recorded>,
    /// `METHOD path -> status` of each request.
    pub seen: Vec<String>,
}

impl AgentEnv {
    /// Runs [`HELLO_PROMPT`] with `agent` and `model`, prints the log and what the stand-in saw,
    /// and checks what a user checks first: the task succeeded, HELLO.md on the pushed branch is
    /// exactly `hello`, one pull request was opened, and the sandbox is gone.
    pub async fn run_hello(
        &self,
        agent: &str,
        model: &str,
        hello: &str,
        requests: impl Fn() -> Vec<crate::recorded::Recorded>,
    ) -> Ran {
        let (task, log) = self.run(agent, model, HELLO_PROMPT).await;
        let text = log.join("\n");
        let requests = requests();
        let seen = crate::recorded::summary(&requests);
        eprintln!("task log:\n{text}\nstand-in saw: {seen:#?}");
        assert_eq!(
            task["status"], "succeeded",
            "{task}\nlog:\n{text}\nstand-in saw: {seen:#?}"
        );
        assert_eq!(
            self.hello_on_branch(&task).as_deref(),
            Some(hello),
            "{text}"
        );
        assert_eq!(self.app.gh.pulls("alice", "demo").len(), 1);
        assert!(
            containers_of(task["id"].as_str().expect("task id")).is_empty(),
            "the sandbox is removed"
        );
        Ran {
            task,
            log,
            text,
            requests,
            seen,
        }
    }
}
