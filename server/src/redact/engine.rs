//! The redaction core shared by whole-text redaction and [`RedactingStream`](super::RedactingStream):
//! find spans, decide how much of an unterminated line is safe to emit, write the output.

use regex::bytes::CaptureLocations;

use super::known::KnownMatcher;
use super::shapes::{Hit, HitState, PRIVATE_KEY, Shapes};

/// How an unterminated line may hold back from a shape match that is still growing
/// (e.g. an unquoted `PASSWORD=...` value with no end in sight). Past this the match is
/// redacted as far as it goes and the line moves on; a single token longer than this,
/// arriving without a line break, may then leak its remainder.
pub(crate) const MAX_OPEN_MATCH: usize = 64 * 1024;

/// A line longer than this cannot be part of a PEM body.
const PEM_LINE_MAX: usize = 256;
/// A PEM block longer than this many lines is taken to have lost its END line.
const PEM_MAX_LINES: usize = 1024;

/// What replaces a span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Label {
    /// A line inside a PEM private key block: removed entirely.
    Drop,
    /// A well-known shape (index into the shapes).
    Shape(u16),
    /// A known secret (index into the redactor's kind labels).
    Known(u32),
}

/// A byte range to redact.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Where the match that produced the span begins: a shape's context (`PASSWORD=`)
    /// precedes its secret part, and a stream that has to hold back part of the span
    /// must hold back from here, or the rescan would no longer recognise it.
    pub(crate) anchor: usize,
    pub(crate) label: Label,
}

/// Per-stream state that outlives one buffer.
#[derive(Debug, Default, Clone)]
pub(crate) struct LineState {
    /// Inside a multi-line PEM private key block.
    pem_active: bool,
    /// Lines removed so far in the current block.
    pem_lines: usize,
}

/// Reusable buffers, so a long-lived stream does not allocate per chunk.
pub(crate) struct Scratch {
    spans: Vec<Span>,
    hits: Vec<Hit>,
    locs: CaptureLocations,
}

impl Scratch {
    pub(crate) fn new(shapes: &Shapes) -> Self {
        Self {
            spans: Vec::new(),
            hits: Vec::new(),
            locs: shapes.capture_locations(),
        }
    }
}

/// Immutable, shareable redaction tables of one task.
pub(crate) struct Engine {
    pub(crate) known: Option<KnownMatcher>,
    pub(crate) shapes: &'static Shapes,
    /// Kind labels of the known secrets.
    pub(crate) labels: Vec<Box<str>>,
}

impl Engine {
    /// Redacts `buf` into `out` and returns how many bytes of `buf` were consumed; the
    /// rest must be presented again, followed by more input. With `last` everything is
    /// consumed (end of stream or a whole text).
    pub(crate) fn process(
        &self,
        state: &mut LineState,
        scratch: &mut Scratch,
        buf: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> usize {
        let len = buf.len();
        // Everything up to the last line break is complete and is always emitted.
        let complete_end = if last {
            len
        } else {
            buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
        };
        scratch.spans.clear();
        scratch.hits.clear();
        if let Some(known) = &self.known {
            known.find(buf, &mut scratch.spans);
        }
        self.shapes.find_hits(buf, &mut scratch.hits);
        self.complete_lines(state, scratch, buf, complete_end);
        let cut = if complete_end == len {
            len
        } else {
            self.tail_cut(state, scratch, buf, complete_end)
        };
        emit(self, buf, cut, &mut scratch.spans, out);
        cut
    }

    /// Finds the shape spans of the complete lines `buf[..end]` and tracks PEM blocks.
    fn complete_lines(&self, state: &mut LineState, scratch: &mut Scratch, buf: &[u8], end: usize) {
        let Scratch { spans, hits, locs } = scratch;
        let mut pos = 0;
        let mut next_hit = 0;
        while pos < end {
            if state.pem_active {
                let (line_end, next) = line_bounds(buf, pos, end);
                match pem_line(&buf[pos..line_end]) {
                    PemLine::End => {
                        state.pem_active = false;
                    }
                    PemLine::Body if state.pem_lines < PEM_MAX_LINES => {
                        state.pem_lines += 1;
                    }
                    _ => {
                        // Not key material: the block was cut short; handle the line
                        // normally.
                        state.pem_active = false;
                        continue;
                    }
                }
                spans.push(Span {
                    start: pos,
                    end: next,
                    anchor: pos,
                    label: Label::Drop,
                });
                pos = next;
                continue;
            }
            while hits.get(next_hit).is_some_and(|h| h.start < pos) {
                next_hit += 1;
            }
            let Some(hit) = hits.get(next_hit).filter(|h| h.start < end) else {
                break;
            };
            let line_start = buf[pos..hit.start]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(pos, |i| pos + i + 1);
            let (line_end, next) = line_bounds(buf, hit.start, end);
            let live = hits[next_hit..]
                .iter()
                .take_while(|h| h.start < line_end)
                .any(|h| {
                    self.shapes.hit_state(buf, line_start, line_end, h, true) != HitState::Dead
                });
            if live {
                let mut pem_open = false;
                self.shapes.scan_line(buf, line_start, line_end, locs, |m| {
                    if m.shape == PRIVATE_KEY && !contains(&buf[m.start..m.end], b"-----END") {
                        pem_open = true;
                    }
                    spans.push(m.span);
                });
                if pem_open {
                    state.pem_active = true;
                    state.pem_lines = 0;
                }
            }
            pos = next;
        }
    }

    /// How much of the unterminated last line `buf[start..]` can be emitted now.
    fn tail_cut(
        &self,
        state: &mut LineState,
        scratch: &mut Scratch,
        buf: &[u8],
        start: usize,
    ) -> usize {
        let len = buf.len();
        if state.pem_active {
            if len - start <= PEM_LINE_MAX {
                // Possibly key material: wait for its end.
                return start;
            }
            state.pem_active = false;
        }
        let Scratch { spans, hits, locs } = scratch;
        let mut cut = len;
        if let Some(known) = &self.known {
            // An occurrence that is not complete yet starts in the last max_len - 1
            // bytes.
            cut = cut.min(len.saturating_sub(known.max_len() - 1));
        }
        cut = cut.min(len - self.shapes.partial_literal_len(&buf[start..]));
        cut = cut.min(len - incomplete_utf8_len(&buf[start..]));

        let first_tail_hit = hits.partition_point(|h| h.start < start);
        let tail_hits = &hits[first_tail_hit..];
        let states: Vec<HitState> = tail_hits
            .iter()
            .map(|h| self.shapes.hit_state(buf, start, len, h, false))
            .collect();
        let mut forced = false;
        if states.iter().any(|&s| s != HitState::Dead) {
            let mut closed: Vec<(usize, usize)> = Vec::new();
            self.shapes.scan_line(buf, start, len, locs, |m| {
                if m.end == len {
                    if len - m.start <= MAX_OPEN_MATCH {
                        // Still growing: the next bytes may extend it.
                        cut = cut.min(m.start);
                        return;
                    }
                    // Too long to wait for: redact it as far as it goes, and emit
                    // everything (its start was already at least 64 KiB back).
                    forced = true;
                }
                closed.push((m.start, m.end));
                spans.push(m.span);
            });
            for (hit, state) in tail_hits.iter().zip(&states) {
                let covered = closed.iter().any(|&(s, e)| s <= hit.start && hit.start < e);
                let reach = self.shapes.literal(hit).map_or(0, |l| l.reach);
                if *state != HitState::Dead && !covered && len - hit.start <= reach {
                    cut = cut.min(hit.start);
                }
            }
        }
        if forced {
            return len;
        }
        cut = cut.max(start);

        // Never cut through a span (it would be re-found, differently, next time) nor
        // through a UTF-8 character.
        loop {
            let before = cut;
            for span in spans.iter() {
                if span.anchor < cut && cut < span.end {
                    cut = span.anchor;
                }
            }
            let mut back = 0;
            while cut > start && back < 3 && buf.get(cut).is_some_and(|&b| b & 0xC0 == 0x80) {
                cut -= 1;
                back += 1;
            }
            if cut == before {
                break;
            }
        }
        cut.max(start)
    }
}

/// Writes `buf[..cut]` to `out` with the spans replaced.
fn emit(engine: &Engine, buf: &[u8], cut: usize, spans: &mut [Span], out: &mut Vec<u8>) {
    // Leftmost first; at the same start the longest; on a tie a dropped line over
    // anything, then the caller's kind for a known secret over a shape's.
    spans.sort_unstable_by_key(|s| {
        let rank = match s.label {
            Label::Drop => (0, 0),
            Label::Known(i) => (1, i),
            Label::Shape(i) => (2, u32::from(i)),
        };
        (s.start, std::cmp::Reverse(s.end), rank)
    });
    out.reserve(cut);
    let mut written = 0;
    let mut i = 0;
    while let Some(&first) = spans.get(i) {
        if first.start >= cut {
            break;
        }
        // Overlapping spans merge; the first one names the result.
        let mut end = first.end;
        i += 1;
        while let Some(next) = spans.get(i).filter(|s| s.start < end) {
            end = end.max(next.end);
            i += 1;
        }
        let start = first.start.max(written);
        out.extend_from_slice(&buf[written..start]);
        match first.label {
            Label::Drop => {}
            Label::Shape(i) => marker(out, engine.shapes.label(usize::from(i))),
            Label::Known(i) => marker(
                out,
                engine
                    .labels
                    .get(i as usize)
                    .map_or("secret", |label| label),
            ),
        }
        written = end.min(cut).max(written);
    }
    out.extend_from_slice(&buf[written..cut]);
}

fn marker(out: &mut Vec<u8>, label: &str) {
    out.extend_from_slice(b"[REDACTED:");
    out.extend_from_slice(label.as_bytes());
    out.push(b']');
}

/// End of the line containing `pos` (without its `\n`) and the start of the next one,
/// both at most `end`.
fn line_bounds(buf: &[u8], pos: usize, end: usize) -> (usize, usize) {
    match buf[pos..end].iter().position(|&b| b == b'\n') {
        Some(i) => (pos + i, pos + i + 1),
        None => (end, end),
    }
}

/// Length of a UTF-8 sequence cut off at the end of `bytes` (0 if none).
fn incomplete_utf8_len(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Classification of a line inside a PEM private key block.
enum PemLine {
    End,
    Body,
    Other,
}

fn pem_line(line: &[u8]) -> PemLine {
    let trimmed = line.trim_ascii();
    if contains(trimmed, b"-----END") {
        return PemLine::End;
    }
    // A key added or removed in a diff: `+MIIE...`, `-MIIE...`.
    let content = match trimmed.first() {
        Some(b'+' | b'-') => &trimmed[1..],
        _ => trimmed,
    };
    let header = [&b"Proc-Type:"[..], b"DEK-Info:", b"Comment:", b"Version:"]
        .iter()
        .any(|h| content.starts_with(h));
    let base64 = content
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if line.len() <= PEM_LINE_MAX && (header || base64) {
        PemLine::Body
    } else {
        PemLine::Other
    }
}
