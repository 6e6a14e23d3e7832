//! Git over smart HTTP for the GitHub stand-in: each request runs the real `git http-backend`
//! as a CGI program over a directory of bare repositories, with the request body streamed to its
//! stdin and its stdout streamed back; plus the plain `git` plumbing the stand-in needs (making a
//! bare repository with a first commit, resolving branches, counting commits).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio_util::io::ReaderStream;

/// Author and committer of the commits the stand-in makes itself.
const AUTHOR_NAME: &str = "Stand-in Bot";
/// Their email.
const AUTHOR_EMAIL: &str = "standin@users.example";
/// A fixed date, so a repository made from the same files has the same commit id.
const AUTHOR_DATE: &str = "2026-01-01T00:00:00Z";

/// Where a smart-HTTP request points: `/{owner}/{repo}.git/{rest}` (the `.git` is optional, as
/// on GitHub).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitPath {
    /// Owner login.
    pub owner: String,
    /// Repository name, without `.git`.
    pub repo: String,
    /// What follows the repository: `info/refs`, `git-upload-pack` or `git-receive-pack`.
    pub rest: String,
}

impl GitPath {
    /// Parses a request path; `None` when it is not one of the smart-HTTP endpoints.
    pub fn parse(path: &str) -> Option<Self> {
        let mut parts = path.trim_start_matches('/').splitn(3, '/');
        let owner = parts.next()?;
        let repo = parts.next()?;
        let rest = parts.next()?;
        let repo = repo.strip_suffix(".git").unwrap_or(repo);
        let valid = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !valid(owner) || !valid(repo) {
            return None;
        }
        if !matches!(rest, "info/refs" | "git-upload-pack" | "git-receive-pack") {
            return None;
        }
        Some(Self {
            owner: owner.into(),
            repo: repo.into(),
            rest: rest.into(),
        })
    }

    /// Whether the request is part of a push.
    pub fn is_push(&self, query: &str) -> bool {
        self.rest == "git-receive-pack"
            || (self.rest == "info/refs"
                && query
                    .split('&')
                    .any(|pair| pair == "service=git-receive-pack"))
    }

    /// `owner/repo`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }
}

/// The bare repository of `owner/name` under `root`.
pub fn bare_path(root: &Path, owner: &str, name: &str) -> PathBuf {
    root.join(owner).join(format!("{name}.git"))
}

/// Runs `git http-backend` for one request and streams its answer back.
///
/// `root` holds the bare repositories; `remote_user` is the authenticated login, if any;
/// `workflow` says whether their token may add or change workflow files (a push that does
/// without it is refused as GitHub refuses it, see [`WORKFLOW_HOOK`]).
pub async fn serve(
    root: &Path,
    path: &GitPath,
    remote_user: Option<&str>,
    workflow: bool,
    req: Request,
) -> Response {
    let receive = path.rest == "git-receive-pack";
    let response = run_backend(root, path, remote_user, workflow, req).await;
    if !receive {
        return response;
    }
    // The report of a push is small: read it whole to put GitHub's reason in it.
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return (
            StatusCode::BAD_GATEWAY,
            "git http-backend answer unreadable\n",
        )
            .into_response();
    };
    Response::from_parts(parts, Body::from(explain_refusals(&bytes)))
}

/// The `pre-receive` hook of every stand-in repository: GitHub refuses a push that adds or
/// changes a file under `.github/workflows/` unless the token has the `workflow` scope. A hook
/// can only make git report "pre-receive hook declined", so it names the ref and the file on a
/// marked line, which [`explain_refusals`] turns into GitHub's words.
pub const WORKFLOW_HOOK: &str = r#"#!/bin/sh
[ "$STANDIN_WORKFLOW_SCOPE" = yes ] && exit 0
zero=0000000000000000000000000000000000000000
status=0
while read old new ref; do
  [ "$new" = "$zero" ] && continue
  file=$(git log --format= --name-only "$new" --not --all -- .github/workflows | head -n 1)
  if [ -n "$file" ]; then
    echo "STANDIN-WORKFLOW-REFUSAL $ref $file" >&2
    status=1
  fi
done
exit $status
"#;

const REFUSAL_MARK: &str = "STANDIN-WORKFLOW-REFUSAL ";

fn pkt(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", payload.len() + 4).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Splits pkt-lines: each payload, `None` for a flush (or other special) packet.
fn pkt_lines(mut data: &[u8]) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let Some(len) = std::str::from_utf8(&data[..4])
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
        else {
            break;
        };
        if len < 4 {
            out.push(None);
            data = &data[4..];
            continue;
        }
        if data.len() < len {
            break;
        }
        out.push(Some(data[4..len].to_vec()));
        data = &data[len..];
    }
    out
}

/// Rewrites a receive-pack answer (side-band-64k with report-status inside band 1) so that a ref
/// the workflow hook refused reports GitHub's reason instead of "pre-receive hook declined", and
/// drops the hook's marked lines from the progress band.
fn explain_refusals(body: &[u8]) -> Vec<u8> {
    let packets = pkt_lines(body);
    let sideband = packets
        .iter()
        .flatten()
        .all(|p| matches!(p.first(), Some(1..=3)));
    if !sideband || !String::from_utf8_lossy(body).contains(REFUSAL_MARK) {
        return body.to_vec();
    }
    let (mut report, mut progress) = (Vec::new(), String::new());
    let mut other = Vec::new();
    for payload in packets.into_iter().flatten() {
        match payload.first() {
            Some(1) => report.extend_from_slice(&payload[1..]),
            Some(2) => progress.push_str(&String::from_utf8_lossy(&payload[1..])),
            _ => other.push(payload),
        }
    }
    let mut files = std::collections::HashMap::new();
    let mut kept = String::new();
    for line in progress.split_inclusive('\n') {
        match line.trim_end().strip_prefix(REFUSAL_MARK) {
            Some(rest) => {
                if let Some((refname, file)) = rest.split_once(' ') {
                    files.insert(refname.to_owned(), file.to_owned());
                }
            }
            None => kept.push_str(line),
        }
    }
    let mut status = Vec::new();
    for line in pkt_lines(&report) {
        let Some(line) = line else {
            status.extend_from_slice(b"0000");
            continue;
        };
        let text = String::from_utf8_lossy(&line).into_owned();
        let refused = text
            .strip_prefix("ng ")
            .and_then(|rest| rest.split_once(' '))
            .and_then(|(refname, _)| Some((refname, files.get(refname)?)));
        match refused {
            Some((refname, file)) => status.extend(pkt(
                format!(
                    "ng {refname} refusing to allow an OAuth App to create or update workflow `{file}` without `workflow` scope\n"
                )
                .as_bytes(),
            )),
            None => status.extend(pkt(&line)),
        }
    }
    let mut out = Vec::new();
    if !kept.is_empty() {
        let mut band = vec![2u8];
        band.extend_from_slice(kept.as_bytes());
        out.extend(pkt(&band));
    }
    for chunk in status.chunks(65_000) {
        let mut band = vec![1u8];
        band.extend_from_slice(chunk);
        out.extend(pkt(&band));
    }
    for payload in other {
        out.extend(pkt(&payload));
    }
    out.extend_from_slice(b"0000");
    out
}

async fn run_backend(
    root: &Path,
    path: &GitPath,
    remote_user: Option<&str>,
    workflow: bool,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let header_str = |name: HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut cmd = Command::new("git");
    cmd.arg("http-backend");
    isolate(&mut cmd, root);
    cmd.env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env(
            "PATH_INFO",
            format!("/{}/{}.git/{}", path.owner, path.repo, path.rest),
        )
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""));
    if let Some(v) = header_str(header::CONTENT_TYPE) {
        cmd.env("CONTENT_TYPE", v);
    }
    // Chunked requests (git sends large packs that way) have no length: http-backend then reads
    // until end of input.
    if let Some(v) = header_str(header::CONTENT_LENGTH) {
        cmd.env("CONTENT_LENGTH", v);
    }
    if let Some(v) = header_str(header::CONTENT_ENCODING) {
        cmd.env("HTTP_CONTENT_ENCODING", v);
    }
    if let Some(v) = header_str(HeaderName::from_static("git-protocol")) {
        cmd.env("GIT_PROTOCOL", v);
    }
    if let Some(user) = remote_user {
        cmd.env("REMOTE_USER", user);
    }
    cmd.env(
        "STANDIN_WORKFLOW_SCOPE",
        if workflow { "yes" } else { "no" },
    );
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            tracing::error!(error = %e, "cannot start git http-backend");
            return (StatusCode::INTERNAL_SERVER_ERROR, "git unavailable\n").into_response();
        }
    };
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "git pipes\n").into_response();
    };

    // Feed the body while the answer is read: for large pushes both sides stream at once.
    tokio::spawn(async move {
        let mut data = body.into_data_stream();
        while let Some(chunk) = data.next().await {
            let Ok(chunk) = chunk else { break };
            if stdin.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = stdin.shutdown().await;
    });
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::warn!(target: "github_standin", "git http-backend: {line}");
        }
    });
    tokio::spawn(async move {
        let _ = child.wait().await;
    });

    let mut reader = BufReader::new(stdout);
    let mut status = StatusCode::OK;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => {
                return (StatusCode::BAD_GATEWAY, "git http-backend gave no answer\n")
                    .into_response();
            }
            Ok(_) => {}
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("200");
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY);
        } else if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.push((name, value));
        }
    }
    // The rest (possibly part of it already in the reader's buffer) is the body, streamed.
    let mut response = Response::new(Body::from_stream(ReaderStream::new(reader)));
    *response.status_mut() = status;
    for (name, value) in headers {
        response.headers_mut().append(name, value);
    }
    response
}

/// Keeps the host's git configuration (credential helpers, signing, hooks paths) out of git
/// commands the stand-in runs.
fn isolate(cmd: &mut Command, home: &Path) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LANG", "C");
}

fn blocking_git(home: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("git");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LANG", "C")
        .env("GIT_AUTHOR_NAME", AUTHOR_NAME)
        .env("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
        .env("GIT_AUTHOR_DATE", AUTHOR_DATE)
        .env("GIT_COMMITTER_NAME", AUTHOR_NAME)
        .env("GIT_COMMITTER_EMAIL", AUTHOR_EMAIL)
        .env("GIT_COMMITTER_DATE", AUTHOR_DATE);
    cmd
}

fn run_blocking(mut cmd: std::process::Command, what: &str) -> String {
    let out = cmd.output().expect("run git");
    assert!(
        out.status.success(),
        "git {what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Makes a bare repository at `bare` (push enabled, with [`WORKFLOW_HOOK`]) whose HEAD names
/// `default_branch` and which has no commits.
pub fn create_empty_bare_repo(root: &Path, bare: &Path, default_branch: &str) {
    assert!(
        !bare.exists(),
        "repository {} already exists",
        bare.display()
    );
    std::fs::create_dir_all(bare).expect("create bare repository directory");
    let mut init = blocking_git(root);
    init.args(["init", "--quiet", "--bare", "-b", default_branch])
        .arg(bare);
    run_blocking(init, "init --bare");
    let mut config = blocking_git(root);
    config
        .arg("-C")
        .arg(bare)
        .args(["config", "http.receivepack", "true"]);
    run_blocking(config, "config");
    // Like GitHub, say nothing of an unborn HEAD: a clone of an empty repository then lands on
    // the client's own default branch, and only the API tells the repository's.
    let mut unborn = blocking_git(root);
    unborn
        .arg("-C")
        .arg(bare)
        .args(["config", "lsrefs.unborn", "ignore"]);
    run_blocking(unborn, "config");
    let hook = bare.join("hooks").join("pre-receive");
    std::fs::create_dir_all(bare.join("hooks")).expect("hooks directory");
    std::fs::write(&hook, WORKFLOW_HOOK).expect("write hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod hook");
}

/// Makes a bare repository at `bare` (push enabled) whose `default_branch` holds one commit with
/// `files` (path, contents), made by a fixed author at a fixed date.
pub fn create_bare_repo(
    root: &Path,
    bare: &Path,
    files: &[(&str, &str)],
    default_branch: &str,
) -> String {
    create_bare_repo_with_gitlinks(root, bare, files, &[], default_branch)
}

/// [`create_bare_repo`], with submodule entries (`gitlinks`: path and commit) besides the files
/// (a `.gitmodules` among the files names where they come from).
pub fn create_bare_repo_with_gitlinks(
    root: &Path,
    bare: &Path,
    files: &[(&str, &str)],
    gitlinks: &[(&str, &str)],
    default_branch: &str,
) -> String {
    create_empty_bare_repo(root, bare, default_branch);

    let work = tempfile::tempdir().expect("work directory");
    let mut init = blocking_git(root);
    init.args(["init", "--quiet", "-b", default_branch])
        .arg(work.path());
    run_blocking(init, "init");
    for (path, contents) in files {
        let target = work.path().join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).expect("create directory");
        }
        std::fs::write(&target, contents).expect("write file");
    }
    let mut add = blocking_git(root);
    add.arg("-C").arg(work.path()).args(["add", "-A"]);
    run_blocking(add, "add");
    for (path, sha) in gitlinks {
        let mut link = blocking_git(root);
        link.arg("-C").arg(work.path()).args([
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{sha},{path}"),
        ]);
        run_blocking(link, "update-index");
    }
    let mut commit = blocking_git(root);
    commit.arg("-C").arg(work.path()).args([
        "commit",
        "--quiet",
        "--allow-empty",
        "--no-verify",
        "-m",
        "Initial commit",
    ]);
    run_blocking(commit, "commit");
    let mut push = blocking_git(root);
    push.arg("-C")
        .arg(work.path())
        .args(["push", "--quiet"])
        .arg(bare)
        .arg(format!("HEAD:refs/heads/{default_branch}"));
    run_blocking(push, "push");
    branch_sha_blocking(root, bare, default_branch).expect("initial commit")
}

/// The commit `branch` points at in `bare`, if it exists.
pub fn branch_sha_blocking(home: &Path, bare: &Path, branch: &str) -> Option<String> {
    let mut cmd = blocking_git(home);
    cmd.arg("-C").arg(bare).args([
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("refs/heads/{branch}^{{commit}}"),
    ]);
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn git_async(home: &Path, bare: &Path, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new("git");
    isolate(&mut cmd, home);
    cmd.arg("-C").arg(bare).args(args);
    let out = cmd.output().await.ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The commit `branch` points at in `bare`, if it exists.
pub async fn branch_sha(home: &Path, bare: &Path, branch: &str) -> Option<String> {
    git_async(
        home,
        bare,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}^{{commit}}"),
        ],
    )
    .await
}

/// How many commits `head` has that `base` does not.
pub async fn commits_ahead(home: &Path, bare: &Path, base: &str, head: &str) -> Option<u64> {
    git_async(
        home,
        bare,
        &[
            "rev-list",
            "--count",
            &format!("refs/heads/{base}..refs/heads/{head}"),
        ],
    )
    .await?
    .parse()
    .ok()
}
