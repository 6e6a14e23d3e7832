//! A stand-in for the OpenAI Responses API on `127.0.0.1:0`, speaking the protocol the Codex CLI
//! uses: `POST /v1/responses` streamed as server-sent events (`response.created`,
//! `response.in_progress`, `response.output_item.added`, text, function-call, custom-tool
//! input deltas and their `.done` events, `response.output_item.done`, `response.completed`,
//! each with a `sequence_number`) or answered as one JSON response, the `Authorization: Bearer`
//! check with OpenAI's error body, and `GET /v1/models`.
//!
//! The model is a script: a function from the request to the output items of the reply. Codex
//! sends the whole history in `input` (`store: false`), so a script reads the state of the
//! conversation from the request alone. Every request is recorded, unknown ones too.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// One output item of a scripted reply.
#[derive(Debug, Clone)]
pub enum Item {
    /// An assistant message with this text.
    Message(String),
    /// A call of a function tool; `namespace` for tools loaded through tool search (Codex puts
    /// MCP tools in namespace `mcp__<server>`).
    FunctionCall {
        /// The function's namespace, if it has one.
        namespace: Option<String>,
        /// Its name.
        name: String,
        /// Its arguments (sent as a JSON string, as the API does).
        arguments: Value,
    },
    /// A call of a freeform (`custom`) tool, e.g. Codex's `apply_patch`.
    CustomToolCall {
        /// The tool's name.
        name: String,
        /// Its raw input.
        input: String,
    },
    /// A client-executed `tool_search` call.
    ToolSearch {
        /// What to search for.
        query: String,
    },
}

impl Item {
    /// An assistant message.
    pub fn message(text: impl Into<String>) -> Self {
        Self::Message(text.into())
    }

    /// A function call without a namespace.
    pub fn function_call(name: impl Into<String>, arguments: Value) -> Self {
        Self::FunctionCall {
            namespace: None,
            name: name.into(),
            arguments,
        }
    }

    /// A custom tool call.
    pub fn custom_tool_call(name: impl Into<String>, input: impl Into<String>) -> Self {
        Self::CustomToolCall {
            name: name.into(),
            input: input.into(),
        }
    }
}

/// The scripted model: given a request to `/v1/responses`, the output items of its reply.
pub type Script = Arc<dyn Fn(&Conversation<'_>) -> Vec<Item> + Send + Sync>;

/// A request to `/v1/responses`, with the questions a script asks of it.
#[derive(Debug, Clone, Copy)]
pub struct Conversation<'a> {
    /// The request body.
    pub body: &'a Value,
}

/// The output of a tool call, as the client sent it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutput {
    /// The call's id.
    pub call_id: String,
    /// The called tool, `namespace.name` when it has a namespace.
    pub name: Option<String>,
    /// The output's text (text parts joined with newlines).
    pub text: String,
}

impl Conversation<'_> {
    /// The request's `input` items.
    pub fn input(&self) -> Vec<&Value> {
        self.body["input"]
            .as_array()
            .into_iter()
            .flatten()
            .collect()
    }

    /// Names of the function and custom tools the request offers.
    pub fn tools_offered(&self) -> Vec<String> {
        tool_names(self.body)
    }

    /// Whether the request offers this function or custom tool, or a tool of this type
    /// (`tool_search`).
    pub fn offers(&self, name: &str) -> bool {
        self.tools_offered().iter().any(|t| t == name)
            || self.body["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["type"] == name)
    }

    /// Names of the tools called so far (`namespace.name` for namespaced functions).
    pub fn tools_called(&self) -> Vec<String> {
        self.input()
            .into_iter()
            .filter(|i| i["type"] == "function_call" || i["type"] == "custom_tool_call")
            .filter_map(call_name)
            .collect()
    }

    /// Whether this tool (`namespace.name` for namespaced functions) was called.
    pub fn called(&self, name: &str) -> bool {
        self.tools_called().iter().any(|t| t == name)
    }

    /// Whether the model has searched for tools in this conversation.
    pub fn searched(&self) -> bool {
        self.input().iter().any(|i| i["type"] == "tool_search_call")
    }

    /// Tools the client loaded through tool search, as `namespace.name` (or `name`).
    pub fn tools_found(&self) -> Vec<String> {
        self.input()
            .into_iter()
            .filter(|i| i["type"] == "tool_search_output")
            .filter_map(|i| i["tools"].as_array())
            .flatten()
            .flat_map(|t| {
                if t["type"] == "namespace" {
                    let ns = t["name"].as_str().unwrap_or_default().to_owned();
                    t["tools"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f["name"].as_str().map(|n| format!("{ns}.{n}")))
                        .collect::<Vec<_>>()
                } else {
                    t["name"].as_str().map(str::to_owned).into_iter().collect()
                }
            })
            .collect()
    }

    /// Outputs of tool calls the client sent back.
    pub fn outputs(&self) -> Vec<CallOutput> {
        let input = self.input();
        let calls: Vec<(String, String)> = input
            .iter()
            .filter(|i| i["type"] == "function_call" || i["type"] == "custom_tool_call")
            .filter_map(|i| Some((i["call_id"].as_str()?.to_owned(), call_name(i)?)))
            .collect();
        input
            .iter()
            .filter(|i| {
                i["type"] == "function_call_output" || i["type"] == "custom_tool_call_output"
            })
            .map(|i| {
                let id = i["call_id"].as_str().unwrap_or_default().to_owned();
                CallOutput {
                    name: calls.iter().find(|(c, _)| *c == id).map(|(_, n)| n.clone()),
                    call_id: id,
                    text: output_text(&i["output"]),
                }
            })
            .collect()
    }

    /// The output of the last call of `name`, if it came back.
    pub fn output_of(&self, name: &str) -> Option<CallOutput> {
        self.outputs()
            .into_iter()
            .rev()
            .find(|o| o.name.as_deref() == Some(name))
    }
}

/// `namespace.name` or `name` of a call item.
fn call_name(item: &Value) -> Option<String> {
    let name = item["name"].as_str()?;
    Some(match item["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_owned(),
    })
}

/// A call output: a string, or content parts.
fn output_text(output: &Value) -> String {
    match output {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                p["text"]
                    .as_str()
                    .map_or_else(|| p.to_string(), str::to_owned)
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Names of the function and custom tools in a request body's `tools` array.
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
    /// Whether this is a model turn (`POST /v1/responses`).
    pub fn is_response(&self) -> bool {
        self.method == "POST" && self.path.split('?').next() == Some("/v1/responses")
    }
}

type Shared = crate::recorded::StandIn<Script>;

/// The running stand-in; stops when dropped.
pub struct OpenAiStandIn {
    /// `http://127.0.0.1:PORT/v1`, the base URL as OpenAI clients take it (`OPENAI_BASE_URL`).
    pub base_url: String,
    shared: Arc<Shared>,
    _server: crate::recorded::Server,
}

impl OpenAiStandIn {
    /// Starts the stand-in: requests must carry `Authorization: Bearer key`; `script` plays
    /// the model.
    pub async fn start(
        key: &str,
        script: impl Fn(&Conversation<'_>) -> Vec<Item> + Send + Sync + 'static,
    ) -> Self {
        let shared = Arc::new(Shared::new(
            "openai",
            key,
            Arc::new(script),
            Recorded::is_response,
            '_',
        ));
        let app = Router::new()
            .route("/v1/responses", post(responses))
            .route("/v1/models", get(models))
            .fallback(unknown)
            .with_state(shared.clone());
        let server = crate::recorded::Server::start(app).await;
        Self {
            base_url: format!("http://{}/v1", server.addr),
            shared,
            _server: server,
        }
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests()
    }

    /// Input and output tokens the stand-in's answers reported so far.
    pub fn reported_usage(&self) -> (u64, u64) {
        self.shared.reported_usage()
    }

    /// The model turns (`POST /v1/responses`) so far.
    pub fn response_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_response)
            .collect()
    }
}

/// OpenAI's error body.
fn error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
            .to_string(),
    )
        .into_response()
}

/// The 401 for a request without `Authorization: Bearer <key>`; `None` when the key is right.
fn denied(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(shared.key.as_str()) {
        return None;
    }
    Some(error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        Some("invalid_api_key"),
        "Incorrect API key provided.",
    ))
}

async fn responses(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = responses_response(&shared, &headers, &body);
    shared.record(&method, &uri, &headers, &body, response.status().as_u16());
    response
}

/// Numbers the events of one stream.
struct Events {
    next: u64,
    out: Vec<Bytes>,
}

impl Events {
    fn push(&mut self, mut data: Value) {
        let kind = data["type"].as_str().unwrap_or_default().to_owned();
        data["sequence_number"] = json!(self.next);
        self.next += 1;
        self.out
            .push(Bytes::from(format!("event: {kind}\ndata: {data}\n\n")));
    }
}

fn responses_response(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Some(denied) = denied(shared, headers) {
        return denied;
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "the body is not JSON",
        );
    };
    let Some(model) = request["model"].as_str().map(str::to_owned) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "model is required",
        );
    };
    let conversation = Conversation { body: &request };
    let items = (shared.script)(&conversation);
    // A real model calls only what it was offered (or found through tool search).
    let found = conversation.tools_found();
    for item in &items {
        let missing = match item {
            Item::FunctionCall {
                namespace, name, ..
            } => {
                let full = namespace
                    .as_deref()
                    .map_or_else(|| name.clone(), |ns| format!("{ns}.{name}"));
                (!conversation.offers(&full) && !found.contains(&full)).then_some(full)
            }
            Item::CustomToolCall { name, .. } => (!conversation.offers(name)).then(|| name.clone()),
            Item::ToolSearch { .. } => {
                (!conversation.offers("tool_search")).then(|| "tool_search".to_owned())
            }
            Item::Message(_) => None,
        };
        if let Some(name) = missing {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                &format!(
                    "stand-in script error: it calls {name}, which the request does not offer"
                ),
            );
        }
    }

    let output: Vec<Value> = items
        .iter()
        .map(|item| match item {
            Item::Message(text) => json!({
                "type": "message", "id": shared.id("msg"), "status": "completed",
                "role": "assistant",
                "content": [{ "type": "output_text", "text": text, "annotations": [] }],
            }),
            Item::FunctionCall {
                namespace,
                name,
                arguments,
            } => {
                let mut call = json!({
                    "type": "function_call", "id": shared.id("fc"), "status": "completed",
                    "call_id": shared.id("call"), "name": name, "arguments": arguments.to_string(),
                });
                if let Some(ns) = namespace {
                    call["namespace"] = json!(ns);
                }
                call
            }
            Item::CustomToolCall { name, input } => json!({
                "type": "custom_tool_call", "id": shared.id("ctc"), "status": "completed",
                "call_id": shared.id("call"), "name": name, "input": input,
            }),
            Item::ToolSearch { query } => json!({
                "type": "tool_search_call", "id": shared.id("tsc"), "status": "completed",
                "call_id": shared.id("call"), "execution": "client",
                "arguments": { "query": query, "limit": 8 },
            }),
        })
        .collect();
    let input_tokens = u64::try_from(body.len() / 4).unwrap_or(u64::MAX);
    let output_tokens: u64 = output
        .iter()
        .map(|i| u64::try_from(i.to_string().len() / 4).unwrap_or(0) + 1)
        .sum();
    shared.report_usage(input_tokens, output_tokens);
    let usage = json!({
        "input_tokens": input_tokens,
        "input_tokens_details": { "cached_tokens": 0 },
        "output_tokens": output_tokens,
        "output_tokens_details": { "reasoning_tokens": 0 },
        "total_tokens": input_tokens + output_tokens,
    });
    let id = shared.id("resp");
    let response = |status: &str, output: &[Value], usage: &Value| {
        json!({
            "id": id, "object": "response", "created_at": 1_795_000_000, "status": status,
            "model": model, "output": output, "usage": usage,
            "parallel_tool_calls": request["parallel_tool_calls"],
            "tool_choice": request["tool_choice"],
            "error": null, "incomplete_details": null,
        })
    };
    if request["stream"].as_bool() != Some(true) {
        return axum::Json(response("completed", &output, &usage)).into_response();
    }

    let mut events = Events {
        next: 0,
        out: Vec::new(),
    };
    events.push(json!({ "type": "response.created", "response": response("in_progress", &[], &Value::Null) }));
    events.push(json!({ "type": "response.in_progress", "response": response("in_progress", &[], &Value::Null) }));
    for (index, item) in output.iter().enumerate() {
        let item_id = item["id"].clone();
        let mut added = item.clone();
        added["status"] = json!("in_progress");
        match item["type"].as_str() {
            Some("message") => {
                added["content"] = json!([]);
                let text = item["content"][0]["text"].as_str().unwrap_or_default();
                let empty = json!({ "type": "output_text", "text": "", "annotations": [] });
                events.push(json!({ "type": "response.output_item.added", "output_index": index, "item": added }));
                events.push(
                    json!({ "type": "response.content_part.added", "item_id": item_id,
                                    "output_index": index, "content_index": 0, "part": empty }),
                );
                for part in chunks(text, 24) {
                    events.push(
                        json!({ "type": "response.output_text.delta", "item_id": item_id,
                                        "output_index": index, "content_index": 0, "delta": part }),
                    );
                }
                events.push(
                    json!({ "type": "response.output_text.done", "item_id": item_id,
                                    "output_index": index, "content_index": 0, "text": text }),
                );
                events.push(
                    json!({ "type": "response.content_part.done", "item_id": item_id,
                                    "output_index": index, "content_index": 0,
                                    "part": item["content"][0] }),
                );
            }
            Some("function_call") => {
                added["arguments"] = json!("");
                let arguments = item["arguments"].as_str().unwrap_or_default();
                events.push(json!({ "type": "response.output_item.added", "output_index": index, "item": added }));
                for part in chunks(arguments, 16) {
                    events.push(json!({ "type": "response.function_call_arguments.delta",
                                        "item_id": item_id, "output_index": index, "delta": part }));
                }
                events.push(json!({ "type": "response.function_call_arguments.done",
                                    "item_id": item_id, "output_index": index, "arguments": arguments }));
            }
            Some("custom_tool_call") => {
                added["input"] = json!("");
                let input = item["input"].as_str().unwrap_or_default();
                events.push(json!({ "type": "response.output_item.added", "output_index": index, "item": added }));
                for part in chunks(input, 32) {
                    events.push(json!({ "type": "response.custom_tool_call_input.delta",
                                        "item_id": item_id, "output_index": index, "delta": part }));
                }
                events.push(json!({ "type": "response.custom_tool_call_input.done",
                                    "item_id": item_id, "output_index": index, "input": input }));
            }
            _ => {
                events.push(json!({ "type": "response.output_item.added", "output_index": index, "item": added }));
            }
        }
        events.push(
            json!({ "type": "response.output_item.done", "output_index": index, "item": item }),
        );
    }
    events.push(
        json!({ "type": "response.completed", "response": response("completed", &output, &usage) }),
    );
    // One chunk per event, so the client's SSE parser sees a real stream.
    let stream = futures::stream::iter(events.out.into_iter().map(Ok::<_, Infallible>));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .expect("SSE response")
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

async fn models(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let response = match denied(&shared, &headers) {
        Some(denied) => denied,
        None => axum::Json(json!({
            "object": "list",
            "data": [{ "id": "gpt-standin", "object": "model", "created": 1_795_000_000, "owned_by": "drydock-tests" }],
        }))
        .into_response(),
    };
    shared.record(&method, &uri, &headers, &[], response.status().as_u16());
    response
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
        "invalid_request_error",
        None,
        &format!("the stand-in does not serve {method} {}", uri.path()),
    )
}
