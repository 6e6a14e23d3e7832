//! Metering of model responses passing through the gateway: tokens and model read from the
//! provider's own usage fields (streamed or not), and their cost from a dated price table.
//!
//! Providers report usage in different shapes; all of them are cumulative within a response,
//! so the meter keeps the largest value of each field it sees:
//! Anthropic Messages (`message_start.message.usage`, then `message_delta.usage`:
//! `input_tokens`, `output_tokens`, `cache_read_input_tokens`, `cache_creation_input_tokens`),
//! OpenAI Responses and Chat Completions (`usage.input_tokens` / `prompt_tokens`,
//! `output_tokens` / `completion_tokens`, `*_tokens_details.cached_tokens`) and Gemini
//! (`usageMetadata.promptTokenCount`, `candidatesTokenCount`, `cachedContentTokenCount`).

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

/// Tokens and model of one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Model the provider named (empty when it named none).
    pub model: String,
    /// Input tokens.
    pub input: i64,
    /// Output tokens.
    pub output: i64,
    /// Prompt-cache reads.
    pub cache_read: i64,
    /// Prompt-cache writes.
    pub cache_write: i64,
}

impl Usage {
    /// Whether the response reported any usage at all.
    pub fn is_empty(&self) -> bool {
        self.input == 0 && self.output == 0 && self.cache_read == 0 && self.cache_write == 0
    }

    /// Takes what one JSON value (an SSE event's data, or a whole body) says.
    pub fn observe(&mut self, value: &Value) {
        walk(value, self, 0);
    }
}

fn walk(value: &Value, usage: &mut Usage, depth: usize) {
    if depth > 6 {
        return;
    }
    let Value::Object(map) = value else { return };
    for (key, v) in map {
        match (key.as_str(), v) {
            ("model" | "modelVersion", Value::String(m)) if usage.model.is_empty() => {
                usage.model = m.clone();
            }
            ("usage" | "usageMetadata", Value::Object(_)) => read_usage(v, usage),
            (_, Value::Object(_)) => walk(v, usage, depth + 1),
            _ => {}
        }
    }
}

fn read_usage(u: &Value, usage: &mut Usage) {
    let n = |keys: &[&str]| {
        keys.iter()
            .filter_map(|k| {
                k.split('.')
                    .try_fold(u, |v, part| v.get(part))
                    .and_then(Value::as_i64)
            })
            .max()
            .unwrap_or(0)
    };
    usage.input = usage
        .input
        .max(n(&["input_tokens", "prompt_tokens", "promptTokenCount"]));
    usage.output = usage.output.max(n(&[
        "output_tokens",
        "completion_tokens",
        "candidatesTokenCount",
    ]));
    usage.cache_read = usage.cache_read.max(n(&[
        "cache_read_input_tokens",
        "input_tokens_details.cached_tokens",
        "prompt_tokens_details.cached_tokens",
        "cachedContentTokenCount",
    ]));
    usage.cache_write = usage.cache_write.max(n(&["cache_creation_input_tokens"]));
}

/// Reads usage out of a response body as it streams by: Server-Sent Events line by line (each
/// `data:` line parsed as JSON), or any other body parsed whole at the end (bounded).
#[derive(Debug, Default)]
pub struct Tap {
    sse: bool,
    line: Vec<u8>,
    body: Vec<u8>,
    /// What was seen so far.
    pub usage: Usage,
}

/// A non-streamed body larger than this is not metered (model answers are far smaller).
const MAX_BODY: usize = 8 << 20;
/// An SSE line longer than this is skipped.
const MAX_LINE: usize = 4 << 20;

impl Tap {
    /// A tap for a response of `content_type`.
    pub fn new(content_type: &str) -> Self {
        Self {
            sse: content_type.starts_with("text/event-stream"),
            ..Self::default()
        }
    }

    /// Feeds the next bytes of the body.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !self.sse {
            if self.body.len() + bytes.len() <= MAX_BODY {
                self.body.extend_from_slice(bytes);
            }
            return;
        }
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.sse_line(&line);
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
    }

    fn sse_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(data) = line.strip_prefix(b"data:")
            && let Ok(value) = serde_json::from_slice::<Value>(data.trim_ascii())
        {
            self.usage.observe(&value);
        }
    }

    /// The body has ended: what it reported.
    pub fn finish(mut self) -> Usage {
        if self.sse {
            let line = std::mem::take(&mut self.line);
            self.sse_line(&line);
        } else if let Ok(value) = serde_json::from_slice::<Value>(&self.body) {
            self.usage.observe(&value);
        }
        self.usage
    }
}

/// Prices of one model family, US dollars per million tokens.
#[derive(Debug, Clone, Deserialize)]
pub struct Price {
    /// Model ids starting with this use this price.
    pub prefix: String,
    /// Input.
    pub input: f64,
    /// Output.
    pub output: f64,
    /// Cache reads (input price when absent).
    pub cache_read: Option<f64>,
    /// Cache writes (input price when absent).
    pub cache_write: Option<f64>,
}

/// The operator-editable price table (TOML; see `prices.toml` for the format).
#[derive(Debug, Clone, Deserialize)]
pub struct PriceTable {
    /// The date the prices were checked, as written in the file.
    pub as_of: String,
    /// Prices by model prefix.
    pub models: Vec<Price>,
}

impl PriceTable {
    /// drydock's built-in table.
    pub fn builtin() -> Self {
        // Compiled in and parsed by a unit test, so it always parses.
        toml::from_str(include_str!("prices.toml")).unwrap_or(Self {
            as_of: String::new(),
            models: Vec::new(),
        })
    }

    /// The table in `path`; `Err` says what is wrong with it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| format!("{} is not a valid price table: {e}", path.display()))
    }

    /// Cost of `usage` in millionths of a US dollar; 0 for a model the table does not know.
    pub fn cost_micro_usd(&self, usage: &Usage) -> i64 {
        let Some(price) = self
            .models
            .iter()
            .filter(|p| usage.model.starts_with(&p.prefix))
            .max_by_key(|p| p.prefix.len())
        else {
            return 0;
        };
        // Dollars per million tokens = micro-dollars per token.
        let micro = usage.input as f64 * price.input
            + usage.output as f64 * price.output
            + usage.cache_read as f64 * price.cache_read.unwrap_or(price.input)
            + usage.cache_write as f64 * price.cache_write.unwrap_or(price.input);
        micro.round() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_stream_usage_is_read_across_events() {
        let mut tap = Tap::new("text/event-stream; charset=utf-8");
        let body = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":120,\"cache_read_input_tokens\":30,\"cache_creation_input_tokens\":7,\"output_tokens\":1}}}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":45}}\n\n",
        );
        // Split mid-line, as a network would.
        let (a, b) = body.split_at(70);
        tap.feed(a.as_bytes());
        tap.feed(b.as_bytes());
        let u = tap.finish();
        assert_eq!(
            u,
            Usage {
                model: "claude-sonnet-4-5".into(),
                input: 120,
                output: 45,
                cache_read: 30,
                cache_write: 7
            }
        );
        let cost = PriceTable::builtin().cost_micro_usd(&u);
        // 120*3 + 45*15 + 30*0.3 + 7*3.75 = 360 + 675 + 9 + 26.25
        assert_eq!(cost, 1070);
    }

    #[test]
    fn openai_and_gemini_bodies_are_read_whole() {
        let mut tap = Tap::new("application/json");
        tap.feed(br#"{"model":"gpt-5.5","usage":{"input_tokens":10,"output_tokens":4,"input_tokens_details":{"cached_tokens":2}}}"#);
        let u = tap.finish();
        assert_eq!(
            (u.model.as_str(), u.input, u.output, u.cache_read),
            ("gpt-5.5", 10, 4, 2)
        );
        let mut tap = Tap::new("text/event-stream");
        tap.feed(b"data: {\"modelVersion\":\"gemini-2.5-pro\",\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":3}}\r\n\r\n");
        let u = tap.finish();
        assert_eq!(
            (u.model.as_str(), u.input, u.output),
            ("gemini-2.5-pro", 9, 3)
        );
        assert_eq!(PriceTable::builtin().as_of, "2026-11-30");
        assert_eq!(
            PriceTable::builtin().cost_micro_usd(&Usage {
                model: "unknown".into(),
                input: 5,
                ..Usage::default()
            }),
            0
        );
    }
}
