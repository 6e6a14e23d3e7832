//! A small MCP client for connection tests: `initialize`, `notifications/initialized`, then
//! `tools/list`, over Streamable HTTP (falling back to the older HTTP+SSE transport) or over a
//! stdio server's pipes.
//!
//! It only probes: it never calls a tool. Failures become [`ProbeError`]s whose text is meant for
//! people (what failed and what to check). Texts may quote the remote server, so callers redact
//! the connector's secret values from them before storing or returning them.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::outbound;

/// The protocol version drydock asks for; servers answer with the one they speak.
const PROTOCOL_VERSION: &str = "2025-06-18";
/// Most bytes read from one answer (JSON body or event stream).
const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Most `tools/list` pages followed.
const MAX_PAGES: usize = 20;
const SESSION_HEADER: &str = "mcp-session-id";
const PROTOCOL_HEADER: &str = "mcp-protocol-version";

/// What to connect to.
pub struct HttpTarget {
    /// The MCP endpoint.
    pub url: Url,
    /// Headers sent with every request (credentials).
    pub headers: HeaderMap,
    /// Allow private, loopback and link-local addresses.
    pub allow_private: bool,
}

/// A tool the server offers.
#[derive(Debug, Clone)]
pub struct Tool {
    /// Tool name.
    pub name: String,
    /// What it does, as the server says.
    pub description: Option<String>,
}

/// What a successful probe learned.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The tools offered.
    pub tools: Vec<Tool>,
    /// `streamable-http`, `sse` or `stdio`.
    pub transport: &'static str,
    /// The server's name, if it gave one.
    pub server_name: Option<String>,
    /// The server's version, if it gave one.
    pub server_version: Option<String>,
}

/// Why a probe failed; `Display` is the message shown to the user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The URL is unusable.
    #[error("the URL cannot be used: {0}")]
    BadUrl(String),
    /// The host resolves to (or is) an address connectors may not reach.
    #[error(
        "refused to connect to {host}: it is a {kind} address. Connectors may only reach \
         public addresses unless the operator sets DRYDOCK_ALLOW_PRIVATE_CONNECTOR_URLS=true"
    )]
    Refused {
        /// Host as written in the URL, with the address it resolved to.
        host: String,
        /// What kind of address, e.g. `loopback`.
        kind: &'static str,
    },
    /// DNS lookup failed.
    #[error("could not resolve the host name {host} (DNS): {detail}")]
    Dns {
        /// Host name.
        host: String,
        /// Resolver's answer.
        detail: String,
    },
    /// TCP connection failed.
    #[error("could not connect to {host}: {detail}")]
    Connect {
        /// Host (and port).
        host: String,
        /// Why.
        detail: String,
    },
    /// TLS handshake failed.
    #[error("the TLS (HTTPS) handshake with {host} failed: {detail}")]
    Tls {
        /// Host.
        host: String,
        /// Why, e.g. an untrusted certificate.
        detail: String,
    },
    /// No complete answer in time.
    #[error("no complete answer from {host} within {secs} s (timed out)")]
    Timeout {
        /// Host.
        host: String,
        /// The limit.
        secs: u64,
    },
    /// 401 or 403.
    #[error(
        "the server answered {status}{detail}. The credentials were missing or not accepted: \
         check the connector's headers (usually the Authorization header and its token)"
    )]
    Unauthorized {
        /// The status.
        status: StatusCode,
        /// What the server said, with a leading separator, or empty.
        detail: String,
    },
    /// A redirect; connectors do not follow them.
    #[error(
        "the server answered {status} redirecting to {location}; connectors do not follow \
         redirects, so use the final URL"
    )]
    Redirect {
        /// The status.
        status: StatusCode,
        /// Where it pointed (scheme, host and path only).
        location: String,
    },
    /// The URL answers, but not like an MCP server.
    #[error("this URL does not look like an MCP server: {0}")]
    NotMcp(String),
    /// An unexpected HTTP status.
    #[error("the server answered {status}{detail}")]
    Status {
        /// The status.
        status: StatusCode,
        /// A short excerpt of the body, with a leading separator, or empty.
        detail: String,
    },
    /// The server answered a request with a JSON-RPC error.
    #[error("the MCP server refused {method}: {message} (JSON-RPC error {code})")]
    Rpc {
        /// The request.
        method: &'static str,
        /// Its error code.
        code: i64,
        /// Its message.
        message: String,
    },
    /// The server broke the protocol.
    #[error("the MCP server sent an answer drydock cannot use: {0}")]
    Protocol(String),
    /// The connection broke mid-answer, or another transport failure.
    #[error("the connection to {host} failed: {detail}")]
    Transport {
        /// Host.
        host: String,
        /// Why.
        detail: String,
    },
    /// A stdio server's output ended (the command exited or closed stdout) before an answer.
    #[error("the command ended before answering {0}; check the command, its arguments and env")]
    Ended(&'static str),
    /// A failure on drydock's side.
    #[error("drydock could not run the test: {0}")]
    Internal(String),
}

/// Connects to `target`, lists its tools and disconnects, all within `timeout`.
pub async fn probe(target: &HttpTarget, timeout: Duration) -> Result<Probe, ProbeError> {
    let host = host_of(&target.url);
    match tokio::time::timeout(timeout, probe_inner(target, timeout)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::Timeout {
            host,
            secs: timeout.as_secs(),
        }),
    }
}

async fn probe_inner(target: &HttpTarget, timeout: Duration) -> Result<Probe, ProbeError> {
    let client = outbound::pinned_client(&target.url, target.allow_private, timeout / 2).await?;
    let conn = Conn {
        client,
        host: host_of(&target.url),
        headers: target.headers.clone(),
    };
    match streamable(&conn, &target.url).await {
        Err(Fallback(post_status, post_detail)) => {
            legacy_sse(&conn, &target.url, post_status, &post_detail).await
        }
        Ok(result) => result,
    }
}

/// Scheme-less `host[:port]` for messages.
pub(crate) fn host_of(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => "the server".to_owned(),
    }
}

struct Conn {
    client: reqwest::Client,
    host: String,
    headers: HeaderMap,
}

/// Streamable HTTP said "not here" with this status: try the older transport.
/// Also what the server said to the POST, for the message if the older transport fails too.
struct Fallback(StatusCode, String);

fn initialize_request() -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "drydock", "version": env!("CARGO_PKG_VERSION")},
        },
    })
}

fn tools_list_request(id: i64, cursor: Option<&str>) -> Value {
    match cursor {
        Some(cursor) => {
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {"cursor": cursor}})
        }
        None => json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}),
    }
}

const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

impl Conn {
    fn post(&self, url: &Url, body: String) -> reqwest::RequestBuilder {
        self.client
            .post(url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(body)
    }

    fn send_error(&self, err: reqwest::Error) -> ProbeError {
        classify(&self.host, &err)
    }
}

/// The MCP handshake over Streamable HTTP; `Err(Fallback)` when the POST got a 4xx that
/// suggests an older HTTP+SSE server.
async fn streamable(conn: &Conn, url: &Url) -> Result<Result<Probe, ProbeError>, Fallback> {
    let resp = match conn
        .post(url, initialize_request().to_string())
        .send()
        .await
    {
        Ok(resp) => resp,
        Err(err) => return Ok(Err(conn.send_error(err))),
    };
    let status = resp.status();
    if status.is_client_error()
        && !matches!(
            status,
            StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
                | StatusCode::PROXY_AUTHENTICATION_REQUIRED
                | StatusCode::TOO_MANY_REQUESTS
        )
    {
        return Err(Fallback(status, body_excerpt(resp).await));
    }
    Ok(streamable_session(conn, url, resp).await)
}

async fn streamable_session(
    conn: &Conn,
    url: &Url,
    resp: reqwest::Response,
) -> Result<Probe, ProbeError> {
    let session = resp
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let init = answer(conn, resp, 1, "initialize").await?;
    let (version, server_name, server_version) = read_initialize(&init)?;

    let with_session = |req: reqwest::RequestBuilder| {
        let req = req.header(PROTOCOL_HEADER, &version);
        match &session {
            Some(id) => req.header(SESSION_HEADER, id),
            None => req,
        }
    };
    let resp = with_session(conn.post(url, INITIALIZED.to_owned()))
        .send()
        .await
        .map_err(|e| conn.send_error(e))?;
    check_status(&resp)?;

    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..MAX_PAGES {
        let id = 2 + page as i64;
        let resp =
            with_session(conn.post(url, tools_list_request(id, cursor.as_deref()).to_string()))
                .send()
                .await
                .map_err(|e| conn.send_error(e))?;
        let result = answer(conn, resp, id, "tools/list").await?;
        cursor = read_tools(&result, &mut tools)?;
        if cursor.is_none() {
            break;
        }
    }

    // Politely end the session; its outcome does not matter.
    if let Some(id) = &session {
        let _ = conn
            .client
            .delete(url.clone())
            .headers(conn.headers.clone())
            .header(SESSION_HEADER, id)
            .header(PROTOCOL_HEADER, &version)
            .send()
            .await;
    }
    Ok(Probe {
        tools,
        transport: "streamable-http",
        server_name,
        server_version,
    })
}

/// The older HTTP+SSE transport (protocol 2024-11-05): GET opens an event stream whose first
/// event names the endpoint to POST messages to; answers arrive on the stream.
async fn legacy_sse(
    conn: &Conn,
    url: &Url,
    post_status: StatusCode,
    post_detail: &str,
) -> Result<Probe, ProbeError> {
    let resp = conn
        .client
        .get(url.clone())
        .headers(conn.headers.clone())
        .header(ACCEPT, "text/event-stream")
        .send()
        .await
        .map_err(|e| conn.send_error(e))?;
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(ProbeError::Unauthorized {
            status,
            detail: String::new(),
        });
    }
    if status.is_redirection() {
        return Err(redirect_error(&resp));
    }
    let content_type = content_type(resp.headers());
    if !status.is_success() || !content_type.starts_with("text/event-stream") {
        if status == post_status && status == StatusCode::NOT_FOUND {
            return Err(ProbeError::Status {
                status,
                detail: ": nothing is served at this path. Check the URL (MCP servers usually \
                         answer at a path such as /mcp or /sse)"
                    .into(),
            });
        }
        return Err(ProbeError::NotMcp(format!(
            "a POST of an MCP initialize request got {post_status}{post_detail}, and a GET asking \
             for an event stream got {status}{}",
            describe_type(&content_type)
        )));
    }
    let mut events = SseReader::new(resp);
    let endpoint = loop {
        match events.next_event(&conn.host).await? {
            Some(event) if event.name == "endpoint" => break event.data,
            Some(_) => continue,
            None => {
                return Err(ProbeError::NotMcp(
                    "its event stream ended without naming an endpoint for messages".into(),
                ));
            }
        }
    };
    let endpoint = url
        .join(endpoint.trim())
        .map_err(|_| ProbeError::Protocol("the endpoint event does not hold a URL".into()))?;
    // The client is pinned to the checked addresses of this origin; another origin would need
    // its own check, and a legitimate server has no reason to send one.
    if endpoint.origin() != url.origin() {
        return Err(ProbeError::Protocol(
            "the endpoint event points to another host; drydock only posts to the connector's own \
             host"
                .into(),
        ));
    }

    let post = |body: String| {
        let req = conn.post(&endpoint, body);
        async move {
            let resp = req.send().await.map_err(|e| conn.send_error(e))?;
            check_status(&resp)
        }
    };
    post(initialize_request().to_string()).await?;
    let init = stream_answer(&mut events, &conn.host, 1, "initialize").await?;
    let (_version, server_name, server_version) = read_initialize(&init)?;
    post(INITIALIZED.to_owned()).await?;
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..MAX_PAGES {
        let id = 2 + page as i64;
        post(tools_list_request(id, cursor.as_deref()).to_string()).await?;
        let result = stream_answer(&mut events, &conn.host, id, "tools/list").await?;
        cursor = read_tools(&result, &mut tools)?;
        if cursor.is_none() {
            break;
        }
    }
    Ok(Probe {
        tools,
        transport: "sse",
        server_name,
        server_version,
    })
}

/// Speaks MCP with a stdio server over its stdin and stdout (newline-delimited JSON-RPC) and
/// lists its tools within `timeout`. The caller starts the command where it may run (inside a
/// task's sandbox, never on the host for users) and gives its pipes here; stdin is closed at the
/// end so that the server can exit.
pub async fn probe_stdio<W, R>(stdin: W, stdout: R, timeout: Duration) -> Result<Probe, ProbeError>
where
    W: AsyncWrite + Unpin,
    R: AsyncBufRead + Unpin,
{
    let mut stdin = stdin;
    let mut lines = StdioLines {
        reader: stdout,
        read: 0,
    };
    let talk = async {
        write_line(&mut stdin, &initialize_request().to_string()).await?;
        let init = lines.answer(1, "initialize").await?;
        let (_version, server_name, server_version) = read_initialize(&init)?;
        write_line(&mut stdin, INITIALIZED).await?;
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 0..MAX_PAGES {
            let id = 2 + page as i64;
            write_line(
                &mut stdin,
                &tools_list_request(id, cursor.as_deref()).to_string(),
            )
            .await?;
            let result = lines.answer(id, "tools/list").await?;
            cursor = read_tools(&result, &mut tools)?;
            if cursor.is_none() {
                break;
            }
        }
        Ok(Probe {
            tools,
            transport: "stdio",
            server_name,
            server_version,
        })
    };
    let outcome = match tokio::time::timeout(timeout, talk).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ProbeError::Timeout {
            host: "the command".into(),
            secs: timeout.as_secs(),
        }),
    };
    let _ = stdin.shutdown().await;
    outcome
}

async fn write_line<W: AsyncWrite + Unpin>(stdin: &mut W, message: &str) -> Result<(), ProbeError> {
    let mut line = Vec::with_capacity(message.len() + 1);
    line.extend_from_slice(message.as_bytes());
    line.push(b'\n');
    stdin
        .write_all(&line)
        .await
        .map_err(|_| ProbeError::Ended("a request"))?;
    stdin
        .flush()
        .await
        .map_err(|_| ProbeError::Ended("a request"))
}

struct StdioLines<R> {
    reader: R,
    read: usize,
}

impl<R: AsyncBufRead + Unpin> StdioLines<R> {
    /// Reads messages until the response to `id`; skips notifications, server requests and
    /// lines that are not JSON (servers that log to stdout).
    async fn answer(&mut self, id: i64, method: &'static str) -> Result<Value, ProbeError> {
        loop {
            let mut line = Vec::new();
            let budget = (MAX_ANSWER_BYTES.saturating_sub(self.read)) as u64;
            let n = (&mut self.reader)
                .take(budget)
                .read_until(b'\n', &mut line)
                .await
                .map_err(|_| ProbeError::Ended(method))?;
            if n == 0 {
                if budget == 0 {
                    return Err(ProbeError::Protocol(
                        "the command wrote more than 4 MiB without an answer".into(),
                    ));
                }
                return Err(ProbeError::Ended(method));
            }
            self.read += n;
            let Ok(message) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if let Some(result) = match_response(&message, id, method)? {
                return Ok(result);
            }
        }
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn describe_type(content_type: &str) -> String {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if essence.is_empty() {
        String::new()
    } else {
        format!(" with {essence}")
    }
}

fn redirect_error(resp: &reqwest::Response) -> ProbeError {
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| resp.url().join(l).ok())
        .map_or_else(
            || "nowhere".to_owned(),
            |mut u| {
                // Query strings and user info can carry tokens: show where, not what.
                u.set_query(None);
                u.set_fragment(None);
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.to_string()
            },
        );
    ProbeError::Redirect {
        status: resp.status(),
        location,
    }
}

/// Statuses that end the probe whatever the body.
fn check_status(resp: &reqwest::Response) -> Result<(), ProbeError> {
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        Err(ProbeError::Unauthorized {
            status,
            detail: String::new(),
        })
    } else if status.is_redirection() {
        Err(redirect_error(resp))
    } else {
        Err(ProbeError::Status {
            status,
            detail: String::new(),
        })
    }
}

/// Reads the answer to request `id` from a Streamable HTTP response (JSON or an event stream).
async fn answer(
    conn: &Conn,
    resp: reqwest::Response,
    id: i64,
    method: &'static str,
) -> Result<Value, ProbeError> {
    let status = resp.status();
    if status.is_redirection() {
        return Err(redirect_error(&resp));
    }
    if !status.is_success() {
        let detail = body_excerpt(resp).await;
        return Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                ProbeError::Unauthorized { status, detail }
            }
            _ => ProbeError::Status { status, detail },
        });
    }
    let content_type = content_type(resp.headers());
    if content_type.starts_with("text/event-stream") {
        let mut events = SseReader::new(resp);
        return stream_answer(&mut events, &conn.host, id, method).await;
    }
    if !content_type.starts_with("application/json") {
        return Err(ProbeError::NotMcp(format!(
            "it answered an MCP {method} request with {status}{} instead of JSON-RPC",
            describe_type(&content_type)
        )));
    }
    let body = read_capped(resp, &conn.host).await?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|_| ProbeError::NotMcp(format!("its answer to {method} is not valid JSON")))?;
    // A batch answer is an array; find ours.
    let candidates = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    for message in candidates {
        if let Some(result) = match_response(&message, id, method)? {
            return Ok(result);
        }
    }
    Err(ProbeError::NotMcp(format!(
        "its answer to {method} is JSON but not a JSON-RPC response"
    )))
}

async fn stream_answer(
    events: &mut SseReader,
    host: &str,
    id: i64,
    method: &'static str,
) -> Result<Value, ProbeError> {
    while let Some(event) = events.next_event(host).await? {
        if !(event.name.is_empty() || event.name == "message") || event.data.trim().is_empty() {
            continue;
        }
        let Ok(message) = serde_json::from_str::<Value>(&event.data) else {
            return Err(ProbeError::Protocol(format!(
                "an event of its answer to {method} is not JSON"
            )));
        };
        // Server requests and notifications (pings, logs) may come first; skip them.
        if let Some(result) = match_response(&message, id, method)? {
            return Ok(result);
        }
    }
    Err(ProbeError::Protocol(format!(
        "its event stream ended before the answer to {method}"
    )))
}

/// `Some(result)` when `message` is the response to `id`; the JSON-RPC error when it is an error.
fn match_response(
    message: &Value,
    id: i64,
    method: &'static str,
) -> Result<Option<Value>, ProbeError> {
    if message.get("id").and_then(Value::as_i64) != Some(id) || message.get("method").is_some() {
        return Ok(None);
    }
    if let Some(error) = message.get("error") {
        return Err(ProbeError::Rpc {
            method,
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| "no message".to_owned(), |m| truncate(m, 300)),
        });
    }
    match message.get("result") {
        Some(result) => Ok(Some(result.clone())),
        None => Err(ProbeError::Protocol(format!(
            "its answer to {method} has neither result nor error"
        ))),
    }
}

type Init = (String, Option<String>, Option<String>);

fn read_initialize(result: &Value) -> Result<Init, ProbeError> {
    let version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| ProbeError::Protocol("initialize did not name a protocol version".into()))?;
    let info = result.get("serverInfo");
    let field = |name: &str| {
        info.and_then(|i| i.get(name))
            .and_then(Value::as_str)
            .map(|s| truncate(s, 200))
    };
    Ok((version.to_owned(), field("name"), field("version")))
}

/// Appends the tools of one `tools/list` page; answers the next cursor.
fn read_tools(result: &Value, tools: &mut Vec<Tool>) -> Result<Option<String>, ProbeError> {
    let list = result
        .get("tools")
        .and_then(Value::as_array)
        .ok_or_else(|| ProbeError::Protocol("tools/list did not return a list of tools".into()))?;
    for tool in list {
        let Some(name) = tool.get("name").and_then(Value::as_str) else {
            return Err(ProbeError::Protocol("a tool has no name".into()));
        };
        tools.push(Tool {
            name: truncate(name, 200),
            description: tool
                .get("description")
                .and_then(Value::as_str)
                .map(|d| truncate(d, 1000)),
        });
    }
    Ok(result
        .get("nextCursor")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_owned))
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

async fn body_excerpt(resp: reqwest::Response) -> String {
    let content_type = content_type(resp.headers());
    let Ok(body) = resp.bytes().await else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&body[..body.len().min(2048)]);
    // A JSON-RPC error body says it best; an HTML page says nothing useful.
    if let Ok(value) = serde_json::from_str::<Value>(&text)
        && let Some(message) = value
            .pointer("/error/message")
            .or_else(|| value.get("error"))
            .or_else(|| value.get("message"))
            .and_then(Value::as_str)
    {
        return format!(": {}", truncate(message, 300));
    }
    if content_type.starts_with("text/plain") {
        let line = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        if !line.is_empty() {
            return format!(": {}", truncate(line.trim(), 300));
        }
    }
    String::new()
}

async fn read_capped(resp: reqwest::Response, host: &str) -> Result<Vec<u8>, ProbeError> {
    let mut stream = resp.bytes_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| classify(host, &e))?;
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(ProbeError::Protocol(
                "the answer is larger than 4 MiB".into(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Turns a reqwest failure into a message for people.
pub(crate) fn classify(host: &str, err: &reqwest::Error) -> ProbeError {
    // Walk to the root cause: reqwest's own text is generic ("error sending request").
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    let root = chain
        .last()
        .cloned()
        .unwrap_or_else(|| "unknown error".to_owned());
    let all = chain.join(" ").to_ascii_lowercase();
    if err.is_timeout() {
        return ProbeError::Timeout {
            host: host.to_owned(),
            secs: 10,
        };
    }
    if all.contains("certificate")
        || all.contains("tls")
        || all.contains("handshake")
        || all.contains("peer sent")
        || all.contains("alert")
    {
        return ProbeError::Tls {
            host: host.to_owned(),
            detail: root,
        };
    }
    if err.is_connect() {
        return ProbeError::Connect {
            host: host.to_owned(),
            detail: root,
        };
    }
    ProbeError::Transport {
        host: host.to_owned(),
        detail: root,
    }
}

/// One server-sent event.
#[derive(Debug, Default)]
struct SseEvent {
    name: String,
    data: String,
}

/// Reads server-sent events from a response body, at most [`MAX_ANSWER_BYTES`] of it.
struct SseReader {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: Vec<u8>,
    read: usize,
    ended: bool,
}

impl SseReader {
    fn new(resp: reqwest::Response) -> Self {
        Self {
            body: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
            read: 0,
            ended: false,
        }
    }

    /// The next complete line without its terminator; `None` at the end of the stream.
    async fn next_line(&mut self, host: &str) -> Result<Option<String>, ProbeError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            if self.ended {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let rest = std::mem::take(&mut self.buf);
                return Ok(Some(String::from_utf8_lossy(&rest).into_owned()));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    self.read += chunk.len();
                    if self.read > MAX_ANSWER_BYTES {
                        return Err(ProbeError::Protocol(
                            "the event stream sent more than 4 MiB without an answer".into(),
                        ));
                    }
                    self.buf.extend_from_slice(&chunk);
                }
                Some(Err(err)) => return Err(classify(host, &err)),
                None => self.ended = true,
            }
        }
    }

    /// The next event; `None` at the end of the stream.
    async fn next_event(&mut self, host: &str) -> Result<Option<SseEvent>, ProbeError> {
        let mut event = SseEvent::default();
        let mut has_data = false;
        loop {
            let Some(line) = self.next_line(host).await? else {
                return Ok(has_data.then_some(event));
            };
            if line.is_empty() {
                if has_data {
                    return Ok(Some(event));
                }
                event = SseEvent::default();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => event.name = value.to_owned(),
                "data" => {
                    if has_data {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                    has_data = true;
                }
                _ => {}
            }
        }
    }
}

/// Checks a header name and value as HTTP allows them.
pub fn header_pair(name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    Some((
        HeaderName::from_bytes(name.as_bytes()).ok()?,
        HeaderValue::from_str(value).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("héllo", 3), "hél…");
        assert_eq!(truncate("abc", 3), "abc");
    }

    #[test]
    fn responses_are_matched_by_id() {
        let ok = json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": []}});
        assert!(match_response(&ok, 2, "tools/list").unwrap().is_some());
        assert!(match_response(&ok, 3, "tools/list").unwrap().is_none());
        let request = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
        assert!(match_response(&request, 2, "tools/list").unwrap().is_none());
        let err = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32600, "message": "nope"}});
        let text = match_response(&err, 1, "initialize")
            .unwrap_err()
            .to_string();
        assert!(text.contains("refused initialize: nope"), "{text}");
    }

    #[test]
    fn tools_pages_give_the_next_cursor() {
        let mut tools = Vec::new();
        let page = json!({"tools": [{"name": "a", "description": "does a"}, {"name": "b"}], "nextCursor": "x"});
        assert_eq!(read_tools(&page, &mut tools).unwrap().as_deref(), Some("x"));
        assert_eq!(tools.len(), 2);
        assert_eq!(tools[0].description.as_deref(), Some("does a"));
        assert!(
            read_tools(&json!({"tools": []}), &mut tools)
                .unwrap()
                .is_none()
        );
    }
}
