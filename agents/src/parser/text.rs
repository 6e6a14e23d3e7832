//! Plain text output: every line is agent output; the whole output is the final message.

use super::{AgentEvent, EventKind, Parsed, strip_ansi};

/// Longest final message kept from plain output (the tail is what matters).
const MAX_FINAL_CHARS: usize = 20_000;

#[derive(Debug, Default)]
pub(crate) struct TextParser {
    all: String,
}

impl TextParser {
    pub(crate) fn line(&mut self, line: &str) -> Parsed {
        let clean = strip_ansi(line);
        if !self.all.is_empty() {
            self.all.push('\n');
        }
        self.all.push_str(&clean);
        if self.all.len() > MAX_FINAL_CHARS * 2 {
            let cut = self.all.len() - MAX_FINAL_CHARS;
            let cut = (cut..self.all.len())
                .find(|i| self.all.is_char_boundary(*i))
                .unwrap_or(self.all.len());
            self.all.drain(..cut);
        }
        Parsed {
            events: vec![AgentEvent::new(EventKind::AgentMessage, clean)],
            ..Parsed::default()
        }
    }

    pub(crate) fn blank(&mut self) {
        if !self.all.is_empty() {
            self.all.push('\n');
        }
    }

    pub(crate) fn finish(&mut self) -> Parsed {
        Parsed {
            final_message: Some(self.all.clone()),
            ..Parsed::default()
        }
    }
}
