//! What a terminal would show for one line of program output.
//!
//! Agents and the commands they run print for terminals: colours, `\r`-rewritten progress
//! bars, cursor moves, titles (OSC), the odd NUL or invalid UTF-8. drydock stores and redacts
//! a line as a terminal would show it, so that what is redacted is exactly what anyone viewing
//! the log sees, and a progress bar is its last frame rather than thousands of them.
//!
//! Escape sequences are parsed by [`vte`] (the parser of the Alacritty terminal); this module
//! only keeps the one line of cells they act on:
//! - printable characters overwrite the cell under the cursor (one cell each; wide characters
//!   are not measured);
//! - `\r` moves to column 0, backspace one column left, CSI `G`, `` ` ``, `C`, `a`, `D`, `H`,
//!   `f` move the cursor along the line, CSI `K` and `J` erase, `X`, `P`, `@` blank, delete
//!   and insert cells;
//! - NUL shows as U+FFFD, invalid UTF-8 as U+FFFD; colours (SGR), other CSI sequences, OSC,
//!   DCS and other C0/C1 controls show nothing;
//! - a line is at most [`HEAD_CHARS`] cells plus the last [`TAIL_CHARS`] characters written
//!   past them, with a marker saying how many were left out in between: memory stays bounded
//!   for a line of any length, and the end of a long line (where errors are) is kept.

use std::borrow::Cow;
use std::collections::VecDeque;

/// Cells kept from the start of a line.
pub const HEAD_CHARS: usize = 12 * 1024;
/// Characters kept from the end of a line longer than [`HEAD_CHARS`].
pub const TAIL_CHARS: usize = 4 * 1024;

/// Whether a byte may be a control character (cheap test; `0xC2` starts C1 controls in UTF-8,
/// but also `°`, `µ`, `±`…, hence the exact check after it). Integer arithmetic rather than
/// `&&` so that a block of them compiles to vector instructions.
#[inline]
fn suspect(b: u8) -> u8 {
    (u8::from(b < 0x20) & u8::from(b != b'\n') & u8::from(b != b'\t'))
        | u8::from(b == 0x7f)
        | u8::from(b == 0xc2)
}

/// Whether `bytes` hold anything a terminal would not show as is: C0 controls other than
/// `\t` and `\n` (so also `\r`, NUL, ESC, backspace), DEL, or a C1 control.
pub fn has_controls(bytes: &[u8]) -> bool {
    let mut start = 0;
    // Branch-free over blocks so that the common case (no control) vectorises; this runs over
    // everything redacted, so it must cost next to nothing.
    for block in bytes.chunks(64) {
        let hit = block.iter().fold(0u8, |hit, &b| hit | suspect(b));
        if hit != 0
            && (start..start + block.len()).any(|i| match bytes[i] {
                0xc2 => bytes.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)),
                b => suspect(b) != 0,
            })
        {
            return true;
        }
        start += block.len();
    }
    false
}

/// What a terminal shows for `line` (one line, without its `\n`).
pub fn render(line: &[u8]) -> String {
    let mut term = TerminalLine::new();
    term.push(line);
    term.finish()
}

/// `text` with every line that holds controls replaced by what a terminal shows for it;
/// lines without are kept as they are (borrowed when no line changes).
pub fn plain_text(text: &str) -> Cow<'_, str> {
    if !has_controls(text.as_bytes()) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // A CRLF line ending is a line ending, not a rewrite.
        let body = line.strip_suffix('\r').unwrap_or(line);
        if has_controls(body.as_bytes()) {
            out.push_str(&render(body.as_bytes()));
        } else {
            out.push_str(line);
        }
    }
    Cow::Owned(out)
}

/// `text` shortened to about `max` bytes for display: its start and its end, with a marker
/// saying how much was left out in between.
pub fn shorten(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let head = floor_char_boundary(text, max * 3 / 4);
    let tail = ceil_char_boundary(text, text.len() - (max - max * 3 / 4));
    Cow::Owned(format!(
        "{} … [{} bytes cut] … {}",
        &text[..head],
        tail - head,
        &text[tail..]
    ))
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// One line being rendered from bytes that arrive in pieces; reusable with
/// [`finish`](Self::finish).
pub struct TerminalLine {
    parser: vte::Parser,
    screen: Screen,
}

impl Default for TerminalLine {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for TerminalLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The cells may hold secrets not yet redacted: show only sizes.
        f.debug_struct("TerminalLine")
            .field("cells", &self.screen.head.len())
            .field("tail", &self.screen.tail.len())
            .finish()
    }
}

impl TerminalLine {
    /// An empty line.
    pub fn new() -> Self {
        Self {
            parser: vte::Parser::new(),
            screen: Screen::default(),
        }
    }

    /// Feeds more bytes of the line (no `\n` expected; one would be ignored).
    pub fn push(&mut self, bytes: &[u8]) {
        self.parser.advance(&mut self.screen, bytes);
    }

    /// What the line shows; the line is then empty again (a sequence cut off at the end of
    /// the line is dropped).
    pub fn finish(&mut self) -> String {
        let screen = &mut self.screen;
        let mut out: String = screen.head.iter().collect();
        if screen.tail.is_empty() {
            // Cells a cursor move skipped over, or that were erased, show as blanks; at the
            // end of the line they are nothing.
            out.truncate(out.trim_end_matches(' ').len());
        } else {
            if screen.cut > 0 {
                out.push_str(&format!(" … [{} characters cut] … ", screen.cut));
            }
            out.extend(screen.tail.iter());
        }
        screen.head.clear();
        screen.tail.clear();
        screen.col = 0;
        screen.cut = 0;
        self.parser = vte::Parser::new();
        out
    }
}

/// The cells of one line and the cursor.
#[derive(Default)]
struct Screen {
    /// Cells `0..HEAD_CHARS`.
    head: Vec<char>,
    /// Characters written at or past column `HEAD_CHARS`, the last `TAIL_CHARS` of them.
    tail: VecDeque<char>,
    /// Characters that fell out of `tail`.
    cut: u64,
    col: usize,
}

impl Screen {
    fn put(&mut self, c: char) {
        if self.col < HEAD_CHARS {
            if self.col < self.head.len() {
                self.head[self.col] = c;
            } else {
                self.head.resize(self.col, ' ');
                self.head.push(c);
            }
        } else {
            // Past the head only the end is kept, in writing order (an approximation: a cursor
            // moved back within this region appends instead of overwriting).
            self.tail.push_back(c);
            if self.tail.len() > TAIL_CHARS {
                self.tail.pop_front();
                self.cut += 1;
            }
        }
        self.col = self.col.saturating_add(1);
    }

    fn erase_right(&mut self) {
        if self.col < HEAD_CHARS {
            self.head.truncate(self.col);
            self.tail.clear();
            self.cut = 0;
        }
    }

    fn erase_all(&mut self) {
        self.head.clear();
        self.tail.clear();
        self.cut = 0;
    }
}

impl vte::Perform for Screen {
    fn print(&mut self, c: char) {
        // DEL reaches `print` from vte's fast path; a terminal shows nothing for it.
        if c != '\u{7f}' {
            self.put(c);
        }
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\r' => self.col = 0,
            0x08 => self.col = self.col.saturating_sub(1),
            b'\t' => self.put('\t'),
            // A terminal shows nothing for NUL; a log shows that something was there.
            0x00 => self.put('\u{fffd}'),
            _ => {}
        }
    }

    fn csi_dispatch(
        &mut self,
        params: &vte::Params,
        intermediates: &[u8],
        _ignore: bool,
        action: char,
    ) {
        if !intermediates.is_empty() {
            // Private modes (`?25l`) and the like: nothing on the line changes.
            return;
        }
        let mut values = params
            .iter()
            .map(|p| usize::from(p.first().copied().unwrap_or(0)));
        let first = values.next().unwrap_or(0);
        let n = first.max(1);
        match action {
            'G' | '`' => self.col = n - 1,
            'C' | 'a' => self.col = self.col.saturating_add(n),
            'D' => self.col = self.col.saturating_sub(n),
            'H' | 'f' => self.col = values.next().unwrap_or(0).max(1) - 1,
            'K' | 'J' => match first {
                0 => self.erase_right(),
                1 => {
                    let end = self.col.saturating_add(1).min(self.head.len());
                    self.head[..end].fill(' ');
                }
                _ => self.erase_all(),
            },
            'X' => {
                let end = self.col.saturating_add(n).min(self.head.len());
                if self.col < end {
                    self.head[self.col..end].fill(' ');
                }
            }
            'P' if self.col < self.head.len() => {
                let end = self.col.saturating_add(n).min(self.head.len());
                self.head.drain(self.col..end);
            }
            '@' if self.col < self.head.len() => {
                let n = n.min(HEAD_CHARS);
                self.head
                    .splice(self.col..self.col, std::iter::repeat_n(' ', n));
                self.head.truncate(HEAD_CHARS);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_found() {
        assert!(!has_controls(b"plain text\twith a tab\nand lines\n"));
        assert!(!has_controls("° µ ± é 日本".as_bytes()));
        for bad in [
            &b"a\rb"[..],
            b"\x1b[31m",
            b"a\0b",
            b"a\x08b",
            b"\x7f",
            "\u{9b}".as_bytes(),
        ] {
            let mut long = vec![b'x'; 100];
            long.extend_from_slice(bad);
            assert!(has_controls(bad) && has_controls(&long), "{bad:?}");
        }
    }

    #[test]
    fn lines_render_as_a_terminal_shows_them() {
        assert_eq!(render(b"\x1b[1;31mred\x1b[0m text"), "red text");
        assert_eq!(render(b"\x1b]0;title\x07after"), "after");
        assert_eq!(render(b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"), "link");
        assert_eq!(
            render(b"downloading 10%\rdownloading 100%"),
            "downloading 100%"
        );
        assert_eq!(render(b"long frame here\rshort"), "shortframe here");
        assert_eq!(render(b"long frame here\r\x1b[Kshort"), "short");
        assert_eq!(render(b"\x1b[2K\rdone"), "done");
        assert_eq!(render(b"abcX\x08def"), "abcdef");
        assert_eq!(render(b"abcXYZ\x1b[3Ddef"), "abcdef");
        assert_eq!(render(b"a\0b"), "a\u{fffd}b");
        assert_eq!(render(b"\xff\xfe bad"), "\u{fffd}\u{fffd} bad");
        assert_eq!(render(b"tab\there"), "tab\there");
        assert_eq!(render("a\u{9b}31mb".as_bytes()), "a31mb");
        assert_eq!(render(b"cut off \x1b[3"), "cut off");
    }

    #[test]
    fn long_lines_keep_their_start_and_end() {
        let mut term = TerminalLine::new();
        term.push(b"START ");
        for _ in 0..100_000 {
            term.push(b"0123456789");
        }
        term.push(b" ERROR: the end");
        let line = term.finish();
        assert!(line.starts_with("START 0123"));
        assert!(line.ends_with(" ERROR: the end"));
        assert!(line.len() < HEAD_CHARS + TAIL_CHARS + 64, "{}", line.len());
        assert!(line.contains("characters cut"));
        // The line is reusable.
        term.push(b"next");
        assert_eq!(term.finish(), "next");
    }

    #[test]
    fn text_and_display_helpers() {
        assert!(matches!(plain_text("a\tb\n"), Cow::Borrowed(_)));
        assert_eq!(plain_text("a\nb\r\n"), "a\nb\r\n");
        assert_eq!(plain_text("a\r\nx\x1b[1my\nz"), "a\r\nxy\nz");
        assert_eq!(shorten("short", 10), "short");
        let long = format!("{}END", "é".repeat(100));
        let short = shorten(&long, 40);
        assert!(short.starts_with("éé") && short.ends_with("END"), "{short}");
        assert!(short.contains("bytes cut"));
    }
}
