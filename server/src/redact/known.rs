//! Finding every occurrence of a task's known secrets: a sampled q-gram prefilter in front
//! of an Aho-Corasick automaton.
//!
//! Scanning every byte with an Aho-Corasick automaton of thousands of random-looking
//! patterns runs at roughly 100-350 MB/s (no literal prefilter helps: the patterns start
//! with every letter). Every pattern is at least `MIN_SECRET_LEN` bytes long, so an
//! occurrence always covers one of the 6-byte grams at offsets `0..step` of its pattern
//! at a text position that is a multiple of `step = min_len - 6 + 1`. Only those
//! positions are hashed and looked up in a bitset (then an exact sorted list); a hit
//! sends a short window around it through the automaton, which decides. Text without
//! secrets thus costs one lookup every `step` bytes.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use super::RedactError;
use super::engine::{Label, Span};

/// Gram length in bytes (fits a masked `u64`).
const GRAM: usize = 6;
const GRAM_MASK: u64 = (1 << (8 * GRAM)) - 1;
/// Fibonacci hashing multiplier.
const HASH_MUL: u64 = 0x9E37_79B9_7F4A_7C15;

/// Matcher for a fixed set of byte patterns, all at least `GRAM + 2` bytes long.
pub(crate) struct KnownMatcher {
    /// Overlapping search, so that overlapping occurrences of different secrets are
    /// all found and their union redacted.
    automaton: AhoCorasick,
    /// Label index of each pattern.
    labels: Vec<u32>,
    /// Longest pattern: how much an unterminated line must hold back.
    max_len: usize,
    /// Sampling step (see module docs).
    step: usize,
    bits: Vec<u64>,
    shift: u32,
    /// Exact set of indexed grams (open addressing, `EMPTY` marks a free slot), to
    /// drop bitset false positives with about one memory access.
    table: Vec<u64>,
}

/// Free slot in the gram table: no 6-byte gram has its top bits set.
const EMPTY: u64 = u64::MAX;

impl KnownMatcher {
    /// Builds the matcher; `patterns` must be non-empty, each at least 8 bytes long.
    pub(crate) fn new(patterns: &[Vec<u8>], labels: Vec<u32>) -> Result<Self, RedactError> {
        let min_len = patterns
            .iter()
            .map(Vec::len)
            .min()
            .unwrap_or(GRAM)
            .max(GRAM);
        let max_len = patterns.iter().map(Vec::len).max().unwrap_or(0);
        let step = min_len - GRAM + 1;
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            // The DFA is faster but needs tens of MB for a thousand secrets; windows
            // are short, so the contiguous NFA is plenty.
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .build(patterns)
            .map_err(|e| RedactError::Build(e.to_string()))?;
        let mut grams = Vec::with_capacity(patterns.len() * step);
        for pattern in patterns {
            for offset in 0..step {
                grams.push(gram_at(pattern, offset));
            }
        }
        grams.sort_unstable();
        grams.dedup();
        // About 32 bits per gram keeps false positives near 3%.
        let nbits = (grams.len() * 32)
            .next_power_of_two()
            .clamp(1 << 12, 1 << 24);
        let shift = 64 - nbits.trailing_zeros();
        let mut bits = vec![0u64; nbits / 64];
        let mut table = vec![EMPTY; (grams.len() * 2).next_power_of_two()];
        let mask = table.len() - 1;
        for &g in &grams {
            let h = hash(g, shift);
            bits[h >> 6] |= 1 << (h & 63);
            let mut slot = slot_of(g, mask);
            while table[slot] != EMPTY {
                slot = (slot + 1) & mask;
            }
            table[slot] = g;
        }
        Ok(Self {
            automaton,
            labels,
            max_len,
            step,
            bits,
            shift,
            table,
        })
    }

    /// Length of the longest pattern.
    pub(crate) fn max_len(&self) -> usize {
        self.max_len
    }

    /// Appends a span for every occurrence lying entirely within `buf`.
    pub(crate) fn find(&self, buf: &[u8], spans: &mut Vec<Span>) {
        let Some(last) = buf.len().checked_sub(GRAM) else {
            return;
        };
        // Candidate windows are merged while they overlap, then searched once.
        let mut window: Option<(usize, usize)> = None;
        let mut pos = 0;
        while pos <= last {
            let g = gram_at(buf, pos);
            let h = hash(g, self.shift);
            if self.bits[h >> 6] & (1 << (h & 63)) != 0 && self.indexed(g) {
                let start = (pos + 1).saturating_sub(self.step);
                let end = (pos + self.max_len).min(buf.len());
                window = match window {
                    Some((ws, we)) if start <= we => Some((ws, we.max(end))),
                    Some((ws, we)) => {
                        self.search(buf, ws, we, spans);
                        Some((start, end))
                    }
                    None => Some((start, end)),
                };
            }
            pos += self.step;
        }
        if let Some((ws, we)) = window {
            self.search(buf, ws, we, spans);
        }
    }

    /// Whether `g` is one of the indexed grams.
    fn indexed(&self, g: u64) -> bool {
        let mask = self.table.len() - 1;
        let mut slot = slot_of(g, mask);
        loop {
            match self.table[slot] {
                EMPTY => return false,
                v if v == g => return true,
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    fn search(&self, buf: &[u8], start: usize, end: usize, spans: &mut Vec<Span>) {
        let Some(window) = buf.get(start..end) else {
            return;
        };
        for m in self.automaton.find_overlapping_iter(window) {
            let label = self
                .labels
                .get(m.pattern().as_usize())
                .copied()
                .unwrap_or(0);
            spans.push(Span {
                start: start + m.start(),
                end: start + m.end(),
                anchor: start + m.start(),
                label: Label::Known(label),
            });
        }
    }
}

/// The `GRAM` bytes at `pos` as an integer (`pos + GRAM <= buf.len()`).
#[inline]
fn gram_at(buf: &[u8], pos: usize) -> u64 {
    if let Some(word) = buf.get(pos..).and_then(|rest| rest.first_chunk::<8>()) {
        return u64::from_le_bytes(*word) & GRAM_MASK;
    }
    let mut g = 0u64;
    for (i, &b) in buf.iter().skip(pos).take(GRAM).enumerate() {
        g |= u64::from(b) << (8 * i);
    }
    g
}

/// Home slot of a gram in the table (other hash bits than the bitset's).
#[inline]
fn slot_of(g: u64, mask: usize) -> usize {
    // Truncation keeps the low bits, which is all the mask wants.
    (g.wrapping_mul(HASH_MUL) >> 20) as usize & mask
}

#[inline]
fn hash(g: u64, shift: u32) -> usize {
    // The shift leaves at most 24 bits, so the value always fits a usize.
    (g.wrapping_mul(HASH_MUL) >> shift) as usize
}
