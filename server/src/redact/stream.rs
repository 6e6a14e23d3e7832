//! Incremental redaction of a byte stream that arrives in arbitrary chunks.

use std::sync::Arc;

use super::engine::{Engine, LineState, Scratch};

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
/// - [`finish`](RedactingStream::finish) flushes what is held.
///
/// Dropping a stream without `finish` discards the held bytes (never emits them
/// unredacted).
pub struct RedactingStream {
    engine: Arc<Engine>,
    state: LineState,
    scratch: Scratch,
    pending: Vec<u8>,
}

impl RedactingStream {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        let scratch = Scratch::new(engine.shapes);
        Self {
            engine,
            state: LineState::default(),
            scratch,
            pending: Vec::new(),
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
        if self.pending.is_empty() {
            // Common case: nothing held, redact the chunk in place and copy only the
            // held tail.
            let used = self
                .engine
                .process(&mut self.state, &mut self.scratch, chunk, false, out);
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let used = self.engine.process(
                &mut self.state,
                &mut self.scratch,
                &self.pending,
                false,
                out,
            );
            self.pending.drain(..used);
        }
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
        self.engine
            .process(&mut self.state, &mut self.scratch, &pending, true, out);
        self.state = LineState::default();
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
