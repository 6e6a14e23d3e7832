//! Server-sent event streams: a task's log (replayed from the database after `Last-Event-ID`,
//! then live) and the status changes of a user's tasks.
//!
//! Each stream is fed by a small producer task writing into a bounded channel: a slow viewer
//! fills its channel and the producer waits (it never buffers without bound); when the hub's
//! broadcast outruns it, it catches up from the database instead.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::hub::{LiveEvent, TaskSignal};
use crate::state::AppState;
use crate::store::TaskEvent;

const REPLAY_PAGE: i64 = 500;
const CHANNEL: usize = 64;

/// Viewers reading a page of stored events at once, across the server. Many viewers falling
/// behind together (a burst of output to a crowd) would otherwise take every database
/// connection and starve the task's own log writer, so slow viewers would hold up the task; with
/// this bound they wait for each other instead (the pools hold 8 and 16 connections).
static CATCHING_UP: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(3);

fn log_event(event: &TaskEvent) -> Event {
    Event::default()
        .id(event.seq.to_string())
        .json_data(event)
        .unwrap_or_else(|_| Event::default().comment("unserializable event"))
}

/// A live event as SSE: its JSON was made once, when it was published.
fn live_event(event: &LiveEvent) -> Event {
    Event::default()
        .id(event.seq.to_string())
        .data(&*event.json)
}

/// The SSE response for a task's log, starting after seq `after`.
pub fn task_log(
    state: AppState,
    task_id: String,
    after: i64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(produce_task_log(state, task_id, after, tx));
    Sse::new(ReceiverStream::new(rx)).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("heartbeat"),
    )
}

type Tx = mpsc::Sender<Result<Event, Infallible>>;

/// Sends stored events after `cursor`; answers the new cursor, or `None` when the viewer left.
async fn catch_up(state: &AppState, task_id: &str, mut cursor: i64, tx: &Tx) -> Option<i64> {
    loop {
        let page = {
            let _turn = CATCHING_UP.acquire().await.ok()?;
            state
                .store
                .list_task_events_after(task_id, cursor, REPLAY_PAGE)
                .await
                .ok()?
        };
        let full = page.len() as i64 == REPLAY_PAGE;
        for event in &page {
            tx.send(Ok(log_event(event))).await.ok()?;
            cursor = event.seq;
        }
        if !full {
            return Some(cursor);
        }
    }
}

async fn send_end(state: &AppState, task_id: &str, tx: &Tx) {
    let task = state
        .store
        .get_task_for_runner(task_id)
        .await
        .ok()
        .flatten();
    let body = serde_json::json!({
        "status": task.as_ref().map(|t| t.status.clone()),
        "status_reason": task.and_then(|t| t.status_reason),
    });
    let _ = tx
        .send(Ok(Event::default().event("end").data(body.to_string())))
        .await;
}

async fn ended(state: &AppState, task_id: &str) -> bool {
    match state.store.get_task_for_runner(task_id).await {
        Ok(Some(task)) => !matches!(task.status.as_str(), "queued" | "running"),
        _ => true,
    }
}

async fn produce_task_log(state: AppState, task_id: String, after: i64, tx: Tx) {
    tokio::select! {
        () = follow_task_log(&state, &task_id, after, &tx) => {}
        () = state.hub.closed() => {}
    }
    state.hub.forget_if_idle(&task_id);
}

async fn follow_task_log(state: &AppState, task_id: &str, after: i64, tx: &Tx) {
    // Subscribe before reading history, so nothing stored in between is missed.
    let mut rx = state.hub.subscribe(task_id);
    let Some(mut cursor) = catch_up(state, task_id, after, tx).await else {
        return;
    };
    if ended(state, task_id).await {
        if catch_up(state, task_id, cursor, tx).await.is_some() {
            send_end(state, task_id, tx).await;
        }
        return;
    }
    loop {
        let signal = tokio::select! {
            signal = rx.recv() => signal,
            () = tx.closed() => return,
        };
        match signal {
            Ok(TaskSignal::Event(event)) if event.seq <= cursor => {}
            Ok(TaskSignal::Event(event)) if event.seq == cursor + 1 => {
                if tx.send(Ok(live_event(&event))).await.is_err() {
                    return;
                }
                cursor = event.seq;
            }
            Ok(TaskSignal::Stored(seq)) if seq <= cursor => {}
            // A gap (events published before we subscribed, or skipped), events another replica
            // stored, or a lag: read the database, which has everything.
            Ok(TaskSignal::Event(_) | TaskSignal::Stored(_))
            | Err(broadcast::error::RecvError::Lagged(_)) => {
                let Some(next) = catch_up(state, task_id, cursor, tx).await else {
                    return;
                };
                cursor = next;
            }
            Ok(TaskSignal::End(_)) | Err(broadcast::error::RecvError::Closed) => {
                if catch_up(state, task_id, cursor, tx).await.is_some() {
                    send_end(state, task_id, tx).await;
                }
                return;
            }
        }
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
