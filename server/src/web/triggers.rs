//! Settings pages of the triggers: personal API tokens (each shown once, with a copy button) and
//! the GitHub webhook's recent deliveries with their outcomes.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;

use super::Chrome;
use super::pages::{chrome, fmt_time};
use crate::auth::CurrentUser;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::now_ms;

/// Deliveries listed on the webhook page and on the operator page.
pub(super) const DELIVERIES_SHOWN: i64 = 50;

/// A token row.
pub struct TokenRow {
    id: String,
    name: String,
    scope: String,
    hint: String,
    created: String,
    last_used: String,
    expires: String,
    expired: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "tokens.html")]
pub(super) struct TokensPage {
    chrome: Chrome,
    rows: Vec<TokenRow>,
    public_url: String,
}

/// Settings → API tokens.
pub(super) async fn tokens_page(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<TokensPage, AppError> {
    let now = now_ms();
    let rows = state
        .store
        .list_api_tokens(&user.user.id)
        .await?
        .into_iter()
        .map(|t| TokenRow {
            expired: t.expires_at.is_some_and(|at| at <= now),
            id: t.id,
            name: t.name,
            scope: t.scope,
            hint: t.hint,
            created: fmt_time(t.created_at),
            last_used: t.last_used_at.map(fmt_time).unwrap_or_default(),
            expires: t.expires_at.map(fmt_time).unwrap_or_default(),
        })
        .collect();
    Ok(TokensPage {
        chrome: chrome(&state, &user, "tokens").await,
        rows,
        public_url: state.public_url.clone(),
    })
}

/// A delivery row.
pub struct DeliveryRow {
    pub(super) received: String,
    pub(super) event: String,
    pub(super) delivery_id: String,
    pub(super) repo: String,
    pub(super) sender: String,
    pub(super) outcome: String,
    pub(super) detail: String,
    pub(super) task_id: String,
}

/// Rows of the deliveries table (`deliveries.html`), in the order given.
pub(super) fn delivery_rows(deliveries: Vec<crate::store::WebhookDelivery>) -> Vec<DeliveryRow> {
    deliveries
        .into_iter()
        .map(|d| DeliveryRow {
            received: fmt_time(d.received_at),
            event: d.event,
            delivery_id: d.delivery_id.unwrap_or_default(),
            repo: d.repo.unwrap_or_default(),
            sender: d.sender.unwrap_or_default(),
            outcome: d.outcome,
            detail: d.detail,
            task_id: d.task_id.unwrap_or_default(),
        })
        .collect()
}

#[derive(Template, WebTemplate)]
#[template(path = "webhooks.html")]
pub(super) struct WebhooksPage {
    chrome: Chrome,
    configured: bool,
    endpoint: String,
    handle: String,
    label: String,
    deliveries: Vec<DeliveryRow>,
    /// Deliveries of the last day that concern no user, by outcome.
    unmatched: Vec<(String, i64)>,
}

/// Settings → GitHub webhook: the deliveries that concern the user, newest first, and counts of
/// the others (bad signatures, strangers) of the last day.
pub(super) async fn webhooks_page(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<WebhooksPage, AppError> {
    let deliveries = delivery_rows(
        state
            .store
            .list_deliveries_of_user(&user.user.id, DELIVERIES_SHOWN)
            .await?,
    );
    let unmatched = state
        .store
        .count_unmatched_deliveries(now_ms() - 86_400_000)
        .await?;
    Ok(WebhooksPage {
        chrome: chrome(&state, &user, "webhooks").await,
        configured: state.config.github_webhook_secret.is_some(),
        endpoint: format!("{}/webhooks/github", state.public_url),
        handle: state.config.github_handle.clone(),
        label: state.config.github_trigger_label.clone(),
        deliveries,
        unmatched,
    })
}
