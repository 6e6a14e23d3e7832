//! The store on both backends: every table's queries, ownership in every user-scoped query,
//! and gap-free event sequence numbers under concurrent appends.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, HashSet};

use drydock::store::{
    ConnectorCheck, ConnectorUpdate, EventSource, GithubProfile, NewConnector, NewEvent, NewTask,
    Store, StoreError, TaskFilter, TaskOutcome, User,
};
use drydock_tests::{TestDb, on_both_backends};

on_both_backends!(
    users_are_upserted_by_github_id,
    github_accounts_hold_one_sealed_token_per_user,
    sessions_are_created_read_and_revoked,
    api_keys_are_per_user_and_provider,
    connectors_crud_is_scoped_to_their_owner,
    tasks_are_listed_newest_first_with_filters_and_pages,
    task_lifecycle_claims_once_and_finishes_once,
    task_connectors_and_messages_belong_to_a_task,
    deleting_a_task_removes_its_events_and_messages,
    events_are_appended_in_batches_and_read_after_a_seq,
    concurrent_appends_get_unique_gap_free_seqs,
    follow_ups_wait_in_order_and_kept_sandboxes_are_released_once,
    text_from_outside_with_nul_is_stored_everywhere,
);

async fn user(store: &Store, github_id: i64, login: &str) -> User {
    store
        .upsert_user(&GithubProfile {
            github_id,
            login,
            name: Some("Test User"),
            email: None,
            avatar_url: None,
        })
        .await
        .unwrap()
}

fn new_task<'a>(user_id: &'a str, repo: &'a str, prompt: &'a str) -> NewTask<'a> {
    NewTask {
        user_id,
        title: prompt,
        prompt,
        repo,
        base_branch: None,
        agent: "claude",
        model: Some("sonnet"),
        install_deps: false,
        max_duration_s: 600,
        keep_alive: false,
        create_pr: true,
        origin: "api",
        source_url: None,
        network_policy: None,
        key_in_sandbox: false,
    }
}

fn events(texts: &[&str]) -> Vec<NewEvent> {
    texts
        .iter()
        .map(|t| NewEvent {
            kind: "stdout",
            text: (*t).to_owned(),
            source: None,
        })
        .collect()
}

async fn users_are_upserted_by_github_id(db: TestDb) {
    let s = &db.store;
    let first = user(s, 42, "octo").await;
    let again = s
        .upsert_user(&GithubProfile {
            github_id: 42,
            login: "octo-renamed",
            name: None,
            email: Some("o@example.com"),
            avatar_url: Some("https://avatars.example/42"),
        })
        .await
        .unwrap();
    assert_eq!(first.id, again.id, "same GitHub id is the same user");
    assert_eq!(again.login, "octo-renamed");
    assert_eq!(again.email.as_deref(), Some("o@example.com"));
    assert_eq!(again.created_at, first.created_at);
    assert_eq!(s.get_user(&first.id).await.unwrap(), Some(again));
    let other = user(s, 43, "other").await;
    assert_ne!(other.id, first.id);
    assert_eq!(s.get_user("no-such-user").await.unwrap(), None);
}

async fn github_accounts_hold_one_sealed_token_per_user(db: TestDb) {
    let s = &db.store;
    let u = user(s, 1, "a").await;
    assert!(s.get_github_account(&u.id).await.unwrap().is_none());
    s.upsert_github_account(&u.id, "v1:first", "repo", None, None)
        .await
        .unwrap();
    s.upsert_github_account(
        &u.id,
        "v1:second",
        "repo,read:user",
        Some(123),
        Some("v1:refresh"),
    )
    .await
    .unwrap();
    let acct = s.get_github_account(&u.id).await.unwrap().unwrap();
    assert_eq!(acct.access_token_enc, "v1:second");
    assert_eq!(acct.scopes, "repo,read:user");
    assert_eq!(acct.token_expires_at, Some(123));
    assert_eq!(acct.refresh_token_enc.as_deref(), Some("v1:refresh"));
    assert!(
        !format!("{acct:?}").contains("v1:"),
        "Debug must not print sealed tokens"
    );
}

async fn sessions_are_created_read_and_revoked(db: TestDb) {
    let s = &db.store;
    let u = user(s, 1, "a").await;
    let sess = s
        .create_session(&u.id, 9_999_999_999_999, Some("test-agent"))
        .await
        .unwrap();
    assert_eq!(
        s.get_session(&sess.id).await.unwrap().unwrap().revoked_at,
        None
    );
    assert!(s.revoke_session(&sess.id).await.unwrap());
    assert!(
        !s.revoke_session(&sess.id).await.unwrap(),
        "revoking twice reports nothing to revoke"
    );
    assert!(
        s.get_session(&sess.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    let expired = s.create_session(&u.id, 1, None).await.unwrap();
    let live = s
        .create_session(&u.id, 9_999_999_999_999, None)
        .await
        .unwrap();
    assert!(
        s.delete_sessions_ended_before(drydock::store::now_ms() + 1)
            .await
            .unwrap()
            >= 2
    );
    assert!(s.get_session(&expired.id).await.unwrap().is_none());
    assert!(s.get_session(&live.id).await.unwrap().is_some());
}

async fn api_keys_are_per_user_and_provider(db: TestDb) {
    let s = &db.store;
    let a = user(s, 1, "a").await;
    let b = user(s, 2, "b").await;
    s.upsert_api_key(&a.id, "openai", "v1:a-openai", "1234")
        .await
        .unwrap();
    let first = s
        .upsert_api_key(&a.id, "anthropic", "v1:a-old", "aaaa")
        .await
        .unwrap();
    let replaced = s
        .upsert_api_key(&a.id, "anthropic", "v1:a-new", "bbbb")
        .await
        .unwrap();
    assert_eq!(replaced.created_at, first.created_at);
    assert_eq!(replaced.key_enc, "v1:a-new");
    s.upsert_api_key(&b.id, "anthropic", "v1:b", "cccc")
        .await
        .unwrap();
    let listed: Vec<_> = s
        .list_api_keys(&a.id)
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.provider, k.hint))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("anthropic".into(), "bbbb".into()),
            ("openai".into(), "1234".into())
        ]
    );
    assert_eq!(
        s.get_api_key(&b.id, "anthropic")
            .await
            .unwrap()
            .unwrap()
            .key_enc,
        "v1:b"
    );
    assert!(s.get_api_key(&b.id, "openai").await.unwrap().is_none());
    assert!(s.delete_api_key(&a.id, "openai").await.unwrap());
    assert!(!s.delete_api_key(&a.id, "openai").await.unwrap());
    assert!(!s.delete_api_key(&b.id, "anthropic-nope").await.unwrap());
    assert_eq!(
        s.list_api_keys(&b.id).await.unwrap().len(),
        1,
        "b's keys untouched"
    );
}

async fn connectors_crud_is_scoped_to_their_owner(db: TestDb) {
    let s = &db.store;
    let a = user(s, 1, "a").await;
    let b = user(s, 2, "b").await;
    let new = NewConnector {
        user_id: &a.id,
        name: "github",
        description: "GitHub MCP",
        transport: "http",
        command: None,
        args: "[]",
        url: Some("https://mcp.example/"),
        env_enc: None,
        headers_enc: Some("v1:headers"),
        enabled: true,
        auth: "headers",
    };
    let c = s.insert_connector(&new).await.unwrap();
    assert!(c.enabled);
    assert!(
        matches!(s.insert_connector(&new).await, Err(StoreError::Conflict)),
        "names are unique per user"
    );
    s.insert_connector(&NewConnector {
        user_id: &b.id,
        ..new.clone()
    })
    .await
    .expect("another user may reuse the name");
    assert!(
        s.get_connector(&b.id, &c.id).await.unwrap().is_none(),
        "another user's connector is invisible"
    );
    let update = ConnectorUpdate {
        name: "files",
        description: "",
        transport: "stdio",
        command: Some("npx"),
        args: r#"["-y","server"]"#,
        url: None,
        env_enc: Some("v1:env"),
        headers_enc: None,
        enabled: false,
        auth: "headers",
        keep_grant: false,
    };
    assert!(
        s.update_connector(&b.id, &c.id, &update)
            .await
            .unwrap()
            .is_none()
    );
    let updated = s
        .update_connector(&a.id, &c.id, &update)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (updated.transport.as_str(), updated.enabled),
        ("stdio", false)
    );
    let checked = s
        .record_connector_check(
            &a.id,
            &c.id,
            &ConnectorCheck {
                status: "ok",
                error: None,
                tool_count: Some(7),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (checked.last_status.as_deref(), checked.tool_count),
        (Some("ok"), Some(7))
    );
    assert!(checked.last_checked_at.is_some());
    assert_eq!(s.list_connectors(&a.id).await.unwrap().len(), 1);
    assert!(!s.delete_connector(&b.id, &c.id).await.unwrap());
    assert!(s.delete_connector(&a.id, &c.id).await.unwrap());
    assert!(s.list_connectors(&a.id).await.unwrap().is_empty());
}

async fn tasks_are_listed_newest_first_with_filters_and_pages(db: TestDb) {
    let s = &db.store;
    let a = user(s, 1, "a").await;
    let b = user(s, 2, "b").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let repo = if i % 2 == 0 { "o/even" } else { "o/odd" };
        ids.push(
            s.insert_task(&new_task(&a.id, repo, &format!("task {i}")))
                .await
                .unwrap()
                .id,
        );
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    s.insert_task(&new_task(&b.id, "o/even", "b's task"))
        .await
        .unwrap();
    let all = s
        .list_tasks(
            &a.id,
            &TaskFilter {
                limit: 50,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let listed: Vec<_> = all.iter().map(|t| t.id.clone()).collect();
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(listed, expected, "newest first, only the owner's");
    let even = s
        .list_tasks(
            &a.id,
            &TaskFilter {
                repo: Some("o/even"),
                limit: 50,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(even.len(), 3);
    let page2 = s
        .list_tasks(
            &a.id,
            &TaskFilter {
                limit: 2,
                offset: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page2.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        expected[2..4].to_vec()
    );
    s.claim_task(&ids[0]).await.unwrap();
    let running = s
        .list_tasks(
            &a.id,
            &TaskFilter {
                status: Some("running"),
                limit: 50,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(
        s.list_tasks_with_status("queued").await.unwrap().len(),
        5,
        "4 of a's and b's one, oldest first"
    );
}

async fn task_lifecycle_claims_once_and_finishes_once(db: TestDb) {
    let s = &db.store;
    let a = user(s, 1, "a").await;
    let t = s
        .insert_task(&new_task(&a.id, "o/r", "fix it"))
        .await
        .unwrap();
    assert_eq!(t.status, "queued");
    assert!(t.create_pr && !t.keep_alive && !t.install_deps);
    assert!(s.get_task("someone-else", &t.id).await.unwrap().is_none());
    assert!(s.claim_task(&t.id).await.unwrap());
    assert!(
        !s.claim_task(&t.id).await.unwrap(),
        "a task is claimed once"
    );
    s.set_task_branch(&t.id, "main", "drydock/fix-it-abc123", "base1")
        .await
        .unwrap();
    s.set_task_container(&t.id, Some("c0ffee")).await.unwrap();
    let running = s.get_task(&a.id, &t.id).await.unwrap().unwrap();
    assert_eq!(running.status, "running");
    assert!(running.started_at.is_some());
    assert_eq!(running.container_id.as_deref(), Some("c0ffee"));
    let outcome = TaskOutcome {
        status: "succeeded",
        reason: Some("pushed"),
        commit_sha: Some("abc"),
        pr_url: Some("https://example/pull/1"),
        pr_number: Some(1),
    };
    assert!(s.finish_task(&t.id, &outcome).await.unwrap());
    assert!(
        !s.finish_task(
            &t.id,
            &TaskOutcome {
                status: "failed",
                ..Default::default()
            }
        )
        .await
        .unwrap()
    );
    let done = s.get_task_for_runner(&t.id).await.unwrap().unwrap();
    assert_eq!(
        (
            done.status.as_str(),
            done.commit_sha.as_deref(),
            done.pr_number,
            done.branch.as_deref()
        ),
        (
            "succeeded",
            Some("abc"),
            Some(1),
            Some("drydock/fix-it-abc123")
        )
    );
    assert!(done.finished_at.is_some());
}

async fn task_connectors_and_messages_belong_to_a_task(db: TestDb) {
    let s = &db.store;
    let a = user(s, 1, "a").await;
    let t = s.insert_task(&new_task(&a.id, "o/r", "p")).await.unwrap();
    s.set_task_connectors(&t.id, &["c2".into(), "c1".into()])
        .await
        .unwrap();
    assert_eq!(
        s.list_task_connector_ids(&t.id).await.unwrap(),
        vec!["c1", "c2"]
    );
    s.set_task_connectors(&t.id, &["c3".into()]).await.unwrap();
    assert_eq!(s.list_task_connector_ids(&t.id).await.unwrap(), vec!["c3"]);
    s.insert_task_message(&t.id, "user", "first", Some(1))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    s.insert_task_message(&t.id, "agent", "done", Some(1))
        .await
        .unwrap();
    let msgs: Vec<_> = s
        .list_task_messages(&t.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.role, m.content))
        .collect();
    assert_eq!(
        msgs,
        vec![
            ("user".into(), "first".into()),
            ("agent".into(), "done".into())
        ]
    );
    assert!(
        s.insert_task_message(&t.id, "system", "x", None)
            .await
            .is_err(),
        "roles are checked by the schema"
    );
}

async fn deleting_a_task_removes_its_events_and_messages(db: TestDb) {
    let s = &db.store;
    let a = user(s, 1, "a").await;
    let t = s.insert_task(&new_task(&a.id, "o/r", "p")).await.unwrap();
    s.append_task_events(&t.id, &events(&["one", "two"]))
        .await
        .unwrap();
    s.insert_task_message(&t.id, "user", "p", None)
        .await
        .unwrap();
    assert!(!s.delete_task("someone-else", &t.id).await.unwrap());
    assert!(s.delete_task(&a.id, &t.id).await.unwrap());
    assert!(
        s.list_task_events_after(&t.id, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.list_task_messages(&t.id).await.unwrap().is_empty());
}

async fn events_are_appended_in_batches_and_read_after_a_seq(db: TestDb) {
    let s = &db.store;
    let a = user(s, 1, "a").await;
    let t = s.insert_task(&new_task(&a.id, "o/r", "p")).await.unwrap();
    let first = s
        .append_task_events(&t.id, &events(&["a", "b", "c"]))
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let big: Vec<NewEvent> = (0..450)
        .map(|i| NewEvent {
            kind: "stderr",
            text: format!("line {i} ✓"),
            source: None,
        })
        .collect();
    let second = s.append_task_events(&t.id, &big).await.unwrap();
    assert_eq!((second[0].seq, second[449].seq), (4, 453));
    assert!(s.append_task_events(&t.id, &[]).await.unwrap().is_empty());
    let page = s.list_task_events_after(&t.id, 2, 3).await.unwrap();
    assert_eq!(
        page.iter()
            .map(|e| (e.seq, e.text.as_str()))
            .collect::<Vec<_>>(),
        vec![(3, "c"), (4, "line 0 ✓"), (5, "line 1 ✓")]
    );
    assert_eq!(page[1].kind, "stderr");
    assert_eq!(
        s.list_task_events_after(&t.id, 453, 10).await.unwrap(),
        vec![]
    );
    assert!(
        s.append_task_events("no-such-task", &events(&["x"]))
            .await
            .is_err(),
        "appending to a task that does not exist fails instead of inventing seqs"
    );
    let bad = s
        .append_task_events(
            &t.id,
            &[NewEvent {
                kind: "bogus",
                text: "x".into(),
                source: None,
            }],
        )
        .await;
    assert!(bad.is_err(), "kinds are checked by the schema");
    assert_eq!(
        s.get_task_for_runner(&t.id)
            .await
            .unwrap()
            .unwrap()
            .event_seq,
        453,
        "a failed append hands out no seq"
    );
    // Nothing of the failed append's transaction is left holding the database: each of the
    // pool's connections takes an append in turn, at the next seqs.
    let mut handles = Vec::new();
    for i in 0..16 {
        let store = s.clone();
        let id = t.id.clone();
        handles.push(tokio::spawn(async move {
            store
                .append_task_events(&id, &events(&[&format!("after {i}")]))
                .await
        }));
    }
    let mut seqs = Vec::new();
    for handle in handles {
        seqs.extend(handle.await.unwrap().unwrap().iter().map(|e| e.seq));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (454..470).collect::<Vec<_>>());
    // Where an agent's output ended is stored with its events.
    let agent = |stderr: bool, index: i64| NewEvent {
        kind: if stderr { "stderr" } else { "agent" },
        text: format!("{stderr} {index}"),
        source: Some(EventSource {
            turn: 2,
            stderr,
            index,
        }),
    };
    s.append_task_events(&t.id, &[agent(false, 0), agent(true, 0), agent(false, 1)])
        .await
        .unwrap();
    s.append_task_events(&t.id, &[agent(true, 1), agent(true, 2)])
        .await
        .unwrap();
    assert_eq!(s.agent_events_stored(&t.id, 2).await.unwrap(), (2, 3));
    assert_eq!(s.agent_events_stored(&t.id, 1).await.unwrap(), (0, 0));
    let tail = s.list_task_events_after(&t.id, 469, 10).await.unwrap();
    assert_eq!(
        tail.iter()
            .map(|e| (e.seq, e.kind.as_str(), e.text.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (470, "agent", "false 0"),
            (471, "stderr", "true 0"),
            (472, "agent", "false 1"),
            (473, "stderr", "true 1"),
            (474, "stderr", "true 2"),
        ]
    );
}

async fn concurrent_appends_get_unique_gap_free_seqs(db: TestDb) {
    const TASKS: usize = 8;
    const WRITERS_PER_TASK: usize = 4;
    const BATCHES: usize = 10;
    let s = &db.store;
    let a = user(s, 1, "a").await;
    let mut task_ids = Vec::new();
    for i in 0..TASKS {
        task_ids.push(
            s.insert_task(&new_task(&a.id, "o/r", &format!("t{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let mut handles = Vec::new();
    for task_id in &task_ids {
        for w in 0..WRITERS_PER_TASK {
            let store = s.clone();
            let task_id = task_id.clone();
            handles.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for b in 0..BATCHES {
                    let batch: Vec<NewEvent> = (0..1 + (b % 3))
                        .map(|i| NewEvent {
                            kind: "stdout",
                            text: format!("w{w} b{b} i{i}"),
                            source: None,
                        })
                        .collect();
                    for e in store.append_task_events(&task_id, &batch).await.unwrap() {
                        seqs.push(e.seq);
                    }
                }
                (task_id, seqs)
            }));
        }
    }
    let mut per_task: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for h in handles {
        let (task_id, seqs) = h.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one writer sees its seqs increase"
        );
        per_task.entry(task_id).or_default().extend(seqs);
    }
    let per_writer: usize = (0..BATCHES).map(|b| 1 + (b % 3)).sum();
    for (task_id, mut seqs) in per_task {
        seqs.sort_unstable();
        let expected: Vec<i64> = (1..=(WRITERS_PER_TASK * per_writer) as i64).collect();
        assert_eq!(seqs, expected, "seqs of a task are unique and gap-free");
        let stored = s.list_task_events_after(&task_id, 0, 10_000).await.unwrap();
        assert_eq!(stored.len(), expected.len());
        let texts: HashSet<_> = stored.iter().map(|e| e.text.clone()).collect();
        assert_eq!(texts.len(), stored.len(), "no line stored twice");
    }
}

async fn follow_ups_wait_in_order_and_kept_sandboxes_are_released_once(db: TestDb) {
    let s = &db.store;
    let a = user(s, 1, "a").await;
    let t = s
        .insert_task(&new_task(&a.id, "o/r", "first"))
        .await
        .unwrap();
    s.insert_task_message(&t.id, "user", "first", None)
        .await
        .unwrap();
    assert!(s.claim_task_for(&t.id, "r1").await.unwrap());
    let turn = s.begin_turn(&t.id).await.unwrap();
    assert_eq!(turn.number, 1);
    assert_eq!(turn.message.map(|m| m.content).as_deref(), Some("first"));
    assert!(!s.has_waiting_messages(&t.id).await.unwrap());
    assert!(
        !s.requeue_task(&t.id).await.unwrap(),
        "a running task is not queued again"
    );
    // Two follow-ups arrive while the first turn runs.
    for text in ["second", "third"] {
        s.insert_task_message(&t.id, "user", text, None)
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    s.set_task_container(&t.id, Some("c1")).await.unwrap();
    let ok = TaskOutcome {
        status: "succeeded",
        ..Default::default()
    };
    assert!(s.finish_task(&t.id, &ok).await.unwrap());
    assert!(s.has_waiting_messages(&t.id).await.unwrap());
    assert!(s.requeue_task(&t.id).await.unwrap());
    assert!(!s.requeue_task(&t.id).await.unwrap(), "queued once");
    let queued = s.get_task(&a.id, &t.id).await.unwrap().unwrap();
    assert_eq!(
        (queued.status.as_str(), queued.finished_at),
        ("queued", None)
    );
    assert!(
        !s.release_task_sandbox(&t.id, "c1", None).await.unwrap(),
        "a queued turn keeps its sandbox"
    );
    assert!(s.claim_task_for(&t.id, "r1").await.unwrap());
    let turn = s.begin_turn(&t.id).await.unwrap();
    assert_eq!(
        (turn.number, turn.message.map(|m| m.content)),
        (2, Some("second".to_owned())),
        "the oldest waiting message runs next"
    );
    assert!(s.finish_task(&t.id, &ok).await.unwrap());
    // The sandbox is kept until t=1000.
    s.keep_task_sandbox(&t.id, 1000).await.unwrap();
    assert_eq!(s.list_kept_sandboxes("r1", None).await.unwrap().len(), 1);
    assert_eq!(
        s.list_kept_sandboxes("r1", Some(1000)).await.unwrap().len(),
        1
    );
    assert!(
        s.list_kept_sandboxes("r1", Some(999))
            .await
            .unwrap()
            .is_empty(),
        "not expired yet"
    );
    assert!(s.list_kept_sandboxes("r2", None).await.unwrap().is_empty());
    assert!(
        !s.release_task_sandbox(&t.id, "c1", Some(999))
            .await
            .unwrap(),
        "not idle long enough"
    );
    assert!(!s.release_task_sandbox(&t.id, "other", None).await.unwrap());
    assert!(
        s.release_task_sandbox(&t.id, "c1", Some(1000))
            .await
            .unwrap()
    );
    assert!(
        !s.release_task_sandbox(&t.id, "c1", None).await.unwrap(),
        "released once"
    );
    assert!(s.list_kept_sandboxes("r1", None).await.unwrap().is_empty());
    let turns: Vec<_> = s
        .list_task_messages(&t.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.content, m.turn))
        .collect();
    assert_eq!(
        turns,
        vec![
            ("first".to_owned(), Some(1)),
            ("second".to_owned(), Some(2)),
            ("third".to_owned(), None)
        ]
    );
}

/// Whatever text comes from outside (agents, repositories, remote servers, users) is stored on
/// both backends: NUL, which PostgreSQL refuses in text, becomes U+FFFD in every column.
async fn text_from_outside_with_nul_is_stored_everywhere(db: TestDb) {
    let s = &db.store;
    let a = user(s, 1, "a").await;
    let t = s
        .insert_task(&new_task(&a.id, "o/r", "prompt \0 typed"))
        .await
        .unwrap();
    assert_eq!(t.prompt, "prompt \u{fffd} typed");
    let stored = s
        .append_task_events(&t.id, &events(&["a\0b", "fine"]))
        .await
        .unwrap();
    let read = s.list_task_events_after(&t.id, 0, 10).await.unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].text, "a\u{fffd}b");
    assert_eq!(
        stored[0].text, read[0].text,
        "what is published is what is stored"
    );
    s.insert_task_message(&t.id, "agent", "reply \0 end", Some(1))
        .await
        .unwrap();
    let messages = s.list_task_messages(&t.id).await.unwrap();
    assert_eq!(messages[0].content, "reply \u{fffd} end");
    s.save_task_diff(&t.id, r#"[{"path":"a\u0000b"}]"#, "+x\0y\n")
        .await
        .unwrap();
    let diff = s.get_task_diff(&t.id).await.unwrap().unwrap();
    assert_eq!(diff.patch, "+x\u{fffd}y\n");
    assert!(s.claim_task(&t.id).await.unwrap());
    assert!(
        s.finish_task(
            &t.id,
            &TaskOutcome {
                status: "failed",
                reason: Some("the agent exited with code 1: \0 nul"),
                commit_sha: None,
                pr_url: None,
                pr_number: None,
            },
        )
        .await
        .unwrap()
    );
    let t = s.get_task(&a.id, &t.id).await.unwrap().unwrap();
    assert_eq!(
        t.status_reason.as_deref(),
        Some("the agent exited with code 1: \u{fffd} nul")
    );
    let c = s
        .insert_connector(&NewConnector {
            user_id: &a.id,
            name: "odd\0name",
            description: "",
            transport: "http",
            auth: "headers",
            command: None,
            args: "[]",
            url: Some("https://mcp.example/"),
            env_enc: None,
            headers_enc: None,
            enabled: true,
        })
        .await
        .unwrap();
    let c = s
        .record_connector_check(
            &a.id,
            &c.id,
            &ConnectorCheck {
                status: "error",
                error: Some("the server said \0\0"),
                tool_count: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.name, "odd\u{fffd}name");
    assert_eq!(
        c.last_error.as_deref(),
        Some("the server said \u{fffd}\u{fffd}")
    );
}

/// A task to append to, and a batch of 16 lines of 1,000 bytes (~16 KiB) to append to it, so a
/// write-ahead log grows fast even on a slow machine.
async fn task_and_16_kib_batch(s: &Store) -> (String, Vec<NewEvent>) {
    let a = user(s, 1, "a").await;
    let t = s.insert_task(&new_task(&a.id, "o/r", "p")).await.unwrap();
    let line = "x".repeat(1000);
    (t.id, events(&vec![line.as_str(); 16]))
}

/// The checkpoint sequence number in a write-ahead log's header (bytes 12..16,
/// <https://sqlite.org/fileformat2.html#walformat>): it goes up each time the log starts over.
fn wal_sequence(wal: &std::path::Path) -> Option<u32> {
    let header = std::fs::read(wal).ok()?;
    Some(u32::from_be_bytes(header.get(12..16)?.try_into().ok()?))
}

/// What a SQLite store writes reaches the database file within seconds while the store stays
/// open, well before SQLite's own automatic checkpoint (1,000 pages of log, ~4 MiB) would
/// copy it there: the store checkpoints in the background, so no append has to.
#[tokio::test]
async fn sqlite_copies_its_write_ahead_log_into_the_database_file_in_the_background() {
    let db = TestDb::sqlite().await;
    let s = &db.store;
    let file = drydock::store::sqlite_file(&db.url).unwrap();
    let size = || std::fs::metadata(&file).map_or(0, |m| m.len());
    let a = user(s, 1, "a").await;
    let t = s.insert_task(&new_task(&a.id, "o/r", "p")).await.unwrap();
    let before = size();
    // ~1 MiB of lines: a quarter of what makes SQLite checkpoint by itself.
    let line = "x".repeat(1000);
    for _ in 0..8 {
        let batch: Vec<&str> = vec![line.as_str(); 128];
        s.append_task_events(&t.id, &events(&batch)).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while size() < before + 1_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file is still {} bytes (was {before}) 30 s after 1 MiB was appended: \
             the log is not being checkpointed",
            size()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        s.list_task_events_after(&t.id, 1023, 10)
            .await
            .unwrap()
            .len(),
        1,
        "every line is there"
    );
}

/// A SQLite store that is written to without a pause still starts its write-ahead log over
/// (it would otherwise grow for as long as the writes go on: a background checkpoint copies
/// the log while appends keep adding to it, and the log can start over only once it was
/// copied whole). Told by the log's header: its checkpoint sequence number (bytes 12..16,
/// <https://sqlite.org/fileformat2.html#walformat>) goes up each time the log starts over.
#[tokio::test]
async fn sqlite_starts_its_write_ahead_log_over_while_writes_go_on() {
    let db = TestDb::sqlite().await;
    let s = &db.store;
    let wal = drydock::store::sqlite_file(&db.url)
        .unwrap()
        .with_extension("db-wal");
    let sequence = || wal_sequence(&wal);
    // ~16 KiB of lines per append, so that the log passes the point where it is made to start
    // over after a few hundred appends even on a slow machine.
    let (task, batch) = task_and_16_kib_batch(s).await;
    s.append_task_events(&task, &batch).await.unwrap();
    let first = sequence().expect("a write-ahead log with a header");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut appends = 0u64;
    loop {
        for _ in 0..20 {
            s.append_task_events(&task, &batch).await.unwrap();
        }
        appends += 20;
        let now = sequence().expect("a write-ahead log with a header");
        if now != first {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after {appends} appends without a pause over 120 s the write-ahead log never started \
             over (checkpoint sequence still {now}); it is {} bytes",
            std::fs::metadata(&wal).map_or(0, |m| m.len())
        );
    }
    // Every line written across the log's starting over is there, the last at the last seq.
    let written = (appends as i64 + 1) * 16;
    let last = s
        .list_task_events_after(&task, written - 1, 10)
        .await
        .unwrap();
    assert_eq!(
        last.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![written],
        "the last line is stored at seq {written}"
    );
    let count = s
        .list_task_events_after(&task, 0, written + 10)
        .await
        .unwrap();
    assert_eq!(count.len() as i64, written, "no line is missing");
}

/// PostgreSQL: another replica listening on the events channel learns how far each task's log
/// is stored, in order, and always hears the last line of a burst of appends (the store
/// coalesces its notices while appends keep coming, so not every append has one of its own),
/// and a lone append after a quiet spell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tells_other_replicas_how_far_each_log_is_stored() {
    let db = TestDb::postgres().await;
    let s = &db.store;
    let other = Store::connect(&db.url).await.unwrap();
    let mut listener = other
        .listen(&[drydock::store::EVENTS_CHANNEL])
        .await
        .unwrap()
        .expect("a listener on PostgreSQL");
    let a = user(s, 1, "a").await;
    let t1 = s.insert_task(&new_task(&a.id, "o/r", "p")).await.unwrap();
    let t2 = s.insert_task(&new_task(&a.id, "o/r", "q")).await.unwrap();
    // Two tasks appending one line at a time, as fast as the database takes them.
    let burst = |task_id: String| async move {
        for i in 0..300 {
            s.append_task_events(&task_id, &events(&[&format!("line {i}")]))
                .await
                .unwrap();
        }
    };
    tokio::join!(burst(t1.id.clone()), burst(t2.id.clone()));
    let mut heard: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut hear_until = async |task_id: &str, seq: i64| {
        while heard.get(task_id).and_then(|s| s.last()) != Some(&seq) {
            let notice = tokio::time::timeout(std::time::Duration::from_secs(30), listener.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no notice that {task_id} is stored up to {seq} in 30 s; heard {heard:?}"
                    )
                })
                .unwrap();
            let (task, stored) = notice.payload().split_once(' ').unwrap();
            heard
                .entry(task.to_owned())
                .or_default()
                .push(stored.parse().unwrap());
        }
    };
    hear_until(&t1.id, 300).await;
    hear_until(&t2.id, 300).await;
    // A lone line after the burst is announced too.
    s.append_task_events(&t1.id, &events(&["after"]))
        .await
        .unwrap();
    hear_until(&t1.id, 301).await;
    for (task, seqs) in &heard {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{task}'s notices name increasing seqs: {seqs:?}"
        );
        assert!(seqs.len() <= 301, "{task}: at most one notice per append");
    }
    assert_eq!(heard.len(), 2, "notices name only the two tasks");
}

/// A SQLite database left by an older drydock (migrations up to 0005, with a connector in it) is
/// brought up to date when the new one opens it, and its rows then read back through every
/// connection of the store's pool, even when another process held the write lock for a moment
/// while the store started (a backup or the `sqlite3` shell), so that the migrations waited.
/// A connection that had read the schema before the migrations were done kept it, and a `SELECT *`
/// on a table they changed then got fewer columns than its rows have: sqlx's worker thread
/// panicked and the read answered nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgraded_while_its_writes_wait_reads_every_row_on_every_connection() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("drydock.db").display());
    let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
        .unwrap()
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);

    // The older release's schema: the project's own migrations up to 0005, and one connector.
    let older = dir.path().join("migrations");
    std::fs::create_dir(&older).unwrap();
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() <= "0005" {
            std::fs::copy(&path, older.join(&name)).unwrap();
        }
    }
    let mut old = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(older.as_path())
        .await
        .unwrap()
        .run(&mut old)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO users (id, github_id, login, created_at, last_login_at)
         VALUES ('u1', 1, 'alice', 0, 0)",
    )
    .execute(&mut old)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO connectors (id, user_id, name, transport, url, created_at, updated_at)
         VALUES ('c1', 'u1', 'docs', 'http', 'https://mcp.example.test/', 0, 0)",
    )
    .execute(&mut old)
    .await
    .unwrap();

    // Another process holds the write lock while the new release starts, then lets go.
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut old)
        .await
        .unwrap();
    let opening = tokio::spawn({
        let url = url.clone();
        async move { Store::open(&url).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    sqlx::query("ROLLBACK").execute(&mut old).await.unwrap();
    old.close().await.unwrap();
    let store = opening
        .await
        .unwrap()
        .expect("the older database is migrated");

    // Reads at once, more than the pool has connections, so that each connection serves some.
    for round in 0..4 {
        let reads = (0..16).map(|_| store.get_connector("u1", "c1"));
        for read in futures::future::join_all(reads).await {
            let connector = read.unwrap().unwrap_or_else(|| {
                panic!("round {round}: the connector made before the upgrade reads back as missing")
            });
            assert_eq!(connector.name, "docs");
            assert_eq!(
                connector.auth, "headers",
                "a column the upgrade added has its default"
            );
        }
    }
    assert_eq!(
        store.migration_version().await.unwrap(),
        std::fs::read_dir(&all)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.get(..4)?.parse().ok())
            .max(),
        "every migration is applied"
    );
}

/// SQLite, a read left open (a snapshot held for long) while the write-ahead log is past the
/// point where it is made to start over: the checkpoint that makes it start over holds writers
/// off while it waits for readers of older snapshots, and waits for them only briefly, so a
/// writer that waits up to 1 s for the database (a tenth of the store's own busy timeout) is
/// never refused; once the read ends the log starts over.
#[tokio::test]
async fn sqlite_a_read_left_open_does_not_hold_writers_off() {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode};
    use sqlx::{Connection as _, Executor as _};
    let db = TestDb::sqlite().await;
    let s = &db.store;
    let file = drydock::store::sqlite_file(&db.url).unwrap();
    let wal = file.with_extension("db-wal");
    let open = |busy: u64| {
        SqliteConnectOptions::new()
            .filename(&file)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(busy))
    };
    let (task, batch) = task_and_16_kib_batch(s).await;
    s.append_task_events(&task, &batch).await.unwrap();

    let mut reader = SqliteConnection::connect_with(&open(10)).await.unwrap();
    reader.execute("BEGIN").await.unwrap();
    let _: (i64,) = sqlx::query_as("SELECT count(*) FROM task_events")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    // Past 10,000 pages of log (~40 MiB), where the store makes the log start over.
    while std::fs::metadata(&wal).map_or(0, |m| m.len()) < 48 << 20 {
        s.append_task_events(&task, &batch).await.unwrap();
    }
    let mut writer = SqliteConnection::connect_with(&open(1)).await.unwrap();
    for attempt in 0..40 {
        if let Err(err) = writer.execute("BEGIN IMMEDIATE").await {
            panic!(
                "a writer waiting up to 1 s was refused (attempt {attempt}) while a read is \
                 open: {err}"
            );
        }
        writer.execute("ROLLBACK").await.unwrap();
        s.append_task_events(&task, &batch).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The read ends: the log starts over (its header's checkpoint sequence changes).
    let sequence = || wal_sequence(&wal);
    let first = sequence().expect("a write-ahead log with a header");
    reader.execute("COMMIT").await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while sequence() == Some(first) {
        assert!(
            std::time::Instant::now() < deadline,
            "the log did not start over in 120 s after the read ended"
        );
        s.append_task_events(&task, &batch).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A SQLite database migrated by a newer drydock (it has a migration this one does not know) is
/// refused with a message that says so and what to do, and says it once.
#[tokio::test]
async fn sqlite_migrated_by_a_newer_drydock_is_refused_saying_so() {
    use sqlx::Connection as _;
    let db = TestDb::sqlite().await;
    let mut newer = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', TRUE, X'00', 0)",
    )
    .execute(&mut newer)
    .await
    .unwrap();
    newer.close().await.unwrap();
    let err = Store::open(&db.url).await.unwrap_err();
    let said = format!("{:#}", anyhow::Error::from(err));
    assert!(
        said.contains("migration 9999") && said.contains("a newer drydock migrated it"),
        "{said}"
    );
    assert_eq!(said.matches("9999").count(), 1, "said once: {said}");
}
