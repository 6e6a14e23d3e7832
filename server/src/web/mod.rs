//! Server-rendered pages and the static files embedded in the binary.
//!
//! Static files are served under `/static/{name}`; pages link them as `/static/{name}?v={hash}`
//! so a response can be cached for a year and a new build still reaches every browser.

use std::collections::HashMap;
use std::sync::OnceLock;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::auth::CurrentUser;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::User;

#[derive(rust_embed::Embed)]
#[folder = "../web/static"]
struct Assets;

/// Routes of pages and static files.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home_page))
        .route("/static/{*name}", get(serve_static))
}

/// Short content hash of each embedded file, computed once.
fn hashes() -> &'static HashMap<String, String> {
    static HASHES: OnceLock<HashMap<String, String>> = OnceLock::new();
    HASHES.get_or_init(|| {
        Assets::iter()
            .filter_map(|name| {
                let file = Assets::get(&name)?;
                let digest = hex::encode(Sha256::digest(&file.data));
                Some((name.to_string(), digest[..12].to_owned()))
            })
            .collect()
    })
}

/// The cache-busting URL of an embedded static file.
pub fn asset_url(name: &str) -> String {
    match hashes().get(name) {
        Some(hash) => format!("/static/{name}?v={hash}"),
        None => format!("/static/{name}"),
    }
}

#[derive(serde::Deserialize)]
struct Version {
    v: Option<String>,
}

async fn serve_static(Path(name): Path<String>, Query(version): Query<Version>) -> Response {
    let Some(file) = Assets::get(&name) else {
        return AppError::NotFound("file").into_response();
    };
    let mime = mime_guess::from_path(&name).first_or_octet_stream();
    let current = hashes().get(&name);
    // Immutable only when the URL names this exact content; otherwise revalidate.
    let cache = if version.v.is_some() && version.v.as_ref() == current {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = (StatusCode::OK, file.data.into_owned()).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(mime.as_ref()) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Some(hash) = current.and_then(|h| HeaderValue::from_str(&format!("\"{h}\"")).ok()) {
        headers.insert(header::ETAG, hash);
    }
    response
}

#[derive(Template, WebTemplate)]
#[template(path = "home.html")]
struct HomePage {
    css_url: String,
    user: Option<User>,
    oauth_configured: bool,
    sign_in_url: String,
    register_url: String,
    callback_url: String,
}

#[derive(serde::Deserialize)]
struct HomeParams {
    next: Option<String>,
}

/// The home page: the signed-in user's start, or sign-in, or set-up instructions.
async fn home_page(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    Query(params): Query<HomeParams>,
) -> HomePage {
    let next = crate::auth::safe_next(params.next.as_deref());
    let sign_in_url = if next == "/" {
        "/auth/github".to_owned()
    } else {
        format!(
            "/auth/github?next={}",
            utf8_percent_encode(&next, NON_ALPHANUMERIC)
        )
    };
    HomePage {
        css_url: asset_url("drydock.css"),
        user: user.map(|u| u.user),
        oauth_configured: state.github.oauth_configured(),
        sign_in_url,
        register_url: format!("{}/settings/applications/new", state.github.web_url()),
        callback_url: format!("{}/auth/github/callback", state.public_url),
    }
}

/// A readable error page (for browsers, where JSON would be unhelpful).
#[derive(Debug, Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    status: StatusCode,
    css_url: String,
    title: String,
    message: String,
    link: Option<(String, String)>,
}

impl ErrorPage {
    /// A page with a status, a title and an explanation.
    pub fn new(status: StatusCode, title: &str, message: &str) -> Self {
        Self {
            status,
            css_url: asset_url("drydock.css"),
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
}

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        match self.render() {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(err) => AppError::internal(err).into_response(),
        }
    }
}
