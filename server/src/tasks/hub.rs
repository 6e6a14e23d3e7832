//! In-process fan-out of task log events and status changes to live viewers.
//!
//! The database is the record; the hub only tells viewers that something new was stored. A
//! viewer that falls behind (its channel lags) or joins late reads what it missed from the
//! database, so the hub's buffers stay bounded whatever the viewers do.
//!
//! With several replicas (PostgreSQL), [`super::relay`] feeds the hub what other replicas
//! stored ([`TaskSignal::Stored`]: only a seq, the viewer reads the rows) and the status
//! changes they announced; the hub hands its own status changes to the relay to announce.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::store::TaskEvent;

/// A stored event as every live viewer sends it: serialized and framed once when published,
/// however many viewers there are (each viewer's connection writes the same bytes).
#[derive(Debug)]
pub struct LiveEvent {
    /// The event's seq (the SSE `id:`).
    pub seq: i64,
    /// The whole SSE event (WHATWG HTML §9.2, server-sent events): `id: <seq>\ndata: <the
    /// event as JSON, the same as [`TaskEvent`]'s serialization>\n\n`.
    pub frame: bytes::Bytes,
}

impl LiveEvent {
    /// `event` as a framed SSE event (`id:` its seq, `data:` its JSON); `None` when it cannot
    /// be serialized.
    pub fn of(event: &TaskEvent) -> Option<Self> {
        // JSON escapes line breaks, so the data is one line and needs no splitting.
        let json = serde_json::to_string(event).ok()?;
        let frame = format!("id: {}\ndata: {json}\n\n", event.seq);
        Some(Self {
            seq: event.seq,
            frame: bytes::Bytes::from(frame),
        })
    }

    /// The event's JSON (the SSE `data:`).
    pub fn json(&self) -> &str {
        std::str::from_utf8(&self.frame)
            .ok()
            .and_then(|frame| frame.split_once("\ndata: "))
            .map_or("", |(_, rest)| rest.trim_end_matches('\n'))
    }
}

/// Messages a task's viewers receive.
#[derive(Debug, Clone)]
pub enum TaskSignal {
    /// An event was stored.
    Event(Arc<LiveEvent>),
    /// Events up to this seq were stored (by any replica): read them from the database.
    Stored(i64),
    /// The task's run ended with this status.
    End(String),
}

/// A task's status changed (for the task table).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusChange {
    /// Owner (viewers only see their own).
    #[serde(skip)]
    pub user_id: String,
    /// Task.
    pub task_id: String,
    /// New status.
    pub status: String,
    /// Why, when it ended.
    pub status_reason: Option<String>,
}

/// Per-task channels plus one channel of status changes.
#[derive(Debug)]
pub struct EventHub {
    tasks: Mutex<HashMap<String, broadcast::Sender<TaskSignal>>>,
    status: broadcast::Sender<StatusChange>,
    /// Cancelled when the server shuts down, so live streams end cleanly instead of holding
    /// the shutdown until its grace period is over.
    closing: tokio_util::sync::CancellationToken,
    /// Where status changes go to reach other replicas (set when a relay runs).
    relay: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<String>>,
    /// Tasks whose log this replica is appending to right now, with the highest seq another
    /// replica's notification ([`EventHub::stored`]) named meanwhile.
    appending: Mutex<HashMap<String, Appending>>,
    /// When this replica last published log events, in ms after `started` ([`u64::MAX`]: never;
    /// see [`EventHub::quiet_for`]).
    published_at: AtomicU64,
    started: Instant,
}

/// A task's appends in flight here.
#[derive(Debug, Default)]
struct Appending {
    /// Appends under way.
    count: usize,
    /// The highest seq published here since the first of them began.
    published: i64,
    /// The highest seq a notification named meanwhile, held back until they end.
    held: Option<i64>,
}

/// An append to a task's log under way in this replica (see [`EventHub::appending`]); ends when
/// dropped, whether the append finished or was abandoned.
#[derive(Debug)]
pub struct AppendGuard<'a> {
    hub: &'a EventHub,
    task_id: String,
}

impl Drop for AppendGuard<'_> {
    fn drop(&mut self) {
        let held = {
            let mut appending = self.hub.lock_appending();
            let Some(state) = appending.get_mut(&self.task_id) else {
                return;
            };
            state.count = state.count.saturating_sub(1);
            if state.count > 0 {
                return;
            }
            let state = appending.remove(&self.task_id).unwrap_or_default();
            state.held.filter(|seq| *seq > state.published)
        };
        // Another replica stored more than this one published: its viewers read it.
        if let Some(seq) = held {
            self.hub.send_stored(&self.task_id, seq);
        }
    }
}

/// Messages buffered per task channel before a slow viewer lags (and re-reads the database).
const TASK_CHANNEL: usize = 1024;

impl Default for EventHub {
    fn default() -> Self {
        Self {
            tasks: Mutex::new(HashMap::new()),
            status: broadcast::channel(256).0,
            closing: tokio_util::sync::CancellationToken::new(),
            relay: std::sync::OnceLock::new(),
            appending: Mutex::new(HashMap::new()),
            published_at: AtomicU64::new(u64::MAX),
            started: Instant::now(),
        }
    }
}

impl EventHub {
    fn sender(&self, task_id: &str) -> broadcast::Sender<TaskSignal> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks
            .entry(task_id.to_owned())
            .or_insert_with(|| broadcast::channel(TASK_CHANNEL).0)
            .clone()
    }

    /// Ends every live stream (the server is shutting down).
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Resolves when the server starts shutting down.
    pub async fn closed(&self) {
        self.closing.cancelled().await;
    }

    /// Subscribes to a task's events (subscribe before reading history, so nothing is missed).
    pub fn subscribe(&self, task_id: &str) -> broadcast::Receiver<TaskSignal> {
        self.sender(task_id).subscribe()
    }

    /// Forgets a task's channel when nobody listens any more (a viewer of a finished task
    /// subscribed, found it ended, and left), so channels do not pile up.
    pub fn forget_if_idle(&self, task_id: &str) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks
            .get(task_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            tasks.remove(task_id);
        }
    }

    /// How many tasks have a channel (for tests and metrics).
    pub fn channel_count(&self) -> usize {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn lock_appending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Appending>> {
        self.appending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks an append to a task's log under way here until the guard is dropped (after its
    /// events were [published](Self::publish)). On PostgreSQL the append's own notification
    /// comes back through the relay as [`stored`](Self::stored), and can arrive before its
    /// events are published here: meanwhile such notifications are held back and dropped when
    /// what they name was published here, so viewers take the events from the broadcast instead
    /// of each reading them from the database (slower, and a load on it).
    pub fn appending(&self, task_id: &str) -> AppendGuard<'_> {
        self.lock_appending()
            .entry(task_id.to_owned())
            .or_default()
            .count += 1;
        AppendGuard {
            hub: self,
            task_id: task_id.to_owned(),
        }
    }

    /// Tells viewers of a task about stored events (nobody subscribed: nothing to do, and no
    /// channel is made for it).
    pub fn publish(&self, task_id: &str, events: &[TaskEvent]) {
        if events.is_empty() {
            return;
        }
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.published_at.store(now, Ordering::Relaxed);
        if let Some(last) = events.last()
            && let Some(state) = self.lock_appending().get_mut(task_id)
        {
            state.published = state.published.max(last.seq);
        }
        let sender = {
            let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            tasks.get(task_id).cloned()
        };
        let Some(sender) = sender.filter(|s| s.receiver_count() > 0) else {
            return;
        };
        for event in events {
            // Not sendable live: viewers find the gap and read it from the database.
            if let Some(live) = LiveEvent::of(event) {
                let _ = sender.send(TaskSignal::Event(Arc::new(live)));
            }
        }
    }

    /// How long no task's log events were published here ([`Duration::MAX`] when none ever
    /// were), to millisecond precision: how long live output has been quiet.
    pub fn quiet_for(&self) -> Duration {
        match self.published_at.load(Ordering::Relaxed) {
            u64::MAX => Duration::MAX,
            last => self
                .started
                .elapsed()
                .saturating_sub(Duration::from_millis(last)),
        }
    }

    /// Tells viewers a task's run ended, and forgets its channel.
    pub fn end(&self, task_id: &str, status: &str) {
        let sender = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            tasks.remove(task_id)
        };
        if let Some(sender) = sender {
            let _ = sender.send(TaskSignal::End(status.to_owned()));
        }
    }

    /// Announces a status change to this replica's viewers and, through the relay, to the
    /// other replicas' viewers.
    pub fn status_changed(&self, change: StatusChange) {
        if let Some(relay) = self.relay.get() {
            let _ = relay.send(change.task_id.clone());
        }
        self.status_changed_here(change);
    }

    /// Announces a status change to this replica's viewers only (the relay, for a change
    /// another replica announced).
    pub fn status_changed_here(&self, change: StatusChange) {
        let _ = self.status.send(change);
    }

    /// Sends the ids of tasks whose status changed here to `relay` from now on.
    pub fn relay_status_to(&self, relay: tokio::sync::mpsc::UnboundedSender<String>) {
        let _ = self.relay.set(relay);
    }

    /// Tells a task's viewers here that events up to `seq` were stored (by any replica); held
    /// back while this replica appends to the task's log (see [`appending`](Self::appending)).
    pub fn stored(&self, task_id: &str, seq: i64) {
        if let Some(state) = self.lock_appending().get_mut(task_id) {
            state.held = Some(state.held.map_or(seq, |held| held.max(seq)));
            return;
        }
        self.send_stored(task_id, seq);
    }

    fn send_stored(&self, task_id: &str, seq: i64) {
        let sender = {
            let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            tasks.get(task_id).cloned()
        };
        if let Some(sender) = sender.filter(|s| s.receiver_count() > 0) {
            let _ = sender.send(TaskSignal::Stored(seq));
        }
    }

    /// Tells every viewer here to re-read the database (notifications may have been lost while
    /// the relay's connection was down).
    pub fn resync_all(&self) {
        let senders: Vec<_> = {
            let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            tasks.values().cloned().collect()
        };
        for sender in senders {
            let _ = sender.send(TaskSignal::Stored(i64::MAX));
        }
    }

    /// Subscribes to status changes of every task (filter by user).
    pub fn subscribe_status(&self) -> broadcast::Receiver<StatusChange> {
        self.status.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_quiet_until_events_are_published() {
        let hub = EventHub::default();
        assert_eq!(hub.quiet_for(), Duration::MAX, "nothing published yet");
        hub.publish("t1", &[]);
        assert_eq!(
            hub.quiet_for(),
            Duration::MAX,
            "an empty batch is no output"
        );
        hub.publish("t1", &[event(1)]);
        assert!(hub.quiet_for() < Duration::from_secs(3600));
    }

    #[test]
    fn channels_of_idle_or_ended_tasks_are_forgotten() {
        let hub = EventHub::default();
        let rx = hub.subscribe("t1");
        hub.forget_if_idle("t1");
        assert_eq!(hub.channel_count(), 1, "a channel with a viewer stays");
        drop(rx);
        hub.forget_if_idle("t1");
        assert_eq!(hub.channel_count(), 0);
        let mut rx = hub.subscribe("t2");
        hub.end("t2", "succeeded");
        assert_eq!(hub.channel_count(), 0, "ending a task drops its channel");
        assert!(matches!(rx.try_recv(), Ok(TaskSignal::End(status)) if status == "succeeded"));
        hub.publish("t3", &[]);
        assert_eq!(
            hub.channel_count(),
            0,
            "publishing with no viewer makes no channel"
        );
    }

    fn event(seq: i64) -> TaskEvent {
        TaskEvent {
            task_id: "t1".into(),
            seq,
            ts: 1,
            kind: "stdout".into(),
            text: format!("line {seq}"),
        }
    }

    #[test]
    fn a_notification_of_an_append_under_way_here_is_dropped_once_it_is_published() {
        let hub = EventHub::default();
        let mut rx = hub.subscribe("t1");
        {
            let _append = hub.appending("t1");
            // The append's own notification, arriving before its answer.
            hub.stored("t1", 2);
            assert!(rx.try_recv().is_err(), "held back while the append runs");
            hub.publish("t1", &[event(1), event(2)]);
        }
        assert!(matches!(rx.try_recv(), Ok(TaskSignal::Event(e)) if e.seq == 1));
        assert!(matches!(rx.try_recv(), Ok(TaskSignal::Event(e)) if e.seq == 2));
        assert!(rx.try_recv().is_err(), "nothing to read from the database");

        // Another replica stored more meanwhile: its viewers read it once the append is over.
        {
            let _append = hub.appending("t1");
            hub.stored("t1", 5);
            hub.publish("t1", &[event(3)]);
        }
        assert!(matches!(rx.try_recv(), Ok(TaskSignal::Event(e)) if e.seq == 3));
        assert!(matches!(rx.try_recv(), Ok(TaskSignal::Stored(5))));

        // With no append under way, a notification goes straight through.
        hub.stored("t1", 6);
        assert!(matches!(rx.try_recv(), Ok(TaskSignal::Stored(6))));
    }

    #[test]
    fn an_event_is_serialized_once_for_all_its_viewers() {
        let hub = EventHub::default();
        let mut viewers: Vec<_> = (0..3).map(|_| hub.subscribe("t1")).collect();
        let event = TaskEvent {
            task_id: "t1".into(),
            seq: 7,
            ts: 1,
            kind: "stdout".into(),
            text: "hello \"there\"".into(),
        };
        hub.publish("t1", std::slice::from_ref(&event));
        let received: Vec<Arc<LiveEvent>> = viewers
            .iter_mut()
            .map(|rx| match rx.try_recv() {
                Ok(TaskSignal::Event(live)) => live,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(received[0].seq, 7);
        assert!(received[0].frame.starts_with(b"id: 7\ndata: {"));
        assert!(received[0].frame.ends_with(b"}\n\n"));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(received[0].json()).ok(),
            serde_json::to_value(&event).ok()
        );
        assert!(
            received.iter().all(|live| Arc::ptr_eq(live, &received[0])),
            "every viewer gets the one serialization"
        );
    }
}
