//! Secrets at rest: AES-256-GCM sealing of stored values, and loading or generating the server's keys.
//!
//! A sealed value is `v1:` + base64(nonce ‖ ciphertext ‖ tag) with a random 96-bit nonce per value.
//! The prefix names the key version so that keys can be rotated later without guessing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Generate, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::config::SecretString;

/// The version prefix of values sealed with the current key.
const VERSION_PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why a sealed value could not be opened, or a key could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// The value does not start with a key version this server knows.
    #[error("sealed value has an unknown key version")]
    UnknownVersion,
    /// The value is not valid base64 or is too short to hold a nonce and a tag.
    #[error("sealed value is malformed")]
    Malformed,
    /// Authentication failed: the value was tampered with, truncated, or sealed with another key.
    #[error("sealed value failed authentication (tampered, truncated, or sealed with another key)")]
    Authentication,
    /// The opened value is not UTF-8 where text was expected.
    #[error("sealed value is not UTF-8 text")]
    NotText,
    /// A key given in the environment or found on disk is malformed.
    #[error("{name} is malformed: {reason}. Make a good one with: openssl rand -hex 32")]
    BadKey {
        /// The setting's environment variable.
        name: &'static str,
        /// What is wrong with it (never the value).
        reason: &'static str,
    },
    /// A generated key file could not be read or written.
    #[error("could not use key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Seals and opens secrets stored in the database.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(***)")
    }
}

impl SecretBox {
    /// A box over a 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        let key = aes_gcm::Key::<Aes256Gcm>::from(*key);
        Self {
            cipher: Aes256Gcm::new(&key),
        }
    }

    /// Seals bytes into the `v1:` text form.
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let nonce = Nonce::generate();
        // Encryption with a fresh nonce and an in-memory buffer cannot fail for inputs under
        // GCM's 64 GiB limit; treat failure as an invariant violation rather than losing data.
        let ciphertext = match self.cipher.encrypt(&nonce, plaintext) {
            Ok(ciphertext) => ciphertext,
            Err(_) => unreachable_encrypt(),
        };
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&ciphertext);
        format!("{VERSION_PREFIX}{}", B64.encode(out))
    }

    /// Seals text.
    pub fn seal_str(&self, plaintext: &str) -> String {
        self.seal(plaintext.as_bytes())
    }

    /// Opens a sealed value; any tampering or a wrong key is an error, never garbage.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SecretsError> {
        let body = sealed
            .strip_prefix(VERSION_PREFIX)
            .ok_or(SecretsError::UnknownVersion)?;
        let raw = B64.decode(body).map_err(|_| SecretsError::Malformed)?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretsError::Malformed);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| SecretsError::Malformed)?;
        self.cipher
            .decrypt(&nonce, ciphertext)
            .map_err(|_| SecretsError::Authentication)
    }

    /// Opens a sealed value that holds text.
    pub fn open_str(&self, sealed: &str) -> Result<String, SecretsError> {
        String::from_utf8(self.open(sealed)?).map_err(|_| SecretsError::NotText)
    }
}

#[cold]
fn unreachable_encrypt() -> ! {
    panic!("AES-GCM encryption failed for an in-memory buffer")
}

/// The two keys the server needs, and whether each was generated on this start.
#[derive(Clone)]
pub struct ServerKeys {
    /// Key for secrets at rest.
    pub encryption_key: [u8; 32],
    /// Key for session cookies (JWE) and, derived from it, short-lived signed cookies.
    pub jwe_secret: [u8; 32],
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKeys(***)")
    }
}

impl ServerKeys {
    /// Takes each key from its setting, or from (or newly into) a file in the data directory.
    pub fn load(
        data_dir: &Path,
        encryption_key: Option<&SecretString>,
        jwe_secret: Option<&SecretString>,
    ) -> Result<Self, SecretsError> {
        Ok(Self {
            encryption_key: load_key(data_dir, "ENCRYPTION_KEY", "encryption.key", encryption_key)?,
            jwe_secret: load_key(data_dir, "JWE_SECRET", "jwe.secret", jwe_secret)?,
        })
    }
}

fn load_key(
    data_dir: &Path,
    name: &'static str,
    file_name: &str,
    from_env: Option<&SecretString>,
) -> Result<[u8; 32], SecretsError> {
    if let Some(value) = from_env {
        return parse_hex_key(name, value.expose());
    }
    let path = data_dir.join(file_name);
    match fs::read_to_string(&path) {
        Ok(text) => parse_hex_key(name, &text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            write_private_file(&path, hex::encode(key).as_bytes()).map_err(|source| {
                SecretsError::KeyFile {
                    path: path.clone(),
                    source,
                }
            })?;
            tracing::warn!(
                setting = name,
                path = %path.display(),
                "no {name} was set: generated one and saved it (mode 0600); back this file up, \
                 or set {name} yourself"
            );
            Ok(key)
        }
        Err(source) => Err(SecretsError::KeyFile { path, source }),
    }
}

fn parse_hex_key(name: &'static str, text: &str) -> Result<[u8; 32], SecretsError> {
    let text = text.trim();
    if text.len() != 64 {
        return Err(SecretsError::BadKey {
            name,
            reason: "it must be exactly 64 hex characters (32 bytes)",
        });
    }
    let bytes = hex::decode(text).map_err(|_| SecretsError::BadKey {
        name,
        reason: "it must contain only hex characters 0-9 and a-f",
    })?;
    bytes.try_into().map_err(|_| SecretsError::BadKey {
        name,
        reason: "it must be exactly 64 hex characters (32 bytes)",
    })
}

/// Creates a file readable only by its owner, failing if it already exists (so a racing second
/// process never overwrites a key the first one already used).
fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sbox(byte: u8) -> SecretBox {
        SecretBox::new(&[byte; 32])
    }

    #[test]
    fn seal_then_open_round_trips_and_uses_fresh_nonces() {
        let b = sbox(7);
        let a1 = b.seal_str("sk-ant-secret-value");
        let a2 = b.seal_str("sk-ant-secret-value");
        assert!(a1.starts_with("v1:"));
        assert_ne!(a1, a2, "each seal must use a fresh nonce");
        assert!(!a1.contains("secret"));
        assert_eq!(b.open_str(&a1).unwrap(), "sk-ant-secret-value");
        assert_eq!(b.open_str(&b.seal_str("")).unwrap(), "");
    }

    #[test]
    fn tampered_truncated_or_foreign_values_are_errors() {
        let b = sbox(1);
        let sealed = b.seal_str("hello world");
        let mut raw = B64.decode(&sealed[3..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("v1:{}", B64.encode(&raw));
        assert!(matches!(
            b.open(&tampered),
            Err(SecretsError::Authentication)
        ));
        raw[last] ^= 1;
        raw[NONCE_LEN] ^= 0x80;
        let tampered = format!("v1:{}", B64.encode(&raw));
        assert!(matches!(
            b.open(&tampered),
            Err(SecretsError::Authentication)
        ));

        let truncated = format!("v1:{}", B64.encode(&raw[..20]));
        assert!(matches!(b.open(&truncated), Err(SecretsError::Malformed)));
        assert!(matches!(b.open("v1:!!!"), Err(SecretsError::Malformed)));
        assert!(matches!(
            b.open("v9:abcd"),
            Err(SecretsError::UnknownVersion)
        ));
        assert!(matches!(
            b.open("hello world"),
            Err(SecretsError::UnknownVersion)
        ));

        assert!(matches!(
            sbox(2).open(&sealed),
            Err(SecretsError::Authentication)
        ));
    }

    #[test]
    fn keys_from_settings_are_validated_with_a_helpful_message() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["abc", &"z".repeat(64), &"a".repeat(66)] {
            let err =
                ServerKeys::load(dir.path(), Some(&SecretString::new(bad)), None).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("ENCRYPTION_KEY is malformed"), "{msg}");
            assert!(msg.contains("openssl rand -hex 32"), "{msg}");
            assert!(!msg.contains(bad), "the message must not echo the value");
        }
        let good = "ab".repeat(32);
        let keys = ServerKeys::load(dir.path(), Some(&SecretString::new(&good)), None).unwrap();
        assert_eq!(keys.encryption_key, [0xab; 32]);
    }

    #[test]
    fn generated_keys_are_private_files_reused_on_the_next_start() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        let first = ServerKeys::load(&data, None, None).unwrap();
        for file in ["encryption.key", "jwe.secret"] {
            let mode = fs::metadata(data.join(file)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file} must be mode 0600");
        }
        assert_ne!(first.encryption_key, first.jwe_secret);
        let second = ServerKeys::load(&data, None, None).unwrap();
        assert_eq!(first.encryption_key, second.encryption_key);
        assert_eq!(first.jwe_secret, second.jwe_secret);
    }
}
