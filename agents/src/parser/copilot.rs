//! Copilot CLI `--output-format json`: JSONL session events (`assistant.message`,
//! `tool.execution_start|complete`, `result`, and many ephemeral progress events).

use serde_json::Value;

use super::{
    AgentEvent, EventKind, Parsed, Verdict, count, one_line, result_text, seconds, str_field,
    tool_line, u64_field,
};

#[derive(Debug, Default)]
pub(crate) struct CopilotParser;

impl CopilotParser {
    pub(crate) fn event(&mut self, v: &Value) -> Parsed {
        let mut out = Parsed::default();
        let data = v.get("data").unwrap_or(&Value::Null);
        let kind = str_field(v, "type").unwrap_or_default();
        match kind {
            "assistant.message" => {
                // Tool requests are shown when they run (tool.execution_start).
                if let Some(text) = str_field(data, "content").filter(|t| !t.trim().is_empty()) {
                    out.events
                        .push(AgentEvent::new(EventKind::AgentMessage, text.trim()));
                    out.final_message = Some(text.to_owned());
                }
            }
            "tool.execution_start" => {
                let name = str_field(data, "toolName").unwrap_or("tool").to_owned();
                let args = data.get("arguments").cloned().unwrap_or(Value::Null);
                out.events.push(
                    AgentEvent::new(EventKind::ToolCall, tool_line(&name, &args))
                        .with("tool", name)
                        .with("input", args),
                );
            }
            "tool.execution_complete" => {
                let failed = data.get("success").and_then(Value::as_bool) == Some(false);
                let body = data
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .or_else(|| str_field(data, "error"))
                    .or_else(|| data.pointer("/result/content").and_then(Value::as_str))
                    .unwrap_or_default();
                let head = if failed { "failed" } else { "done" };
                let text = if body.trim().is_empty() {
                    head.to_owned()
                } else {
                    format!("{head}: {}", result_text(body))
                };
                out.events
                    .push(AgentEvent::new(EventKind::ToolResult, text).with("is_error", failed));
            }
            "session.mcp_servers_loaded" => {
                if let Some(servers) = data.get("servers").and_then(Value::as_array)
                    && !servers.is_empty()
                {
                    let list: Vec<String> = servers
                        .iter()
                        .map(|s| {
                            let name = str_field(s, "name").unwrap_or("?");
                            match str_field(s, "status") {
                                Some(status) => {
                                    format!("{} ({})", one_line(name, 60), one_line(status, 30))
                                }
                                None => one_line(name, 60),
                            }
                        })
                        .collect();
                    out.events.push(
                        AgentEvent::new(
                            EventKind::Text,
                            format!("MCP servers: {}", list.join(", ")),
                        )
                        .with("mcp_servers", Value::Array(servers.clone())),
                    );
                }
            }
            "result" => {
                let code = v.get("exitCode").and_then(Value::as_i64);
                let failed = code.is_some_and(|c| c != 0);
                let status = if failed { "Failed" } else { "Done" };
                out.verdict = Some(if failed {
                    Verdict::Failed(format!("the CLI reported exit code {}", code.unwrap_or(-1)))
                } else {
                    Verdict::Succeeded
                });
                let mut parts = Vec::new();
                let usage = v.get("usage").unwrap_or(&Value::Null);
                if let Some(ms) = u64_field(usage, "sessionDurationMs") {
                    parts.push(seconds(ms));
                }
                if let Some(n) = u64_field(usage, "premiumRequests") {
                    parts.push(count(n, "premium request"));
                }
                let mut event = AgentEvent::new(EventKind::Result, status).with("is_error", failed);
                if !parts.is_empty() {
                    event.text = format!("{status}: {}", parts.join(", "));
                }
                if usage.is_object() {
                    event = event.with("usage", usage.clone());
                }
                out.events.push(event);
            }
            k if k.ends_with("error") => {
                let message = str_field(data, "message")
                    .or_else(|| str_field(v, "message"))
                    .unwrap_or("error");
                out.events
                    .push(AgentEvent::new(EventKind::Error, one_line(message, 500)));
            }
            // Progress, deltas and bookkeeping: the complete events follow.
            k if v.get("ephemeral").and_then(Value::as_bool) == Some(true)
                || k.starts_with("session.")
                || k.starts_with("assistant.")
                || k.starts_with("user.")
                || k.starts_with("model.")
                || k.starts_with("tool.") => {}
            _ => out.events.push(AgentEvent::new(
                EventKind::Text,
                one_line(&v.to_string(), 500),
            )),
        }
        out
    }
}
