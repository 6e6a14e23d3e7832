//! Output parsers: an agent's stdout lines in, readable events out.
//!
//! Parsers are fed one line at a time (the server splits output into lines),
//! never panic, and pass anything they do not understand through as text.

mod claude;
mod codex;
mod copilot;
mod gemini;
mod opencode;
mod text;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::definition::ParserKind;

/// What an event is, for the log view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// Text the agent wrote to the user.
    AgentMessage,
    /// The agent called a tool (one line, e.g. `Edit src/main.rs`).
    ToolCall,
    /// What a tool returned (shortened).
    ToolResult,
    /// Something failed.
    Error,
    /// The run finished: summary with duration, tokens and cost when known.
    Result,
    /// A line that is not a structured event (plain output, or a JSON line
    /// the parser does not know), passed through as it came.
    Text,
}

/// One readable event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentEvent {
    /// What it is.
    pub kind: EventKind,
    /// The line to show.
    pub text: String,
    /// Structured details (tool name and input, token usage, cost...).
    pub fields: BTreeMap<String, Value>,
}

impl AgentEvent {
    /// An event without fields.
    pub fn new(kind: EventKind, text: impl Into<String>) -> Self {
        Self {
            kind,
            text: text.into(),
            fields: BTreeMap::new(),
        }
    }

    /// Adds a field.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }
}

/// The agent's own verdict on its run, from the run-level events its CLI prints (Claude Code's
/// `result` with `is_error`/`subtype`, Codex's `turn.completed`/`turn.failed`/`error`, Gemini
/// CLI's `result` and `error`, opencode's `error`, Copilot CLI's `result`). The last one printed
/// counts: a CLI that reports a transient error and then completes has succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The CLI says its run completed.
    Succeeded,
    /// The CLI says its run failed, with its message (at most 500 characters, one line).
    Failed(String),
}

/// Turns one agent's stdout into events; one parser per run.
#[derive(Debug)]
pub struct OutputParser {
    inner: Inner,
    final_message: Option<String>,
    verdict: Option<Verdict>,
}

#[derive(Debug)]
enum Inner {
    Claude(claude::ClaudeParser),
    Codex(codex::CodexParser),
    Copilot(copilot::CopilotParser),
    Gemini(gemini::GeminiParser),
    Opencode(opencode::OpencodeParser),
    Text(text::TextParser),
}

/// What a format-specific parser hands back for one line.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub events: Vec<AgentEvent>,
    /// A new candidate for the agent's final message.
    pub final_message: Option<String>,
    /// A run-level verdict printed on this line (replaces any earlier one).
    pub verdict: Option<Verdict>,
}

impl OutputParser {
    /// A parser for this output format.
    pub fn new(kind: ParserKind) -> Self {
        let inner = match kind {
            ParserKind::ClaudeStreamJson => Inner::Claude(claude::ClaudeParser::new(false)),
            ParserKind::CursorStreamJson => Inner::Claude(claude::ClaudeParser::new(true)),
            ParserKind::CodexJson => Inner::Codex(codex::CodexParser::default()),
            ParserKind::CopilotJson => Inner::Copilot(copilot::CopilotParser),
            ParserKind::GeminiStreamJson => Inner::Gemini(gemini::GeminiParser::default()),
            ParserKind::OpencodeJson => Inner::Opencode(opencode::OpencodeParser::default()),
            ParserKind::Text => Inner::Text(text::TextParser::default()),
        };
        Self {
            inner,
            final_message: None,
            verdict: None,
        }
    }

    /// Parses one line (without its newline) into zero or more events.
    pub fn parse_line(&mut self, line: &str) -> Vec<AgentEvent> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            // Blank lines are no events, but they belong to plain output's answer.
            if let Inner::Text(p) = &mut self.inner {
                p.blank();
            }
            return Vec::new();
        }
        let parsed = match &mut self.inner {
            Inner::Text(p) => p.line(line),
            inner => match parse_json_object(line) {
                Some(value) => match inner {
                    Inner::Claude(p) => p.event(&value),
                    Inner::Codex(p) => p.event(&value),
                    Inner::Copilot(p) => p.event(&value),
                    Inner::Gemini(p) => p.event(&value),
                    Inner::Opencode(p) => p.event(&value),
                    Inner::Text(p) => p.line(line),
                },
                None => Parsed {
                    events: vec![AgentEvent::new(EventKind::Text, strip_ansi(line))],
                    ..Parsed::default()
                },
            },
        };
        self.absorb(parsed)
    }

    /// Call once at the end of output: flushes anything buffered (e.g.
    /// Gemini's streamed message chunks, opencode's token totals).
    pub fn finish(&mut self) -> Vec<AgentEvent> {
        let parsed = match &mut self.inner {
            Inner::Gemini(p) => p.finish(),
            Inner::Opencode(p) => p.finish(),
            Inner::Text(p) => p.finish(),
            Inner::Claude(_) | Inner::Codex(_) | Inner::Copilot(_) => Parsed::default(),
        };
        self.absorb(parsed)
    }

    /// The agent's last message so far (its answer, for PR bodies and task messages).
    pub fn final_message(&self) -> Option<&str> {
        self.final_message.as_deref()
    }

    /// The CLI's own verdict on its run, if it printed one (plain-text agents never do).
    pub fn verdict(&self) -> Option<&Verdict> {
        self.verdict.as_ref()
    }

    fn absorb(&mut self, parsed: Parsed) -> Vec<AgentEvent> {
        if parsed.verdict.is_some() {
            self.verdict = parsed.verdict;
        }
        if let Some(message) = parsed.final_message
            && !message.trim().is_empty()
        {
            self.final_message = Some(message.trim().to_owned());
        }
        parsed.events
    }
}

/// Parses a line that holds one JSON object; anything else is `None`.
fn parse_json_object(line: &str) -> Option<Value> {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return None;
    }
    serde_json::from_str::<Value>(trimmed)
        .ok()
        .filter(Value::is_object)
}

/// Longest tool-call argument shown on the one line.
const MAX_ARG_CHARS: usize = 160;
/// Longest tool result shown.
const MAX_RESULT_CHARS: usize = 300;

/// Shortens to `max` characters on one line (newlines shown as `⏎`).
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .trim()
        .chars()
        .map(|c| match c {
            '\n' => '⏎',
            '\r' | '\t' => ' ',
            c => c,
        })
        .collect();
    shorten(&flat, max)
}

/// Cuts to `max` characters, marking the cut with `…`.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The first few lines of a tool result, shortened.
pub(crate) fn result_text(text: &str) -> String {
    one_line(text, MAX_RESULT_CHARS)
}

/// `Name argument`, the one line shown for a tool call. The argument is the
/// most telling input field (path, command, pattern, URL...).
pub(crate) fn tool_line(name: &str, input: &Value) -> String {
    const KEYS: [&str; 14] = [
        "file_path",
        "path",
        "filePath",
        "absolute_path",
        "notebook_path",
        "command",
        "cmd",
        "pattern",
        "url",
        "query",
        "description",
        "prompt",
        "dir_path",
        "target_file",
    ];
    let arg = match input {
        Value::Object(map) => KEYS.iter().find_map(|k| map.get(*k)).and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Array(items) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        }),
        Value::String(s) => Some(s.clone()),
        _ => None,
    };
    match arg {
        Some(arg) if !arg.trim().is_empty() => {
            format!("{} {}", one_line(name, 80), one_line(&arg, MAX_ARG_CHARS))
        }
        _ => one_line(name, 80),
    }
}

/// A string field, if present.
pub(crate) fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// A number field as u64 (tolerates floats), if present.
pub(crate) fn u64_field(value: &Value, key: &str) -> Option<u64> {
    let v = value.get(key)?;
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// `1 turn`, `2 turns`.
pub(crate) fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `12.3s` from milliseconds.
pub(crate) fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// Removes ANSI escape sequences (colours, cursor moves) from plain text.
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('[') => {
                chars.next();
                // CSI: parameters and intermediates, then one final byte @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                chars.next();
                // OSC: up to BEL or ESC \.
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' {
                        chars.next();
                        break;
                    }
                }
            }
            Some(_) => {
                chars.next();
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_lines_read_well() {
        assert_eq!(
            tool_line("Edit", &json!({"file_path": "src/main.rs"})),
            "Edit src/main.rs"
        );
        assert_eq!(
            tool_line("Bash", &json!({"command": "cargo test\n--all"})),
            "Bash cargo test⏎--all"
        );
        assert_eq!(tool_line("TodoWrite", &json!({"todos": []})), "TodoWrite");
        assert_eq!(
            tool_line("shell", &json!({"command": ["bash", "-lc", "ls"]})),
            "shell bash -lc ls"
        );
    }

    #[test]
    fn ansi_is_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[1;32m✓\u{1b}[0m done\u{1b}]0;title\u{7}"),
            "✓ done"
        );
        assert_eq!(strip_ansi("trailing \u{1b}"), "trailing ");
    }

    #[test]
    fn shorten_marks_cut() {
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }
}
