//! Incremental redaction of a byte stream that arrives in arbitrary chunks.

use std::sync::Arc;

use super::engine::{Engine, LineState, MAX_OPEN_MATCH, Scratch};
use super::escapes::see_through;
use crate::terminal::has_controls;

/// Redacts one output stream (an exec's stdout, say) chunk by chunk; made by
/// [`Redactor::stream`](super::Redactor::stream).
///
/// Guarantees, for any split of the input into chunks:
/// - the concatenated output never contains a known secret (or an encoded form) nor a
///   recognised shape, even when it is split across chunks at any byte;
/// - once a `\n` arrives, everything up to and including it is emitted;
/// - of an unterminated line, only what a secret could still need is held back: the
///   longest known pattern minus one byte, a literal cut in half (`Bea` of `Bearer`),
///   and a shape that has started but may still grow (bounded, see the module docs);
/// - a UTF-8 character is never split between two outputs;
/// - a line holding terminal controls (escape sequences, `\r`, backspace) is redacted as a
///   terminal shows it too (see [`Redactor::redact_bytes`](super::Redactor::redact_bytes));
///   its unterminated part is held from its first control until its end, up to 64 KiB, since
///   a later `\r` or cursor move may still rewrite it;
/// - [`finish`](RedactingStream::finish) flushes what is held.
///
/// Dropping a stream without `finish` discards the held bytes (never emits them
/// unredacted).
pub struct RedactingStream {
    engine: Arc<Engine>,
    state: LineState,
    scratch: Scratch,
    pending: Vec<u8>,
    /// What was emitted of the current, unterminated line (up to `MAX_OPEN_MATCH` bytes), so
    /// that a `\r` or cursor move arriving later is matched against what the screen shows.
    line_out: Vec<u8>,
    /// More of the line than that was emitted.
    line_out_lost: bool,
}

impl RedactingStream {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        let scratch = Scratch::new(engine.shapes);
        Self {
            engine,
            state: LineState::default(),
            scratch,
            pending: Vec::new(),
            line_out: Vec::new(),
            line_out_lost: false,
        }
    }

    /// Takes the next chunk and returns the output that is now safe to emit (possibly
    /// empty).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + self.pending.len());
        self.push_into(chunk, &mut out);
        out
    }

    /// Like [`push`](Self::push), appending to `out` instead of allocating.
    pub fn push_into(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let before = out.len();
        self.push_inner(chunk, out);
        self.track_line(&out[before..]);
    }

    /// Keeps `line_out` up to date with newly emitted bytes.
    fn track_line(&mut self, emitted: &[u8]) {
        match emitted.iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                self.line_out.clear();
                self.line_out_lost = false;
                self.line_out.extend_from_slice(&emitted[i + 1..]);
            }
            // Once the start of the line is lost, a later part would be taken for its start.
            None if !self.line_out_lost => self.line_out.extend_from_slice(emitted),
            None => {}
        }
        if self.line_out.len() > MAX_OPEN_MATCH {
            self.line_out.clear();
            self.line_out_lost = true;
        }
    }

    fn push_inner(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.pending.is_empty() && !has_controls(chunk) {
            // Common case: nothing held, redact the chunk in place and copy only the
            // held tail.
            let used = self
                .engine
                .process(&mut self.state, &mut self.scratch, chunk, false, out);
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let pending = std::mem::take(&mut self.pending);
            let used = self.process(&pending, false, out);
            self.pending = pending;
            self.pending.drain(..used);
        }
    }

    /// Redacts `buf`, seeing through terminal controls; answers how much was consumed.
    fn process(&mut self, buf: &[u8], last: bool, out: &mut Vec<u8>) -> usize {
        if !has_controls(buf) {
            return self
                .engine
                .process(&mut self.state, &mut self.scratch, buf, last, out);
        }
        let complete = if last {
            buf.len()
        } else {
            buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
        };
        let (lines, tail) = buf.split_at(complete);
        // Of a line more than `MAX_OPEN_MATCH` long only the held part is seen through.
        let seen = see_through(&self.engine, lines, &self.line_out);
        let shown = seen.as_deref().unwrap_or(lines);
        // A `\r` or a cursor move may still rewrite an unterminated line with controls: hold
        // it until its end (bounded like a growing match).
        if !tail.is_empty() && tail.len() <= MAX_OPEN_MATCH && has_controls(tail) {
            self.engine
                .process(&mut self.state, &mut self.scratch, shown, false, out);
            return complete;
        }
        let Some(mut joined) = seen else {
            return self
                .engine
                .process(&mut self.state, &mut self.scratch, buf, last, out);
        };
        let shown_len = joined.len();
        joined.extend_from_slice(tail);
        let used = self
            .engine
            .process(&mut self.state, &mut self.scratch, &joined, last, out);
        // Complete lines are always consumed whole, so what was used lies in the tail,
        // which is the same in both buffers.
        complete + used.saturating_sub(shown_len)
    }

    /// Ends the stream: redacts and returns everything still held.
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pending.len());
        self.finish_into(&mut out);
        out
    }

    /// Like [`finish`](Self::finish), appending to `out`; the stream is then empty and
    /// starts over with the next [`push`](Self::push).
    pub fn finish_into(&mut self, out: &mut Vec<u8>) {
        let pending = std::mem::take(&mut self.pending);
        self.process(&pending, true, out);
        self.state = LineState::default();
        self.line_out.clear();
        self.line_out_lost = false;
    }

    /// Number of bytes currently held back.
    pub fn held(&self) -> usize {
        self.pending.len()
    }
}

impl std::fmt::Debug for RedactingStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Held bytes may be part of a secret: show only their count.
        f.debug_struct("RedactingStream")
            .field("held", &self.pending.len())
            .finish()
    }
}
