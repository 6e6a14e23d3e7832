//! Tasks on Kubernetes end to end: the real server with `DRYDOCK_SANDBOX_BACKEND=kubernetes`
//! against the test cluster (`eval "$(scripts/services --kubernetes)"` exports
//! `DRYDOCK_TEST_KUBECONFIG`), the GitHub stand-in, and the scripted agent. Each test works in a
//! namespace of its own, deleted afterwards.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;

use drydock_sandbox::{KubernetesOptions, NetworkMode, Reap, SandboxDefaults, Sandboxes};
use drydock_tests::TestDb;
use drydock_tests::tasks::{TaskEnv, git_in, sandbox_image};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use serde_json::json;

fn kubeconfig() -> PathBuf {
    match std::env::var("DRYDOCK_TEST_KUBECONFIG") {
        Ok(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!(
            "DRYDOCK_TEST_KUBECONFIG is not set. Start the test cluster with \
             `eval \"$(scripts/services --kubernetes)\"`; it exports the admin kubeconfig path"
        ),
    }
}

/// A namespace that is deleted when dropped.
struct TestNamespace {
    name: String,
    admin: kube::Client,
}

impl TestNamespace {
    async fn create(prefix: &str) -> Self {
        let file = kube::config::Kubeconfig::read_from(kubeconfig()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
            .await
            .unwrap();
        let admin = kube::Client::try_from(config).unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("{prefix}-{}-{:x}", std::process::id(), nanos % (1 << 40));
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        kube::Api::<Namespace>::all(admin.clone())
            .create(&Default::default(), &ns)
            .await
            .unwrap();
        TestNamespace { name, admin }
    }

    fn pods(&self) -> kube::Api<Pod> {
        kube::Api::namespaced(self.admin.clone(), &self.name)
    }

    /// The sandboxes of `instance` in this namespace, through the sandbox crate.
    async fn sandboxes(&self, instance: &str) -> Sandboxes {
        let mut defaults = SandboxDefaults::new(sandbox_image(), instance);
        defaults.network = NetworkMode::None;
        let mut options = KubernetesOptions::new(self.name.clone());
        options.kubeconfig = Some(kubeconfig());
        Sandboxes::connect_kubernetes(defaults, options)
            .await
            .unwrap()
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let (name, admin) = (self.name.clone(), self.admin.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let _ = kube::Api::<Namespace>::all(admin)
                        .delete(&name, &Default::default())
                        .await;
                });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_kubernetes_pushes_a_branch_opens_a_pr_and_a_restart_reaps_only_its_pods() {
    let ns = TestNamespace::create("dd-e2e").await;
    let kubeconfig = kubeconfig();
    let instance = format!("k8s-e2e-{}", std::process::id());
    let settings = [
        "--sandbox-backend",
        "kubernetes",
        "--kubernetes-namespace",
        ns.name.as_str(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--instance-id",
        instance.as_str(),
    ];
    let db = TestDb::sqlite().await;
    let url = db.url.clone();
    let env = TaskEnv::start(db, &settings).await;
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
    let ours = ns.sandboxes(&instance).await;
    assert!(ours.list(&[]).await.unwrap().is_empty());

    // A pod this instance left behind (a crash), and another instance's pod.
    let stale = ours.create(ours.spec("crashed-task")).await.unwrap();
    let theirs = ns.sandboxes("k8s-e2e-another-instance").await;
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
