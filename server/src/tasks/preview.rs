//! Dev-server previews: a task's owner sees the dev server running in its kept-alive sandbox.
//!
//! Pages of a preview come from code the agent wrote, so they are served from a host of their own
//! (`DRYDOCK_PREVIEW_HOST`), never from drydock's origin: there they cannot read drydock's
//! cookies or call its API as the user. The owner opens `/tasks/{id}/preview/…` on drydock;
//! drydock checks the session and the task's owner, then redirects to the same path on the
//! preview host with a hand-off token valid for one minute, which the preview host trades for a
//! cookie scoped to that task's preview path. Requests on the preview host are relayed to the
//! dev server's port inside the sandbox over an exec (`Sandbox::connect_port`): no sandbox port
//! is ever published, and it works whatever the sandbox's network mode. WebSocket upgrades are
//! relayed too. The path is forwarded unchanged (the dev server gets `DRYDOCK_PREVIEW_BASE` to
//! serve under it); drydock's cookies are never forwarded to the sandbox, and the dev server
//! cannot set cookies for any other host.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::any;
use hyper_util::rt::TokioIo;

use crate::auth::CurrentUser;
use crate::auth::cookies::{
    PREVIEW_COOKIE, PreviewClaims, read_cookie, sign_preview, verify_preview,
};
use crate::state::AppState;
use crate::store::Task;

/// Query parameter carrying the hand-off token to the preview host.
const HANDOFF_PARAM: &str = "drydock_preview_token";
/// Life of a hand-off token, seconds.
const HANDOFF_TTL_S: i64 = 60;
/// Life of the preview host's cookie, seconds.
const COOKIE_TTL_S: i64 = 8 * 3600;

/// Routes on drydock's own origin.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/tasks/{id}/preview", any(enter))
        .route("/tasks/{id}/preview/", any(enter))
        .route("/tasks/{id}/preview/{*rest}", any(enter))
}

/// `scheme://host[:port]` of the preview host, when previews are configured: the public URL's
/// scheme, and its port unless `preview_host` names one. Computed once at start-up.
pub fn origin(preview_host: Option<&str>, public_url: &str) -> Option<String> {
    let host = preview_host?.trim();
    if host.is_empty() {
        return None;
    }
    let (scheme, rest) = public_url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        match authority.rsplit_once(':') {
            Some((_, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
                format!("{host}:{port}")
            }
            _ => host.to_owned(),
        }
    };
    Some(format!("{scheme}://{host}"))
}

/// Middleware: requests to the preview host go to [`serve`]; nothing else of drydock is
/// reachable there.
pub async fn dispatch(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(origin) = state.preview_origin.as_deref() else {
        return next.run(request).await;
    };
    let authority = origin.split_once("://").map_or("", |(_, a)| a);
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !host.eq_ignore_ascii_case(authority) {
        return next.run(request).await;
    }
    serve(state, request).await
}

fn not_found(why: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("No preview here: {why}.\n"),
    )
        .into_response()
}

fn unavailable(why: String) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("The preview is not available: {why}.\n"),
    )
        .into_response()
}

/// The task's preview port and container when its dev server runs.
fn running_preview(task: &Task) -> Option<(&str, u16)> {
    let container = task.container_id.as_deref()?;
    let port = u16::try_from(task.preview_port?).ok()?;
    Some((container, port))
}

/// On drydock's origin: checks the owner and sends them to the preview host.
async fn enter(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(params): Path<Vec<(String, String)>>,
    uri: Uri,
) -> Response {
    let id = params
        .iter()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let task = match state.store.get_task(&user.user.id, id).await {
        Ok(Some(task)) => task,
        Ok(None) => return not_found("no such task of yours"),
        Err(err) => return crate::error::AppError::from(err).into_response(),
    };
    let Some(origin) = state.preview_origin.as_deref() else {
        return not_found(
            "previews are not configured on this server (the operator sets DRYDOCK_PREVIEW_HOST)",
        );
    };
    if running_preview(&task).is_none() {
        return not_found("no dev server runs for this task");
    }
    let claims = PreviewClaims {
        sub: user.user.id.clone(),
        task: task.id.clone(),
        handoff: true,
        exp: chrono::Utc::now().timestamp() + HANDOFF_TTL_S,
    };
    let Some(token) = sign_preview(&state.keys.jwe_secret, &claims) else {
        return unavailable("could not sign the hand-off".into());
    };
    let path = uri.path();
    let path = if path.ends_with("/preview") {
        format!("{path}/")
    } else {
        path.to_owned()
    };
    let mut query = uri.query().map(|q| format!("{q}&")).unwrap_or_default();
    query.push_str(&format!("{HANDOFF_PARAM}={token}"));
    Redirect::to(&format!("{origin}{path}?{query}")).into_response()
}

/// The task id of a preview path `/tasks/{id}/preview/...`.
fn task_of_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/tasks/")?;
    let (id, rest) = rest.split_once('/')?;
    (rest == "preview" || rest.starts_with("preview/")).then_some(id)
}

/// On the preview host: hand-off, then the owner's requests relayed to the dev server.
async fn serve(state: AppState, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let Some(task_id) = task_of_path(&path).map(str::to_owned) else {
        return not_found("previews live under /tasks/{id}/preview/");
    };
    let secure = state.public_url.starts_with("https://");
    if let Some(token) = query_param(request.uri(), HANDOFF_PARAM) {
        let Some(claims) = verify_preview(&state.keys.jwe_secret, &token)
            .filter(|c| c.handoff && c.task == task_id)
        else {
            return not_found("the link expired; open the preview from the task page again");
        };
        let cookie_claims = PreviewClaims {
            handoff: false,
            exp: chrono::Utc::now().timestamp() + COOKIE_TTL_S,
            ..claims
        };
        let Some(cookie) = sign_preview(&state.keys.jwe_secret, &cookie_claims) else {
            return unavailable("could not sign the preview cookie".into());
        };
        let clean = without_param(request.uri(), HANDOFF_PARAM);
        let mut response = Redirect::to(&clean).into_response();
        let value = crate::auth::cookies::set_cookie(
            PREVIEW_COOKIE,
            &cookie,
            &format!("/tasks/{task_id}/preview/"),
            COOKIE_TTL_S,
            secure,
        );
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return response;
    }
    let claims = read_cookie(request.headers(), PREVIEW_COOKIE)
        .and_then(|token| verify_preview(&state.keys.jwe_secret, token))
        .filter(|c| !c.handoff && c.task == task_id);
    let Some(claims) = claims else {
        return not_found("open the preview from the task's page in drydock");
    };
    // The task must still be the user's (deleting it ends the preview at once).
    let task = match state.store.get_task(&claims.sub, &task_id).await {
        Ok(Some(task)) => task,
        Ok(None) => return not_found("no such task of yours"),
        Err(err) => return crate::error::AppError::from(err).into_response(),
    };
    let Some((container, port)) = running_preview(&task) else {
        return not_found("no dev server runs for this task");
    };
    let container = container.to_owned();
    let label = task
        .sandbox_instance
        .as_deref()
        .or(task.runner_id.as_deref());
    proxy(&state, &container, label, port, request)
        .await
        .unwrap_or_else(unavailable)
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn without_param(uri: &Uri, name: &str) -> String {
    let rest: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(name))
        .collect();
    if rest.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), rest.join("&"))
    }
}

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a request asks to switch protocols (WebSocket).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
}

/// Cookies of the request other than drydock's own.
fn foreign_cookies(headers: &HeaderMap) -> Option<String> {
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !pair.starts_with("drydock_"))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// Whether the dev server's `Set-Cookie` may pass: not one of drydock's names, and no `Domain`
/// (which could reach drydock's own host).
fn harmless_set_cookie(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    !text.trim_start().starts_with("drydock_")
        && !text
            .split(';')
            .skip(1)
            .any(|attr| attr.trim().to_ascii_lowercase().starts_with("domain"))
}

/// Drops the dev server's `Set-Cookie` headers that are not [harmless](harmless_set_cookie).
fn keep_harmless_set_cookies(headers: &mut HeaderMap) {
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| harmless_set_cookie(v))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for cookie in kept {
        headers.append(header::SET_COOKIE, cookie);
    }
}

/// Relays one request to the dev server inside the sandbox.
async fn proxy(
    state: &AppState,
    container: &str,
    owner: Option<&str>,
    port: u16,
    mut request: Request,
) -> Result<Response, String> {
    let sandboxes = state
        .runner
        .sandboxes()
        .await
        .map_err(|_| "Docker is not reachable".to_owned())?;
    // A sandbox another replica made (on the same Docker host) carries that replica's label.
    let sandboxes = match owner {
        Some(owner) => sandboxes.of_instance(owner),
        None => sandboxes,
    };
    let sandbox = sandboxes
        .get(container)
        .await
        .map_err(|_| "the task's sandbox is gone".to_owned())?;
    let stream = sandbox.connect_port(port).await.map_err(|err| match err {
        drydock_sandbox::SandboxError::PortClosed { .. } => {
            format!("the dev server does not answer on port {port}")
        }
        other => other.to_string(),
    })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("the dev server's connection failed: {err}"))?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });

    let upgrade = is_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    let forwarded_host = parts.headers.get(header::HOST).cloned();
    let cookies = foreign_cookies(&parts.headers);
    for name in HOP_BY_HOP {
        if !(upgrade && matches!(name, "connection" | "upgrade")) {
            parts.headers.remove(name);
        }
    }
    parts.headers.remove(header::COOKIE);
    parts.headers.remove(header::AUTHORIZATION);
    if let Some(cookies) = cookies.and_then(|c| HeaderValue::from_str(&c).ok()) {
        parts.headers.insert(header::COOKIE, cookies);
    }
    if let Some(host) = forwarded_host {
        parts.headers.insert("x-forwarded-host", host);
    }
    if let Ok(host) = HeaderValue::from_str(&format!("localhost:{port}")) {
        parts.headers.insert(header::HOST, host);
    }
    let scheme = if state.public_url.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    parts
        .headers
        .insert("x-forwarded-proto", HeaderValue::from_static(scheme));
    // Origin-form on the wire.
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = path_and_query
        .parse()
        .map_err(|_| "the request's path is not valid".to_owned())?;
    let upstream = axum::http::Request::from_parts(parts, body);
    let mut response = sender
        .send_request(upstream)
        .await
        .map_err(|err| format!("the dev server did not answer: {err}"))?;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let server_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(client), Ok(server)) = (client_upgrade.await, server_upgrade.await) {
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(server),
                )
                .await;
            }
        });
        let (mut parts, _) = response.into_parts();
        keep_harmless_set_cookies(&mut parts.headers);
        return Ok(Response::from_parts(parts, Body::empty()));
    }

    let (mut parts, body) = response.into_parts();
    for name in HOP_BY_HOP {
        parts.headers.remove(name);
    }
    keep_harmless_set_cookies(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preview_origin_takes_the_public_urls_scheme_and_port() {
        assert_eq!(
            origin(Some("localhost"), "http://127.0.0.1:8080").as_deref(),
            Some("http://localhost:8080")
        );
        assert_eq!(
            origin(Some("preview.example:8443"), "https://drydock.example").as_deref(),
            Some("https://preview.example:8443")
        );
        assert_eq!(origin(Some(" "), "https://drydock.example"), None);
        assert_eq!(origin(None, "https://drydock.example"), None);
    }

    #[test]
    fn preview_paths_name_their_task() {
        assert_eq!(task_of_path("/tasks/abc/preview/"), Some("abc"));
        assert_eq!(task_of_path("/tasks/abc/preview/x/y.js"), Some("abc"));
        assert_eq!(task_of_path("/tasks/abc/previewx"), None);
        assert_eq!(task_of_path("/api/tasks"), None);
    }

    #[test]
    fn drydock_cookies_never_reach_the_dev_server() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("drydock_session=s; app=1; drydock_preview=p; theme=dark"),
        );
        assert_eq!(
            foreign_cookies(&headers).as_deref(),
            Some("app=1; theme=dark")
        );
        assert!(harmless_set_cookie(&HeaderValue::from_static(
            "app=1; Path=/"
        )));
        assert!(!harmless_set_cookie(&HeaderValue::from_static(
            "drydock_session=x"
        )));
        assert!(!harmless_set_cookie(&HeaderValue::from_static(
            "a=1; Domain=drydock.example"
        )));
    }

    #[test]
    fn the_hand_off_token_is_removed_from_the_address() {
        let uri: Uri = "/tasks/t/preview/?a=1&drydock_preview_token=x&b=2"
            .parse()
            .unwrap();
        assert_eq!(query_param(&uri, HANDOFF_PARAM).as_deref(), Some("x"));
        assert_eq!(
            without_param(&uri, HANDOFF_PARAM),
            "/tasks/t/preview/?a=1&b=2"
        );
        let uri: Uri = "/tasks/t/preview/?drydock_preview_token=x".parse().unwrap();
        assert_eq!(without_param(&uri, HANDOFF_PARAM), "/tasks/t/preview/");
    }
}
