//! Tasks on Kubernetes end to end: the real server with `DRYDOCK_SANDBOX_BACKEND=kubernetes`
//! against the test cluster (`eval "$(scripts/services --kubernetes)"` exports
//! `DRYDOCK_TEST_KUBECONFIG`), the GitHub stand-in, and the scripted agent. Each test works in a
//! namespace of its own, deleted afterwards.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use drydock_sandbox::Reap;
use drydock_tests::TestDb;
use drydock_tests::kubernetes::TestNamespace;
use drydock_tests::tasks::{TaskEnv, git_in, sandbox_image};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_kubernetes_pushes_a_branch_opens_a_pr_and_a_restart_reaps_only_its_pods() {
    let ns = TestNamespace::create("dd-e2e").await;
    let instance = format!("k8s-e2e-{}", std::process::id());
    let mut settings = ns.server_settings();
    settings.extend(["--instance-id".to_owned(), instance.clone()]);
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let db = TestDb::sqlite().await;
    let url = db.url.clone();
    let env = TaskEnv::start(db, &settings).await;
    // Ready for a load balancer: the database and the API server answer (no Docker is asked).
    let ready = reqwest::get(env.app.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
    let id = env
        .submit(
            "printf 'hello from a pod\\n' >> README.md && echo \"ran as $(id -u) in $(hostname)\"",
            json!({}),
        )
        .await;
    let task = env.wait_done(&id).await;
    let log = env.log(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
    // A pod's hostname is its name: the agent ran in a pod of this namespace, as uid 1000.
    let ran = log
        .iter()
        .find_map(|l| l.split("ran as 1000 in ").nth(1))
        .unwrap_or_else(|| panic!("the agent's line: {log:#?}"))
        .trim()
        .to_owned();
    assert!(ran.starts_with("drydock-"), "{ran}");
    assert!(
        ns.pods()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "the task's pod {ran} is removed when the task ends"
    );

    let branch = task["branch"].as_str().unwrap();
    let bare = env.app.gh.repo_path("alice", "demo");
    let (ok, readme) = git_in(&bare, &["show", &format!("{branch}:README.md")]);
    assert!(ok, "the branch is pushed");
    assert_eq!(readme, "# demo\nhello from a pod\n");
    let pulls = env.app.gh.pulls("alice", "demo");
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0]["head"]["ref"], branch);
    assert_eq!(task["pr_number"], pulls[0]["number"]);
    // The finished task's pod is gone.
    let ours = ns.sandboxes(&sandbox_image(), &instance).await;
    assert!(ours.list(&[]).await.unwrap().is_empty());

    // A pod this instance left behind (a crash), and another instance's pod.
    let stale = ours.create(ours.spec("crashed-task")).await.unwrap();
    let theirs = ns
        .sandboxes(&sandbox_image(), "k8s-e2e-another-instance")
        .await;
    let foreign = theirs.create(theirs.spec("their-task")).await.unwrap();

    let drydock_tests::App { server, db, gh } = env.app;
    server.stop().await.unwrap();
    let mut restart = gh.settings();
    restart.extend(settings.iter().map(|s| (*s).to_owned()));
    let restarted = drydock_tests::TestServer::start_with(&url, restart).await;
    assert!(
        ns.pods().get_opt(stale.id()).await.unwrap().is_none(),
        "the restarted server reaps its own leftover pod"
    );
    assert!(
        foreign.is_running().await.unwrap(),
        "another instance's pod survives the restart"
    );
    let labels = ns
        .pods()
        .get(foreign.id())
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default();
    assert_eq!(
        labels.get("drydock.instance").map(String::as_str),
        Some("k8s-e2e-another-instance")
    );
    restarted.stop().await.unwrap();
    theirs.reap(Reap::All).await.unwrap();
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_on_kubernetes_run_setup_in_the_task_pod_and_refuse_dockerfile_builds() {
    let ns = TestNamespace::create("dd-env").await;
    let settings = ns.server_settings();
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let env = TaskEnv::start(TestDb::sqlite().await, &settings).await;
    env.app.gh.create_repo(
        "alice",
        "envk8s",
        &[
            (
                ".drydock/environment.toml",
                "setup = \"echo setup-ran >> /home/agent/setup-runs; echo setup done\"\nmaintenance = \"echo maintenance done\"\n[variables]\nMODE = \"k8s\"\n",
            ),
            ("README.md", "# envk8s\n"),
        ],
        "main",
    );
    let report = "echo \"setup-runs: $(wc -l < /home/agent/setup-runs)\"; echo \"mode: $MODE\"";
    for _ in 0..2 {
        let id = env
            .submit(
                report,
                json!({ "repo": "alice/envk8s", "create_pr": false }),
            )
            .await;
        let task = env.wait_done(&id).await;
        let log = env.log(&id).await;
        assert_eq!(task["status"], "succeeded", "{task}\n{}", log.join("\n"));
        let has = |needle: &str| log.iter().any(|l| l.contains(needle));
        assert!(
            has("setup runs in the task's pod on every start (no snapshots on Kubernetes"),
            "{log:#?}"
        );
        // Each task's pod is new, and setup ran in it once, before the agent, then maintenance.
        assert!(has("setup-runs: 1"), "{log:#?}");
        assert!(has("setup done") && has("maintenance done"), "{log:#?}");
        assert!(has("mode: k8s"), "{log:#?}");
    }

    env.app.gh.create_repo(
        "alice",
        "devc",
        &[
            (
                ".devcontainer/devcontainer.json",
                "{ \"build\": { \"dockerfile\": \"Dockerfile\" } }",
            ),
            (".devcontainer/Dockerfile", "FROM scratch\n"),
        ],
        "main",
    );
    let id = env
        .submit(
            "echo never",
            json!({ "repo": "alice/devc", "create_pr": false }),
        )
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "failed", "{task}");
    let reason = task["status_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("Dockerfile")
            && reason.contains("Kubernetes")
            && reason.contains("registry"),
        "{reason}"
    );
}
