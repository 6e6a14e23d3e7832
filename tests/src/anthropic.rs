//! A stand-in for the Anthropic Messages API on `127.0.0.1:0`, speaking the protocol Claude Code
//! uses: `POST /v1/messages` streamed as server-sent events (`message_start`, `ping`,
//! `content_block_start`, `content_block_delta` with `text_delta` or `input_json_delta`,
//! `content_block_stop`, `message_delta`, `message_stop`) or answered as one JSON message, the
//! `x-api-key` check with Anthropic's error body, and the few other calls a client makes
//! (`count_tokens`, model listing, Claude Code's `HEAD /api/hello` reachability check).
//!
//! The model is a script: a function from the request to the blocks of the reply, so a test can
//! play a conversation (call a tool, read its result, answer) without an LLM. Every request is
//! recorded, unknown ones too, so a test can see exactly what the CLI sent.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Value, json};

/// One block of a scripted reply.
#[derive(Debug, Clone)]
pub enum Block {
    /// Text the model says.
    Text(String),
    /// A call of one of the tools the request offered.
    ToolUse {
        /// The tool's name as the client sent it, e.g. `Write` or `mcp__server__tool`.
        name: String,
        /// Its input.
        input: Value,
    },
}

impl Block {
    /// A text block.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }

    /// A tool call.
    pub fn tool_use(name: impl Into<String>, input: Value) -> Self {
        Self::ToolUse {
            name: name.into(),
            input,
        }
    }
}

/// The scripted model: given a request to `/v1/messages`, the blocks of its reply.
pub type Script = Arc<dyn Fn(&Conversation<'_>) -> Vec<Block> + Send + Sync>;

/// A request to `/v1/messages`, with the questions a script asks of it.
#[derive(Debug, Clone, Copy)]
pub struct Conversation<'a> {
    /// The request body.
    pub body: &'a Value,
}

/// The result of a tool call, as the client sent it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// The call's id.
    pub tool_use_id: String,
    /// The tool's name (from the matching `tool_use` block), if known.
    pub name: Option<String>,
    /// The result's text (text blocks joined; other blocks as JSON).
    pub text: String,
    /// Whether the client marked it an error.
    pub is_error: bool,
}

impl Conversation<'_> {
    /// Names of the tools the request offers, in order.
    pub fn tools_offered(&self) -> Vec<String> {
        tool_names(self.body)
    }

    /// Whether the request offers this tool.
    pub fn offers(&self, name: &str) -> bool {
        self.tools_offered().iter().any(|t| t == name)
    }

    /// Names of the tools the assistant has called so far in this conversation, in order.
    pub fn tools_called(&self) -> Vec<String> {
        self.blocks("assistant", "tool_use")
            .filter_map(|b| b["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Whether the assistant has called this tool in this conversation.
    pub fn called(&self, name: &str) -> bool {
        self.tools_called().iter().any(|t| t == name)
    }

    /// The tool results the client sent back so far.
    pub fn tool_results(&self) -> Vec<ToolResult> {
        let names: Vec<(String, String)> = self
            .blocks("assistant", "tool_use")
            .filter_map(|b| Some((b["id"].as_str()?.to_owned(), b["name"].as_str()?.to_owned())))
            .collect();
        self.blocks("user", "tool_result")
            .map(|b| {
                let id = b["tool_use_id"].as_str().unwrap_or_default().to_owned();
                ToolResult {
                    name: names.iter().find(|(i, _)| *i == id).map(|(_, n)| n.clone()),
                    tool_use_id: id,
                    text: content_text(&b["content"]),
                    is_error: b["is_error"].as_bool().unwrap_or(false),
                }
            })
            .collect()
    }

    /// The result of the last call of `name`, if it came back.
    pub fn result_of(&self, name: &str) -> Option<ToolResult> {
        self.tool_results()
            .into_iter()
            .rev()
            .find(|r| r.name.as_deref() == Some(name))
    }

    /// Content blocks of type `kind` in the messages of `role`.
    fn blocks<'b>(&'b self, role: &'b str, kind: &'b str) -> impl Iterator<Item = &'b Value> + 'b {
        self.body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(move |m| m["role"] == role)
            .filter_map(|m| m["content"].as_array())
            .flatten()
            .filter(move |b| b["type"] == kind)
    }
}

/// The text of a `tool_result` content: a string, or blocks.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b["text"].as_str() {
                Some(t) if b["type"] == "text" => t.to_owned(),
                _ => b.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Names in a request body's `tools` array.
pub fn tool_names(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

pub use crate::recorded::Recorded;

impl Recorded {
    /// Whether this is a model turn (`POST /v1/messages`, not `count_tokens`).
    pub fn is_message(&self) -> bool {
        self.method == "POST"
            && (self.path == "/v1/messages" || self.path.starts_with("/v1/messages?"))
    }
}

type Shared = crate::recorded::StandIn<Script>;

/// The running stand-in; stops when dropped.
pub struct AnthropicStandIn {
    /// `http://127.0.0.1:PORT`, the base URL (`ANTHROPIC_BASE_URL`) without `/v1`.
    pub url: String,
    shared: Arc<Shared>,
    _server: crate::recorded::Server,
}

impl AnthropicStandIn {
    /// Starts the stand-in: requests must carry `x-api-key: key`; `script` plays the model.
    pub async fn start(
        key: &str,
        script: impl Fn(&Conversation<'_>) -> Vec<Block> + Send + Sync + 'static,
    ) -> Self {
        let shared = Arc::new(Shared::new(
            "anthropic",
            key,
            Arc::new(script),
            Recorded::is_message,
            '_',
        ));
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .route("/v1/models", get(models))
            .route("/api/hello", any(hello))
            .fallback(unknown)
            .with_state(shared.clone());
        let server = crate::recorded::Server::start(app).await;
        Self {
            url: format!("http://{}", server.addr),
            shared,
            _server: server,
        }
    }

    /// Input and output tokens the stand-in's answers reported so far.
    pub fn reported_usage(&self) -> (u64, u64) {
        self.shared.reported_usage()
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests()
    }

    /// The model turns (`POST /v1/messages`) so far.
    pub fn message_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_message)
            .collect()
    }
}

/// Anthropic's error body. None of the stand-in's errors is transient, so each says a retry
/// cannot help (`x-should-retry: false`, the server hint Anthropic's SDKs honour): without it
/// Claude Code 2.1.330 retries even a 401 ten times, over about three minutes.
fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (HeaderName::from_static("x-should-retry"), "false"),
        ],
        json!({ "type": "error", "error": { "type": kind, "message": message } }).to_string(),
    )
        .into_response()
}

/// The 401 for a request without the right `x-api-key`; `None` when the key is right.
fn denied(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    match headers.get("x-api-key").map(|v| v.as_bytes()) {
        Some(key) if key == shared.key.as_bytes() => None,
        _ => Some(error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        )),
    }
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = messages_response(&shared, &headers, &body);
    shared.record(&method, &uri, &headers, &body, response.status().as_u16());
    response
}

fn messages_response(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Some(denied) = denied(shared, headers) {
        return denied;
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "the body is not JSON",
        );
    };
    let (Some(model), Some(_)) = (request["model"].as_str(), request["messages"].as_array()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model and messages are required",
        );
    };
    let model = model.to_owned();
    let blocks = (shared.script)(&Conversation { body: &request });
    let offered = tool_names(&request);
    // A real model cannot call a tool it was not offered; a script that tries is wrong, and the
    // client shows this error in its output.
    if let Some(name) = blocks.iter().find_map(|b| match b {
        Block::ToolUse { name, .. } if !offered.contains(name) => Some(name),
        _ => None,
    }) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("stand-in script error: it calls {name}, which the request does not offer"),
        );
    }
    let content: Vec<Value> = blocks
        .iter()
        .map(|b| match b {
            Block::Text(text) => json!({ "type": "text", "text": text }),
            Block::ToolUse { name, input } => {
                json!({ "type": "tool_use", "id": shared.id("toolu"), "name": name, "input": input })
            }
        })
        .collect();
    let stop_reason = if content.iter().any(|b| b["type"] == "tool_use") {
        "tool_use"
    } else {
        "end_turn"
    };
    let input_tokens = u64::try_from(body.len() / 4).unwrap_or(u64::MAX);
    let output_tokens: u64 = content
        .iter()
        .map(|b| u64::try_from(b.to_string().len() / 4).unwrap_or(0) + 1)
        .sum();
    shared.report_usage(input_tokens, output_tokens);
    let id = shared.id("msg");
    if request["stream"].as_bool() != Some(true) {
        let message = json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": { "input_tokens": input_tokens, "output_tokens": output_tokens },
        });
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            message.to_string(),
        )
            .into_response();
    }

    let mut events = vec![
        sse(
            "message_start",
            json!({ "type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": { "input_tokens": input_tokens, "output_tokens": 1 },
            }}),
        ),
        sse("ping", json!({ "type": "ping" })),
    ];
    for (index, block) in content.iter().enumerate() {
        let (start, deltas) = if block["type"] == "tool_use" {
            let input = block["input"].to_string();
            (
                json!({ "type": "tool_use", "id": block["id"], "name": block["name"], "input": {} }),
                chunks(&input, 16)
                    .into_iter()
                    .map(|part| json!({ "type": "input_json_delta", "partial_json": part }))
                    .collect::<Vec<_>>(),
            )
        } else {
            let text = block["text"].as_str().unwrap_or_default();
            (
                json!({ "type": "text", "text": "" }),
                chunks(text, 24)
                    .into_iter()
                    .map(|part| json!({ "type": "text_delta", "text": part }))
                    .collect(),
            )
        };
        events.push(sse(
            "content_block_start",
            json!({ "type": "content_block_start", "index": index, "content_block": start }),
        ));
        for delta in deltas {
            events.push(sse(
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": index, "delta": delta }),
            ));
        }
        events.push(sse(
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": index }),
        ));
    }
    events.push(sse(
        "message_delta",
        json!({ "type": "message_delta",
                "delta": { "stop_reason": stop_reason, "stop_sequence": null },
                "usage": { "output_tokens": output_tokens } }),
    ));
    events.push(sse("message_stop", json!({ "type": "message_stop" })));
    // One chunk per event, so the client's SSE parser sees a real stream.
    let stream = futures::stream::iter(events.into_iter().map(Ok::<_, Infallible>));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .expect("SSE response")
}

/// One server-sent event.
fn sse(event: &str, data: Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// `text` in pieces of about `size` bytes, split at character boundaries; at least one piece.
fn chunks(text: &str, size: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        current.push(c);
        if current.len() >= size {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() || out.is_empty() {
        out.push(current);
    }
    out
}

async fn count_tokens(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = match denied(&shared, &headers) {
        Some(denied) => denied,
        None => axum::Json(json!({ "input_tokens": body.len() / 4 })).into_response(),
    };
    shared.record(&method, &uri, &headers, &body, response.status().as_u16());
    response
}

async fn models(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let response = match denied(&shared, &headers) {
        Some(denied) => denied,
        None => axum::Json(json!({
            "data": [{ "type": "model", "id": "claude-sonnet-standin", "display_name": "Stand-in Sonnet",
                       "created_at": "2026-01-01T00:00:00Z" }],
            "has_more": false, "first_id": "claude-sonnet-standin", "last_id": "claude-sonnet-standin",
        }))
        .into_response(),
    };
    shared.record(&method, &uri, &headers, &[], response.status().as_u16());
    response
}

/// Claude Code's reachability check.
async fn hello(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    shared.record(&method, &uri, &headers, &[], 200);
    StatusCode::OK.into_response()
}

async fn unknown(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.record(&method, &uri, &headers, &body, 404);
    error(
        StatusCode::NOT_FOUND,
        "not_found_error",
        &format!("the stand-in does not serve {method} {}", uri.path()),
    )
}
