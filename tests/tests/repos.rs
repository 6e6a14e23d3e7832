//! Repositories and GitHub as they are in the real world (issue 14, items 6–11): empty
//! repositories and other default branches, secrets in what drydock writes to GitHub,
//! submodules and LFS, workflow files, expiring tokens, and pull requests that already exist.
//! The real server, real Docker sandboxes, real git over smart HTTP against the GitHub stand-in.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use drydock_tests::tasks::{TaskEnv, containers_of, git_in};
use drydock_tests::{GithubStandIn, TestDb};
use serde_json::{Value, json};

/// A GitHub personal access token shape that is nobody's key: `ghp_` and 36 characters.
fn fake_github_token() -> String {
    format!("ghp_{}", "Zq8Rt2Lm5Vx9Nb4Kc7Hd1Wf6Jg3Ps0Ye2Ua5Io")[..40].to_owned()
}

async fn follow_up(env: &TaskEnv, id: &str, prompt: &str) {
    let resp = env
        .alice
        .post(env.app.url(&format!("/api/tasks/{id}/messages")))
        .json(&json!({ "prompt": prompt }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

/// Waits until the task has ended its `turn`th turn.
async fn wait_turn(env: &TaskEnv, id: &str, turn: i64) -> Value {
    env.wait_for(id, "the end of the turn", |t| {
        t["turns"].as_i64() == Some(turn)
            && !matches!(t["status"].as_str(), Some("queued" | "running"))
    })
    .await
}

fn reason(task: &Value) -> &str {
    task["status_reason"].as_str().unwrap_or_default()
}

// Item 6: a repository without commits, and default branches other than the host's.

async fn empty_repository(db: TestDb) {
    let env = TaskEnv::start(db, &[]).await;
    env.app.gh.create_empty_repo("alice", "fresh", "trunk");
    let (status, body) = env
        .submit_raw(
            "printf '# fresh\\n' > README.md && echo 'created README.md'",
            json!({ "repo": "alice/fresh" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap();
    let task = env.wait_done(id).await;
    let log = env.log(id).await.join("\n");
    assert_eq!(task["status"], "succeeded", "{task}\n{log}");
    assert!(
        reason(&task).contains("no base to open a pull request against"),
        "{task}"
    );
    assert!(log.contains("has no commits yet"), "{log}");
    // The first commit is on the default branch GitHub reports, not the host git's default.
    assert_eq!(task["branch"], "trunk");
    assert_eq!(task["base_branch"], "trunk");
    let bare = env.app.gh.repo_path("alice", "fresh");
    let (ok, readme) = git_in(&bare, &["show", "trunk:README.md"]);
    assert!(ok, "trunk holds the first commit");
    assert_eq!(readme, "# fresh\n");
    let (_, heads) = git_in(
        &bare,
        &["for-each-ref", "--format=%(refname)", "refs/heads"],
    );
    assert_eq!(heads.trim(), "refs/heads/trunk");
    let (_, sha) = git_in(&bare, &["rev-parse", "trunk"]);
    assert_eq!(task["commit_sha"].as_str(), Some(sha.trim()));
    assert!(env.app.gh.pulls("alice", "fresh").is_empty());
    let diff = env.get_json(&format!("/api/tasks/{id}/diff")).await;
    assert!(
        diff["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "README.md" && f["status"] == "added"),
        "{diff}"
    );

    // A follow-up continues on trunk.
    follow_up(&env, id, "echo more >> README.md").await;
    let task = wait_turn(&env, id, 2).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let (_, readme) = git_in(&bare, &["show", "trunk:README.md"]);
    assert_eq!(readme, "# fresh\nmore\n");
    assert!(env.app.gh.pulls("alice", "fresh").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_repository_gets_its_first_commit_on_its_default_branch_on_sqlite() {
    empty_repository(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_repository_gets_its_first_commit_on_its_default_branch_on_postgres() {
    empty_repository(TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_branch_that_does_not_exist_fails_before_any_sandbox_naming_it() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    env.app.gh.create_empty_repo("alice", "fresh", "main");
    for (repo, base) in [("alice/demo", "nope"), ("alice/fresh", "develop")] {
        let id = env
            .submit(
                "echo x > x.txt",
                json!({ "repo": repo, "base_branch": base }),
            )
            .await;
        let task = env.wait_done(&id).await;
        let log = env.log(&id).await.join("\n");
        assert_eq!(task["status"], "failed", "{task}");
        assert!(
            reason(&task).starts_with(&format!("the base branch {base} does not exist on {repo}")),
            "{task}"
        );
        assert!(!log.contains("sandbox"), "no sandbox was started:\n{log}");
        assert!(containers_of(&id).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_branch_named_trunk_is_the_base_and_the_pull_request_target() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    env.app
        .gh
        .create_repo("alice", "tree", &[("README.md", "# tree\n")], "trunk");
    let id = env
        .submit("echo leaf > leaf.txt", json!({ "repo": "alice/tree" }))
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["base_branch"], "trunk");
    let pulls = env.app.gh.pulls("alice", "tree");
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0]["base"]["ref"], "trunk");
}

// Item 7: secrets in what drydock writes to GitHub, and token shapes in the agent's commits.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_prompt_never_reaches_github() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let token = fake_github_token();
    let prompt = format!("# Rotate {token} in config.yml\necho 'rotated: true' > config.yml");
    let id = env.submit(&prompt, json!({})).await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let branch = task["branch"].as_str().unwrap();
    assert!(!branch.contains(&token[4..]), "{branch}");
    let bare = env.app.gh.repo_path("alice", "demo");
    let (_, message) = git_in(&bare, &["log", "-1", "--format=%B", branch]);
    assert!(!message.contains(&token[4..]), "{message}");
    assert!(message.contains("[REDACTED:github-token]"), "{message}");
    let pulls = env.app.gh.pulls("alice", "demo");
    assert_eq!(pulls.len(), 1);
    let everything = format!(
        "{} {} {}",
        pulls[0]["title"], pulls[0]["body"], pulls[0]["head"]
    );
    assert!(!everything.contains(&token[4..]), "{everything}");
    assert_eq!(
        pulls[0]["title"],
        "# Rotate [REDACTED:github-token] in config.yml"
    );

    // A first line long enough that the title's cut at 72 characters falls inside the token:
    // redaction comes before the cut, so no piece of it is left.
    let long = format!(
        "# Please rotate the deployment credential now {token} and update config.yml\necho 'rotated: twice' > config.yml"
    );
    let id = env.submit(&long, json!({})).await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let pulls = env.app.gh.pulls("alice", "demo");
    let title = pulls[1]["title"].as_str().unwrap();
    assert!(title.contains("[REDACTED:github-token]"), "{title}");
    let (_, message) = git_in(
        &bare,
        &["log", "-1", "--format=%B", task["branch"].as_str().unwrap()],
    );
    for text in [title, message.as_str()] {
        assert!(!text.contains(&token[..12]), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_is_refused_when_the_agent_commits_a_token_shape_naming_where() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let token = fake_github_token();
    let aws = "AKIAZ7QW3ER5TY8UI2OP";
    // A token written to a file, and a key id (built at run time) in the agent's own commit.
    let cases = [
        (
            format!(
                "printf 'a: 1\\nb: 2\\ngithub: %s\\n' \"ghp_{}\" > config.yml",
                &token[4..]
            ),
            "config.yml line 3 contains a GitHub token",
        ),
        (
            format!(
                "echo ok > ok.txt && git add -A && git -c user.name=a -c user.email=a@b commit -qm \"key $(printf AKIA){}\"",
                &aws[4..]
            ),
            "the message or author of commit",
        ),
    ];
    for (script, want) in cases {
        let id = env.submit(&script, json!({})).await;
        let task = env.wait_done(&id).await;
        assert_eq!(task["status"], "failed", "{task}");
        let why = reason(&task);
        assert!(why.starts_with("refused to push: "), "{why}");
        assert!(why.contains(want), "{why}");
        let log = env.log(&id).await.join("\n");
        for secret in [&token[4..], &aws[4..]] {
            assert!(!why.contains(secret) && !log.contains(secret), "{log}");
        }
        let bare = env.app.gh.repo_path("alice", "demo");
        let (exists, _) = git_in(
            &bare,
            &[
                "rev-parse",
                "--verify",
                "-q",
                task["branch"].as_str().unwrap(),
            ],
        );
        assert!(!exists, "nothing was pushed");
    }
}

// Item 8: submodules and Git LFS.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submodules_on_the_same_github_are_fetched_and_others_are_skipped_with_a_reason() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let gh = &env.app.gh;
    let lib = gh.create_repo(
        "alice",
        "lib",
        &[("lib.txt", "from the lib submodule\n")],
        "main",
    );
    let other = GithubStandIn::start().await;
    other.add_user(303, "carol", 0);
    let ext = other.create_repo("carol", "ext", &[("ext.txt", "external\n")], "main");
    // On the same GitHub but private to bob: alice cannot read it.
    let hidden = gh.create_repo("bob", "hidden", &[("h.txt", "h\n")], "main");
    let gitmodules = format!(
        "[submodule \"lib\"]\n\tpath = lib\n\turl = ../lib.git\n[submodule \"ext\"]\n\tpath = ext\n\turl = {}/carol/ext.git\n[submodule \"hidden\"]\n\tpath = hidden\n\turl = ../../bob/hidden.git\n[submodule \"vendored\"]\n\tpath = vendor/lib\n\turl = git@127.0.0.1:alice/lib.git\n",
        other.url
    );
    let lfsconfig = format!("[lfs]\n\turl = {}/carol/ext.git/info/lfs\n", other.url);
    let pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n";
    gh.create_repo_with_submodules(
        "alice",
        "app",
        &[
            (".gitmodules", &gitmodules),
            (".lfsconfig", &lfsconfig),
            (
                ".gitattributes",
                "*.bin filter=lfs diff=lfs merge=lfs -text\n",
            ),
            ("model.bin", pointer),
            ("README.md", "# app\n"),
        ],
        &[
            ("lib", &lib),
            ("ext", &ext),
            ("hidden", &hidden),
            ("vendor/lib", &lib),
        ],
        "main",
    );
    let id = env
        .submit(
            "cat lib/lib.txt; echo \"vendored: $(cat vendor/lib/lib.txt)\"; echo \"ext has $(ls -A ext | wc -l) entries\"; echo used > used.txt",
            json!({ "repo": "alice/app" }),
        )
        .await;
    let task = env.wait_done(&id).await;
    let log = env.log(&id).await;
    let text = log.join("\n");
    assert_eq!(task["status"], "succeeded", "{task}\n{text}");
    assert!(
        log.iter().any(|l| l.ends_with(": from the lib submodule")),
        "the submodule on the same GitHub is in the sandbox:\n{text}"
    );
    assert!(
        text.contains("vendored: from the lib submodule"),
        "an SSH URL of the same GitHub is fetched over HTTPS:\n{text}"
    );
    assert!(text.contains("ext has 0 entries"), "{text}");
    assert!(
        text.contains("Skipped the submodule ext")
            && text.contains("drydock fetches submodules only from"),
        "{text}"
    );
    assert!(
        text.contains("Could not fetch the submodule hidden")
            && text.contains("the directory stays empty"),
        "{text}"
    );
    assert!(
        text.contains("LFS pointers") && text.contains("model.bin"),
        "{text}"
    );
    assert_eq!(
        other.git_requests(),
        Vec::<(String, bool)>::new(),
        "nothing, let alone the token, went to the other host"
    );
    // The superproject's pointer to the submodule is pushed unchanged.
    let bare = gh.repo_path("alice", "app");
    let (_, tree) = git_in(&bare, &["ls-tree", task["branch"].as_str().unwrap(), "lib"]);
    assert!(tree.contains(&lib), "{tree}");
}

// Item 9: workflow files.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_may_change_workflow_files() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let id = env
        .submit(
            "mkdir -p .github/workflows && printf 'on: push\\n' > .github/workflows/ci.yml",
            json!({}),
        )
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let bare = env.app.gh.repo_path("alice", "demo");
    let (ok, _) = git_in(
        &bare,
        &[
            "show",
            &format!(
                "{}:.github/workflows/ci.yml",
                task["branch"].as_str().unwrap()
            ),
        ],
    );
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_github_refuses_is_explained_and_the_work_is_kept() {
    let mut env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    // A sign-in from before drydock asked for the `workflow` scope.
    env.app.gh.grant_only(Some("repo,read:user,user:email"));
    env.alice = env.app.sign_in("alice").await;
    let id = env
        .submit(
            "mkdir -p .github/workflows && printf 'on: push\\n' > .github/workflows/ci.yml",
            json!({ "keep_alive": true }),
        )
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "failed", "{task}");
    let why = reason(&task);
    assert!(
        why.contains("the workflow file .github/workflows/ci.yml")
            && why.contains("`workflow` scope")
            && why.contains("sign in again")
            && why.contains("kept in the task's diff"),
        "{why}"
    );
    let log = env.log(&id).await.join("\n");
    for token in env.app.gh.issued_tokens() {
        assert!(!log.contains(&token) && !why.contains(&token));
    }
    let diff = env.get_json(&format!("/api/tasks/{id}/diff")).await;
    assert!(
        diff["patch"]
            .as_str()
            .unwrap_or_default()
            .contains("+on: push"),
        "{diff}"
    );
    assert!(!containers_of(&id).is_empty(), "the sandbox is kept");

    // Signed in again with the scope, a follow-up continues in the kept sandbox and pushes the
    // refused work with the new.
    env.app.gh.grant_only(None);
    env.alice = env.app.sign_in("alice").await;
    follow_up(&env, &id, "echo more > more.txt").await;
    let task = wait_turn(&env, &id, 2).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let branch = task["branch"].as_str().unwrap();
    let bare = env.app.gh.repo_path("alice", "demo");
    for file in [".github/workflows/ci.yml", "more.txt"] {
        let (ok, _) = git_in(&bare, &["show", &format!("{branch}:{file}")]);
        assert!(ok, "{file} is pushed");
    }
    let resp = env.post(&format!("/api/tasks/{id}/sandbox/stop")).await;
    assert!(resp.status().is_success());
}

// Item 10: expiring tokens.

async fn alice_account(env: &TaskEnv) -> drydock::store::GithubAccount {
    let me = env.get_json("/api/me").await;
    env.app
        .db
        .store
        .get_github_account(me["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap()
}

async fn expiring_tokens(db: TestDb) {
    let mut env = TaskEnv::start(db, &[]).await;
    // GitHub App user tokens: they expire (here within the minute drydock renews ahead of), and
    // this one already has.
    env.app.gh.set_token_lifetime(Some(30));
    env.alice = env.app.sign_in("alice").await;
    assert!(alice_account(&env).await.refresh_token_enc.is_some());
    env.app.gh.expire_tokens_of("alice");

    // Two tasks at once: one refresh at a time (GitHub spends a refresh token on use).
    let first = env.submit("echo one > one.txt", json!({})).await;
    let second = env.submit("echo two > two.txt", json!({})).await;
    for id in [&first, &second] {
        let task = env.wait_done(id).await;
        assert_eq!(task["status"], "succeeded", "{task}");
        assert!(task["pr_number"].is_number(), "{task}");
    }
    assert!(env.app.gh.refresh_count() >= 2);
    // The renewed tokens are stored sealed.
    let account = alice_account(&env).await;
    assert!(account.access_token_enc.starts_with("v1:"));
    for token in env.app.gh.issued_tokens() {
        assert!(!account.access_token_enc.contains(&token));
    }

    // A refresh GitHub refuses ends the turn before any sandbox, asking to sign in again.
    env.app.gh.revoke_refresh_tokens_of("alice");
    env.app.gh.expire_tokens_of("alice");
    follow_up(&env, &first, "echo three > three.txt").await;
    let task = wait_turn(&env, &first, 2).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert!(reason(&task).contains("sign in again"), "{task}");
    let log = env.log(&first).await;
    let turn2: Vec<&String> = log
        .iter()
        .skip_while(|l| !l.contains("Follow-up (turn 2)"))
        .collect();
    assert!(
        !turn2
            .iter()
            .any(|l| l.contains("sandbox") || l.contains("Cloning")),
        "{turn2:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_github_tokens_are_refreshed_once_at_a_time_on_sqlite() {
    expiring_tokens(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_github_tokens_are_refreshed_once_at_a_time_on_postgres() {
    expiring_tokens(TestDb::postgres().await).await;
}

// Item 11: a pull request that is already open.

async fn pull_request_already_open(db: TestDb) {
    let env = TaskEnv::start(db, &[]).await;
    // GitHub opens the pull request, but its answer is lost on the way: the client's retry (or
    // the next turn) is answered 422 "A pull request already exists", and the open one is
    // recorded.
    env.app.gh.lose_next_pull_answer();
    let id = env.submit("echo one > one.txt", json!({})).await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let pulls = env.app.gh.pulls("alice", "demo");
    assert_eq!(pulls.len(), 1);
    assert_eq!(task["pr_number"], pulls[0]["number"]);
    assert_eq!(task["pr_url"], pulls[0]["html_url"]);
    assert!(reason(&task).contains("already open"), "{task}");

    // A later turn pushes to it.
    follow_up(&env, &id, "echo two > two.txt").await;
    let task = wait_turn(&env, &id, 2).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["pr_number"], pulls[0]["number"]);
    assert_eq!(env.app.gh.pulls("alice", "demo").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_already_open_for_the_branch_is_recorded_on_sqlite() {
    pull_request_already_open(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_already_open_for_the_branch_is_recorded_on_postgres() {
    pull_request_already_open(TestDb::postgres().await).await;
}
