//! Reconciliation after a restart: our leftovers go, other programs' stay.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use common::*;
use drydock_sandbox::{LABEL_DEADLINE, LABEL_INSTANCE, LABEL_TASK, Reap, Sandboxes};

/// Starts a container the way another program (or another drydock) would.
async fn foreign(sbx: &Sandboxes, name: &str, labels: &[(&str, &str)]) -> String {
    let body = ContainerCreateBody {
        image: Some(image()),
        cmd: Some(vec!["sleep".into(), "120".into()]),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        ),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::new().name(name).build();
    let id = sbx
        .docker()
        .expect("a Docker backend")
        .create_container(Some(opts), body)
        .await
        .expect("create foreign container")
        .id;
    sbx.docker()
        .expect("a Docker backend")
        .start_container(&id, None)
        .await
        .expect("start foreign container");
    id
}

async fn exists(sbx: &Sandboxes, id: &str) -> bool {
    sbx.docker()
        .expect("a Docker backend")
        .inspect_container(id, None)
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_removes_its_leftovers_and_nothing_else() {
    let defaults = defaults("reconcile");
    let instance = defaults.instance_id.clone();

    // The "crashed" server: three sandboxes, then it disappears without
    // cleaning up.
    let crashed = Sandboxes::connect(defaults.clone()).await.unwrap();
    let mut ids = HashMap::new();
    let mut guards = Vec::new();
    for task in ["task-keep", "task-orphan", "task-orphan-2"] {
        let sb = crashed.create(crashed.spec(task)).await.unwrap();
        guards.push(Cleanup(sb.id().to_owned()));
        ids.insert(task, sb.id().to_owned());
    }
    drop(crashed);

    // Containers that are not this server's: no labels at all, another
    // drydock instance, and one that merely shares the task label.
    let suffix = &instance[instance.len() - 8..];
    let unlabelled = foreign(
        &Sandboxes::connect(defaults.clone()).await.unwrap(),
        &format!("not-drydock-{suffix}"),
        &[],
    )
    .await;
    guards.push(Cleanup(unlabelled.clone()));
    let restarted = Sandboxes::connect(defaults).await.unwrap();
    let other_instance = foreign(
        &restarted,
        &format!("other-drydock-{suffix}"),
        &[
            (LABEL_INSTANCE, "some-other-server"),
            (LABEL_TASK, "task-orphan"),
        ],
    )
    .await;
    guards.push(Cleanup(other_instance.clone()));

    // The restarted server finds exactly its three.
    let found = restarted.list(&[]).await.unwrap();
    let found_tasks: HashSet<_> = found.iter().filter_map(|i| i.task_id.clone()).collect();
    assert_eq!(
        found_tasks,
        HashSet::from([
            "task-keep".into(),
            "task-orphan".into(),
            "task-orphan-2".into()
        ])
    );
    let orphan = restarted
        .list(&[(LABEL_TASK, "task-orphan")])
        .await
        .unwrap();
    assert_eq!(orphan.len(), 1);
    assert_eq!(orphan[0].id, ids["task-orphan"]);
    assert_eq!(orphan[0].state, "running");

    // Nothing is old enough yet.
    assert!(
        restarted
            .reap(Reap::OlderThan(Duration::from_secs(3600)))
            .await
            .unwrap()
            .is_empty()
    );

    // Keep the task still in the database; remove the rest.
    let removed = restarted
        .reap(Reap::NotIn(HashSet::from(["task-keep".to_owned()])))
        .await
        .unwrap();
    let removed_ids: HashSet<_> = removed.iter().map(|i| i.id.clone()).collect();
    assert_eq!(
        removed_ids,
        HashSet::from([ids["task-orphan"].clone(), ids["task-orphan-2"].clone()])
    );
    assert!(!exists(&restarted, &ids["task-orphan"]).await);
    assert!(!exists(&restarted, &ids["task-orphan-2"]).await);
    assert!(exists(&restarted, &ids["task-keep"]).await);

    // The kept one can be picked up again and used.
    let kept = restarted.get(&ids["task-keep"]).await.unwrap();
    assert_eq!(kept.task_id(), "task-keep");
    assert_eq!(sh(&kept, "id -u").await, "1000");
    // Another server's container is invisible to `get`.
    assert!(restarted.get(&other_instance).await.is_err());

    let all = restarted.reap(Reap::All).await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(!exists(&restarted, &ids["task-keep"]).await);

    // Other programs' containers were never touched.
    assert!(exists(&restarted, &unlabelled).await);
    assert!(exists(&restarted, &other_instance).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_past_their_deadline_label_are_reaped() {
    let defaults = defaults("expired");
    let instance = defaults.instance_id.clone();
    let sbx = Sandboxes::connect(defaults).await.unwrap();
    let suffix = &instance[instance.len() - 8..];

    // Left by a server that died before its deadline timer fired.
    let past = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60)
        .to_string();
    let expired = foreign(
        &sbx,
        &format!("expired-{suffix}"),
        &[
            (LABEL_INSTANCE, &instance),
            (LABEL_TASK, "old"),
            (LABEL_DEADLINE, &past),
        ],
    )
    .await;
    let _g1 = Cleanup(expired.clone());
    let live = sbx.create(sbx.spec("live")).await.unwrap();
    let _g2 = Cleanup(live.id().to_owned());

    let removed = sbx.reap(Reap::Expired).await.unwrap();
    assert_eq!(
        removed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec![expired.as_str()]
    );
    assert!(!exists(&sbx, &expired).await);
    assert!(live.is_running().await.unwrap());
    live.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_sandbox_belongs_to_no_task_until_one_claims_it() {
    let sbx = sandboxes("pool").await;
    let spec = sbx.spec("");
    let pooled = sbx
        .create_pooled(&spec.shape(), Duration::from_secs(600))
        .await
        .unwrap();
    let _guard = Cleanup(pooled.id().to_owned());
    let listed = sbx.list(&[]).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].task_id, None);
    assert_eq!(listed[0].pool, Some(spec.shape().key()));
    assert!(listed[0].name.starts_with("drydock-pool-"), "{listed:?}");
    assert!(sbx.of_task("task-7").await.unwrap().is_empty());

    // Taken for a task: named for it, found as its sandbox, with the task's (shorter) deadline.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claimed = pooled
        .claim("task-7", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.task_id(), "task-7");
    let deadline = claimed.deadline_unix().unwrap();
    assert!(
        (before + 60..=before + 62).contains(&deadline),
        "{deadline}"
    );
    let of_task = sbx.of_task("task-7").await.unwrap();
    assert_eq!(of_task.len(), 1);
    assert!(
        of_task[0].name.starts_with("drydock-task-7-"),
        "{of_task:?}"
    );
    assert!(sbx.of_task("task-70").await.unwrap().is_empty());

    // Reconciliation that keeps it by container id leaves it; one that keeps nothing removes it.
    let keep: HashSet<String> = [claimed.id().to_owned()].into();
    assert!(sbx.reap(Reap::AllExcept(keep)).await.unwrap().is_empty());
    assert_eq!(
        sbx.reap(Reap::AllExcept(HashSet::new()))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(!exists(&sbx, claimed.id()).await);
}
