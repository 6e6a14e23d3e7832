//! The log pipeline of one task: redact → split into lines → parse agent output → store →
//! publish. Everything a task shows goes through here, and nothing is published before it is
//! stored.
//!
//! Storing is a group commit: one writer per log (a spawned task) appends whatever is queued
//! as soon as it is idle, so a line arriving while nothing is in flight is stored and published
//! at once, and lines arriving while an append runs are taken together by the next one. A
//! single writer keeps the order and the gap-free `seq` of the lines as they were queued.

use std::sync::{Arc, Mutex};

use drydock_agents::{AgentEvent, EventKind, OutputParser, Verdict};
use drydock_sandbox::OutputStream;
use tokio::sync::{mpsc, oneshot};

use super::hub::EventHub;
use crate::redact::{RedactingStream, Redactor};
use crate::store::{EventSource, NewEvent, Store, StoreError, StoreResult};
use crate::terminal::{TerminalLine, has_controls, plain_text, shorten};

/// Longest text of one stored event; a longer one keeps its start and its end, with a marker
/// saying how much was left out between them.
pub const MAX_LINE: usize = 16 * 1024;
/// Longest line of an agent's structured (JSON) output that is read whole; a longer one is
/// dropped with a note, never parsed in part.
pub const MAX_PARSED_LINE: usize = 8 * 1024 * 1024;
/// Events stored per append at most.
const BATCH: usize = 256;
/// Queued sends (each the events of one read of output) a writer may fall behind by before
/// the exec feeding it waits: the bound on a log's memory when the database is slow.
const QUEUE: usize = 64;
/// Longest last output line quoted in a failure reason.
const MAX_REASON_LINE: usize = 300;

/// One line out of a [`LineSplitter`].
#[derive(Debug, PartialEq, Eq)]
pub enum LogLine {
    /// A line as it came (valid UTF-8 then, without controls).
    Plain(String),
    /// What a terminal shows for a line that held controls or was too long; its text was
    /// composed from several places of the output, so it is redacted again.
    Rendered(String),
    /// A line of structured output too long to read, of this many bytes.
    Dropped(usize),
}

/// Splits one output stream into lines with bounded memory.
///
/// A line without controls is kept as it is, up to `plain_max` bytes. A line with controls
/// (colours, `\r` progress bars, cursor moves, NUL) or a longer one goes through a
/// [`TerminalLine`] and comes out as what a terminal shows, its start and end kept. A line of
/// structured output never goes through the terminal (JSON holds no raw controls, and must
/// reach its parser whole): past `plain_max` it is dropped.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    term: TerminalLine,
    /// The current line is going through `term`.
    rendering: bool,
    /// Bytes of a structured line past `plain_max` (then dropped).
    dropped: usize,
    structured: bool,
    plain_max: usize,
}

impl LineSplitter {
    /// A splitter for one stream; `structured` for an agent's JSON output.
    pub fn new(structured: bool) -> Self {
        Self {
            buf: Vec::new(),
            term: TerminalLine::new(),
            rendering: false,
            dropped: 0,
            structured,
            plain_max: if structured {
                MAX_PARSED_LINE
            } else {
                MAX_LINE
            },
        }
    }

    /// Takes the next (redacted) bytes and hands on every line they complete.
    pub fn push(&mut self, bytes: &[u8], mut line: impl FnMut(LogLine)) {
        for part in bytes.split_inclusive(|b| *b == b'\n') {
            let ends = part.last() == Some(&b'\n');
            let mut body = if ends { &part[..part.len() - 1] } else { part };
            if ends && !self.structured {
                // A CRLF line ending is a line ending, not a rewrite of the line (a `\r` that
                // came in an earlier read already started rendering, where it is harmless).
                body = body.strip_suffix(b"\r").unwrap_or(body);
            }
            if self.rendering {
                self.term.push(body);
            } else if self.dropped > 0 {
                self.dropped += body.len();
            } else if !self.structured && has_controls(body) {
                self.term.push(&self.buf);
                self.term.push(body);
                self.buf.clear();
                self.rendering = true;
            } else {
                self.buf.extend_from_slice(body);
                if self.buf.len() > self.plain_max {
                    if self.structured {
                        self.dropped = self.buf.len();
                        self.buf = Vec::new();
                    } else {
                        self.term.push(&self.buf);
                        self.buf.clear();
                        self.rendering = true;
                    }
                }
            }
            if ends {
                line(self.take());
            }
        }
    }

    /// The line ended: what it was.
    fn take(&mut self) -> LogLine {
        if self.rendering {
            self.rendering = false;
            LogLine::Rendered(self.term.finish())
        } else if self.dropped > 0 {
            LogLine::Dropped(std::mem::take(&mut self.dropped))
        } else {
            let text = String::from_utf8_lossy(&self.buf).into_owned();
            self.buf.clear();
            if self.buf.capacity() > MAX_LINE {
                // Give back the memory of a long structured line.
                self.buf = Vec::new();
            }
            LogLine::Plain(text)
        }
    }

    /// Ends the stream: hands on an unterminated last line.
    pub fn finish(&mut self, mut line: impl FnMut(LogLine)) {
        if self.rendering || self.dropped > 0 || !self.buf.is_empty() {
            line(self.take());
        }
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

/// What a log's writer is sent, in order.
enum ToWriter {
    /// Events to store, then publish.
    Events(Vec<NewEvent>),
    /// Answer once everything sent before is stored (or failed).
    Flush(oneshot::Sender<()>),
}

/// The numbering of the events made from an agent's output, stored with each (see
/// [`EventSource`]), and the events a replay of that output skips because they are stored.
#[derive(Debug, Clone, Copy)]
struct Tracking {
    turn: i64,
    /// The stream being read now (`true`: stderr); `None` between reads.
    stream: Option<bool>,
    /// The next index of each stream (stdout, stderr).
    next: [i64; 2],
    /// Events of each stream already stored: made again by a replay, but not queued.
    skip: [i64; 2],
}

/// Writes one task's events.
pub struct LogSink {
    task_id: String,
    redactor: Redactor,
    /// Events queued since the last [`LogSink::submit`].
    pending: Vec<NewEvent>,
    /// To the log's writer.
    writer: mpsc::Sender<ToWriter>,
    /// The first failure of the writer not yet reported by `submit` or `flush`.
    failed: Arc<Mutex<Option<StoreError>>>,
    /// The last non-blank line the latest exec wrote to stderr, and to stdout (redacted).
    last_stderr: Option<String>,
    last_stdout: Option<String>,
    /// Numbering of the agent's events, while its exec is logged.
    tracking: Option<Tracking>,
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSink")
            .field("task_id", &self.task_id)
            .finish_non_exhaustive()
    }
}

impl LogSink {
    /// A sink for a task whose secrets `redactor` knows; starts the log's writer (so it must
    /// be made inside a tokio runtime). The writer ends once the sink is dropped and what was
    /// sent is stored.
    pub fn new(task_id: &str, store: Store, hub: Arc<EventHub>, redactor: Redactor) -> Self {
        let (writer, queue) = mpsc::channel(QUEUE);
        let failed = Arc::new(Mutex::new(None));
        tokio::spawn(write_log(
            task_id.to_owned(),
            store,
            hub,
            queue,
            failed.clone(),
        ));
        Self {
            task_id: task_id.to_owned(),
            redactor,
            pending: Vec::new(),
            writer,
            failed,
            last_stderr: None,
            last_stdout: None,
            tracking: None,
        }
    }

    /// The task's redactor (for messages, errors and diffs).
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Queues a line written by drydock itself (redacted like everything else).
    pub fn line(&mut self, kind: &'static str, text: &str) {
        let text = self.redactor.redact(&plain_text(text));
        for line in text.lines() {
            self.push(kind, line);
        }
    }

    /// Starts logging an exec; `parser` turns stdout into agent events.
    pub fn exec_log(&mut self, parser: Option<OutputParser>) -> ExecLog {
        self.last_stderr = None;
        self.last_stdout = None;
        let structured = parser.as_ref().is_some_and(OutputParser::is_structured);
        ExecLog {
            stdout: (self.redactor.stream(), LineSplitter::new(structured)),
            stderr: (self.redactor.stream(), LineSplitter::new(false)),
            parser,
        }
    }

    /// Like [`LogSink::exec_log`] for the agent of turn `turn`: each event made from its output
    /// is stored with its [`EventSource`]. `skip` (stdout, stderr) is how many of each stream's
    /// events are stored already, for a replay of the output from its first byte by the replica
    /// that adopted the turn: the pipeline is a function of each stream's bytes, so the replay
    /// makes the same events and those are not stored twice, while the parser's state and the
    /// last output lines are rebuilt.
    pub fn agent_exec_log(
        &mut self,
        parser: Option<OutputParser>,
        turn: i64,
        skip: (i64, i64),
    ) -> ExecLog {
        let log = self.exec_log(parser);
        self.tracking = Some(Tracking {
            turn,
            stream: None,
            next: [0, 0],
            skip: [skip.0, skip.1],
        });
        log
    }

    /// Sets which stream the events made next come from.
    fn reading(&mut self, stream: Option<OutputStream>) {
        if let Some(tracking) = self.tracking.as_mut() {
            tracking.stream = stream.map(|s| s == OutputStream::Stderr);
        }
    }

    /// The last non-blank line the latest exec printed, stderr first (that is where programs
    /// say what went wrong), redacted and shortened: for a failure reason.
    pub fn last_output_line(&self) -> Option<&str> {
        self.last_stderr.as_deref().or(self.last_stdout.as_deref())
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
        self.reading(Some(stream));
        self.lines(&mut log.parser, stream, lines);
        self.reading(None);
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
            self.reading(Some(stream));
            self.lines(&mut log.parser, stream, lines);
        }
        self.reading(Some(OutputStream::Stdout));
        let Some(parser) = log.parser.as_mut() else {
            self.tracking = None;
            return AgentEnd::default();
        };
        // Some parsers buffer (Gemini's message chunks, opencode's totals) until the end.
        for event in parser.finish() {
            self.agent_event(event);
        }
        self.tracking = None;
        AgentEnd {
            reply: parser
                .final_message()
                .map(|message| self.redactor.redact(&plain_text(message))),
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
        lines: Vec<LogLine>,
    ) {
        for line in lines {
            let text = match line {
                LogLine::Plain(text) => text,
                // Composed from several places of the output (a `\r` rewrite, escapes taken
                // out): a secret the stream never saw whole may show now.
                LogLine::Rendered(text) => self.redactor.redact(&text),
                LogLine::Dropped(bytes) => {
                    self.push(
                        "error",
                        &format!(
                            "drydock dropped a line of {bytes} bytes from the agent's output: \
                             longer than {} MiB, too long to read",
                            MAX_PARSED_LINE >> 20
                        ),
                    );
                    continue;
                }
            };
            match (stream, parser.as_mut()) {
                (OutputStream::Stdout, Some(parser)) => {
                    for event in parser.parse_line(&text) {
                        self.agent_event(event);
                    }
                }
                (OutputStream::Stdout, None) => {
                    remember(&mut self.last_stdout, &text);
                    self.push("stdout", &text);
                }
                _ => {
                    remember(&mut self.last_stderr, &text);
                    self.push("stderr", &text);
                }
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
        // `\u0041`, `\u001b[31m`) back into a secret or into terminal controls: render and
        // redact again.
        let text = self.redactor.redact(&plain_text(&event.text));
        for line in text.lines() {
            match event.kind {
                EventKind::Error => remember(&mut self.last_stderr, line),
                EventKind::AgentMessage | EventKind::Text => remember(&mut self.last_stdout, line),
                _ => {}
            }
            self.push(kind, line);
        }
    }

    /// Queues one event, its text shortened for display.
    fn push(&mut self, kind: &'static str, text: &str) {
        let source = match self.tracking.as_mut() {
            Some(Tracking {
                turn,
                stream: Some(stderr),
                next,
                skip,
            }) => {
                let i = usize::from(*stderr);
                let index = next[i];
                next[i] += 1;
                if index < skip[i] {
                    // Stored before the replay.
                    return;
                }
                Some(EventSource {
                    turn: *turn,
                    stderr: *stderr,
                    index,
                })
            }
            _ => None,
        };
        self.pending.push(NewEvent {
            kind,
            text: shorten(text, MAX_LINE).into_owned(),
            source,
        });
    }

    /// Hands the queued events to the log's writer, which stores and publishes them as soon
    /// as its previous append is done; waits only when the writer is [`QUEUE`] sends behind.
    ///
    /// # Errors
    /// A failure of an earlier append not yet reported (the events it held are lost).
    pub async fn submit(&mut self) -> StoreResult<()> {
        if !self.pending.is_empty() {
            let events = std::mem::take(&mut self.pending);
            // The writer outlives every sender; it is only gone if it panicked, and then what
            // was sent is lost: say so rather than let the turn go on as if it were stored.
            if self.writer.send(ToWriter::Events(events)).await.is_err() {
                return Err(writer_gone());
            }
        }
        self.take_failure()
    }

    /// Submits the queued events and waits until everything sent so far is stored and
    /// published.
    ///
    /// # Errors
    /// A failure of an append not yet reported (the events it held are lost).
    pub async fn flush(&mut self) -> StoreResult<()> {
        self.submit().await?;
        let (done, stored) = oneshot::channel();
        if self.writer.send(ToWriter::Flush(done)).await.is_err() || stored.await.is_err() {
            return Err(writer_gone());
        }
        self.take_failure()
    }

    fn take_failure(&self) -> StoreResult<()> {
        let failure = self.failed.lock().unwrap_or_else(|e| e.into_inner()).take();
        failure.map_or(Ok(()), Err)
    }
}

/// The error for a log writer that is gone (it can only have panicked): its events are lost.
fn writer_gone() -> StoreError {
    StoreError::Database(sqlx::Error::WorkerCrashed)
}

/// The writer of one task's log: takes everything queued while its previous append ran,
/// stores it (in appends of at most [`BATCH`] events), publishes what was stored, and answers
/// the flushes that were waiting for it. A failed append is recorded in `failed` for the sink
/// to report; later ones are still tried.
async fn write_log(
    task_id: String,
    store: Store,
    hub: Arc<EventHub>,
    mut queue: mpsc::Receiver<ToWriter>,
    failed: Arc<Mutex<Option<StoreError>>>,
) {
    let mut events = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                ToWriter::Events(mut more) => events.append(&mut more),
                ToWriter::Flush(done) => flushes.push(done),
            }
            next = queue.try_recv().ok();
        }
        for chunk in events.chunks(BATCH) {
            let _append = hub.appending(&task_id);
            match store.append_task_events(&task_id, chunk).await {
                Ok(stored) => hub.publish(&task_id, &stored),
                Err(err) => {
                    tracing::error!(task_id, error = %err, "could not store log lines");
                    failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(err);
                }
            }
        }
        events.clear();
        if events.capacity() > BATCH * 4 {
            // Give back the memory of a burst.
            events = Vec::new();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Keeps `line` as the last meaningful one, if it is not blank.
fn remember(last: &mut Option<String>, line: &str) {
    let line = line.trim();
    if !line.is_empty() {
        *last = Some(shorten(line, MAX_REASON_LINE).into_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(structured: bool, chunks: &[&[u8]]) -> Vec<LogLine> {
        let mut s = LineSplitter::new(structured);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| out.push(l));
        }
        s.finish(|l| out.push(l));
        out
    }

    fn plain(text: &str) -> LogLine {
        LogLine::Plain(text.to_owned())
    }

    #[test]
    fn lines_are_split_across_chunks() {
        assert_eq!(
            split(false, &[b"a", b"b\nc", b"\r\n", b"d"]),
            vec![plain("ab"), plain("c"), plain("d")]
        );
        assert_eq!(split(false, &[b"\n\n"]), vec![plain(""), plain("")]);
        assert_eq!(
            split(false, &[b"x\r", b"\ny\n"]),
            vec![LogLine::Rendered("x".into()), plain("y")]
        );
    }

    #[test]
    fn odd_output_is_rendered_and_long_lines_keep_their_end() {
        let mut progress = Vec::new();
        for i in 0..20_000 {
            progress.extend_from_slice(format!("\rdownloading {i}%").as_bytes());
        }
        progress.extend_from_slice(b"\rERROR: checksum mismatch\nnext\n");
        let out = split(false, &[&progress]);
        assert_eq!(
            out,
            vec![
                LogLine::Rendered("ERROR: checksum mismatch".into()),
                plain("next")
            ]
        );
        assert_eq!(
            split(false, &[b"a\0b\n\xff\xfe bad\n\x1b[31mred\x1b[0m\n"]),
            vec![
                LogLine::Rendered("a\u{fffd}b".into()),
                plain("\u{fffd}\u{fffd} bad"),
                LogLine::Rendered("red".into())
            ]
        );
        // A long line keeps its start and its end; what follows it is kept.
        let long = format!("START {} the end", "é".repeat(100_000));
        let out = split(false, &[long.as_bytes(), b"\nnext\n"]);
        let LogLine::Rendered(first) = &out[0] else {
            panic!("{out:?}")
        };
        assert!(first.starts_with("START éé") && first.ends_with("éé the end"));
        assert!(first.contains("characters cut"));
        assert_eq!(out[1], plain("next"));
    }

    #[test]
    fn structured_lines_arrive_whole_or_not_at_all() {
        let json = format!(
            "{{\"type\":\"result\",\"result\":\"{}END\"}}",
            "x".repeat(100_000)
        );
        let out = split(true, &[json.as_bytes(), b"\n"]);
        assert_eq!(out, vec![LogLine::Plain(json)]);
        // Past the bound the line is dropped, without holding it all.
        let mut s = LineSplitter::new(true);
        let mut out = Vec::new();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..50 {
            s.push(&chunk, |l| out.push(l));
            assert!(s.buf.capacity() <= 2 * MAX_PARSED_LINE);
        }
        s.push(b"\n{}\n", |l| out.push(l));
        assert_eq!(out, vec![LogLine::Dropped(50 << 20), plain("{}")]);
    }
}
