//! Tasks on Kubernetes end to end: the real server with `DRYDOCK_SANDBOX_BACKEND=kubernetes`
//! against the test cluster (`eval "$(scripts/services --kubernetes)"` exports
//! `DRYDOCK_TEST_KUBECONFIG`), the GitHub stand-in, and the scripted agent. Each test works in a
//! namespace of its own, deleted afterwards.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use drydock_sandbox::Reap;
use drydock_tests::TestDb;
use drydock_tests::kubernetes::TestNamespace;
use drydock_tests::tasks::{TaskEnv, git_in, sandbox_image};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_kubernetes_pushes_a_branch_opens_a_pr_and_a_restart_reaps_only_its_pods_on_sqlite()
 {
    a_task_on_kubernetes_pushes_a_branch_opens_a_pr_and_a_restart_reaps_only_its_pods(
        TestDb::sqlite().await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_kubernetes_pushes_a_branch_opens_a_pr_and_a_restart_reaps_only_its_pods_on_postgres()
 {
    a_task_on_kubernetes_pushes_a_branch_opens_a_pr_and_a_restart_reaps_only_its_pods(
        TestDb::postgres().await,
    )
    .await;
}

/// Without a warm pool: the task's pod is created for it.
async fn a_task_on_kubernetes_pushes_a_branch_opens_a_pr_and_a_restart_reaps_only_its_pods(
    db: TestDb,
) {
    let ns = TestNamespace::create("dd-e2e").await;
    let kind = if db.url.starts_with("sqlite") {
        "sqlite"
    } else {
        "pg"
    };
    let instance = format!("k8s-e2e-{kind}-{}", std::process::id());
    let mut settings = ns.server_settings();
    settings.extend([
        "--instance-id".to_owned(),
        instance.clone(),
        "--warm-pool".to_owned(),
        "0".to_owned(),
        "--admins".to_owned(),
        "alice".to_owned(),
    ]);
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let url = db.url.clone();
    let env = TaskEnv::start(db, &settings).await;
    // Ready for a load balancer: the database and the API server answer (no Docker is asked),
    // and the image is said to be unchecked: the nodes pull it, out of drydock's sight.
    let ready = reqwest::get(env.app.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "status": "ready", "sandbox_image": "not_checked" })
    );
    // The image banner and the operator's checks say the same: the backend is Kubernetes (its
    // namespace, its rights), not the Docker host the machine may also have.
    let image = env.get_json("/api/sandbox-image").await;
    assert_eq!(image["state"], "not_checked", "{image}");
    let admin = env.get_page("/admin").await;
    assert!(
        admin.contains("<dt>Kubernetes</dt>")
            && admin.contains(&format!("namespace {}", ns.name))
            && admin.contains("grants every right drydock needs")
            && !admin.contains("<dt>Docker</dt>"),
        "{admin}"
    );
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
    let other = format!("{instance}-another-instance");
    let theirs = ns.sandboxes(&sandbox_image(), &other).await;
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
        Some(other.as_str())
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

/// The pod a task ran in, from its log line `ran in <hostname>` (a pod's hostname is its name).
fn ran_in(log: &[String]) -> Option<String> {
    log.iter()
        .find_map(|l| l.split("ran in ").nth(1))
        .map(|s| s.trim().to_owned())
}

/// The pooled pods of `instance` in `ns` (pool label, no task label), running, oldest first.
async fn pooled_pods(ns: &TestNamespace, instance: &str) -> Vec<Pod> {
    let mut pods: Vec<Pod> = ns
        .pods()
        .list(&ListParams::default().labels(&format!("drydock.instance={instance},drydock.pool")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .collect();
    pods.sort_by_key(|p| p.metadata.creation_timestamp.clone());
    pods
}

/// Waits for a running pooled pod of `instance` not named in `not`.
async fn wait_pooled(ns: &TestNamespace, instance: &str, not: &[&str]) -> Pod {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(pod) = pooled_pods(ns, instance)
            .await
            .into_iter()
            .find(|p| !not.contains(&p.metadata.name.as_deref().unwrap_or_default()))
        {
            return pod;
        }
        assert!(
            Instant::now() < deadline,
            "no pooled pod for {instance} (besides {not:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_kubernetes_takes_a_pooled_pod_the_pool_refills_and_a_restart_reaps_stale_ones() {
    let ns = TestNamespace::create("dd-pool").await;
    let instance = format!("k8s-pool-{}", std::process::id());
    let mut settings = ns.server_settings();
    settings.extend([
        "--instance-id".to_owned(),
        instance.clone(),
        "--warm-pool".to_owned(),
        "1".to_owned(),
    ]);
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let db = TestDb::sqlite().await;
    let url = db.url.clone();
    let env = TaskEnv::start(db, &settings).await;

    // A pod made ahead of any task: the pool's label, no task's, the pool's long deadline.
    let warm = wait_pooled(&ns, &instance, &[]).await;
    let warm_name = warm.metadata.name.clone().unwrap();
    let labels = warm.metadata.labels.clone().unwrap_or_default();
    assert!(!labels.contains_key("drydock.task"), "{labels:?}");
    let pool_deadline = warm
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .unwrap();
    let env_of_pod = warm.spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap_or_default();
    assert!(
        env_of_pod
            .iter()
            .all(|e| !e.name.contains("KEY") && !e.name.contains("TOKEN")),
        "a pooled pod holds no secret: {env_of_pod:?}"
    );
    let submitted = chrono::Utc::now();
    assert!(
        warm.metadata
            .creation_timestamp
            .as_ref()
            .unwrap()
            .0
            .as_second()
            <= submitted.timestamp()
    );

    // The agent says where it runs, then waits for the test to look at its pod.
    let id = env
        .submit(
            "echo \"ran in $(hostname)\"; for i in $(seq 600); do [ -f /tmp/go ] && break; sleep 0.2; done; printf 'pooled\\n' >> README.md",
            json!({ "create_pr": false }),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let ran = loop {
        if let Some(pod) = ran_in(&env.log(&id).await) {
            break pod;
        }
        assert!(Instant::now() < deadline, "the agent never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        ran, warm_name,
        "the task runs in the pod made before it was submitted"
    );
    let claimed = ns.pods().get(&warm_name).await.unwrap();
    let labels = claimed.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("drydock.task"), Some(&id), "{labels:?}");
    assert!(!labels.contains_key("drydock.pool"), "{labels:?}");
    let task_deadline = claimed
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .unwrap();
    assert!(
        task_deadline < pool_deadline,
        "the task's deadline ({task_deadline} s) is lower than the pool's ({pool_deadline} s)"
    );
    // Let the agent finish.
    let ours = ns.sandboxes(&sandbox_image(), &instance).await;
    let pod = ours.get(&warm_name).await.unwrap();
    let mut touch = pod
        .exec(&drydock_sandbox::ExecSpec::new(["touch", "/tmp/go"]))
        .await
        .unwrap();
    while touch.next().await.is_some() {}
    assert!(touch.exit().await.unwrap().success());
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");

    // The pool refills with a pod made after the task was submitted; the claimed one is gone.
    let refill = wait_pooled(&ns, &instance, &[&warm_name]).await;
    assert!(
        refill
            .metadata
            .creation_timestamp
            .as_ref()
            .unwrap()
            .0
            .as_second()
            >= submitted.timestamp()
    );
    assert!(
        ns.pods()
            .get_opt(&warm_name)
            .await
            .unwrap()
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
    );

    // A pooled pod a crashed process of this instance left behind is reaped at restart.
    let drydock_tests::App { server, db, gh } = env.app;
    server.stop().await.unwrap();
    let stale = ours
        .create_pooled(&ours.spec("any").shape(), Duration::from_secs(600))
        .await
        .unwrap();
    let mut restart = gh.settings();
    restart.extend(settings.iter().map(|s| (*s).to_owned()));
    let restarted = drydock_tests::TestServer::start_with(&url, restart).await;
    assert!(
        ns.pods()
            .get_opt(stale.id())
            .await
            .unwrap()
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
        "the restarted server reaps the stale pooled pod"
    );
    restarted.stop().await.unwrap();
    ours.reap(Reap::All).await.unwrap();
    drop(db);
}

/// Waits (bounded) until `check` holds: RBAC changes take a moment to reach the authorizer.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// drydock as an operator without Helm runs it: the service account and Role of
/// `deploy/kubernetes/rbac.yaml`, a warm pool. Without `patch pods` start-up refuses naming it;
/// with the manifest as shipped a task claims a pooled pod; rights taken away make `/readyz`
/// answer 503 naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_plain_rbac_manifest_a_pooled_task_runs_and_missing_rights_are_named() {
    let ns = TestNamespace::create("dd-rbac").await;
    ns.apply_rbac_manifest(|text| text.replace(r#""delete", "patch"]"#, r#""delete"]"#));
    let kubeconfig = ns.service_account_kubeconfig("drydock").await;
    eventually("the Role reaches the authorizer", || {
        ns.can("drydock", "create", "pods")
    })
    .await;
    let mut settings = ns.server_settings_with(kubeconfig.path());
    settings.extend(["--warm-pool".to_owned(), "1".to_owned()]);

    // Without `patch pods` a warm pool cannot claim: start-up refuses, naming the right.
    let data = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite().await;
    let mut args = vec![
        "drydock".to_owned(),
        "--data-dir".to_owned(),
        data.path().display().to_string(),
        "--database-url".to_owned(),
        db.url.clone(),
        "--sandbox-image".to_owned(),
        sandbox_image(),
    ];
    args.extend(settings.iter().cloned());
    let config = drydock::config::Config::parse_from_args(args).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(60),
        drydock::run(config, listener, std::future::pending()),
    )
    .await
    .expect("start-up refuses within a minute")
    .expect_err("no patch pods");
    let message = format!("{refused:#}");
    assert!(
        message.contains("lack rights drydock needs")
            && message.contains(&format!("namespace {:?}: patch pods;", ns.name)),
        "{message}"
    );

    // The manifest as shipped: a task takes a pooled pod (relabelled with `patch pods`).
    ns.apply_rbac_manifest(|text| text);
    eventually("patch reaches the authorizer", || {
        ns.can("drydock", "patch", "pods")
    })
    .await;
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let env = TaskEnv::start(db, &settings).await;
    let instance = env.app.server.instance_id.clone();
    let warm = wait_pooled(&ns, &instance, &[]).await;
    let id = env
        .submit("echo \"ran in $(hostname)\"", json!({ "create_pr": false }))
        .await;
    let task = env.wait_done(&id).await;
    let log = env.log(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{log:#?}");
    assert_eq!(ran_in(&log), warm.metadata.name, "{log:#?}");
    let ready = reqwest::get(env.app.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK);

    // Rights taken away while it runs: /readyz answers 503 naming them.
    let (ok, out) = ns.kubectl(
        &["-n", &ns.name, "delete", "rolebinding", "drydock-sandboxes"],
        "",
    );
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let body: serde_json::Value = loop {
        let answer = reqwest::get(env.app.url("/readyz")).await.unwrap();
        if answer.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            break answer.json().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stays 200 without the rights"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("lack rights drydock needs")
            && message.contains("create pods")
            && message.contains("patch pods")
            && message.contains("create pods/exec"),
        "{body}"
    );
}

const REPLICA_BIN: &str = env!("CARGO_BIN_EXE_drydock-replica");

/// kill -9 of the replica following an agent in a pod: the other replica adopts the turn,
/// follows the same agent in the same pod from where the log stops (what the agent printed after
/// the kill included), and the task succeeds with its work pushed; no pod of the task is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_agent_in_a_pod_is_followed_by_the_other_and_the_turn_succeeds() {
    let ns = TestNamespace::create("dd-reattach").await;
    let mut settings = ns.server_settings();
    settings.extend(["--lease-secs", "6", "--warm-pool", "0"].map(str::to_owned));
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let mut c = drydock_tests::replicas::Cluster::start(REPLICA_BIN, 2, &settings).await;
    let script = "echo before-1; echo before-2; while [ ! -f /tmp/go-on ]; do sleep 0.2; done; \
                  echo after-1; echo after-2; echo adopted > adopted.txt";
    let id = c.submit(c.a(), script).await;
    let drydock_tests::replicas::RunningAgent {
        owner,
        survivor,
        sandbox: pod,
    } = c.running_agent(&id, "before-2").await;

    c.kill_9(&owner);
    // The agent goes on in its pod while nobody follows it.
    let (ok, out) = ns.kubectl(
        &["-n", &ns.name, "exec", &pod, "--", "touch", "/tmp/go-on"],
        "",
    );
    assert!(ok, "{out}");
    let ended = c.wait_ended(&id).await;
    let log = c.log(&id).await;
    assert_eq!(ended.status, "succeeded", "{ended:?}\n{log:?}");
    assert_eq!(ended.runner_id.as_deref(), Some(survivor.as_str()));
    let agent: Vec<&String> = log
        .iter()
        .filter(|t| t.starts_with("before-") || t.starts_with("after-"))
        .collect();
    assert_eq!(
        agent,
        ["before-1", "before-2", "after-1", "after-2"],
        "{log:?}"
    );
    let branch = ended.branch.clone().unwrap();
    let (ok, adopted) = git_in(
        &c.gh.repo_path("alice", "demo"),
        &["show", &format!("{branch}:adopted.txt")],
    );
    assert!(ok && adopted == "adopted\n", "{adopted}");
    // A deleted pod is listed until its grace period is over.
    let started = Instant::now();
    loop {
        let pods = ns
            .pods()
            .list(&ListParams::default().labels(&format!("{}={id}", drydock_sandbox::LABEL_TASK)))
            .await
            .unwrap();
        if pods.items.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no pod of the task is left: {:?}",
            pods.items
                .iter()
                .map(|p| p.metadata.name.clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
