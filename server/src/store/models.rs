//! Rows as the store returns them. Encrypted columns stay sealed here; callers open them.

use std::fmt;

/// A person who signed in with GitHub.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    /// drydock's id.
    pub id: String,
    /// GitHub's numeric user id (stable across renames).
    pub github_id: i64,
    /// GitHub login.
    pub login: String,
    /// Display name.
    pub name: Option<String>,
    /// Primary email.
    pub email: Option<String>,
    /// Avatar image URL.
    pub avatar_url: Option<String>,
    /// First sign-in.
    pub created_at: i64,
    /// Latest sign-in.
    pub last_login_at: i64,
}

/// The GitHub token of a user, sealed.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GithubAccount {
    /// Owner.
    pub user_id: String,
    /// Sealed OAuth access token.
    pub access_token_enc: String,
    /// Scopes GitHub granted, comma-separated.
    pub scopes: String,
    /// When the token expires, if it does.
    pub token_expires_at: Option<i64>,
    /// Sealed refresh token, if GitHub issued one.
    pub refresh_token_enc: Option<String>,
    /// Last time the row was written.
    pub updated_at: i64,
}

impl fmt::Debug for GithubAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubAccount")
            .field("user_id", &self.user_id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// A sign-in session; the cookie carries only its id.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Session {
    /// Session id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Created.
    pub created_at: i64,
    /// Ends.
    pub expires_at: i64,
    /// Set when the user signed out.
    pub revoked_at: Option<i64>,
    /// Browser that created it.
    pub user_agent: Option<String>,
}

/// A user's API key for one provider, sealed.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKey {
    /// Owner.
    pub user_id: String,
    /// Provider id (`anthropic`, `openai`, ...).
    pub provider: String,
    /// Sealed key.
    pub key_enc: String,
    /// Last four characters, shown to the user.
    pub hint: String,
    /// First stored.
    pub created_at: i64,
    /// Last replaced.
    pub updated_at: i64,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("user_id", &self.user_id)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

/// An MCP server configuration of a user.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Connector {
    /// Connector id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Name, unique per user.
    pub name: String,
    /// Free text.
    pub description: String,
    /// `stdio` or `http`.
    pub transport: String,
    /// Command for stdio servers.
    pub command: Option<String>,
    /// JSON array of arguments for stdio servers.
    pub args: String,
    /// URL for HTTP servers.
    pub url: Option<String>,
    /// Sealed JSON object of environment variables.
    pub env_enc: Option<String>,
    /// Sealed JSON object of HTTP headers.
    pub headers_enc: Option<String>,
    /// Used by tasks by default.
    pub enabled: bool,
    /// `ok` or `error` from the last connection test.
    pub last_status: Option<String>,
    /// When it was last tested.
    pub last_checked_at: Option<i64>,
    /// Redacted error of the last test.
    pub last_error: Option<String>,
    /// Tools offered at the last successful test.
    pub tool_count: Option<i64>,
    /// Created.
    pub created_at: i64,
    /// Last changed.
    pub updated_at: i64,
    /// `headers` (static headers) or `oauth`.
    pub auth: String,
    /// Sealed JSON of the OAuth grant (`connectors::oauth::Grant`); `None` until connected.
    pub oauth_enc: Option<String>,
    /// Why the OAuth grant can no longer be used (redacted); `None` while it can.
    pub oauth_error: Option<String>,
    /// Consecutive times the remote server could not be reached.
    pub failures: i64,
    /// Circuit breaker: drydock does not contact the server before this (unix ms).
    pub paused_until: Option<i64>,
}

/// An OAuth authorization request in flight (`connector_oauth_requests`).
#[derive(Clone, sqlx::FromRow)]
pub struct OAuthRequest {
    /// The `state` sent to the authorization server.
    pub state: String,
    /// The connector being connected.
    pub connector_id: String,
    /// Who started it.
    pub user_id: String,
    /// The session that started it; the callback must come from the same one.
    pub session_id: String,
    /// Sealed JSON: PKCE verifier, client, endpoints, resource.
    pub pending_enc: String,
    /// Created, unix ms.
    pub created_at: i64,
    /// After this (unix ms) the callback is refused.
    pub expires_at: i64,
}

impl fmt::Debug for OAuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthRequest")
            .field("connector_id", &self.connector_id)
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("name", &self.name)
            .field("transport", &self.transport)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// A task: a prompt run by an agent against a repository.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Task {
    /// Task id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Short title derived from the prompt.
    pub title: String,
    /// The prompt as given.
    pub prompt: String,
    /// `owner/name`.
    pub repo: String,
    /// Branch the work starts from (the repository default when unset).
    pub base_branch: Option<String>,
    /// Branch the work is pushed to.
    pub branch: Option<String>,
    /// Agent id.
    pub agent: String,
    /// Model id.
    pub model: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed`, `stopped` or `timed_out`.
    pub status: String,
    /// Why it ended the way it did, for people.
    pub status_reason: Option<String>,
    /// Install dependencies before the agent runs.
    pub install_deps: bool,
    /// Deadline in seconds.
    pub max_duration_s: i64,
    /// Keep the sandbox after the turn.
    pub keep_alive: bool,
    /// Open a pull request when done.
    pub create_pr: bool,
    /// Docker container while it exists.
    pub container_id: Option<String>,
    /// Commit pushed.
    pub commit_sha: Option<String>,
    /// Pull request URL.
    pub pr_url: Option<String>,
    /// Pull request number.
    pub pr_number: Option<i64>,
    /// Last event seq handed out.
    pub event_seq: i64,
    /// Server instance that claimed it.
    pub runner_id: Option<String>,
    /// The instance label of the sandbox in `container_id` when it is not `runner_id`'s (the
    /// task, or its kept sandbox, was adopted from a lost replica); `None`: `runner_id`'s.
    pub sandbox_instance: Option<String>,
    /// Turns started so far (the first run and each follow-up).
    pub turns: i64,
    /// The commit the first turn started from.
    pub base_sha: Option<String>,
    /// When a kept-alive sandbox is removed for idleness, unix ms.
    pub sandbox_expires_at: Option<i64>,
    /// Port of the dev server in the kept-alive sandbox, while it runs.
    pub preview_port: Option<i64>,
    /// Where it was started from: `web`, `api`, `cli` or `github`.
    pub origin: String,
    /// The link to what started it (a GitHub comment or issue), when there is one.
    pub source_url: Option<String>,
    /// The network policy as JSON (`egress::NetworkPolicy`); `None` when policies were off.
    pub network_policy: Option<String>,
    /// Requests the egress proxy refused, all turns.
    pub blocked_requests: i64,
    /// The agent's key was given to the sandbox (its CLI cannot use the model gateway).
    pub key_in_sandbox: bool,
    /// Input tokens metered by the model gateway, all turns.
    pub input_tokens: i64,
    /// Output tokens metered by the model gateway, all turns.
    pub output_tokens: i64,
    /// Tokens read from the provider's prompt cache.
    pub cache_read_tokens: i64,
    /// Tokens written to the provider's prompt cache.
    pub cache_write_tokens: i64,
    /// Cost from the price table, millionths of a US dollar.
    pub cost_micro_usd: i64,
    /// Submitted.
    pub created_at: i64,
    /// Started running.
    pub started_at: Option<i64>,
    /// Ended.
    pub finished_at: Option<i64>,
    /// Last changed.
    pub updated_at: i64,
}

/// One message of a task's conversation.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TaskMessage {
    /// Message id.
    pub id: String,
    /// Task.
    pub task_id: String,
    /// `user` or `agent`.
    pub role: String,
    /// Text, redacted.
    pub content: String,
    /// The turn it belongs to; `None` for a follow-up still waiting for its turn, 0 for one
    /// that never ran because the task was stopped.
    pub turn: Option<i64>,
    /// Written.
    pub created_at: i64,
}

/// One line of a task's log.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct TaskEvent {
    /// Task.
    #[serde(skip)]
    pub task_id: String,
    /// Position in the task's log, from 1, without gaps.
    pub seq: i64,
    /// Unix milliseconds.
    pub ts: i64,
    /// `info`, `command`, `stdout`, `stderr`, `agent`, `error` or `success`.
    pub kind: String,
    /// Text, redacted.
    pub text: String,
}

/// A personal API token; only its hash is stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiToken {
    /// Token id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// The owner's name for it.
    pub name: String,
    /// `read` (GET only) or `write`.
    pub scope: String,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// The token's first characters, to tell tokens apart.
    pub hint: String,
    /// Created, unix ms.
    pub created_at: i64,
    /// Refused from then on, unix ms; `None` never expires.
    pub expires_at: Option<i64>,
    /// Last accepted, unix ms (updated at most once a minute).
    pub last_used_at: Option<i64>,
    /// Revoked, unix ms.
    pub revoked_at: Option<i64>,
}

/// One GitHub webhook delivery as received, with what drydock did about it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WebhookDelivery {
    /// Row id.
    pub id: String,
    /// `X-GitHub-Delivery`, when the request carried one.
    pub delivery_id: Option<String>,
    /// The delivery id again on the first delivery (the idempotency receipt), `None` otherwise.
    pub receipt_key: Option<String>,
    /// For a redelivery: the row of the first delivery, whose outcome was answered again.
    pub duplicate_of: Option<String>,
    /// `X-GitHub-Event`.
    pub event: String,
    /// `owner/name`, when known.
    pub repo: Option<String>,
    /// The GitHub login of who caused it, when known.
    pub sender: Option<String>,
    /// The drydock user it was matched to.
    pub user_id: Option<String>,
    /// `processing`, `accepted`, `ignored`, `duplicate`, `bad_signature` or `failed`.
    pub outcome: String,
    /// Why, for people.
    pub detail: String,
    /// The task it started or continued.
    pub task_id: Option<String>,
    /// Received, unix ms.
    pub received_at: i64,
    /// Pruned after, unix ms.
    pub expires_at: i64,
}

/// The GitHub issue or pull request a task reports to.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TaskGithubThread {
    /// Task.
    pub task_id: String,
    /// `owner/name`.
    pub repo: String,
    /// Issue or pull request number.
    pub issue_number: i64,
    /// Last set, unix ms.
    pub updated_at: i64,
}

/// The environment a user configured in drydock for one repository (table `environments`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EnvironmentRow {
    /// Owner.
    pub user_id: String,
    /// `owner/name`.
    pub repo: String,
    /// An operator-registered image name; `None` for drydock's sandbox image.
    pub image: Option<String>,
    /// Setup script (runs once per cache key).
    pub setup: Option<String>,
    /// Maintenance script (runs on every start from a snapshot).
    pub maintenance: Option<String>,
    /// JSON object of plain variables.
    pub variables: String,
    /// Bumped by "rebuild"; part of the cache key.
    pub generation: i64,
    /// Where the environment of the last setup came from.
    pub last_source: Option<String>,
    /// When the last setup ran, unix ms.
    pub last_setup_at: Option<i64>,
    /// `succeeded` or `failed`.
    pub last_setup_status: Option<String>,
    /// The last setup's log, redacted.
    pub last_setup_log: Option<String>,
    /// First stored, unix ms.
    pub created_at: i64,
    /// Last changed, unix ms.
    pub updated_at: i64,
}

/// One sealed secret of an environment (table `environment_secrets`).
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EnvironmentSecretRow {
    /// Variable name it is given as.
    pub name: String,
    /// Sealed value.
    pub value_enc: String,
    /// Whether the agent's own process gets it too (otherwise setup and maintenance only).
    pub agent_may_see: bool,
    /// Unix ms of the last change: part of the cache key instead of the value.
    pub version: i64,
    /// Last changed, unix ms.
    pub updated_at: i64,
}

impl std::fmt::Debug for EnvironmentSecretRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvironmentSecretRow")
            .field("name", &self.name)
            .field("agent_may_see", &self.agent_may_see)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}
