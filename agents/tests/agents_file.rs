//! The operator's agents file (`DRYDOCK_AGENTS_FILE`) and launch-request errors.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use drydock_agents::{AgentError, AgentRegistry, LaunchRequest, McpFormat, McpServer, ParserKind};

const VALID: &str = r#"
# Cheaper default for Claude Code, through the team's gateway.
[[agents]]
id = "claude"
models = [
  { id = "haiku", name = "Claude Haiku" },
  { id = "sonnet", name = "Claude Sonnet" },
]
base_urls = { anthropic = "https://llm-gateway.internal/anthropic" }

# A CLI drydock does not know.
[[agents]]
id = "aider"
name = "Aider"
argv = ["aider", "--yes-always", "--no-auto-commits", "--model", "{model}", "--message", "{prompt}"]
keys = [{ provider = "openrouter", env = ["OPENROUTER_API_KEY"] }]
models = [{ id = "openrouter/anthropic/claude-sonnet-4.5", name = "Sonnet via OpenRouter" }]
mcp = { format = "mcp-servers-json", path = "/home/agent/.aider/mcp.json", http = false }

[[agents]]
id = "no-mcp"
name = "No MCP"
argv = ["tool", "{prompt}"]
keys = [{ provider = "openai", env = ["OPENAI_API_KEY"] }]
models = [{ id = "m", name = "M" }]
"#;

fn request(agent: &str, provider: &str) -> LaunchRequest {
    let mut request = LaunchRequest {
        agent: agent.into(),
        prompt: "do it".into(),
        ..LaunchRequest::default()
    };
    request
        .keys
        .insert(provider.into(), format!("{provider}-secret"));
    request
}

#[test]
fn valid_file_adds_an_agent_and_overrides_a_builtin() {
    let registry = AgentRegistry::with_agents_file(VALID).unwrap();
    let ids: Vec<_> = registry.agents().iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "claude", "codex", "gemini", "cursor", "copilot", "opencode", "aider", "no-mcp"
        ]
    );

    let claude = registry.get("claude").unwrap();
    assert_eq!(claude.default_model().unwrap().id, "haiku");
    assert_eq!(claude.models.len(), 2);
    // Untouched fields keep the built-in values.
    assert_eq!(claude.name, "Claude Code");
    assert_eq!(claude.parser, ParserKind::ClaudeStreamJson);
    let plan = registry.plan(&request("claude", "anthropic")).unwrap();
    assert!(plan.argv.windows(2).any(|w| w == ["--model", "haiku"]));
    // The agent's own base URL wins over the server-wide one.
    let mut req = request("claude", "anthropic");
    req.base_urls
        .insert("anthropic".into(), "https://server-wide.example".into());
    let plan = registry.plan(&req).unwrap();
    assert_eq!(
        plan.env["ANTHROPIC_BASE_URL"],
        "https://llm-gateway.internal/anthropic"
    );

    let aider = registry.get("aider").unwrap();
    assert_eq!(aider.parser, ParserKind::Text);
    assert_eq!(
        aider.mcp.as_ref().unwrap().format,
        McpFormat::McpServersJson
    );
    let mut req = request("aider", "openrouter");
    req.mcp_servers = vec![McpServer::stdio("fs", "mcp-fs", vec!["/workspace".into()])];
    let plan = registry.plan(&req).unwrap();
    assert_eq!(plan.env["OPENROUTER_API_KEY"], "openrouter-secret");
    assert_eq!(plan.secrets(), ["openrouter-secret"]);
    assert_eq!(plan.argv.last().unwrap(), "do it");
    assert_eq!(plan.files[0].path, "/home/agent/.aider/mcp.json");
    let written: serde_json::Value = serde_json::from_slice(&plan.files[0].contents).unwrap();
    assert_eq!(written["mcpServers"]["fs"]["args"][0], "/workspace");

    // HTTP connectors are refused where the agent cannot take them, not dropped.
    req.mcp_servers
        .push(McpServer::http("remote", "https://mcp.example.com"));
    let err = registry.plan(&req).unwrap_err();
    assert!(
        matches!(&err, AgentError::UnsupportedConnector { server, .. } if server == "remote"),
        "{err}"
    );
    let mut req = request("no-mcp", "openai");
    req.mcp_servers = vec![McpServer::stdio("fs", "mcp-fs", vec![])];
    let err = registry.plan(&req).unwrap_err();
    assert_eq!(
        err.to_string(),
        "agent `no-mcp` cannot use connector `fs`: this agent has no MCP support"
    );
}

/// The line an agents-file error points at.
fn error_line(text: &str) -> (usize, String) {
    match AgentRegistry::with_agents_file(text) {
        Err(AgentError::AgentsFile { line, message, .. }) => (line, message),
        other => panic!("expected an agents-file error, got {other:?}"),
    }
}

#[test]
fn bad_files_name_the_line() {
    // TOML syntax.
    let (line, _) = error_line("[[agents]]\nid = \"x\"\nname = \"unterminated\n");
    assert_eq!(line, 3);
    // Unknown field (a typo must not be silently ignored).
    let (line, message) = error_line("[[agents]]\nid = \"claude\"\n\nmodles = []\n");
    assert_eq!(line, 4);
    assert!(message.contains("modles"), "{message}");
    // Wrong type.
    let (line, _) = error_line("[[agents]]\nid = \"claude\"\nargv = \"claude -p\"\n");
    assert_eq!(line, 3);
    // Unknown parser.
    let (line, message) = error_line("[[agents]]\nid = \"claude\"\nparser = \"xml\"\n");
    assert_eq!(line, 3);
    assert!(message.contains("xml"), "{message}");
    // A new agent without required fields: the line of its id.
    let (line, message) = error_line("# mine\n\n[[agents]]\nid = \"mine\"\nname = \"Mine\"\n");
    assert_eq!(line, 4);
    assert!(message.contains("missing field `keys`"), "{message}");
    // Semantic checks also point at the agent.
    let text =
        "[[agents]]\nid = \"claude\"\n\n[[agents]]\nid = \"codex\"\nargv = [\"codex\", \"exec\"]\n";
    let (line, message) = error_line(text);
    assert_eq!(line, 5);
    assert!(message.contains("{prompt}"), "{message}");
    let text = "[[agents]]\nid = \"opencode\"\nmodels = [{ id = \"x/y\", name = \"Y\", provider = \"mistral\" }]\n";
    let (line, message) = error_line(text);
    assert_eq!(line, 2);
    assert!(message.contains("mistral"), "{message}");
    let err =
        AgentRegistry::with_agents_file("[[agents]]\nid = \"Bad Id\"\nname = \"x\"\n").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("agents file, line 2, column 6:"),
        "{err}"
    );
}

#[test]
fn request_errors_are_clear() {
    let registry = AgentRegistry::builtin().unwrap();
    let err = registry.plan(&request("nope", "openai")).unwrap_err();
    assert_eq!(err.to_string(), "unknown agent `nope`");

    let mut req = request("codex", "openai");
    req.model = Some("gpt-1".into());
    let err = registry.plan(&req).unwrap_err();
    assert_eq!(
        err.to_string(),
        "agent `codex` does not offer model `gpt-1`"
    );

    let opencode = registry.get("opencode").unwrap();
    assert_eq!(opencode.required_provider(None).unwrap(), "anthropic");
    assert_eq!(
        opencode.required_provider(Some("openai/gpt-5.5")).unwrap(),
        "openai"
    );
    assert!(opencode.required_provider(Some("nope")).is_err());

    let err = registry.plan(&request("codex", "anthropic")).unwrap_err();
    assert_eq!(err.to_string(), "agent `codex` needs a `openai` API key");

    // opencode needs the key of the chosen model's provider.
    let mut req = request("opencode", "anthropic");
    req.model = Some("google/gemini-2.5-pro".into());
    let err = registry.plan(&req).unwrap_err();
    assert!(matches!(err, AgentError::MissingKey { provider, .. } if provider == "gemini"));

    let mut req = request("claude", "anthropic");
    req.prompt = "a\0b".into();
    assert!(matches!(
        registry.plan(&req),
        Err(AgentError::InvalidRequest(_))
    ));

    let mut req = request("claude", "anthropic");
    req.mcp_servers = vec![McpServer::stdio("x", " ", vec![])];
    assert!(matches!(
        registry.plan(&req),
        Err(AgentError::InvalidConnector { .. })
    ));
}

#[test]
fn follow_ups_resume_where_the_cli_can() {
    let registry = AgentRegistry::with_agents_file(VALID).unwrap();
    let mut req = request("claude", "anthropic");
    req.resume = true;
    let plan = registry.plan(&req).unwrap();
    assert!(plan.resumes);
    assert_eq!(plan.argv[..2], ["claude", "--continue"]);
    // aider has no resume arguments: the follow-up starts afresh, and says so.
    let mut req = request("aider", "openrouter");
    req.resume = true;
    let plan = registry.plan(&req).unwrap();
    assert!(!plan.resumes);
}

#[test]
fn an_env_override_adds_to_the_builtin_env_and_an_empty_value_removes() {
    let builtin = AgentRegistry::builtin().unwrap();
    let before = builtin.get("claude").unwrap().env.clone();
    assert!(before.contains_key("DISABLE_AUTOUPDATER"));
    let registry = AgentRegistry::with_agents_file(
        "[[agents]]\nid = \"claude\"\nenv = { HTTPS_PROXY = \"http://127.0.0.1:3128\", DISABLE_AUTOUPDATER = \"\" }\n",
    )
    .unwrap();
    let env = &registry.get("claude").unwrap().env;
    assert_eq!(
        env.get("HTTPS_PROXY").map(String::as_str),
        Some("http://127.0.0.1:3128")
    );
    assert!(
        !env.contains_key("DISABLE_AUTOUPDATER"),
        "an empty value removes a variable"
    );
    for (name, value) in before.iter().filter(|(n, _)| *n != "DISABLE_AUTOUPDATER") {
        assert_eq!(env.get(name), Some(value), "{name} kept");
    }
}

#[test]
fn debug_output_of_requests_and_plans_never_shows_a_secret() {
    use std::collections::BTreeMap;
    let registry = AgentRegistry::builtin().unwrap();
    let request = LaunchRequest {
        agent: "claude".into(),
        prompt: "fix it".into(),
        keys: BTreeMap::from([(
            "anthropic".to_owned(),
            "sk-ant-debug-secret-0001".to_owned(),
        )]),
        mcp_servers: vec![
            McpServer::stdio("files", "npx", vec![]).with_env("TOKEN", "stdio-debug-secret-0002"),
            McpServer::http("docs", "https://mcp.example.com/mcp")
                .with_header("Authorization", "Bearer http-debug-secret-0003"),
        ],
        ..Default::default()
    };
    let plan = registry.plan(&request).unwrap();
    let shown = format!("{request:?}\n{plan:?}\n{:?}", plan.files);
    for secret in [
        "sk-ant-debug-secret-0001",
        "stdio-debug-secret-0002",
        "http-debug-secret-0003",
    ] {
        assert!(
            !shown.contains(secret),
            "{secret} in Debug output:\n{shown}"
        );
    }
    assert!(
        shown.contains("anthropic") && shown.contains("TOKEN") && shown.contains("Authorization"),
        "names stay visible"
    );
}

#[test]
fn copilot_uses_its_own_key_mode_with_an_anthropic_or_openai_key() {
    let registry = AgentRegistry::builtin().unwrap();
    let copilot = registry.get("copilot").unwrap();
    assert!(!copilot.takes_base_url("copilot"), "GitHub's service only");
    assert!(copilot.takes_base_url("anthropic") && copilot.takes_base_url("openai"));

    // Straight to the provider: its own base URL, the key, the provider type, offline.
    let mut req = request("copilot", "anthropic");
    req.model = Some("claude-sonnet-4-5".into());
    let plan = registry.plan(&req).unwrap();
    let env = |k: &str| plan.env.get(k).map(String::as_str);
    assert_eq!(env("COPILOT_PROVIDER_API_KEY"), Some("anthropic-secret"));
    assert_eq!(env("COPILOT_PROVIDER_TYPE"), Some("anthropic"));
    assert_eq!(
        env("COPILOT_PROVIDER_BASE_URL"),
        Some("https://api.anthropic.com")
    );
    assert_eq!(env("COPILOT_OFFLINE"), Some("true"));
    assert_eq!(env("COPILOT_GITHUB_TOKEN"), None);

    // Behind a gateway: the gateway's URL replaces the provider's.
    req.base_urls.insert(
        "anthropic".into(),
        "http://127.0.0.1:3128/gateway/anthropic".into(),
    );
    let plan = registry.plan(&req).unwrap();
    assert_eq!(
        plan.env
            .get("COPILOT_PROVIDER_BASE_URL")
            .map(String::as_str),
        Some("http://127.0.0.1:3128/gateway/anthropic")
    );

    let mut req = request("copilot", "openai");
    req.model = Some("gpt-5.5".into());
    let plan = registry.plan(&req).unwrap();
    assert_eq!(
        plan.env
            .get("COPILOT_PROVIDER_WIRE_API")
            .map(String::as_str),
        Some("responses")
    );
    assert_eq!(
        plan.env
            .get("COPILOT_PROVIDER_BASE_URL")
            .map(String::as_str),
        Some("https://api.openai.com/v1")
    );

    // A GitHub-token model stays on GitHub's service.
    let plan = registry.plan(&request("copilot", "copilot")).unwrap();
    assert!(plan.env.contains_key("COPILOT_GITHUB_TOKEN"));
    assert!(!plan.env.contains_key("COPILOT_PROVIDER_BASE_URL"));
}

#[test]
fn a_key_var_with_a_bad_name_is_refused() {
    let err = AgentRegistry::with_agents_file(
        r#"
[[agents]]
id = "x"
name = "X"
argv = ["x", "{prompt}"]
keys = [{ provider = "p", env = ["P_KEY"], vars = { "BAD NAME" = "1" } }]
models = [{ id = "m", name = "M" }]
"#,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("`BAD NAME` is not a valid"),
        "{err}"
    );
}
