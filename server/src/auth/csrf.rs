//! Cross-site request refusal for every state-changing request.
//!
//! Browsers send `Origin` on cross-origin POST/PUT/PATCH/DELETE and `Sec-Fetch-Site` on all of
//! them; a request that says it comes from another site is refused before any handler runs. This
//! complements SameSite=Lax cookies. Clients that send neither header (curl, scripts) are not
//! browsers riding a user's cookies, and pass.

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;
use crate::state::AppState;

/// Middleware: refuse state-changing requests from another site with 403.
pub async fn refuse_cross_site(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let changes_state = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    // A bearer-token request to the API never uses the cookie, so it cannot be a forged
    // browser request riding the user's session (browsers cannot add the header cross-site).
    let bearer = super::bearer::applies(request.uri().path(), request.headers());
    if changes_state && !bearer && is_cross_site(&state.public_url, &request) {
        return AppError::Forbidden(
            "cross-site request refused: this action must come from drydock's own pages".into(),
        )
        .into_response();
    }
    next.run(request).await
}

fn is_cross_site(public_url: &str, request: &Request) -> bool {
    let headers = request.headers();
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return true;
    };
    if origin == "null" {
        return true;
    }
    // Same origin when it is the configured public URL's origin, or the origin of the host the
    // request was sent to (so drydock works behind a name other than its public URL too).
    let public_origin = origin_of(public_url);
    let host_matches = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(host)
        });
    !(Some(origin) == public_origin.as_deref() || host_matches)
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    Some(format!("{scheme}://{authority}"))
}
