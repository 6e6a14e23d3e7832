//! The crate's one error type.

use crate::ExitReason;

/// Everything that can go wrong while managing sandboxes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// No Docker daemon answered at the configured address (`DOCKER_HOST` or
    /// the default socket). Start `dockerd` or fix `DOCKER_HOST`.
    #[error("the Docker daemon at {host} does not answer: {detail}")]
    DaemonUnavailable {
        /// The address that was tried.
        host: String,
        /// What the connection attempt reported.
        detail: String,
    },
    /// The TLS client files for a `tcp://` Docker host (`DOCKER_CERT_PATH`) cannot be used:
    /// missing, unreadable or malformed. Nothing was sent to the daemon.
    #[error(
        "cannot use the TLS client files in DOCKER_CERT_PATH ({dir}): {detail}; the directory must hold ca.pem, cert.pem and key.pem, as for `docker --tlsverify`"
    )]
    TlsFiles {
        /// The directory named by `DOCKER_CERT_PATH`.
        dir: String,
        /// What reading them reported.
        detail: String,
    },
    /// The sandbox image is not present on the Docker host.
    #[error(
        "sandbox image {0:?} is not present on the Docker host; build it with `sandbox/image/build-offline` (or `docker build sandbox/image`)"
    )]
    ImageNotFound(String),
    /// The Kubernetes node a sandbox pod was scheduled on cannot pull its image.
    #[error(
        "the Kubernetes node cannot pull the sandbox image {image:?} ({reason}: {detail}); push it to a registry the nodes reach (or load it on every node) and set DRYDOCK_SANDBOX_IMAGE to that name"
    )]
    ImageNotPulled {
        /// The image reference.
        image: String,
        /// The kubelet's waiting reason (`ErrImagePull`, `ImagePullBackOff`, ...).
        reason: String,
        /// The kubelet's message (the registry's answer).
        detail: String,
    },
    /// Building the sandbox image failed; `tail` holds the build's last lines of output.
    #[error("building the sandbox image failed: {detail}")]
    ImageBuild {
        /// What ended the build.
        detail: String,
        /// The build's last output lines, oldest first.
        tail: Vec<String>,
    },
    /// The container does not exist (any more).
    #[error("sandbox container {0} does not exist")]
    NotFound(String),
    /// The sandbox is no longer running, so nothing can be executed in it.
    #[error("sandbox container {id} is not running ({reason})")]
    NotRunning {
        /// Container id.
        id: String,
        /// Why it ended.
        reason: ExitReason,
    },
    /// A request was malformed before it reached Docker (empty argv, a
    /// relative path, an env name with `=`, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// An `export` command exited unsuccessfully; `stderr` holds the tail of
    /// its error output.
    #[error("export command failed ({exit}): {stderr}")]
    ExportFailed {
        /// How the command ended.
        exit: String,
        /// Last bytes of its stderr, lossily decoded.
        stderr: String,
    },
    /// [`Sandbox::connect_port`](crate::Sandbox::connect_port): nothing
    /// listens on this port on `127.0.0.1` inside the sandbox (the connection
    /// was refused).
    #[error(
        "nothing listens on port {port} inside the sandbox (127.0.0.1:{port} refused the connection)"
    )]
    PortClosed {
        /// The port inside the sandbox.
        port: u16,
    },
    /// [`Sandbox::connect_port`](crate::Sandbox::connect_port): the relay
    /// inside the sandbox could not connect for another reason (no
    /// `python3` in the image, a connect timeout, the sandbox ending, ...).
    #[error("cannot connect to port {port} inside the sandbox: {detail}")]
    PortRelay {
        /// The port inside the sandbox.
        port: u16,
        /// What went wrong, with the relay's error output.
        detail: String,
    },
    /// Docker answered with an error.
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    /// The Kubernetes API server did not answer (`KUBECONFIG`, the in-cluster
    /// configuration, or the network is wrong).
    #[error("the Kubernetes API server {server} does not answer: {detail}")]
    ClusterUnavailable {
        /// The API server's address, or where its configuration was looked for.
        server: String,
        /// What the attempt reported.
        detail: String,
    },
    /// No Kubernetes configuration was found: no kubeconfig file and no in-cluster service
    /// account. `looked` lists each place tried and what was there.
    #[error(
        "no Kubernetes configuration found (looked at {looked}); set KUBECONFIG or --kubeconfig to a kubeconfig file, or run drydock in a pod with a service account"
    )]
    NoClusterConfig {
        /// Each place looked at, with what was found there.
        looked: String,
    },
    /// The kubeconfig file drydock was pointed at cannot be read or used.
    #[error("cannot use the kubeconfig {path}: {detail}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What reading it reported.
        detail: String,
    },
    /// The Kubernetes credentials lack rights drydock needs, as the API server answered a
    /// SelfSubjectAccessReview for each; `missing` names each as `verb resource`.
    #[error(
        "the Kubernetes credentials lack rights drydock needs in namespace {namespace:?}: {}; grant them with the Role of the Helm chart or deploy/kubernetes/rbac.yaml{}",
        missing.join(", "),
        if missing.iter().any(|m| m == "patch pods") {
            " (`patch pods` is for the warm pool only: DRYDOCK_WARM_POOL=0 runs without it)"
        } else {
            ""
        }
    )]
    MissingRights {
        /// The namespace.
        namespace: String,
        /// `verb resource` for each right refused (`patch pods`, `create pods/exec`, ...).
        missing: Vec<String>,
    },
    /// `DRYDOCK_KUBERNETES_RUNTIME_CLASS` names a RuntimeClass the cluster does not have.
    #[error(
        "RuntimeClass {0:?} does not exist in the cluster; install it (gVisor, Kata, ...) or change DRYDOCK_KUBERNETES_RUNTIME_CLASS"
    )]
    RuntimeClassMissing(String),
    /// The Kubernetes namespace sandboxes are created in does not exist.
    #[error(
        "Kubernetes namespace {0:?} does not exist; create it or set DRYDOCK_KUBERNETES_NAMESPACE"
    )]
    NamespaceMissing(String),
    /// The Kubernetes credentials lack a permission drydock needs.
    #[error(
        "Kubernetes forbids {action} in namespace {namespace:?}: {detail} (drydock needs pods: create get list watch delete, and patch with a warm pool; pods/exec: create get; pods/log: get; networkpolicies: create get list delete)"
    )]
    Forbidden {
        /// What was attempted (`create pods`, ...).
        action: String,
        /// The namespace.
        namespace: String,
        /// The API server's message.
        detail: String,
    },
    /// The Kubernetes API answered with an error.
    #[error("kubernetes: {0}")]
    Kubernetes(#[from] kube::Error),
    /// The operation exists only on the other sandbox backend (for example a `docker commit`
    /// snapshot or an image build on Kubernetes).
    #[error("{what} is not available with the {backend} sandbox backend{why}")]
    Unsupported {
        /// `kubernetes` or `docker`.
        backend: &'static str,
        /// The operation.
        what: String,
        /// Why, starting with `: ` (empty when obvious).
        why: String,
    },
    /// Local I/O failed (reading a directory to upload, writing stdin).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

impl SandboxError {
    /// An operation the Kubernetes backend does not offer.
    pub(crate) fn not_on_kubernetes(what: &str, why: &str) -> Self {
        SandboxError::Unsupported {
            backend: "kubernetes",
            what: what.to_owned(),
            why: if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            },
        }
    }
}

/// The HTTP status of a Kubernetes API error, if that is what `err` is.
pub(crate) fn kube_status(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// The HTTP status of a Docker error response, if that is what `err` is.
pub(crate) fn docker_status(err: &bollard::errors::Error) -> Option<u16> {
    match err {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}
