//! `codex exec --json`: JSONL thread events (`thread.started`, `turn.*`,
//! `item.started|updated|completed` with typed items, `error`).

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{
    AgentEvent, EventKind, Parsed, Verdict, one_line, result_text, str_field, tool_line, u64_field,
};

#[derive(Debug, Default)]
pub(crate) struct CodexParser {
    /// Items whose tool-call line was already shown at `item.started`.
    started: HashSet<String>,
}

impl CodexParser {
    pub(crate) fn event(&mut self, v: &Value) -> Parsed {
        let mut out = Parsed::default();
        match str_field(v, "type") {
            Some("item.started") => {
                if let Some(item) = v.get("item")
                    && let Some(call) = tool_call(item)
                {
                    if let Some(id) = str_field(item, "id") {
                        self.started.insert(id.to_owned());
                    }
                    out.events.push(call);
                }
            }
            Some("item.completed") => {
                if let Some(item) = v.get("item") {
                    self.completed(item, &mut out);
                }
            }
            Some("turn.completed") => {
                out.events.push(usage_event(v.get("usage"), false));
                out.verdict = Some(Verdict::Succeeded);
            }
            Some("turn.failed") => {
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("turn failed");
                let message = one_line(message, 500);
                out.events
                    .push(AgentEvent::new(EventKind::Error, message.clone()));
                out.events.push(usage_event(v.get("usage"), true));
                out.verdict = Some(Verdict::Failed(message));
            }
            // A stream error: fatal unless a completed turn follows (Codex retries some).
            Some("error") => {
                let message = one_line(str_field(v, "message").unwrap_or("error"), 500);
                out.events
                    .push(AgentEvent::new(EventKind::Error, message.clone()));
                out.verdict = Some(Verdict::Failed(message));
            }
            Some("thread.started" | "turn.started" | "item.updated") => {}
            _ => out.events.push(AgentEvent::new(
                EventKind::Text,
                one_line(&v.to_string(), 500),
            )),
        }
        out
    }

    fn completed(&mut self, item: &Value, out: &mut Parsed) {
        let id = str_field(item, "id").unwrap_or_default();
        match str_field(item, "type") {
            Some("agent_message") => {
                if let Some(text) = str_field(item, "text").filter(|t| !t.trim().is_empty()) {
                    out.events
                        .push(AgentEvent::new(EventKind::AgentMessage, text.trim()));
                    out.final_message = Some(text.to_owned());
                }
            }
            Some("command_execution") => {
                if !self.started.remove(id)
                    && let Some(call) = tool_call(item)
                {
                    out.events.push(call);
                }
                let exit = item.get("exit_code").and_then(Value::as_i64);
                let output = str_field(item, "aggregated_output").unwrap_or_default();
                let failed =
                    exit.is_some_and(|c| c != 0) || str_field(item, "status") == Some("failed");
                let head = match exit {
                    Some(code) => format!("exit {code}"),
                    None => str_field(item, "status").unwrap_or("done").to_owned(),
                };
                let text = if output.trim().is_empty() {
                    head
                } else {
                    format!("{head}: {}", result_text(output))
                };
                out.events.push(
                    AgentEvent::new(EventKind::ToolResult, text)
                        .with("tool", "shell")
                        .with("is_error", failed)
                        .with("exit_code", exit.map_or(Value::Null, Value::from)),
                );
            }
            Some("mcp_tool_call") => {
                if !self.started.remove(id)
                    && let Some(call) = tool_call(item)
                {
                    out.events.push(call);
                }
                let name = mcp_name(item);
                let error = item
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .or_else(|| str_field(item, "error"));
                let text = match error {
                    Some(e) => format!("{name}: {}", result_text(e)),
                    None => {
                        let body = item
                            .pointer("/result/content")
                            .and_then(Value::as_array)
                            .map(|blocks| {
                                blocks
                                    .iter()
                                    .filter_map(|b| str_field(b, "text"))
                                    .collect::<Vec<_>>()
                                    .join("\n")
                            })
                            .unwrap_or_default();
                        if body.trim().is_empty() {
                            format!("{name}: done")
                        } else {
                            format!("{name}: {}", result_text(&body))
                        }
                    }
                };
                out.events.push(
                    AgentEvent::new(EventKind::ToolResult, text)
                        .with("tool", name)
                        .with("is_error", error.is_some()),
                );
            }
            Some("file_change") => {
                let changes: Vec<String> = item
                    .get("changes")
                    .and_then(Value::as_array)
                    .map(|cs| {
                        cs.iter()
                            .filter_map(|c| {
                                let path = str_field(c, "path")?;
                                Some(match str_field(c, "kind") {
                                    Some("add") => format!("{path} (new)"),
                                    Some("delete") => format!("{path} (deleted)"),
                                    _ => path.to_owned(),
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let text = format!("Edit {}", one_line(&changes.join(", "), 300));
                out.events.push(
                    AgentEvent::new(EventKind::ToolCall, text.trim_end())
                        .with("tool", "apply_patch")
                        .with("input", item.get("changes").cloned().unwrap_or(Value::Null)),
                );
            }
            Some("web_search") => {
                let query = str_field(item, "query").unwrap_or_default();
                out.events.push(
                    AgentEvent::new(
                        EventKind::ToolCall,
                        tool_line("Search", &json!({ "query": query })),
                    )
                    .with("tool", "web_search"),
                );
            }
            Some("todo_list") => {
                if let Some(items) = item.get("items").and_then(Value::as_array) {
                    let done = items
                        .iter()
                        .filter(|i| i.get("completed").and_then(Value::as_bool) == Some(true))
                        .count();
                    out.events.push(AgentEvent::new(
                        EventKind::Text,
                        format!("Plan: {done}/{} steps done", items.len()),
                    ));
                }
            }
            // Error *items* are warnings in practice (model metadata missing,
            // WebSocket fallback...); fatal errors come as top-level `error`
            // and `turn.failed` events.
            Some("error") => {
                let message = str_field(item, "message").unwrap_or("error");
                out.events.push(
                    AgentEvent::new(
                        EventKind::Text,
                        format!("warning: {}", one_line(message, 500)),
                    )
                    .with("severity", "warning"),
                );
            }
            // Reasoning summaries are the model thinking aloud; the log shows
            // what it did and said instead.
            _ => {}
        }
    }
}

/// The tool-call line of an item that is a tool call, if it is one.
fn tool_call(item: &Value) -> Option<AgentEvent> {
    match str_field(item, "type")? {
        "command_execution" => {
            let command = item.get("command").cloned().unwrap_or(Value::Null);
            Some(
                AgentEvent::new(
                    EventKind::ToolCall,
                    tool_line("Run", &json!({ "command": command })),
                )
                .with("tool", "shell")
                .with("input", command),
            )
        }
        "mcp_tool_call" => {
            let name = mcp_name(item);
            let args = item.get("arguments").cloned().unwrap_or(Value::Null);
            Some(
                AgentEvent::new(EventKind::ToolCall, tool_line(&name, &args))
                    .with("tool", name)
                    .with("input", args),
            )
        }
        _ => None,
    }
}

fn mcp_name(item: &Value) -> String {
    format!(
        "{}.{}",
        str_field(item, "server").unwrap_or("mcp"),
        str_field(item, "tool").unwrap_or("tool")
    )
}

fn usage_event(usage: Option<&Value>, failed: bool) -> AgentEvent {
    let status = if failed { "Failed" } else { "Turn done" };
    let mut event = AgentEvent::new(EventKind::Result, status).with("is_error", failed);
    if let Some(usage) = usage.filter(|u| u.is_object()) {
        let input = u64_field(usage, "input_tokens").unwrap_or(0);
        let cached = u64_field(usage, "cached_input_tokens").unwrap_or(0);
        let output = u64_field(usage, "output_tokens").unwrap_or(0);
        event.text = format!("{status}: {input} input ({cached} cached) / {output} output tokens");
        event = event.with("usage", usage.clone());
    }
    event
}
