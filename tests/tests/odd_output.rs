//! What an agent prints, however odd, end to end: NUL and invalid UTF-8, colour codes around a
//! secret, `\r` progress bars, over-long lines and structured events. Real server, real Docker
//! sandboxes, real git, both databases where the store is involved.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use drydock_tests::TestDb;
use drydock_tests::tasks::{ACME_KEY, SCRIPTED_AGENT, SCRIPTED_JSON_AGENT, TaskEnv};
use serde_json::{Value, json};

async fn env(db: TestDb) -> TaskEnv {
    TaskEnv::start_with_agents(db, &format!("{SCRIPTED_AGENT}{SCRIPTED_JSON_AGENT}"), &[]).await
}

/// Whether the log has a line with exactly this text, whatever its kind.
fn has_line(log: &[String], text: &str) -> bool {
    log.iter()
        .any(|l| l.split_once(": ").is_some_and(|(_, t)| t == text))
}

/// The agent's replies in the task's conversation.
async fn replies(env: &TaskEnv, id: &str) -> Vec<String> {
    let list = env.get_json(&format!("/api/tasks/{id}/messages")).await;
    list.as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "agent")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

/// Every byte sequence an agent can print is stored, and the task goes on.
async fn any_bytes_are_stored(db: TestDb) {
    let env = env(db).await;
    let script = r#"
printf 'a\0b\n'; printf '\377\376 bad\n'; head -c 4096 /dev/urandom; echo; echo AFTER
printf 'x\0y\377\n' > blob.bin
printf 'caf\351 latin-1\n' > latin1.txt
git add -A && git -c user.name=agent -c user.email=agent@sandbox commit -qm "$(printf 'odd \377 subject')"
printf 'one more\0line\n' > notes.txt
"#;
    let id = env.submit(script, json!({ "create_pr": false })).await;
    let task = env.wait_done(&id).await;
    let log = env.log(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{log:#?}");
    assert!(has_line(&log, "a\u{fffd}b"), "{log:#?}");
    assert!(has_line(&log, "\u{fffd}\u{fffd} bad"), "{log:#?}");
    assert!(has_line(&log, "AFTER"), "{log:#?}");
    assert!(
        !log.iter().any(|l| l.contains('\0')),
        "no NUL reaches the log"
    );
    // The reply (the plain agent's output) and the diff were stored too.
    let reply = replies(&env, &id).await.join("\n");
    assert!(
        reply.contains("a\u{fffd}b") && reply.contains("AFTER"),
        "{reply}"
    );
    let diff = env.get_json(&format!("/api/tasks/{id}/diff")).await;
    let files: Vec<&str> = diff["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for file in ["blob.bin", "latin1.txt", "notes.txt"] {
        assert!(files.contains(&file), "{diff}");
    }
    assert!(
        diff["patch"]
            .as_str()
            .unwrap()
            .contains("caf\u{fffd} latin-1"),
        "{diff}"
    );

    // JSON from a CLI may decode to NUL and controls: `\u0000` inside stream-json strings.
    let events = [
        json!({"type": "assistant", "message": {"content": [{"type": "text", "text": "nul \u{0} in a message"}]}}),
        json!({"type": "result", "subtype": "success", "result": "the end \u{0} of it"}),
    ];
    let script = events
        .iter()
        .map(|e| format!("printf '%s\\n' '{e}'"))
        .collect::<Vec<_>>()
        .join("\n");
    let id = env
        .submit(
            &script,
            json!({ "agent": "scripted-json", "create_pr": false }),
        )
        .await;
    let task = env.wait_done(&id).await;
    let log = env.log(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{log:#?}");
    assert!(has_line(&log, "nul \u{fffd} in a message"), "{log:#?}");
    assert_eq!(
        replies(&env, &id).await,
        vec!["the end \u{fffd} of it".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_bytes_an_agent_prints_are_stored_on_sqlite() {
    any_bytes_are_stored(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_bytes_an_agent_prints_are_stored_on_postgres() {
    any_bytes_are_stored(TestDb::postgres().await).await;
}

/// No 8 characters of the key in a row, in the log as stored or as a terminal shows it.
fn assert_no_key(text: &str) {
    assert!(!text.contains('\u{1b}'), "escapes are stored:\n{text}");
    let key: Vec<char> = ACME_KEY.chars().collect();
    for window in key.windows(8) {
        let window: String = window.iter().collect();
        assert!(
            !text.contains(&window),
            "{window:?} of the key shows in:\n{text}"
        );
    }
}

/// Colour codes that split a secret do not get it past redaction: stdout, stderr, and inside
/// a stream-json tool result.
async fn colours_do_not_split_secrets(db: TestDb) {
    let env = env(db).await;
    let script = r#"
printf 'K=%s\n' "$ACME_API_KEY" > /tmp/e
grep --color=always acme /tmp/e
grep --color=always acme /tmp/e >&2
printf 'K=%s\n' "$ACME_API_KEY" | sed 's/live/\x1b[1mlive\x1b]8;;http:\/\/x\x07/'
grep --color=always -o 'K=' /tmp/e
"#;
    let id = env.submit(script, json!({ "create_pr": false })).await;
    let task = env.wait_done(&id).await;
    let log = env.log(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{log:#?}");
    let all = log.join("\n");
    assert_no_key(&all);
    assert_eq!(
        log.iter().filter(|l| l.contains("K=[REDACTED")).count(),
        3,
        "{log:#?}"
    );
    // Colour alone is taken out, the text kept.
    assert!(has_line(&log, "K="), "{log:#?}");
    assert_no_key(&replies(&env, &id).await.join("\n"));

    // The same inside a structured tool result, where JSON escapes hide the codes.
    let script = r#"
key="$ACME_API_KEY"; head="${key%%-live*}"; rest="${key#acme}"
printf '{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"grep acme /tmp/e"}}]}}\n'
printf '{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"K=\\u001b[01;31m\\u001b[K%s\\u001b[m\\u001b[K%s"}]}}\n' "$head" "$rest"
printf '{"type":"result","subtype":"success","result":"found \\u001b[1m%s\\u001b[0m%s"}\n' "$head" "$rest"
"#;
    let id = env
        .submit(
            script,
            json!({ "agent": "scripted-json", "create_pr": false }),
        )
        .await;
    let task = env.wait_done(&id).await;
    let log = env.log(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{log:#?}");
    assert_no_key(&log.join("\n"));
    assert!(
        log.iter().any(|l| l.contains("Bash: K=[REDACTED")),
        "{log:#?}"
    );
    let reply = replies(&env, &id).await.join("\n");
    assert_no_key(&reply);
    assert!(reply.contains("found [REDACTED"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_codes_do_not_split_a_secret_past_redaction_on_sqlite() {
    colours_do_not_split_secrets(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_codes_do_not_split_a_secret_past_redaction_on_postgres() {
    colours_do_not_split_secrets(TestDb::postgres().await).await;
}

/// A `\r` progress bar is stored as its last frame, a long line keeps its end, and the error
/// after them is in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_bars_and_long_lines_do_not_hide_the_error() {
    let env = env(TestDb::sqlite().await).await;
    let script = r#"
for i in $(seq 20000); do printf '\rdownloading %d%%' $i; done >&2
printf '\rERROR: checksum mismatch\n' >&2
printf 'START '; head -c 100000 /dev/zero | tr '\0' x; printf ' the end of a long line\n'
printf '\033[32mok\033[0m 3 passed\n'
exit 1
"#;
    let id = env.submit(script, json!({})).await;
    let task = env.wait_done(&id).await;
    let log = env.log(&id).await;
    assert_eq!(task["status"], "failed", "{task}\n{log:#?}");
    // The reason quotes what the agent said last on stderr, as a terminal showed it.
    assert_eq!(
        task["status_reason"],
        "the agent exited with code 1: ERROR: checksum mismatch"
    );
    assert!(
        log.contains(&"stderr: ERROR: checksum mismatch".to_owned()),
        "{log:#?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("downloading")),
        "progress frames are stored: {log:#?}"
    );
    let long = log
        .iter()
        .find(|l| l.contains("START xxx"))
        .expect("the long line");
    assert!(long.ends_with("xxx the end of a long line"), "{long}");
    assert!(long.len() < 20 * 1024, "{}", long.len());
    assert!(has_line(&log, "ok 3 passed"), "{log:#?}");
}

/// Structured events are parsed whole however long; only what is shown is shortened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_structured_events_are_parsed_whole() {
    let env = env(TestDb::sqlite().await).await;
    let script = r#"
python3 - <<'PY'
import json, sys
print(json.dumps({"type": "assistant", "message": {"content": [{"type": "text", "text": "said " + "y" * 30000 + " SAID-END"}]}}))
print(json.dumps({"type": "result", "subtype": "success", "result": "start " + "x" * 20000 + " END"}))
PY
"#;
    let id = env
        .submit(
            script,
            json!({ "agent": "scripted-json", "create_pr": false }),
        )
        .await;
    let task = env.wait_done(&id).await;
    let log = env.log(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{log:#?}");
    assert!(
        !log.iter().any(|l| l.contains(r#"{"type""#)),
        "raw JSON in the log: {log:#?}"
    );
    let said = log
        .iter()
        .find(|l| l.starts_with("agent: said yyy"))
        .expect("the message");
    assert!(
        said.ends_with("yyy SAID-END") && said.len() < 20 * 1024,
        "{said}"
    );
    let reply = replies(&env, &id).await;
    assert_eq!(reply.len(), 1);
    assert!(
        reply[0].starts_with("start xxx") && reply[0].ends_with("xxx END"),
        "{}",
        &reply[0][reply[0].len() - 40..]
    );
    assert_eq!(reply[0].len(), "start ".len() + 20000 + " END".len());

    // A line beyond any reason (50 MB, no newline until the end) is dropped with a note;
    // what follows is read.
    let script = r#"
head -c 50000000 /dev/zero | tr '\0' x; echo
printf '%s\n' '{"type":"result","subtype":"success","result":"after the big line"}'
"#;
    let id = env
        .submit(
            script,
            json!({ "agent": "scripted-json", "create_pr": false }),
        )
        .await;
    let task = env.wait_done(&id).await;
    let log = env.log(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.starts_with("error: drydock dropped a line of 50000000 bytes")),
        "{log:#?}"
    );
    assert_eq!(
        replies(&env, &id).await,
        vec!["after the big line".to_owned()]
    );
    let _: Value = task;
}
