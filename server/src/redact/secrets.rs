//! The known secrets of one task and every encoded form in which they may show up in output.

use std::collections::HashSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};

/// Values shorter than this (after trimming surrounding whitespace) are not redacted:
/// replacing every `true` or `8080` in the output would destroy it, and a value that
/// short is not a credential worth hiding. [`SecretSet::skipped`] reports them.
pub const MIN_SECRET_LEN: usize = 8;

/// Longest kind label kept in a replacement marker.
const MAX_KIND_LEN: usize = 40;

/// RFC 3986 unreserved characters stay as they are (`encodeURIComponent`, most HTTP
/// clients); everything else is escaped.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The known secrets of one task: the user's API keys, the GitHub token, connector
/// env and header values.
///
/// Collect **all** of a task's secrets first, then build a [`Redactor`](super::Redactor)
/// from the set: a redactor cannot learn new secrets later. Values are trimmed of
/// surrounding ASCII whitespace; values shorter than [`MIN_SECRET_LEN`] are skipped
/// and reported by [`SecretSet::skipped`]. The `Debug` output never shows a value.
#[derive(Clone, Default)]
pub struct SecretSet {
    entries: Vec<Entry>,
    skipped: Vec<SkippedSecret>,
}

/// One accepted secret.
#[derive(Clone)]
struct Entry {
    /// Sanitized kind label, shown in the replacement marker.
    kind: Box<str>,
    /// The trimmed value; encoded forms are derived from it.
    value: Vec<u8>,
    /// The value's lines when it spans several (each at least `MIN_SECRET_LEN` long);
    /// empty for a single-line value.
    lines: Vec<Vec<u8>>,
}

/// A value [`SecretSet::add`] did not accept, identified by its kind only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedSecret {
    /// The kind label the caller passed (sanitized).
    pub kind: String,
    /// Why the value (or part of it) will not be redacted.
    pub reason: SkipReason,
}

/// Why a value is not redacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The whole value is shorter than [`MIN_SECRET_LEN`] (or empty).
    TooShort,
    /// One line of a multi-line value is shorter than [`MIN_SECRET_LEN`]; that line is
    /// not redacted on its own (the value's other lines and encoded forms still are).
    ShortLine,
}

impl SecretSet {
    /// An empty set: a redactor built from it still removes well-known token shapes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one secret value under a kind label such as `"anthropic-key"`,
    /// `"github-token"` or `"connector-secret"` (the label appears in the replacement
    /// `[REDACTED:kind]`; characters other than ASCII letters, digits, `-` and `_` are
    /// replaced by `-`). Returns whether the value will be redacted.
    pub fn add(&mut self, kind: &str, value: impl AsRef<[u8]>) -> bool {
        let kind = sanitize_kind(kind);
        let value = value.as_ref().trim_ascii();
        if value.len() < MIN_SECRET_LEN {
            self.skip(&kind, SkipReason::TooShort);
            return false;
        }
        // Output is redacted line by line, so a multi-line value (a PEM key pasted as a
        // connector secret) is matched one line at a time.
        let mut lines = Vec::new();
        if value.iter().any(|&b| b == b'\n' || b == b'\r') {
            for line in value.split(|&b| b == b'\n' || b == b'\r') {
                let line = line.trim_ascii();
                if line.len() >= MIN_SECRET_LEN {
                    lines.push(line.to_vec());
                } else if !line.is_empty() {
                    self.skip(&kind, SkipReason::ShortLine);
                }
            }
        }
        self.entries.push(Entry {
            kind,
            value: value.to_vec(),
            lines,
        });
        true
    }

    /// The values that were not accepted (kind and reason, never the value).
    pub fn skipped(&self) -> &[SkippedSecret] {
        &self.skipped
    }

    /// Number of accepted secrets.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no secret was accepted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn skip(&mut self, kind: &str, reason: SkipReason) {
        self.skipped.push(SkippedSecret {
            kind: kind.to_owned(),
            reason,
        });
    }

    /// Every byte string to search for, each with the kind label of its secret.
    /// None contains a line break and none is shorter than `MIN_SECRET_LEN`.
    pub(crate) fn patterns(&self) -> Vec<(Vec<u8>, &str)> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for entry in &self.entries {
            let mut forms = Vec::new();
            if entry.lines.is_empty() {
                forms.push(entry.value.clone());
            } else {
                forms.extend(entry.lines.iter().cloned());
            }
            encoded_forms(&entry.value, &mut forms);
            for form in forms {
                let usable =
                    form.len() >= MIN_SECRET_LEN && !form.iter().any(|&b| b == b'\n' || b == b'\r');
                if usable && seen.insert(form.clone()) {
                    out.push((form, &*entry.kind));
                }
            }
        }
        out
    }
}

impl fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print values, not even in debug output.
        f.debug_struct("SecretSet")
            .field("len", &self.entries.len())
            .field("skipped", &self.skipped.len())
            .finish()
    }
}

/// Keeps a label safe to embed in a marker and unable to look like a marker's end.
fn sanitize_kind(kind: &str) -> Box<str> {
    let cleaned: String = kind
        .chars()
        .take(MAX_KIND_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "secret".into()
    } else {
        cleaned.into()
    }
}

/// Appends the standard base64, base64url, percent-encoded and JSON-escaped forms of
/// `value` to `forms` (duplicates are removed by the caller).
fn encoded_forms(value: &[u8], forms: &mut Vec<Vec<u8>>) {
    for engine in [&STANDARD, &URL_SAFE] {
        let padded = engine.encode(value).into_bytes();
        let unpadded: Vec<u8> = padded.iter().copied().take_while(|&b| b != b'=').collect();
        forms.push(padded);
        forms.push(unpadded);
        // The secret may sit anywhere inside a larger encoded blob (an encoded
        // `user:password`, a config file): its encoding then depends on its offset
        // modulo 3. Each shift keeps only the characters determined by the secret's
        // own bits.
        for shift in 0..3 {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(value);
            let encoded = engine.encode(&shifted).into_bytes();
            let first = (8 * shift).div_ceil(6);
            let end = (8 * shifted.len()) / 6;
            if let Some(core) = encoded.get(first..end) {
                forms.push(core.to_vec());
            }
        }
    }
    for set in [NON_ALPHANUMERIC, COMPONENT] {
        let upper = percent_encode(value, set).to_string().into_bytes();
        if upper != value {
            forms.push(lowercase_percent_hex(&upper));
            forms.push(upper);
        }
        if value.contains(&b' ') {
            // Form encoding writes spaces as `+`.
            let plus = percent_encode(value, set)
                .to_string()
                .replace("%20", "+")
                .into_bytes();
            forms.push(plus);
        }
    }
    let json = json_escape(value);
    if json != value {
        forms.push(json);
    }
}

/// `%2F` -> `%2f`: some encoders emit lowercase hex digits.
fn lowercase_percent_hex(encoded: &[u8]) -> Vec<u8> {
    let mut out = encoded.to_vec();
    let mut i = 0;
    while i + 2 < out.len() {
        if out[i] == b'%' {
            out[i + 1] = out[i + 1].to_ascii_lowercase();
            out[i + 2] = out[i + 2].to_ascii_lowercase();
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

/// The value as it appears inside a JSON string literal.
fn json_escape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out
}
