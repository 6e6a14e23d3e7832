//! A first run: drydock started with no image named, against a Docker host without its default
//! image, builds that image itself while it already serves; a named image that is missing is
//! reported, not built; and the operator page.
//!
//! Cost of `drydock_builds_its_own_image_while_tasks_wait`: the build reuses what
//! `sandbox/image/build-offline` keeps between runs. Its first stage always runs (it resolves
//! the npm versions and the Debian release: about 10-20 s of npm and apt look-ups). When an image
//! from the same inputs exists (label `org.drydock.inputs`, left by an earlier build on this
//! machine, e.g. `drydock image build`), the build then only tags it: the whole test takes about
//! 40 s. When the inputs changed (a new CLI release on npm, a Debian point release, an edited
//! script) it builds from scratch: about 3-5 min on a busy 2-core machine, then 40 s again.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use drydock_tests::browser::{Browser, screenshot_path};
use drydock_tests::tasks::TaskEnv;
use drydock_tests::{App, TestDb};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The scratch directory `build-offline` keeps (and locks) between builds.
const BUILD_WORKDIR: &str = "/var/tmp/drydock-build-offline";

/// The content-addressed tag drydock's own image has under `name`, worked out from the recipe
/// files in the repository (the script and the Dockerfile).
fn recipe_tag(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox/image");
    let mut hasher = Sha256::new();
    hasher.update(std::fs::read(dir.join("build-offline")).unwrap());
    hasher.update([0u8]);
    hasher.update(std::fs::read(dir.join("Dockerfile")).unwrap());
    format!("{name}:recipe-{}", &hex::encode(hasher.finalize())[..16])
}

/// Every `repository:tag` Docker has under `name`.
fn tags_of(name: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Removes the throwaway tags this test made (an image shared with another tag stays).
struct RemoveTags(String);

impl Drop for RemoveTags {
    fn drop(&mut self) {
        for tag in tags_of(&self.0) {
            let _ = Command::new("docker")
                .args(["image", "rm", &tag])
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// Holds the build lock of `build-offline` the way a concurrent build does, so the build waits
/// at its first stage until [`BuildLock::release`].
struct BuildLock(Child);

impl BuildLock {
    fn hold() -> Self {
        std::fs::create_dir_all(BUILD_WORKDIR).unwrap();
        let mut child = Command::new("flock")
            .args([
                &format!("{BUILD_WORKDIR}/.lock"),
                "sh",
                "-c",
                "echo locked; exec cat",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        Self(child)
    }

    fn release(mut self) {
        if let Some(mut stdin) = self.0.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.0.wait();
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

async fn get_json(url: &str) -> (StatusCode, Value) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls `url` until `pred` holds on its JSON; the bound only catches a hung build.
async fn wait_json(url: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (_, body) = get_json(url).await;
        if pred(&body) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30 * 60),
            "{url} never showed {what}; last: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drydock_builds_its_own_image_while_tasks_wait() {
    let name = format!(
        "drydock-fr-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let _cleanup = RemoveTags(name.clone());
    let expected = recipe_tag(&name);
    assert!(tags_of(&name).is_empty());

    // Another build holds the lock, so this one waits in its first stage while we look.
    let lock = BuildLock::hold();
    let env = TaskEnv::start_with_image(
        TestDb::sqlite().await,
        None,
        &[
            "--sandbox-image-name",
            &name,
            "--sandbox-image-build",
            "offline",
            "--admins",
            "alice",
        ],
    )
    .await;
    let url = |path: &str| env.app.url(path);

    // The server answers at once, ready, and says it is building.
    let image = wait_json(&url("/api/sandbox-image"), "a build", |s| {
        s["state"] != "checking"
    })
    .await;
    assert_eq!(image["state"], "building", "{image}");
    assert_eq!(image["image"], expected.as_str(), "{image}");
    let (status, ready) = get_json(&url("/readyz")).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(
        ready,
        json!({ "status": "ready", "sandbox_image": "building" })
    );

    // A task submitted now waits in the queue, saying why.
    let id = env.submit("echo built > built.txt", json!({})).await;
    let queued = env
        .wait_for(&id, "a queue reason", |t| {
            t["status_reason"]
                .as_str()
                .is_some_and(|r| r.contains("sandbox image"))
        })
        .await;
    assert_eq!(queued["status"], "queued", "{queued}");
    assert!(
        queued["status_reason"]
            .as_str()
            .unwrap()
            .starts_with("waiting for the sandbox image to be built (step 1 of 5"),
        "{queued}"
    );

    // The banner, as a person sees it on the home page and the new-task page.
    let browser = Browser::start().await;
    browser.goto(&url("/")).await;
    env.app.gh.approve_as(Some("alice"));
    browser.click("a.button[href^='/auth/github']").await;
    browser
        .wait_text("#image-banner", "Preparing the sandbox image — step 1 of 5")
        .await;
    let banner = browser.text("#image-banner").await;
    assert!(banner.contains("wait in the queue"), "{banner}");
    browser
        .screenshot(&screenshot_path("first-run-banner-home"))
        .await;
    browser.goto(&url("/admin")).await;
    browser.wait_text("#checks", "building").await;
    browser
        .screenshot(&screenshot_path("first-run-admin"))
        .await;
    browser.goto(&url("/tasks/new")).await;
    browser
        .wait_text("#image-banner", "Preparing the sandbox image — step 1 of 5")
        .await;
    browser
        .screenshot(&screenshot_path("first-run-banner-new-task"))
        .await;

    // Let the build go: the task then runs to success, and the image has its tag.
    lock.release();
    let done = env.wait_for(&id, "an end", |t| {
        !matches!(t["status"].as_str(), Some("queued" | "running"))
    });
    let image = wait_json(&url("/api/sandbox-image"), "the end of the build", |s| {
        !matches!(s["state"].as_str(), Some("building" | "checking"))
    })
    .await;
    assert_eq!(image["state"], "ready", "{image}");
    let done = done.await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(get_json(&url("/readyz")).await.1["sandbox_image"], "ready");
    let tags = tags_of(&name);
    assert!(tags.contains(&expected), "{tags:?}");

    // The live banner followed it to the end.
    browser.wait_text("#image-banner", "is ready").await;
    browser
        .screenshot(&screenshot_path("first-run-banner-ready"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_shows_its_last_lines_and_how_to_retry() {
    let name = format!(
        "drydock-fr-fail-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let _cleanup = RemoveTags(name.clone());
    // The offline recipe's Debian mirror is a closed port here: the build fails in its first step.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mirror = format!("http://{}/debian", closed.local_addr().unwrap());
    drop(closed);
    let env = TaskEnv::start_with_image(
        TestDb::sqlite().await,
        None,
        &[
            "--sandbox-image-name",
            &name,
            "--sandbox-image-build",
            "offline",
            "--debian-mirror",
            &mirror,
        ],
    )
    .await;
    let status = wait_json(
        &env.app.url("/api/sandbox-image"),
        "the end of the build",
        |s| !matches!(s["state"].as_str(), Some("building" | "checking")),
    )
    .await;
    assert_eq!(status["state"], "failed", "{status}");
    let message = status["message"].as_str().unwrap();
    assert!(message.contains("drydock image build"), "{message}");
    // Still ready for a load balancer: everything but running tasks works.
    assert_eq!(
        get_json(&env.app.url("/readyz")).await,
        (
            StatusCode::OK,
            json!({ "status": "ready", "sandbox_image": "failed" })
        )
    );

    // The home page shows the build's last lines and how to retry.
    let home = env.get_page("/").await;
    assert!(home.contains("Last lines of the build"), "{home}");
    assert!(home.contains("cannot fetch"), "{home}");
    assert!(home.contains("drydock image build"), "{home}");

    // A task waits in the queue, saying why, instead of failing.
    let id = env.submit("echo never", json!({})).await;
    let task = env
        .wait_for(&id, "a queue reason", |t| !t["status_reason"].is_null())
        .await;
    assert_eq!(task["status"], "queued", "{task}");
    assert!(
        task["status_reason"]
            .as_str()
            .unwrap()
            .contains("its build failed"),
        "{task}"
    );
    assert!(tags_of(&name).is_empty());
}

/// Log lines of every server in this test binary.
fn captured_log() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| {
        struct Sink;
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if let Ok(mut log) = captured_log().lock() {
                    log.extend_from_slice(buf);
                }
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(|| Sink)
            .try_init();
        Mutex::new(Vec::new())
    })
}

async fn a_missing_named_image_is_reported_and_tasks_fail_fast(db: TestDb) {
    let _ = captured_log();
    let image = format!(
        "drydock-fr-missing-{}:nope",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let env = TaskEnv::start_with_image(db, Some(&image), &["--sandbox-image-build", "auto"]).await;
    let status = wait_json(&env.app.url("/api/sandbox-image"), "the check", |s| {
        s["state"] != "checking"
    })
    .await;
    assert_eq!(status["state"], "missing", "{status}");
    assert_eq!(status["named"], true, "{status}");

    // Start-up log: one warning naming the image and the setting.
    let log = String::from_utf8_lossy(&captured_log().lock().unwrap()).into_owned();
    let line = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&image))
        .unwrap_or_else(|| panic!("no warning about {image} in the log:\n{log}"));
    assert!(line.contains("DRYDOCK_SANDBOX_IMAGE"), "{line}");

    // Home page: the same message.
    let home = env.get_page("/").await;
    assert!(home.contains("id=\"image-banner\""), "{home}");
    assert!(
        home.contains(&format!(
            "The sandbox image {image} (DRYDOCK_SANDBOX_IMAGE) is not on the Docker host"
        )),
        "{home}"
    );

    // A task fails fast with that message; nothing was built.
    let id = env.submit("echo never", json!({})).await;
    let done = env.wait_done(&id).await;
    assert_eq!(done["status"], "failed", "{done}");
    let reason = done["status_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&image) && reason.contains("not on the Docker host"),
        "{done}"
    );
    let repo = image.split(':').next().unwrap();
    assert!(tags_of(repo).is_empty());
}

async fn the_operator_page_is_for_admins_only(db: TestDb) {
    let app = App::start(
        db,
        &["--admins", "someone-else,Alice", "--sandbox-pids", "256"],
    )
    .await;
    let alice = app.sign_in("alice").await;
    let bob = app.sign_in("bob").await;

    let page = alice.get(app.url("/admin")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    for needle in [
        "Docker",
        "version ",
        "Sandbox image",
        "Database",
        "migration ",
        "OAuth app configured",
        "/auth/github/callback",
        "queued",
        "kept sandboxes",
        "Replicas",
        "(this one)",
        "DRYDOCK_SANDBOX_PIDS",
        "DRYDOCK_ADMINS",
        "GITHUB_CLIENT_SECRET",
    ] {
        assert!(
            html.contains(needle),
            "{needle} missing from /admin:\n{html}"
        );
    }
    // Secret settings show that they are set, never their value.
    let secret = app.gh.settings();
    let secret = secret
        .iter()
        .skip_while(|a| *a != "--github-client-secret")
        .nth(1)
        .unwrap();
    assert!(!html.contains(secret.as_str()));
    assert!(html.contains("(set)"));
    // Alice's menu links the page; Bob's does not.
    let home = alice
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains("href=\"/admin\""));

    for (who, client) in [("bob", &bob), ("nobody", &drydock_tests::app::browser().0)] {
        let resp = client.get(app.url("/admin")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{who}");
        let html = resp.text().await.unwrap();
        assert!(!html.contains("Sandbox image"), "{who}: {html}");
    }
    let home_of_bob = bob
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!home_of_bob.contains("href=\"/admin\""));
}

async fn the_setup_page_shows_the_same_checks(db: TestDb) {
    let server = drydock_tests::TestServer::start(&db.url, &[]).await;
    let html = reqwest::get(format!("{}/", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "Set up sign-in",
        "id=\"checks\"",
        "Sandbox image",
        "Database",
        "no OAuth app configured",
        "href=\"/admin\"",
    ] {
        assert!(
            html.contains(needle),
            "{needle} missing from the setup page:\n{html}"
        );
    }
}

drydock_tests::on_both_backends!(
    a_missing_named_image_is_reported_and_tasks_fail_fast,
    the_operator_page_is_for_admins_only,
    the_setup_page_shows_the_same_checks,
);
