//! The outcome of a turn combines the agent's exit status with its CLI's own verdict: a CLI that
//! reports an error fails the task with its message, one that reports success but exits non-zero
//! keeps its work (pushed, with a warning in the reason), signals are named, and a child process
//! killed for memory does not fail an agent that went on. Real Docker, the GitHub stand-in and
//! an operator-defined shell agent whose output is parsed as Claude Code's stream-json.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use drydock_tests::TestDb;
use drydock_tests::tasks::{SCRIPTED_AGENT, TaskEnv, git_in};
use serde_json::json;

/// The scripted agent, plus one whose stdout is read as Claude Code's stream-json.
fn agents() -> String {
    format!(
        r#"{SCRIPTED_AGENT}
[[agents]]
id = "scripted-json"
name = "Scripted stream-json agent"
argv = ["sh", "-c", "eval \"$1\"", "scripted-agent", "{{prompt}}"]
parser = "claude-stream-json"
keys = [{{ provider = "acme", env = ["ACME_API_KEY"] }}]
models = [{{ id = "acme-1", name = "Acme One" }}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_own_verdict_and_how_it_exited_decide_the_outcome() {
    let env = TaskEnv::start_with_agents(
        TestDb::sqlite().await,
        &agents(),
        &["--sandbox-memory-mb", "192"],
    )
    .await;
    let json_agent = json!({ "agent": "scripted-json" });

    // An error result printed by a CLI that exits 0 fails the task with the CLI's message.
    let id = env
        .submit(
            r#"echo 'partial work' > partial.txt; echo '{"type":"result","subtype":"success","is_error":true,"result":"API Error: rate limit reached"}'"#,
            json_agent.clone(),
        )
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(
        task["status_reason"],
        "the agent reported an error: API Error: rate limit reached"
    );
    assert!(
        env.app.gh.pulls("alice", "demo").is_empty(),
        "nothing published"
    );

    // Success reported, non-zero exit: the work is kept and pushed, and the reason says why.
    let id = env
        .submit(
            r#"echo done > result.txt; echo '{"type":"result","subtype":"success","is_error":false,"result":"Wrote result.txt"}'; exit 3"#,
            json_agent.clone(),
        )
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let reason = task["status_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("opened pull request #")
            && reason.ends_with("but the agent reported success but exited with code 3"),
        "{reason}"
    );
    let branch = task["branch"].as_str().unwrap();
    let bare = env.app.gh.repo_path("alice", "demo");
    let (ok, content) = git_in(&bare, &["show", &format!("{branch}:result.txt")]);
    assert!(ok && content == "done\n", "the work is on the branch");
    assert!(
        env.log(&id)
            .await
            .iter()
            .any(|l| l == "error: the agent reported success but exited with code 3"),
        "the log says it too"
    );

    // An exit by signal is named.
    let id = env
        .submit("echo about to die; kill -KILL $$", json!({}))
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(
        task["status_reason"],
        "the agent was killed by SIGKILL (exit code 137)"
    );

    // A child killed for memory does not fail an agent that goes on; the agent itself being
    // killed for memory is said as such.
    let hog = r#"python3 -c 'a = []
while True: a.append(bytearray(16 * 1024 * 1024))'"#;
    let id = env
        .submit(
            &format!("{hog}; echo \"hog exited $?\" > went-on.txt"),
            json!({}),
        )
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let branch = task["branch"].as_str().unwrap();
    let (ok, content) = git_in(&bare, &["show", &format!("{branch}:went-on.txt")]);
    assert!(ok && content == "hog exited 137\n", "{content}");

    let id = env.submit(&format!("exec {hog}"), json!({})).await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(
        task["status_reason"],
        "the agent ran out of memory (the sandbox's memory limit)"
    );
}
