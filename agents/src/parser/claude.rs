//! Claude Code and Cursor CLI `stream-json`: one JSON object per line with
//! `system`, `assistant`, `user`, `result` (and, for Cursor, `tool_call`) types.

use std::collections::HashMap;

use serde_json::Value;

use super::{
    AgentEvent, EventKind, Parsed, Verdict, count, one_line, result_text, seconds, str_field,
    tool_line, u64_field,
};

#[derive(Debug)]
pub(crate) struct ClaudeParser {
    /// Cursor's dialect (tool calls as `tool_call` events, no cost).
    cursor: bool,
    /// Tool names by call id, so results can say which tool they belong to.
    tools: HashMap<String, String>,
}

impl ClaudeParser {
    pub(crate) fn new(cursor: bool) -> Self {
        Self {
            cursor,
            tools: HashMap::new(),
        }
    }

    pub(crate) fn event(&mut self, v: &Value) -> Parsed {
        let mut out = Parsed::default();
        match str_field(v, "type") {
            Some("system") if str_field(v, "subtype") == Some("init") => {
                out.events.push(init_event(v));
            }
            // The API is failing and the CLI waits before retrying: say so, or the log goes
            // silent for minutes.
            Some("system") if str_field(v, "subtype") == Some("api_retry") => {
                out.events.push(api_retry_event(v));
            }
            Some("assistant") => self.assistant(v, &mut out),
            Some("user") => self.user(v, &mut out),
            Some("tool_call") => self.cursor_tool_call(v, &mut out),
            Some("result") => result_event(v, &mut out),
            // Partial-message chunks, hook events, compaction markers: the
            // complete message follows anyway.
            Some("stream_event" | "system" | "thinking") => {}
            _ => out.events.push(AgentEvent::new(
                EventKind::Text,
                one_line(&v.to_string(), 500),
            )),
        }
        out
    }

    fn assistant(&mut self, v: &Value, out: &mut Parsed) {
        let Some(content) = v.pointer("/message/content") else {
            return;
        };
        let blocks: Vec<&Value> = match content {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        let mut text = String::new();
        for block in blocks {
            match (str_field(block, "type"), block) {
                (_, Value::String(s)) => text.push_str(s),
                (Some("text"), _) => {
                    if let Some(t) = str_field(block, "text") {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(t);
                    }
                }
                (Some("tool_use"), _) => {
                    flush_text(&mut text, out);
                    let name = str_field(block, "name").unwrap_or("tool");
                    let input = block.get("input").cloned().unwrap_or(Value::Null);
                    if let Some(id) = str_field(block, "id") {
                        self.tools.insert(id.to_owned(), name.to_owned());
                    }
                    out.events.push(
                        AgentEvent::new(EventKind::ToolCall, tool_line(name, &input))
                            .with("tool", name)
                            .with("input", input),
                    );
                }
                _ => {}
            }
        }
        flush_text(&mut text, out);
    }

    fn user(&mut self, v: &Value, out: &mut Parsed) {
        let Some(Value::Array(blocks)) = v.pointer("/message/content") else {
            return;
        };
        for block in blocks {
            if str_field(block, "type") != Some("tool_result") {
                continue;
            }
            let name = str_field(block, "tool_use_id")
                .and_then(|id| self.tools.get(id))
                .cloned()
                .unwrap_or_else(|| "tool".to_owned());
            let is_error = block
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let body = content_text(block.get("content"));
            let text = if body.trim().is_empty() {
                format!("{name}: {}", if is_error { "failed" } else { "done" })
            } else {
                format!("{name}: {}", result_text(&body))
            };
            out.events.push(
                AgentEvent::new(EventKind::ToolResult, text)
                    .with("tool", name)
                    .with("is_error", is_error),
            );
        }
    }

    /// Cursor: `{"type":"tool_call","subtype":"started|completed","call_id":..,
    /// "tool_call":{"readToolCall":{"args":{..},"result":{"success":{..}}}}}`.
    fn cursor_tool_call(&mut self, v: &Value, out: &mut Parsed) {
        if !self.cursor {
            return;
        }
        let Some(Value::Object(call)) = v.get("tool_call") else {
            return;
        };
        let Some((key, body)) = call.iter().next() else {
            return;
        };
        let (name, args) = if key == "function" {
            let name = str_field(body, "name").unwrap_or("function").to_owned();
            let args = match body.get("arguments") {
                Some(Value::String(s)) => {
                    serde_json::from_str(s).unwrap_or(Value::String(s.clone()))
                }
                Some(other) => other.clone(),
                None => Value::Null,
            };
            (name, args)
        } else {
            (
                cursor_tool_name(key),
                body.get("args").cloned().unwrap_or(Value::Null),
            )
        };
        match str_field(v, "subtype") {
            Some("started") => out.events.push(
                AgentEvent::new(EventKind::ToolCall, tool_line(&name, &args))
                    .with("tool", name)
                    .with("input", args),
            ),
            Some("completed") => {
                let result = body.get("result");
                let error = result.and_then(|r| r.get("error"));
                let text = match (error, result.and_then(|r| r.get("success"))) {
                    (Some(err), _) => {
                        let msg = str_field(err, "errorMessage")
                            .or_else(|| str_field(err, "error"))
                            .map(str::to_owned)
                            .unwrap_or_else(|| err.to_string());
                        format!("{name}: {}", result_text(&msg))
                    }
                    (None, Some(ok)) => {
                        let detail = ["stdout", "content", "output", "message"]
                            .iter()
                            .find_map(|k| str_field(ok, k))
                            .filter(|s| !s.trim().is_empty());
                        match detail {
                            Some(d) => format!("{name}: {}", result_text(d)),
                            None => format!("{name}: done"),
                        }
                    }
                    (None, None) => format!("{name}: done"),
                };
                out.events.push(
                    AgentEvent::new(EventKind::ToolResult, text)
                        .with("tool", name)
                        .with("is_error", error.is_some()),
                );
            }
            _ => {}
        }
    }
}

/// `readToolCall` → `Read`, `shellToolCall` → `Shell`.
fn cursor_tool_name(key: &str) -> String {
    let base = key.strip_suffix("ToolCall").unwrap_or(key);
    let mut chars = base.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => "tool".to_owned(),
    }
}

fn flush_text(text: &mut String, out: &mut Parsed) {
    if !text.trim().is_empty() {
        out.events.push(AgentEvent::new(
            EventKind::AgentMessage,
            text.trim().to_owned(),
        ));
        out.final_message = Some(text.trim().to_owned());
    }
    text.clear();
}

/// Text of a tool result's `content`: a string or a list of text blocks.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| str_field(i, "text").or_else(|| i.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// `Session started: model …, MCP servers: a (connected), b (failed)`.
fn init_event(v: &Value) -> AgentEvent {
    let mut text = String::from("Session started");
    let mut event = AgentEvent::new(EventKind::Text, String::new());
    if let Some(model) = str_field(v, "model") {
        text.push_str(&format!(": model {}", one_line(model, 80)));
        event = event.with("model", model);
    }
    if let Some(Value::Array(servers)) = v.get("mcp_servers")
        && !servers.is_empty()
    {
        let list: Vec<String> = servers
            .iter()
            .map(|s| {
                format!(
                    "{} ({})",
                    one_line(str_field(s, "name").unwrap_or("?"), 60),
                    one_line(str_field(s, "status").unwrap_or("?"), 30)
                )
            })
            .collect();
        text.push_str(&format!(", MCP servers: {}", list.join(", ")));
        event = event.with("mcp_servers", Value::Array(servers.clone()));
    }
    if let Some(id) = str_field(v, "session_id") {
        event = event.with("session_id", id);
    }
    event.text = text;
    event
}

/// The final `result` line: the answer, and a summary of time, turns, tokens and cost.
fn result_event(v: &Value, out: &mut Parsed) {
    let is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(false)
        || str_field(v, "subtype").is_some_and(|s| s.starts_with("error"));
    let answer = str_field(v, "result").unwrap_or_default();
    if is_error {
        let reason = if answer.trim().is_empty() {
            str_field(v, "subtype").unwrap_or("error").to_owned()
        } else {
            answer.to_owned()
        };
        let reason = one_line(&reason, 500);
        out.events
            .push(AgentEvent::new(EventKind::Error, reason.clone()));
        out.verdict = Some(Verdict::Failed(reason));
    } else {
        if !answer.trim().is_empty() {
            out.final_message = Some(answer.to_owned());
        }
        out.verdict = Some(Verdict::Succeeded);
    }
    let mut parts = Vec::new();
    let mut event = AgentEvent::new(EventKind::Result, String::new()).with("is_error", is_error);
    if let Some(ms) = u64_field(v, "duration_ms") {
        parts.push(seconds(ms));
        event = event.with("duration_ms", ms);
    }
    if let Some(turns) = u64_field(v, "num_turns") {
        parts.push(count(turns, "turn"));
        event = event.with("num_turns", turns);
    }
    if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
        let input = u64_field(usage, "input_tokens").unwrap_or(0)
            + u64_field(usage, "cache_creation_input_tokens").unwrap_or(0)
            + u64_field(usage, "cache_read_input_tokens").unwrap_or(0);
        let output = u64_field(usage, "output_tokens").unwrap_or(0);
        parts.push(format!("{input} input / {output} output tokens"));
        event = event.with("usage", usage.clone());
    }
    if let Some(cost) = v.get("total_cost_usd").and_then(Value::as_f64) {
        parts.push(format!("${cost:.4}"));
        event = event.with("total_cost_usd", cost);
    }
    let status = if is_error { "Failed" } else { "Done" };
    event.text = if parts.is_empty() {
        status.to_owned()
    } else {
        format!("{status}: {}", parts.join(", "))
    };
    out.events.push(event);
}

/// `API error 401 (authentication_failed); retry 3/10 in 2.1 s`.
fn api_retry_event(v: &Value) -> AgentEvent {
    let status = v
        .get("error_status")
        .and_then(Value::as_i64)
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    let error = str_field(v, "error")
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    let attempt = v.get("attempt").and_then(Value::as_i64).unwrap_or(0);
    let max = v
        .get("max_retries")
        .and_then(Value::as_i64)
        .map(|m| format!("/{m}"))
        .unwrap_or_default();
    let delay = v
        .get("retry_delay_ms")
        .and_then(Value::as_f64)
        .map(|ms| format!(" in {:.1} s", ms / 1000.0))
        .unwrap_or_default();
    AgentEvent::new(
        EventKind::Error,
        format!("API error{status}{error}; retry {attempt}{max}{delay}"),
    )
}

#[cfg(test)]
mod api_retry_tests {
    use super::*;

    #[test]
    fn api_retries_are_shown() {
        let v: Value = serde_json::from_str(
            r#"{"type":"system","subtype":"api_retry","attempt":3,"max_retries":10,"retry_delay_ms":2100,"error_status":401,"error":"authentication_failed"}"#,
        )
        .unwrap();
        let event = api_retry_event(&v);
        assert_eq!(event.kind, EventKind::Error);
        assert_eq!(
            event.text,
            "API error 401 (authentication_failed); retry 3/10 in 2.1 s"
        );
    }
}
