//! The log pipeline of one task: redact → split into lines → parse agent output → store in
//! batches → publish. Everything a task shows goes through here, and nothing is published
//! before it is stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drydock_agents::{AgentEvent, EventKind, OutputParser, Verdict};
use drydock_sandbox::OutputStream;

use super::hub::EventHub;
use crate::redact::{RedactingStream, Redactor};
use crate::store::{NewEvent, Store, StoreResult};

/// Longest line stored; longer ones are cut with a marker.
pub const MAX_LINE: usize = 16 * 1024;
/// Events stored per batch at most.
const BATCH: usize = 256;
/// Longest an event waits before its batch is stored.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Splits one output stream into lines, cutting over-long ones.
#[derive(Debug, Default)]
struct LineSplitter {
    buf: Vec<u8>,
    /// Dropping the rest of a line that was cut.
    cutting: bool,
}

impl LineSplitter {
    fn push(&mut self, bytes: &[u8], mut line: impl FnMut(String)) {
        for part in bytes.split_inclusive(|b| *b == b'\n') {
            let ends = part.last() == Some(&b'\n');
            let body = if ends { &part[..part.len() - 1] } else { part };
            if !self.cutting {
                self.buf.extend_from_slice(body);
                if self.buf.len() > MAX_LINE {
                    let mut cut = MAX_LINE;
                    // Do not split a UTF-8 character.
                    while cut > 0 && (self.buf[cut] & 0xC0) == 0x80 {
                        cut -= 1;
                    }
                    self.buf.truncate(cut);
                    let mut text = String::from_utf8_lossy(&self.buf).into_owned();
                    text.push_str(" … [line cut at 16 KiB]");
                    line(text);
                    self.buf.clear();
                    self.cutting = true;
                }
            }
            if ends {
                if !self.cutting {
                    let text = String::from_utf8_lossy(&self.buf);
                    line(text.trim_end_matches('\r').to_owned());
                }
                self.buf.clear();
                self.cutting = false;
            }
        }
    }

    fn finish(&mut self, line: impl FnMut(String)) {
        if !self.buf.is_empty() {
            self.push(b"\n", line);
        }
        self.cutting = false;
    }
}

/// One exec's output being turned into events.
#[derive(Debug)]
pub struct ExecLog {
    stdout: (RedactingStream, LineSplitter),
    stderr: (RedactingStream, LineSplitter),
    parser: Option<OutputParser>,
}

/// What an agent said of its run, from its parsed output (redacted).
#[derive(Debug, Default)]
pub struct AgentEnd {
    /// Its final message (the answer shown in the conversation and the pull request).
    pub reply: Option<String>,
    /// Its CLI's own verdict on the run.
    pub verdict: Option<Verdict>,
}

/// Writes one task's events.
pub struct LogSink {
    task_id: String,
    store: Store,
    hub: Arc<EventHub>,
    redactor: Redactor,
    pending: Vec<NewEvent>,
    last_flush: Instant,
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSink")
            .field("task_id", &self.task_id)
            .finish_non_exhaustive()
    }
}

impl LogSink {
    /// A sink for a task whose secrets `redactor` knows.
    pub fn new(task_id: &str, store: Store, hub: Arc<EventHub>, redactor: Redactor) -> Self {
        Self {
            task_id: task_id.to_owned(),
            store,
            hub,
            redactor,
            pending: Vec::new(),
            last_flush: Instant::now(),
        }
    }

    /// The task's redactor (for messages, errors and diffs).
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Queues a line written by drydock itself (redacted like everything else).
    pub fn line(&mut self, kind: &'static str, text: &str) {
        for line in self.redactor.redact(text).lines() {
            self.pending.push(NewEvent {
                kind,
                text: line.to_owned(),
            });
        }
    }

    /// Starts logging an exec; `parser` turns stdout into agent events.
    pub fn exec_log(&self, parser: Option<OutputParser>) -> ExecLog {
        ExecLog {
            stdout: (self.redactor.stream(), LineSplitter::default()),
            stderr: (self.redactor.stream(), LineSplitter::default()),
            parser,
        }
    }

    /// Feeds output bytes of an exec.
    pub fn output(&mut self, log: &mut ExecLog, stream: OutputStream, bytes: &[u8]) {
        let (redacting, splitter) = match stream {
            OutputStream::Stdout => &mut log.stdout,
            _ => &mut log.stderr,
        };
        let clean = redacting.push(bytes);
        let mut lines = Vec::new();
        splitter.push(&clean, |line| lines.push(line));
        self.lines(&mut log.parser, stream, lines);
    }

    /// Ends an exec's output: flushes held bytes and the parser; answers what the agent said of
    /// its run (redacted): its final message and its CLI's verdict, when it printed them.
    pub fn finish_exec(&mut self, mut log: ExecLog) -> AgentEnd {
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let (redacting, splitter) = match stream {
                OutputStream::Stdout => &mut log.stdout,
                _ => &mut log.stderr,
            };
            let rest = std::mem::replace(redacting, self.redactor.stream()).finish();
            let mut lines = Vec::new();
            splitter.push(&rest, |line| lines.push(line));
            splitter.finish(|line| lines.push(line));
            self.lines(&mut log.parser, stream, lines);
        }
        let Some(parser) = log.parser.as_mut() else {
            return AgentEnd::default();
        };
        // Some parsers buffer (Gemini's message chunks, opencode's totals) until the end.
        for event in parser.finish() {
            self.agent_event(event);
        }
        AgentEnd {
            reply: parser
                .final_message()
                .map(|message| self.redactor.redact(message)),
            verdict: parser.verdict().map(|verdict| match verdict {
                Verdict::Failed(message) => Verdict::Failed(self.redactor.redact(message)),
                other => other.clone(),
            }),
        }
    }

    fn lines(
        &mut self,
        parser: &mut Option<OutputParser>,
        stream: OutputStream,
        lines: Vec<String>,
    ) {
        for line in lines {
            match (stream, parser.as_mut()) {
                (OutputStream::Stdout, Some(parser)) => {
                    for event in parser.parse_line(&line) {
                        self.agent_event(event);
                    }
                }
                (OutputStream::Stdout, None) => self.pending.push(NewEvent {
                    kind: "stdout",
                    text: line,
                }),
                _ => self.pending.push(NewEvent {
                    kind: "stderr",
                    text: line,
                }),
            }
        }
    }

    fn agent_event(&mut self, event: AgentEvent) {
        let kind = match event.kind {
            EventKind::Error => "error",
            EventKind::Text => "stdout",
            _ => "agent",
        };
        // Parsed text comes from redacted bytes, but a parser may decode escapes (JSON
        // `\u0041`) back into a secret: redact again.
        for text in self.redactor.redact(&event.text).lines() {
            self.pending.push(NewEvent {
                kind,
                text: text.to_owned(),
            });
        }
    }

    /// Whether a batch is due (size or age).
    pub fn due(&self) -> bool {
        self.pending.len() >= BATCH
            || (!self.pending.is_empty() && self.last_flush.elapsed() >= FLUSH_EVERY)
    }

    /// Stores pending events, then publishes them.
    pub async fn flush(&mut self) -> StoreResult<()> {
        self.last_flush = Instant::now();
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        for chunk in batch.chunks(BATCH) {
            let stored = self.store.append_task_events(&self.task_id, chunk).await?;
            self.hub.publish(&self.task_id, &stored);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| out.push(l));
        }
        s.finish(|l| out.push(l));
        out
    }

    #[test]
    fn lines_are_split_across_chunks_and_cut_when_too_long() {
        assert_eq!(split(&[b"a", b"b\nc", b"\r\n", b"d"]), vec!["ab", "c", "d"]);
        assert_eq!(split(&[b"\n\n"]), vec!["", ""]);
        let long = "é".repeat(MAX_LINE);
        let out = split(&[long.as_bytes(), b"\nnext\n"]);
        assert_eq!(out.len(), 2);
        assert!(out[0].ends_with("[line cut at 16 KiB]"));
        assert!(out[0].len() <= MAX_LINE + 40);
        assert!(!out[0].contains('\u{FFFD}'), "no character split");
        assert_eq!(out[1], "next");
    }
}
