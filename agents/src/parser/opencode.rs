//! `opencode run --format json`: one `{type, timestamp, sessionID, part}` object
//! per line (`text`, `tool_use`, `step_start`, `step_finish`, `reasoning`, `error`).

use serde_json::Value;

use super::{
    AgentEvent, EventKind, Parsed, Verdict, count, one_line, result_text, str_field, tool_line,
    u64_field,
};

#[derive(Debug, Default)]
pub(crate) struct OpencodeParser {
    steps: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost: f64,
    failed: bool,
}

impl OpencodeParser {
    pub(crate) fn event(&mut self, v: &Value) -> Parsed {
        let mut out = Parsed::default();
        let part = v.get("part").unwrap_or(&Value::Null);
        match str_field(v, "type") {
            Some("text") => {
                if let Some(text) = str_field(part, "text").filter(|t| !t.trim().is_empty()) {
                    out.events
                        .push(AgentEvent::new(EventKind::AgentMessage, text.trim()));
                    out.final_message = Some(text.to_owned());
                }
            }
            Some("tool_use") => {
                let name = str_field(part, "tool").unwrap_or("tool").to_owned();
                let state = part.get("state").unwrap_or(&Value::Null);
                let input = state.get("input").cloned().unwrap_or(Value::Null);
                out.events.push(
                    AgentEvent::new(EventKind::ToolCall, tool_line(&name, &input))
                        .with("tool", name.clone())
                        .with("input", input),
                );
                let is_error = str_field(state, "status") == Some("error");
                let body = if is_error {
                    str_field(state, "error")
                } else {
                    str_field(state, "output")
                        .filter(|o| !o.trim().is_empty())
                        .or_else(|| str_field(state, "title"))
                }
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
            Some("step_finish") => {
                self.steps += 1;
                // The last step of a run ends with `stop`; others with `tool-calls`.
                if str_field(part, "reason") == Some("stop") {
                    out.verdict = Some(Verdict::Succeeded);
                }
                if let Some(tokens) = part.get("tokens") {
                    self.input_tokens += u64_field(tokens, "input").unwrap_or(0)
                        + tokens
                            .get("cache")
                            .and_then(|c| u64_field(c, "read"))
                            .unwrap_or(0);
                    self.output_tokens += u64_field(tokens, "output").unwrap_or(0)
                        + u64_field(tokens, "reasoning").unwrap_or(0);
                }
                if let Some(cost) = part
                    .get("cost")
                    .and_then(Value::as_f64)
                    .filter(|c| c.is_finite())
                {
                    self.cost += cost;
                }
            }
            Some("error") => {
                self.failed = true;
                let error = v.get("error").unwrap_or(&Value::Null);
                let message = error
                    .pointer("/data/message")
                    .and_then(Value::as_str)
                    .or_else(|| str_field(error, "message"))
                    .or_else(|| str_field(error, "name"))
                    .unwrap_or("error");
                let message = one_line(message, 500);
                out.events
                    .push(AgentEvent::new(EventKind::Error, message.clone()));
                out.verdict = Some(Verdict::Failed(message));
            }
            Some("step_start" | "reasoning") => {}
            _ => out.events.push(AgentEvent::new(
                EventKind::Text,
                one_line(&v.to_string(), 500),
            )),
        }
        out
    }

    /// opencode prints no summary line; the totals of its steps make one.
    pub(crate) fn finish(&mut self) -> Parsed {
        let mut out = Parsed::default();
        if self.steps == 0 && !self.failed {
            return out;
        }
        let status = if self.failed { "Failed" } else { "Done" };
        let text = format!(
            "{status}: {}, {} input / {} output tokens, ${:.4}",
            count(self.steps, "step"),
            self.input_tokens,
            self.output_tokens,
            self.cost
        );
        out.events.push(
            AgentEvent::new(EventKind::Result, text)
                .with("is_error", self.failed)
                .with("steps", self.steps)
                .with("input_tokens", self.input_tokens)
                .with("output_tokens", self.output_tokens)
                .with("total_cost_usd", self.cost),
        );
        self.steps = 0;
        self.failed = false;
        out
    }
}
