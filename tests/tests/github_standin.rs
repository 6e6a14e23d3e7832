#![allow(clippy::unwrap_used)]
//! The GitHub stand-in speaks the real protocols: real `git` clones and pushes over smart HTTP
//! with a token, is refused without one, and the REST pull-request and repository endpoints
//! answer as GitHub does (also through octocrab, as drydock calls them).

use std::path::Path;
use std::process::Output;

use base64::Engine;
use drydock_tests::GithubStandIn;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Runs git in `dir` with no host configuration, no prompts, and `extra` environment.
async fn git(dir: &Path, args: &[&str], extra: &[(&str, String)]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new("git");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LANG", "C")
        .env("GIT_AUTHOR_NAME", "Agent")
        .env("GIT_AUTHOR_EMAIL", "agent@example.test")
        .env("GIT_COMMITTER_NAME", "Agent")
        .env("GIT_COMMITTER_EMAIL", "agent@example.test")
        .current_dir(dir)
        .args(args);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().await.unwrap()
}

async fn git_ok(dir: &Path, args: &[&str], extra: &[(&str, String)]) -> String {
    let out = git(dir, args, extra).await;
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The token as git gets it from drydock: only through the environment.
fn token_env(token: &str) -> Vec<(&'static str, String)> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    vec![
        ("GIT_CONFIG_COUNT", "1".into()),
        ("GIT_CONFIG_KEY_0", "http.extraHeader".into()),
        (
            "GIT_CONFIG_VALUE_0",
            format!("Authorization: Basic {basic}"),
        ),
    ]
}

async fn standin() -> GithubStandIn {
    let gh = GithubStandIn::start().await;
    gh.add_user(101, "alice", 2);
    gh.add_user(202, "bob", 1);
    gh.create_repo(
        "alice",
        "proj",
        &[("README.md", "hello\n"), ("src/lib.rs", "pub fn f() {}\n")],
        "main",
    );
    gh
}

/// Clones `alice/proj` into `dir/name` with `env`, returning git's output.
async fn clone(gh: &GithubStandIn, dir: &Path, env: &[(&str, String)]) -> Output {
    let url = gh.clone_url("alice", "proj");
    git(dir, &["clone", "--quiet", &url, "work"], env).await
}

/// Commits a change on a new `branch` of the clone at `work` and pushes it.
async fn commit_and_push(work: &Path, branch: &str, env: &[(&str, String)]) -> String {
    git_ok(work, &["checkout", "--quiet", "-b", branch], &[]).await;
    std::fs::write(work.join("CHANGES.md"), format!("work on {branch}\n")).unwrap();
    git_ok(work, &["add", "-A"], &[]).await;
    git_ok(work, &["commit", "--quiet", "-m", "Agent change"], &[]).await;
    git_ok(
        work,
        &[
            "push",
            "--quiet",
            "origin",
            &format!("HEAD:refs/heads/{branch}"),
        ],
        env,
    )
    .await;
    git_ok(work, &["rev-parse", "HEAD"], &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_and_push_over_smart_http_with_a_token_from_the_environment() {
    let gh = standin().await;
    let token = gh.issue_token_for("alice");
    let env = token_env(&token);
    let dir = tempfile::tempdir().unwrap();
    let out = clone(&gh, dir.path(), &env).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let work = dir.path().join("work");
    assert_eq!(
        std::fs::read_to_string(work.join("README.md")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        git_ok(&work, &["rev-parse", "--abbrev-ref", "HEAD"], &[]).await,
        "main"
    );
    // The token is not in what git remembers.
    let config = std::fs::read_to_string(work.join(".git/config")).unwrap();
    assert!(!config.contains(&token));

    let sha = commit_and_push(&work, "drydock/task-1", &env).await;
    let bare = gh.repo_path("alice", "proj");
    assert_eq!(
        git_ok(&bare, &["rev-parse", "refs/heads/drydock/task-1"], &[]).await,
        sha
    );
    let log = git_ok(&bare, &["log", "--format=%s", "drydock/task-1"], &[]).await;
    assert_eq!(log, "Agent change\nInitial commit");
    assert_eq!(
        git_ok(&bare, &["show", "drydock/task-1:CHANGES.md"], &[]).await,
        "work on drydock/task-1"
    );

    // The older protocol and a pack big enough to be sent chunked (and gzip-free) work too.
    let dir0 = tempfile::tempdir().unwrap();
    let url = gh.clone_url("alice", "proj");
    git_ok(
        dir0.path(),
        &["-c", "protocol.version=0", "clone", "--quiet", &url, "work"],
        &env,
    )
    .await;
    let work0 = dir0.path().join("work");
    let noise: Vec<u8> = (0..3 * 1024 * 1024).map(|_| rand::random::<u8>()).collect();
    std::fs::write(work0.join("blob.bin"), &noise).unwrap();
    git_ok(&work0, &["checkout", "--quiet", "-b", "big"], &[]).await;
    git_ok(&work0, &["add", "-A"], &[]).await;
    git_ok(&work0, &["commit", "--quiet", "-m", "Big"], &[]).await;
    git_ok(
        &work0,
        &[
            "-c",
            "protocol.version=0",
            "push",
            "--quiet",
            "origin",
            "big",
        ],
        &env,
    )
    .await;
    let size = git_ok(&bare, &["cat-file", "-s", "big:blob.bin"], &[]).await;
    assert_eq!(size, noise.len().to_string());
    // And fetching it back (a large upload-pack answer) gives the same bytes.
    git_ok(&work, &["fetch", "--quiet", "origin", "big"], &env).await;
    let fetched = git(&work, &["show", "FETCH_HEAD:blob.bin"], &[]).await;
    assert_eq!(fetched.stdout, noise);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_without_a_valid_token_is_refused() {
    let gh = standin().await;
    let dir = tempfile::tempdir().unwrap();

    // No credentials at all: 401, and git cannot ask anyone.
    let out = clone(&gh, dir.path(), &[]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could not read Username") || err.contains("Authentication failed"),
        "{err}"
    );

    // A raw request shows GitHub's challenge.
    let resp = reqwest::get(format!(
        "{}/info/refs?service=git-upload-pack",
        gh.clone_url("alice", "proj")
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"GitHub\"");

    // A revoked token, in a header or in the URL.
    let token = gh.issue_token_for("alice");
    gh.revoke_tokens_of("alice");
    let out = clone(&gh, dir.path(), &token_env(&token)).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could not read Username") || err.contains("Authentication failed"),
        "{err}"
    );
    let with_userinfo = gh
        .clone_url("alice", "proj")
        .replace("http://", &format!("http://x-access-token:{token}@"));
    let out = git(
        dir.path(),
        &["clone", "--quiet", &with_userinfo, "work2"],
        &[],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Authentication failed"), "{err}");
    assert!(!dir.path().join("work").exists());

    // A valid token in the URL works (git retries with it after the 401).
    let fresh = gh.issue_token_for("alice");
    let with_userinfo = gh
        .clone_url("alice", "proj")
        .replace("http://", &format!("http://x-access-token:{fresh}@"));
    git_ok(
        dir.path(),
        &["clone", "--quiet", &with_userinfo, "work3"],
        &[],
    )
    .await;

    // Another user's token: the private repository is "not found"; once it is public bob can
    // clone but not push.
    let bob = token_env(&gh.issue_token_for("bob"));
    let out = git(
        dir.path(),
        &[
            "clone",
            "--quiet",
            &gh.clone_url("alice", "proj"),
            "bob-work",
        ],
        &bob,
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found"), "{err}");
    gh.set_private("alice", "proj", false);
    git_ok(
        dir.path(),
        &[
            "clone",
            "--quiet",
            &gh.clone_url("alice", "proj"),
            "bob-work",
        ],
        &bob,
    )
    .await;
    let bob_work = dir.path().join("bob-work");
    git_ok(&bob_work, &["commit", "--allow-empty", "-m", "x"], &[]).await;
    let out = git(&bob_work, &["push", "origin", "HEAD:refs/heads/bob"], &bob).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Permission to alice/proj.git denied to bob"),
        "{err}"
    );
}

async fn api(
    gh: &GithubStandIn,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", gh.api_url()))
        .header("accept", "application/vnd.github+json");
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_requests_are_opened_listed_and_updated() {
    let gh = standin().await;
    let token = gh.issue_token_for("alice");
    let env = token_env(&token);
    let dir = tempfile::tempdir().unwrap();
    clone(&gh, dir.path(), &env).await;
    let work = dir.path().join("work");
    let sha = commit_and_push(&work, "drydock/fix", &env).await;
    let post = reqwest::Method::POST;

    let (status, pr) = api(
        &gh,
        post.clone(),
        "/repos/alice/proj/pulls",
        Some(&token),
        Some(
            json!({"title": "Fix it", "body": "Done by an agent", "head": "drydock/fix",
            "base": "main", "draft": false}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{pr}");
    assert_eq!(pr["number"], 1);
    assert_eq!(
        pr["html_url"],
        format!("{}/alice/proj/pull/1", gh.url).as_str()
    );
    assert_eq!(
        pr["url"],
        format!("{}/repos/alice/proj/pulls/1", gh.api_url()).as_str()
    );
    assert_eq!(pr["state"], "open");
    assert_eq!(pr["head"]["ref"], "drydock/fix");
    assert_eq!(pr["head"]["sha"], sha.as_str());
    assert_eq!(pr["base"]["ref"], "main");
    assert_eq!(pr["user"]["login"], "alice");
    assert_eq!(gh.pulls("alice", "proj").len(), 1);

    // The same head again: GitHub says one exists.
    let (status, err) = api(
        &gh,
        post.clone(),
        "/repos/alice/proj/pulls",
        Some(&token),
        Some(json!({"title": "Again", "head": "alice:drydock/fix", "base": "main"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        err["errors"][0]["message"],
        "A pull request already exists for alice:drydock/fix."
    );

    // A branch with nothing new.
    git_ok(
        &work,
        &["push", "--quiet", "origin", "main:refs/heads/empty"],
        &env,
    )
    .await;
    let (status, err) = api(
        &gh,
        post.clone(),
        "/repos/alice/proj/pulls",
        Some(&token),
        Some(json!({"title": "Nothing", "head": "empty", "base": "main"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["message"], "Validation Failed");
    assert_eq!(
        err["errors"][0]["message"],
        "No commits between main and empty"
    );

    // A branch that does not exist.
    let (status, err) = api(
        &gh,
        post.clone(),
        "/repos/alice/proj/pulls",
        Some(&token),
        Some(json!({"title": "Ghost", "head": "ghost", "base": "main"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["errors"][0]["field"], "head");

    // Without a token, with a revoked one, or as someone who cannot see the repository.
    let body = json!({"title": "t", "head": "drydock/fix", "base": "main"});
    let (status, _) = api(
        &gh,
        post.clone(),
        "/repos/alice/proj/pulls",
        None,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let bob = gh.issue_token_for("bob");
    let (status, _) = api(
        &gh,
        post.clone(),
        "/repos/alice/proj/pulls",
        Some(&bob),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Listing by head, then an update.
    let (status, list) = api(
        &gh,
        reqwest::Method::GET,
        "/repos/alice/proj/pulls?head=alice:drydock/fix&state=open",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["number"], 1);
    let (_, none) = api(
        &gh,
        reqwest::Method::GET,
        "/repos/alice/proj/pulls?head=alice:other",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(none, json!([]));
    let (status, updated) = api(
        &gh,
        reqwest::Method::PATCH,
        "/repos/alice/proj/pulls/1",
        Some(&token),
        Some(json!({"title": "Fix it properly", "body": "Second round"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["title"], "Fix it properly");
    assert_eq!(gh.pulls("alice", "proj")[0]["body"], "Second round");

    // A new push moves the pull request's head.
    std::fs::write(work.join("MORE.md"), "more\n").unwrap();
    git_ok(&work, &["add", "-A"], &[]).await;
    git_ok(&work, &["commit", "--quiet", "-m", "More"], &[]).await;
    git_ok(&work, &["push", "--quiet", "origin", "HEAD"], &env).await;
    let new_sha = git_ok(&work, &["rev-parse", "HEAD"], &[]).await;
    assert_eq!(
        gh.pulls("alice", "proj")[0]["head"]["sha"],
        new_sha.as_str()
    );

    // A second pull request gets the next number.
    commit_and_push(&work, "drydock/second", &env).await;
    let (status, second) = api(
        &gh,
        post,
        "/repos/alice/proj/pulls",
        Some(&token),
        Some(json!({"title": "Second", "head": "drydock/second", "base": "main"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(second["number"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_are_visible_only_to_those_who_may_see_them() {
    let gh = standin().await;
    let alice = gh.issue_token_for("alice");
    let bob = gh.issue_token_for("bob");
    let get = reqwest::Method::GET;

    let (status, repo) = api(&gh, get.clone(), "/repos/alice/proj", Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(repo["name"], "proj");
    assert_eq!(repo["full_name"], "alice/proj");
    assert_eq!(repo["private"], true);
    assert_eq!(repo["owner"]["login"], "alice");
    assert_eq!(repo["owner"]["id"], 101);
    assert_eq!(repo["default_branch"], "main");
    assert_eq!(repo["html_url"], format!("{}/alice/proj", gh.url).as_str());
    assert_eq!(repo["clone_url"], gh.clone_url("alice", "proj").as_str());
    assert_eq!(
        repo["permissions"],
        json!({"admin": true, "maintain": true, "push": true, "triage": true, "pull": true})
    );

    let (status, body) = api(&gh, get.clone(), "/repos/alice/proj", Some(&bob), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "Not Found");
    let (status, _) = api(&gh, get.clone(), "/repos/alice/proj", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api(&gh, get.clone(), "/repos/alice/nope", Some(&alice), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api(&gh, get.clone(), "/repos/alice/proj", Some("gho_bad"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "Bad credentials");

    // Listed first among alice's repositories, with its real attributes.
    let (_, mine) = api(&gh, get.clone(), "/user/repos", Some(&alice), None).await;
    assert_eq!(mine[0]["full_name"], "alice/proj");
    assert_eq!(mine[0]["private"], true);
    assert_eq!(mine.as_array().unwrap().len(), 3);

    // Public: bob may read but not push; a collaborator may push.
    gh.set_private("alice", "proj", false);
    let (status, repo) = api(&gh, get.clone(), "/repos/alice/proj", Some(&bob), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(repo["permissions"]["push"], false);
    gh.set_private("alice", "proj", true);
    gh.grant_access("bob", "alice", "proj");
    let (status, repo) = api(&gh, get, "/repos/alice/proj", Some(&bob), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(repo["permissions"]["push"], true);
    assert_eq!(repo["permissions"]["admin"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn octocrab_reads_what_the_stand_in_answers() {
    let gh = standin().await;
    let token = gh.issue_token_for("alice");
    let env = token_env(&token);
    let dir = tempfile::tempdir().unwrap();
    clone(&gh, dir.path(), &env).await;
    let work = dir.path().join("work");
    let sha = commit_and_push(&work, "drydock/octo", &env).await;

    let octo = octocrab::Octocrab::builder()
        .base_uri(gh.api_url())
        .unwrap()
        .personal_token(token)
        .build()
        .unwrap();
    let repo = octo.repos("alice", "proj").get().await.unwrap();
    assert_eq!(repo.default_branch.as_deref(), Some("main"));
    assert_eq!(repo.owner.unwrap().login, "alice");

    let pr = octo
        .pulls("alice", "proj")
        .create("From octocrab", "drydock/octo", "main")
        .body("body")
        .send()
        .await
        .unwrap();
    assert_eq!(pr.number, 1);
    assert_eq!(pr.head.sha, sha);
    assert_eq!(
        pr.html_url.unwrap().as_str(),
        format!("{}/alice/proj/pull/1", gh.url)
    );

    let open = octo
        .pulls("alice", "proj")
        .list()
        .state(octocrab::params::State::Open)
        .head("alice:drydock/octo")
        .send()
        .await
        .unwrap();
    assert_eq!(open.items.len(), 1);

    let updated = octo
        .pulls("alice", "proj")
        .update(1)
        .title("Renamed")
        .send()
        .await
        .unwrap();
    assert_eq!(updated.title.as_deref(), Some("Renamed"));

    let err = octo
        .pulls("alice", "proj")
        .create("Again", "main", "main")
        .send()
        .await
        .unwrap_err();
    match err {
        octocrab::Error::GitHub { source, .. } => {
            assert_eq!(source.status_code.as_u16(), 422);
            assert_eq!(source.message, "Validation Failed");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_change_needs_the_workflow_scope_and_is_refused_in_githubs_words() {
    let gh = standin().await;
    let full = gh.issue_token_for("alice");
    let limited = gh.issue_token_with("alice", "repo,read:user,user:email")["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let out = clone(&gh, dir.path(), &token_env(&limited)).await;
    assert!(out.status.success());
    let work = dir.path().join("work");
    // Without workflow files, the limited token pushes.
    commit_and_push(&work, "plain", &token_env(&limited)).await;

    std::fs::create_dir_all(work.join(".github/workflows")).unwrap();
    std::fs::write(work.join(".github/workflows/ci.yml"), "on: push\n").unwrap();
    git_ok(&work, &["add", "-A"], &[]).await;
    git_ok(&work, &["commit", "--quiet", "-m", "CI"], &[]).await;
    let push = |token: String| {
        let work = work.clone();
        async move {
            git(
                &work,
                &["push", "--quiet", "origin", "HEAD:refs/heads/ci"],
                &token_env(&token),
            )
            .await
        }
    };
    let refused = push(limited).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("! [remote rejected] HEAD -> ci (refusing to allow an OAuth App to create or update workflow `.github/workflows/ci.yml` without `workflow` scope)"),
        "{stderr}"
    );
    assert!(!stderr.contains("STANDIN"), "{stderr}");
    assert!(
        gh.pulls("alice", "proj").is_empty()
            && drydock_tests::git_http::branch_sha_blocking(
                dir.path(),
                &gh.repo_path("alice", "proj"),
                "ci"
            )
            .is_none()
    );
    let accepted = push(full).await;
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_tokens_stop_working_and_refresh_tokens_renew_them_once() {
    let gh = standin().await;
    gh.set_token_lifetime(Some(28_800));
    let issued = gh.issue_token_with("alice", "");
    assert_eq!(issued["expires_in"], 28_800);
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let refresh = issued["refresh_token"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let user = |token: String| {
        let http = http.clone();
        let url = format!("{}/user", gh.api_url());
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(user(access.clone()).await, StatusCode::OK);
    gh.expire_tokens_of("alice");
    assert_eq!(user(access.clone()).await, StatusCode::UNAUTHORIZED);
    let dir = tempfile::tempdir().unwrap();
    let out = clone(&gh, dir.path(), &token_env(&access)).await;
    assert!(!out.status.success(), "git refuses an expired token too");

    let renew = |refresh: String| {
        let http = http.clone();
        let url = format!("{}/login/oauth/access_token", gh.url);
        async move {
            http.post(url)
                .header("accept", "application/json")
                .form(&[
                    ("client_id", drydock_tests::github::CLIENT_ID),
                    ("client_secret", drydock_tests::github::CLIENT_SECRET),
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                ])
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let renewed = renew(refresh.clone()).await;
    let new_access = renewed["access_token"].as_str().unwrap().to_owned();
    assert!(new_access.starts_with("ghu_") && renewed["refresh_token"].is_string());
    assert_eq!(user(new_access).await, StatusCode::OK);
    // A refresh token is spent on use.
    let again = renew(refresh).await;
    assert_eq!(again["error"], "bad_refresh_token", "{again}");
    assert_eq!(gh.refresh_count(), 1);
}
