//! Headless Chromium driven over WebDriver (Debian's `chromedriver`, started on a free port of
//! 127.0.0.1), for tests that use drydock's pages the way a person does.
//!
//! The client speaks the W3C WebDriver protocol directly over reqwest: the handful of commands the
//! tests need (navigate, find, click, type, read text, run a script, screenshot) need no crate.
//! Every lookup waits, so tests read like what a user does and sees.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long lookups and waits last before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A page element found by a CSS selector.
#[derive(Debug, Clone)]
pub struct Element {
    id: String,
    selector: String,
}

/// A headless Chromium session; chromedriver and the profile go away when it is dropped.
pub struct Browser {
    http: reqwest::Client,
    session_url: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Where chromedriver is: `CHROMEDRIVER`, or Debian's.
pub fn chromedriver_path() -> PathBuf {
    std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"))
}

/// Where Chromium is: `CHROME_BIN`, or Debian's.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("CHROME_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium with a desktop-sized window.
    pub async fn start() -> Self {
        let driver_path = chromedriver_path();
        assert!(
            driver_path.exists(),
            "chromedriver not found at {}: install Debian's chromium and chromium-driver (scripts/test does) or set CHROMEDRIVER",
            driver_path.display()
        );
        let port = free_port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("HTTP client");
        let started = Instant::now();
        loop {
            if let Ok(resp) = http.get(format!("{base}/status")).send().await
                && resp.status().is_success()
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not answer on {base}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("profile directory");
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=1280,900".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "unhandledPromptBehavior": "ignore",
                "goog:chromeOptions": {
                    "binary": chromium_path(),
                    "args": args,
                    "prefs": { "profile.password_manager_enabled": false, "credentials_enable_service": false },
                },
            }}
        });
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("create a WebDriver session")
            .json()
            .await
            .expect("WebDriver session answer");
        let session = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {resp}"))
            .to_owned();
        Self {
            http,
            session_url: format!("{base}/session/{session}"),
            driver,
            _profile: profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session_url);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            req = req.json(&body);
        } else if method == reqwest::Method::POST {
            req = req.json(&json!({}));
        }
        let resp = req.send().await.expect("WebDriver request");
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        answer["value"].clone()
    }

    async fn get(&self, path: &str) -> Value {
        self.command(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    /// Opens a URL.
    pub async fn goto(&self, url: &str) {
        let v = self.post("/url", json!({ "url": url })).await;
        assert!(
            v.is_null() || v.get("error").is_none(),
            "navigate to {url}: {v}"
        );
    }

    /// The address bar.
    pub async fn current_url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the URL satisfies `pred`; answers it.
    pub async fn wait_url(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let url = self.current_url().await;
            if pred(&url) {
                return url;
            }
            assert!(
                started.elapsed() < WAIT,
                "the page never reached {what}; it is at {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_find(&self, selector: &str) -> Option<Element> {
        let v = self
            .post(
                "/element",
                json!({ "using": "css selector", "value": selector }),
            )
            .await;
        v.get(ELEMENT_KEY)
            .and_then(Value::as_str)
            .map(|id| Element {
                id: id.to_owned(),
                selector: selector.to_owned(),
            })
    }

    /// Waits for an element matching `selector`.
    pub async fn find(&self, selector: &str) -> Element {
        let started = Instant::now();
        loop {
            if let Some(el) = self.try_find(selector).await {
                return el;
            }
            assert!(
                started.elapsed() < WAIT,
                "no element {selector} on {}",
                self.current_url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every element matching `selector` now (no wait).
    pub async fn find_all(&self, selector: &str) -> Vec<Element> {
        let v = self
            .post(
                "/elements",
                json!({ "using": "css selector", "value": selector }),
            )
            .await;
        v.as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|e| e.get(ELEMENT_KEY).and_then(Value::as_str))
                    .map(|id| Element {
                        id: id.to_owned(),
                        selector: selector.to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Clicks an element (waiting for it).
    pub async fn click(&self, selector: &str) {
        let el = self.find(selector).await;
        self.click_element(&el).await;
    }

    /// Clicks a found element.
    pub async fn click_element(&self, el: &Element) {
        let v = self
            .post(&format!("/element/{}/click", el.id), json!({}))
            .await;
        assert!(
            v.is_null() || v.get("error").is_none(),
            "click {}: {v}",
            el.selector
        );
    }

    /// Clears a text control and types `text` into it.
    pub async fn type_into(&self, selector: &str, text: &str) {
        let el = self.find(selector).await;
        self.post(&format!("/element/{}/clear", el.id), json!({}))
            .await;
        let v = self
            .post(
                &format!("/element/{}/value", el.id),
                json!({ "text": text }),
            )
            .await;
        assert!(
            v.is_null() || v.get("error").is_none(),
            "type into {selector}: {v}"
        );
    }

    /// The rendered (visible) text of an element.
    pub async fn text_of(&self, el: &Element) -> String {
        self.get(&format!("/element/{}/text", el.id))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The visible text of the first element matching `selector` (waiting for it).
    pub async fn text(&self, selector: &str) -> String {
        let el = self.find(selector).await;
        self.text_of(&el).await
    }

    /// A DOM property (`value`, `checked`, ...) of an element.
    pub async fn property(&self, selector: &str, name: &str) -> Value {
        let el = self.find(selector).await;
        self.get(&format!("/element/{}/property/{name}", el.id))
            .await
    }

    /// Waits until the visible text of `selector` contains `needle`; answers the text.
    pub async fn wait_text(&self, selector: &str, needle: &str) -> String {
        self.wait_text_for(selector, needle, WAIT).await
    }

    /// Like [`Browser::wait_text`] with a longer or shorter wait.
    pub async fn wait_text_for(&self, selector: &str, needle: &str, wait: Duration) -> String {
        let started = Instant::now();
        let mut last = String::new();
        loop {
            if let Some(el) = self.try_find(selector).await {
                last = self.text_of(&el).await;
                if last.contains(needle) {
                    return last;
                }
            }
            assert!(
                started.elapsed() < wait,
                "{selector} never showed {needle:?}; it shows {last:?} on {}",
                self.current_url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a script in the page (`arguments[i]` are `args`) and answers its return value.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Accepts the open `confirm()` dialog, waiting for it to appear.
    pub async fn accept_dialog(&self) -> String {
        let started = Instant::now();
        loop {
            let text = self.get("/alert/text").await;
            if let Some(text) = text.as_str() {
                self.post("/alert/accept", json!({})).await;
                return text.to_owned();
            }
            assert!(started.elapsed() < WAIT, "no dialog appeared");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets the window size (outer, in CSS pixels).
    pub async fn set_size(&self, width: u32, height: u32) {
        self.post(
            "/window/rect",
            json!({ "width": width, "height": height, "x": 0, "y": 0 }),
        )
        .await;
    }

    /// Makes the page see `prefers-color-scheme: dark` (or light), through Chromium's DevTools.
    pub async fn prefer_dark(&self, dark: bool) {
        let scheme = if dark { "dark" } else { "light" };
        self.post(
            "/goog/cdp/execute",
            json!({ "cmd": "Emulation.setEmulatedMedia", "params": {
                "features": [{ "name": "prefers-color-scheme", "value": scheme }] } }),
        )
        .await;
    }

    /// Saves a screenshot of the whole page to `path` (grows the window to the page's height
    /// for the shot, then restores it).
    pub async fn screenshot(&self, path: &Path) {
        let rect = self.get("/window/rect").await;
        let width = rect["width"].as_u64().unwrap_or(1280) as u32;
        let height = rect["height"].as_u64().unwrap_or(900) as u32;
        let page = self
            .eval(
                "return Math.max(document.documentElement.scrollHeight, window.innerHeight);",
                json!([]),
            )
            .await
            .as_u64()
            .unwrap_or(u64::from(height)) as u32;
        let chrome = height.saturating_sub(
            self.eval("return window.innerHeight;", json!([]))
                .await
                .as_u64()
                .unwrap_or(u64::from(height)) as u32,
        );
        let full = (page + chrome).clamp(height, 6000);
        if full != height {
            self.set_size(width, full).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let data = self.get("/screenshot").await;
        if full != height {
            self.set_size(width, height).await;
        }
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the screenshot directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (which quits Chromium) with a plain blocking request, then stops
        // chromedriver itself.
        if let Some(rest) = self.session_url.strip_prefix("http://")
            && let Some((host, path)) = rest.split_once('/')
            && let Ok(mut stream) = std::net::TcpStream::connect(host)
        {
            use std::io::{Read, Write};
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `target/ui-screenshots/{name}.png` of the workspace.
pub fn screenshot_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("ui-screenshots").join(format!("{name}.png"))
}
