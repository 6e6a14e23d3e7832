//! Gemini CLI `-o stream-json` (`init`, `message` chunks, `tool_use`,
//! `tool_result`, `error`, `result`), plus the single-line form of `-o json`.

use std::collections::HashMap;

use serde_json::Value;

use super::{
    AgentEvent, EventKind, Parsed, Verdict, count, one_line, result_text, seconds, str_field,
    tool_line, u64_field,
};

#[derive(Debug, Default)]
pub(crate) struct GeminiParser {
    /// Assistant text arrives in chunks (`delta: true`); they are joined into
    /// one message, shown when something else happens or output ends.
    pending: String,
    tools: HashMap<String, String>,
}

impl GeminiParser {
    pub(crate) fn event(&mut self, v: &Value) -> Parsed {
        let mut out = Parsed::default();
        match str_field(v, "type") {
            Some("init") => {
                let mut event = AgentEvent::new(EventKind::Text, "Session started");
                if let Some(model) = str_field(v, "model") {
                    event.text = format!("Session started: model {}", one_line(model, 80));
                    event = event.with("model", model);
                }
                if let Some(id) = str_field(v, "session_id") {
                    event = event.with("session_id", id);
                }
                out.events.push(event);
            }
            Some("message") => {
                if str_field(v, "role") == Some("assistant")
                    && let Some(content) = str_field(v, "content")
                {
                    // A non-delta message is complete on its own.
                    if v.get("delta").and_then(Value::as_bool) != Some(true) {
                        self.flush(&mut out);
                    }
                    self.pending.push_str(content);
                }
            }
            Some("tool_use") => {
                self.flush(&mut out);
                let name = str_field(v, "tool_name").unwrap_or("tool").to_owned();
                let params = v.get("parameters").cloned().unwrap_or(Value::Null);
                if let Some(id) = str_field(v, "tool_id") {
                    self.tools.insert(id.to_owned(), name.clone());
                }
                out.events.push(
                    AgentEvent::new(EventKind::ToolCall, tool_line(&name, &params))
                        .with("tool", name)
                        .with("input", params),
                );
            }
            Some("tool_result") => {
                self.flush(&mut out);
                let name = str_field(v, "tool_id")
                    .and_then(|id| self.tools.get(id))
                    .cloned()
                    .unwrap_or_else(|| "tool".to_owned());
                let is_error = str_field(v, "status") == Some("error");
                let body = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .or_else(|| str_field(v, "output"))
                    .unwrap_or_default();
                let text = if body.trim().is_empty() {
                    format!("{name}: {}", if is_error { "failed" } else { "done" })
                } else {
                    format!("{name}: {}", result_text(body))
                };
                out.events.push(
                    AgentEvent::new(EventKind::ToolResult, text)
                        .with("tool", name)
                        .with("is_error", is_error),
                );
            }
            Some("error") => {
                self.flush(&mut out);
                let message = str_field(v, "message").unwrap_or("error");
                let mut event = AgentEvent::new(EventKind::Error, one_line(message, 500));
                let severity = str_field(v, "severity");
                if let Some(severity) = severity {
                    event = event.with("severity", severity);
                }
                // Warnings are shown; only an error-level event is the run failing.
                if severity.is_none_or(|s| s == "error") {
                    out.verdict = Some(Verdict::Failed(event.text.clone()));
                }
                out.events.push(event);
            }
            Some("result") => {
                self.flush(&mut out);
                let failed = str_field(v, "status") == Some("error");
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(|m| one_line(m, 500));
                if let Some(message) = &message {
                    out.events
                        .push(AgentEvent::new(EventKind::Error, message.clone()));
                }
                out.events.push(stats_event(v.get("stats"), failed));
                out.verdict = Some(if failed {
                    Verdict::Failed(message.unwrap_or_else(|| "the run failed".to_owned()))
                } else {
                    Verdict::Succeeded
                });
            }
            None if v.get("response").is_some() => {
                // `-o json`: one object with the whole answer.
                if let Some(response) = str_field(v, "response").filter(|r| !r.trim().is_empty()) {
                    out.events
                        .push(AgentEvent::new(EventKind::AgentMessage, response.trim()));
                    out.final_message = Some(response.to_owned());
                }
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(|m| one_line(m, 500));
                if let Some(message) = &message {
                    out.events
                        .push(AgentEvent::new(EventKind::Error, message.clone()));
                }
                out.events.push(stats_event(None, message.is_some()));
                out.verdict = Some(message.map_or(Verdict::Succeeded, Verdict::Failed));
            }
            _ => out.events.push(AgentEvent::new(
                EventKind::Text,
                one_line(&v.to_string(), 500),
            )),
        }
        out
    }

    pub(crate) fn finish(&mut self) -> Parsed {
        let mut out = Parsed::default();
        self.flush(&mut out);
        out
    }

    fn flush(&mut self, out: &mut Parsed) {
        let text = std::mem::take(&mut self.pending);
        if !text.trim().is_empty() {
            out.events
                .push(AgentEvent::new(EventKind::AgentMessage, text.trim()));
            out.final_message = Some(text);
        }
    }
}

fn stats_event(stats: Option<&Value>, failed: bool) -> AgentEvent {
    let status = if failed { "Failed" } else { "Done" };
    let mut event = AgentEvent::new(EventKind::Result, status).with("is_error", failed);
    if let Some(stats) = stats.filter(|s| s.is_object()) {
        let mut parts = Vec::new();
        if let Some(ms) = u64_field(stats, "duration_ms") {
            parts.push(seconds(ms));
        }
        if let Some(calls) = u64_field(stats, "tool_calls") {
            parts.push(count(calls, "tool call"));
        }
        let input = u64_field(stats, "input_tokens");
        let output = u64_field(stats, "output_tokens");
        if input.is_some() || output.is_some() {
            parts.push(format!(
                "{} input / {} output tokens",
                input.unwrap_or(0),
                output.unwrap_or(0)
            ));
        }
        if !parts.is_empty() {
            event.text = format!("{status}: {}", parts.join(", "));
        }
        event = event.with("stats", stats.clone());
    }
    event
}
