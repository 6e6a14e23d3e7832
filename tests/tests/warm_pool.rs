//! The warm pool: sandboxes started ahead of tasks (`DRYDOCK_WARM_POOL`), taken by tasks,
//! refilled, replaced when the image changes, holding nothing of any task, and never left behind.
//! Real Docker; the sandbox a task ran in is told by its hostname (Docker's short container id).

use std::time::{Duration, Instant};

use drydock_tests::TestDb;
use drydock_tests::tasks::{
    ACME_KEY, TaskEnv, containers_of, docker_ps, sandbox_image, warm_sandboxes,
};
use futures::StreamExt as _;
use serde_json::json;

/// Waits until server `instance` has a warm sandbox not in `not`, and answers its id.
async fn wait_warm(instance: &str, not: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(id) = warm_sandboxes(instance)
            .into_iter()
            .find(|id| !not.contains(&id.as_str()))
        {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "no warm sandbox for {instance} (besides {not:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `docker inspect -f FORMAT id`, trimmed; `None` when the container is gone.
fn inspect(id: &str, format: &str) -> Option<String> {
    let out = std::process::Command::new("docker")
        .args(["inspect", "-f", format, id])
        .output()
        .expect("docker inspect");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// When Docker created the container.
fn created(id: &str) -> chrono::DateTime<chrono::Utc> {
    let text = inspect(id, "{{.Created}}").expect("container exists");
    chrono::DateTime::parse_from_rfc3339(&text)
        .expect("an RFC 3339 time")
        .to_utc()
}

/// The script of a task that says which container it runs in.
const SAY_WHERE: &str = "echo \"ran in $(cat /etc/hostname)\"; echo done > done.txt";

async fn a_task_takes_a_warm_sandbox(db: TestDb, extra: &[&str]) {
    let env = TaskEnv::start(db, extra).await;
    let instance = env.app.server.instance_id.clone();
    let warm = wait_warm(&instance, &[]).await;
    let submitted = chrono::Utc::now();
    assert!(created(&warm) < submitted);
    assert_eq!(
        inspect(&warm, "{{index .Config.Labels \"drydock.task\"}}").as_deref(),
        Some(""),
        "a warm sandbox belongs to no task"
    );

    let id = env.submit(SAY_WHERE, json!({})).await;
    let task = env.wait_done(&id).await;
    let log = env.log(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{log:#?}");
    let ran_in = format!("agent: ran in {}", &warm[..12]);
    assert!(
        log.contains(&ran_in),
        "the task ran in the warm sandbox made before it was submitted ({warm}):\n{log:#?}"
    );

    // The pool refilled with a sandbox made after the task was submitted, and the one the task
    // took went with the task.
    let refill = wait_warm(&instance, &[&warm]).await;
    assert!(created(&refill) > submitted);
    assert_eq!(
        inspect(&warm, "{{.Id}}"),
        None,
        "the taken sandbox is removed"
    );
    assert!(containers_of(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_takes_a_warm_sandbox_and_the_pool_refills_on_sqlite() {
    a_task_takes_a_warm_sandbox(TestDb::sqlite().await, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_takes_a_warm_sandbox_and_the_pool_refills_on_postgres() {
    a_task_takes_a_warm_sandbox(TestDb::postgres().await, &[]).await;
}

/// Starting a sandbox takes both cores of a small machine for a moment: the pool refills once
/// live output has gone quiet, not while a task streams lines. The task here prints a line every
/// 10 ms for 6 s (the refill would otherwise come 2 s after the take), then nothing for 4 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_refills_when_live_output_goes_quiet() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let instance = env.app.server.instance_id.clone();
    let warm = wait_warm(&instance, &[]).await;
    let id = env
        .submit(
            "echo \"ran in $(cat /etc/hostname)\"; \
             end=$(( $(date +%s) + 6 )); \
             while [ \"$(date +%s)\" -lt \"$end\" ]; do echo \"busy $(date +%s%N)\"; sleep 0.01; done; \
             echo \"quiet from $(date +%s%N)\"; sleep 4; echo done > done.txt",
            json!({}),
        )
        .await;
    let task = env.wait_done(&id).await;
    let log = env.log(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{log:#?}");
    assert!(
        log.contains(&format!("agent: ran in {}", &warm[..12])),
        "the task took the warm sandbox:\n{log:#?}"
    );
    let quiet_from: i64 = log
        .iter()
        .find_map(|line| line.strip_prefix("agent: quiet from "))
        .and_then(|ns| ns.trim().parse().ok())
        .unwrap_or_else(|| panic!("the task says when its output went quiet:\n{log:#?}"));
    let quiet_from = chrono::DateTime::from_timestamp_nanos(quiet_from);
    let busy = log.iter().filter(|l| l.starts_with("agent: busy ")).count();
    assert!(busy > 10, "the task streamed lines first ({busy})");
    let refill = wait_warm(&instance, &[&warm]).await;
    assert!(
        created(&refill) > quiet_from,
        "the pool refilled at {} while the task streamed lines (until {quiet_from})",
        created(&refill)
    );
}

/// Under the operator's default network policy (a sandbox with no network and the proxy
/// variables), the sandbox kept warm is of that shape, so the first task takes it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_under_the_default_network_policy_takes_a_warm_sandbox() {
    a_task_takes_a_warm_sandbox(TestDb::sqlite().await, &["--network-policy", "allowlist"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_sandbox_holds_no_secret_task_env_or_task_file() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let instance = env.app.server.instance_id.clone();
    let first = wait_warm(&instance, &[]).await;
    // A task that leaves its key and work in every place it can write.
    let id = env
        .submit(
            "echo \"$ACME_API_KEY\" > /tmp/key; echo \"$ACME_API_KEY\" > ~/key; echo work > work.txt",
            json!({}),
        )
        .await;
    assert_eq!(env.wait_done(&id).await["status"], "succeeded");
    let warm = wait_warm(&instance, &[&first]).await;

    // Its environment is the image's own, nothing more.
    let env_of_image = std::process::Command::new("docker")
        .args([
            "image",
            "inspect",
            "-f",
            "{{json .Config.Env}}",
            &sandbox_image(),
        ])
        .output()
        .expect("docker image inspect");
    assert_eq!(
        inspect(&warm, "{{json .Config.Env}}").expect("warm sandbox"),
        String::from_utf8_lossy(&env_of_image.stdout).trim()
    );
    // No file of the task, and the key nowhere it could have been written.
    let out = std::process::Command::new("docker")
        .args(["exec", &warm, "sh", "-c"])
        .arg(format!(
            "ls -A /workspace; grep -rlF '{}' /workspace /home /tmp 2>/dev/null; true",
            &ACME_KEY[..16]
        ))
        .output()
        .expect("docker exec");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "nothing of a task"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_of_0_starts_no_sandbox_ahead_of_tasks() {
    let env = TaskEnv::start(TestDb::sqlite().await, &["--warm-pool", "0"]).await;
    let instance = env.app.server.instance_id.clone();
    let id = env.submit("sleep 2; echo done > done.txt", json!({})).await;
    env.wait_for(&id, "a sandbox", |_| !containers_of(&id).is_empty())
        .await;
    let task = env.wait_done(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    // Give a pool (if one ran) the time to refill.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let of_instance = docker_ps(&[
        "--filter",
        &format!("label=drydock.instance={instance}"),
        "--format",
        "{{.ID}}",
    ]);
    assert!(of_instance.is_empty(), "{of_instance:?}");
}

/// A throwaway image tag for one test, removed (with the images it named) when dropped.
struct TestImage {
    tag: String,
    ids: Vec<String>,
}

impl TestImage {
    fn new() -> Self {
        Self {
            tag: format!(
                "drydock-pool-test:{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
            ids: Vec::new(),
        }
    }

    /// (Re)builds the tag as the sandbox image plus a label, so each build is a new image id.
    fn build(&mut self, generation: u32) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("docker")
            .args(["build", "-q", "-t", &self.tag, "-"])
            .env("DOCKER_BUILDKIT", "0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("docker build");
        let dockerfile = format!(
            "FROM {}\nLABEL drydock.test.generation={generation}\n",
            sandbox_image()
        );
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(dockerfile.as_bytes())
            .expect("write the Dockerfile");
        let out = child.wait_with_output().expect("docker build");
        assert!(out.status.success(), "docker build failed");
        let id = inspect_image_id(&self.tag);
        self.ids.push(id.clone());
        id
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
        for id in &self.ids {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", id])
                .output();
        }
    }
}

fn inspect_image_id(image: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", image])
        .output()
        .expect("docker image inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_built_again_replaces_the_warm_sandboxes() {
    let mut image = TestImage::new();
    let old = image.build(1);
    let env = TaskEnv::start_with_image(TestDb::sqlite().await, Some(&image.tag), &[]).await;
    let instance = env.app.server.instance_id.clone();
    let stale = wait_warm(&instance, &[]).await;
    assert_eq!(inspect(&stale, "{{.Image}}"), Some(old.clone()));

    let new = image.build(2);
    assert_ne!(old, new);
    let fresh = wait_warm(&instance, &[&stale]).await;
    assert_eq!(inspect(&fresh, "{{.Image}}"), Some(new), "on the new image");
    let deadline = Instant::now() + Duration::from_secs(60);
    while inspect(&stale, "{{.Id}}").is_some() {
        assert!(Instant::now() < deadline, "the stale warm sandbox stays");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A task runs on the new image, in the fresh warm sandbox.
    let id = env.submit(SAY_WHERE, json!({})).await;
    let task = env.wait_done(&id).await;
    let log = env.log(&id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let ran_in = format!("agent: ran in {}", &fresh[..12]);
    assert!(log.contains(&ran_in), "{log:#?}");
    env.app.server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_leaves_no_container_behind() {
    let env = TaskEnv::start(TestDb::sqlite().await, &[]).await;
    let instance = env.app.server.instance_id.clone();
    let warm = wait_warm(&instance, &[]).await;
    let id = env.submit(SAY_WHERE, json!({})).await;
    assert_eq!(env.wait_done(&id).await["status"], "succeeded");
    wait_warm(&instance, &[&warm]).await;
    env.app.server.stop().await.expect("clean stop");
    let left = docker_ps(&[
        "--filter",
        &format!("label=drydock.instance={instance}"),
        "--format",
        "{{.ID}} {{.Names}}",
    ]);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A test server dropped without `stop` while its pool is still starting sandboxes (as when a
/// test returns or panics): by the time the drop is over nothing of the server is left in
/// Docker, and nothing appears later either, once the test's runtime has ended.
#[test]
fn a_server_dropped_while_its_pool_starts_a_sandbox_leaves_no_container() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let of_instance = |instance: &str| {
        docker_ps(&[
            "--filter",
            &format!("label=drydock.instance={instance}"),
            "--format",
            "{{.ID}} {{.Names}} {{.State}}",
        ])
    };
    let remove = |left: &[String]| {
        let ids: Vec<&str> = left
            .iter()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    };
    let instance = runtime.block_on(async {
        // A pool of 4 is filled one sandbox after another: once the first is there, the next
        // is being created.
        let env = TaskEnv::start(TestDb::sqlite().await, &["--warm-pool", "4"]).await;
        let instance = env.app.server.instance_id.clone();
        wait_warm(&instance, &[]).await;
        // A client still connected with a request under way (a browser, a stream), which the
        // server's shutdown waits for up to its grace period; meanwhile the pool goes on.
        let body = futures::stream::once(async { Ok::<_, std::io::Error>("{\"prompt\": ") })
            .chain(futures::stream::pending());
        let upload = env
            .alice
            .post(env.app.url("/api/tasks"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(body))
            .send();
        let client = tokio::spawn(upload);
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(env.app.server);
        let left = of_instance(&instance);
        if !left.is_empty() {
            remove(&left);
            panic!("left behind when the dropped server was gone: {left:?}");
        }
        client.abort();
        instance
    });
    drop(runtime);
    // Whatever Docker was asked before the runtime ended, it finishes within moments.
    for _ in 0..25 {
        let left = of_instance(&instance);
        if !left.is_empty() {
            remove(&left);
            panic!("left behind after the test's runtime ended: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
