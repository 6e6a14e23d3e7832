//! The OAuth client side of the MCP authorization spec, for connectors of auth `oauth`:
//! discovery (protected-resource metadata, RFC 9728, then authorization-server metadata,
//! RFC 8414 / OpenID discovery), dynamic client registration (RFC 7591), the authorization
//! request with PKCE S256 (RFC 7636) and a resource indicator (RFC 8707), the code and refresh
//! grants (RFC 6749 §4.1.3, §6) and token revocation (RFC 7009).
//!
//! Every request goes through [`outbound::pinned_client`], so the same address checks apply as
//! to connection tests, and redirects are never followed. Errors are for people; they may quote
//! the remote server, never a token drydock holds.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use reqwest::header::{ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::mcp_client::{ProbeError, classify, host_of};
use super::outbound;

/// How long one OAuth request (metadata, registration, token) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes read from a metadata or token answer.
const MAX_BODY: usize = 256 << 10;

/// Why an OAuth step failed; `Display` is shown to the user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// The server could not be reached (address refused, DNS, TLS, timeout...).
    #[error(transparent)]
    Unreachable(#[from] ProbeError),
    /// Discovery found no usable authorization server.
    #[error("could not find how to sign in to this server: {0}")]
    Discovery(String),
    /// Dynamic registration was refused or is not offered.
    #[error("could not register drydock with the authorization server: {0}")]
    Registration(String),
    /// The token endpoint refused the grant (RFC 6749 §5.2): the user must sign in again.
    #[error("the authorization server refused the {grant}: {error}{description}")]
    Refused {
        /// `authorization code` or `refresh token`.
        grant: &'static str,
        /// The OAuth error code, e.g. `invalid_grant`.
        error: String,
        /// `: ` and the server's description, or empty.
        description: String,
    },
    /// The token endpoint answered something that is not a token response.
    #[error("the authorization server answered the token request with {0}")]
    BadAnswer(String),
}

/// What discovery learned about a connector's MCP server and its authorization server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Discovery {
    /// The resource indicator (RFC 8707): the protected resource's identifier.
    pub resource: String,
    /// The authorization server's issuer identifier.
    pub issuer: String,
    /// Where the browser is sent.
    pub authorization_endpoint: String,
    /// Where codes and refresh tokens are exchanged.
    pub token_endpoint: String,
    /// RFC 7591 endpoint, when offered.
    pub registration_endpoint: Option<String>,
    /// RFC 7009 endpoint, when offered.
    pub revocation_endpoint: Option<String>,
    /// Scopes to ask for (the resource's `scopes_supported`), possibly empty.
    pub scopes: Vec<String>,
    /// `token_endpoint_auth_methods_supported` (empty when not published).
    pub auth_methods: Vec<String>,
}

/// drydock's client registration at one authorization server.
#[derive(Clone, Serialize, Deserialize)]
pub struct ClientCredentials {
    /// The client id.
    pub client_id: String,
    /// The client secret, for confidential registrations.
    pub client_secret: Option<String>,
    /// `client_secret_post`, `client_secret_basic` or `none`.
    pub auth_method: String,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("auth_method", &self.auth_method)
            .finish_non_exhaustive()
    }
}

/// A connector's OAuth grant, sealed at rest as one JSON value (`connectors.oauth_enc`).
#[derive(Clone, Serialize, Deserialize)]
pub struct Grant {
    /// The authorization server's issuer.
    pub issuer: String,
    /// The resource indicator the tokens were issued for.
    pub resource: String,
    /// Token endpoint (refresh).
    pub token_endpoint: String,
    /// Revocation endpoint, when the server offers one.
    pub revocation_endpoint: Option<String>,
    /// drydock's registration.
    pub client: ClientCredentials,
    /// The current access token.
    pub access_token: String,
    /// The current refresh token, when one was issued.
    pub refresh_token: Option<String>,
    /// When the access token expires, unix ms (`None`: the server did not say).
    pub expires_at: Option<i64>,
    /// Scopes granted.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("issuer", &self.issuer)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Grant {
    /// The values to keep out of logs and answers.
    pub fn secret_values(&self) -> Vec<String> {
        let mut values = vec![self.access_token.clone()];
        values.extend(self.refresh_token.clone());
        values.extend(self.client.client_secret.clone());
        values
    }
}

/// An authorization request in flight, sealed in `connector_oauth_requests.pending_enc`.
#[derive(Clone, Serialize, Deserialize)]
pub struct Pending {
    /// The PKCE code verifier (RFC 7636 §4.1).
    pub verifier: String,
    /// The redirect URI sent (must be sent again with the code).
    pub redirect_uri: String,
    /// Discovery at the time of the request.
    pub discovery: Discovery,
    /// The registration used.
    pub client: ClientCredentials,
}

/// A fresh random value for `state` or a PKCE verifier: 32 bytes, base64url (43 characters).
pub fn random_value() -> String {
    let mut buf = [0u8; 32];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The S256 code challenge of `verifier` (RFC 7636 §4.2).
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Where the browser goes: the authorization endpoint with `response_type=code`, the client,
/// the redirect URI, `state`, the PKCE S256 challenge, the resource indicator and the scopes.
pub fn authorization_url(
    discovery: &Discovery,
    client: &ClientCredentials,
    redirect_uri: &str,
    state: &str,
    verifier: &str,
) -> Result<Url, OAuthError> {
    let mut url = Url::parse(&discovery.authorization_endpoint)
        .map_err(|_| OAuthError::Discovery("the authorization endpoint is not a URL".into()))?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &client.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state)
            .append_pair("code_challenge", &s256_challenge(verifier))
            .append_pair("code_challenge_method", "S256")
            .append_pair("resource", &discovery.resource);
        if !discovery.scopes.is_empty() {
            query.append_pair("scope", &discovery.scopes.join(" "));
        }
    }
    Ok(url)
}

/// One HTTP client per call, pinned to the checked addresses of `url`'s host.
async fn client_for(url: &Url, allow_private: bool) -> Result<reqwest::Client, OAuthError> {
    Ok(outbound::pinned_client(url, allow_private, REQUEST_TIMEOUT / 2).await?)
}

fn parse_url(text: &str, what: &str) -> Result<Url, OAuthError> {
    let url = Url::parse(text)
        .map_err(|_| OAuthError::Discovery(format!("the {what} {text:?} is not a URL")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(OAuthError::Discovery(format!(
            "the {what} must be an http(s) URL"
        )));
    }
    Ok(url)
}

/// Sends `request` (built on a client for `url`) and reads at most [`MAX_BODY`] bytes.
async fn send(
    url: &Url,
    request: reqwest::RequestBuilder,
) -> Result<(StatusCode, reqwest::header::HeaderMap, Vec<u8>), OAuthError> {
    let host = host_of(url);
    let resp = request
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|err| classify(&host, &err))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    let mut resp = resp;
    while let Some(chunk) = resp.chunk().await.map_err(|err| classify(&host, &err))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(OAuthError::Discovery(format!(
                "{host} answered with more than {} KiB",
                MAX_BODY >> 10
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, headers, body))
}

/// GETs a JSON document; `None` on 404 (a well-known URL that is not there).
async fn get_json(url: &Url, allow_private: bool) -> Result<Option<Value>, OAuthError> {
    let client = client_for(url, allow_private).await?;
    let (status, _, body) = send(
        url,
        client.get(url.clone()).header(ACCEPT, "application/json"),
    )
    .await?;
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(OAuthError::Discovery(format!("{url} answered {status}")));
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|_| OAuthError::Discovery(format!("{url} did not answer JSON")))
}

/// The `resource_metadata` parameter of a `WWW-Authenticate: Bearer ...` challenge (RFC 9728 §5.1).
pub fn resource_metadata_param(challenge: &str) -> Option<String> {
    let lower = challenge.to_ascii_lowercase();
    let at = lower.find("resource_metadata=")?;
    let rest = &challenge[at + "resource_metadata=".len()..];
    let value = if let Some(quoted) = rest.strip_prefix('"') {
        &quoted[..quoted.find('"')?]
    } else {
        rest.split([',', ' ']).next()?
    };
    (!value.is_empty()).then(|| value.to_owned())
}

/// `origin + /.well-known/<name> + path` (RFC 8414 §3.1, RFC 9728 §3.1): the well-known
/// segment goes between the host and the path.
fn well_known(base: &Url, name: &str) -> Url {
    let mut url = base.clone();
    let path = base.path().trim_end_matches('/');
    url.set_path(&format!("/.well-known/{name}{path}"));
    url.set_query(None);
    url.set_fragment(None);
    url
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    value[key]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Finds the authorization server of the MCP server at `server`: an unauthenticated request
/// for its 401 challenge, its protected-resource metadata (the challenge's
/// `resource_metadata`, else the well-known URLs), then the authorization server's metadata.
pub async fn discover(server: &Url, allow_private: bool) -> Result<Discovery, OAuthError> {
    // 1. The 401 challenge names the metadata document (RFC 9728 §5.1).
    let client = client_for(server, allow_private).await?;
    let probe = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "drydock", "version": env!("CARGO_PKG_VERSION")}}});
    let (status, headers, _) = send(
        server,
        client
            .post(server.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(probe.to_string()),
    )
    .await?;
    let hinted = (status == StatusCode::UNAUTHORIZED)
        .then(|| {
            headers
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(resource_metadata_param)
        })
        .flatten();
    let mut candidates = Vec::new();
    if let Some(hint) = hinted {
        let url = parse_url(&hint, "resource metadata URL")?;
        if !same_origin(&url, server) {
            return Err(OAuthError::Discovery(
                "the server's resource metadata is on another origin".into(),
            ));
        }
        candidates.push(url);
    } else {
        candidates.push(well_known(server, "oauth-protected-resource"));
        let mut root = server.clone();
        root.set_path("/");
        candidates.push(well_known(&root, "oauth-protected-resource"));
    }
    let mut resource_metadata = None;
    for url in candidates {
        if let Some(doc) = get_json(&url, allow_private).await? {
            resource_metadata = Some(doc);
            break;
        }
    }
    let Some(prm) = resource_metadata else {
        return Err(OAuthError::Discovery(format!(
            "{} publishes no OAuth protected-resource metadata (RFC 9728); use headers instead",
            host_of(server)
        )));
    };
    let resource = prm["resource"]
        .as_str()
        .map_or_else(|| server.to_string(), str::to_owned);
    let resource_url = parse_url(&resource, "resource")?;
    if !same_origin(&resource_url, server) {
        return Err(OAuthError::Discovery(
            "the server names a resource on another origin".into(),
        ));
    }
    let issuer = strings(&prm, "authorization_servers")
        .into_iter()
        .next()
        .ok_or_else(|| {
            OAuthError::Discovery("the resource metadata names no authorization server".into())
        })?;
    let scopes = strings(&prm, "scopes_supported");

    // 2. The authorization server's metadata (RFC 8414 §3.1, then OpenID discovery).
    let issuer_url = parse_url(&issuer, "issuer")?;
    let mut candidates = vec![
        well_known(&issuer_url, "oauth-authorization-server"),
        well_known(&issuer_url, "openid-configuration"),
    ];
    if !issuer_url.path().trim_end_matches('/').is_empty() {
        let mut appended = issuer_url.clone();
        appended.set_path(&format!(
            "{}/.well-known/openid-configuration",
            issuer_url.path().trim_end_matches('/')
        ));
        candidates.push(appended);
    }
    let mut metadata = None;
    for url in candidates {
        if let Some(doc) = get_json(&url, allow_private).await? {
            metadata = Some(doc);
            break;
        }
    }
    let Some(asm) = metadata else {
        return Err(OAuthError::Discovery(format!(
            "the authorization server {issuer} publishes no metadata (RFC 8414)"
        )));
    };
    // RFC 8414 §3.3: the metadata must be about the issuer it was fetched for.
    let published = asm["issuer"].as_str().unwrap_or_default();
    if published.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(OAuthError::Discovery(format!(
            "the authorization server's metadata names the issuer {published:?}, not {issuer:?}"
        )));
    }
    if !strings(&asm, "code_challenge_methods_supported")
        .iter()
        .any(|m| m == "S256")
    {
        return Err(OAuthError::Discovery(
            "the authorization server does not offer PKCE with S256, which the MCP authorization spec requires".into(),
        ));
    }
    let endpoint = |key: &str| -> Result<Option<String>, OAuthError> {
        match asm[key].as_str() {
            None => Ok(None),
            Some(text) => parse_url(text, key).map(|u| Some(u.to_string())),
        }
    };
    Ok(Discovery {
        resource,
        issuer,
        authorization_endpoint: endpoint("authorization_endpoint")?.ok_or_else(|| {
            OAuthError::Discovery("the metadata has no authorization_endpoint".into())
        })?,
        token_endpoint: endpoint("token_endpoint")?
            .ok_or_else(|| OAuthError::Discovery("the metadata has no token_endpoint".into()))?,
        registration_endpoint: endpoint("registration_endpoint")?,
        revocation_endpoint: endpoint("revocation_endpoint")?,
        scopes,
        auth_methods: strings(&asm, "token_endpoint_auth_methods_supported"),
    })
}

/// Registers drydock as a client (RFC 7591 §3) with `redirect_uri`.
pub async fn register(
    discovery: &Discovery,
    redirect_uri: &str,
    allow_private: bool,
) -> Result<ClientCredentials, OAuthError> {
    let Some(endpoint) = &discovery.registration_endpoint else {
        return Err(OAuthError::Registration(format!(
            "{} does not offer dynamic registration; the operator must configure a client id for it \
             in DRYDOCK_CONNECTOR_OAUTH_CLIENTS",
            discovery.issuer
        )));
    };
    let url = parse_url(endpoint, "registration endpoint")?;
    let method = if discovery.auth_methods.is_empty()
        || discovery
            .auth_methods
            .iter()
            .any(|m| m == "client_secret_post")
    {
        "client_secret_post"
    } else if discovery
        .auth_methods
        .iter()
        .any(|m| m == "client_secret_basic")
    {
        "client_secret_basic"
    } else {
        "none"
    };
    let mut body = json!({
        "client_name": "drydock",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": method,
        "application_type": "web",
    });
    if !discovery.scopes.is_empty() {
        body["scope"] = json!(discovery.scopes.join(" "));
    }
    let client = client_for(&url, allow_private).await?;
    let (status, _, answer) = send(&url, client.post(url.clone()).json(&body)).await?;
    let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    if !status.is_success() {
        let error = answer["error"].as_str().unwrap_or("no reason given");
        let description = answer["error_description"]
            .as_str()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        return Err(OAuthError::Registration(format!(
            "it answered {status}, {error}{description}"
        )));
    }
    let client_id = answer["client_id"]
        .as_str()
        .ok_or_else(|| OAuthError::Registration("the answer has no client_id".into()))?;
    let client_secret = answer["client_secret"].as_str().map(str::to_owned);
    let auth_method = answer["token_endpoint_auth_method"]
        .as_str()
        .unwrap_or(if client_secret.is_some() {
            method
        } else {
            "none"
        })
        .to_owned();
    Ok(ClientCredentials {
        client_id: client_id.to_owned(),
        client_secret,
        auth_method,
    })
}

/// The tokens of a successful token response (RFC 6749 §5.1).
#[derive(Clone)]
pub struct TokenSet {
    /// The access token.
    pub access_token: String,
    /// The refresh token, when issued.
    pub refresh_token: Option<String>,
    /// Lifetime in seconds, when given.
    pub expires_in: Option<i64>,
    /// Scopes granted, when given.
    pub scope: Option<String>,
}

/// POSTs a form to the token endpoint with the client's authentication.
async fn token_request(
    token_endpoint: &str,
    client: &ClientCredentials,
    mut form: Vec<(&str, String)>,
    grant: &'static str,
    allow_private: bool,
) -> Result<TokenSet, OAuthError> {
    let url = parse_url(token_endpoint, "token endpoint")?;
    let http = client_for(&url, allow_private).await?;
    form.push(("client_id", client.client_id.clone()));
    let mut request = http.post(url.clone()).header(ACCEPT, "application/json");
    match (client.auth_method.as_str(), &client.client_secret) {
        ("client_secret_basic", Some(secret)) => {
            request = request.basic_auth(&client.client_id, Some(secret));
        }
        (_, Some(secret)) => form.push(("client_secret", secret.clone())),
        (_, None) => {}
    }
    let (status, _, body) = send(&url, request.form(&form)).await?;
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !status.is_success() {
        if let Some(error) = answer["error"].as_str() {
            return Err(OAuthError::Refused {
                grant,
                error: error.to_owned(),
                description: answer["error_description"]
                    .as_str()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default(),
            });
        }
        return Err(OAuthError::BadAnswer(format!("status {status}")));
    }
    let access_token = answer["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::BadAnswer("no access_token".into()))?;
    if !answer["token_type"]
        .as_str()
        .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
    {
        return Err(OAuthError::BadAnswer(
            "a token that is not a bearer token".into(),
        ));
    }
    Ok(TokenSet {
        access_token: access_token.to_owned(),
        refresh_token: answer["refresh_token"].as_str().map(str::to_owned),
        expires_in: answer["expires_in"].as_i64(),
        scope: answer["scope"].as_str().map(str::to_owned),
    })
}

/// Exchanges an authorization code (RFC 6749 §4.1.3) with the PKCE verifier and the resource.
pub async fn exchange_code(
    pending: &Pending,
    code: &str,
    allow_private: bool,
) -> Result<TokenSet, OAuthError> {
    token_request(
        &pending.discovery.token_endpoint,
        &pending.client,
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", pending.redirect_uri.clone()),
            ("code_verifier", pending.verifier.clone()),
            ("resource", pending.discovery.resource.clone()),
        ],
        "authorization code",
        allow_private,
    )
    .await
}

/// Uses the grant's refresh token (RFC 6749 §6) and answers the grant with the new tokens; a
/// refresh token the server does not rotate is kept.
pub async fn refresh(grant: &Grant, now_ms: i64, allow_private: bool) -> Result<Grant, OAuthError> {
    let Some(refresh_token) = &grant.refresh_token else {
        return Err(OAuthError::Refused {
            grant: "refresh token",
            error: "no refresh token".into(),
            description: ": the server issued none, so the access token cannot be renewed".into(),
        });
    };
    let tokens = token_request(
        &grant.token_endpoint,
        &grant.client,
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.clone()),
            ("resource", grant.resource.clone()),
        ],
        "refresh token",
        allow_private,
    )
    .await?;
    Ok(grant.renewed(tokens, now_ms))
}

impl Grant {
    /// A grant from the tokens of the code exchange.
    pub fn from_code(pending: &Pending, tokens: TokenSet, now_ms: i64) -> Self {
        let scopes = tokens
            .scope
            .as_deref()
            .map_or_else(|| pending.discovery.scopes.clone(), split_scopes);
        Self {
            issuer: pending.discovery.issuer.clone(),
            resource: pending.discovery.resource.clone(),
            token_endpoint: pending.discovery.token_endpoint.clone(),
            revocation_endpoint: pending.discovery.revocation_endpoint.clone(),
            client: pending.client.clone(),
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            expires_at: tokens
                .expires_in
                .map(|s| now_ms.saturating_add(s.saturating_mul(1000))),
            scopes,
        }
    }

    fn renewed(&self, tokens: TokenSet, now_ms: i64) -> Self {
        Self {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token.or_else(|| self.refresh_token.clone()),
            expires_at: tokens
                .expires_in
                .map(|s| now_ms.saturating_add(s.saturating_mul(1000))),
            scopes: tokens
                .scope
                .as_deref()
                .map_or_else(|| self.scopes.clone(), split_scopes),
            ..self.clone()
        }
    }

    /// Whether the access token is expired or expires within `margin_ms`.
    pub fn expires_within(&self, now_ms: i64, margin_ms: i64) -> bool {
        self.expires_at
            .is_some_and(|at| at <= now_ms.saturating_add(margin_ms))
    }
}

fn split_scopes(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// Revokes the grant's tokens where the server offers revocation (RFC 7009 §2.1): the refresh
/// token (which ends the grant), then the access token. Failures are answered for the log; the
/// caller erases the tokens either way.
pub async fn revoke(grant: &Grant, allow_private: bool) -> Result<bool, OAuthError> {
    let Some(endpoint) = &grant.revocation_endpoint else {
        return Ok(false);
    };
    let url = parse_url(endpoint, "revocation endpoint")?;
    let tokens = grant
        .refresh_token
        .iter()
        .map(|t| (t, "refresh_token"))
        .chain(std::iter::once((&grant.access_token, "access_token")));
    for (token, hint) in tokens {
        let http = client_for(&url, allow_private).await?;
        let mut form = vec![
            ("token", token.clone()),
            ("token_type_hint", hint.to_owned()),
            ("client_id", grant.client.client_id.clone()),
        ];
        let mut request = http.post(url.clone());
        match (
            grant.client.auth_method.as_str(),
            &grant.client.client_secret,
        ) {
            ("client_secret_basic", Some(secret)) => {
                request = request.basic_auth(&grant.client.client_id, Some(secret));
            }
            (_, Some(secret)) => form.push(("client_secret", secret.clone())),
            (_, None) => {}
        }
        let (status, _, _) = send(&url, request.form(&form)).await?;
        if !status.is_success() {
            return Err(OAuthError::BadAnswer(format!(
                "status {status} to the revocation"
            )));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_names_the_metadata() {
        assert_eq!(
            resource_metadata_param(
                r#"Bearer error="invalid_token", resource_metadata="https://a.example/.well-known/oauth-protected-resource/mcp""#
            )
            .as_deref(),
            Some("https://a.example/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(resource_metadata_param("Bearer realm=\"x\""), None);
    }

    #[test]
    fn well_known_urls_go_between_host_and_path() {
        let url = Url::parse("https://a.example/tenant/mcp").unwrap();
        assert_eq!(
            well_known(&url, "oauth-protected-resource").as_str(),
            "https://a.example/.well-known/oauth-protected-resource/tenant/mcp"
        );
        let root = Url::parse("https://a.example/").unwrap();
        assert_eq!(
            well_known(&root, "oauth-authorization-server").as_str(),
            "https://a.example/.well-known/oauth-authorization-server"
        );
    }

    #[test]
    fn the_challenge_is_s256_of_the_verifier() {
        // Expected value computed independently with Python's hashlib and base64.
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mJ92K9XbJ_lJA0PoAuEbcqNGdgh6VQ"),
            "1T9Rkb8EpawsCPtnI6sgnuJPCE3miwWdfwwnHSMve4o"
        );
    }
}
