//! The sandbox image has the tools and agent CLIs the agents registry expects.

mod common;

use common::*;
use drydock_sandbox::{ExecSpec, Limits};

/// (command, npm package) for every agent CLI shipped from npm.
const CLIS: &[(&str, &str)] = &[
    ("claude", "@anthropic-ai/claude-code"),
    ("codex", "@openai/codex"),
    ("gemini", "@google/gemini-cli"),
    ("opencode", "opencode-ai"),
    ("copilot", "@github/copilot"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_has_git_node_and_every_agent_cli() {
    let sbx = sandboxes("image").await;
    let spec = sbx.spec("image-tools").limits(Limits {
        pids: 512,
        memory_bytes: 2 << 30,
        cpus: 2.0,
    });
    let sb = sbx.create(spec).await.unwrap();
    let _g = Cleanup(sb.id().to_owned());

    assert!(sh(&sb, "git --version").await.starts_with("git version 2."));
    sh(
        &sb,
        "cd /tmp && git init -q r && cd r && echo x > f && git add f && git commit -q -m m && git log --oneline | grep -q m",
    )
    .await;
    let node = sh(&sb, "node --version").await;
    assert!(node.starts_with("v22."), "node is {node}");
    assert_eq!(sh(&sb, "node -e 'console.log(6*7)'").await, "42");
    assert!(
        sh(&sb, "npm --version")
            .await
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    );
    assert!(sh(&sb, "python3 --version").await.starts_with("Python 3."));
    sh(
        &sb,
        "python3 -m venv /tmp/venv && /tmp/venv/bin/python -c 'import sys'",
    )
    .await;
    assert!(sh(&sb, "rg --version").await.starts_with("ripgrep"));
    assert_eq!(sh(&sb, "echo $HOME; id -un").await, "/home/agent\nagent");

    // The offline build records which npm packages it could install; the
    // Dockerfile build has no such file and must have them all.
    let listed = run(&sb, ExecSpec::new(["cat", "/opt/drydock/npm-packages.txt"])).await;
    let manifest = listed.exit.success().then(|| listed.stdout_str());
    let mut skipped = Vec::new();
    for (cli, package) in CLIS {
        if let Some(manifest) = &manifest
            && !manifest
                .lines()
                .any(|l| l.starts_with(&format!("{package}@")))
        {
            eprintln!(
                "SKIP {cli}: npm package {package} could not be had when the image was built"
            );
            skipped.push(*cli);
            continue;
        }
        let out = run(&sb, ExecSpec::new([*cli, "--version"])).await;
        let text = out.stdout_str();
        assert!(
            out.exit.success() && text.chars().any(|c| c.is_ascii_digit()),
            "`{cli} --version` failed: {:?}\nstdout: {text}\nstderr: {}",
            out.exit,
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{cli}: {}", text.lines().next().unwrap_or_default());
    }
    if sh(&sb, "command -v cursor-agent || true").await.is_empty() {
        eprintln!(
            "SKIP cursor-agent: Cursor's CLI has no npm package (only the online Dockerfile installs it)"
        );
    }
    if !skipped.is_empty() {
        eprintln!("skipped CLIs: {skipped:?}");
    }
    sb.remove().await.unwrap();
}
