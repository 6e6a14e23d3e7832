//! The two cookies of sign-in: the session (a JWE carrying the session id) and the short-lived,
//! signed OAuth state (state, PKCE verifier and where to go next).

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use hmac_key::derive;
use josekit::jwe::{Dir, JweHeader};
use serde::{Deserialize, Serialize};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "drydock_session";
/// Name of the OAuth state cookie.
pub const OAUTH_COOKIE: &str = "drydock_oauth";
/// How long a sign-in attempt may take, in seconds.
pub const OAUTH_TTL_S: i64 = 600;

/// What the session cookie carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The `sessions` row.
    pub sid: String,
    /// Expiry, unix seconds (the row's expiry is checked too).
    pub exp: i64,
}

/// What the OAuth state cookie carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OAuthClaims {
    /// The `state` sent to GitHub.
    pub state: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// A same-site path to return to.
    pub next: String,
    /// Expiry, unix seconds.
    pub exp: i64,
}

/// Seals the session claims into a compact JWE (`dir` + `A256GCM`).
pub fn seal_session(key: &[u8; 32], claims: &SessionClaims) -> Option<String> {
    let mut header = JweHeader::new();
    header.set_content_encryption("A256GCM");
    let encrypter = Dir.encrypter_from_bytes(key).ok()?;
    let payload = serde_json::to_vec(claims).ok()?;
    josekit::jwe::serialize_compact(&payload, &header, &encrypter).ok()
}

/// Opens a session cookie; `None` for anything tampered, foreign, malformed or expired.
pub fn open_session(key: &[u8; 32], token: &str, now_s: i64) -> Option<SessionClaims> {
    let decrypter = Dir.decrypter_from_bytes(key).ok()?;
    let (payload, header) = josekit::jwe::deserialize_compact(token, &decrypter).ok()?;
    if header.content_encryption() != Some("A256GCM") {
        return None;
    }
    let claims: SessionClaims = serde_json::from_slice(&payload).ok()?;
    (claims.exp > now_s).then_some(claims)
}

/// Signs claims as an HS256 JWT with a key derived from the JWE secret for one purpose.
fn sign_hs256<T: Serialize>(jwe_secret: &[u8; 32], purpose: &[u8], claims: &T) -> Option<String> {
    let key = jsonwebtoken::EncodingKey::from_secret(&derive(jwe_secret, purpose));
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &key,
    )
    .ok()
}

/// Verifies an HS256 JWT of [`sign_hs256`] for the same purpose; `None` when tampered, malformed
/// or expired (no leeway).
fn verify_hs256<T: serde::de::DeserializeOwned>(
    jwe_secret: &[u8; 32],
    purpose: &[u8],
    token: &str,
) -> Option<T> {
    let key = jsonwebtoken::DecodingKey::from_secret(&derive(jwe_secret, purpose));
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp"]);
    jsonwebtoken::decode::<T>(token, &key, &validation)
        .ok()
        .map(|data| data.claims)
}

/// Signs the OAuth claims (HS256, with a key derived from the JWE secret for this one purpose).
pub fn sign_oauth(jwe_secret: &[u8; 32], claims: &OAuthClaims) -> Option<String> {
    sign_hs256(jwe_secret, b"drydock oauth state v1", claims)
}

/// Verifies the OAuth cookie; `None` when tampered, malformed or expired.
pub fn verify_oauth(jwe_secret: &[u8; 32], token: &str) -> Option<OAuthClaims> {
    verify_hs256(jwe_secret, b"drydock oauth state v1", token)
}

/// Claims of a preview token: who may see which task's preview, until when. `handoff` tokens
/// travel once in a redirect from drydock's origin to the preview host; the others are the
/// preview host's cookie.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreviewClaims {
    /// User id.
    pub sub: String,
    /// Task id.
    pub task: String,
    /// A short-lived hand-off (in a redirect) rather than a cookie.
    pub handoff: bool,
    /// Expiry, unix seconds.
    pub exp: i64,
}

/// Name of the preview host's cookie.
pub const PREVIEW_COOKIE: &str = "drydock_preview";

/// Signs preview claims (HS256, with a key derived for previews only).
pub fn sign_preview(jwe_secret: &[u8; 32], claims: &PreviewClaims) -> Option<String> {
    sign_hs256(jwe_secret, b"drydock preview v1", claims)
}

/// Verifies a preview token; `None` when tampered, malformed or expired.
pub fn verify_preview(jwe_secret: &[u8; 32], token: &str) -> Option<PreviewClaims> {
    verify_hs256(jwe_secret, b"drydock preview v1", token)
}

/// The value of a cookie in the request.
pub fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Secure when served over https.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age_s: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; Max-Age={max_age_s}; HttpOnly; SameSite=Lax{secure}")
}

/// A `Set-Cookie` value that deletes the cookie.
pub fn clear_cookie(name: &str, path: &str, secure: bool) -> String {
    set_cookie(name, "", path, 0, secure)
}

mod hmac_key {
    use sha2::{Digest, Sha256};

    /// A purpose-bound key: SHA-256 over the secret and a label, so a key for one purpose can
    /// never verify tokens of another.
    pub fn derive(secret: &[u8; 32], label: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"drydock key derivation\0");
        hasher.update(label);
        hasher.update([0]);
        hasher.update(secret);
        hasher.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cookie_round_trips_and_rejects_tampering_and_expiry() {
        let key = [9u8; 32];
        let claims = SessionClaims {
            sid: "abc".into(),
            exp: 2_000,
        };
        let token = seal_session(&key, &claims).unwrap();
        assert!(!token.contains("abc"), "the session id is encrypted");
        assert_eq!(open_session(&key, &token, 1_000).unwrap().sid, "abc");
        assert!(open_session(&key, &token, 2_000).is_none(), "expired");
        assert!(
            open_session(&[8u8; 32], &token, 1_000).is_none(),
            "another key"
        );
        let mut chars: Vec<char> = token.chars().collect();
        let i = chars.len() - 5;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        assert!(open_session(&key, &tampered, 1_000).is_none(), "tampered");
        assert!(open_session(&key, "garbage", 1_000).is_none());
    }

    #[test]
    fn oauth_cookie_is_signed_and_expires() {
        let key = [3u8; 32];
        let now = chrono::Utc::now().timestamp();
        let claims = OAuthClaims {
            state: "s".into(),
            verifier: "v".into(),
            next: "/".into(),
            exp: now + 60,
        };
        let token = sign_oauth(&key, &claims).unwrap();
        assert_eq!(verify_oauth(&key, &token).unwrap().state, "s");
        assert!(verify_oauth(&[4u8; 32], &token).is_none());
        let expired = sign_oauth(
            &key,
            &OAuthClaims {
                exp: now - 1,
                ..claims
            },
        )
        .unwrap();
        assert!(verify_oauth(&key, &expired).is_none());
    }
}
