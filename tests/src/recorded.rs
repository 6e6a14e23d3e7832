//! What the model-API stand-ins record of each request, so tests can check what a CLI sent
//! (its key, its tools, calls outside the API). Each stand-in adds its own predicates.

use axum::http::{HeaderMap, Method, Uri};
use serde_json::Value;

/// One request a stand-in received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// The status the stand-in answered.
    pub status: u16,
}

impl Recorded {
    /// The record of a request and the status it was answered with.
    pub fn of(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8], status: u16) -> Self {
        Recorded {
            method: method.to_string(),
            path: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), |p| p.to_string()),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
            status,
        }
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `METHOD path -> status` of each request, for failure messages.
pub fn summary(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

/// What every model stand-in keeps: the key it accepts, the script playing the model, the
/// requests it got (in order of arrival) and a counter for the ids it hands out.
pub struct StandIn<S> {
    /// The only key accepted.
    pub key: String,
    /// Plays the model.
    pub script: S,
    name: &'static str,
    is_model_call: fn(&Recorded) -> bool,
    id_separator: char,
    requests: std::sync::Mutex<Vec<Recorded>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Input and output tokens reported in answers so far.
    usage: std::sync::Mutex<(u64, u64)>,
}

impl<S> StandIn<S> {
    /// A stand-in named `name` in its logs; requests that are not `is_model_call` are logged,
    /// so calls a CLI makes outside the model API show up. Ids look like
    /// `{prefix}{id_separator}standin00000001`.
    pub fn new(
        name: &'static str,
        key: &str,
        script: S,
        is_model_call: fn(&Recorded) -> bool,
        id_separator: char,
    ) -> Self {
        Self {
            key: key.to_owned(),
            script,
            name,
            is_model_call,
            id_separator,
            requests: std::sync::Mutex::new(Vec::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
            usage: std::sync::Mutex::new((0, 0)),
        }
    }

    /// A fresh id with this prefix.
    pub fn id(&self, prefix: &str) -> String {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{prefix}{}standin{n:08}", self.id_separator)
    }

    /// Records a request and the status it was answered with.
    pub fn record(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        status: u16,
    ) {
        let recorded = Recorded::of(method, uri, headers, body, status);
        if !(self.is_model_call)(&recorded) {
            tracing::info!(stand_in = self.name, method = %recorded.method, path = %recorded.path, status, "stand-in: other request");
        }
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(recorded);
    }

    /// Counts the tokens an answer reports.
    pub fn report_usage(&self, input: u64, output: u64) {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage.0 += input;
        usage.1 += output;
    }

    /// Input and output tokens reported in answers so far.
    pub fn reported_usage(&self) -> (u64, u64) {
        *self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A stand-in's HTTP server on 127.0.0.1, stopped when dropped.
pub struct Server {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    handle: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Serves `app` on a free loopback port.
    pub async fn start(app: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a stand-in on 127.0.0.1");
        let addr = listener.local_addr().expect("the stand-in's address");
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, handle }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.abort();
    }
}
