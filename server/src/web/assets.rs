//! Static files embedded in the binary, served by content hash with long-lived cache headers.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{Path, Query};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::AppError;

#[derive(rust_embed::Embed)]
#[folder = "../web/static"]
struct Assets;

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
pub(super) struct Version {
    v: Option<String>,
}

pub(super) async fn serve_static(
    Path(name): Path<String>,
    Query(version): Query<Version>,
) -> Response {
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
