//! A task's log sink on both backends: lines handed to it are stored and published by its
//! writer without waiting for a flush (group commit), in order and with gap-free seqs, the
//! same redaction applies, `flush` waits for everything sent, and a failed append is reported.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;

use drydock::redact::{Redactor, SecretSet};
use drydock::store::{GithubProfile, NewTask, Store};
use drydock::tasks::LogSink;
use drydock::tasks::hub::{EventHub, TaskSignal};
use drydock_sandbox::OutputStream;
use drydock_tests::tasks::TaskEnv;
use drydock_tests::{TestDb, on_both_backends};
use serde_json::json;

on_both_backends!(
    submitted_lines_are_stored_and_published_without_a_flush,
    a_failed_append_is_reported,
    a_task_whose_log_cannot_be_stored_fails,
    an_agents_output_replayed_from_its_start_stores_only_what_was_not_stored,
);

/// A user and a task of theirs: (user id, task id).
async fn task(store: &Store) -> (String, String) {
    let user = store
        .upsert_user(&GithubProfile {
            github_id: 1,
            login: "a",
            name: None,
            email: None,
            avatar_url: None,
        })
        .await
        .unwrap();
    let new = NewTask {
        user_id: &user.id,
        title: "t",
        prompt: "p",
        repo: "o/r",
        base_branch: None,
        agent: "claude",
        model: None,
        install_deps: false,
        max_duration_s: 600,
        keep_alive: false,
        create_pr: false,
        origin: "api",
        source_url: None,
        network_policy: None,
        key_in_sandbox: false,
    };
    let task_id = store.insert_task(&new).await.unwrap().id;
    (user.id, task_id)
}

fn redactor() -> Redactor {
    let mut secrets = SecretSet::new();
    secrets.add("secret", "hunter2-very-secret-value");
    Redactor::new(secrets).unwrap()
}

async fn submitted_lines_are_stored_and_published_without_a_flush(db: TestDb) {
    let store = db.store.clone();
    let (_, task_id) = task(&store).await;
    let hub = Arc::new(EventHub::default());
    let mut viewer = hub.subscribe(&task_id);
    let mut sink = LogSink::new(&task_id, store.clone(), hub.clone(), redactor());

    // One line, submitted and never flushed, reaches a viewer.
    sink.line("info", "first hunter2-very-secret-value");
    sink.submit().await.unwrap();
    let Ok(TaskSignal::Event(first)) = viewer.recv().await else {
        panic!("no event")
    };
    assert_eq!(first.seq, 1);
    let json: serde_json::Value = serde_json::from_str(first.json()).unwrap();
    assert_eq!(json["kind"], "info");
    assert!(
        !String::from_utf8_lossy(&first.frame).contains("hunter2"),
        "redacted before it is stored and sent: {}",
        first.json()
    );

    // A burst, submitted line by line while appends run: every line, in order, gap-free.
    let lines = 3000;
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < lines {
            match viewer.recv().await {
                Ok(TaskSignal::Event(live)) => seen.push(live),
                other => panic!("{other:?}"),
            }
        }
        seen
    });
    for i in 0..lines {
        sink.line("stdout", &format!("line {i}"));
        sink.submit().await.unwrap();
    }
    let seen = reader.await.unwrap();
    for (i, live) in seen.iter().enumerate() {
        assert_eq!(live.seq, i as i64 + 2);
        let json: serde_json::Value = serde_json::from_str(live.json()).unwrap();
        assert_eq!(json["text"], format!("line {i}"));
    }

    // `flush` answers once everything sent before it is stored.
    sink.line("success", "done");
    sink.flush().await.unwrap();
    let stored = store
        .list_task_events_after(&task_id, 0, 10_000)
        .await
        .unwrap();
    assert_eq!(stored.len(), lines + 2);
    assert!(
        stored
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as i64 + 1)
    );
    assert_eq!(stored.last().map(|e| e.text.as_str()), Some("done"));
    assert!(stored.iter().all(|e| !e.text.contains("hunter2")));
}

async fn a_failed_append_is_reported(db: TestDb) {
    let store = db.store.clone();
    let (user_id, task_id) = task(&store).await;
    let hub = Arc::new(EventHub::default());
    let mut sink = LogSink::new(&task_id, store.clone(), hub, redactor());
    sink.line("info", "stored");
    sink.flush().await.unwrap();
    // The task is gone: its log can no longer be appended to.
    store.delete_task(&user_id, &task_id).await.unwrap();
    sink.line("info", "lost");
    assert!(sink.flush().await.is_err(), "the failure is reported");
    // Reported once: a later flush with nothing new succeeds.
    assert!(sink.flush().await.is_ok());
}

/// The database refuses one line of a running task (a trigger, as a full disk or a broken
/// connection would refuse it): the turn fails and says why.
async fn a_task_whose_log_cannot_be_stored_fails(db: TestDb) {
    let url = db.url.clone();
    if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON task_events WHEN NEW.text = 'poison-line' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query(
            "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN \
             IF NEW.text = 'poison-line' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; \
             END $$ LANGUAGE plpgsql",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON task_events \
             FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let env = TaskEnv::start(db, &[]).await;
    let id = env
        .submit(
            "echo before; sleep 0.3; echo poison-line; sleep 0.3; echo after; sleep 0.3",
            json!({ "create_pr": false }),
        )
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        task["status_reason"]
            .as_str()
            .is_some_and(|r| r.contains("could not store the log")),
        "{task}"
    );
    let events = env.get_json(&format!("/api/tasks/{id}/events")).await;
    let texts: Vec<&str> = events
        .as_array()
        .or_else(|| events["events"].as_array())
        .map(|list| list.iter().filter_map(|e| e["text"].as_str()).collect())
        .unwrap_or_default();
    assert!(texts.contains(&"before"), "{events}");
    assert!(!texts.contains(&"poison-line"), "{events}");
}

/// The replica that adopts a lost replica's turn replays the agent's output kept in the sandbox
/// from its first byte, in other reads than the live ones, skipping what the stored log says was
/// stored: each stream's events come out exactly as one uninterrupted run makes them, none lost,
/// none twice, a secret and a line cut by the loss caught whole.
async fn an_agents_output_replayed_from_its_start_stores_only_what_was_not_stored(db: TestDb) {
    let store = db.store.clone();
    let (_, whole) = task(&store).await;
    let (_, lost) = task(&store).await;
    let hub = Arc::new(EventHub::default());
    let stdout: &[u8] = b"one\ntwo hunter2-very-secret-value\n\x1b[32mgreen\x1b[0m\n\
        progress 10%\rprogress 100%\nhalf-way \
        hunter2-very-secret-value end\nthree\nlast without newline";
    let stderr: &[u8] = b"warn 1\nwarn hunter2-very-secret-value 2\nwarn 3\n";

    // One uninterrupted run, read in one piece per stream.
    let mut sink = LogSink::new(&whole, store.clone(), hub.clone(), redactor());
    let mut log = sink.agent_exec_log(None, 1, (0, 0));
    sink.output(&mut log, OutputStream::Stdout, stdout);
    sink.output(&mut log, OutputStream::Stderr, stderr);
    sink.finish_exec(log);
    sink.flush().await.unwrap();

    // The live replica reads small pieces and is lost partway through each stream: mid-line
    // and mid-secret on stdout.
    let cut_out = stdout.windows(4).position(|w| w == b"hunt").unwrap() + 2;
    let mut sink = LogSink::new(&lost, store.clone(), hub.clone(), redactor());
    let mut log = sink.agent_exec_log(None, 1, (0, 0));
    for piece in stdout[..cut_out].chunks(5) {
        sink.output(&mut log, OutputStream::Stdout, piece);
        sink.submit().await.unwrap();
    }
    for piece in stderr[..9].chunks(3) {
        sink.output(&mut log, OutputStream::Stderr, piece);
        sink.submit().await.unwrap();
    }
    sink.flush().await.unwrap();
    drop(log);
    drop(sink);
    let stored = store.agent_events_stored(&lost, 1).await.unwrap();
    assert!(stored.0 > 0 && stored.1 > 0, "{stored:?}");

    // The adopter replays both files from the start, in other pieces.
    let mut sink = LogSink::new(&lost, store.clone(), hub.clone(), redactor());
    sink.line("info", "replica a was lost");
    let mut log = sink.agent_exec_log(None, 1, stored);
    for piece in stdout.chunks(7) {
        sink.output(&mut log, OutputStream::Stdout, piece);
    }
    sink.output(&mut log, OutputStream::Stderr, stderr);
    sink.finish_exec(log);
    sink.flush().await.unwrap();

    let texts = |task: String, kind: &'static str| {
        let store = store.clone();
        async move {
            store
                .list_task_events_after(&task, 0, 1000)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.text)
                .collect::<Vec<_>>()
        }
    };
    let expected = texts(whole.clone(), "stdout").await;
    assert_eq!(
        expected,
        [
            "one",
            "two [REDACTED:secret]",
            "green",
            "progress 100%",
            "half-way [REDACTED:secret] end",
            "three",
            "last without newline"
        ]
    );
    assert_eq!(texts(lost.clone(), "stdout").await, expected);
    assert_eq!(
        texts(lost.clone(), "stderr").await,
        texts(whole.clone(), "stderr").await
    );
    assert_eq!(texts(lost.clone(), "stderr").await.len(), 3);
}
