//! Server-rendered pages and the static files embedded in the binary.
//!
//! Static files are served under `/static/{name}`; pages link them as `/static/{name}?v={hash}`
//! so a response can be cached for a year and a new build still reaches every browser. Every page
//! carries a strict Content-Security-Policy: no inline script or style, nothing from elsewhere
//! except avatar images.

mod admin;
mod assets;
mod pages;
mod triggers;

use askama::Template;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

pub use self::assets::asset_url;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::User;
use crate::tasks::Quota;

/// The Content-Security-Policy of every page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Routes of pages and static files.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::home_page))
        .route("/tasks/new", get(pages::new_task_page))
        .route("/tasks/{id}", get(pages::task_page))
        .route("/settings/keys", get(pages::keys_page))
        .route("/environments/{owner}/{repo}", get(pages::environment_page))
        .route("/settings/connectors", get(pages::connectors_page))
        .route("/admin", get(admin::admin_page))
        .route("/settings/tokens", get(triggers::tokens_page))
        .route("/settings/webhooks", get(triggers::webhooks_page))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .route("/static/{*name}", get(assets::serve_static))
}

/// What every page's frame shows: the signed-in user, their quota and where they are.
#[derive(Debug, Default)]
pub struct Chrome {
    /// The signed-in user, if any.
    pub user: Option<User>,
    /// Their quota today.
    pub quota: Option<Quota>,
    /// The navigation entry of this page (`tasks`, `new`, `keys`, `connectors`, `admin`).
    pub nav: &'static str,
    /// The sandbox image banner, on pages where people start tasks, while it is not ready.
    pub image: Option<ImageBanner>,
    /// Whether the signed-in user may open `/admin`.
    pub admin: bool,
}

/// The sandbox image banner: what the image is doing, live while it is being prepared.
#[derive(Debug, Default)]
pub struct ImageBanner {
    /// `checking`, `building`, `failed`, `missing` or `unknown`.
    pub state: &'static str,
    /// One sentence.
    pub message: String,
    /// What the current build stage does (empty when none).
    pub stage: String,
    /// The failed build's last lines (for signed-in users only).
    pub tail: Vec<String>,
}

impl ImageBanner {
    /// The banner for the image's current state; none when it is ready (or, on Kubernetes, not
    /// drydock's to check). `with_tail` adds a failed build's last lines.
    pub fn of(image: &crate::sandbox_image::SandboxImage, with_tail: bool) -> Option<Self> {
        let status = image.status();
        if matches!(status.state, "ready" | "not_checked") {
            return None;
        }
        Some(Self {
            state: status.state,
            message: status.message,
            stage: status.stage.unwrap_or_default(),
            tail: if with_tail {
                image.failure_tail()
            } else {
                Vec::new()
            },
        })
    }
}

impl Chrome {
    /// The cache-busting URL of a static file.
    pub fn asset(&self, name: &str) -> String {
        asset_url(name)
    }

    /// The avatar to show: only `https:` URLs, which the page's CSP allows.
    pub fn avatar(&self) -> Option<&str> {
        self.user
            .as_ref()
            .and_then(|u| u.avatar_url.as_deref())
            .filter(|url| url.starts_with("https://"))
    }

    /// The first letter of the login, shown when there is no avatar.
    pub fn initial(&self) -> String {
        self.user
            .as_ref()
            .and_then(|u| u.login.chars().next())
            .map(|c| c.to_uppercase().to_string())
            .unwrap_or_default()
    }

    /// Whether `entry` is the current navigation entry.
    pub fn is(&self, entry: &str) -> bool {
        self.nav == entry
    }
}

/// A readable error page (for browsers, where JSON would be unhelpful).
#[derive(Debug, Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    status: StatusCode,
    chrome: Chrome,
    title: String,
    message: String,
    link: Option<(String, String)>,
}

impl ErrorPage {
    /// A page with a status, a title and an explanation.
    pub fn new(status: StatusCode, title: &str, message: &str) -> Self {
        Self {
            status,
            chrome: Chrome::default(),
            title: title.to_owned(),
            message: message.to_owned(),
            link: None,
        }
    }

    /// Adds a link for what to do next.
    pub fn with_link(mut self, href: &str, label: &str) -> Self {
        self.link = Some((href.to_owned(), label.to_owned()));
        self
    }

    /// Shows the signed-in user's header on the page.
    pub fn with_chrome(mut self, chrome: Chrome) -> Self {
        self.chrome = chrome;
        self
    }
}

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        match self.render() {
            Ok(html) => (
                self.status,
                [(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(CONTENT_SECURITY_POLICY),
                )],
                Html(html),
            )
                .into_response(),
            Err(err) => AppError::internal(err).into_response(),
        }
    }
}
