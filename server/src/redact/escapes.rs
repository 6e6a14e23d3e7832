//! Seeing through escape sequences: a line holding terminal controls (colours, `\r`, cursor
//! moves, OSC) is also matched as a terminal shows it, so that no secret hides behind them.

use super::engine::{Engine, LineState, Scratch};
use crate::terminal::{has_controls, render};

/// `buf` with every line that holds controls, and in which either its bytes or what a terminal
/// shows for it hold something to redact, replaced by what a terminal shows (which the caller
/// then redacts); `None` when no line changes. Lines are split at `\n`; a `\r` before the `\n`
/// is a line ending, not a control.
///
/// Replacing the whole line rather than redacting its bytes in place is what makes this safe:
/// markers differ in length from what they replace, and in a line that still held `\r` or
/// cursor moves the shifted text could compose a secret on screen again.
///
/// `emitted` is the start of the first line, already emitted by a stream (empty for whole
/// text): the first line is matched as a terminal shows `emitted` followed by it, and when it
/// is replaced, the replacement starts with `\r` and an erase of the line, so that the screen
/// shows the redacted rendering and nothing of what was emitted before.
pub(crate) fn see_through(engine: &Engine, buf: &[u8], emitted: &[u8]) -> Option<Vec<u8>> {
    if !has_controls(buf) {
        return None;
    }
    let mut out = Vec::with_capacity(buf.len());
    let mut probe = Probe::new(engine);
    let mut changed = false;
    for (i, piece) in buf.split_inclusive(|&b| b == b'\n').enumerate() {
        let (line, newline) = match piece.strip_suffix(b"\n") {
            Some(line) => (line.strip_suffix(b"\r").unwrap_or(line), true),
            None => (piece, false),
        };
        if i == 0 && !emitted.is_empty() && has_controls(line) {
            let mut whole = emitted.to_vec();
            whole.extend_from_slice(line);
            let shown = render(&whole);
            if probe.finds_any(line) || probe.finds_any(shown.as_bytes()) {
                out.extend_from_slice(b"\r\x1b[K");
                out.extend_from_slice(shown.as_bytes());
                if newline {
                    out.push(b'\n');
                }
                changed = true;
                continue;
            }
        } else if has_controls(line) {
            let shown = render(line);
            if probe.finds_any(line) || probe.finds_any(shown.as_bytes()) {
                out.extend_from_slice(shown.as_bytes());
                if newline {
                    out.push(b'\n');
                }
                changed = true;
                continue;
            }
        }
        out.extend_from_slice(piece);
    }
    changed.then_some(out)
}

/// Answers whether redacting a line on its own would change anything, reusing its buffers
/// from line to line.
struct Probe<'a> {
    engine: &'a Engine,
    scratch: Scratch,
    out: Vec<u8>,
}

impl<'a> Probe<'a> {
    fn new(engine: &'a Engine) -> Self {
        Self {
            engine,
            scratch: Scratch::new(engine.shapes),
            out: Vec::new(),
        }
    }

    fn finds_any(&mut self, bytes: &[u8]) -> bool {
        self.out.clear();
        let mut state = LineState::default();
        self.engine
            .process(&mut state, &mut self.scratch, bytes, true, &mut self.out);
        self.out != bytes
    }
}
