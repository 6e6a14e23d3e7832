//! The OAuth-protected MCP stand-in (`tests/mcp/oauth_server.py`, on the official Python MCP
//! SDK's auth support) and what tests need around it: the browser's part of the
//! authorization-code flow (consent) and the server's counters.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::app::location;

/// The Python interpreter with the `mcp` SDK (scripts/test makes it).
pub fn mcp_python() -> PathBuf {
    if let Ok(path) = std::env::var("DRYDOCK_TEST_MCP_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/mcp-venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the mcp SDK: run scripts/test, or set DRYDOCK_TEST_MCP_PYTHON"
    );
    venv
}

/// tests/mcp/oauth_server.py on a free port of 127.0.0.1; killed when dropped.
pub struct OAuthMcpServer {
    /// `http://127.0.0.1:<port>`: the issuer and the MCP server's origin.
    pub origin: String,
    http: Client,
    _child: tokio::process::Child,
}

impl OAuthMcpServer {
    /// Starts the server with `args` (e.g. `--no-registration`).
    pub async fn start(args: &[&str]) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp/oauth_server.py");
        let mut child = tokio::process::Command::new(mcp_python())
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start tests/mcp/oauth_server.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the OAuth MCP server printed its port in time")
            .expect("read stdout")
            .expect("the OAuth MCP server printed its port");
        let port: u16 = line
            .strip_prefix("PORT ")
            .expect("PORT line")
            .trim()
            .parse()
            .expect("port");
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self {
                    origin: format!("http://127.0.0.1:{port}"),
                    http: crate::app::browser().0,
                    _child: child,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the OAuth MCP server on port {port} never answered");
    }

    /// The MCP endpoint.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.origin)
    }

    /// The server's counters (`registrations`, `refreshes`, `revocations`, ...).
    pub async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/control/stats", self.origin))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats JSON")
    }

    /// One counter.
    pub async fn count(&self, name: &str) -> i64 {
        self.stats().await[name].as_i64().expect("counter")
    }

    /// The lifetime (`expires_in`, seconds) reported for tokens issued from now on.
    pub async fn set_expires_in(&self, seconds: i64) {
        let resp = self
            .http
            .post(format!("{}/control/config", self.origin))
            .json(&json!({ "expires_in": seconds }))
            .send()
            .await
            .expect("config");
        assert!(resp.status().is_success());
    }

    /// Makes every refresh take `seconds` (a slow authorization server), so that callers
    /// arriving meanwhile overlap with it.
    pub async fn set_refresh_delay(&self, seconds: f64) {
        let resp = self
            .http
            .post(format!("{}/control/config", self.origin))
            .json(&json!({ "refresh_delay": seconds }))
            .send()
            .await
            .expect("config");
        assert!(resp.status().is_success());
    }

    /// Refuses every refresh token issued so far (the user revoked drydock at the provider).
    pub async fn revoke_refresh_tokens(&self) {
        let resp = self
            .http
            .post(format!("{}/control/revoke-refresh-tokens", self.origin))
            .send()
            .await
            .expect("revoke");
        assert!(resp.status().is_success());
    }

    /// The browser's part of the flow from an authorization URL: the authorization server
    /// sends it to the consent page, the user answers (`allow`), and the server redirects to
    /// the client's callback. Answers that callback URL.
    pub async fn consent(&self, browser: &Client, authorization_url: &str, allow: bool) -> String {
        let resp = browser
            .get(authorization_url)
            .send()
            .await
            .expect("authorize");
        assert_eq!(
            resp.status(),
            StatusCode::FOUND,
            "authorize redirects to consent: {}",
            resp.text().await.unwrap_or_default()
        );
        let consent = location(&resp);
        assert!(
            consent.starts_with(&format!("{}/consent?", self.origin)),
            "{consent}"
        );
        let page = browser.get(&consent).send().await.expect("consent page");
        assert_eq!(page.status(), StatusCode::OK);
        let page = page.text().await.expect("consent page");
        assert!(
            page.contains("Allow drydock"),
            "the consent page names drydock: {page}"
        );
        let id = consent.split("id=").nth(1).expect("consent id").to_owned();
        let resp = browser
            .post(format!("{}/consent", self.origin))
            .form(&[
                ("id", id.as_str()),
                ("decision", if allow { "allow" } else { "deny" }),
            ])
            .send()
            .await
            .expect("consent");
        assert_eq!(resp.status(), StatusCode::FOUND);
        location(&resp)
    }

    /// `tools/list` with `token` as the bearer, straight at the server: answers the status.
    pub async fn status_with_token(&self, token: &str) -> StatusCode {
        self.http
            .post(self.mcp_url())
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(
                &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"}}}),
            )
            .send()
            .await
            .expect("MCP request")
            .status()
    }
}
