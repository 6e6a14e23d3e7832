//! The `drydock` binary as an operator runs it: help, first start with generated secrets,
//! refusal of bad settings, and a clean exit on SIGTERM.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_drydock");

/// A command with a clean environment, so settings on the developer's machine do not leak in.
fn drydock(data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DRYDOCK_DATA_DIR", data_dir)
        .env("DRYDOCK_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        // These tests are about start-up and shutdown; building the sandbox image (which drydock
        // does when its own is missing) is tested in tests/tests/first_run.rs.
        .env("DRYDOCK_SANDBOX_IMAGE_BUILD", "off");
    cmd
}

/// Reads stderr lines on a thread until one contains `needle`, returning everything read so far.
fn spawn_stderr_reader(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str, log: &mut Vec<String>) -> String {
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "no log line containing {needle:?}; log so far:\n{}",
                    log.join("\n")
                )
            });
        log.push(line.clone());
        if line.contains(needle) {
            return line;
        }
    }
}

#[test]
fn help_lists_every_setting_with_its_environment_variable() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for var in [
        "DRYDOCK_ADDR",
        "DRYDOCK_PUBLIC_URL",
        "DRYDOCK_DATA_DIR",
        "DATABASE_URL",
        "ENCRYPTION_KEY",
        "JWE_SECRET",
        "GITHUB_CLIENT_ID",
        "GITHUB_CLIENT_SECRET",
        "GITHUB_URL",
        "GITHUB_API_URL",
        "DOCKER_HOST",
        "DRYDOCK_SANDBOX_IMAGE",
        "DRYDOCK_SANDBOX_IMAGE_NAME",
        "DRYDOCK_SANDBOX_IMAGE_BUILD",
        "DRYDOCK_ADMINS",
        "DRYDOCK_SANDBOX_NETWORK",
        "DRYDOCK_MAX_TASK_DURATION",
        "DRYDOCK_MAX_TASKS_PER_DAY",
        "DRYDOCK_MAX_CONCURRENT_TASKS",
        "RUST_LOG",
        "DRYDOCK_LOG_FORMAT",
    ] {
        assert!(
            help.contains(&format!("[env: {var}")),
            "--help does not mention {var}:\n{help}"
        );
    }
    assert!(
        help.contains("serve") && help.contains("migrate"),
        "subcommands listed"
    );
    assert!(help.contains("[default: 127.0.0.1:3000]"));
}

#[test]
fn listening_on_every_address_gives_a_public_url_a_browser_can_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = drydock(&dir.path().join("data"))
        .env("DRYDOCK_ADDR", "0.0.0.0:0")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let rx = spawn_stderr_reader(&mut child);
    let mut log = Vec::new();
    let line = wait_for_line(&rx, "drydock is listening", &mut log);
    // SIGTERM, not SIGKILL: a killed server leaves the warm sandbox it was creating behind.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let port = line
        .split("addr=0.0.0.0:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no bound address in {line}"));
    assert!(
        line.contains(&format!("public_url=http://localhost:{port}")),
        "{line}"
    );
}

#[test]
fn first_start_generates_private_secrets_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = drydock(&data)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let rx = spawn_stderr_reader(&mut child);
    let mut log = Vec::new();
    let line = wait_for_line(&rx, "drydock is listening", &mut log);
    let addr = line
        .split("addr=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();

    for file in ["encryption.key", "jwe.secret"] {
        let path = data.join(file);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file} must be readable by the owner only");
        let key = std::fs::read_to_string(&path).unwrap();
        assert_eq!(key.trim().len(), 64);
        assert!(
            !log.iter().any(|l| l.contains(key.trim())),
            "a generated key was logged"
        );
    }
    assert!(
        log.iter()
            .any(|l| l.contains("generated") && l.contains("ENCRYPTION_KEY")),
        "{log:?}"
    );
    assert!(
        data.join("drydock.db").exists(),
        "SQLite file created in the data directory"
    );
    let dir_mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        dir_mode, 0o700,
        "a data directory drydock creates is private to its user"
    );

    let body = reqwest::blocking::get(format!("http://{addr}/healthz")).unwrap();
    assert_eq!(body.status(), 200);
    assert_eq!(body.json::<serde_json::Value>().unwrap()["status"], "ok");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(
        exit.success(),
        "drydock exits cleanly on SIGTERM, got {exit}"
    );
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        log.push(line);
    }
    assert!(log.iter().any(|l| l.contains("drydock stopped")), "{log:?}");

    // A second start reuses the generated keys instead of making new ones (which would make
    // every sealed secret unreadable).
    let key_before = std::fs::read_to_string(data.join("encryption.key")).unwrap();
    let mut child = drydock(&data)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let rx = spawn_stderr_reader(&mut child);
    let mut log = Vec::new();
    wait_for_line(&rx, "drydock is listening", &mut log);
    assert!(
        !log.iter().any(|l| l.contains("generated")),
        "keys were generated again: {log:?}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("encryption.key")).unwrap(),
        key_before
    );
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "drydock exits cleanly on SIGINT"
    );
}

fn run_to_failure(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "expected drydock to refuse to start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bare_path_as_database_url_is_answered_with_the_url_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = run_to_failure(drydock(dir.path()).env("DATABASE_URL", "/srv/drydock/team.db"));
    assert!(
        stderr.contains("write sqlite:/srv/drydock/team.db"),
        "{stderr}"
    );
    assert!(!stderr.contains("scheme"), "{stderr}");
}

#[test]
fn a_key_value_database_string_is_refused_without_echoing_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = run_to_failure(drydock(dir.path()).env(
        "DATABASE_URL",
        "password=hunter2secret host=db user=drydock",
    ));
    assert!(
        stderr.contains("DATABASE_URL must start with sqlite: or postgres://"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2secret"),
        "the password must not be printed: {stderr}"
    );
}

#[test]
fn an_unsupported_database_url_is_a_clear_startup_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = run_to_failure(
        drydock(dir.path()).env("DATABASE_URL", "mysql://admin:hunter2secret@db/drydock"),
    );
    assert!(
        stderr.contains("DATABASE_URL must start with sqlite: or postgres://"),
        "{stderr}"
    );
    assert!(stderr.contains("\"mysql\""), "{stderr}");
    assert!(
        !stderr.contains("hunter2secret"),
        "the URL's password must not be printed: {stderr}"
    );
}

#[test]
fn a_default_network_policy_wider_than_the_maximum_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    // The maximum is left at its default (allowlist).
    let stderr = run_to_failure(drydock(dir.path()).env("DRYDOCK_NETWORK_POLICY", "open"));
    assert!(
        stderr.contains("DRYDOCK_NETWORK_POLICY is open")
            && stderr.contains("DRYDOCK_NETWORK_POLICY_MAX is the narrower allowlist"),
        "{stderr}"
    );
}

#[test]
fn a_malformed_encryption_key_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = run_to_failure(drydock(dir.path()).env("ENCRYPTION_KEY", "not-a-hex-key"));
    assert_eq!(
        stderr.matches("ENCRYPTION_KEY is malformed").count(),
        1,
        "the error is said once: {stderr}"
    );
    assert!(
        stderr.contains("openssl rand -hex 32"),
        "it says how to make a good one: {stderr}"
    );
    assert!(
        !stderr.contains("not-a-hex-key"),
        "the value is not echoed: {stderr}"
    );

    let stderr = run_to_failure(drydock(dir.path()).env("JWE_SECRET", "g".repeat(64)));
    assert!(stderr.contains("JWE_SECRET is malformed"), "{stderr}");

    // For a log collector the error is one JSON record, not a JSON record plus a plain line.
    let stderr = run_to_failure(
        drydock(dir.path())
            .env("ENCRYPTION_KEY", "not-a-hex-key")
            .env("DRYDOCK_LOG_FORMAT", "json"),
    );
    let records: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|line| line.contains("ENCRYPTION_KEY is malformed"))
        .map(|line| serde_json::from_str(line).expect("every line is a JSON record"))
        .collect();
    assert_eq!(records.len(), 1, "{stderr}");
    assert_eq!(records[0]["level"], "ERROR", "{stderr}");
}

/// A PostgreSQL server that is not there is named with what the connection got, not as a pool
/// timeout, and without the URL's password.
#[test]
fn an_unreachable_postgres_says_where_and_why() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let stderr = run_to_failure(drydock(dir.path()).env(
        "DATABASE_URL",
        format!("postgres://drydock:hunter2secret@127.0.0.1:{port}/drydock"),
    ));
    assert!(
        stderr.contains(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port}/drydock"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(!stderr.contains("hunter2secret"), "{stderr}");
}

/// Settings that drydock would otherwise accept and then silently not use stop start-up with a
/// line naming the setting and what to write instead.
#[test]
fn settings_that_cannot_work_are_refused_at_startup() {
    // (settings, what the error says)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        // An allowlist entry allows its subdomains: `com` would allow every .com host.
        (
            &[("DRYDOCK_EGRESS_ALLOW", "com")],
            &["DRYDOCK_EGRESS_ALLOW", "\"com\" is a single label"],
        ),
        (
            &[("DRYDOCK_EGRESS_ALLOW", "pypi.org,localhost")],
            &["DRYDOCK_EGRESS_ALLOW", "\"localhost\" is a single label"],
        ),
        (
            &[("DRYDOCK_EGRESS_ALLOW", "https://pypi.org/simple")],
            &["DRYDOCK_EGRESS_ALLOW", "is not a domain name or address"],
        ),
        (
            &[("DRYDOCK_DAILY_COST_BUDGET_USD", "-5")],
            &["DRYDOCK_DAILY_COST_BUDGET_USD", "0 or more"],
        ),
        (
            &[("DRYDOCK_ANTHROPIC_BASE_URL", "litellm.internal:4000")],
            &[
                "DRYDOCK_ANTHROPIC_BASE_URL",
                "is not an http:// or https:// URL",
            ],
        ),
        (
            &[("DRYDOCK_OPENAI_BASE_URL", "not a url")],
            &[
                "DRYDOCK_OPENAI_BASE_URL",
                "is not an http:// or https:// URL",
            ],
        ),
        (
            &[("DRYDOCK_ENVIRONMENT_IMAGES", "python:3.12")],
            &["DRYDOCK_ENVIRONMENT_IMAGES", "is not name=image"],
        ),
        (
            &[("GITHUB_CLIENT_ID", "Iv1.0123456789abcdef")],
            &["GITHUB_CLIENT_ID is set but GITHUB_CLIENT_SECRET is not"],
        ),
        (
            &[
                ("DRYDOCK_NETWORK_POLICY", "off"),
                ("DRYDOCK_DAILY_TOKEN_BUDGET", "100000"),
            ],
            &["DRYDOCK_NETWORK_POLICY=off", "model gateway"],
        ),
        // The proxy refuses private addresses after resolution: allowing one in words only
        // would block every connection to it.
        (
            &[("DRYDOCK_EGRESS_ALLOW", "pypi.org,10.0.0.1")],
            &[
                "DRYDOCK_EGRESS_ALLOW names 10.0.0.1, a private address",
                "DRYDOCK_EGRESS_ALLOW_PRIVATE=true",
            ],
        ),
        // Kubernetes settings (issue 22's start-up checks).
        (
            &[
                ("DRYDOCK_SANDBOX_BACKEND", "kubernetes"),
                ("DRYDOCK_SANDBOX_NETWORK", "host"),
            ],
            &["DRYDOCK_SANDBOX_NETWORK=host has no Kubernetes form"],
        ),
        (
            &[("DRYDOCK_KUBERNETES_NODE_SELECTOR", "disk type=ssd")],
            &[
                "DRYDOCK_KUBERNETES_NODE_SELECTOR",
                "\"disk type\" is not a valid label key",
            ],
        ),
        (
            &[("DRYDOCK_KUBERNETES_NODE_SELECTOR", "zone=a,disk=ssd,zone=b")],
            &[
                "DRYDOCK_KUBERNETES_NODE_SELECTOR",
                "\"zone\" is given twice",
            ],
        ),
        (
            &[
                ("DRYDOCK_SANDBOX_BACKEND", "kubernetes"),
                ("HOME", "/nonexistent/drydock-home"),
            ],
            &[
                "no Kubernetes configuration found",
                "KUBECONFIG (unset)",
                "/nonexistent/drydock-home/.kube/config (missing)",
                "in-cluster service account",
            ],
        ),
        (
            &[
                ("DOCKER_HOST", "tcp://127.0.0.1:1"),
                ("DOCKER_CERT_PATH", "/nonexistent/drydock-certs"),
            ],
            &[
                "DOCKER_CERT_PATH=/nonexistent/drydock-certs lacks",
                "/nonexistent/drydock-certs/ca.pem",
                "/nonexistent/drydock-certs/key.pem",
            ],
        ),
    ];
    // A setting after `serve` is read as one (not "unexpected argument").
    let dir = tempfile::tempdir().unwrap();
    let stderr = run_to_failure(drydock(dir.path()).args([
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--daily-cost-budget-usd=-1",
    ]));
    assert!(
        stderr.contains("invalid value \"-1\" for DRYDOCK_DAILY_COST_BUDGET_USD"),
        "{stderr}"
    );
    for (env, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = drydock(dir.path());
        for (name, value) in *env {
            cmd.env(name, value);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A server that starts would run forever: give it a minute to refuse.
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("drydock started with {env:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{env:?}: {stderr}");
        for needle in *says {
            assert!(
                stderr.contains(needle),
                "{env:?}: {needle:?} missing from {stderr}"
            );
        }
    }
}

#[test]
fn migrate_subcommand_creates_the_schema_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let out = drydock(dir.path()).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("drydock.db").exists());
    // Idempotent.
    let out = drydock(dir.path()).arg("migrate").output().unwrap();
    assert!(out.status.success());
}

#[test]
fn a_bad_agents_file_stops_startup_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agents.toml");
    std::fs::write(
        &file,
        "[[agents]]\nid = \"x\"\nname = \"X\"\nargv = [\"x\", \"{prompt}\"]\nbogus_field = 1\n",
    )
    .unwrap();
    let stderr = run_to_failure(drydock(dir.path()).env("DRYDOCK_AGENTS_FILE", &file));
    assert!(stderr.contains("DRYDOCK_AGENTS_FILE"), "{stderr}");
    assert!(
        stderr.contains("line 5"),
        "the error names the line: {stderr}"
    );
}

/// Every `repository:tag` Docker has under `name`.
fn image_tags(name: &str) -> Vec<String> {
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

/// Removes the throwaway tags a test made (an image that also has another tag stays).
struct RemoveImageTags(String);

impl Drop for RemoveImageTags {
    fn drop(&mut self) {
        for tag in image_tags(&self.0) {
            let _ = Command::new("docker")
                .args(["image", "rm", &tag])
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// `drydock image build` as an operator runs it: a progress bar stage by stage, the image under
/// its content-addressed tag, exit 0; run again, it says the image is there. Needs root, Docker
/// and the npm registry and apt mirror the offline recipe uses. Cost: about 15-20 s when an
/// image from the same inputs is already on this machine (the build then only tags it), a full
/// build (about 3 min) otherwise.
#[test]
fn image_build_builds_in_the_foreground_with_progress() {
    let name = format!("drydock-cli-test-{}", std::process::id());
    let _cleanup = RemoveImageTags(name.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut build = drydock(dir.path());
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        build.env("DOCKER_HOST", host);
    }
    let out = build
        .env("DRYDOCK_SANDBOX_IMAGE_NAME", &name)
        .env("DRYDOCK_SANDBOX_IMAGE_BUILD", "offline")
        .args(["image", "build"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("step 1/5 checking host tools"), "{stderr}");
    assert!(
        stderr.contains(&format!("Built {name}:recipe-")),
        "{stderr}"
    );
    let tags = image_tags(&name);
    assert!(
        tags.iter()
            .any(|t| t.starts_with(&format!("{name}:recipe-"))),
        "{tags:?}"
    );

    let again = drydock(dir.path())
        .env("DRYDOCK_SANDBOX_IMAGE_NAME", &name)
        .args(["image", "build"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(stderr.contains("already on the Docker host"), "{stderr}");
}

/// A build that fails exits non-zero and prints its last lines; here the Debian mirror is a
/// closed port on this machine (the offline recipe reads `DRYDOCK_DEBIAN_MIRROR`).
#[test]
fn image_build_fails_loudly_with_the_build_s_last_lines() {
    let name = format!("drydock-cli-fail-{}", std::process::id());
    let _cleanup = RemoveImageTags(name.clone());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mirror = format!("http://{}/debian", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let stderr = run_to_failure(
        drydock(dir.path())
            .env("DRYDOCK_SANDBOX_IMAGE_NAME", &name)
            .env("DRYDOCK_SANDBOX_IMAGE_BUILD", "offline")
            .env("DRYDOCK_DEBIAN_MIRROR", &mirror)
            .args(["image", "build"]),
    );
    assert!(stderr.contains("Last lines of the build:"), "{stderr}");
    assert!(stderr.contains("cannot fetch"), "{stderr}");
    assert!(
        stderr.contains("building the sandbox image failed"),
        "{stderr}"
    );
    assert!(image_tags(&name).is_empty());

    // A named image is the operator's own: drydock does not build it.
    let stderr = run_to_failure(
        drydock(dir.path())
            .env("DRYDOCK_SANDBOX_IMAGE", "my-own:image")
            .args(["image", "build"]),
    );
    assert!(stderr.contains("builds only its own"), "{stderr}");
}
