//! A usable access token for an OAuth connector, refreshed single-flight: however many tasks
//! and tests ask at once, one refresh per connector runs at a time — in this process through
//! [`RefreshLocks`], across replicas sharing PostgreSQL through an advisory lock — and the
//! others wait and use its result. A rotated refresh token replaces the old grant in one
//! compare-and-swap statement, so a concurrent refresh or reconnect is never overwritten by a
//! stale one; a refused refresh marks the connector `needs_reauth`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::oauth::{self, Grant, OAuthError};
use crate::secrets::SecretBox;
use crate::store::{Connector, Store, now_ms};

/// Tokens expiring within this many ms are refreshed before use (a task's first MCP call may
/// come well after the config was written).
pub const REFRESH_MARGIN_MS: i64 = 60_000;

/// Why no token can be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantProblem {
    /// The user never connected (`needs_auth`).
    NotConnected,
    /// The authorization server refused the refresh, or the grant was revoked (`needs_reauth`);
    /// the reason is for people and holds no token.
    NeedsReauth(String),
    /// The authorization server or the database could not be reached; the reason is for people.
    Unavailable(String),
}

impl std::fmt::Display for GrantProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotConnected => {
                f.write_str("it is not connected yet: use Connect on the connectors page")
            }
            Self::NeedsReauth(reason) => write!(f, "it must be connected again ({reason})"),
            Self::Unavailable(reason) => write!(f, "its token could not be renewed ({reason})"),
        }
    }
}

/// The server's refresh locks: one per connector id, dropped when nobody holds or waits for it.
/// Clones share the locks.
#[derive(Debug, Clone, Default)]
pub struct RefreshLocks(Arc<Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>>);

impl RefreshLocks {
    fn lock_for(&self, connector_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock_for(&self.0, connector_id)
    }
}

fn lock_for(
    locks: &Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    connector_id: &str,
) -> Arc<tokio::sync::Mutex<()>> {
    let mut locks = locks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    locks.retain(|_, weak| weak.strong_count() > 0);
    if let Some(lock) = locks.get(connector_id).and_then(Weak::upgrade) {
        return lock;
    }
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    locks.insert(connector_id.to_owned(), Arc::downgrade(&lock));
    lock
}

/// Where grants are read and written.
#[derive(Clone, Copy)]
pub struct TokenSource<'a> {
    /// The database.
    pub store: &'a Store,
    /// Opens and seals grants.
    pub secrets: &'a SecretBox,
    /// `DRYDOCK_ALLOW_PRIVATE_CONNECTOR_URLS`.
    pub allow_private: bool,
    /// This server's refresh locks.
    pub locks: &'a RefreshLocks,
    /// The circuit breaker's base back-off, ms (`DRYDOCK_CONNECTOR_BACKOFF_SECS`).
    pub backoff_ms: i64,
}

impl TokenSource<'_> {
    /// Opens a connector's sealed grant.
    pub fn open(&self, sealed: &str) -> Result<Grant, GrantProblem> {
        self.secrets
            .open_str(sealed)
            .ok()
            .and_then(|json| serde_json::from_str(&json).ok())
            .ok_or_else(|| {
                GrantProblem::NeedsReauth("its stored tokens could not be decrypted".into())
            })
    }

    /// Seals a grant for `connectors.oauth_enc`.
    pub fn seal(&self, grant: &Grant) -> Result<String, GrantProblem> {
        serde_json::to_string(grant)
            .map(|json| self.secrets.seal_str(&json))
            .map_err(|_| GrantProblem::Unavailable("could not store the tokens".into()))
    }

    fn usable(row: &Connector) -> Result<&str, GrantProblem> {
        if let Some(reason) = &row.oauth_error {
            return Err(GrantProblem::NeedsReauth(reason.clone()));
        }
        row.oauth_enc.as_deref().ok_or(GrantProblem::NotConnected)
    }

    async fn reload(&self, id: &str) -> Result<Connector, GrantProblem> {
        self.store
            .get_connector_by_id(id)
            .await
            .map_err(|_| GrantProblem::Unavailable("the database could not be read".into()))?
            .ok_or(GrantProblem::NotConnected)
    }

    /// The connector's grant with an access token valid for at least [`REFRESH_MARGIN_MS`],
    /// refreshing it first when needed. With `rejected`, the caller saw the server refuse the
    /// current access token (a 401), so it is refreshed even if it does not look expired —
    /// unless another caller replaced it meanwhile.
    pub async fn fresh_grant(
        &self,
        row: &Connector,
        rejected: bool,
    ) -> Result<Grant, GrantProblem> {
        let seen = Self::usable(row)?.to_owned();
        let grant = self.open(&seen)?;
        if !rejected && !grant.expires_within(now_ms(), REFRESH_MARGIN_MS) {
            return Ok(grant);
        }
        if let Some(until) = super::breaker::paused(row, now_ms()) {
            let when = chrono::DateTime::from_timestamp_millis(until)
                .map_or_else(String::new, |t| t.format("%H:%M:%S UTC").to_string());
            return Err(GrantProblem::Unavailable(format!(
                "its server is paused until {when} after repeated failures to reach it"
            )));
        }
        let lock = self.locks.lock_for(&row.id);
        let _held = lock.lock().await;
        self.store
            .with_refresh_lock(&row.id, self.refresh_locked(row, &seen, &grant))
            .await
            .map_err(|_| GrantProblem::Unavailable("the database could not be read".into()))?
    }

    /// The refresh itself, with the connector's locks held.
    async fn refresh_locked(
        &self,
        row: &Connector,
        seen: &str,
        grant: &Grant,
    ) -> Result<Grant, GrantProblem> {
        // Whoever held the lock before may have refreshed already: then use their result.
        let current = self.reload(&row.id).await?;
        let sealed = Self::usable(&current)?.to_owned();
        if sealed != seen {
            return self.open(&sealed);
        }
        match oauth::refresh(grant, now_ms(), self.allow_private).await {
            Ok(renewed) => {
                if current.failures > 0 {
                    let _ = self
                        .store
                        .record_connector_reachability(&row.id, None)
                        .await;
                }
                let new_sealed = self.seal(&renewed)?;
                let swapped = self
                    .store
                    .swap_connector_grant(&row.id, &sealed, &new_sealed)
                    .await
                    .map_err(|_| {
                        GrantProblem::Unavailable("could not store the new tokens".into())
                    })?;
                if swapped {
                    tracing::info!(connector_id = %row.id, "connector token refreshed");
                    Ok(renewed)
                } else {
                    // Another replica refreshed or the user reconnected in between: theirs wins.
                    let current = self.reload(&row.id).await?;
                    self.open(Self::usable(&current)?)
                }
            }
            Err(OAuthError::Refused {
                error, description, ..
            }) => {
                let reason = super::Scrubber::new(grant.secret_values().iter())
                    .map(|s| {
                        s.scrub(&format!(
                            "the authorization server refused the refresh: {error}{description}"
                        ))
                    })
                    .unwrap_or_else(|_| {
                        format!("the authorization server refused the refresh: {error}")
                    });
                let marked = self
                    .store
                    .refuse_connector_grant(&row.id, &sealed, &reason)
                    .await
                    .map_err(|_| {
                        GrantProblem::Unavailable("the database could not be written".into())
                    })?;
                if marked {
                    tracing::warn!(connector_id = %row.id, "connector refresh refused; needs re-authentication");
                    Err(GrantProblem::NeedsReauth(reason))
                } else {
                    let current = self.reload(&row.id).await?;
                    self.open(Self::usable(&current)?)
                }
            }
            Err(other) => {
                if super::breaker::is_oauth_outage(&other) {
                    let until = super::breaker::pause_after_failure(
                        current.failures,
                        now_ms(),
                        self.backoff_ms,
                    );
                    let _ = self
                        .store
                        .record_connector_reachability(&row.id, Some(until))
                        .await;
                }
                let reason = super::Scrubber::new(grant.secret_values().iter())
                    .map(|s| s.scrub(&other.to_string()))
                    .unwrap_or_else(|_| "the authorization server could not be reached".into());
                Err(GrantProblem::Unavailable(reason))
            }
        }
    }
}
