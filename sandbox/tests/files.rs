//! Files in and out: tree upload, private config files, git bundle export.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;
use drydock_sandbox::{ExecSpec, Owner, SandboxError};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_tree_reads_back_identically_and_belongs_to_the_sandbox_user() {
    let sbx = sandboxes("files-upload").await;
    let (sb, _g) = sandbox(&sbx, "files-upload").await;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("src/nested/deeper")).unwrap();
    std::fs::write(root.join("README.md"), "# hello\n").unwrap();
    std::fs::write(root.join("src/main.rs"), "fn main() {}\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("src/nested/deeper/data.bin"), &big).unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root.join("name with spaces.txt"), "spaced\n").unwrap();
    std::os::unix::fs::symlink("README.md", root.join("link-to-readme")).unwrap();

    sb.upload_dir("/workspace", root).await.unwrap();

    let listing = sh(
        &sb,
        "cd /workspace && find . -mindepth 1 | sort | while IFS= read -r f; do stat -c '%n %F %u:%g %a' \"$f\"; done",
    )
    .await;
    let expected = [
        "./README.md regular file 1000:1000 644",
        "./link-to-readme symbolic link 1000:1000 777",
        "./name with spaces.txt regular file 1000:1000 644",
        "./run.sh regular file 1000:1000 755",
        "./src directory 1000:1000 755",
        "./src/main.rs regular file 1000:1000 644",
        "./src/nested directory 1000:1000 755",
        "./src/nested/deeper directory 1000:1000 755",
        "./src/nested/deeper/data.bin regular file 1000:1000 644",
    ]
    .join("\n");
    assert_eq!(listing, expected);
    assert_eq!(sh(&sb, "cat /workspace/link-to-readme").await, "# hello");
    assert_eq!(sh(&sb, "/workspace/run.sh").await, "ran");
    let back = run(&sb, ExecSpec::new(["cat", "src/nested/deeper/data.bin"])).await;
    assert!(back.stdout == big, "binary file changed on the way");
    // The agent can change what it was given.
    sh(
        &sb,
        "echo more >> /workspace/README.md && mkdir /workspace/src/new",
    )
    .await;

    // A caller-made tar stream works too; ownership comes from its headers.
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(3);
    header.set_mode(0o640);
    header.set_uid(1000);
    header.set_gid(1000);
    tar.append_data(&mut header, "from-stream.txt", &b"abc"[..])
        .unwrap();
    let bytes = bytes::Bytes::from(tar.into_inner().unwrap());
    sb.upload("/tmp", futures::stream::iter([Ok(bytes)]))
        .await
        .unwrap();
    assert_eq!(
        sh(
            &sb,
            "stat -c '%u:%g %a' /tmp/from-stream.txt; cat /tmp/from-stream.txt"
        )
        .await,
        "1000:1000 640\nabc"
    );

    // Relative destinations are refused before reaching Docker.
    let err = sb.upload_dir("workspace", root).await.unwrap_err();
    assert!(matches!(err, SandboxError::Invalid(_)), "{err}");
    sb.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_file_makes_a_private_file_owned_by_the_sandbox_user() {
    let sbx = sandboxes("files-write").await;
    let (sb, _g) = sandbox(&sbx, "files-write").await;

    let toml = b"[mcp_servers.docs]\ncommand = \"npx\"\n";
    sb.write_file("/home/agent/.codex/config.toml", toml, 0o600, None)
        .await
        .unwrap();
    assert_eq!(
        sh(&sb, "stat -c '%a %u %g %U' /home/agent/.codex/config.toml").await,
        "600 1000 1000 agent"
    );
    assert_eq!(
        sh(&sb, "stat -c '%u %g' /home/agent/.codex").await,
        "1000 1000"
    );
    let back = run(
        &sb,
        ExecSpec::new(["cat", "/home/agent/.codex/config.toml"]),
    )
    .await;
    assert_eq!(back.stdout, toml);

    // Overwriting keeps the requested mode; another user cannot read it.
    sb.write_file("/home/agent/.codex/config.toml", b"x = 1\n", 0o600, None)
        .await
        .unwrap();
    assert_eq!(sh(&sb, "cat /home/agent/.codex/config.toml").await, "x = 1");
    let other = run(
        &sb,
        ExecSpec::new(["cat", "/home/agent/.codex/config.toml"]).user("1001:1001"),
    )
    .await;
    assert!(
        !other.exit.success(),
        "uid 1001 read a 0600 file: {other:?}"
    );

    // An explicit owner.
    sb.write_file(
        "/tmp/root-owned",
        b"r",
        0o644,
        Some(Owner { uid: 0, gid: 0 }),
    )
    .await
    .unwrap();
    assert_eq!(
        sh(&sb, "stat -c '%a %u %g' /tmp/root-owned").await,
        "644 0 0"
    );

    let err = sb
        .write_file("relative.txt", b"", 0o600, None)
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::Invalid(_)), "{err}");
    sb.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_git_bundle_verifies_and_clones_on_the_host() {
    let sbx = sandboxes("files-bundle").await;
    let (sb, _g) = sandbox(&sbx, "files-bundle").await;

    sh(
        &sb,
        "set -e; cd /workspace; git init -q -b main repo; cd repo; \
         echo 'first' > a.txt; git add a.txt; git commit -q -m 'first commit'; \
         git checkout -q -b drydock/task; printf 'second\\n' > b.txt; git add b.txt; \
         git commit -q -m 'agent work'",
    )
    .await;

    let mut bundle = sb
        .export(
            &ExecSpec::new(["git", "bundle", "create", "-", "--all"]).workdir("/workspace/repo"),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("work.bundle");
    let mut file = tokio::fs::File::create(&path).await.unwrap();
    while let Some(chunk) = bundle.next().await {
        file.write_all(&chunk.unwrap()).await.unwrap();
    }
    file.flush().await.unwrap();
    drop(file);

    let verify = Command::new("git")
        .args(["bundle", "verify"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "git bundle verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let clone_dir = dir.path().join("clone");
    let clone = Command::new("git")
        .args(["clone", "-q", "-b", "drydock/task"])
        .arg(&path)
        .arg(&clone_dir)
        .output()
        .unwrap();
    assert!(
        clone.status.success(),
        "git clone: {}",
        String::from_utf8_lossy(&clone.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(clone_dir.join("b.txt")).unwrap(),
        "second\n"
    );
    let log = Command::new("git")
        .args(["log", "--format=%s"])
        .current_dir(&clone_dir)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&log.stdout),
        "agent work\nfirst commit\n"
    );

    // A failing export ends its stream with an error that carries stderr.
    let mut failing = sb
        .export(&ExecSpec::new(["git", "bundle", "create", "-", "--all"]).workdir("/tmp"))
        .await
        .unwrap();
    let mut last = None;
    while let Some(item) = failing.next().await {
        last = Some(item);
    }
    match last {
        Some(Err(SandboxError::ExportFailed { stderr, .. })) => {
            assert!(stderr.contains("repository"), "{stderr}")
        }
        other => panic!("expected ExportFailed, got {other:?}"),
    }
    sb.remove().await.unwrap();
}
