//! The Kubernetes backend: each sandbox a Pod in one namespace, reached through kube-rs.
//!
//! What maps from the Docker backend, and how:
//! - The container becomes a Pod with one container (`sandbox`) running `sleep <deadline>`,
//!   `restartPolicy: Never`, `activeDeadlineSeconds` as the hard deadline the kubelet enforces
//!   even while drydock is down, the drydock labels, and the hardening of
//!   [`pod_for`]: uid/gid from the spec with `runAsNonRoot`, every capability dropped, no
//!   privilege escalation, `RuntimeDefault` seccomp, no service-account token, no service links,
//!   memory and CPU limits. `shareProcessNamespace` puts the pause process at PID 1, which reaps
//!   orphans as Docker's `--init` does. A pod-level pids limit is a kubelet setting
//!   (`--pod-max-pids`), not part of the pod: the operator sets it on the nodes.
//! - [`NetworkMode::None`] becomes a default-deny NetworkPolicy (ingress and egress) selecting
//!   the pod alone: execs are then the only way in or out (the egress relay and port relay are
//!   execs). It is enforced only where the cluster's CNI enforces NetworkPolicy (Calico, Cilium,
//!   Antrea, kube-router, Weave; not flannel or the plain `bridge` plugin).
//! - Exec goes over the API server's WebSocket exec (`v4.channel.k8s.io` on 1.20). Kubernetes
//!   exec cannot set a user, working directory or environment, and before 1.29 cannot half-close
//!   stdin. So every exec attaches stdin and is started as `sh -c PROLOGUE`: the prologue reads
//!   one length-prefixed block from stdin holding `cd` and `export` lines (secrets travel inside
//!   the WebSocket, never in the exec URL, which API servers log), evaluates it, and `exec`s the
//!   command. An exec that wants stdin gets it through [`STDIN_WRAPPER`]: the caller's bytes are
//!   sent as `<decimal length>\n<bytes>` frames, and a `0\n` frame is end-of-file.
//! - Upload is `tar -x` in an exec fed through that stdin; bundle export and the relays are
//!   ordinary execs.
//! - Stop and kill delete the pod (with the grace period, or none): a pod cannot be stopped and
//!   kept. Reaping lists pods by the instance label.
//! - The warm pool: a pooled pod carries the pool label instead of a task label, and no task
//!   data. A task claims it with one merge patch (so the Role needs `patch pods` when the pool is
//!   on): the task and deadline labels set, the pool label removed, and `activeDeadlineSeconds`
//!   lowered to the time the pod has run plus the task's deadline (a running pod's deadline may
//!   only be lowered, so pooled pods are created with the pool's maximum age plus the longest
//!   task deadline). A tag's image id is out of drydock's sight (the nodes resolve it), so a
//!   pooled pod's "image id" is the image reference it was created with.
//! - Not on Kubernetes (each a [`SandboxError::Unsupported`] naming the backend): `docker commit`
//!   snapshots and file-change lists, image builds and image listings (they need a registry
//!   drydock does not run).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::container::LogOutput;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, Pod, PodSecurityContext, PodSpec, ResourceRequirements,
    SeccompProfile, SecurityContext,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Status};
use kube::api::{
    Api, AttachParams, AttachedProcess, DeleteParams, ListParams, Patch, PatchParams, PostParams,
};
use tokio::io::{AsyncWrite, AsyncWriteExt, SimplexStream, WriteHalf};
use tracing::{debug, info, warn};

use crate::error::{Result, SandboxError, kube_status};
use crate::exec::{ExecHandle, ExecSpec, RawOutput};
use crate::sandbox::{ExitReason, Shared, unix_now};
use crate::spec::{
    LABEL_DEADLINE, LABEL_INSTANCE, LABEL_POOL, LABEL_TASK, NetworkMode, SandboxSpec,
};

/// The one container of a sandbox pod.
pub(crate) const CONTAINER: &str = "sandbox";
/// Label naming the pod itself, which its NetworkPolicy selects.
pub const LABEL_POD: &str = "drydock.pod";
/// How long a new pod may take to start running (scheduling, a local image, the sandbox).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the connection checks at start-up wait for the API server.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Buffer of each exec stream in kube-rs (its default is 1 KiB).
const EXEC_BUFFER: usize = 64 * 1024;

/// Run first in every exec, as `sh -c PROLOGUE drydock-exec <argv...>`: reads the
/// length-prefixed set-up block (`cd`, `export`) from stdin, runs it, then becomes the command.
pub(crate) const PROLOGUE: &str = r#"IFS= read -r n || exit 125; case "$n" in ''|*[!0-9]*) exit 125;; esac; eval "$(head -c "$n")"; exec "$@""#;

/// The Kubernetes form of the exec wrapper for an exec with stdin (see `exec.rs` for the
/// Docker one it mirrors): a de-framer in its own session turns `<len>\n<bytes>` frames from
/// the exec's stdin into a FIFO the command reads, and closes it at the `0\n` frame, so the
/// command sees end-of-file while the exec's output keeps flowing. `dd iflag=fullblock` reads
/// each frame whole before writing it, so when the command stops reading (it ended, or failed
/// early like `tar` into a missing directory) the de-framer stays in step and discards the
/// rest: input never backs up into the WebSocket, whose client would then stall. It ends at
/// the `0\n` frame or when the exec's stdin closes, after the command.
pub(crate) const STDIN_WRAPPER: &str = r#"mkfifo -m 600 "$0.in" || exit 125; exec 3<&0; setsid sh -c 'trap "" PIPE; o=1; while IFS= read -r n && [ "$n" -gt 0 ] 2>/dev/null; do if [ $o = 1 ]; then dd bs="$n" count=1 iflag=fullblock 2>/dev/null || o=0; else dd bs="$n" count=1 iflag=fullblock of=/dev/null 2>/dev/null; fi; done' <&3 >"$0.in" 2>/dev/null & setsid "$@" <"$0.in" 3<&- & p=$!; exec 3<&-; echo "$p" > "$0"; wait "$p"; r=$?; rm -f "$0" "$0.in"; exit $r"#;

/// Where and how the Kubernetes backend creates sandbox pods.
#[derive(Debug, Clone, Default)]
pub struct KubernetesOptions {
    /// A kubeconfig file; `None` uses the standard lookup (`KUBECONFIG`, `~/.kube/config`, then
    /// the in-cluster service account).
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The namespace sandbox pods live in (it must exist).
    pub namespace: String,
    /// `runtimeClassName` of every sandbox pod (gVisor's `runsc`, Kata, ...), when set.
    pub runtime_class: Option<String>,
    /// `nodeSelector` of every sandbox pod.
    pub node_selector: BTreeMap<String, String>,
    /// Whether a warm pool hands pre-started pods to tasks, which relabels them: then the
    /// start-up check asks for `patch pods` too.
    pub warm_pool: bool,
}

impl KubernetesOptions {
    /// Options for `namespace` with the standard kubeconfig lookup and no runtime class or
    /// node selector.
    pub fn new(namespace: impl Into<String>) -> Self {
        KubernetesOptions {
            namespace: namespace.into(),
            ..Default::default()
        }
    }

    /// Parses a node selector written `key=value,key=value` (spaces around items allowed);
    /// an empty string is no selector. Keys and values must be valid Kubernetes label keys and
    /// values (an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters:
    /// alphanumerics, `-`, `_`, `.`, beginning and ending alphanumeric; values the same name
    /// form or empty), and a key may appear once. Errors name the bad item or the repeated key.
    pub fn parse_node_selector(s: &str) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((k, v)) = item.split_once('=') else {
                return Err(SandboxError::Invalid(format!(
                    "node selector item {item:?} is not key=value"
                )));
            };
            let (k, v) = (k.trim(), v.trim());
            if !label_key_ok(k) {
                return Err(SandboxError::Invalid(format!(
                    "node selector key {k:?} is not a valid label key (an optional DNS-subdomain prefix and '/', then at most 63 of a-z A-Z 0-9 - _ ., beginning and ending with a letter or digit)"
                )));
            }
            if !v.is_empty() && !label_name_ok(v) {
                return Err(SandboxError::Invalid(format!(
                    "node selector value {v:?} of {k:?} is not a valid label value (at most 63 of a-z A-Z 0-9 - _ ., beginning and ending with a letter or digit)"
                )));
            }
            if out.insert(k.to_owned(), v.to_owned()).is_some() {
                return Err(SandboxError::Invalid(format!(
                    "node selector key {k:?} is given twice"
                )));
            }
        }
        Ok(out)
    }
}

/// A label name (or a label key's name part): 1 to 63 of `[A-Za-z0-9._-]`, beginning and
/// ending alphanumeric.
fn label_name_ok(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && alnum(s.chars().next())
        && alnum(s.chars().last())
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain (RFC 1123: at most 253 characters
/// of dot-separated lower-case labels).
fn label_key_ok(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let subdomain = |p: &str| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    };
    label_name_ok(name) && prefix.is_none_or(subdomain)
}

/// The rights drydock uses in its namespace, as (verb, API group, resource, subresource): what
/// the start-up check asks the API server about (README "Kubernetes", the chart's Role).
fn required_rights(
    warm_pool: bool,
) -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    let mut rights = vec![];
    let mut pods = vec!["create", "get", "list", "watch", "delete"];
    if warm_pool {
        pods.push("patch");
    }
    rights.extend(pods.into_iter().map(|v| (v, "", "pods", "")));
    rights.extend(["create", "get"].map(|v| (v, "", "pods", "exec")));
    rights.push(("get", "", "pods", "log"));
    rights.extend(
        ["create", "get", "list", "delete"]
            .map(|v| (v, "networking.k8s.io", "networkpolicies", "")),
    );
    rights
}

/// Where the standard lookup finds a configuration, for a message when it found none:
/// `KUBECONFIG`, `~/.kube/config`, and the in-cluster service account.
fn places_looked_at() -> String {
    let mut looked = Vec::new();
    match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(v) => looked.push(format!("KUBECONFIG={}", v.to_string_lossy())),
        None => looked.push("KUBECONFIG (unset)".to_owned()),
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => {
            let path = std::path::Path::new(&home).join(".kube/config");
            let there = if path.exists() { "present" } else { "missing" };
            looked.push(format!("{} ({there})", path.display()));
        }
        None => looked.push("~/.kube/config (HOME unset)".to_owned()),
    }
    let token = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    let host = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    looked.push(format!(
        "the in-cluster service account (KUBERNETES_SERVICE_HOST {}, {token} {})",
        if host { "set" } else { "unset" },
        if std::path::Path::new(token).exists() {
            "present"
        } else {
            "missing"
        }
    ));
    looked.join(", ")
}

/// A connection to one namespace of a cluster.
pub(crate) struct Cluster {
    pub(crate) client: kube::Client,
    pub(crate) pods: Api<Pod>,
    pub(crate) policies: Api<NetworkPolicy>,
    pub(crate) options: KubernetesOptions,
    /// The API server's URL, for messages.
    pub(crate) server: String,
}

impl Cluster {
    /// Loads the configuration, then checks that the API server answers, that it grants every
    /// right drydock uses in the namespace (one SelfSubjectAccessReview each, `patch pods` only
    /// with a warm pool), and that a sandbox pod may be created there (a server-side dry run,
    /// which finds a missing namespace or RuntimeClass), so a wrong setting fails at start-up
    /// with a message saying which. Errors: [`SandboxError::NoClusterConfig`],
    /// [`SandboxError::Kubeconfig`], [`SandboxError::ClusterUnavailable`],
    /// [`SandboxError::MissingRights`], [`SandboxError::NamespaceMissing`],
    /// [`SandboxError::RuntimeClassMissing`].
    pub(crate) async fn connect(options: KubernetesOptions) -> Result<Cluster> {
        let where_ = options
            .kubeconfig
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "KUBECONFIG or the in-cluster configuration".to_owned());
        let unavailable = |server: &str, detail: String| SandboxError::ClusterUnavailable {
            server: server.to_owned(),
            detail,
        };
        let unusable = |e: String| SandboxError::Kubeconfig {
            path: where_.clone(),
            detail: e,
        };
        let config = match &options.kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| unusable(e.to_string()))?;
                kube::Config::from_custom_kubeconfig(file, &Default::default())
                    .await
                    .map_err(|e| unusable(e.to_string()))?
            }
            None => kube::Config::infer().await.map_err(|e| {
                let looked = places_looked_at();
                // A file that is there but unusable is worth naming as such.
                if looked.contains("=") || looked.contains("(present)") {
                    unusable(format!("{e} (looked at {looked})"))
                } else {
                    SandboxError::NoClusterConfig { looked }
                }
            })?,
        };
        let server = config.cluster_url.to_string();
        let client =
            kube::Client::try_from(config).map_err(|e| unavailable(&server, e.to_string()))?;
        let version = tokio::time::timeout(PING_TIMEOUT, client.apiserver_version())
            .await
            .map_err(|_| unavailable(&server, "no answer within 5 s".into()))?
            .map_err(|e| match kube_status(&e) {
                // It answered: the credentials are what is wrong.
                Some(401) => unusable(format!(
                    "the API server {server} refused its credentials (401 Unauthorized): the \
                     token or client certificate is wrong or expired; make a new one for the \
                     service account (see deploy/kubernetes/rbac.yaml)"
                )),
                _ => unavailable(&server, e.to_string()),
            })?;
        let ns = options.namespace.clone();
        let cluster = Cluster {
            pods: Api::namespaced(client.clone(), &ns),
            policies: Api::namespaced(client.clone(), &ns),
            client,
            options,
            server,
        };
        cluster.check_rights().await?;
        // Listing in a namespace that does not exist succeeds (empty), so creation is what
        // tells a missing namespace (or RuntimeClass) apart; a dry run creates nothing.
        let probe = SandboxSpec {
            task_id: "startup-check".into(),
            image: "drydock-startup-check".into(),
            env: Vec::new(),
            labels: BTreeMap::new(),
            network: NetworkMode::Bridge,
            limits: Default::default(),
            deadline: Duration::from_secs(60),
            uid: 1000,
            gid: 1000,
            workdir: "/".into(),
        };
        let pod = cluster.pod_for(
            "drydock-startup-check",
            &probe,
            BTreeMap::new(),
            60,
            Duration::ZERO,
        );
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        cluster
            .create_retrying(&dry, &pod)
            .await
            .map_err(|e| cluster.explain("create pods", e))?;
        info!(server = %cluster.server, namespace = %ns, version = %version.git_version, "connected to Kubernetes");
        Ok(cluster)
    }

    /// Asks the API server, with one SelfSubjectAccessReview per right, whether these
    /// credentials may do everything drydock does in the namespace; the error names each
    /// right refused.
    pub(crate) async fn check_rights(&self) -> Result<()> {
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        };
        let reviews: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let rights = required_rights(self.options.warm_pool);
        let asks = rights.iter().map(|(verb, group, resource, sub)| {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        namespace: Some(self.namespace().to_owned()),
                        verb: Some((*verb).to_owned()),
                        group: Some((*group).to_owned()),
                        resource: Some((*resource).to_owned()),
                        subresource: (!sub.is_empty()).then(|| (*sub).to_owned()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let reviews = reviews.clone();
            async move { reviews.create(&PostParams::default(), &review).await }
        });
        let answers = futures::future::join_all(asks).await;
        let mut missing = Vec::new();
        for ((verb, _, resource, sub), answer) in rights.iter().zip(answers) {
            let allowed = answer
                .map_err(|e| self.explain("create selfsubjectaccessreviews", e))?
                .status
                .is_some_and(|s| s.allowed);
            if !allowed {
                let what = if sub.is_empty() {
                    (*resource).to_owned()
                } else {
                    format!("{resource}/{sub}")
                };
                missing.push(format!("{verb} {what}"));
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(SandboxError::MissingRights {
                namespace: self.namespace().to_owned(),
                missing,
            })
        }
    }

    /// Hands pooled pod `name` to task `task_id` for `deadline` from now: one merge patch sets
    /// the task and deadline labels, removes the pool label and lowers `activeDeadlineSeconds`
    /// to the seconds the pod has run plus `deadline` (never raises it: the API server refuses
    /// that on a running pod). The patch carries the pod's resourceVersion, so a pod changed
    /// meanwhile is not claimed. Returns the new deadline, unix seconds.
    pub(crate) async fn claim(&self, name: &str, task_id: &str, deadline: Duration) -> Result<u64> {
        let pod = self
            .pod(name)
            .await?
            .ok_or_else(|| SandboxError::NotFound(name.to_owned()))?;
        if !running(&pod) {
            return Err(SandboxError::NotFound(name.to_owned()));
        }
        let now = unix_now();
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.as_second().max(0) as u64)
            .unwrap_or(now)
            .min(now);
        let old = pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
            .unwrap_or(i64::MAX)
            .max(1) as u64;
        let seconds = ((now - started) + deadline.as_secs().max(1)).min(old);
        let until = started + seconds;
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": pod.metadata.resource_version,
                "labels": {
                    LABEL_TASK: task_id,
                    LABEL_POOL: null,
                    LABEL_DEADLINE: until.to_string(),
                },
            },
            "spec": { "activeDeadlineSeconds": seconds },
        });
        match self
            .pods
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(until),
            Err(e) if kube_status(&e) == Some(404) => Err(SandboxError::NotFound(name.to_owned())),
            Err(e) if kube_status(&e) == Some(409) => Err(SandboxError::Invalid(format!(
                "pod {name} changed while it was being claimed"
            ))),
            Err(e) => Err(self.explain("patch pods", e)),
        }
    }

    /// Creates `pod`, waiting out the moment after a namespace is made in which its `default`
    /// ServiceAccount does not exist yet and admission refuses every pod (about a second).
    async fn create_retrying(&self, params: &PostParams, pod: &Pod) -> Result<Pod, kube::Error> {
        let mut tries = 0;
        loop {
            match self.pods.create(params, pod).await {
                Err(kube::Error::Api(status))
                    if tries < 50
                        && status.code == 403
                        && status.message.contains("serviceaccount")
                        && status.message.contains("not found") =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }

    fn namespace(&self) -> &str {
        &self.options.namespace
    }

    /// A clear error for a failed API call: forbidden, missing namespace, or as is.
    pub(crate) fn explain(&self, action: &str, e: kube::Error) -> SandboxError {
        if let kube::Error::Api(status) = &e {
            // The RuntimeClass admission plugin refuses a pod naming a RuntimeClass that does
            // not exist with 403, which is not a permission problem.
            if status.code == 403
                && let Some(class) = &self.options.runtime_class
                && status.message.contains("RuntimeClass")
                && status.message.contains("not found")
            {
                return SandboxError::RuntimeClassMissing(class.clone());
            }
            if status.code == 403 {
                return SandboxError::Forbidden {
                    action: action.to_owned(),
                    namespace: self.namespace().to_owned(),
                    detail: status.message.clone(),
                };
            }
            if status.code == 404
                && status.reason == "NotFound"
                && status
                    .details
                    .as_ref()
                    .is_some_and(|d| d.kind == "namespaces")
            {
                return SandboxError::NamespaceMissing(self.namespace().to_owned());
            }
        }
        SandboxError::Kubernetes(e)
    }

    /// The Pod for `spec`, named `name`. Only fields Kubernetes 1.20 knows: a 1.20 API server
    /// silently drops the others, which would silently weaken the sandbox.
    pub(crate) fn pod_for(
        &self,
        name: &str,
        spec: &SandboxSpec,
        mut labels: BTreeMap<String, String>,
        deadline_secs: u64,
        stop_grace: Duration,
    ) -> Pod {
        labels.insert(LABEL_POD.into(), name.to_owned());
        let memory = spec.limits.memory_bytes.max(1);
        // Requests are what the scheduler reserves; limits are what the kernel enforces.
        // Reserving the whole limit would let a small node hold one or two sandboxes only.
        let limits = BTreeMap::from([
            ("memory".to_owned(), Quantity(memory.to_string())),
            (
                "cpu".to_owned(),
                Quantity(format!(
                    "{}m",
                    ((spec.limits.cpus * 1000.0).round() as i64).max(1)
                )),
            ),
        ]);
        let requests = BTreeMap::from([
            (
                "memory".to_owned(),
                Quantity(memory.min(128 * 1024 * 1024).to_string()),
            ),
            ("cpu".to_owned(), Quantity("50m".to_owned())),
        ]);
        let uid = i64::from(spec.uid);
        let gid = i64::from(spec.gid);
        let seccomp = || SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(PodSpec {
                restart_policy: Some("Never".into()),
                active_deadline_seconds: Some(deadline_secs.max(1) as i64),
                termination_grace_period_seconds: Some(stop_grace.as_secs() as i64),
                automount_service_account_token: Some(false),
                enable_service_links: Some(false),
                share_process_namespace: Some(true),
                host_network: Some(false),
                host_pid: Some(false),
                host_ipc: Some(false),
                runtime_class_name: self.options.runtime_class.clone(),
                node_selector: (!self.options.node_selector.is_empty())
                    .then(|| self.options.node_selector.clone()),
                security_context: Some(PodSecurityContext {
                    run_as_user: Some(uid),
                    run_as_group: Some(gid),
                    run_as_non_root: Some(true),
                    seccomp_profile: Some(seccomp()),
                    ..Default::default()
                }),
                containers: vec![Container {
                    name: CONTAINER.into(),
                    image: Some(spec.image.clone()),
                    image_pull_policy: Some("IfNotPresent".into()),
                    // The main process outlives nothing: at the deadline it exits and the
                    // pod ends, even while drydock is down (as on Docker).
                    command: Some(vec!["sleep".into(), deadline_secs.max(1).to_string()]),
                    working_dir: Some(spec.workdir.clone()),
                    env: (!spec.env.is_empty()).then(|| {
                        spec.env
                            .iter()
                            .map(|(k, v)| EnvVar {
                                name: k.clone(),
                                value: Some(v.clone()),
                                value_from: None,
                            })
                            .collect()
                    }),
                    resources: Some(ResourceRequirements {
                        limits: Some(limits),
                        requests: Some(requests),
                        ..Default::default()
                    }),
                    security_context: Some(SecurityContext {
                        allow_privilege_escalation: Some(false),
                        privileged: Some(false),
                        run_as_non_root: Some(true),
                        run_as_user: Some(uid),
                        run_as_group: Some(gid),
                        capabilities: Some(Capabilities {
                            drop: Some(vec!["ALL".into()]),
                            add: None,
                        }),
                        seccomp_profile: Some(seccomp()),
                        ..Default::default()
                    }),
                    stdin: Some(false),
                    tty: Some(false),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    /// The default-deny policy of pod `name`: it selects that pod alone and allows nothing
    /// in either direction.
    pub(crate) fn deny_all_for(name: &str, labels: &BTreeMap<String, String>) -> NetworkPolicy {
        NetworkPolicy {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(labels.clone()),
                ..Default::default()
            },
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(LABEL_POD.to_owned(), name.to_owned())])),
                    match_expressions: None,
                }),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ingress: None,
                egress: None,
            }),
        }
    }

    /// Creates the pod (after its NetworkPolicy, so it never runs unfenced) and waits until
    /// its container runs. A pod that cannot start is deleted, never left behind.
    pub(crate) async fn create_pod(
        &self,
        name: &str,
        spec: &SandboxSpec,
        labels: BTreeMap<String, String>,
        deadline_secs: u64,
        stop_grace: Duration,
    ) -> Result<()> {
        match &spec.network {
            NetworkMode::None => {
                let policy = Self::deny_all_for(name, &labels);
                self.policies
                    .create(&PostParams::default(), &policy)
                    .await
                    .map_err(|e| self.explain("create networkpolicies", e))?;
            }
            NetworkMode::Bridge => {}
            other => {
                return Err(SandboxError::Invalid(format!(
                    "network mode {:?} has no Kubernetes form (use `bridge` or `none`)",
                    other.as_docker()
                )));
            }
        }
        let pod = self.pod_for(name, spec, labels, deadline_secs, stop_grace);
        if let Err(e) = self.create_retrying(&PostParams::default(), &pod).await {
            let _ = self.remove(name).await;
            return Err(self.explain("create pods", e));
        }
        match self.wait_running(name, &spec.image).await {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Err(rm) = self.remove(name).await {
                    warn!(pod = name, error = %rm, "could not remove a sandbox pod that failed to start");
                }
                Err(e)
            }
        }
    }

    async fn wait_running(&self, name: &str, image: &str) -> Result<()> {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let pod = self.pods.get(name).await?;
            let status = pod.status.unwrap_or_default();
            let container = status
                .container_statuses
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.name == CONTAINER);
            let state = container.and_then(|c| c.state).unwrap_or_default();
            if state.running.is_some() {
                return Ok(());
            }
            if let Some(waiting) = state.waiting {
                let reason = waiting.reason.unwrap_or_default();
                match reason.as_str() {
                    "ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull"
                    | "InvalidImageName" => {
                        return Err(SandboxError::ImageNotPulled {
                            image: image.to_owned(),
                            reason,
                            detail: waiting.message.unwrap_or_default(),
                        });
                    }
                    "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                        return Err(SandboxError::Invalid(format!(
                            "the sandbox pod cannot start: {reason}: {}",
                            waiting.message.unwrap_or_default()
                        )));
                    }
                    _ => {}
                }
            }
            if let Some(done) = state.terminated {
                return Err(SandboxError::Invalid(format!(
                    "the sandbox pod ended while starting ({}, exit code {})",
                    done.reason.unwrap_or_default(),
                    done.exit_code
                )));
            }
            if started.elapsed() > START_TIMEOUT {
                let why = status
                    .conditions
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|c| c.status != "True")
                    .filter_map(|c| c.message)
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(SandboxError::Invalid(format!(
                    "the sandbox pod did not start within {START_TIMEOUT:?} ({}){}",
                    status.phase.unwrap_or_default(),
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {why}")
                    }
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }

    /// The pod, or `None` when it does not exist.
    pub(crate) async fn pod(&self, name: &str) -> Result<Option<Pod>> {
        Ok(self.pods.get_opt(name).await?)
    }

    pub(crate) async fn is_running(&self, name: &str) -> Result<bool> {
        Ok(self.pod(name).await?.is_some_and(|p| running(&p)))
    }

    /// Why pod `name` ended; `None` while it runs or starts. `recorded` is what this process
    /// did to it (a deleted pod answers that, or [`ExitReason::Removed`]).
    pub(crate) async fn exit_reason(
        &self,
        name: &str,
        recorded: Option<ExitReason>,
        deadline_unix: Option<u64>,
    ) -> Result<Option<ExitReason>> {
        let Some(pod) = self.pod(name).await? else {
            return Ok(Some(recorded.unwrap_or(ExitReason::Removed)));
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(Some(recorded.unwrap_or(ExitReason::Stopped)));
        }
        let status = pod.status.clone().unwrap_or_default();
        let phase = status.phase.clone().unwrap_or_default();
        if phase == "Pending" || running(&pod) {
            return Ok(None);
        }
        if let Some(reason) = recorded {
            return Ok(Some(reason));
        }
        if status.reason.as_deref() == Some("DeadlineExceeded") {
            return Ok(Some(ExitReason::Deadline));
        }
        let terminated = status
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.name == CONTAINER)
            .and_then(|c| c.state)
            .and_then(|s| s.terminated);
        let Some(t) = terminated else {
            return Ok(None);
        };
        if t.reason.as_deref() == Some("OOMKilled") {
            return Ok(Some(ExitReason::OutOfMemory));
        }
        if let (Some(finished), Some(deadline)) = (t.finished_at.as_ref(), deadline_unix)
            && finished.0.as_second() + 1 >= deadline as i64
        {
            return Ok(Some(ExitReason::Deadline));
        }
        Ok(Some(match t.exit_code {
            // `sleep <deadline>` exits 0 only at the deadline.
            0 => ExitReason::Deadline,
            143 => ExitReason::Stopped,
            137 => ExitReason::Killed,
            code => ExitReason::Exited(i64::from(code)),
        }))
    }

    /// The image reference the sandbox container was created with (what
    /// [`Sandboxes::image_id`](crate::Sandboxes::image_id) answers on Kubernetes: the nodes
    /// resolve a tag, out of drydock's sight).
    pub(crate) async fn image_id(&self, name: &str) -> Result<String> {
        let pod = self
            .pod(name)
            .await?
            .ok_or_else(|| SandboxError::NotFound(name.to_owned()))?;
        Ok(pod
            .spec
            .map(|s| s.containers)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.name == CONTAINER)
            .and_then(|c| c.image)
            .unwrap_or_default())
    }

    /// Deletes pod `name` with `grace` seconds for its processes. Idempotent.
    pub(crate) async fn delete_pod(&self, name: &str, grace: i64) -> Result<()> {
        let params = DeleteParams {
            grace_period_seconds: Some(grace.max(0) as u32),
            ..Default::default()
        };
        match self.pods.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if kube_status(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.explain("delete pods", e)),
        }
    }

    /// Deletes pod `name` at once, and its NetworkPolicy. Idempotent.
    pub(crate) async fn remove(&self, name: &str) -> Result<()> {
        self.delete_pod(name, 0).await?;
        match self.policies.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if kube_status(&e) == Some(404) => {}
            Err(e) => return Err(self.explain("delete networkpolicies", e)),
        }
        debug!(pod = name, "sandbox pod removed");
        Ok(())
    }

    /// Pods carrying every label of `selector` (`k=v` pairs).
    pub(crate) async fn list(&self, selector: &[(String, String)]) -> Result<Vec<Pod>> {
        let selector = selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let pods = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.explain("list pods", e))?;
        Ok(pods.items)
    }

    /// Deletes the NetworkPolicies of `instance` whose pod is gone (a pod deleted by someone
    /// else, or a crash between the two deletions).
    pub(crate) async fn remove_orphan_policies(&self, instance: &str) -> Result<()> {
        let selector = format!("{LABEL_INSTANCE}={instance}");
        let policies = self
            .policies
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.explain("list networkpolicies", e))?;
        for policy in policies.items {
            let Some(name) = policy.metadata.name else {
                continue;
            };
            if self.pod(&name).await?.is_none() {
                match self.policies.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => debug!(policy = name, "removed an orphan sandbox network policy"),
                    Err(e) if kube_status(&e) == Some(404) => {}
                    Err(e) => return Err(self.explain("delete networkpolicies", e)),
                }
            }
        }
        Ok(())
    }

    /// Checks that the API server answers and still grants every right drydock uses (for a
    /// readiness probe).
    pub(crate) async fn ping(&self) -> Result<()> {
        let unavailable = |detail: String| SandboxError::ClusterUnavailable {
            server: self.server.clone(),
            detail,
        };
        tokio::time::timeout(PING_TIMEOUT, self.client.apiserver_version())
            .await
            .map_err(|_| unavailable("no answer within 5 s".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        self.check_rights().await
    }
}

/// Whether the pod's sandbox container runs and the pod is not being deleted.
pub(crate) fn running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER))
            .and_then(|c| c.state.as_ref())
            .is_some_and(|s| s.running.is_some())
}

/// A Docker-like state word for a pod: `created`, `running`, `exited` or `removing`.
pub(crate) fn state_word(pod: &Pod) -> String {
    if pod.metadata.deletion_timestamp.is_some() {
        return "removing".into();
    }
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") if running(pod) => "running".into(),
        Some("Running") | Some("Succeeded") | Some("Failed") => "exited".into(),
        _ => "created".into(),
    }
}

/// A pod name for a sandbox of `task_id`: the Docker name, lower-cased and reduced to what a
/// DNS-1123 name allows (at most 63 characters, so it also fits a label value).
pub(crate) fn pod_name(task_id: &str) -> String {
    let docker = crate::client::container_name(task_id);
    let mut name: String = docker
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if name.len() > 63 {
        // Keep the unique tail.
        name = format!("drydock-{}", &name[name.len() - 55..]);
    }
    name.trim_matches('-').to_owned()
}

/// `'value'` for `sh`, any byte allowed but NUL (refused earlier).
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The exit code carried by an exec's final status: `Success` is 0, `NonZeroExitCode` carries
/// the code in its `ExitCode` cause; anything else (an error running the command) is `None`.
pub(crate) fn exit_code_of(status: &Status) -> Option<i64> {
    match status.status.as_deref() {
        Some("Success") => Some(0),
        Some("Failure") if status.reason.as_deref() == Some("NonZeroExitCode") => status
            .details
            .as_ref()?
            .causes
            .as_ref()?
            .iter()
            .find(|c| c.reason.as_deref() == Some("ExitCode"))?
            .message
            .as_deref()?
            .parse()
            .ok(),
        _ => None,
    }
}

/// The end of a Kubernetes exec: its final status, and the WebSocket (kept open until then).
pub(crate) struct ExecStatus {
    status: Option<BoxFuture<'static, Option<Status>>>,
    _process: AttachedProcess,
}

impl ExecStatus {
    /// The exit code, once the output has closed; `None` when the connection ended without a
    /// status (the pod went away) or the command could not run.
    pub(crate) async fn code(mut self) -> Option<i64> {
        let status = self.status.take()?.await?;
        let code = exit_code_of(&status);
        if code.is_none() {
            debug!(message = ?status.message, reason = ?status.reason, "exec ended without an exit code");
        }
        code
    }
}

/// Starts `argv` in pod `shared.id` as `user` with `spec`'s environment and working directory.
pub(crate) async fn exec(
    cluster: &Cluster,
    shared: &Arc<Shared>,
    spec: &ExecSpec,
    argv: Vec<String>,
    user: &str,
) -> Result<(ExecHandle, RawOutput, Pin<Box<dyn AsyncWrite + Send>>)> {
    let uid = shared.uid.to_string();
    let uid_gid = format!("{}:{}", shared.uid, shared.gid);
    let numeric = user
        .split(':')
        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    let other_user = || {
        SandboxError::not_on_kubernetes(
            &format!("running an exec as {user:?}"),
            &format!("a Kubernetes exec runs as the pod's user ({uid_gid})"),
        )
    };
    let mut setup = String::new();
    if numeric {
        if user != uid && user != uid_gid {
            return Err(other_user());
        }
    } else if user == "root" || user.contains(':') {
        return Err(other_user());
    } else {
        // A user name (the agent's, `agent`): it must name the pod's user, which only the
        // sandbox's own passwd can tell; a mismatch ends the exec before the command runs.
        let message = format!(
            "drydock: this exec must run as {user}, and a Kubernetes exec runs as the pod's user ({uid_gid})"
        );
        setup.push_str(&format!(
            "[ \"$(id -un)\" = {} ] || {{ printf '%s\\n' {} >&2; exit 126; }}\n",
            quote(user),
            quote(&message)
        ));
    }
    let workdir = spec.workdir.as_deref().unwrap_or(&shared.workdir);
    setup.push_str(&format!("cd -- {} || exit 125\n", quote(workdir)));
    for (name, value) in &spec.env {
        let shell_name = name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if !shell_name {
            return Err(SandboxError::Invalid(format!(
                "environment variable name {name:?} is not a shell name (Kubernetes execs set it through sh)"
            )));
        }
        setup.push_str(&format!("export {name}={}\n", quote(value)));
    }
    let mut command = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        PROLOGUE.to_owned(),
        "drydock-exec".to_owned(),
    ];
    command.extend(argv);
    let params = AttachParams::default()
        .container(CONTAINER)
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .max_stdin_buf_size(EXEC_BUFFER)
        .max_stdout_buf_size(EXEC_BUFFER)
        .max_stderr_buf_size(EXEC_BUFFER);
    let mut process = match cluster.pods.exec(&shared.id, command, &params).await {
        Ok(p) => p,
        Err(e) => {
            let e = match e {
                kube::Error::Api(s) if s.code == 403 => {
                    cluster.explain("create pods/exec", kube::Error::Api(s))
                }
                e => SandboxError::Kubernetes(e),
            };
            return Err(crate::exec::explain(shared, e).await);
        }
    };
    let lost = || SandboxError::Invalid("the Kubernetes exec has no stdin or output".into());
    let mut stdin = process.stdin().ok_or_else(lost)?;
    let stdout = process.stdout().ok_or_else(lost)?;
    let stderr = process.stderr().ok_or_else(lost)?;
    let mut block = format!("{}\n", setup.len()).into_bytes();
    block.extend_from_slice(setup.as_bytes());
    stdin.write_all(&block).await?;
    let out = tokio_util::io::ReaderStream::with_capacity(stdout, EXEC_BUFFER).map(|r| {
        r.map(|message| LogOutput::StdOut { message })
            .map_err(SandboxError::Io)
    });
    let err = tokio_util::io::ReaderStream::with_capacity(stderr, EXEC_BUFFER).map(|r| {
        r.map(|message| LogOutput::StdErr { message })
            .map_err(SandboxError::Io)
    });
    let output: RawOutput = futures::stream::select(out, err).boxed();
    let status = process.take_status().map(|f| f.boxed());
    let handle = ExecHandle::Kubernetes(ExecStatus {
        status,
        _process: process,
    });
    Ok((handle, output, Box::pin(FramedStdin::new(stdin))))
}

/// The caller's side of an exec's stdin on Kubernetes: each write goes out as one
/// `<len>\n<bytes>` frame, and shutdown sends the `0\n` frame (see [`STDIN_WRAPPER`]). The
/// WebSocket itself stays open, so the command's output keeps flowing after end-of-file.
///
/// A write answers only once its whole frame is handed on, so nothing waits in here for a
/// later write or flush that may never come (the egress relay writes a frame, then waits).
/// While a frame is under way the caller retries with the same bytes (as `write_all` does);
/// the frame already holds them.
struct FramedStdin {
    inner: WriteHalf<SimplexStream>,
    /// Frame bytes not yet handed on.
    pending: Bytes,
    /// How many of the caller's bytes the frame under way carries.
    in_flight: Option<usize>,
    eof_sent: bool,
}

impl FramedStdin {
    fn new(inner: WriteHalf<SimplexStream>) -> Self {
        FramedStdin {
            inner,
            pending: Bytes::new(),
            in_flight: None,
            eof_sent: false,
        }
    }

    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
                }
                Poll::Ready(Ok(n)) => {
                    let _ = self.pending.split_to(n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for FramedStdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.eof_sent {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        if self.in_flight.is_none() {
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let n = buf.len().min(EXEC_BUFFER);
            let mut frame = format!("{n}\n").into_bytes();
            frame.extend_from_slice(&buf[..n]);
            self.pending = Bytes::from(frame);
            self.in_flight = Some(n);
        }
        std::task::ready!(self.drain(cx))?;
        Poll::Ready(Ok(self.in_flight.take().unwrap_or_default()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        self.in_flight = None;
        if !self.eof_sent {
            self.eof_sent = true;
            self.pending = Bytes::from_static(b"0\n");
        }
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

/// Seconds since the epoch of a pod's creation.
pub(crate) fn created_unix(pod: &Pod) -> i64 {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or_else(|| unix_now() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_are_dns_labels() {
        let name = pod_name("Task_With/Odd:Chars-and-a-very-long-tail-that-goes-on-and-on-and-on");
        assert!(name.len() <= 63, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
        assert!(name.starts_with("drydock-"), "{name}");
        assert_ne!(
            name,
            pod_name("Task_With/Odd:Chars-and-a-very-long-tail-that-goes-on-and-on-and-on")
        );
    }

    #[test]
    fn node_selectors_parse_and_bad_items_are_named() {
        let s = KubernetesOptions::parse_node_selector(" a=1, b = two ,").expect("parses");
        assert_eq!(s.get("a").map(String::as_str), Some("1"));
        assert_eq!(s.get("b").map(String::as_str), Some("two"));
        let err = KubernetesOptions::parse_node_selector("a=1,oops").expect_err("bad item");
        assert!(err.to_string().contains("oops"), "{err}");
        let ok = KubernetesOptions::parse_node_selector(
            "kubernetes.io/os=linux,drydock.dev/sandbox=true,pool=,x_y.z-1=A.b_c",
        )
        .expect("valid keys and values");
        assert_eq!(ok.len(), 4);
        for (bad, named) in [
            ("bad key!=1", "bad key!"),
            ("-lead=1", "-lead"),
            ("Upper.Case/x=1", "Upper.Case/x"),
            ("/x=1", "/x"),
            (&format!("{}=1", "k".repeat(64)), "kkkk"),
            ("a=has space", "has space"),
            ("a=-x", "-x"),
        ] {
            let err = KubernetesOptions::parse_node_selector(bad).expect_err(bad);
            assert!(err.to_string().contains(named), "{bad}: {err}");
        }
        let err = KubernetesOptions::parse_node_selector("disk=ssd, zone=a, disk=hdd")
            .expect_err("a key given twice");
        assert!(err.to_string().contains("\"disk\" is given twice"), "{err}");
    }

    #[test]
    fn the_rights_asked_for_are_the_roles_and_patch_only_with_a_pool() {
        let without: Vec<String> = required_rights(false)
            .iter()
            .map(|(v, _, r, s)| format!("{v} {r}{}{s}", if s.is_empty() { "" } else { "/" }))
            .collect();
        assert_eq!(
            without,
            [
                "create pods",
                "get pods",
                "list pods",
                "watch pods",
                "delete pods",
                "create pods/exec",
                "get pods/exec",
                "get pods/log",
                "create networkpolicies",
                "get networkpolicies",
                "list networkpolicies",
                "delete networkpolicies",
            ]
        );
        assert!(required_rights(true).contains(&("patch", "", "pods", "")));
        assert!(!required_rights(false).iter().any(|r| r.0 == "patch"));
    }

    #[test]
    fn quoting_survives_quotes_and_newlines() {
        assert_eq!(
            quote("it's\nok"),
            r"'it'\''s
ok'"
        );
    }
}
