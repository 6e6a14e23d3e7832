//! Network policy and model gateway (issue 17): what a sandbox may reach, and the one way out
//! of it.
//!
//! A sandbox of a task with a policy has no network at all (`--network none`: loopback only, no
//! route). Inside it a relay listens on `127.0.0.1:`[`PROXY_PORT`] and carries every connection
//! to drydock over an exec (see `drydock_sandbox::EgressListener`), where [`proxy`] serves it:
//! the model gateway (`/gateway/{provider}/…`, the placeholder token swapped for the user's real
//! key), HTTP forward proxying and HTTPS `CONNECT` tunnels checked against the task's
//! [`NetworkPolicy`] by host name, with the addresses resolved here and private ones refused.
//! Every connection through a task's relay belongs to that task, so no proxy credentials are
//! needed, and nothing per-task is baked into the container.

pub mod meter;
pub mod policy;
pub mod proxy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use policy::{NetworkPolicy, NetworkRequest, PolicyBounds, PolicyMode, Preset};

use crate::config::SecretString;
use crate::store::Store;
use crate::tasks::EventHub;

/// The port the relay listens on inside a sandbox.
pub const PROXY_PORT: u16 = 3128;

/// The proxy as processes in the sandbox reach it.
pub const PROXY_URL: &str = "http://127.0.0.1:3128";

/// Environment of every process in a sandbox with a policy: the proxy for well-behaved tools
/// (curl, git, pip, npm, cargo, Go, Node with `NODE_USE_ENV_PROXY`), never for the gateway on
/// loopback. Nothing here is secret or per task, so it belongs to the sandbox's creation spec.
pub fn proxy_env() -> Vec<(String, String)> {
    let no_proxy = "127.0.0.1,localhost,::1";
    [
        ("HTTP_PROXY", PROXY_URL),
        ("HTTPS_PROXY", PROXY_URL),
        ("http_proxy", PROXY_URL),
        ("https_proxy", PROXY_URL),
        ("NO_PROXY", no_proxy),
        ("no_proxy", no_proxy),
        ("npm_config_proxy", PROXY_URL),
        ("npm_config_https_proxy", PROXY_URL),
        ("PIP_PROXY", PROXY_URL),
        ("CARGO_HTTP_PROXY", PROXY_URL),
        ("NODE_USE_ENV_PROXY", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Where each provider's API is when the operator names no upstream (`DRYDOCK_*_BASE_URL`).
/// The path a client asks of the gateway after `/gateway/{provider}` is appended to it.
pub fn default_upstream(provider: &str) -> Option<&'static str> {
    match provider {
        "anthropic" => Some("https://api.anthropic.com"),
        "openai" => Some("https://api.openai.com/v1"),
        "gemini" => Some("https://generativelanguage.googleapis.com"),
        _ => None,
    }
}

/// The gateway's base URL for `provider` as the agent in the sandbox is given it.
pub fn gateway_url(provider: &str) -> String {
    format!("{PROXY_URL}/gateway/{provider}")
}

/// A placeholder's grant: valid while its turn runs.
#[derive(Clone)]
pub(crate) struct Grant {
    pub task_id: String,
    pub user_id: String,
    pub turn: i64,
    pub provider: String,
    pub key: SecretString,
    /// Where the gateway forwards this grant's calls: the agent's own base URL for the
    /// provider (`base_urls` in the agents file), else the server's upstream.
    pub upstream: String,
}

/// The start of today (UTC) and of tomorrow, in unix ms: the window of daily quotas and budgets.
pub fn utc_day() -> (i64, i64) {
    let now = chrono::Utc::now();
    let start = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(0, |d| d.and_utc().timestamp_millis());
    (start, start + 86_400_000)
}

/// A user's daily model budget (`DRYDOCK_DAILY_TOKEN_BUDGET`, `DRYDOCK_DAILY_COST_BUDGET_USD`);
/// 0 means none.
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    /// Tokens (every kind) per UTC day.
    pub tokens: u64,
    /// US dollars per UTC day.
    pub cost_usd: f64,
}

/// Why a user's new turn may not start: the day's model budget is spent.
#[derive(Debug, Clone)]
pub struct BudgetSpent {
    /// For the user: what was used of what, and when more is available.
    pub message: String,
    /// `tokens_used`, `token_budget`, `cost_usd`, `cost_budget_usd`, `reset_at` (unix ms), as
    /// the 429 answer's details.
    pub details: serde_json::Value,
}

/// Settings of the egress proxy and gateway, from the configuration.
#[derive(Debug, Clone)]
pub struct EgressSettings {
    /// The operator's bounds on policies.
    pub bounds: PolicyBounds,
    /// The proxy may connect to private, loopback, link-local and metadata addresses.
    pub allow_private: bool,
    /// Upstream base URL by provider (the operator's, or the provider's own).
    pub upstreams: HashMap<String, String>,
    /// Prices for metering.
    pub prices: meter::PriceTable,
    /// The per-user daily budget new turns are checked against.
    pub budget: Budget,
}

/// The egress proxy and model gateway of this server: placeholder grants, and the handles the
/// per-task proxies log and meter through.
pub struct Egress {
    /// Settings.
    pub settings: EgressSettings,
    grants: Mutex<HashMap<String, Grant>>,
    /// Key the placeholders are derived with (HMAC-SHA256), the same on every replica.
    placeholder_key: [u8; 32],
    pub(crate) store: Store,
    pub(crate) hub: Arc<EventHub>,
    pub(crate) client: reqwest::Client,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Egress {
    /// The service; `client` reaches the providers (no proxy, no redirects). `server_key` is
    /// the key every replica shares (`ENCRYPTION_KEY`): placeholders are derived from it, so a
    /// replica that adopts a turn grants the placeholder its agent already holds.
    pub fn new(
        settings: EgressSettings,
        store: Store,
        hub: Arc<EventHub>,
        server_key: &[u8; 32],
    ) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(15))
            .build()
            .unwrap_or_default();
        Self {
            settings,
            grants: Mutex::new(HashMap::new()),
            placeholder_key: hmac_sha256(server_key, &[b"drydock model gateway placeholders v1"]),
            store,
            hub,
            client,
        }
    }

    /// Whether `user_id`'s model use today (through the gateway) reached the daily token or
    /// cost budget: checked when a task or follow-up is submitted (429) and again when its turn
    /// starts (a queued turn behind one that spent the budget must not run).
    pub async fn budget_spent(
        &self,
        user_id: &str,
    ) -> Result<Option<BudgetSpent>, crate::store::StoreError> {
        let Budget {
            tokens: tokens_budget,
            cost_usd: cost_budget,
        } = self.settings.budget;
        if tokens_budget == 0 && cost_budget <= 0.0 {
            return Ok(None);
        }
        let (day_start, reset_at) = utc_day();
        let (tokens, micro_usd) = self.store.usage_since(user_id, day_start).await?;
        let cost = micro_usd as f64 / 1e6;
        let over_tokens = tokens_budget > 0 && u64::try_from(tokens).unwrap_or(0) >= tokens_budget;
        let over_cost = cost_budget > 0.0 && cost >= cost_budget;
        if !over_tokens && !over_cost {
            return Ok(None);
        }
        let what = if over_tokens {
            format!("{tokens} of your {tokens_budget} model tokens")
        } else {
            format!("${cost:.2} of your ${cost_budget:.2} model budget")
        };
        Ok(Some(BudgetSpent {
            message: format!(
                "you have used {what} for today; new turns can start after midnight UTC"
            ),
            details: serde_json::json!({
                "tokens_used": tokens, "token_budget": tokens_budget,
                "cost_usd": cost, "cost_budget_usd": cost_budget, "reset_at": reset_at,
            }),
        }))
    }

    /// Where the gateway sends `agent`'s calls to `provider`: the agent's own base URL from the
    /// agents file (an operator agent's model endpoint, say), else the operator's
    /// `DRYDOCK_*_BASE_URL` or the provider's public API; `None` when there is none (then the
    /// agent cannot use the gateway).
    pub fn upstream_for(
        &self,
        agent: &drydock_agents::AgentDefinition,
        provider: &str,
    ) -> Option<String> {
        agent
            .base_urls
            .get(provider)
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .or_else(|| self.settings.upstreams.get(provider).map(String::as_str))
            .map(|u| u.trim_end_matches('/').to_owned())
    }

    /// The placeholder token of one turn of a task for `provider`, standing for the user's real
    /// `key` (forwarded to `upstream`) until [`Egress::revoke`]. Shaped like no real key:
    /// `ddgw-` and 64 hex digits, an HMAC-SHA256 (RFC 2104) of the task, turn and provider under
    /// a key derived from the server's: unguessable without that key, different for every turn, and the
    /// same on every replica, so the replica that adopts a turn from a lost one grants the
    /// placeholder the agent holds (only while that turn runs there).
    pub fn issue(
        &self,
        task_id: &str,
        user_id: &str,
        turn: i64,
        provider: &str,
        key: SecretString,
        upstream: String,
    ) -> String {
        let turn_text = turn.to_string();
        let mac = hmac_sha256(
            &self.placeholder_key,
            &[
                task_id.as_bytes(),
                turn_text.as_bytes(),
                provider.as_bytes(),
            ],
        );
        let token = format!("ddgw-{}", hex::encode(mac));
        self.lock().insert(
            token.clone(),
            Grant {
                task_id: task_id.to_owned(),
                user_id: user_id.to_owned(),
                turn,
                provider: provider.to_owned(),
                key,
                upstream,
            },
        );
        token
    }

    /// Ends every placeholder of `task_id` (its turn is over): replaying one is refused.
    pub fn revoke(&self, task_id: &str) {
        self.lock().retain(|_, g| g.task_id != task_id);
    }

    /// Every live placeholder that occurs in `text`, with its grant.
    pub(crate) fn find_in(&self, text: &str) -> Option<(String, Grant)> {
        let grants = self.lock();
        grants
            .iter()
            .find(|(t, _)| text.contains(t.as_str()))
            .map(|(t, g)| (t.clone(), g.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Grant>> {
        self.grants.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// HMAC-SHA256 (RFC 2104) under `key` of `parts`, each length-prefixed so that no two lists of
/// parts give the same input.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC accepts a key of any length");
    for part in parts {
        mac.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod placeholder_tests {
    use super::hmac_sha256;

    #[test]
    fn placeholder_inputs_are_length_prefixed() {
        // ("ab", "c") and ("a", "bc") must not collide.
        let key = [7u8; 32];
        assert_ne!(
            hmac_sha256(&key, &[b"ab", b"c"]),
            hmac_sha256(&key, &[b"a", b"bc"])
        );
        assert_eq!(hmac_sha256(&key, &[b"a"]), hmac_sha256(&key, &[b"a"]));
        assert_ne!(hmac_sha256(&key, &[b"a"]), hmac_sha256(&[8u8; 32], &[b"a"]));
    }
}
