//! A stand-in for the Gemini API (Google AI, `generativelanguage`) on `127.0.0.1:0`, speaking the
//! protocol Gemini CLI uses: `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`, a
//! stream of server-sent events whose `data` is each a whole `GenerateContentResponse`
//! (`candidates[0].content.parts` with `text` or `functionCall` parts; the last one carries the
//! `finishReason` and `usageMetadata`; no end marker), `:generateContent` answered as one JSON
//! response, `:countTokens`, `GET /v1beta/models`, and the `x-goog-api-key` (or `?key=`) check
//! with Google's error body (`{"error": {"code", "message", "status", "details"}}`).
//!
//! The model is a script: a function from the request to the parts of the reply. Gemini CLI
//! sends the whole history in `contents` (`role: user | model`; a tool's result comes back as a
//! `functionResponse` part), so a script reads the state of the conversation from the request
//! alone. Every request is recorded, unknown ones too.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One part of a scripted reply.
#[derive(Debug, Clone)]
pub enum Part {
    /// Text the model says.
    Text(String),
    /// A call of one of the functions the request declared.
    FunctionCall {
        /// The function's name as the client declared it, e.g. `write_file` or
        /// `mcp_<server>_<tool>`.
        name: String,
        /// Its arguments.
        args: Value,
    },
}

impl Part {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }

    /// A function call.
    pub fn function_call(name: impl Into<String>, args: Value) -> Self {
        Self::FunctionCall {
            name: name.into(),
            args,
        }
    }
}

/// The scripted model: given a `generateContent` request, the parts of its reply.
pub type Script = Arc<dyn Fn(&Conversation<'_>) -> Vec<Part> + Send + Sync>;

/// A `generateContent` request, with the questions a script asks of it.
#[derive(Debug, Clone, Copy)]
pub struct Conversation<'a> {
    /// The request body.
    pub body: &'a Value,
}

/// A function's result, as the client sent it back.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionResponse {
    /// The function's name.
    pub name: String,
    /// The call's id, when the client gave one.
    pub id: Option<String>,
    /// The `response` object as sent.
    pub response: Value,
    /// Its text: `output` or `content` when a string, else the text of `content` parts, else the
    /// JSON.
    pub text: String,
}

impl Conversation<'_> {
    /// Names of the functions the request declares, in order.
    pub fn tools_offered(&self) -> Vec<String> {
        tool_names(self.body)
    }

    /// Whether the request declares this function.
    pub fn offers(&self, name: &str) -> bool {
        self.tools_offered().iter().any(|t| t == name)
    }

    /// Whether the client asks for a JSON answer (`responseMimeType: application/json`), as
    /// Gemini CLI does for its side questions (e.g. who speaks next).
    pub fn wants_json(&self) -> bool {
        self.body["generationConfig"]["responseMimeType"] == "application/json"
    }

    /// Names of the functions the model has called so far in this conversation, in order.
    pub fn tools_called(&self) -> Vec<String> {
        self.parts("model", "functionCall")
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Whether the model has called this function in this conversation.
    pub fn called(&self, name: &str) -> bool {
        self.tools_called().iter().any(|t| t == name)
    }

    /// The function results the client sent back so far.
    pub fn function_responses(&self) -> Vec<FunctionResponse> {
        self.parts("user", "functionResponse")
            .map(|p| FunctionResponse {
                name: p["name"].as_str().unwrap_or_default().to_owned(),
                id: p["id"].as_str().map(str::to_owned),
                response: p["response"].clone(),
                text: response_text(&p["response"]),
            })
            .collect()
    }

    /// The result of the last call of `name`, if it came back.
    pub fn response_of(&self, name: &str) -> Option<FunctionResponse> {
        self.function_responses()
            .into_iter()
            .rev()
            .find(|r| r.name == name)
    }

    /// The text the user wrote (text parts of `user` turns), joined with newlines.
    pub fn user_text(&self) -> String {
        self.body["contents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["role"] == "user")
            .filter_map(|c| c["parts"].as_array())
            .flatten()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The values of the `kind` key in the parts of `role`'s turns.
    fn parts<'b>(&'b self, role: &'b str, kind: &'b str) -> impl Iterator<Item = &'b Value> + 'b {
        self.body["contents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(move |c| c["role"] == role)
            .filter_map(|c| c["parts"].as_array())
            .flatten()
            .filter_map(move |p| p.get(kind))
    }
}

/// The text of a `functionResponse.response`.
fn response_text(response: &Value) -> String {
    // Gemini CLI sends `{"output": "..."}`; the AI SDK (opencode) `{"name", "content": "..."}`.
    for key in ["output", "content"] {
        if let Some(text) = response[key].as_str() {
            return text.to_owned();
        }
    }
    if let Some(parts) = response["content"].as_array() {
        return parts
            .iter()
            .map(|p| {
                p["text"]
                    .as_str()
                    .map_or_else(|| p.to_string(), str::to_owned)
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    match response {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Names in a request body's `tools[].functionDeclarations`.
pub fn tool_names(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["functionDeclarations"].as_array())
        .flatten()
        .filter_map(|f| f["name"].as_str().map(str::to_owned))
        .collect()
}

pub use crate::recorded::Recorded;

impl Recorded {
    /// The model and the method of a `/v1beta/models/{model}:{method}` call.
    pub fn model_call(&self) -> Option<(&str, &str)> {
        let path = self.path.split('?').next()?;
        path.strip_prefix("/v1beta/models/")?.split_once(':')
    }

    /// Whether this is a model turn (`:streamGenerateContent` or `:generateContent`).
    pub fn is_generate(&self) -> bool {
        self.method == "POST"
            && matches!(
                self.model_call(),
                Some((_, "streamGenerateContent" | "generateContent"))
            )
    }
}

type Shared = crate::recorded::StandIn<Script>;

/// The running stand-in; stops when dropped.
pub struct GeminiStandIn {
    /// `http://127.0.0.1:PORT`, the base URL without the API version, as
    /// `GOOGLE_GEMINI_BASE_URL` and drydock's `--gemini-base-url` take it.
    pub url: String,
    shared: Arc<Shared>,
    _server: crate::recorded::Server,
}

impl GeminiStandIn {
    /// Starts the stand-in: requests must carry the key in `x-goog-api-key` (or `?key=`);
    /// `script` plays the model.
    pub async fn start(
        key: &str,
        script: impl Fn(&Conversation<'_>) -> Vec<Part> + Send + Sync + 'static,
    ) -> Self {
        let shared = Arc::new(Shared::new(
            "gemini",
            key,
            Arc::new(script),
            Recorded::is_generate,
            '-',
        ));
        // `{model}:{method}` is one path segment, so every call goes through one handler that
        // splits it.
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = crate::recorded::Server::start(app).await;
        Self {
            url: format!("http://{}", server.addr),
            shared,
            _server: server,
        }
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests()
    }

    /// Input (prompt) and output (candidates) tokens reported in answers so far.
    pub fn reported_usage(&self) -> (u64, u64) {
        self.shared.reported_usage()
    }

    /// The model turns (`:streamGenerateContent`, `:generateContent`) so far.
    pub fn generate_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_generate)
            .collect()
    }
}

/// Google's error body.
fn error(status: StatusCode, google_status: &str, message: &str, details: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        json!({ "error": {
            "code": status.as_u16(), "message": message, "status": google_status,
            "details": details,
        }})
        .to_string(),
    )
        .into_response()
}

/// The error for a request without the right key, as the real API answers it; `None` when the
/// key is right.
fn denied(shared: &Shared, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
    let from_header = headers
        .get("x-goog-api-key")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let from_query = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("key="))
            .map(str::to_owned)
    });
    match from_header.or(from_query) {
        Some(key) if key == shared.key => None,
        Some(_) => Some(error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": { "service": "generativelanguage.googleapis.com" },
            }]),
        )),
        None => Some(error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            json!([]),
        )),
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = route(&shared, &method, &uri, &headers, &body);
    shared.record(&method, &uri, &headers, &body, response.status().as_u16());
    response
}

fn route(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let path = uri.path();
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("the stand-in does not serve {method} {path}"),
            json!([]),
        )
    };
    if method == Method::GET && path == "/v1beta/models" {
        return denied(shared, uri, headers).unwrap_or_else(|| {
            axum::Json(json!({ "models": [{
                "name": "models/gemini-2.5-pro", "displayName": "Stand-in Gemini",
                "supportedGenerationMethods": ["generateContent", "countTokens"],
            }]}))
            .into_response()
        });
    }
    let Some((model, call)) = path
        .strip_prefix("/v1beta/models/")
        .and_then(|rest| rest.split_once(':'))
    else {
        return not_found();
    };
    if method != Method::POST {
        return not_found();
    }
    if let Some(denied) = denied(shared, uri, headers) {
        return denied;
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received.",
            json!([]),
        );
    };
    match call {
        "countTokens" => {
            let tokens = u64::try_from(body.len() / 4).unwrap_or(u64::MAX);
            axum::Json(json!({ "totalTokens": tokens })).into_response()
        }
        "generateContent" => generate(shared, model, &request, body.len(), false),
        "streamGenerateContent" => generate(shared, model, &request, body.len(), true),
        _ => not_found(),
    }
}

fn generate(
    shared: &Shared,
    model: &str,
    request: &Value,
    body_len: usize,
    stream: bool,
) -> Response {
    if !request["contents"].is_array() {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "* GenerateContentRequest.contents: contents is not specified",
            json!([]),
        );
    }
    let parts = (shared.script)(&Conversation { body: request });
    let offered = tool_names(request);
    // A real model cannot call a function it was not offered; a script that tries is wrong, and
    // the client shows this error in its output.
    if let Some(name) = parts.iter().find_map(|p| match p {
        Part::FunctionCall { name, .. } if !offered.contains(name) => Some(name),
        _ => None,
    }) {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            &format!("stand-in script error: it calls {name}, which the request does not declare"),
            json!([]),
        );
    }
    let prompt_tokens = u64::try_from(body_len / 4).unwrap_or(u64::MAX);
    let candidates_tokens: u64 = parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => u64::try_from(t.len() / 4).unwrap_or(0) + 1,
            Part::FunctionCall { args, .. } => {
                u64::try_from(args.to_string().len() / 4).unwrap_or(0) + 1
            }
        })
        .sum();
    let usage = json!({
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": candidates_tokens,
        "totalTokenCount": prompt_tokens + candidates_tokens,
    });
    shared.report_usage(prompt_tokens, candidates_tokens);
    let response_id = shared.id("resp");
    let chunk = |parts: Vec<Value>, last: bool| {
        let mut candidate = json!({ "content": { "role": "model", "parts": parts }, "index": 0 });
        let mut response = json!({ "modelVersion": model, "responseId": response_id });
        if last {
            candidate["finishReason"] = json!("STOP");
            response["usageMetadata"] = usage.clone();
        }
        response["candidates"] = json!([candidate]);
        response
    };
    let whole: Vec<Value> = parts
        .iter()
        .map(|p| match p {
            Part::Text(text) => json!({ "text": text }),
            Part::FunctionCall { name, args } => {
                json!({ "functionCall": { "name": name, "args": args } })
            }
        })
        .collect();
    if !stream {
        return axum::Json(chunk(whole, true)).into_response();
    }

    // Text arrives in pieces, a function call whole, as the real API streams them; the last
    // event carries the finish reason and the usage.
    let mut pieces: Vec<Value> = Vec::new();
    for part in &whole {
        match part["text"].as_str() {
            Some(text) => pieces.extend(chunks(text, 24).into_iter().map(|t| json!({ "text": t }))),
            None => pieces.push(part.clone()),
        }
    }
    if pieces.is_empty() {
        pieces.push(json!({ "text": "" }));
    }
    let count = pieces.len();
    let events: Vec<Bytes> = pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            Bytes::from(format!(
                "data: {}\r\n\r\n",
                chunk(vec![piece], i + 1 == count)
            ))
        })
        .collect();
    // One chunk per event, so the client's SSE parser sees a real stream.
    let stream = futures::stream::iter(events.into_iter().map(Ok::<_, Infallible>));
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
