#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

//! More real agent CLIs end to end (opencode, Gemini CLI, Copilot CLI): as in `real_agents.rs`,
//! drydock runs the CLI from the sandbox image against a local stand-in of its model API,
//! reached through drydock's own settings, with a stdio MCP connector created through the API.
//! The stand-in plays a scripted model, so the CLI's real tool loop runs: it writes a file,
//! calls the connector's tool, and answers.

use std::sync::{Arc, Mutex};

use drydock_tests::TestDb;
use drydock_tests::anthropic::{self, AnthropicStandIn, Block};
use drydock_tests::gemini::{self, GeminiStandIn, Part};
use drydock_tests::hunt::KeyHunt;
use drydock_tests::openai::{self, Item, OpenAiStandIn};
use drydock_tests::real_agent::{AgentEnv, Ran, SECOND_ANSWER, SECOND_TURN};
use drydock_tests::recorded::summary;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Alice's Anthropic key: only the stand-in accepts it.
const ANTHROPIC_KEY: &str = "sk-ant-api03-standin-Q7vX2mLp9RtY4wZc8NbK1dFh6JsG3eUa0oIi5";

/// Alice's OpenAI key: only the stand-in accepts it.
const OPENAI_KEY: &str = "sk-proj-standin-Hq3Vn8Rw1Zt6Yp0Lc4Mx9Bk2Jd7Fs5Ga";

/// Alice's Gemini key (Google's `AIza` shape): only the stand-in accepts it.
const GEMINI_KEY: &str = "AIzaSyStandin-Qw3Er5Ty7Ui9Op1As3Df5Gh7J";

/// What the model answers once the echo tool has answered.
const ANSWER: &str = "Created HELLO.md. The echo tool answered: echo: ping from the model";

type Env = AgentEnv;

/// What the scripted opencode model writes into HELLO.md.
const OPENCODE_HELLO: &str = "# Hello\n\nWritten by opencode through drydock.\n";

/// The connector's tool as opencode names it: `<server>_<tool>`.
const OPENCODE_ECHO_TOOL: &str = "echo_echo";

/// The scripted Anthropic-API model of the HELLO tests: `write_tool` with `input` writes
/// HELLO.md, then the connector's `echo_tool` is called, then the answer says what it returned.
/// A request that does not offer `write_tool` is a side request (a title, a summary) and gets
/// `side_answer`.
fn hello_script(
    c: &anthropic::Conversation<'_>,
    write_tool: &str,
    input: Value,
    echo_tool: &str,
    side_answer: &str,
) -> Vec<Block> {
    if !c.offers(write_tool) {
        return vec![Block::text(side_answer)];
    }
    if !c.called(write_tool) {
        return vec![
            Block::text("I'll create HELLO.md."),
            Block::tool_use(write_tool, input),
        ];
    }
    if !c.called(echo_tool) && c.offers(echo_tool) {
        return vec![Block::tool_use(
            echo_tool,
            json!({ "text": "ping from the model" }),
        )];
    }
    let echoed = c
        .result_of(echo_tool)
        .map(|r| r.text)
        .unwrap_or_else(|| "(no echo tool)".to_owned());
    vec![Block::text(format!(
        "Created HELLO.md. The echo tool answered: {echoed}"
    ))]
}

/// The scripted model behind opencode (Anthropic Messages API): HELLO.md with `write`.
fn opencode_script(c: &anthropic::Conversation<'_>) -> Vec<Block> {
    let input = json!({ "filePath": "/workspace/HELLO.md", "content": OPENCODE_HELLO });
    hello_script(c, "write", input, OPENCODE_ECHO_TOOL, "Stand-in title")
}

/// opencode with an Anthropic model: drydock's `--anthropic-base-url` becomes the `anthropic`
/// provider's `baseURL` (with `/v1`) in opencode.json, next to the `echo` connector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_writes_a_file_and_calls_an_mcp_tool_through_drydock() {
    let model = AnthropicStandIn::start(ANTHROPIC_KEY, opencode_script).await;
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
        seen,
    } = env
        .run_hello(
            "opencode",
            "anthropic/claude-sonnet-4-5",
            OPENCODE_HELLO,
            || model.requests(),
        )
        .await;

    // The log reads well: the model's words, the write and the MCP call with their results,
    // the answer and a summary of the steps.
    let has = |line: &str| log.iter().any(|l| l == line);
    let has_prefix = |prefix: &str| log.iter().any(|l| l.starts_with(prefix));
    assert!(has("agent: I'll create HELLO.md."), "{text}");
    assert!(has("agent: write /workspace/HELLO.md"), "{text}");
    assert!(has_prefix("agent: write: "), "{text}");
    assert!(
        has_prefix(&format!("agent: {OPENCODE_ECHO_TOOL}")),
        "{text}"
    );
    assert!(
        has(&format!(
            "agent: {OPENCODE_ECHO_TOOL}: echo: ping from the model"
        )),
        "{text}"
    );
    assert!(has(&format!("agent: {ANSWER}")), "{text}");
    env.assert_final_message(&task, ANSWER).await;
    assert!(
        has_prefix("agent: Done: 3 steps"),
        "a result summary:\n{text}"
    );

    // The stand-in got the key on every call; the key never reached the log.
    let turns = model.message_requests();
    assert!(turns.len() >= 3, "{seen:#?}");
    for r in &turns {
        assert_eq!(r.header("x-api-key"), Some(ANTHROPIC_KEY), "{}", r.path);
        assert_eq!(r.status, 200, "{seen:#?}");
    }
    assert!(!text.contains(ANTHROPIC_KEY));
    assert!(!text.contains(&ANTHROPIC_KEY[..24]));

    // opencode offered the MCP tool to the model under its `<server>_<tool>` name.
    assert!(
        turns.iter().any(|r| anthropic::tool_names(&r.body)
            .iter()
            .any(|t| t == OPENCODE_ECHO_TOOL)),
        "no request offered {OPENCODE_ECHO_TOOL}: {:#?}",
        turns
            .iter()
            .map(|r| anthropic::tool_names(&r.body))
            .collect::<Vec<_>>()
    );
    assert!(
        requests.iter().all(|r| r.status != 404),
        "unknown calls: {seen:#?}"
    );
}

/// What the scripted Gemini model writes into HELLO.md.
const GEMINI_HELLO: &str = "# Hello\n\nWritten by Gemini CLI through drydock.\n";

/// The connector's tool as Gemini CLI declares it: `mcp_<server>_<tool>`.
const GEMINI_ECHO_TOOL: &str = "mcp_echo_echo";

/// The scripted model behind Gemini CLI: write HELLO.md with `write_file`, call the connector's
/// tool, then answer with what it said. A request without tools is a side question: a JSON one
/// (who speaks next) gets the user, any other a plain answer.
fn gemini_script(c: &gemini::Conversation<'_>) -> Vec<Part> {
    if !c.offers("write_file") {
        if c.wants_json() {
            return vec![Part::text(
                json!({ "reasoning": "The model has answered.", "next_speaker": "user" })
                    .to_string(),
            )];
        }
        return vec![Part::text("Stand-in summary.")];
    }
    if !c.called("write_file") {
        return vec![
            Part::text("I'll create HELLO.md."),
            Part::function_call(
                "write_file",
                json!({ "file_path": "/workspace/HELLO.md", "content": GEMINI_HELLO }),
            ),
        ];
    }
    if !c.called(GEMINI_ECHO_TOOL) && c.offers(GEMINI_ECHO_TOOL) {
        return vec![Part::function_call(
            GEMINI_ECHO_TOOL,
            json!({ "text": "ping from the model" }),
        )];
    }
    // Gemini CLI wraps an MCP tool's output in `<untrusted_context>` lines.
    let echoed = c
        .response_of(GEMINI_ECHO_TOOL)
        .and_then(|r| {
            r.text
                .lines()
                .find(|l| l.starts_with("echo: "))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "(no echo tool)".to_owned());
    vec![Part::text(format!(
        "Created HELLO.md. The echo tool answered: {echoed}"
    ))]
}

/// Gemini CLI through drydock's `--gemini-base-url` (`GOOGLE_GEMINI_BASE_URL` in the sandbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_writes_a_file_and_calls_an_mcp_tool_through_drydock() {
    let model = GeminiStandIn::start(GEMINI_KEY, gemini_script).await;
    let env = Env::start(TestDb::sqlite().await, &["--gemini-base-url", &model.url]).await;
    env.key_and_connector("gemini", GEMINI_KEY).await;
    let Ran {
        task,
        log,
        text,
        requests,
        seen,
    } = env
        .run_hello("gemini", "gemini-2.5-pro", GEMINI_HELLO, || {
            model.requests()
        })
        .await;

    // The log reads well: the session, the model's words, the write and the MCP call with
    // their results, the answer and a summary.
    let has = |line: &str| log.iter().any(|l| l == line);
    let has_prefix = |prefix: &str| log.iter().any(|l| l.starts_with(prefix));
    assert!(
        has("stdout: Session started: model gemini-2.5-pro"),
        "{text}"
    );
    assert!(has("agent: I'll create HELLO.md."), "{text}");
    assert!(has("agent: write_file /workspace/HELLO.md"), "{text}");
    assert!(has_prefix("agent: write_file: "), "{text}");
    assert!(has(&format!("agent: {GEMINI_ECHO_TOOL}")), "{text}");
    assert!(
        has(&format!(
            "agent: {GEMINI_ECHO_TOOL}: echo: ping from the model"
        )),
        "{text}"
    );
    assert!(has(&format!("agent: {ANSWER}")), "{text}");
    env.assert_final_message(&task, ANSWER).await;
    assert!(
        log.iter()
            .any(|l| l.starts_with("agent: Done: ") && l.contains("2 tool calls")),
        "a result summary:\n{text}"
    );

    // The stand-in got the key on every call, and the prompt verbatim; the key never reached
    // the log.
    let turns = model.generate_requests();
    assert!(turns.len() >= 3, "{seen:#?}");
    for r in &turns {
        assert_eq!(r.header("x-goog-api-key"), Some(GEMINI_KEY), "{}", r.path);
        assert_eq!(r.status, 200, "{seen:#?}");
        assert_eq!(
            r.model_call(),
            Some(("gemini-2.5-pro", "streamGenerateContent")),
            "{}",
            r.path
        );
    }
    assert!(
        gemini::Conversation {
            body: &turns[0].body
        }
        .user_text()
        .contains("Create HELLO.md with a greeting, then try the echo tool."),
        "{}",
        turns[0].body["contents"]
    );
    assert!(!text.contains(GEMINI_KEY));
    assert!(!text.contains(&GEMINI_KEY[..20]));

    // Gemini CLI declared the MCP tool to the model as `mcp_<server>_<tool>`, and sent its
    // result back as a functionResponse.
    assert!(
        turns.iter().any(|r| gemini::tool_names(&r.body)
            .iter()
            .any(|t| t == GEMINI_ECHO_TOOL)),
        "no request declared {GEMINI_ECHO_TOOL}"
    );
    let last = gemini::Conversation {
        body: &turns.last().unwrap().body,
    };
    assert!(
        last.response_of(GEMINI_ECHO_TOOL)
            .is_some_and(|r| r.text.contains("echo: ping from the model")),
        "{}",
        last.body["contents"]
    );
    assert!(
        requests.iter().all(|r| r.status != 404),
        "unknown calls: {seen:#?}"
    );
}

/// A key the Gemini API refuses: the task fails, and the log says why without the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_with_a_refused_key_fails_with_the_apis_reason() {
    let model = GeminiStandIn::start(GEMINI_KEY, gemini_script).await;
    let env = Env::start(TestDb::sqlite().await, &["--gemini-base-url", &model.url]).await;
    let wrong = "AIzaSyRevoked-Zq1Wx2Ec3Rv4Tb5Yn6Um7Ik8Ol";
    let (status, body) = env.put("/api/keys/gemini", json!({ "key": wrong })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (task, log) = env
        .run("gemini", "gemini-2.5-pro", "Create HELLO.md.")
        .await;
    let text = log.join("\n");
    let requests = model.requests();
    let seen = summary(&requests);
    eprintln!("task log:\n{text}\nstand-in saw: {seen:#?}");
    assert_eq!(task["status"], "failed", "{task}\n{text}");
    assert!(
        log.iter()
            .any(|l| l.starts_with("error: ") && l.contains("API key not valid")),
        "the API's answer is in the log:\n{text}"
    );
    assert!(
        !text.contains(wrong) && !text.contains(&wrong[..20]),
        "{text}"
    );
    let turns = model.generate_requests();
    assert!(!turns.is_empty());
    for r in &turns {
        assert_eq!(r.status, 400);
        assert_eq!(r.header("x-goog-api-key"), Some(wrong));
    }
    assert!(env.hello_on_branch(&task).is_none());
}

/// What the scripted Copilot model writes into HELLO.md.
const COPILOT_HELLO: &str = "# Hello\n\nWritten by Copilot CLI through drydock.\n";

/// The connector's tool as Copilot CLI names it: `<server>-<tool>`.
const COPILOT_ECHO_TOOL: &str = "echo-echo";

/// The operator's agents file that runs Copilot CLI on its custom-provider (BYOK) mode: the
/// user's Anthropic key becomes `COPILOT_PROVIDER_API_KEY` and drydock's
/// `--anthropic-base-url` becomes `COPILOT_PROVIDER_BASE_URL`; `COPILOT_OFFLINE` keeps it off
/// GitHub (no sign-in, telemetry, GitHub MCP server or update checks). Copilot CLI sends the
/// model id as given to the provider, so the models are the provider's ids.
const COPILOT_BYOK_AGENTS_FILE: &str = r#"
[[agents]]
id = "copilot"
keys = [{ provider = "anthropic", env = ["COPILOT_PROVIDER_API_KEY"], base_url_env = "COPILOT_PROVIDER_BASE_URL" }]
env = { COPILOT_PROVIDER_TYPE = "anthropic", COPILOT_OFFLINE = "true" }
models = [{ id = "claude-sonnet-4-5", name = "Claude Sonnet 4.5 (own Anthropic key)" }]
"#;

/// The scripted model behind Copilot CLI (Anthropic Messages API): HELLO.md with `create`.
fn copilot_script(c: &anthropic::Conversation<'_>) -> Vec<Block> {
    let input = json!({ "path": "/workspace/HELLO.md", "file_text": COPILOT_HELLO });
    hello_script(c, "create", input, COPILOT_ECHO_TOOL, "Stand-in summary.")
}

/// Copilot CLI with an Anthropic model through its custom-provider mode, set up with drydock's
/// own settings only: an agents file and `--anthropic-base-url`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copilot_cli_on_a_custom_provider_writes_a_file_and_calls_an_mcp_tool_through_drydock() {
    let model = AnthropicStandIn::start(ANTHROPIC_KEY, copilot_script).await;
    let dir = tempfile::tempdir().unwrap();
    let agents_file = dir.path().join("agents.toml");
    std::fs::write(&agents_file, COPILOT_BYOK_AGENTS_FILE).unwrap();
    let env = Env::start(
        TestDb::sqlite().await,
        &[
            "--anthropic-base-url",
            &model.url,
            "--agents-file",
            agents_file.to_str().unwrap(),
        ],
    )
    .await;
    env.key_and_connector("anthropic", ANTHROPIC_KEY).await;
    let Ran {
        task,
        log,
        text,
        requests,
        seen,
    } = env
        .run_hello("copilot", "claude-sonnet-4-5", COPILOT_HELLO, || {
            model.requests()
        })
        .await;

    // The log reads well: the MCP server connected, the model's words, the file creation and
    // the MCP call with their results, the answer and a summary.
    let has = |line: &str| log.iter().any(|l| l == line);
    let has_prefix = |prefix: &str| log.iter().any(|l| l.starts_with(prefix));
    assert!(has("stdout: MCP servers: echo (connected)"), "{text}");
    assert!(has("agent: I'll create HELLO.md."), "{text}");
    assert!(has("agent: create /workspace/HELLO.md"), "{text}");
    assert!(
        has_prefix("agent: done: Created file /workspace/HELLO.md"),
        "{text}"
    );
    assert!(has(&format!("agent: {COPILOT_ECHO_TOOL}")), "{text}");
    assert!(has("agent: done: echo: ping from the model"), "{text}");
    assert!(has(&format!("agent: {ANSWER}")), "{text}");
    env.assert_final_message(&task, ANSWER).await;
    assert!(has_prefix("agent: Done: "), "a result summary:\n{text}");

    // The stand-in got the key on every call, and the model id as the agents file names it; the
    // key never reached the log.
    let turns = model.message_requests();
    assert!(turns.len() >= 3, "{seen:#?}");
    for r in &turns {
        assert_eq!(r.header("x-api-key"), Some(ANTHROPIC_KEY), "{}", r.path);
        assert_eq!(r.status, 200, "{seen:#?}");
        assert_eq!(r.body["model"], "claude-sonnet-4-5");
        assert_eq!(r.body["stream"], true);
    }
    assert!(!text.contains(ANTHROPIC_KEY));
    assert!(!text.contains(&ANTHROPIC_KEY[..24]));

    // Copilot CLI offered the MCP tool as `<server>-<tool>`.
    assert!(
        turns.iter().any(|r| anthropic::tool_names(&r.body)
            .iter()
            .any(|t| t == COPILOT_ECHO_TOOL)),
        "no request offered {COPILOT_ECHO_TOOL}"
    );
    assert!(
        requests.iter().all(|r| r.status != 404),
        "unknown calls: {seen:#?}"
    );
}

/// The patch opencode applies for a GPT model, which it gives `apply_patch` instead of `write`.
const OPENCODE_PATCH: &str = "*** Begin Patch\n*** Add File: HELLO.md\n+# Hello\n+\n+Written by opencode through drydock.\n*** End Patch";

/// The scripted model behind opencode with an OpenAI model (Responses API): write HELLO.md
/// with `apply_patch`, call the connector's tool, then answer with what it said.
fn opencode_openai_script(c: &openai::Conversation<'_>) -> Vec<Item> {
    if !c.offers("apply_patch") {
        return vec![Item::message("Stand-in title")];
    }
    if !c.called("apply_patch") {
        return vec![
            Item::message("I'll create HELLO.md."),
            Item::function_call("apply_patch", json!({ "patchText": OPENCODE_PATCH })),
        ];
    }
    if !c.called(OPENCODE_ECHO_TOOL) && c.offers(OPENCODE_ECHO_TOOL) {
        return vec![Item::function_call(
            OPENCODE_ECHO_TOOL,
            json!({ "text": "ping from the model" }),
        )];
    }
    let echoed = c
        .output_of(OPENCODE_ECHO_TOOL)
        .map(|o| o.text)
        .unwrap_or_else(|| "(no echo tool)".to_owned());
    vec![Item::message(format!(
        "Created HELLO.md. The echo tool answered: {echoed}"
    ))]
}

/// The scripted model behind opencode with a Gemini model: the same steps as
/// [`opencode_script`].
fn opencode_gemini_script(c: &gemini::Conversation<'_>) -> Vec<Part> {
    if !c.offers("write") {
        return vec![Part::text("Stand-in title")];
    }
    if !c.called("write") {
        return vec![
            Part::text("I'll create HELLO.md."),
            Part::function_call(
                "write",
                json!({ "filePath": "/workspace/HELLO.md", "content": OPENCODE_HELLO }),
            ),
        ];
    }
    if !c.called(OPENCODE_ECHO_TOOL) && c.offers(OPENCODE_ECHO_TOOL) {
        return vec![Part::function_call(
            OPENCODE_ECHO_TOOL,
            json!({ "text": "ping from the model" }),
        )];
    }
    let echoed = c
        .response_of(OPENCODE_ECHO_TOOL)
        .map(|r| r.text)
        .unwrap_or_else(|| "(no echo tool)".to_owned());
    vec![Part::text(format!(
        "Created HELLO.md. The echo tool answered: {echoed}"
    ))]
}

/// Checks the log of an opencode task that ran one of the opencode scripts (after
/// [`AgentEnv::run_hello`] checked the task, the file and the pull request): it shows the file tool (`file_tool`, its call line), the MCP call,
/// the answer and the summary.
async fn assert_opencode_task(env: &Env, task: &Value, log: &[String], file_tool: &str) {
    let text = log.join("\n");
    let has = |line: &str| log.iter().any(|l| l == line);
    let has_prefix = |prefix: &str| log.iter().any(|l| l.starts_with(prefix));
    assert!(has("agent: I'll create HELLO.md."), "{text}");
    assert!(has(&format!("agent: {file_tool}")), "{text}");
    let tool = file_tool.split(' ').next().unwrap_or_default();
    assert!(has_prefix(&format!("agent: {tool}: ")), "{text}");
    assert!(has(&format!("agent: {OPENCODE_ECHO_TOOL}")), "{text}");
    assert!(
        has(&format!(
            "agent: {OPENCODE_ECHO_TOOL}: echo: ping from the model"
        )),
        "{text}"
    );
    assert!(has(&format!("agent: {ANSWER}")), "{text}");
    env.assert_final_message(task, ANSWER).await;
    assert!(
        has_prefix("agent: Done: 3 steps"),
        "a result summary:\n{text}"
    );
}

/// opencode with an OpenAI model: drydock's `--openai-base-url` becomes the `openai` provider's
/// `baseURL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_with_an_openai_model_writes_a_file_and_calls_an_mcp_tool_through_drydock() {
    let model = OpenAiStandIn::start(OPENAI_KEY, opencode_openai_script).await;
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
        seen,
    } = env
        .run_hello("opencode", "openai/gpt-5.5", OPENCODE_HELLO, || {
            model.requests()
        })
        .await;
    assert_opencode_task(&env, &task, &log, "apply_patch").await;

    // Every call carried the key; the main model got the MCP tool; the key never reached the
    // log.
    let turns = model.response_requests();
    assert!(turns.len() >= 3, "{seen:#?}");
    for r in &turns {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {OPENAI_KEY}").as_str())
        );
        assert_eq!(r.status, 200, "{seen:#?}");
    }
    assert!(
        turns.iter().any(|r| r.body["model"] == "gpt-5.5"
            && openai::tool_names(&r.body)
                .iter()
                .any(|t| t == OPENCODE_ECHO_TOOL)),
        "no gpt-5.5 request offered {OPENCODE_ECHO_TOOL}"
    );
    assert!(!text.contains(OPENAI_KEY) && !text.contains(&OPENAI_KEY[..20]));
    assert!(
        requests.iter().all(|r| r.status != 404),
        "unknown calls: {seen:#?}"
    );
}

/// opencode with a Gemini model: drydock's `--gemini-base-url` becomes the `google` provider's
/// `baseURL` (with `/v1beta`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_with_a_gemini_model_writes_a_file_and_calls_an_mcp_tool_through_drydock() {
    let model = GeminiStandIn::start(GEMINI_KEY, opencode_gemini_script).await;
    let env = Env::start(TestDb::sqlite().await, &["--gemini-base-url", &model.url]).await;
    env.key_and_connector("gemini", GEMINI_KEY).await;
    let Ran {
        task,
        log,
        text,
        requests,
        seen,
    } = env
        .run_hello("opencode", "google/gemini-2.5-pro", OPENCODE_HELLO, || {
            model.requests()
        })
        .await;
    assert_opencode_task(&env, &task, &log, "write /workspace/HELLO.md").await;

    // Every call carried the key; the main model got the MCP tool and its result back; the key
    // never reached the log.
    let turns = model.generate_requests();
    assert!(turns.len() >= 3, "{seen:#?}");
    for r in &turns {
        assert_eq!(r.header("x-goog-api-key"), Some(GEMINI_KEY), "{}", r.path);
        assert_eq!(r.status, 200, "{seen:#?}");
    }
    let main: Vec<_> = turns
        .iter()
        .filter(|r| r.model_call().is_some_and(|(m, _)| m == "gemini-2.5-pro"))
        .collect();
    assert!(main.len() >= 3, "{seen:#?}");
    assert!(
        main.iter().all(|r| gemini::tool_names(&r.body)
            .iter()
            .any(|t| t == OPENCODE_ECHO_TOOL)),
        "{seen:#?}"
    );
    let last = gemini::Conversation {
        body: &main.last().unwrap().body,
    };
    assert_eq!(
        last.response_of(OPENCODE_ECHO_TOOL)
            .map(|r| r.text)
            .as_deref(),
        Some("echo: ping from the model")
    );
    assert!(!text.contains(GEMINI_KEY) && !text.contains(&GEMINI_KEY[..20]));
    assert!(
        requests.iter().all(|r| r.status != 404),
        "unknown calls: {seen:#?}"
    );
}

/// A forward proxy that lets nothing through: it records the target of every request a CLI
/// sends it (`CONNECT host:port`, or `GET http://…`) and answers 502. A CLI run with
/// `HTTPS_PROXY`/`HTTP_PROXY` pointing here and `NO_PROXY` for 127.0.0.1 shows every call it
/// makes outside the stand-in.
struct RefusingProxy {
    url: String,
    targets: Arc<Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RefusingProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RefusingProxy {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = targets.clone();
        let server = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let line = head.lines().next().unwrap_or_default();
                    let target = line.rsplit_once(' ').map_or(line, |(req, _)| req);
                    seen.lock().unwrap().push(target.to_owned());
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        Self {
            url,
            targets,
            server,
        }
    }

    /// `METHOD target` of every request so far.
    fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }

    /// The proxy variables as entries of a TOML inline table (Node's own `fetch` honours them
    /// only with `NODE_USE_ENV_PROXY`).
    fn env_entries(&self) -> String {
        let url = &self.url;
        format!(
            r#"HTTPS_PROXY = "{url}", HTTP_PROXY = "{url}", https_proxy = "{url}", http_proxy = "{url}", NO_PROXY = "127.0.0.1,localhost", no_proxy = "127.0.0.1,localhost", NODE_USE_ENV_PROXY = "1""#
        )
    }
}

/// Runs `agent` through drydock with the agents file `agents_file`, the echo connector and the
/// stand-in at `base_url` (`--<provider>-base-url`); answers the task's status, its log and the
/// calls the CLI tried outside the stand-in.
async fn calls_outside(
    agents_file: &str,
    provider: &str,
    key: &str,
    base_url: &str,
    agent: &str,
    model: &str,
) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agents.toml");
    std::fs::write(&path, agents_file).unwrap();
    let flag = format!("--{provider}-base-url");
    let env = Env::start(
        TestDb::sqlite().await,
        &[&flag, base_url, "--agents-file", path.to_str().unwrap()],
    )
    .await;
    env.key_and_connector(provider, key).await;
    let (task, log) = env
        .run(
            agent,
            model,
            "Create HELLO.md with a greeting, then try the echo tool.",
        )
        .await;
    (task, log.join("\n"))
}

/// Copilot CLI on its custom provider with `COPILOT_OFFLINE`: every call goes to the stand-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copilot_cli_on_a_custom_provider_calls_nothing_but_the_gateway() {
    let model = AnthropicStandIn::start(ANTHROPIC_KEY, copilot_script).await;
    let proxy = RefusingProxy::start().await;
    let agents_file = format!(
        r#"
[[agents]]
id = "copilot"
keys = [{{ provider = "anthropic", env = ["COPILOT_PROVIDER_API_KEY"], base_url_env = "COPILOT_PROVIDER_BASE_URL" }}]
env = {{ COPILOT_PROVIDER_TYPE = "anthropic", COPILOT_OFFLINE = "true", {} }}
models = [{{ id = "claude-sonnet-4-5", name = "Claude Sonnet 4.5" }}]
"#,
        proxy.env_entries()
    );
    let (task, text) = calls_outside(
        &agents_file,
        "anthropic",
        ANTHROPIC_KEY,
        &model.url,
        "copilot",
        "claude-sonnet-4-5",
    )
    .await;
    eprintln!("task log:\n{text}\nproxy saw: {:#?}", proxy.targets());
    assert_eq!(task["status"], "succeeded", "{task}\n{text}");
    assert!(model.message_requests().len() >= 3);
    assert_eq!(proxy.targets(), Vec::<String>::new(), "{text}");
}

/// opencode calls nothing but the gateway once its model catalogue fetch
/// (`OPENCODE_DISABLE_MODELS_FETCH`, else `models.opencode.ai`) and the npm install of
/// `@opencode-ai/plugin` into its config directory (`npm_config_offline`, else
/// `registry.npmjs.org`) are off. The built-in agent does not set them yet: see
/// `opencode_as_built_in_calls_nothing_but_the_gateway`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_without_models_fetch_and_npm_calls_nothing_but_the_gateway() {
    let model = AnthropicStandIn::start(ANTHROPIC_KEY, opencode_script).await;
    let proxy = RefusingProxy::start().await;
    let agents_file = format!(
        r#"
[[agents]]
id = "opencode"
env = {{ OPENCODE_DISABLE_MODELS_FETCH = "1", npm_config_offline = "true", {} }}
"#,
        proxy.env_entries()
    );
    let (task, text) = calls_outside(
        &agents_file,
        "anthropic",
        ANTHROPIC_KEY,
        &model.url,
        "opencode",
        "anthropic/claude-sonnet-4-5",
    )
    .await;
    eprintln!("task log:\n{text}\nproxy saw: {:#?}", proxy.targets());
    assert_eq!(task["status"], "succeeded", "{task}\n{text}");
    assert!(model.message_requests().len() >= 3);
    assert_eq!(proxy.targets(), Vec::<String>::new(), "{text}");
}

/// The built-in opencode agent, with only the proxy added: today it also fetches
/// `models.opencode.ai` and installs `@opencode-ai/plugin` from `registry.npmjs.org`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_as_built_in_calls_nothing_but_the_gateway() {
    let model = AnthropicStandIn::start(ANTHROPIC_KEY, opencode_script).await;
    let proxy = RefusingProxy::start().await;
    let agents_file = format!(
        "[[agents]]\nid = \"opencode\"\nenv = {{ {} }}\n",
        proxy.env_entries()
    );
    let (task, text) = calls_outside(
        &agents_file,
        "anthropic",
        ANTHROPIC_KEY,
        &model.url,
        "opencode",
        "anthropic/claude-sonnet-4-5",
    )
    .await;
    eprintln!("task log:\n{text}\nproxy saw: {:#?}", proxy.targets());
    assert_eq!(task["status"], "succeeded", "{task}\n{text}");
    assert_eq!(proxy.targets(), Vec::<String>::new(), "{text}");
}

/// The built-in Gemini CLI agent, with only the proxy added: today it also sends usage
/// statistics to `play.googleapis.com`, which only `privacy.usageStatisticsEnabled: false` in
/// the settings.json drydock writes turns off (no environment variable does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_calls_nothing_but_the_gateway() {
    let model = GeminiStandIn::start(GEMINI_KEY, gemini_script).await;
    let proxy = RefusingProxy::start().await;
    let agents_file = format!(
        "[[agents]]\nid = \"gemini\"\nenv = {{ {} }}\n",
        proxy.env_entries()
    );
    let (task, text) = calls_outside(
        &agents_file,
        "gemini",
        GEMINI_KEY,
        &model.url,
        "gemini",
        "gemini-2.5-pro",
    )
    .await;
    eprintln!("task log:\n{text}\nproxy saw: {:#?}", proxy.targets());
    assert_eq!(task["status"], "succeeded", "{task}\n{text}");
    assert_eq!(proxy.targets(), Vec::<String>::new(), "{text}");
}

/// The Gemini stand-in itself: the key check, a JSON reply, a streamed one and the other calls,
/// without Docker.
#[tokio::test]
async fn the_gemini_stand_in_speaks_the_generate_content_protocol() {
    let model = GeminiStandIn::start("right-key", |c: &gemini::Conversation<'_>| {
        if let Some(r) = c.response_of("write_file") {
            vec![Part::text(format!(
                "done: {} ({}), and that is all",
                r.text,
                c.user_text()
            ))]
        } else if c.offers("write_file") {
            vec![
                Part::text("writing"),
                Part::function_call("write_file", json!({ "file_path": "/x", "content": "é ü" })),
            ]
        } else {
            vec![Part::function_call("undeclared", json!({}))]
        }
    })
    .await;
    let client = Client::new();
    let url = |call: &str| format!("{}/v1beta/models/gemini-x:{call}", model.url);
    let first = json!({
        "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }],
        "tools": [{ "functionDeclarations": [
            { "name": "write_file", "parametersJsonSchema": { "type": "object" } },
        ] }],
    });

    // A wrong key is refused as Google refuses it; no key at all too.
    let resp = client
        .post(url("generateContent"))
        .header("x-goog-api-key", "wrong")
        .json(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(body["error"]["details"][0]["reason"], "API_KEY_INVALID");
    let resp = client
        .post(url("generateContent"))
        .json(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // One JSON reply: a text part and a function call; the key may come as `?key=`.
    let reply: Value = client
        .post(format!("{}?key=right-key", url("generateContent")))
        .json(&first)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let candidate = &reply["candidates"][0];
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(candidate["content"]["role"], "model");
    assert_eq!(candidate["content"]["parts"][0]["text"], "writing");
    let call = &candidate["content"]["parts"][1]["functionCall"];
    assert_eq!(call["name"], "write_file");
    assert_eq!(call["args"]["content"], "é ü");
    assert!(reply["usageMetadata"]["totalTokenCount"].as_u64().unwrap() > 0);
    assert_eq!(reply["modelVersion"], "gemini-x");

    // The client sends the call and its response back; the streamed answer comes as SSE
    // events, each a whole GenerateContentResponse, the last with the finish reason.
    let mut second = first.clone();
    second["contents"].as_array_mut().unwrap().extend([
        json!({ "role": "model", "parts": [{ "functionCall": call }] }),
        json!({ "role": "user", "parts": [{ "functionResponse": {
            "name": "write_file", "response": { "output": "written" } } }] }),
    ]);
    let resp = client
        .post(format!("{}?alt=sse", url("streamGenerateContent")))
        .header("x-goog-api-key", "right-key")
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
        .split("\r\n\r\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert!(events.len() > 1, "{sse}");
    let joined: String = events
        .iter()
        .map(|e| {
            e["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(joined, "done: written (hi), and that is all");
    let (last, rest) = events.split_last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert!(last["usageMetadata"].is_object());
    assert!(
        rest.iter()
            .all(|e| e["candidates"][0]["finishReason"].is_null())
    );

    // countTokens answers; a script that calls an undeclared function is a 400 the client
    // shows; unknown paths are 404s, recorded.
    let tokens: Value = client
        .post(url("countTokens"))
        .header("x-goog-api-key", "right-key")
        .json(&json!({ "contents": [] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(tokens["totalTokens"].is_u64());
    let resp = client
        .post(url("generateContent"))
        .header("x-goog-api-key", "right-key")
        .json(&json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = client
        .post(format!("{}/v1/other", model.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let recorded = model.requests();
    assert_eq!(recorded.len(), 7);
    assert_eq!(
        recorded.iter().map(|r| r.status).collect::<Vec<_>>(),
        [400, 403, 200, 200, 200, 400, 404]
    );
    assert_eq!(model.generate_requests().len(), 5);
    assert_eq!(
        recorded[3].model_call(),
        Some(("gemini-x", "streamGenerateContent"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_resumes_its_session_in_a_kept_sandbox() {
    let model = AnthropicStandIn::start(ANTHROPIC_KEY, |c| {
        if c.body.to_string().contains(SECOND_TURN) {
            return vec![Block::text(SECOND_ANSWER)];
        }
        opencode_script(c)
    })
    .await;
    let env = Env::start(
        TestDb::sqlite().await,
        &["--anthropic-base-url", &model.url],
    )
    .await;
    env.key_and_connector("anthropic", ANTHROPIC_KEY).await;
    env.assert_resumes_in_a_kept_sandbox("opencode", "anthropic/claude-sonnet-4-5", || {
        model.message_requests()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_resumes_its_session_in_a_kept_sandbox() {
    let model = GeminiStandIn::start(GEMINI_KEY, |c| {
        if c.body.to_string().contains(SECOND_TURN) {
            return vec![Part::text(SECOND_ANSWER)];
        }
        gemini_script(c)
    })
    .await;
    let env = Env::start(TestDb::sqlite().await, &["--gemini-base-url", &model.url]).await;
    env.key_and_connector("gemini", GEMINI_KEY).await;
    env.assert_resumes_in_a_kept_sandbox("gemini", "gemini-2.5-pro", || model.requests())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copilot_cli_resumes_its_session_in_a_kept_sandbox() {
    let model = AnthropicStandIn::start(ANTHROPIC_KEY, |c| {
        if c.body.to_string().contains(SECOND_TURN) {
            return vec![Block::text(SECOND_ANSWER)];
        }
        copilot_script(c)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let agents_file = dir.path().join("agents.toml");
    std::fs::write(&agents_file, COPILOT_BYOK_AGENTS_FILE).unwrap();
    let env = Env::start(
        TestDb::sqlite().await,
        &[
            "--anthropic-base-url",
            &model.url,
            "--agents-file",
            agents_file.to_str().unwrap(),
        ],
    )
    .await;
    env.key_and_connector("anthropic", ANTHROPIC_KEY).await;
    env.assert_resumes_in_a_kept_sandbox("copilot", "claude-sonnet-4-5", || {
        model.message_requests()
    })
    .await;
}

/// What a user checks of a task whose agent ran through drydock's model gateway: the log says
/// so; the key shows nowhere in the log or the task; the task shows the tokens the stand-in
/// reported (`reported`: input, output), priced, in the API and on its page; nothing was
/// blocked (the CLI asked for nothing but the gateway); and the hunt, taken while the CLI was
/// waiting for the model, found no trace of the key in the sandbox.
async fn assert_through_the_gateway(
    env: &Env,
    task: &Value,
    text: &str,
    key: &str,
    reported: (u64, u64),
    hunt: &KeyHunt,
) {
    assert!(
        text.contains("the agent's model calls go through drydock's gateway"),
        "{text}"
    );
    let id = task["id"].as_str().unwrap();
    let task = env.get(&format!("/api/tasks/{id}")).await;
    assert!(!text.contains(key) && !task.to_string().contains(key));
    assert!(!text.contains(&key[..20]));
    assert_eq!(task["key_in_sandbox"], false, "{task}");
    assert!(reported.0 > 0 && reported.1 > 0);
    assert_eq!(task["usage"]["input_tokens"], reported.0, "{task}");
    assert_eq!(task["usage"]["output_tokens"], reported.1, "{task}");
    assert!(task["usage"]["cost_usd"].as_f64().unwrap() > 0.0, "{task}");
    assert_eq!(task["blocked_requests"], 0, "{task}\n{text}");
    let page = env
        .alice
        .get(env.app.url(&format!("/tasks/{id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("{} in · {} out · $", reported.0, reported.1)),
        "the task page shows the use"
    );
    hunt.assert_key_never_in_the_sandbox();
}

/// Copilot CLI, as built in, on the user's own Anthropic key (its bring-your-own-key mode)
/// under the `gateway` policy: `COPILOT_PROVIDER_BASE_URL` is drydock's gateway and
/// `COPILOT_PROVIDER_API_KEY` a placeholder; the stand-in gets the real key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copilot_cli_on_its_own_key_works_through_the_model_gateway_without_its_key_in_the_sandbox()
{
    let hunt = KeyHunt::new(ANTHROPIC_KEY);
    let seen_by_script = hunt.clone();
    let model = AnthropicStandIn::start(ANTHROPIC_KEY, move |c| {
        seen_by_script.now();
        copilot_script(c)
    })
    .await;
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
        log,
        text,
        requests,
        seen,
    } = env
        .run_hello("copilot", "claude-sonnet-4-5", COPILOT_HELLO, || {
            model.requests()
        })
        .await;
    assert!(
        log.iter()
            .any(|l| l == "agent: done: echo: ping from the model"),
        "the stdio connector still works:\n{text}"
    );
    env.assert_final_message(&task, ANSWER).await;
    // Every model call reached the stand-in with the real key, streamed (SSE through the
    // gateway, which the CLI read to the end).
    let turns = model.message_requests();
    assert!(turns.len() >= 3, "{seen:#?}");
    for r in &turns {
        assert_eq!(r.header("x-api-key"), Some(ANTHROPIC_KEY), "{}", r.path);
        assert_eq!(r.status, 200, "{seen:#?}");
        assert_eq!(r.body["stream"], true);
    }
    assert!(
        requests.iter().all(|r| r.status != 404),
        "unknown calls: {seen:#?}"
    );
    assert_through_the_gateway(
        &env,
        &task,
        &text,
        ANTHROPIC_KEY,
        model.reported_usage(),
        &hunt,
    )
    .await;
}

/// Gemini CLI under the `gateway` policy: `GOOGLE_GEMINI_BASE_URL` is drydock's gateway and
/// `GEMINI_API_KEY` a placeholder; the stand-in gets the real key in `x-goog-api-key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_works_through_the_model_gateway_without_its_key_in_the_sandbox() {
    let hunt = KeyHunt::new(GEMINI_KEY);
    let seen_by_script = hunt.clone();
    let model = GeminiStandIn::start(GEMINI_KEY, move |c| {
        seen_by_script.now();
        gemini_script(c)
    })
    .await;
    let env = Env::start(
        TestDb::sqlite().await,
        &[
            "--gemini-base-url",
            &model.url,
            "--network-policy",
            "gateway",
        ],
    )
    .await;
    hunt.watch(&env.app.server.instance_id);
    env.key_and_connector("gemini", GEMINI_KEY).await;
    let Ran {
        task,
        log,
        text,
        requests,
        seen,
    } = env
        .run_hello("gemini", "gemini-2.5-pro", GEMINI_HELLO, || {
            model.requests()
        })
        .await;
    assert!(
        log.iter()
            .any(|l| l == &format!("agent: {GEMINI_ECHO_TOOL}: echo: ping from the model")),
        "the stdio connector still works:\n{text}"
    );
    env.assert_final_message(&task, ANSWER).await;
    let turns = model.generate_requests();
    assert!(turns.len() >= 3, "{seen:#?}");
    for r in &turns {
        assert_eq!(r.header("x-goog-api-key"), Some(GEMINI_KEY), "{}", r.path);
        assert_eq!(r.status, 200, "{seen:#?}");
    }
    // The main turns streamed (`:streamGenerateContent` SSE through the gateway).
    assert!(
        turns
            .iter()
            .any(|r| r.model_call() == Some(("gemini-2.5-pro", "streamGenerateContent"))),
        "{seen:#?}"
    );
    assert!(
        requests.iter().all(|r| r.status != 404),
        "unknown calls: {seen:#?}"
    );
    assert_through_the_gateway(
        &env,
        &task,
        &text,
        GEMINI_KEY,
        model.reported_usage(),
        &hunt,
    )
    .await;
}

/// opencode with an Anthropic model under the `gateway` policy: opencode.json's `anthropic`
/// provider `baseURL` is drydock's gateway, `ANTHROPIC_API_KEY` a placeholder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_works_through_the_model_gateway_without_its_key_in_the_sandbox() {
    let hunt = KeyHunt::new(ANTHROPIC_KEY);
    let seen_by_script = hunt.clone();
    let model = AnthropicStandIn::start(ANTHROPIC_KEY, move |c| {
        seen_by_script.now();
        opencode_script(c)
    })
    .await;
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
        log,
        text,
        requests,
        seen,
    } = env
        .run_hello(
            "opencode",
            "anthropic/claude-sonnet-4-5",
            OPENCODE_HELLO,
            || model.requests(),
        )
        .await;
    assert_opencode_task(&env, &task, &log, "write /workspace/HELLO.md").await;
    let turns = model.message_requests();
    assert!(turns.len() >= 3, "{seen:#?}");
    for r in &turns {
        assert_eq!(r.header("x-api-key"), Some(ANTHROPIC_KEY), "{}", r.path);
        assert_eq!(r.status, 200, "{seen:#?}");
        assert_eq!(r.body["stream"], true);
    }
    assert!(
        requests.iter().all(|r| r.status != 404),
        "unknown calls: {seen:#?}"
    );
    assert_through_the_gateway(
        &env,
        &task,
        &text,
        ANTHROPIC_KEY,
        model.reported_usage(),
        &hunt,
    )
    .await;
}

/// The patch Copilot CLI applies for a GPT model, which it gives the freeform `apply_patch`
/// instead of `create`.
const COPILOT_PATCH: &str = "*** Begin Patch\n*** Add File: /workspace/HELLO.md\n+# Hello\n+\n+Written by Copilot CLI through drydock.\n*** End Patch";

/// The scripted model behind Copilot CLI on the user's OpenAI key (Responses API): HELLO.md
/// with `apply_patch`, the connector's tool, then the answer.
fn copilot_openai_script(c: &openai::Conversation<'_>) -> Vec<Item> {
    if !c.offers("apply_patch") {
        return vec![Item::message("Stand-in summary.")];
    }
    if !c.called("apply_patch") {
        return vec![
            Item::message("I'll create HELLO.md."),
            Item::custom_tool_call("apply_patch", COPILOT_PATCH),
        ];
    }
    if !c.called(COPILOT_ECHO_TOOL) && c.offers(COPILOT_ECHO_TOOL) {
        return vec![Item::function_call(
            COPILOT_ECHO_TOOL,
            json!({ "text": "ping from the model" }),
        )];
    }
    let echoed = c
        .output_of(COPILOT_ECHO_TOOL)
        .map(|o| o.text)
        .unwrap_or_else(|| "(no echo tool)".to_owned());
    vec![Item::message(format!(
        "Created HELLO.md. The echo tool answered: {echoed}"
    ))]
}

/// Copilot CLI, as built in, on the user's own OpenAI key (`COPILOT_PROVIDER_TYPE=openai`, the
/// Responses API) under the `gateway` policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copilot_cli_on_its_own_openai_key_works_through_the_model_gateway() {
    let hunt = KeyHunt::new(OPENAI_KEY);
    let seen_by_script = hunt.clone();
    let model = OpenAiStandIn::start(OPENAI_KEY, move |c| {
        seen_by_script.now();
        copilot_openai_script(c)
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
        seen,
        ..
    } = env
        .run_hello("copilot", "gpt-5.5", COPILOT_HELLO, || model.requests())
        .await;
    env.assert_final_message(&task, ANSWER).await;
    let turns = model.response_requests();
    assert!(turns.len() >= 3, "{seen:#?}");
    for r in &turns {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {OPENAI_KEY}").as_str())
        );
        assert_eq!(r.status, 200, "{seen:#?}");
        assert_eq!(r.body["model"], "gpt-5.5");
        assert_eq!(r.body["stream"], true);
    }
    assert!(
        requests.iter().all(|r| r.status != 404),
        "unknown calls: {seen:#?}"
    );
    assert_through_the_gateway(
        &env,
        &task,
        &text,
        OPENAI_KEY,
        model.reported_usage(),
        &hunt,
    )
    .await;
}
