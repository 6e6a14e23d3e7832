//! What answers a sandbox's connections to its relay: one HTTP/1.1 server per connection
//! (hyper) that is the model gateway for `/gateway/{provider}/…`, a forward proxy for
//! absolute-form `http://` requests and a `CONNECT` tunnel for HTTPS (RFC 9110 §9.3.6), each
//! checked against the task's policy by host name. TLS is never intercepted: a tunnel is
//! allowed or refused by the host it names, and its bytes pass through untouched.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::meter::Tap;
use super::policy::{NetworkPolicy, refusal};
use super::{Egress, Grant};
use crate::connectors::outbound::forbidden_kind;
use crate::redact::Redactor;
use crate::store::NewUsage;
use crate::tasks::LogSink;

/// A model request body larger than this is refused (413).
const MAX_GATEWAY_BODY: usize = 32 << 20;

/// One task's proxy: its policy, and where refusals are logged.
pub struct TaskProxy {
    /// The server's egress service.
    pub egress: Arc<Egress>,
    /// Task.
    pub task_id: String,
    /// The task's agent when its key is inside the sandbox (its vendor hosts are allowed);
    /// empty when it uses the gateway.
    pub agent: String,
    /// Turn number, for refusals.
    pub turn: i64,
    /// The policy of the phase the turn is in (setup, or the agent's); see
    /// [`TaskProxy::set_policy`].
    pub policy: std::sync::RwLock<NetworkPolicy>,
    /// The turn's redaction (refused URLs are logged through it).
    pub redactor: Redactor,
    /// Hosts of the task's HTTP MCP connectors, reachable in every policy.
    pub connector_hosts: Vec<String>,
    /// Connector hosts may be private addresses (`DRYDOCK_ALLOW_PRIVATE_CONNECTOR_URLS`).
    pub allow_private_connectors: bool,
}

/// Serves every connection `listener` accepts until the relay ends (the handle is aborted when
/// the turn ends).
pub fn serve(
    mut listener: drydock_sandbox::EgressListener,
    proxy: Arc<TaskProxy>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(conn) = listener.accept().await {
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, std::convert::Infallible>(proxy.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), service)
                    .with_upgrades()
                    .await;
            });
        }
    })
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Headers that belong to one hop (RFC 9110 §7.6.1) or to the proxy itself.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers.keys().filter(|n| hop_by_hop(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

impl TaskProxy {
    /// The policy now in force.
    pub fn policy(&self) -> NetworkPolicy {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Switches the policy for the next connections (a turn moving from setup or maintenance
    /// to the agent). Tunnels already open stay as they are.
    pub fn set_policy(&self, policy: NetworkPolicy) {
        *self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = policy;
    }

    /// Why the policy refuses `method` to `host` (connector hosts always pass).
    fn refusal(&self, method: &str, host: &str, tunnel: bool) -> Option<&'static str> {
        let bare = host
            .trim_matches(['[', ']'])
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if self.connector_hosts.contains(&bare) {
            return None;
        }
        refusal(&self.policy(), &self.agent, method, host, tunnel)
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if req.method() == Method::CONNECT {
            return self.connect(req).await;
        }
        if req.uri().scheme().is_some() {
            return self.forward(req).await;
        }
        let path = req.uri().path().to_owned();
        if let Some(rest) = path.strip_prefix("/gateway/") {
            let (provider, rest) = rest.split_once('/').unwrap_or((rest, ""));
            let (provider, rest) = (provider.to_owned(), format!("/{rest}"));
            return self.gateway(req, &provider, &rest).await;
        }
        text(
            StatusCode::BAD_REQUEST,
            "drydock's egress proxy: send proxy requests (absolute URLs or CONNECT) or model calls under /gateway/\n".into(),
        )
    }

    /// Logs, counts and answers a refused request.
    async fn refuse(&self, method: &str, url: &str, reason: &str) -> Response<Body> {
        let url = self.redactor.redact(url);
        let line = format!("blocked: {method} {url} ({reason})");
        let mut sink = LogSink::new(
            &self.task_id,
            self.egress.store.clone(),
            self.egress.hub.clone(),
            self.redactor.clone(),
        );
        sink.line("error", &line);
        if let Err(err) = sink.flush().await {
            tracing::error!(error = %err, "could not log a blocked request");
        }
        if let Err(err) = self
            .egress
            .store
            .insert_blocked(&self.task_id, self.turn, method, &url, reason)
            .await
        {
            tracing::error!(error = %err, "could not record a blocked request");
        }
        metrics::counter!("drydock_egress_blocked_total", "mode" => self.policy().mode.as_str())
            .increment(1);
        text(StatusCode::FORBIDDEN, format!("drydock {line}\n"))
    }

    /// The addresses of `host` this proxy may connect to, or why none.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((literal, port))
                .await
                .map_err(|_| format!("{host} could not be resolved"))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(format!("{host} has no addresses"));
        }
        let bare = literal.trim_end_matches('.').to_ascii_lowercase();
        let connector = self.allow_private_connectors && self.connector_hosts.contains(&bare);
        if !self.egress.settings.allow_private && !connector {
            // Every answer must pass: a mixed answer is how rebinding slips through.
            for addr in &addrs {
                if let Some(kind) = forbidden_kind(addr.ip()) {
                    return Err(format!("{host} resolves to a {kind} address"));
                }
            }
        }
        Ok(addrs)
    }

    async fn dial(&self, host: &str, port: u16) -> Result<TcpStream, String> {
        let addrs = self.resolve(host, port).await?;
        let connect = TcpStream::connect(&addrs[..]);
        match tokio::time::timeout(std::time::Duration::from_secs(15), connect).await {
            Ok(Ok(tcp)) => Ok(tcp),
            Ok(Err(e)) => Err(format!("cannot connect to {host}:{port}: {e}")),
            Err(_) => Err(format!("{host}:{port} did not answer")),
        }
    }

    async fn connect(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let Some(authority) = req.uri().authority().cloned() else {
            return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port\n".into());
        };
        let host = authority.host().to_owned();
        let port = authority.port_u16().unwrap_or(443);
        let target = format!("{host}:{port}");
        if let Some(reason) = self.refusal("CONNECT", &host, true) {
            return self.refuse("CONNECT", &target, reason).await;
        }
        let mut upstream = match self.dial(&host, port).await {
            Ok(tcp) => tcp,
            Err(reason) if reason.contains("resolves to") => {
                return self.refuse("CONNECT", &target, &reason).await;
            }
            Err(reason) => return text(StatusCode::BAD_GATEWAY, format!("{reason}\n")),
        };
        tokio::spawn(async move {
            if let Ok(upgraded) = hyper::upgrade::on(req).await {
                let mut client = TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
        Response::new(Body::empty())
    }

    async fn forward(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let uri = req.uri().clone();
        let method = req.method().as_str().to_owned();
        let url = uri.to_string();
        if uri.scheme_str() != Some("http") {
            return text(
                StatusCode::BAD_REQUEST,
                "only http:// URLs are forwarded; use CONNECT for https\n".into(),
            );
        }
        let Some(host) = uri.host().map(str::to_owned) else {
            return text(StatusCode::BAD_REQUEST, "the URL has no host\n".into());
        };
        let port = uri.port_u16().unwrap_or(80);
        if let Some(reason) = self.refusal(&method, &host, false) {
            return self.refuse(&method, &url, reason).await;
        }
        let tcp = match self.dial(&host, port).await {
            Ok(tcp) => tcp,
            Err(reason) if reason.contains("resolves to") => {
                return self.refuse(&method, &url, &reason).await;
            }
            Err(reason) => return text(StatusCode::BAD_GATEWAY, format!("{reason}\n")),
        };
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
        else {
            return text(
                StatusCode::BAD_GATEWAY,
                format!("{host}:{port} refused HTTP\n"),
            );
        };
        tokio::spawn(conn);
        let (mut parts, body) = req.into_parts();
        parts.uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .unwrap_or_default();
        strip_hop_by_hop(&mut parts.headers);
        match sender
            .send_request(Request::from_parts(parts, Body::new(body)))
            .await
        {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(body))
            }
            Err(e) => text(StatusCode::BAD_GATEWAY, format!("{host}:{port}: {e}\n")),
        }
    }

    /// The model gateway: checks the placeholder, swaps in the real key, forwards to the
    /// provider and streams the answer back as it arrives, metering it on the way.
    async fn gateway(
        self: Arc<Self>,
        req: Request<Incoming>,
        provider: &str,
        rest: &str,
    ) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let query = parts.uri.query().unwrap_or("").to_owned();
        let found = parts
            .headers
            .values()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| self.egress.find_in(v))
            .or_else(|| self.egress.find_in(&query));
        let grant = match found {
            Some((token, grant)) if grant.task_id == self.task_id && grant.provider == provider => {
                (token, grant)
            }
            _ => {
                return json_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "drydock's model gateway: this token is not valid (it is only valid while its task's turn runs)",
                );
            }
        };
        let (token, grant) = grant;
        let key = grant.key.expose();
        let mut url = format!("{}{rest}", grant.upstream);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.replace(&token, key));
        }
        let Ok(body) = axum::body::to_bytes(Body::new(body), MAX_GATEWAY_BODY).await else {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is too large",
            );
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &parts.headers {
            if hop_by_hop(name)
                || matches!(name.as_str(), "host" | "content-length" | "accept-encoding")
            {
                continue;
            }
            let value = match value.to_str() {
                Ok(v) if v.contains(&token) => match HeaderValue::from_str(&v.replace(&token, key))
                {
                    Ok(v) => v,
                    Err(_) => continue,
                },
                _ => value.clone(),
            };
            headers.append(name.clone(), value);
        }
        let sent = self
            .egress
            .client
            .request(parts.method.clone(), &url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        let upstream_resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                tracing::warn!(provider, error = %e.without_url(), "the model provider could not be reached");
                return json_error(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    &format!("drydock's model gateway could not reach the {provider} API"),
                );
            }
        };
        let status = upstream_resp.status();
        let mut resp_headers = HeaderMap::new();
        for (name, value) in upstream_resp.headers() {
            if !hop_by_hop(name) && name.as_str() != "content-length" {
                resp_headers.append(name.clone(), value.clone());
            }
        }
        let content_type = resp_headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut tap = Tap::new(&content_type);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        let mut stream = upstream_resp.bytes_stream();
        let egress = self.egress.clone();
        let provider = provider.to_owned();
        let metered = status.is_success();
        // What the provider answers goes through the task's redaction on its way into the
        // sandbox: an answer that echoes the real key (an error quoting it, say) must not hand
        // it to the agent. Lines are emitted as soon as they end, so streaming stays live.
        let mut redacting = self.redactor.stream();
        tokio::spawn(async move {
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => {
                        tap.feed(&bytes);
                        let safe = redacting.push(&bytes);
                        if !safe.is_empty() && tx.send(Ok(Bytes::from(safe))).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.without_url()))).await;
                        break;
                    }
                }
            }
            let rest = redacting.finish();
            if !rest.is_empty() {
                let _ = tx.send(Ok(Bytes::from(rest))).await;
            }
            // The use is stored before the answer ends, so an agent that finished reading it
            // (and a turn that starts after) is measured against it: the daily budget holds.
            if metered {
                record(&egress, &grant, &provider, tap).await;
            }
            drop(tx);
        });
        let mut resp = Response::new(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        *resp.status_mut() = status;
        *resp.headers_mut() = resp_headers;
        resp
    }
}

/// Stores what one response used and counts it for Prometheus.
async fn record(egress: &Egress, grant: &Grant, provider: &str, tap: Tap) {
    let usage = tap.finish();
    if usage.is_empty() {
        return;
    }
    let cost = egress.settings.prices.cost_micro_usd(&usage);
    let model = if usage.model.is_empty() {
        "unknown".to_owned()
    } else {
        usage.model.clone()
    };
    let new = NewUsage {
        task_id: &grant.task_id,
        user_id: &grant.user_id,
        turn: grant.turn,
        provider,
        model: &model,
        input_tokens: usage.input,
        output_tokens: usage.output,
        cache_read_tokens: usage.cache_read,
        cache_write_tokens: usage.cache_write,
        cost_micro_usd: cost,
    };
    if let Err(err) = egress.store.insert_usage(&new).await {
        tracing::error!(error = %err, "could not record model use");
    }
    for (kind, n) in [
        ("input", usage.input),
        ("output", usage.output),
        ("cache_read", usage.cache_read),
        ("cache_write", usage.cache_write),
    ] {
        metrics::counter!("drydock_model_tokens_total", "user" => grant.user_id.clone(), "model" => model.clone(), "kind" => kind)
            .increment(u64::try_from(n).unwrap_or(0));
    }
    metrics::counter!("drydock_model_cost_microdollars_total", "user" => grant.user_id.clone(), "model" => model.clone())
        .increment(u64::try_from(cost).unwrap_or(0));
}
