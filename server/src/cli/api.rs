//! The client's side of the public API: one method per endpoint it uses, errors as the server
//! words them.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error (`{ "error": { "code", "message" } }`).
    #[error("{message} ({status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached.
    #[error("could not reach drydock: {0}")]
    Connection(String),
    /// The command was used wrongly, or local settings are missing.
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// The process exit code for this error.
    /// 2 when the client could not do its job (usage, connection), 3 when the server refused the
    /// request (bad token, no access, invalid input), so scripts can tell either from a task that
    /// ran and failed (1).
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Api { .. } => 3,
            ClientError::Connection(_) | ClientError::Usage(_) => 2,
        }
    }
}

/// `GET /api/me`, the part the client uses.
#[derive(Debug, Deserialize)]
pub struct Me {
    /// GitHub login.
    pub login: String,
}

/// A drydock server and the token to call it with.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn connection(err: &reqwest::Error) -> ClientError {
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "the request failed"
    };
    match err.url() {
        Some(url) => ClientError::Connection(format!(
            "{what} ({}://{})",
            url.scheme(),
            url.host_str()
                .map_or_else(String::new, |host| match url.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_owned(),
                })
        )),
        None => ClientError::Connection(what.into()),
    }
}

impl ApiClient {
    /// A client of `base` (no trailing slash) with `token`.
    pub fn new(base: &str, token: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .user_agent(format!(
                "{}{}",
                super::USER_AGENT_PREFIX,
                env!("CARGO_PKG_VERSION")
            ))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| ClientError::Connection(err.to_string()))?;
        Ok(Self {
            base: base.to_owned(),
            token: token.to_owned(),
            http,
        })
    }

    /// The server URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` with the token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let resp = request
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| connection(&e))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]["message"].as_str().map_or_else(
            || status.canonical_reason().unwrap_or("error").to_owned(),
            str::to_owned,
        );
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
        })
    }

    /// `GET /api/me`.
    pub async fn me(&self) -> Result<Me, ClientError> {
        let body = self
            .send(self.request(reqwest::Method::GET, "/api/me"))
            .await?;
        serde_json::from_value(body)
            .map_err(|_| ClientError::Connection("that is not a drydock server".into()))
    }

    /// `POST /api/tasks`.
    pub async fn create_task(&self, body: &Value) -> Result<Value, ClientError> {
        self.send(self.request(reqwest::Method::POST, "/api/tasks").json(body))
            .await
    }

    /// `GET /api/tasks`.
    pub async fn list_tasks(&self, status: Option<&str>) -> Result<Value, ClientError> {
        let mut request = self.request(reqwest::Method::GET, "/api/tasks");
        if let Some(status) = status {
            request = request.query(&[("status", status)]);
        }
        self.send(request).await
    }

    /// `GET /api/tasks/{id}`.
    pub async fn task(&self, id: &str) -> Result<Value, ClientError> {
        self.send(self.request(reqwest::Method::GET, &format!("/api/tasks/{}", enc(id))))
            .await
    }

    /// `GET /api/tasks/{id}/events?after=N` (a JSON page).
    pub async fn events_page(&self, id: &str, after: i64) -> Result<Value, ClientError> {
        let request = self
            .request(
                reqwest::Method::GET,
                &format!("/api/tasks/{}/events", enc(id)),
            )
            .query(&[("after", after)]);
        self.send(request).await
    }

    /// `GET /api/tasks/{id}/diff`.
    pub async fn diff(&self, id: &str) -> Result<Value, ClientError> {
        self.send(self.request(
            reqwest::Method::GET,
            &format!("/api/tasks/{}/diff", enc(id)),
        ))
        .await
    }

    /// `POST /api/tasks/{id}/stop`.
    pub async fn stop(&self, id: &str) -> Result<Value, ClientError> {
        self.send(self.request(
            reqwest::Method::POST,
            &format!("/api/tasks/{}/stop", enc(id)),
        ))
        .await
    }

    /// `POST /api/tasks/{id}/messages`.
    pub async fn message(&self, id: &str, prompt: &str) -> Result<Value, ClientError> {
        let request = self
            .request(
                reqwest::Method::POST,
                &format!("/api/tasks/{}/messages", enc(id)),
            )
            .json(&json!({ "prompt": prompt }));
        self.send(request).await
    }

    /// Opens the live log (SSE) after seq `after`.
    pub async fn open_events(
        &self,
        id: &str,
        after: i64,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .request(
                reqwest::Method::GET,
                &format!("/api/tasks/{}/events", enc(id)),
            )
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header("last-event-id", after.to_string())
            .send()
            .await
            .map_err(|e| connection(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        Err(ClientError::Api {
            status: status.as_u16(),
            message: body["error"]["message"]
                .as_str()
                .unwrap_or("the log could not be opened")
                .to_owned(),
        })
    }
}

fn enc(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}
