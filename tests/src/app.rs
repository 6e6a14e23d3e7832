//! A drydock server wired to a GitHub stand-in, with signed-in browsers on demand.

use std::sync::Arc;

use reqwest::redirect::Policy;
use reqwest::{Client, StatusCode};

use crate::{GithubStandIn, TestDb, TestServer};

/// The server, its GitHub, and its database.
pub struct App {
    /// The GitHub stand-in.
    pub gh: GithubStandIn,
    /// The drydock server.
    pub server: TestServer,
    /// Its database.
    pub db: TestDb,
}

/// A browser: keeps cookies, follows no redirects.
pub fn browser() -> (Client, Arc<reqwest::cookie::Jar>) {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let client = Client::builder()
        .cookie_provider(jar.clone())
        .redirect(Policy::none())
        .build()
        .expect("HTTP client");
    (client, jar)
}

/// The `Location` of a redirect.
pub fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

impl App {
    /// Starts a stand-in with users `alice` (75 repositories) and `bob` (3), and a server on `db`
    /// with `extra` settings.
    pub async fn start(db: TestDb, extra: &[&str]) -> Self {
        Self::start_in(db, extra, false).await
    }

    /// Like [`App::start`], with the server in a process of its own
    /// ([`TestServer::start_process`]).
    pub async fn start_process(db: TestDb, extra: &[&str]) -> Self {
        Self::start_in(db, extra, true).await
    }

    async fn start_in(db: TestDb, extra: &[&str], process: bool) -> Self {
        let gh = GithubStandIn::start().await;
        gh.add_user(101, "alice", 75);
        gh.add_user(202, "bob", 3);
        let mut settings = gh.settings();
        settings.extend(extra.iter().map(|s| s.to_string()));
        let server = if process {
            TestServer::start_process(&db.url, settings).await
        } else {
            TestServer::start_with(&db.url, settings).await
        };
        Self { gh, server, db }
    }

    /// Runs the OAuth dance from `start` and returns drydock's answer to the callback.
    pub async fn oauth_dance(&self, client: &Client, start: &str) -> reqwest::Response {
        let resp = client
            .get(format!("{}{start}", self.server.url))
            .send()
            .await
            .expect("start sign-in");
        assert_eq!(
            resp.status(),
            StatusCode::SEE_OTHER,
            "start redirects to GitHub"
        );
        let authorize = location(&resp);
        assert!(
            authorize.starts_with(&format!("{}/login/oauth/authorize?", self.gh.url)),
            "{authorize}"
        );
        let resp = client.get(&authorize).send().await.expect("authorize");
        let callback = location(&resp);
        assert!(
            callback.starts_with(&format!("{}/auth/github/callback?", self.server.url)),
            "{callback}"
        );
        client.get(&callback).send().await.expect("callback")
    }

    /// A browser signed in as `login`, with its cookie jar.
    pub async fn sign_in_with_jar(&self, login: &str) -> (Client, Arc<reqwest::cookie::Jar>) {
        let (client, jar) = browser();
        self.gh.approve_as(Some(login));
        let resp = self.oauth_dance(&client, "/auth/github").await;
        assert_eq!(
            resp.status(),
            StatusCode::SEE_OTHER,
            "sign-in as {login} failed"
        );
        (client, jar)
    }

    /// A browser signed in as `login`.
    pub async fn sign_in(&self, login: &str) -> Client {
        self.sign_in_with_jar(login).await.0
    }

    /// `{server}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url)
    }
}
