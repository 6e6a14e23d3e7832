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
        [
            "--sandbox-backend",
            "kubernetes",
            "--kubernetes-namespace",
            &self.name,
            "--kubeconfig",
            &kubeconfig().to_string_lossy(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
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
