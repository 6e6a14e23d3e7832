//! The one place drydock's settings are declared: command line flags backed by environment variables.
//!
//! Nothing else in the server reads the environment. Every field has an `env = "..."` and a doc
//! line, which is what `drydock --help` prints.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// drydock: run coding agents in isolated sandboxes (Docker or Kubernetes) for a team.
#[derive(Debug, Clone, Parser)]
#[command(name = "drydock", version, about, long_about = None)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands of the `drydock` binary.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Work on drydock's own sandbox image.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Client: save a drydock server URL and a personal API token for the task commands.
    Login(crate::cli::LoginArgs),
    /// Client: run, follow, list, stop and continue tasks on a drydock server.
    #[command(subcommand)]
    Task(crate::cli::TaskCommand),
}

/// `drydock image ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum ImageCommand {
    /// Build drydock's sandbox image now, in the foreground, with a progress bar (the same build
    /// the server runs in the background); exits non-zero when it fails.
    Build,
}

impl Cli {
    /// Parses the process's arguments and environment; prints clap's message and exits on error.
    pub fn parse_process() -> Cli {
        Self::parse_with_sources(std::env::args_os()).unwrap_or_else(|err| err.exit())
    }

    /// Parses `args` and the environment, noting which settings differ from their defaults.
    pub fn parse_with_sources<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let command = <Cli as clap::CommandFactory>::command();
        let matches = command
            .clone()
            .try_get_matches_from(server_settings_first(args))
            .map_err(|err| name_the_variable(&command, err))?;
        let mut cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches)?;
        cli.config.changed_settings = changed_settings(&command, &matches);
        Ok(cli)
    }
}

/// The arguments with the server's settings before its subcommand: `drydock serve --addr …` and
/// `drydock migrate --database-url …` read as `drydock --addr … serve`, the order clap expects
/// (the settings belong to the top level so the client subcommands' help stays short).
fn server_settings_first<I, T>(args: I) -> Vec<std::ffi::OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let server_subcommand = args.get(1).is_some_and(|a| a == "serve" || a == "migrate");
    if server_subcommand && args.len() > 2 {
        let subcommand = args.remove(1);
        args.push(subcommand);
    }
    args
}

/// A refused value, reworded to name the setting's environment variable as well as its flag:
/// operators mostly set the variable, and clap's own message names only the flag. The value is
/// left out for secret settings.
fn name_the_variable(command: &clap::Command, err: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return err;
    }
    let Some(ContextValue::String(invalid)) = err.get(ContextKind::InvalidArg) else {
        return err;
    };
    let long = invalid
        .trim_start_matches("--")
        .split([' ', '=', '<'])
        .next()
        .unwrap_or_default();
    let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(long)) else {
        return err;
    };
    let Some(env) = arg.get_env() else {
        return err;
    };
    let env = env.to_string_lossy();
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) if !arg.is_hide_env_values_set() => format!(" {v:?}"),
        _ => String::new(),
    };
    let why = match std::error::Error::source(&err) {
        Some(source) => format!(": {source}"),
        None => match err.get(ContextKind::ValidValue) {
            Some(valid) => format!(": use one of {valid}"),
            None => String::new(),
        },
    };
    command.clone().error(
        err.kind(),
        format!("invalid value{value} for {env} (--{long}){why}"),
    )
}

/// The settings given a value other than their default, as (`ENV_NAME` or `--flag`, value);
/// secret settings (those whose values `--help` hides) show `(set)` instead of their value.
fn changed_settings(command: &clap::Command, matches: &clap::ArgMatches) -> Vec<(String, String)> {
    use clap::parser::ValueSource;
    let mut changed = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version") {
            continue;
        }
        if !matches!(
            matches.value_source(id),
            Some(ValueSource::EnvVariable | ValueSource::CommandLine)
        ) {
            continue;
        }
        let Ok(Some(raw)) = matches.try_get_raw(id) else {
            continue;
        };
        let value: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if value == default {
            continue;
        }
        let name = match (arg.get_env(), arg.get_long()) {
            (Some(env), _) => env.to_string_lossy().into_owned(),
            (None, Some(long)) => format!("--{long}"),
            (None, None) => id.to_owned(),
        };
        let shown = if arg.is_hide_env_values_set() {
            "(set)".to_owned()
        } else {
            crate::sandbox_image::mask_credentials(&value.join(","))
        };
        changed.push((name, shown));
    }
    changed
}

/// Every setting of the server.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address and port the HTTP server listens on.
    #[arg(long, env = "DRYDOCK_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,

    /// URL people use to reach drydock (OAuth callback, links in pull requests). Defaults to
    /// http://{addr}, or http://localhost:{port} when listening on every address.
    #[arg(long, env = "DRYDOCK_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Directory for the SQLite database and generated secrets.
    #[arg(long, env = "DRYDOCK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Database URL: sqlite:PATH or postgres://USER:PASS@HOST/DB. Defaults to a SQLite file in the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// Key for secrets at rest: 64 hex characters (32 bytes). Generated into the data directory when absent.
    #[arg(long, env = "ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<SecretString>,

    /// Key for session cookies: 64 hex characters (32 bytes). Generated into the data directory when absent.
    #[arg(long, env = "JWE_SECRET", hide_env_values = true)]
    pub jwe_secret: Option<SecretString>,

    /// Client id of the GitHub OAuth app used for sign-in.
    #[arg(long, env = "GITHUB_CLIENT_ID")]
    pub github_client_id: Option<String>,

    /// Client secret of the GitHub OAuth app used for sign-in.
    #[arg(long, env = "GITHUB_CLIENT_SECRET", hide_env_values = true)]
    pub github_client_secret: Option<SecretString>,

    /// Base URL of GitHub's web endpoints (OAuth, git). Set it for GitHub Enterprise Server.
    #[arg(long, env = "GITHUB_URL", default_value = "https://github.com")]
    pub github_url: String,

    /// Base URL of GitHub's REST API. For GitHub Enterprise Server: https://HOST/api/v3.
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    pub github_api_url: String,

    /// TOML file of operator-defined agents (and overrides of built-in ones).
    #[arg(long, env = "DRYDOCK_AGENTS_FILE")]
    pub agents_file: Option<PathBuf>,

    /// Let connector tests reach loopback, private, link-local and metadata addresses (off: such URLs are refused).
    #[arg(long, env = "DRYDOCK_ALLOW_PRIVATE_CONNECTOR_URLS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_private_connector_urls: bool,

    /// OAuth clients for connector authorization servers that do not allow dynamic registration: a JSON object of issuer URL to {"client_id": "...", "client_secret": "..."}.
    #[arg(long, env = "DRYDOCK_CONNECTOR_OAUTH_CLIENTS", hide_env_values = true)]
    pub connector_oauth_clients: Option<SecretString>,

    /// Seconds a remote connector is left alone after 3 consecutive failures to reach it (doubling with each further failure, at most 15 minutes).
    #[arg(long, env = "DRYDOCK_CONNECTOR_BACKOFF_SECS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=900))]
    pub connector_backoff_secs: u32,

    /// Days a sign-in lasts before the user must sign in again.
    #[arg(long, env = "DRYDOCK_SESSION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=365))]
    pub session_days: u32,

    /// Where sandboxes run: docker (containers on DOCKER_HOST) or kubernetes (a Pod each in
    /// DRYDOCK_KUBERNETES_NAMESPACE, through KUBECONFIG or the in-cluster service account).
    #[arg(long, env = "DRYDOCK_SANDBOX_BACKEND", value_enum, default_value_t = SandboxBackend::Docker)]
    pub sandbox_backend: SandboxBackend,

    /// kubeconfig file for DRYDOCK_SANDBOX_BACKEND=kubernetes (a list of files joined with `:`
    /// is merged as kubectl does). Unset: ~/.kube/config, then the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubernetes namespace sandbox pods are created in (it must exist; drydock's Role there
    /// grants pods, pods/exec, pods/log and networkpolicies).
    #[arg(long, env = "DRYDOCK_KUBERNETES_NAMESPACE", default_value = "drydock")]
    pub kubernetes_namespace: String,

    /// runtimeClassName of sandbox pods (a gVisor or Kata RuntimeClass, for example). Unset: the
    /// cluster's default runtime.
    #[arg(long, env = "DRYDOCK_KUBERNETES_RUNTIME_CLASS")]
    pub kubernetes_runtime_class: Option<String>,

    /// nodeSelector of sandbox pods, as key=value,key=value. Unset: any node.
    #[arg(long, env = "DRYDOCK_KUBERNETES_NODE_SELECTOR", value_parser = parse_node_selector)]
    pub kubernetes_node_selector: Option<std::collections::BTreeMap<String, String>>,

    /// Docker daemon to use (unix:///var/run/docker.sock, tcp://HOST:PORT). Docker's own default when absent.
    #[arg(long, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,

    /// Directory holding ca.pem, cert.pem and key.pem for a Docker host reached over TLS (DOCKER_HOST=tcp://HOST:2376 with dockerd --tlsverify). Unset: a tcp:// host is plain HTTP.
    #[arg(long, env = "DOCKER_CERT_PATH")]
    pub docker_cert_path: Option<PathBuf>,

    /// Image every sandbox runs, when you provide your own. Unset or empty: drydock runs its own image,
    /// {DRYDOCK_SANDBOX_IMAGE_NAME}:recipe-<hash of its recipe>, and builds it when it is missing.
    /// A named image that is missing is reported, never built.
    #[arg(long = "sandbox-image", env = "DRYDOCK_SANDBOX_IMAGE")]
    pub named_sandbox_image: Option<String>,

    /// Repository name of drydock's own sandbox image (used when DRYDOCK_SANDBOX_IMAGE is unset).
    #[arg(
        long,
        env = "DRYDOCK_SANDBOX_IMAGE_NAME",
        default_value = "drydock-sandbox"
    )]
    pub sandbox_image_name: String,

    /// How drydock builds its own sandbox image when it is missing: auto (the Dockerfile when the
    /// Docker host can pull its base image, otherwise the offline recipe), offline, dockerfile, or
    /// off (never build; report it missing).
    #[arg(long, env = "DRYDOCK_SANDBOX_IMAGE_BUILD", value_enum, default_value_t = ImageBuild::Auto)]
    pub sandbox_image_build: ImageBuild,

    /// The settings given a non-default value, as (name, value shown), secrets as `(set)`;
    /// filled in by [`Cli::parse_with_sources`] (not a setting).
    #[arg(skip)]
    pub changed_settings: Vec<(String, String)>,

    /// Debian mirror the offline recipe builds drydock's sandbox image from (default: the first
    /// of the machine's apt sources that serves bookworm).
    #[arg(long, env = "DRYDOCK_DEBIAN_MIRROR")]
    pub debian_mirror: Option<String>,

    /// GitHub logins (comma-separated) who may open the operator page, /admin.
    #[arg(long, env = "DRYDOCK_ADMINS", value_delimiter = ',')]
    pub admins: Vec<String>,

    /// Network mode of sandboxes of tasks without a network policy (DRYDOCK_NETWORK_POLICY=off):
    /// bridge, none, host, or the name of a Docker network. With a policy a sandbox has no
    /// network at all (its one way out is drydock's proxy and gateway).
    #[arg(long, env = "DRYDOCK_SANDBOX_NETWORK", default_value = "bridge")]
    pub sandbox_network: String,

    /// Longest a task may run before it is stopped, in seconds (also the cap a user may ask for).
    #[arg(long, env = "DRYDOCK_MAX_TASK_DURATION", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_task_duration: u64,

    /// Seconds a kept-alive sandbox may sit idle after a turn before it is removed.
    #[arg(long, env = "DRYDOCK_SANDBOX_IDLE_TIMEOUT", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub sandbox_idle_timeout: u64,

    /// Longest a kept-alive sandbox lives in all, in seconds, however busy (its hard deadline).
    #[arg(long, env = "DRYDOCK_SANDBOX_MAX_LIFETIME", default_value_t = 28_800, value_parser = clap::value_parser!(u64).range(60..=604_800))]
    pub sandbox_max_lifetime: u64,

    /// Images operators offer as environment bases, as `name=image` pairs separated by commas
    /// (e.g. `python=registry.local/py:3.12,jdk=registry.local/jdk:21`); a repository's
    /// `.drydock/environment.toml` or its configured environment names one by `name`.
    #[arg(long, env = "DRYDOCK_ENVIRONMENT_IMAGES", default_value = "", value_parser = image_registrations)]
    pub environment_images: String,

    /// Seconds an environment snapshot is kept after it was made (never while a sandbox uses it).
    #[arg(long, env = "DRYDOCK_SNAPSHOT_MAX_AGE", default_value_t = 43_200, value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub snapshot_max_age: u64,

    /// Environment snapshots kept per user and repository, newest first (never one in use).
    #[arg(long, env = "DRYDOCK_SNAPSHOTS_PER_REPO", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub snapshots_per_repo: u32,

    /// Sandboxes kept created and started ahead of tasks, per sandbox shape (image, limits,
    /// network, user), so a task takes one instead of waiting for Docker; 0 turns the warm pool
    /// off. They hold no task data and no secrets.
    #[arg(long, env = "DRYDOCK_WARM_POOL", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub warm_pool: u32,

    /// Seconds a warm-pool sandbox waits for a task before it is replaced by a fresh one.
    #[arg(long, env = "DRYDOCK_WARM_POOL_MAX_AGE", default_value_t = 900, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub warm_pool_max_age: u64,

    /// Host name under which dev-server previews are served (e.g. preview.drydock.example, with
    /// DNS pointing at this server; add :PORT when it differs from the public URL's). It must
    /// differ from the public URL's host, so preview pages never see drydock's cookies. Previews
    /// are off when unset.
    #[arg(long, env = "DRYDOCK_PREVIEW_HOST")]
    pub preview_host: Option<String>,

    /// Port the dev server listens on inside a kept-alive sandbox (given to it as PORT).
    #[arg(long, env = "DRYDOCK_PREVIEW_PORT", default_value_t = 3000, value_parser = clap::value_parser!(u16).range(1..))]
    pub preview_port: u16,

    /// Tasks (and follow-up messages) one user may start per day (UTC).
    #[arg(long, env = "DRYDOCK_MAX_TASKS_PER_DAY", default_value_t = 50)]
    pub max_tasks_per_day: u32,

    /// Tasks running at once across all users; more wait in the queue.
    #[arg(long, env = "DRYDOCK_MAX_CONCURRENT_TASKS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_tasks: u32,

    /// Tasks one user may have running at once; more wait in the queue.
    #[arg(long, env = "DRYDOCK_MAX_CONCURRENT_TASKS_PER_USER", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_tasks_per_user: u32,

    /// Memory limit of each sandbox, in MiB (swap is set equal, so there is none).
    #[arg(long, env = "DRYDOCK_SANDBOX_MEMORY_MB", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(64..))]
    pub sandbox_memory_mb: u32,

    /// CPU limit of each sandbox, in cores.
    #[arg(long, env = "DRYDOCK_SANDBOX_CPUS", default_value_t = 2.0)]
    pub sandbox_cpus: f64,

    /// Process limit of each sandbox (stops fork bombs).
    #[arg(long, env = "DRYDOCK_SANDBOX_PIDS", default_value_t = 512)]
    pub sandbox_pids: i64,

    /// Network policy of a task when its submitter names none: `gateway` (only drydock's model gateway), `allowlist` (plus the task's allowed domains through drydock's egress proxy), `open` (any public address through the proxy), or `off` (no policy: the sandbox gets `DRYDOCK_SANDBOX_NETWORK` and the agent its key, as before policies existed).
    #[arg(long, env = "DRYDOCK_NETWORK_POLICY", default_value = "allowlist")]
    pub network_policy: String,

    /// The widest network policy a user may choose (`gateway` < `allowlist` < `open`); users may only narrow it.
    #[arg(long, env = "DRYDOCK_NETWORK_POLICY_MAX", default_value = "allowlist")]
    pub network_policy_max: String,

    /// Domains every `allowlist` task may reach, comma-separated (`example.org` also allows its subdomains); a private or loopback address needs DRYDOCK_EGRESS_ALLOW_PRIVATE=true.
    #[arg(long, env = "DRYDOCK_EGRESS_ALLOW", value_delimiter = ',')]
    pub egress_allow: Vec<String>,

    /// Let the egress proxy connect to loopback, private, link-local and metadata addresses (off: refused after name resolution).
    #[arg(long, env = "DRYDOCK_EGRESS_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub egress_allow_private: bool,

    /// TOML price table for metering model use (see docs); unset, drydock's built-in dated table is used.
    #[arg(long, env = "DRYDOCK_PRICES_FILE")]
    pub prices_file: Option<PathBuf>,

    /// Tokens (input + output, cache included) a user may use per UTC day through the model gateway; new turns are refused with 429 beyond it. 0 = no budget.
    #[arg(long, env = "DRYDOCK_DAILY_TOKEN_BUDGET", default_value_t = 0)]
    pub daily_token_budget: u64,

    /// US dollars a user may spend per UTC day through the model gateway (from the price table); new turns are refused with 429 beyond it. 0 = no budget.
    #[arg(long, env = "DRYDOCK_DAILY_COST_BUDGET_USD", default_value_t = 0.0, value_parser = usd_amount)]
    pub daily_cost_budget_usd: f64,

    /// Upstream for Anthropic API calls (e.g. a LiteLLM URL): where drydock's model gateway
    /// forwards them under a network policy, or where agents send them when policies are off.
    #[arg(long, env = "DRYDOCK_ANTHROPIC_BASE_URL", value_parser = http_url)]
    pub anthropic_base_url: Option<String>,

    /// Upstream for OpenAI API calls: where drydock's model gateway forwards them under a
    /// network policy, or where agents send them directly when policies are off.
    #[arg(long, env = "DRYDOCK_OPENAI_BASE_URL", value_parser = http_url)]
    pub openai_base_url: Option<String>,

    /// Upstream for Gemini API calls: where drydock's model gateway forwards them under a
    /// network policy, or where agents send them directly when policies are off.
    #[arg(long, env = "DRYDOCK_GEMINI_BASE_URL", value_parser = http_url)]
    pub gemini_base_url: Option<String>,

    /// Id of this server in sandbox labels and task records; generated once into the data directory when absent.
    #[arg(long, env = "DRYDOCK_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Seconds a running turn's lease lasts (PostgreSQL replicas): each replica renews its leases every quarter of it, and when a replica stops renewing (killed, cut off), another adopts its tasks within this period.
    #[arg(long, env = "DRYDOCK_LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(3..=3600))]
    pub lease_secs: u64,

    /// Log filter in RUST_LOG syntax, e.g. info or drydock=debug,tower_http=info.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,

    /// Log format: text for people, json for log collectors.
    #[arg(long, env = "DRYDOCK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Seconds to let in-flight requests finish after a shutdown signal.
    #[arg(long, env = "DRYDOCK_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace: u64,

    /// Secret of the GitHub webhook (repository or organization) sending to /webhooks/github; webhooks are refused without it.
    #[arg(long, env = "DRYDOCK_GITHUB_WEBHOOK_SECRET", hide_env_values = true)]
    pub github_webhook_secret: Option<SecretString>,

    /// The handle people mention on GitHub to start a task, without the @ (e.g. "@drydock fix this").
    #[arg(long, env = "DRYDOCK_GITHUB_HANDLE", default_value = "drydock")]
    pub github_handle: String,

    /// The issue label that starts a task on the labelled issue.
    #[arg(long, env = "DRYDOCK_GITHUB_TRIGGER_LABEL", default_value = "drydock")]
    pub github_trigger_label: String,

    /// The agent a GitHub mention runs when it names none (e.g. "@drydock codex: ..." names codex).
    #[arg(long, env = "DRYDOCK_GITHUB_DEFAULT_AGENT", default_value = "claude")]
    pub github_default_agent: String,

    /// Days a webhook delivery's receipt (and its line in the status view) is kept before it is pruned.
    #[arg(long, env = "DRYDOCK_WEBHOOK_RECEIPT_DAYS", default_value_t = 30)]
    pub webhook_receipt_days: u32,

    /// Optional GitHub token of a bot account, used only to tell people drydock ignores why (one reply per issue); without it drydock stays silent.
    #[arg(long, env = "DRYDOCK_GITHUB_BOT_TOKEN", hide_env_values = true)]
    pub github_bot_token: Option<SecretString>,
}

/// Where sandboxes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxBackend {
    /// Containers on a Docker host.
    Docker,
    /// Pods in a Kubernetes namespace.
    Kubernetes,
}

/// `key=value,key=value` into a node selector; the error names the bad item.
fn parse_node_selector(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    drydock_sandbox::KubernetesOptions::parse_node_selector(s).map_err(|e| e.to_string())
}

/// How drydock builds its own sandbox image when it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImageBuild {
    /// The Dockerfile when the Docker host can pull its base image, otherwise the offline recipe.
    Auto,
    /// The offline recipe (Debian packages and npm, no container registry; needs root).
    Offline,
    /// The Dockerfile.
    Dockerfile,
    /// Never build: report the image missing.
    Off,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `DRYDOCK_*_BASE_URL`: empty (unset) or an absolute `http`/`https` URL with a host.
fn http_url(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(String::new());
    }
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(value.to_owned())
        }
        _ => Err(format!(
            "{value:?} is not an http:// or https:// URL (e.g. https://litellm.internal:4000)"
        )),
    }
}

/// `DRYDOCK_DAILY_COST_BUDGET_USD`: a finite amount of US dollars, 0 or more.
fn usd_amount(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "{value:?} is not an amount of US dollars (0 or more, e.g. 25 or 7.50; 0 = no budget)"
        )),
    }
}

/// `DRYDOCK_ENVIRONMENT_IMAGES`: `name=image` pairs, comma-separated (may be empty).
fn image_registrations(value: &str) -> Result<String, String> {
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let ok = entry.split_once('=').is_some_and(|(name, image)| {
            let (name, image) = (name.trim(), image.trim());
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !image.is_empty()
                && !image.contains(char::is_whitespace)
        });
        if !ok {
            return Err(format!(
                "{entry:?} is not name=image (e.g. python=registry.local/py:3.12,jdk=registry.local/jdk:21)"
            ));
        }
    }
    Ok(value.to_owned())
}

impl Config {
    /// Checks settings that are only wrong together; the error names them and says what to do.
    ///
    /// Errors: a GitHub OAuth client id without its secret (or the other way round); a daily
    /// budget while network policies are off (budgets are metered by the model gateway, which
    /// only runs under a policy); a sandbox network other than `bridge` or `none` on Kubernetes
    /// (a pod has no Docker network to join); `DOCKER_CERT_PATH` without its TLS files for a
    /// `tcp://` Docker host.
    pub fn check(&self) -> Result<(), String> {
        let network = self.sandbox_network.trim();
        if self.sandbox_backend == SandboxBackend::Kubernetes
            && !matches!(network, "bridge" | "none")
        {
            return Err(format!(
                "DRYDOCK_SANDBOX_NETWORK={network} has no Kubernetes form: with \
                 DRYDOCK_SANDBOX_BACKEND=kubernetes a sandbox pod uses the pod network (bridge) or \
                 none (a default-deny NetworkPolicy); host networking is never given to a sandbox"
            ));
        }
        if self.sandbox_backend == SandboxBackend::Docker
            && let Some(dir) = self
                .docker_cert_path
                .as_deref()
                .filter(|d| !d.as_os_str().is_empty())
            && self
                .docker_host
                .as_deref()
                .is_some_and(|h| h.starts_with("tcp://") || h.starts_with("https://"))
        {
            let missing: Vec<String> = ["ca.pem", "cert.pem", "key.pem"]
                .iter()
                .map(|f| dir.join(f))
                .filter(|p| !p.is_file())
                .map(|p| p.display().to_string())
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "DOCKER_CERT_PATH={} lacks {}: a tcp:// Docker host over TLS needs ca.pem, \
                     cert.pem and key.pem there, as for `docker --tlsverify`",
                    dir.display(),
                    missing.join(", ")
                ));
            }
        }
        let id = self
            .github_client_id
            .as_deref()
            .is_some_and(|v| !v.trim().is_empty());
        let secret = self
            .github_client_secret
            .as_ref()
            .is_some_and(|v| !v.expose().trim().is_empty());
        if id != secret {
            let (set, missing) = if id {
                ("GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET")
            } else {
                ("GITHUB_CLIENT_SECRET", "GITHUB_CLIENT_ID")
            };
            return Err(format!(
                "{set} is set but {missing} is not: set both, from your GitHub OAuth app's page, \
                 or neither"
            ));
        }
        let budget = self.daily_token_budget > 0 || self.daily_cost_budget_usd > 0.0;
        if budget && self.network_policy.trim() == "off" {
            return Err(
                "DRYDOCK_DAILY_TOKEN_BUDGET and DRYDOCK_DAILY_COST_BUDGET_USD are \
                 metered by drydock's model gateway, which DRYDOCK_NETWORK_POLICY=off turns off: \
                 choose a network policy (gateway, allowlist or open) or remove the budget"
                    .to_owned(),
            );
        }
        // An address the proxy refuses after resolution would be allowed in words only: every
        // connection to it would be blocked.
        if !self.egress_allow_private {
            for entry in &self.egress_allow {
                let bare = entry.trim().trim_start_matches('[').trim_end_matches(']');
                if let Ok(ip) = bare.parse::<std::net::IpAddr>()
                    && let Some(kind) = crate::connectors::outbound::forbidden_kind(ip)
                {
                    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                        "an"
                    } else {
                        "a"
                    };
                    return Err(format!(
                        "DRYDOCK_EGRESS_ALLOW names {bare}, {article} {kind} address, which the egress \
                         proxy refuses: set DRYDOCK_EGRESS_ALLOW_PRIVATE=true to let tasks reach \
                         it, or remove it"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Parses settings from an explicit argument list and the environment (tests use this).
    pub fn parse_from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Cli::parse_with_sources(args).map(|cli| cli.config)
    }

    /// The public URL without a trailing slash; when none is configured, `http://{bound}`, with
    /// `localhost` for an unspecified address (`0.0.0.0`, `::`), which no browser can open.
    pub fn public_url_for(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if bound.ip().is_unspecified() => format!("http://localhost:{}", bound.port()),
            None => format!("http://{bound}"),
        }
    }

    /// The image sandboxes run: the named one, or drydock's own content-addressed tag.
    pub fn resolve_sandbox_image(&self) -> String {
        match self.named_sandbox_image.as_deref().map(str::trim) {
            Some(named) if !named.is_empty() => named.to_owned(),
            _ => drydock_sandbox::image::default_image(self.sandbox_image_name.trim()),
        }
    }

    /// Whether the operator named the sandbox image (so drydock never builds it).
    pub fn sandbox_image_is_named(&self) -> bool {
        self.named_sandbox_image
            .as_deref()
            .is_some_and(|named| !named.trim().is_empty())
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> SecretString {
        match &self.database_url {
            Some(url) => url.clone(),
            None => SecretString::new(format!(
                "sqlite://{}",
                self.data_dir.join("drydock.db").display()
            )),
        }
    }
}

/// A string that must never be printed: its `Debug` and `Display` show only that it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

impl FromStr for SecretString {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}
