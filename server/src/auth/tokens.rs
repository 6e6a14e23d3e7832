//! The users' GitHub tokens for work done on their behalf (cloning, pushing, opening pull
//! requests, reading repositories): opened from their sealed column, and renewed with the refresh
//! token when they expire (GitHub App user tokens last 8 hours).
//!
//! A token past its expiry, or within [`REFRESH_MARGIN_MS`] of it, is refreshed once: one refresh
//! at a time per user in this process (GitHub spends a refresh token on use, so a second,
//! concurrent refresh with the same one would fail), and whoever waited reads the renewed row.
//! Across replicas, a refresh that fails because another one spent the refresh token first uses
//! the renewal that one stored. The new tokens are stored sealed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::SecretString;
use crate::github::{Github, GithubError};
use crate::secrets::SecretBox;
use crate::store::{GithubAccount, Store, now_ms};

/// How close to its expiry a token is refreshed rather than used, in milliseconds.
pub const REFRESH_MARGIN_MS: i64 = 60_000;

/// Why no usable GitHub token could be had; each message tells the user to sign in again or
/// says what failed, and none contains a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The user has no stored GitHub token.
    #[error("drydock has no GitHub token for you; sign in again")]
    Missing,
    /// The stored token could not be opened (the encryption key changed).
    #[error("your GitHub token could not be decrypted; sign in again")]
    Unreadable,
    /// The token expired and cannot be renewed (no refresh token, or GitHub refused it).
    #[error("your GitHub sign-in expired and could not be renewed ({0}); sign in again")]
    RefreshFailed(String),
    /// The database failed.
    #[error("could not read your GitHub sign-in")]
    Store,
}

/// Opens and renews users' GitHub tokens. Cheap to clone; clones share the per-user locks.
#[derive(Clone)]
pub struct GithubTokens {
    store: Store,
    secrets: SecretBox,
    github: Github,
    flights: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl std::fmt::Debug for GithubTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubTokens").finish_non_exhaustive()
    }
}

impl GithubTokens {
    /// Tokens read from `store`, opened with `secrets`, renewed at `github`.
    pub fn new(store: Store, secrets: SecretBox, github: Github) -> Self {
        Self {
            store,
            secrets,
            github,
            flights: Arc::default(),
        }
    }

    /// The user's GitHub token, refreshed first when it has expired or expires within
    /// [`REFRESH_MARGIN_MS`].
    pub async fn current(&self, user_id: &str) -> Result<SecretString, TokenError> {
        let account = self.account(user_id).await?;
        if !expiring(&account) {
            return self.open(&account.access_token_enc);
        }
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            flights.entry(user_id.to_owned()).or_default().clone()
        };
        let _one_at_a_time = flight.lock().await;
        // Another caller may have renewed it while this one waited.
        let account = self.account(user_id).await?;
        if !expiring(&account) {
            return self.open(&account.access_token_enc);
        }
        match self.refresh(&account).await {
            Ok(token) => Ok(token),
            Err(err) => {
                // Another replica may have spent the refresh token first and stored its renewal.
                match self.account(user_id).await {
                    Ok(now)
                        if now.access_token_enc != account.access_token_enc && !expiring(&now) =>
                    {
                        self.open(&now.access_token_enc)
                    }
                    _ => Err(err),
                }
            }
        }
    }

    async fn account(&self, user_id: &str) -> Result<GithubAccount, TokenError> {
        self.store
            .get_github_account(user_id)
            .await
            .map_err(|_| TokenError::Store)?
            .ok_or(TokenError::Missing)
    }

    fn open(&self, sealed: &str) -> Result<SecretString, TokenError> {
        self.secrets
            .open_str(sealed)
            .map(SecretString::new)
            .map_err(|_| TokenError::Unreadable)
    }

    async fn refresh(&self, account: &GithubAccount) -> Result<SecretString, TokenError> {
        let refresh = account
            .refresh_token_enc
            .as_deref()
            .ok_or_else(|| TokenError::RefreshFailed("GitHub gave no refresh token".into()))?;
        let refresh = self.open(refresh)?;
        let renewed = self.github.refresh_token(&refresh).await.map_err(|err| {
            tracing::warn!(user_id = %account.user_id, error = %err, "could not refresh a GitHub token");
            TokenError::RefreshFailed(match err {
                GithubError::OAuth(detail) => format!("GitHub said: {detail}"),
                other => other.to_string(),
            })
        })?;
        let sealed = self.secrets.seal_str(renewed.access_token.expose());
        let sealed_refresh = renewed
            .refresh_token
            .as_ref()
            .map(|t| self.secrets.seal_str(t.expose()));
        // GitHub Apps grant permissions, not scopes: keep what sign-in recorded when none come.
        let scopes = if renewed.scopes.is_empty() {
            account.scopes.clone()
        } else {
            renewed.scopes.clone()
        };
        self.store
            .upsert_github_account(
                &account.user_id,
                &sealed,
                &scopes,
                renewed.expires_in.map(|s| now_ms() + s * 1000),
                sealed_refresh.as_deref(),
            )
            .await
            .map_err(|_| TokenError::Store)?;
        tracing::info!(user_id = %account.user_id, "refreshed a GitHub token");
        Ok(renewed.access_token)
    }
}

/// Whether the account's token has expired or expires within [`REFRESH_MARGIN_MS`].
fn expiring(account: &GithubAccount) -> bool {
    account
        .token_expires_at
        .is_some_and(|at| at - REFRESH_MARGIN_MS <= now_ms())
}
