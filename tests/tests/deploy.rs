//! `deploy/compose.yaml`: two drydock replicas on one PostgreSQL with the host's Docker socket.
//! Docker Compose is not installed on every CI machine (it is not here), so the file is checked
//! by parsing it and reading what an operator relies on; where `docker compose` exists, its own
//! `config` check runs too.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::Command;

use serde_yaml_ng::Value;

fn compose_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose.yaml")
}

fn env_of<'a>(service: &'a Value, name: &str) -> &'a str {
    service["environment"][name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} is not set"))
}

#[test]
fn compose_runs_two_replicas_on_one_postgres_with_the_host_docker_socket() {
    let text = std::fs::read_to_string(compose_file()).unwrap();
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    let services = doc["services"].as_mapping().unwrap();
    assert!(services.contains_key("postgres"));
    let replicas: Vec<&Value> = ["drydock-a", "drydock-b"]
        .iter()
        .map(|name| &doc["services"][*name])
        .collect();
    let ids: Vec<&str> = replicas
        .iter()
        .map(|r| env_of(r, "DRYDOCK_INSTANCE_ID"))
        .collect();
    assert_ne!(ids[0], ids[1], "each replica has its own instance id");
    for replica in &replicas {
        let url = env_of(replica, "DATABASE_URL");
        assert!(
            url.starts_with("postgres://") && url.contains("@postgres:"),
            "{url}"
        );
        assert_eq!(url, env_of(replicas[0], "DATABASE_URL"), "one database");
        for shared in ["ENCRYPTION_KEY", "JWE_SECRET", "DRYDOCK_PUBLIC_URL"] {
            assert_eq!(
                env_of(replica, shared),
                env_of(replicas[0], shared),
                "{shared}"
            );
        }
        let volumes: Vec<&str> = replica["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            volumes.contains(&"/var/run/docker.sock:/var/run/docker.sock"),
            "{volumes:?}"
        );
        assert_eq!(
            env_of(replica, "DOCKER_HOST"),
            "unix:///var/run/docker.sock"
        );
        assert_eq!(
            replica["depends_on"]["postgres"]["condition"].as_str(),
            Some("service_healthy")
        );
        assert_eq!(
            replica["build"]["dockerfile"].as_str(),
            Some("deploy/Dockerfile")
        );
        // One build of the sandbox image, before either replica starts.
        assert_eq!(
            replica["depends_on"]["sandbox-image"]["condition"].as_str(),
            Some("service_completed_successfully")
        );
        // Published for a load balancer on this host, not on every address.
        for port in replica["ports"].as_sequence().unwrap() {
            let port = port.as_str().unwrap();
            assert!(port.starts_with("127.0.0.1:"), "{port}");
        }
    }
    let builder = &doc["services"]["sandbox-image"];
    let command: Vec<&str> = builder["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(command, ["image", "build"]);
    assert_eq!(builder["image"], doc["services"]["drydock-a"]["image"]);
    assert_eq!(builder["restart"].as_str(), Some("no"));
    assert!(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/Dockerfile")
            .is_file()
    );
}

/// The image build sends the sources, not `target/` (tens of GB) or the secrets in `deploy/.env`,
/// which git ignores too.
#[test]
fn the_build_context_and_git_leave_out_build_output_and_secrets() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    let entries: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in ["target/", ".git/", "deploy/.env"] {
        assert!(entries.contains(&needed), "{needed} not in .dockerignore");
    }
    let out = Command::new("git")
        .args(["check-ignore", "-q", "deploy/.env"])
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(out.success(), "git does not ignore deploy/.env");
}

/// Docker Compose's own validation, where it is installed.
#[test]
fn docker_compose_accepts_the_file_when_it_is_installed() {
    let installed = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !installed {
        eprintln!("docker compose is not installed: only the parse check ran");
        return;
    }
    let out = Command::new("docker")
        .args(["compose", "-f"])
        .arg(compose_file())
        .args(["config", "-q"])
        .env("POSTGRES_PASSWORD", "example")
        .env("ENCRYPTION_KEY", "00".repeat(32))
        .env("JWE_SECRET", "11".repeat(32))
        .env("DRYDOCK_PUBLIC_URL", "https://drydock.example")
        .env("GITHUB_CLIENT_ID", "id")
        .env("GITHUB_CLIENT_SECRET", "secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
