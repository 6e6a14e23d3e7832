//! The test cluster: its admin kubeconfig (`DRYDOCK_TEST_KUBECONFIG`, exported by
//! `eval "$(scripts/services --kubernetes)"`) and a namespace per test, deleted afterwards.

use std::path::PathBuf;

use drydock_sandbox::{KubernetesOptions, NetworkMode, SandboxDefaults, Sandboxes};
use k8s_openapi::api::core::v1::{Namespace, Pod};

/// The admin kubeconfig of the test cluster; panics with what to do when it is not set.
pub fn kubeconfig() -> PathBuf {
    match std::env::var("DRYDOCK_TEST_KUBECONFIG") {
        Ok(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!(
            "DRYDOCK_TEST_KUBECONFIG is not set. Start the test cluster with \
             `eval \"$(scripts/services --kubernetes)\"`; it exports the admin kubeconfig path"
        ),
    }
}

/// An admin client of the test cluster.
pub async fn admin() -> kube::Client {
    let file = kube::config::Kubeconfig::read_from(kubeconfig()).expect("read the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .expect("load the kubeconfig");
    kube::Client::try_from(config).expect("a Kubernetes client")
}

/// A namespace of the test cluster that is deleted (with everything in it) when dropped.
pub struct TestNamespace {
    /// Its name.
    pub name: String,
    admin: kube::Client,
}

impl TestNamespace {
    /// Creates `<prefix>-<pid>-<unique>`.
    pub async fn create(prefix: &str) -> Self {
        let admin = admin().await;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
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
            .expect("create the test namespace");
        TestNamespace { name, admin }
    }

    /// The pods of this namespace, as the admin sees them.
    pub fn pods(&self) -> kube::Api<Pod> {
        kube::Api::namespaced(self.admin.clone(), &self.name)
    }

    /// Server settings that put sandboxes in this namespace with the admin kubeconfig.
    pub fn server_settings(&self) -> Vec<String> {
        self.server_settings_with(&kubeconfig())
    }

    /// Server settings that put sandboxes in this namespace with kubeconfig `path`.
    pub fn server_settings_with(&self, path: &std::path::Path) -> Vec<String> {
        [
            "--sandbox-backend",
            "kubernetes",
            "--kubernetes-namespace",
            &self.name,
            "--kubeconfig",
            &path.to_string_lossy(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// `kubectl ARGS` as the admin (`DRYDOCK_TEST_KUBECTL`, kubectl of the cluster's version),
    /// with `stdin` as its input; answers (success, stdout + stderr).
    pub fn kubectl(&self, args: &[&str], stdin: &str) -> (bool, String) {
        use std::io::Write as _;
        let kubectl = std::env::var("DRYDOCK_TEST_KUBECTL").unwrap_or_else(|_| {
            panic!("DRYDOCK_TEST_KUBECTL is not set (eval \"$(scripts/services --kubernetes)\")")
        });
        let mut child = std::process::Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write kubectl's input");
        let out = child.wait_with_output().expect("kubectl");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `deploy/kubernetes/rbac.yaml` (the ServiceAccount `drydock`, its Role and RoleBinding)
    /// moved to this namespace and passed through `edit`, applied with kubectl.
    pub fn apply_rbac_manifest(&self, edit: impl Fn(String) -> String) {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/kubernetes/rbac.yaml"
        );
        let text = std::fs::read_to_string(path).expect("read deploy/kubernetes/rbac.yaml");
        let text = edit(text.replace("namespace: drydock", &format!("namespace: {}", self.name)));
        let (ok, out) = self.kubectl(&["apply", "-f", "-"], &text);
        assert!(ok, "kubectl apply deploy/kubernetes/rbac.yaml: {out}");
    }

    /// Whether service account `sa` of this namespace may `verb` `resource` here, as the API
    /// server's authorizer answers now (RBAC changes reach it after a moment).
    pub fn can(&self, sa: &str, verb: &str, resource: &str) -> bool {
        let who = format!("system:serviceaccount:{}:{sa}", self.name);
        let (_, out) = self.kubectl(
            &[
                "auth", "can-i", verb, resource, "-n", &self.name, "--as", &who,
            ],
            "",
        );
        out.trim() == "yes"
    }

    /// A kubeconfig for service account `sa` of this namespace (which must exist), with a
    /// token from the TokenRequest API valid for an hour.
    pub async fn service_account_kubeconfig(&self, sa: &str) -> tempfile::NamedTempFile {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let accounts = kube::Api::<ServiceAccount>::namespaced(self.admin.clone(), &self.name);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(3600),
                bound_object_ref: None,
            },
            ..Default::default()
        };
        let token = accounts
            .create_token_request(sa, &Default::default(), &request)
            .await
            .expect("a token for the service account")
            .status
            .expect("token status")
            .token;
        let file = kube::config::Kubeconfig::read_from(kubeconfig()).expect("read");
        let cluster = file.clusters[0].cluster.clone().expect("cluster");
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {
                "server": cluster.server,
                "certificate-authority": cluster.certificate_authority,
                "certificate-authority-data": cluster.certificate_authority_data,
            }}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": self.name}}],
            "current-context": "x",
        });
        let out = tempfile::NamedTempFile::new().expect("tempfile");
        std::fs::write(out.path(), config.to_string()).expect("write kubeconfig");
        out
    }

    /// The sandboxes of `instance` in this namespace, through the sandbox crate (no network).
    pub async fn sandboxes(&self, image: &str, instance: &str) -> Sandboxes {
        let mut defaults = SandboxDefaults::new(image, instance);
        defaults.network = NetworkMode::None;
        let mut options = KubernetesOptions::new(self.name.clone());
        options.kubeconfig = Some(kubeconfig());
        Sandboxes::connect_kubernetes(defaults, options)
            .await
            .expect("connect to the test cluster")
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let (name, admin) = (self.name.clone(), self.admin.clone());
        // Drop cannot await, and the test's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async move {
                    let _ = kube::Api::<Namespace>::all(admin)
                        .delete(&name, &Default::default())
                        .await;
                });
            }
        })
        .join();
    }
}
