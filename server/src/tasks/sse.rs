//! Server-sent event streams: a task's log (replayed from the database after `Last-Event-ID`,
//! then live) and the status changes of a user's tasks.
//!
//! A task's log is a stream the viewer's connection polls itself: it reads the hub's broadcast
//! directly and writes each event's frame, made once for all viewers when it was published, so a
//! viewer costs no task, channel or copy of its own, and a viewer whose connection is ready
//! takes every event already there in one go. A slow viewer is simply not polled: the broadcast
//! never waits for it, and once it has fallen too far behind (the broadcast lagged) it catches
//! up from the database, which has everything.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::hub::{LiveEvent, TaskSignal};
use crate::state::AppState;
use crate::store::TaskEvent;

const REPLAY_PAGE: i64 = 500;
const CHANNEL: usize = 64;
/// How often an idle stream sends a comment, so proxies and browsers keep it open.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Viewers reading a page of stored events at once, across the server. Many viewers falling
/// behind together (a burst of output to a crowd) would otherwise take every database
/// connection and starve the task's own log writer, so slow viewers would hold up the task; with
/// this bound they wait for each other instead (the pools hold 8 and 16 connections).
static CATCHING_UP: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(3);

/// A stored event as an SSE frame (`id:` its seq, `data:` its JSON).
fn log_frame(event: &TaskEvent) -> Option<Bytes> {
    LiveEvent::of(event).map(|live| live.frame)
}

/// The SSE response for a task's log, starting after seq `after`: `text/event-stream`, one
/// event per log line (`id:` its seq, `data:` the event as JSON), then an `end` event with the
/// task's status once its run ended.
pub fn task_log(state: AppState, task_id: String, after: i64) -> Response {
    let viewer = LogViewer {
        state,
        task_id,
        cursor: after,
        phase: Phase::Start,
        rx: None,
        ready: VecDeque::new(),
        heartbeat: None,
    };
    let frames = futures::stream::unfold(viewer, |mut viewer| async move {
        let frame = viewer.next_frame().await?;
        Some((Ok::<Bytes, Infallible>(frame), viewer))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(frames),
    )
        .into_response()
}

/// Where a viewer of a task's log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Subscribe, then replay what is stored.
    Start,
    /// Follow the broadcast.
    Live,
    /// The run ended: send what is left.
    Ending,
    /// Everything stored was sent: the `end` event.
    Ended,
    /// Nothing more.
    Done,
}

/// One viewer of a task's log, polled by its connection.
struct LogViewer {
    state: AppState,
    task_id: String,
    /// The last seq sent.
    cursor: i64,
    phase: Phase,
    /// The task's broadcast, subscribed before the history is read so nothing stored in between
    /// is missed.
    rx: Option<broadcast::Receiver<TaskSignal>>,
    /// Frames read from the database, not sent yet (at most a page).
    ready: VecDeque<Bytes>,
    /// Ticks while following the broadcast.
    heartbeat: Option<tokio::time::Interval>,
}

impl LogViewer {
    /// The next frame to send; `None` when the stream is over (the run ended and everything was
    /// sent, the database failed, or the server is shutting down).
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Some(frame);
            }
            match self.phase {
                Phase::Start => {
                    if self.rx.is_none() {
                        self.rx = Some(self.state.hub.subscribe(&self.task_id));
                    }
                    if !self.read_stored().await? {
                        // History read up to where the broadcast takes over.
                        self.phase = if self.ended().await {
                            Phase::Ending
                        } else {
                            Phase::Live
                        };
                    }
                }
                Phase::Live => {
                    if let Some(frame) = self.follow().await? {
                        return Some(frame);
                    }
                }
                Phase::Ending => {
                    if !self.read_stored().await? {
                        // The last page read goes out before the `end` event.
                        self.phase = Phase::Ended;
                    }
                }
                Phase::Ended => {
                    self.phase = Phase::Done;
                    return Some(self.end_frame().await);
                }
                Phase::Done => return None,
            }
        }
    }

    /// One step of following the broadcast: `Some(Some(frame))` for the next event or a
    /// heartbeat; `Some(None)` when stored events were read from the database instead (after a
    /// lag, a gap, or events another replica stored) or the run ended; `None` when the stream is
    /// over.
    async fn follow(&mut self) -> Option<Option<Bytes>> {
        let heartbeat = self.heartbeat.get_or_insert_with(|| {
            let mut every =
                tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every
        });
        let rx = self.rx.as_mut()?;
        let signal = tokio::select! {
            biased;
            () = self.state.hub.closed() => return None,
            signal = rx.recv() => signal,
            _ = heartbeat.tick() => return Some(Some(Bytes::from_static(b": heartbeat\n\n"))),
        };
        match signal {
            Ok(TaskSignal::Event(event)) if event.seq <= self.cursor => {}
            Ok(TaskSignal::Event(event)) if event.seq == self.cursor + 1 => {
                self.cursor = event.seq;
                return Some(Some(event.frame.clone()));
            }
            Ok(TaskSignal::Stored(seq)) if seq <= self.cursor => {}
            Ok(TaskSignal::Event(_) | TaskSignal::Stored(_))
            | Err(broadcast::error::RecvError::Lagged(_)) => {
                self.read_stored().await?;
            }
            Ok(TaskSignal::End(_)) | Err(broadcast::error::RecvError::Closed) => {
                self.phase = Phase::Ending;
            }
        }
        Some(None)
    }

    /// Reads the next page of stored events after the cursor into `ready`; answers whether
    /// there may be more (a full page), or `None` when the database failed or the server is
    /// shutting down.
    async fn read_stored(&mut self) -> Option<bool> {
        let page = {
            let turn = tokio::select! {
                turn = CATCHING_UP.acquire() => turn.ok()?,
                () = self.state.hub.closed() => return None,
            };
            // Boxed: the viewer's stream stays small while it only follows the broadcast.
            let page = Box::pin(self.state.store.list_task_events_after(
                &self.task_id,
                self.cursor,
                REPLAY_PAGE,
            ))
            .await
            .ok()?;
            drop(turn);
            page
        };
        let full = page.len() as i64 == REPLAY_PAGE;
        for event in &page {
            if let Some(frame) = log_frame(event) {
                self.ready.push_back(frame);
            }
            self.cursor = event.seq;
        }
        Some(full)
    }

    async fn ended(&self) -> bool {
        match Box::pin(self.state.store.get_task_for_runner(&self.task_id)).await {
            Ok(Some(task)) => !matches!(task.status.as_str(), "queued" | "running"),
            _ => true,
        }
    }

    /// The `end` event: the task's status and why.
    async fn end_frame(&self) -> Bytes {
        let task = Box::pin(self.state.store.get_task_for_runner(&self.task_id))
            .await
            .ok()
            .flatten();
        let body = serde_json::json!({
            "status": task.as_ref().map(|t| t.status.clone()),
            "status_reason": task.and_then(|t| t.status_reason),
        });
        Bytes::from(format!("event: end\ndata: {body}\n\n"))
    }
}

impl Drop for LogViewer {
    fn drop(&mut self) {
        // Unsubscribe first, so the task's channel is forgotten when this was its last viewer.
        self.rx = None;
        self.state.hub.forget_if_idle(&self.task_id);
    }
}

/// The SSE response of status changes of the user's tasks.
pub fn task_statuses(
    state: AppState,
    user_id: String,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    let mut changes = state.hub.subscribe_status();
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                change = changes.recv() => change,
                () = tx.closed() => return,
                () = state.hub.closed() => return,
            };
            let event = match change {
                Ok(change) if change.user_id == user_id => Event::default()
                    .event("status")
                    .json_data(&change)
                    .unwrap_or_default(),
                Ok(_) => continue,
                // Missed some: tell the page to reload its list.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    Event::default().event("resync").data("{}")
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    Sse::new(ReceiverStream::new(rx)).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("heartbeat"),
    )
}
