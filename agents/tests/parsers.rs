//! Output parsers on samples shaped like each CLI's real output (and some
//! captured from the real CLIs against a stand-in API), plus a property test
//! that no input makes a parser panic.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use drydock_agents::{AgentEvent, EventKind, OutputParser, ParserKind, Verdict};
use proptest::prelude::*;
use serde_json::json;

fn sample(name: &str) -> String {
    let path = format!("{}/tests/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).unwrap()
}

/// Feeds a whole output line by line, then finishes.
fn run(kind: ParserKind, output: &str) -> (Vec<AgentEvent>, Option<String>) {
    let mut parser = OutputParser::new(kind);
    let mut events = Vec::new();
    for line in output.lines() {
        events.extend(parser.parse_line(line));
    }
    events.extend(parser.finish());
    let final_message = parser.final_message().map(str::to_owned);
    (events, final_message)
}

fn lines(events: &[AgentEvent]) -> Vec<(EventKind, &str)> {
    events.iter().map(|e| (e.kind, e.text.as_str())).collect()
}

use EventKind::{AgentMessage, Error, Result as Done, Text, ToolCall, ToolResult};

#[test]
fn claude_stream_json() {
    let (events, final_message) = run(
        ParserKind::ClaudeStreamJson,
        &sample("claude-success.jsonl"),
    );
    assert_eq!(
        lines(&events),
        [
            (
                Text,
                "Session started: model claude-sonnet-5, MCP servers: docs (connected), files (failed)"
            ),
            (AgentMessage, "I'll look at the failing test first."),
            (ToolCall, "Read /workspace/src/lib.rs"),
            (
                ToolResult,
                "Read: 1 pub fn add(a: i32, b: i32) -> i32 {⏎     2     a - b⏎     3 }"
            ),
            (ToolCall, "Edit /workspace/src/lib.rs"),
            (
                ToolResult,
                "Edit: The file /workspace/src/lib.rs has been updated."
            ),
            (ToolCall, "Bash cargo test"),
            (ToolResult, "Bash: error: could not find `Cargo.toml`"),
            (ToolCall, "mcp__docs__search rust add overflow"),
            (ToolResult, "mcp__docs__search: No results"),
            (
                AgentMessage,
                "Fixed `add` in src/lib.rs: it subtracted instead of adding."
            ),
            (
                Done,
                "Done: 12.3s, 5 turns, 1150 input / 200 output tokens, $0.0123"
            ),
        ]
    );
    assert_eq!(events[7].fields["is_error"], json!(true));
    assert_eq!(events[11].fields["total_cost_usd"], json!(0.0123));
    assert_eq!(
        final_message.as_deref(),
        Some("Fixed `add` in src/lib.rs: it subtracted instead of adding.")
    );
}

#[test]
fn claude_captured_api_error() {
    let (events, _) = run(
        ParserKind::ClaudeStreamJson,
        &sample("captured-claude-api-error.jsonl"),
    );
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [Text, AgentMessage, Error, Done]);
    assert!(
        events[0].text.contains("docs (failed)"),
        "{}",
        events[0].text
    );
    assert_eq!(events[2].text, "API Error: 400 recorder");
    assert!(events[3].text.starts_with("Failed"), "{}", events[3].text);
}

#[test]
fn cursor_stream_json() {
    let (events, final_message) = run(
        ParserKind::CursorStreamJson,
        &sample("cursor-success.jsonl"),
    );
    assert_eq!(
        lines(&events),
        [
            (Text, "Session started: model Claude 4.5 Sonnet"),
            (AgentMessage, "Reading the code."),
            (ToolCall, "Read src/lib.rs"),
            (
                ToolResult,
                "Read: pub fn add(a: i32, b: i32) -> i32 { a - b }"
            ),
            (ToolCall, "Write src/lib.rs"),
            (ToolResult, "Write: done"),
            (ToolCall, "Shell cargo test"),
            (ToolResult, "Shell: command not found: cargo"),
            (ToolCall, "docs-search add"),
            (AgentMessage, "Fixed add()."),
            (Done, "Done: 5.2s"),
        ]
    );
    assert_eq!(events[7].fields["is_error"], json!(true));
    assert_eq!(
        final_message.as_deref(),
        Some("Reading the code.Fixed add().")
    );
}

#[test]
fn codex_json() {
    let (events, final_message) = run(ParserKind::CodexJson, &sample("codex-success.jsonl"));
    assert_eq!(
        lines(&events),
        [
            (ToolCall, "Run bash -lc 'cargo test'"),
            (ToolResult, "exit 101: test add ... FAILED"),
            (
                ToolCall,
                "Edit /workspace/src/lib.rs, /workspace/tests/add.rs (new)"
            ),
            (ToolCall, "docs.search add"),
            (ToolResult, "docs.search: no results"),
            (Text, "Plan: 1/2 steps done"),
            (AgentMessage, "Fixed `add` and added a test."),
            (
                Done,
                "Turn done: 24763 input (24448 cached) / 122 output tokens"
            ),
        ]
    );
    assert_eq!(events[1].fields["is_error"], json!(true));
    assert_eq!(
        final_message.as_deref(),
        Some("Fixed `add` and added a test.")
    );
}

#[test]
fn codex_captured_api_error() {
    let (events, final_message) = run(
        ParserKind::CodexJson,
        &sample("captured-codex-api-error.jsonl"),
    );
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [Text, Error, Error, Done]);
    assert!(events[0].text.starts_with("warning: Model metadata"));
    assert!(events[3].text.starts_with("Failed"));
    assert_eq!(final_message, None);
}

#[test]
fn codex_captured_tool_run() {
    // Real `codex exec --json` output against a scripted Responses API.
    let (events, final_message) = run(
        ParserKind::CodexJson,
        &sample("captured-codex-tool-run.jsonl"),
    );
    assert_eq!(
        lines(&events),
        [
            (
                Text,
                "warning: Model metadata for `gpt-5.6` not found. Defaulting to fallback metadata; this can degrade performance and cause issues."
            ),
            (ToolCall, "Run /bin/bash -lc 'echo hi > hello.txt'"),
            (ToolResult, "exit 0"),
            (AgentMessage, "Created hello.txt with `hi`."),
            (Done, "Turn done: 200 input (80 cached) / 40 output tokens"),
        ]
    );
    assert_eq!(
        final_message.as_deref(),
        Some("Created hello.txt with `hi`.")
    );
}

#[test]
fn gemini_stream_json() {
    let (events, final_message) = run(
        ParserKind::GeminiStreamJson,
        &sample("gemini-success.jsonl"),
    );
    assert_eq!(
        lines(&events),
        [
            (Text, "Session started: model gemini-2.5-pro"),
            (AgentMessage, "Let me read the file."),
            (ToolCall, "read_file /workspace/src/lib.rs"),
            (ToolResult, "read_file: done"),
            (ToolCall, "run_shell_command cargo test"),
            (
                ToolResult,
                "run_shell_command: Command exited with code 101"
            ),
            (Error, "Loop detected, stopping execution"),
            (AgentMessage, "Fixed the addition."),
            (
                Done,
                "Done: 6.0s, 2 tool calls, 1200 input / 300 output tokens"
            ),
        ]
    );
    assert_eq!(final_message.as_deref(), Some("Fixed the addition."));
}

#[test]
fn gemini_captured_tool_run() {
    // Real `gemini -o stream-json` output against a scripted Gemini API.
    let (events, final_message) = run(
        ParserKind::GeminiStreamJson,
        &sample("captured-gemini-tool-run.jsonl"),
    );
    assert_eq!(
        lines(&events),
        [
            (Text, "Session started: model gemini-2.5-pro"),
            (ToolCall, "run_shell_command echo hi > hello.txt"),
            (ToolResult, "run_shell_command: done"),
            (AgentMessage, "Created hello.txt with `hi`."),
            (
                Done,
                "Done: 0.6s, 1 tool call, 200 input / 40 output tokens"
            ),
        ]
    );
    assert_eq!(
        final_message.as_deref(),
        Some("Created hello.txt with `hi`.")
    );
}

#[test]
fn gemini_chunks_are_flushed_at_the_end() {
    let mut parser = OutputParser::new(ParserKind::GeminiStreamJson);
    let chunk = |c: &str| {
        json!({"type": "message", "role": "assistant", "content": c, "delta": true}).to_string()
    };
    assert!(parser.parse_line(&chunk("Hel")).is_empty());
    assert!(parser.parse_line(&chunk("lo")).is_empty());
    let events = parser.finish();
    assert_eq!(lines(&events), [(AgentMessage, "Hello")]);
    assert_eq!(parser.final_message(), Some("Hello"));
}

#[test]
fn gemini_captured_api_error_and_json_output() {
    let (events, _) = run(
        ParserKind::GeminiStreamJson,
        &sample("captured-gemini-api-error.jsonl"),
    );
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [Text, Error, Done]);
    assert!(events[1].text.contains("recorder"));
    // `-o json` printed on one line.
    let line = json!({"response": "All done.", "stats": {}}).to_string();
    let (events, final_message) = run(ParserKind::GeminiStreamJson, &line);
    assert_eq!(
        lines(&events),
        [(AgentMessage, "All done."), (Done, "Done")]
    );
    assert_eq!(final_message.as_deref(), Some("All done."));
}

#[test]
fn opencode_json() {
    let (events, final_message) = run(ParserKind::OpencodeJson, &sample("opencode-success.jsonl"));
    assert_eq!(
        lines(&events),
        [
            (AgentMessage, "Looking at src/lib.rs."),
            (ToolCall, "edit /workspace/src/lib.rs"),
            (ToolResult, "edit: src/lib.rs"),
            (ToolCall, "bash cargo test"),
            (ToolResult, "bash: bash: cargo: command not found"),
            (AgentMessage, "Fixed the addition."),
            (
                Done,
                "Done: 2 steps, 1700 input / 160 output tokens, $0.0120"
            ),
        ]
    );
    assert_eq!(final_message.as_deref(), Some("Fixed the addition."));
    let (events, _) = run(
        ParserKind::OpencodeJson,
        &sample("captured-opencode-api-error.jsonl"),
    );
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, Error);
    assert!(
        events[0].text.starts_with("Bad Request"),
        "{}",
        events[0].text
    );
    assert!(events[1].text.starts_with("Failed"));
}

/// Real output: the CLIs driven by a scripted stand-in for the Anthropic API
/// (one Bash tool call, then an answer).
#[test]
fn captured_tool_runs() {
    let (events, final_message) = run(
        ParserKind::ClaudeStreamJson,
        &sample("captured-claude-tool-run.jsonl"),
    );
    let shown: Vec<(EventKind, &str)> = lines(&events)
        .into_iter()
        .filter(|(k, _)| *k != Text)
        .collect();
    assert_eq!(
        shown,
        [
            (ToolCall, "Bash echo hi > hello.txt"),
            (ToolResult, "Bash: (Bash completed with no output)"),
            (AgentMessage, "Created hello.txt with `hi`."),
            (
                Done,
                "Done: 0.4s, 2 turns, 200 input / 40 output tokens, $0.0018"
            ),
        ]
    );
    assert_eq!(
        final_message.as_deref(),
        Some("Created hello.txt with `hi`.")
    );

    let (events, final_message) = run(
        ParserKind::OpencodeJson,
        &sample("captured-opencode-tool-run.jsonl"),
    );
    assert_eq!(
        lines(&events)[..4],
        [
            (ToolCall, "bash echo hi > hello.txt"),
            (ToolResult, "bash: (no output)"),
            (AgentMessage, "Created hello.txt with `hi`."),
            (Done, "Done: 2 steps, 200 input / 40 output tokens, $0.0012"),
        ]
    );
    assert_eq!(
        final_message.as_deref(),
        Some("Created hello.txt with `hi`.")
    );

    let (events, final_message) = run(
        ParserKind::CopilotJson,
        &sample("captured-copilot-tool-run.jsonl"),
    );
    assert_eq!(
        lines(&events),
        [
            (ToolCall, "bash echo hi > hello.txt"),
            (ToolResult, "done: <shellId: 0 completed with exit code 0>"),
            (AgentMessage, "Created hello.txt with `hi`."),
            (Done, "Done: 0.4s, 0 premium requests"),
        ]
    );
    assert_eq!(
        final_message.as_deref(),
        Some("Created hello.txt with `hi`.")
    );
}

#[test]
fn plain_text() {
    let (events, final_message) = run(ParserKind::Text, &sample("copilot-text.txt"));
    assert_eq!(
        lines(&events),
        [
            (AgentMessage, "● Reading src/lib.rs"),
            (AgentMessage, "✓ Edit src/lib.rs"),
            (AgentMessage, "Fixed the addition in src/lib.rs."),
        ]
    );
    assert_eq!(
        final_message.as_deref(),
        Some("● Reading src/lib.rs\n✓ Edit src/lib.rs\n\nFixed the addition in src/lib.rs.")
    );
}

#[test]
fn unknown_and_malformed_lines_pass_through_as_text() {
    for kind in all_kinds() {
        if kind == ParserKind::Text {
            continue;
        }
        let mut parser = OutputParser::new(kind);
        for line in [
            "npm WARN deprecated",
            "{broken json",
            "[1, 2, 3]",
            "\u{1b}[31mred\u{1b}[0m",
        ] {
            let events = parser.parse_line(line);
            assert_eq!(events.len(), 1, "{kind:?} {line}");
            assert_eq!(events[0].kind, Text);
        }
        assert_eq!(parser.parse_line("\u{1b}[31mred\u{1b}[0m")[0].text, "red");
        let unknown = parser.parse_line(r#"{"type":"brand_new_event","x":1}"#);
        assert_eq!(unknown.len(), 1, "{kind:?}");
        assert_eq!(unknown[0].kind, Text);
        // Known types with the wrong shapes are survived, not trusted.
        for line in [
            r#"{"type":"assistant","message":"not an object"}"#,
            r#"{"type":"result","duration_ms":"soon","usage":[1]}"#,
            r#"{"type":"item.completed","item":{"type":"file_change","changes":"x"}}"#,
            r#"{"type":"tool_use","parameters":null}"#,
            r#"{"type":"tool_call","subtype":"completed","tool_call":{}}"#,
            r#"{"type":"step_finish","part":{"tokens":{"input":-5},"cost":"free"}}"#,
        ] {
            parser.parse_line(line);
        }
        parser.finish();
        assert!(parser.parse_line("   ").is_empty());
    }
}

fn all_kinds() -> [ParserKind; 7] {
    [
        ParserKind::ClaudeStreamJson,
        ParserKind::CursorStreamJson,
        ParserKind::CodexJson,
        ParserKind::CopilotJson,
        ParserKind::GeminiStreamJson,
        ParserKind::OpencodeJson,
        ParserKind::Text,
    ]
}

/// JSON values biased towards the shapes the parsers look into.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,20}".prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "assistant",
            "user",
            "system",
            "init",
            "result",
            "tool_call",
            "started",
            "completed",
            "item.started",
            "item.completed",
            "turn.completed",
            "turn.failed",
            "error",
            "message",
            "tool_use",
            "tool_result",
            "text",
            "step_finish",
            "command_execution",
            "mcp_tool_call",
            "file_change",
            "agent_message",
            "todo_list",
            "tool",
            "function",
            "success",
        ])
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop::sample::select(vec![
            "type",
            "subtype",
            "message",
            "content",
            "text",
            "name",
            "input",
            "id",
            "tool_use_id",
            "is_error",
            "result",
            "usage",
            "item",
            "command",
            "changes",
            "path",
            "kind",
            "exit_code",
            "aggregated_output",
            "server",
            "tool",
            "arguments",
            "error",
            "role",
            "delta",
            "tool_name",
            "tool_id",
            "parameters",
            "status",
            "output",
            "stats",
            "part",
            "state",
            "tokens",
            "cost",
            "tool_call",
            "readToolCall",
            "args",
            "success",
            "mcp_servers",
            "items",
            "completed",
            "duration_ms",
            "total_cost_usd",
            "response",
            "data",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys, inner, 0..6).prop_map(|m| serde_json::Value::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #[test]
    fn no_line_makes_a_parser_panic(lines in prop::collection::vec(".{0,200}", 0..8)) {
        for kind in all_kinds() {
            let mut parser = OutputParser::new(kind);
            for line in &lines {
                parser.parse_line(line);
            }
            parser.finish();
            let _ = parser.final_message();
        }
    }

    #[test]
    fn no_json_shape_makes_a_parser_panic(values in prop::collection::vec(json_value(), 1..8)) {
        for kind in all_kinds() {
            let mut parser = OutputParser::new(kind);
            for value in &values {
                for event in parser.parse_line(&value.to_string()) {
                    prop_assert!(!event.text.contains('\n') || event.kind == AgentMessage || event.kind == Text);
                }
            }
            parser.finish();
        }
    }
}

/// The verdict after feeding `output` whole.
fn verdict_of(kind: ParserKind, output: &str) -> Option<Verdict> {
    let mut parser = OutputParser::new(kind);
    for line in output.lines() {
        parser.parse_line(line);
    }
    parser.finish();
    parser.verdict().cloned()
}

#[test]
fn each_cli_says_whether_its_run_failed_and_the_last_word_counts() {
    let failed = |m: &str| Some(Verdict::Failed(m.to_owned()));
    // Claude Code (and Cursor): the `result` event, by `is_error` or an error subtype.
    assert_eq!(
        verdict_of(
            ParserKind::ClaudeStreamJson,
            r#"{"type":"result","subtype":"success","is_error":true,"result":"API Error: rate limit reached"}"#
        ),
        failed("API Error: rate limit reached")
    );
    assert_eq!(
        verdict_of(
            ParserKind::CursorStreamJson,
            r#"{"type":"result","subtype":"error_max_turns","result":""}"#
        ),
        failed("error_max_turns")
    );
    assert_eq!(
        verdict_of(
            ParserKind::ClaudeStreamJson,
            &sample("claude-success.jsonl")
        ),
        Some(Verdict::Succeeded)
    );
    // Codex: a stream error it recovers from is not the verdict; `turn.failed` is.
    assert_eq!(
        verdict_of(
            ParserKind::CodexJson,
            "{\"type\":\"error\",\"message\":\"Reconnecting... 1/5\"}\n{\"type\":\"turn.completed\",\"usage\":{}}"
        ),
        Some(Verdict::Succeeded)
    );
    assert_eq!(
        verdict_of(
            ParserKind::CodexJson,
            r#"{"type":"turn.failed","error":{"message":"quota exceeded"}}"#
        ),
        failed("quota exceeded")
    );
    assert_eq!(
        verdict_of(
            ParserKind::CodexJson,
            r#"{"type":"error","message":"stream disconnected"}"#
        ),
        failed("stream disconnected")
    );
    // Gemini CLI: the `result` status; a warning-level `error` event is not a failure.
    assert_eq!(
        verdict_of(
            ParserKind::GeminiStreamJson,
            "{\"type\":\"error\",\"severity\":\"warning\",\"message\":\"slow\"}\n{\"type\":\"result\",\"status\":\"success\"}"
        ),
        Some(Verdict::Succeeded)
    );
    assert_eq!(
        verdict_of(
            ParserKind::GeminiStreamJson,
            r#"{"type":"result","status":"error","error":{"message":"API key not valid"}}"#
        ),
        failed("API key not valid")
    );
    assert_eq!(
        verdict_of(
            ParserKind::GeminiStreamJson,
            r#"{"type":"error","severity":"error","message":"model overloaded"}"#
        ),
        failed("model overloaded")
    );
    // opencode: an `error` event.
    assert_eq!(
        verdict_of(
            ParserKind::OpencodeJson,
            r#"{"type":"error","error":{"name":"APIError","data":{"message":"invalid x-api-key"}}}"#
        ),
        failed("invalid x-api-key")
    );
    // Copilot CLI: the `result` event's exit code.
    assert_eq!(
        verdict_of(ParserKind::CopilotJson, r#"{"type":"result","exitCode":1}"#),
        failed("the CLI reported exit code 1")
    );
    // Plain text never gives a verdict: the exit status alone decides.
    assert_eq!(
        verdict_of(ParserKind::Text, "Error: everything failed"),
        None
    );
}

#[test]
fn the_real_clis_captured_output_gives_the_verdict_their_runs_had() {
    for (kind, name) in [
        (ParserKind::ClaudeStreamJson, "claude"),
        (ParserKind::CodexJson, "codex"),
        (ParserKind::GeminiStreamJson, "gemini"),
        (ParserKind::OpencodeJson, "opencode"),
    ] {
        let ok = verdict_of(kind, &sample(&format!("captured-{name}-tool-run.jsonl")));
        assert_eq!(ok, Some(Verdict::Succeeded), "{name} tool run");
        let failed = verdict_of(kind, &sample(&format!("captured-{name}-api-error.jsonl")));
        assert!(
            matches!(failed, Some(Verdict::Failed(ref m)) if !m.is_empty()),
            "{name} API error: {failed:?}"
        );
    }
}
