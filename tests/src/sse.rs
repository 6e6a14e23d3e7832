//! Server-sent events as a test client reads them (the WHATWG HTML "event stream" format, the
//! subset drydock sends: `id:`, `event:`, `data:` lines and comments, blocks ending in a blank
//! line).

/// One event block.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id:` field as a number (drydock's seq), when there was one.
    pub id: Option<i64>,
    /// The `event:` field (`end` for the end of a task's log), when there was one.
    pub event: Option<String>,
    /// The `data:` lines, joined.
    pub data: String,
}

/// Takes the first complete block (up to and including its blank line) off the front of `buf`
/// and parses it; `None` while `buf` holds no complete block.
pub fn next_event(buf: &mut String) -> Option<SseEvent> {
    let end = buf.find("\n\n")?;
    let block: String = buf.drain(..end + 2).collect();
    let mut event = SseEvent::default();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            event.id = v.trim().parse::<i64>().ok();
        } else if let Some(v) = line.strip_prefix("event:") {
            event.event = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            event.data.push_str(v.trim_start());
        }
    }
    Some(event)
}
