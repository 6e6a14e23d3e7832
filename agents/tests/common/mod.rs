//! Scenarios shared by the golden tests and the `dump_plan` example.
#![allow(dead_code)]

use std::collections::BTreeMap;

use drydock_agents::{LaunchRequest, McpServer};

/// The scenarios every agent's plan is pinned for.
pub const SCENARIOS: [&str; 4] = ["plain", "connectors", "hostile", "gateway-resume"];

/// A key value per provider, recognisable in goldens.
pub fn key_for(provider: &str) -> String {
    format!("test-{provider}-key-0123456789")
}

/// The request of a scenario for an agent.
pub fn request(agent: &str, scenario: &str) -> LaunchRequest {
    let mut request = LaunchRequest {
        agent: agent.to_owned(),
        prompt: "Fix the failing test in src/lib.rs".to_owned(),
        ..LaunchRequest::default()
    };
    for provider in ["anthropic", "openai", "gemini", "cursor", "copilot"] {
        request.keys.insert(provider.to_owned(), key_for(provider));
    }
    match scenario {
        "plain" => {}
        "connectors" => {
            request.mcp_servers = vec![
                McpServer::stdio(
                    "files",
                    "npx",
                    vec![
                        "-y".into(),
                        "@modelcontextprotocol/server-filesystem".into(),
                        "/workspace".into(),
                    ],
                )
                .with_env("API_TOKEN", "stdio-secret-123")
                .with_env("LOG_LEVEL", "verbose-7"),
                McpServer::http("docs", "https://mcp.example.com/mcp")
                    .with_header("Authorization", "Bearer http-secret-456")
                    .with_header("X-Team", "team-blue-7"),
            ];
        }
        "hostile" => {
            request.prompt = hostile_text();
            request.mcp_servers = vec![
                McpServer::stdio(
                    "my \"server\"\n$(whoami)",
                    "/usr/bin/env",
                    vec![
                        "--flag=\"quoted\" 'single'".into(),
                        "line1\nline2".into(),
                        "$(rm -rf /)".into(),
                        "`id`".into(),
                        "${HOME}".into(),
                        "$HOME".into(),
                        "${HOME:-fallback}".into(),
                        "{env:HOME}".into(),
                        "{file:/etc/passwd}".into(),
                        "\\$ESCAPED \\\\ back".into(),
                        "naïve ☃ 日本語".into(),
                    ],
                )
                .with_env("TOKEN", "s3cr3t\"'$(id)`x`{env:PATH}${PATH}$PATH\nline2")
                .with_env("PLAIN", "ünïcødé ☃"),
                McpServer::http(
                    "ドキュメント `docs`",
                    "https://mcp.example.com/mcp?x=$(id)&y=${HOME}&z={env:HOME}",
                )
                .with_header("Authorization", "Bearer $(cat /etc/passwd)`id`${HOME}$HOME")
                .with_header("X-Quote", "\"'\\ {file:/etc/shadow} ~"),
                // Same name after sanitising: must be deduplicated.
                McpServer::stdio("my-server-whoami", "true", vec![]),
            ];
        }
        "gateway-resume" => {
            request.resume = true;
            request.base_urls = BTreeMap::from([
                (
                    "anthropic".to_owned(),
                    "https://gateway.example.com/anthropic".to_owned(),
                ),
                (
                    "openai".to_owned(),
                    "https://gateway.example.com/openai/v1".to_owned(),
                ),
                (
                    "gemini".to_owned(),
                    "https://gateway.example.com/gemini".to_owned(),
                ),
            ]);
            request.mcp_servers = vec![McpServer::stdio("echo", "mcp-echo", vec![])];
        }
        other => panic!("unknown scenario {other}"),
    }
    request
}

/// Quotes, newlines, unicode, `$()`, backticks, a leading `--`, placeholders.
pub fn hostile_text() -> String {
    "--help me: fix \"this\" & 'that';\n$(rm -rf /) `id` ${HOME} $HOME {model} {prompt} {env:HOME} ☃ 日本語 \\n"
        .to_owned()
}

/// The hostile scenario pointed at a recorder program and a local HTTP
/// server, for checking a real CLI (see `examples/dump_plan.rs`).
pub fn verify_request(agent: &str, recorder: &str, url: &str) -> LaunchRequest {
    let mut request = request(agent, "hostile");
    let origin = url.trim_end_matches("/mcp");
    for provider in ["anthropic", "openai", "gemini"] {
        request
            .base_urls
            .insert(provider.to_owned(), format!("{origin}/{provider}"));
    }
    for server in &mut request.mcp_servers {
        match &mut server.transport {
            drydock_agents::McpTransport::Stdio { command, .. } => *command = recorder.to_owned(),
            drydock_agents::McpTransport::Http { url: u, .. } => {
                *u = format!("{url}?x=$(id)&y=${{HOME}}&z={{env:HOME}}")
            }
        }
    }
    request
}
