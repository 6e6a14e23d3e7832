#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

//! Real agent CLIs end to end: drydock runs the CLI from the sandbox image against a local
//! stand-in of its model API, reached through drydock's own base-URL setting, with a stdio MCP
//! connector created through the API. The stand-in plays a scripted model, so the CLI's real
//! tool loop runs: it writes a file, calls the connector's tool, and answers.

use std::time::Instant;

use drydock_tests::TestDb;
use drydock_tests::anthropic::{AnthropicStandIn, Block, Conversation};
use drydock_tests::hunt::KeyHunt;
use drydock_tests::openai::{self, Item, OpenAiStandIn};
use drydock_tests::real_agent::{AgentEnv, Ran, SECOND_ANSWER, SECOND_TURN};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// Alice's Anthropic key: only the stand-in accepts it.
const ANTHROPIC_KEY: &str = "sk-ant-api03-standin-Q7vX2mLp9RtY4wZc8NbK1dFh6JsG3eUa0oIi5";

/// Alice's OpenAI key: only the stand-in accepts it.
const OPENAI_KEY: &str = "sk-proj-standin-Hq3Vn8Rw1Zt6Yp0Lc4Mx9Bk2Jd7Fs5Ga";

/// What the scripted model writes into HELLO.md.
const HELLO: &str = "# Hello\n\nWritten by Claude Code through drydock.\n";

/// The connector's name, and its tool as Claude Code names it.
const ECHO_TOOL: &str = "mcp__echo__echo";

/// The scripted model: write HELLO.md, call the connector's tool (loading it through
/// ToolSearch first when Claude Code defers MCP tools), then answer with what it said.
fn claude_script(c: &Conversation<'_>) -> Vec<Block> {
    if !c.offers("Write") {
        // A side request without tools (titles, summaries): a plain answer.
        return vec![Block::text("Stand-in summary.")];
    }
    if !c.called("Write") {
        return vec![
            Block::text("I'll create HELLO.md."),
            Block::tool_use(
                "Write",
                json!({ "file_path": "/workspace/HELLO.md", "content": HELLO }),
            ),
        ];
    }
    if !c.called(ECHO_TOOL) {
        if c.offers(ECHO_TOOL) {
            return vec![Block::tool_use(
                ECHO_TOOL,
                json!({ "text": "ping from the model" }),
            )];
        }
        if c.offers("ToolSearch") && !c.called("ToolSearch") {
            return vec![Block::tool_use(
                "ToolSearch",
                json!({ "query": format!("select:{ECHO_TOOL}"), "max_results": 1 }),
            )];
        }
    }
    let echoed = c
        .result_of(ECHO_TOOL)
        .map(|r| r.text)
        .unwrap_or_else(|| "(no echo tool)".to_owned());
    vec![Block::text(format!(
        "Created HELLO.md. The echo tool answered: {echoed}"
    ))]
}

type Env = AgentEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_writes_a_file_and_calls_an_mcp_tool_through_drydock() {
    let model = AnthropicStandIn::start(ANTHROPIC_KEY, claude_script).await;
    let env = Env::start(
        TestDb::sqlite().await,
        &["--anthropic-base-url", &model.url],
    )
    .await;
    env.key_and_connector("anthropic", ANTHROPIC_KEY).await;
    let Ran {
        task,
        log,
        text,
        requests,
        seen: summary,
    } = env
        .run_hello("claude", "sonnet", HELLO, || model.requests())
        .await;

    // The log reads well: the session with its MCP server, the Write call and its result, the
    // MCP tool call with the server's answer, and the final message.
    let has = |line: &str| log.iter().any(|l| l == line);
    let has_prefix = |prefix: &str| log.iter().any(|l| l.starts_with(prefix));
    assert!(
        has_prefix("stdout: Session started: model ") || has_prefix("agent: Session started"),
        "{text}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("Session started") && l.contains("echo (connected)")),
        "the MCP server is connected at start:\n{text}"
    );
    assert!(has("agent: I'll create HELLO.md."), "{text}");
    assert!(has("agent: Write /workspace/HELLO.md"), "{text}");
    assert!(
        has_prefix("agent: Write: File created successfully"),
        "{text}"
    );
    assert!(has_prefix(&format!("agent: {ECHO_TOOL}")), "{text}");
    assert!(
        has(&format!("agent: {ECHO_TOOL}: echo: ping from the model")),
        "{text}"
    );
    assert!(
        has("agent: Created HELLO.md. The echo tool answered: echo: ping from the model"),
        "{text}"
    );
    env.assert_final_message(
        &task,
        "Created HELLO.md. The echo tool answered: echo: ping from the model",
    )
    .await;
    assert!(
        log.iter()
            .any(|l| l.starts_with("agent: ") && l.contains("turns")),
        "a result summary:\n{text}"
    );

    // The stand-in got the key on every call; the key never reached the log.
    let turns = model.message_requests();
    assert!(turns.len() >= 3, "{summary:#?}");
    for r in &turns {
        assert_eq!(r.header("x-api-key"), Some(ANTHROPIC_KEY), "{}", r.path);
        assert_eq!(r.status, 200, "{summary:#?}");
        assert_eq!(r.body["stream"], true);
    }
    assert!(!text.contains(ANTHROPIC_KEY));
    assert!(!text.contains(&ANTHROPIC_KEY[..24]));
    let whole_task = env
        .get(&format!("/api/tasks/{}", task["id"].as_str().unwrap()))
        .await
        .to_string();
    assert!(!whole_task.contains(ANTHROPIC_KEY));

    // Claude Code offered the MCP tool to the model, under its `mcp__<server>__<tool>` name.
    assert!(
        turns
            .iter()
            .any(|r| drydock_tests::anthropic::tool_names(&r.body)
                .iter()
                .any(|t| t == ECHO_TOOL)),
        "no request offered {ECHO_TOOL}: {:#?}",
        turns
            .iter()
            .map(|r| drydock_tests::anthropic::tool_names(&r.body))
            .collect::<Vec<_>>()
    );

    // Nothing else was asked of the stand-in (each unknown call is a 404 and shows here).
    assert!(
        requests.iter().all(|r| r.status != 404),
        "unknown calls: {summary:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_resumes_its_session_in_a_kept_sandbox() {
    let model = AnthropicStandIn::start(ANTHROPIC_KEY, |c| {
        if c.offers("Write") && c.body.to_string().contains(SECOND_TURN) {
            return vec![Block::text(SECOND_ANSWER)];
        }
        claude_script(c)
    })
    .await;
    let env = Env::start(
        TestDb::sqlite().await,
        &["--anthropic-base-url", &model.url],
    )
    .await;
    env.key_and_connector("anthropic", ANTHROPIC_KEY).await;
    env.assert_resumes_in_a_kept_sandbox("claude", "sonnet", || model.message_requests())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_resumes_its_session_in_a_kept_sandbox() {
    let model = OpenAiStandIn::start(OPENAI_KEY, |c| {
        if c.body.to_string().contains(SECOND_TURN) {
            return vec![Item::message(SECOND_ANSWER)];
        }
        codex_script(c)
    })
    .await;
    let env = Env::start(
        TestDb::sqlite().await,
        &["--openai-base-url", &model.base_url],
    )
    .await;
    env.key_and_connector("openai", OPENAI_KEY).await;
    env.assert_resumes_in_a_kept_sandbox("codex", "gpt-5.5", || model.requests())
        .await;
}

/// What the scripted Codex model writes into HELLO.md, and the patch that writes it.
const CODEX_HELLO: &str = "# Hello\n\nWritten by Codex through drydock.\n";
const CODEX_PATCH: &str = "*** Begin Patch\n*** Add File: HELLO.md\n+# Hello\n+\n+Written by Codex through drydock.\n*** End Patch\n";

/// The connector's tool as Codex names it: namespace `mcp__<server>`, function `<tool>`.
const CODEX_ECHO_TOOL: &str = "mcp__echo.echo";

/// The scripted Codex model: write HELLO.md with `apply_patch`, find the connector's tool with
/// `tool_search` (Codex defers MCP tools), call it, then answer with what it said.
fn codex_script(c: &openai::Conversation<'_>) -> Vec<Item> {
    if !c.called("apply_patch") {
        return vec![
            Item::message("I'll create HELLO.md."),
            Item::custom_tool_call("apply_patch", CODEX_PATCH),
        ];
    }
    if !c.called(CODEX_ECHO_TOOL) {
        if c.tools_found().iter().any(|t| t == CODEX_ECHO_TOOL) {
            return vec![Item::FunctionCall {
                namespace: Some("mcp__echo".to_owned()),
                name: "echo".to_owned(),
                arguments: json!({ "text": "ping from the model" }),
            }];
        }
        if c.offers("tool_search") && !c.searched() {
            return vec![Item::ToolSearch {
                query: "echo".to_owned(),
            }];
        }
    }
    let echoed = c
        .output_of(CODEX_ECHO_TOOL)
        .map(|o| o.text)
        .unwrap_or_else(|| "(no echo tool)".to_owned());
    vec![Item::message(format!(
        "Created HELLO.md. The echo tool answered: {}",
        echoed.lines().last().unwrap_or_default()
    ))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_writes_a_file_and_calls_an_mcp_tool_through_drydock() {
    let model = OpenAiStandIn::start(OPENAI_KEY, codex_script).await;
    let env = Env::start(
        TestDb::sqlite().await,
        &["--openai-base-url", &model.base_url],
    )
    .await;
    env.key_and_connector("openai", OPENAI_KEY).await;
    let Ran {
        task,
        log,
        text,
        requests,
        seen: summary,
    } = env
        .run_hello("codex", "gpt-5.5", CODEX_HELLO, || model.requests())
        .await;

    // The log reads well.
    let has = |line: &str| log.iter().any(|l| l == line);
    assert!(has("agent: I'll create HELLO.md."), "{text}");
    assert!(
        log.iter()
            .any(|l| l.starts_with("agent: ") && l.contains("HELLO.md") && !l.contains("I'll")),
        "the file change:\n{text}"
    );
    assert!(
        log.iter().any(|l| l.starts_with("agent: ")
            && l.contains("echo")
            && l.contains("ping from the model")),
        "the MCP call:\n{text}"
    );
    assert!(
        has("agent: Created HELLO.md. The echo tool answered: echo: ping from the model"),
        "{text}"
    );
    env.assert_final_message(
        &task,
        "Created HELLO.md. The echo tool answered: echo: ping from the model",
    )
    .await;

    // The stand-in got the key on every call; the key never reached the log.
    let turns = model.response_requests();
    assert!(turns.len() >= 3, "{summary:#?}");
    for r in &turns {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {OPENAI_KEY}").as_str())
        );
        assert_eq!(r.status, 200, "{summary:#?}");
        assert_eq!(r.body["stream"], true);
    }
    assert!(!text.contains(OPENAI_KEY));
    assert!(!text.contains(&OPENAI_KEY[..20]));

    // Codex offered the MCP tool: deferred behind tool_search, it comes back in the search's
    // output as namespace `mcp__echo` with function `echo`.
    assert!(
        turns.iter().any(|r| openai::Conversation { body: &r.body }
            .tools_found()
            .iter()
            .any(|t| t == CODEX_ECHO_TOOL)),
        "no request carried {CODEX_ECHO_TOOL}"
    );
    assert!(
        requests.iter().all(|r| r.status != 404),
        "unknown calls: {summary:#?}"
    );
}

/// The task's metered use matches what the stand-in reported, and is priced.
fn assert_metered(task: &Value, reported: (u64, u64)) {
    assert_eq!(task["usage"]["input_tokens"], reported.0, "{task}");
    assert_eq!(task["usage"]["output_tokens"], reported.1, "{task}");
    assert!(reported.0 > 0 && reported.1 > 0);
    assert!(task["usage"]["cost_usd"].as_f64().unwrap() > 0.0, "{task}");
    assert_eq!(task["key_in_sandbox"], false, "{task}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_works_through_the_model_gateway_without_its_key_in_the_sandbox() {
    // The hunt for the key in the sandbox runs while Claude Code waits for the model's answer.
    let hunt = KeyHunt::new(ANTHROPIC_KEY);
    let seen_by_script = hunt.clone();
    let model = AnthropicStandIn::start(ANTHROPIC_KEY, move |c| {
        seen_by_script.now();
        claude_script(c)
    })
    .await;
    // The gateway policy: the sandbox has no network; Claude Code reaches the stand-in only
    // through drydock's gateway, which forwards to the operator's upstream (the stand-in).
    let env = Env::start(
        TestDb::postgres().await,
        &[
            "--anthropic-base-url",
            &model.url,
            "--network-policy",
            "gateway",
        ],
    )
    .await;
    hunt.watch(&env.app.server.instance_id);
    env.key_and_connector("anthropic", ANTHROPIC_KEY).await;
    let Ran {
        task,
        text,
        requests,
        seen: summary,
        ..
    } = env
        .run_hello("claude", "sonnet", HELLO, || model.requests())
        .await;
    hunt.assert_key_never_in_the_sandbox();
    assert!(
        text.contains("the agent's model calls go through drydock's gateway"),
        "{text}"
    );
    assert!(
        text.contains("agent: Created HELLO.md. The echo tool answered: echo: ping from the model"),
        "the MCP connector (stdio, inside the sandbox) still works:\n{text}"
    );
    // The stand-in received the user's real key on every call, never the placeholder.
    let turns = model.message_requests();
    assert!(turns.len() >= 3, "{summary:#?}");
    for r in &requests {
        assert_eq!(r.header("x-api-key"), Some(ANTHROPIC_KEY), "{}", r.path);
    }
    let id = task["id"].as_str().unwrap();
    let task = env.get(&format!("/api/tasks/{id}")).await;
    assert!(!text.contains(ANTHROPIC_KEY) && !task.to_string().contains(ANTHROPIC_KEY));
    assert_metered(&task, model.reported_usage());
    assert_eq!(
        task["blocked_requests"], 0,
        "Claude Code asked for nothing else: {task}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_works_through_the_model_gateway_without_its_key_in_the_sandbox() {
    let hunt = KeyHunt::new(OPENAI_KEY);
    let seen_by_script = hunt.clone();
    let model = OpenAiStandIn::start(OPENAI_KEY, move |c| {
        seen_by_script.now();
        codex_script(c)
    })
    .await;
    let env = Env::start(
        TestDb::sqlite().await,
        &[
            "--openai-base-url",
            &model.base_url,
            "--network-policy",
            "gateway",
        ],
    )
    .await;
    hunt.watch(&env.app.server.instance_id);
    env.key_and_connector("openai", OPENAI_KEY).await;
    let Ran {
        task,
        text,
        requests,
        ..
    } = env
        .run_hello("codex", "gpt-5.5", CODEX_HELLO, || model.requests())
        .await;
    assert!(
        text.contains("the agent's model calls go through drydock's gateway"),
        "{text}"
    );
    for r in requests.iter().filter(|r| r.path.ends_with("/responses")) {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {OPENAI_KEY}").as_str())
        );
    }
    let id = task["id"].as_str().unwrap();
    let task = env.get(&format!("/api/tasks/{id}")).await;
    assert!(!text.contains(OPENAI_KEY) && !task.to_string().contains(OPENAI_KEY));
    assert_metered(&task, model.reported_usage());
    hunt.assert_key_never_in_the_sandbox();
}

/// The stand-in itself: the key check, a JSON reply and a streamed one, without Docker.
#[tokio::test]
async fn the_anthropic_stand_in_speaks_the_messages_protocol() {
    let model = AnthropicStandIn::start("right-key", |c: &Conversation<'_>| {
        if c.called("Write") {
            vec![Block::text(format!(
                "done: {}",
                c.result_of("Write").unwrap().text
            ))]
        } else {
            vec![
                Block::text("writing"),
                Block::tool_use("Write", json!({ "file_path": "/x", "content": "é ü" })),
            ]
        }
    })
    .await;
    let client = Client::new();
    let url = format!("{}/v1/messages?beta=true", model.url);
    let first = json!({
        "model": "claude-x", "max_tokens": 100,
        "messages": [{ "role": "user", "content": "hi" }],
        "tools": [{ "name": "Write", "input_schema": { "type": "object" } }],
    });

    let resp = client
        .post(&url)
        .header("x-api-key", "wrong")
        .json(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");

    let message: Value = client
        .post(&url)
        .header("x-api-key", "right-key")
        .json(&first)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(message["type"], "message");
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(message["content"][0]["text"], "writing");
    let call = &message["content"][1];
    assert_eq!(call["name"], "Write");
    assert_eq!(call["input"]["content"], "é ü");
    let id = call["id"].as_str().unwrap();

    let mut second = first.clone();
    second["stream"] = json!(true);
    second["messages"] = json!([
        { "role": "user", "content": "hi" },
        { "role": "assistant", "content": message["content"] },
        { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": id, "content": "ok" }] },
    ]);
    let resp = client
        .post(&url)
        .header("x-api-key", "right-key")
        .json(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let sse = resp.text().await.unwrap();
    let events: Vec<Value> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[3]["delta"]["text"], "done: ok");
    assert_eq!(events[5]["delta"]["stop_reason"], "end_turn");

    // A streamed tool call arrives as input_json_delta pieces that join into the input.
    let resp = client
        .post(&url)
        .header("x-api-key", "right-key")
        .json(&json!({ "model": "m", "stream": true, "messages": [{ "role": "user", "content": "hi" }],
                       "tools": [{ "name": "Write" }] }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let partial: String = resp
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter(|e| e["delta"]["type"] == "input_json_delta")
        .map(|e| e["delta"]["partial_json"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        json!({ "file_path": "/x", "content": "é ü" })
    );

    let recorded = model.requests();
    assert_eq!(recorded.len(), 4);
    assert_eq!(recorded[0].status, 401);
    assert!(recorded.iter().all(|r| r.is_message()));
}

/// A key the model API refuses: the task fails, and the log says why without the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_with_a_refused_key_fails_with_the_apis_reason() {
    let model = AnthropicStandIn::start(ANTHROPIC_KEY, claude_script).await;
    let env = Env::start(
        TestDb::sqlite().await,
        &["--anthropic-base-url", &model.url],
    )
    .await;
    let wrong = "sk-ant-api03-revoked-Zq1Wx2Ec3Rv4Tb5Yn6Um7Ik8Ol9Pa0Sd";
    let (status, body) = env
        .put("/api/keys/anthropic", json!({ "key": wrong }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (task, log) = env.run("claude", "sonnet", "Create HELLO.md.").await;
    let text = log.join("\n");
    assert_eq!(task["status"], "failed", "{task}\n{text}");
    assert!(
        log.iter()
            .any(|l| l.starts_with("error: ") && l.contains("Invalid API key")),
        "the API's answer is in the log:\n{text}"
    );
    assert!(
        !text.contains(wrong) && !text.contains(&wrong[..24]),
        "{text}"
    );
    // One try: the stand-in's 401 says a retry cannot help.
    let turns = model.message_requests();
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].status, 401);
    assert_eq!(turns[0].header("x-api-key"), Some(wrong));
    assert!(env.hello_on_branch(&task).is_none());
}

/// A key the model API refuses: the Codex task fails, and the log says why without the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_with_a_refused_key_fails_with_the_apis_reason() {
    let model = OpenAiStandIn::start(OPENAI_KEY, codex_script).await;
    let env = Env::start(
        TestDb::sqlite().await,
        &["--openai-base-url", &model.base_url],
    )
    .await;
    let wrong = "sk-proj-revoked-Pl0Ok9Ij8Uh7Yg6Tf5Rd4Es3Wa2Qz1Xc";
    let (status, body) = env.put("/api/keys/openai", json!({ "key": wrong })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let started = Instant::now();
    let (task, log) = env.run("codex", "gpt-5.5", "Create HELLO.md.").await;
    let text = log.join("\n");
    let summary = drydock_tests::recorded::summary(&model.requests());
    eprintln!(
        "task log:\n{text}\nstand-in saw: {summary:#?}\ntook {:?}",
        started.elapsed()
    );
    assert_eq!(task["status"], "failed", "{task}\n{text}");
    assert!(
        log.iter()
            .any(|l| l.starts_with("error: ") && l.contains("401")),
        "the API's answer is in the log:\n{text}"
    );
    assert!(
        !text.contains(wrong) && !text.contains(&wrong[..20]),
        "{text}"
    );
    let turns = model.response_requests();
    assert!(!turns.is_empty());
    for r in &turns {
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {wrong}").as_str())
        );
    }
    assert!(env.hello_on_branch(&task).is_none());
}

/// The OpenAI stand-in itself: the key check, a JSON reply and a streamed one, without Docker.
#[tokio::test]
async fn the_openai_stand_in_speaks_the_responses_protocol() {
    let model = OpenAiStandIn::start("right-key", |c: &openai::Conversation<'_>| {
        if c.called("apply_patch") {
            vec![Item::message(format!(
                "patched: {}",
                c.output_of("apply_patch").unwrap().text
            ))]
        } else {
            vec![
                Item::function_call("exec_command", json!({ "cmd": "ls" })),
                Item::custom_tool_call(
                    "apply_patch",
                    "*** Begin Patch\n*** Add File: é.md\n+ü\n*** End Patch\n",
                ),
            ]
        }
    })
    .await;
    let client = Client::new();
    let url = format!("{}/responses", model.base_url);
    let first = json!({
        "model": "gpt-x",
        "input": [{ "type": "message", "role": "user", "content": [{ "type": "input_text", "text": "hi" }] }],
        "tools": [
            { "type": "function", "name": "exec_command", "parameters": { "type": "object" } },
            { "type": "custom", "name": "apply_patch" },
        ],
    });

    let resp = client.post(&url).json(&first).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");

    let response: Value = client
        .post(&url)
        .bearer_auth("right-key")
        .json(&first)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response["object"], "response");
    assert_eq!(response["status"], "completed");
    let output = response["output"].as_array().unwrap();
    assert_eq!(output[0]["type"], "function_call");
    assert_eq!(output[0]["arguments"], r#"{"cmd":"ls"}"#);
    assert_eq!(output[1]["type"], "custom_tool_call");
    assert!(response["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let mut streamed = first.clone();
    streamed["stream"] = json!(true);
    let resp = client
        .post(&url)
        .bearer_auth("right-key")
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let events = sse_events(&resp.text().await.unwrap());
    let numbers: Vec<u64> = events
        .iter()
        .map(|(_, e)| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());
    assert!(events.iter().all(|(name, e)| e["type"] == name.as_str()));
    let kinds: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    let joined = |kind: &str| -> String {
        events
            .iter()
            .filter(|(name, _)| name == kind)
            .map(|(_, e)| e["delta"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        joined("response.function_call_arguments.delta"),
        r#"{"cmd":"ls"}"#
    );
    assert_eq!(
        joined("response.custom_tool_call_input.delta"),
        "*** Begin Patch\n*** Add File: é.md\n+ü\n*** End Patch\n"
    );
    let done: Vec<&Value> = events
        .iter()
        .filter(|(name, _)| name == "response.output_item.done")
        .map(|(_, e)| &e["item"])
        .collect();
    assert_eq!(done.len(), 2);

    // The client sends the call and its output back; the script answers with a message.
    let call = done[1].clone();
    let mut second = streamed.clone();
    second["input"]
        .as_array_mut()
        .unwrap()
        .extend([call.clone(), json!({ "type": "custom_tool_call_output", "call_id": call["call_id"], "output": "Success." })]);
    let events = sse_events(
        &client
            .post(&url)
            .bearer_auth("right-key")
            .json(&second)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(joined_text(&events), "patched: Success.");
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(
        completed["output"][0]["content"][0]["text"],
        "patched: Success."
    );

    let recorded = model.requests();
    assert_eq!(recorded.len(), 4);
    assert_eq!(recorded[0].status, 401);
    assert!(recorded.iter().all(openai::Recorded::is_response));
}

/// `(event, data)` pairs of a server-sent event stream.
fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = String::new();
            let mut data = Value::Null;
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = name.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap();
                }
            }
            (event, data)
        })
        .collect()
}

fn joined_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(name, _)| name == "response.output_text.delta")
        .map(|(_, e)| e["delta"].as_str().unwrap().to_owned())
        .collect()
}
