//! One streaming-safe redaction choke point for everything that leaves a sandbox or a command.
//!
//! A task's [`Redactor`] is built once from all of its known secrets (a [`SecretSet`]:
//! the user's keys, the GitHub token, connector env and header values) and is then used
//! for every byte that is stored, broadcast or returned: log lines through a
//! [`RedactingStream`], task messages, error texts and diffs through
//! [`Redactor::redact`] / [`Redactor::redact_bytes`]. Callers collect all secrets
//! first; a redactor cannot learn more later.
//!
//! What is replaced, each by `[REDACTED:kind]` (the kind, never any part of the value):
//! - every known secret of at least [`MIN_SECRET_LEN`] bytes, and its standard base64
//!   and base64url forms (also at the three offsets it can have inside a larger
//!   encoded blob), percent-encoded forms (all non-alphanumerics escaped, or all but
//!   `-._~`; upper or lower hex; `+` for space) and JSON-escaped form. A multi-line
//!   value is matched line by line;
//! - well-known shapes even when not in the set: Anthropic, OpenAI, GitHub, Google API
//!   and Slack tokens, AWS access key ids, JWTs, PEM private keys, `Authorization:`
//!   headers, `Bearer` tokens, credentials in URLs (`https://[REDACTED:url-credential]@host`),
//!   and `NAME=value` / `NAME: value` / `"name": "value"` where the name ends in
//!   password, passwd, passphrase or secret (any value) or token or key (values of 8+
//!   bytes); the name is kept, the value replaced.
//!
//! How: one forward scan per matcher over each buffer. Known secrets are found by an
//! Aho-Corasick automaton behind a sampled q-gram prefilter ([`known`]); shapes by one
//! combined `regex::bytes::Regex` that only runs on lines where an Aho-Corasick literal
//! prefilter found a live hit ([`shapes`]). Overlapping matches (one secret inside
//! another, two occurrences sharing bytes) are merged and redacted as one.
//!
//! Streaming: no pattern crosses a line break, so complete lines are redacted and
//! emitted at once. Of an unterminated line the stream holds back only:
//! - the last `longest known pattern - 1` bytes (an occurrence may be incomplete);
//! - a literal cut in half at the end (`Bea` of `Bearer`);
//! - from a live literal that has no match yet, while the line is still within that
//!   literal's reach of it (64 bytes for key names, 128 for token prefixes, 600 for
//!   `://`, 16 KiB for `eyJ` since a JWT only matches once its second dot arrives);
//! - from the start of a shape match that touches the end and may still grow, up to
//!   64 KiB (past that it is redacted as far as it goes and emitted: the rest of a
//!   single token longer than 64 KiB without a line break would pass);
//! - and it never emits half a UTF-8 character nor part of a match (the hold moves
//!   back to the start of the match, context included, so the rescan finds it again).
//!
//! PEM private keys: the `-----BEGIN ... PRIVATE KEY-----` line becomes
//! `[REDACTED:private-key]` and the following lines of the block (base64 body, PEM
//! headers, the END line) are removed as they arrive, without holding lines back. A
//! line that is not key material (anything but base64 characters, a PEM header or a
//! blank line), or a block over 1,024 lines, ends the block. A one-line key (JSON
//! with `\n` escapes) is redacted from BEGIN through END.
//!
//! Escape sequences: a line that holds terminal controls is matched both as it is and as a
//! terminal shows it (colours and OSC removed, `\r`, backspace and cursor moves applied), so a
//! secret split by `\x1b[31m` or rewritten into place by `\r` is still found; such a line, when
//! it holds something to redact, is replaced by what a terminal shows, redacted. A stream holds
//! an unterminated line from its first control until its end (up to 64 KiB).
//!
//! Not detected: mixed-case key names (`kEy=`), command-line flags without `=`
//! (`--password hunter2`), secrets shorter than 8 bytes, and encodings other than the
//! ones above.

mod engine;
mod escapes;
mod known;
pub mod scan;
mod secrets;
mod shapes;
mod stream;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use engine::{Engine, LineState, Scratch};
use known::KnownMatcher;

pub use secrets::{MIN_SECRET_LEN, SecretSet, SkipReason, SkippedSecret};
pub use stream::RedactingStream;

/// Block size for whole-text redaction.
const BLOCK: usize = 64 * 1024;

/// Why a [`Redactor`] could not be built. Callers must treat this as fatal for the
/// task: output must not flow unredacted.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RedactError {
    /// A matcher could not be compiled (message from the matcher library; it never
    /// contains secret values).
    #[error("building the redaction matchers failed: {0}")]
    Build(String),
}

/// The redactor of one task. Cheap to clone and share between threads: the tables live
/// behind an `Arc`.
#[derive(Clone)]
pub struct Redactor {
    engine: Arc<Engine>,
}

impl Redactor {
    /// Builds the redactor from all of a task's secrets.
    pub fn new(secrets: SecretSet) -> Result<Self, RedactError> {
        let shapes = shapes::shapes()?;
        let mut labels: Vec<Box<str>> = Vec::new();
        let mut patterns = Vec::new();
        let mut pattern_labels = Vec::new();
        for (pattern, kind) in secrets.patterns() {
            let index = match labels.iter().position(|l| **l == *kind) {
                Some(i) => i,
                None => {
                    labels.push(kind.into());
                    labels.len() - 1
                }
            };
            patterns.push(pattern);
            pattern_labels.push(u32::try_from(index).unwrap_or(u32::MAX));
        }
        let known = if patterns.is_empty() {
            None
        } else {
            Some(KnownMatcher::new(&patterns, pattern_labels)?)
        };
        Ok(Self {
            engine: Arc::new(Engine {
                known,
                shapes,
                labels,
            }),
        })
    }

    /// A stream for one output channel of this task.
    pub fn stream(&self) -> RedactingStream {
        RedactingStream::new(Arc::clone(&self.engine))
    }

    /// Redacts a whole text (a message, an error, a diff).
    pub fn redact(&self, text: &str) -> String {
        let out = self.redact_bytes(text.as_bytes());
        // Markers are ASCII and spans end at character boundaries for UTF-8 input;
        // the lossy path only guards against a secret that is itself a partial character.
        match String::from_utf8(out) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// Redacts a whole byte buffer, which need not be UTF-8.
    ///
    /// A line holding terminal controls (colours, `\r`, cursor moves, OSC) is also matched as
    /// a terminal shows it ([`crate::terminal`]); when either form holds something to redact,
    /// the line is replaced by what a terminal shows, redacted.
    pub fn redact_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let seen = escapes::see_through(&self.engine, bytes, &[]);
        let bytes = seen.as_deref().unwrap_or(bytes);
        let mut out = Vec::with_capacity(bytes.len());
        let mut state = LineState::default();
        let mut scratch = Scratch::new(self.engine.shapes);
        // Blocks of whole lines: each matcher's pass over a block then runs in cache.
        // No pattern crosses a line break, so this is exactly whole-text redaction.
        let mut rest = bytes;
        while let Some(block) = rest.get(..BLOCK) {
            let Some(end) = block.iter().rposition(|&b| b == b'\n') else {
                break;
            };
            let (lines, tail) = rest.split_at(end + 1);
            self.engine
                .process(&mut state, &mut scratch, lines, true, &mut out);
            rest = tail;
        }
        self.engine
            .process(&mut state, &mut scratch, rest, true, &mut out);
        out
    }

    /// Length of the longest known pattern (0 without known secrets): an unterminated
    /// line holds back at least this many bytes minus one.
    pub fn longest_pattern(&self) -> usize {
        self.engine.known.as_ref().map_or(0, KnownMatcher::max_len)
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("kinds", &self.engine.labels)
            .field("longest_pattern", &self.longest_pattern())
            .finish()
    }
}
