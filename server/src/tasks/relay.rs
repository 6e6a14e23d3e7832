//! Live events across replicas through PostgreSQL `LISTEN/NOTIFY`.
//!
//! Each replica listens on three channels: stored log events (`"<task id> <last seq>"`, sent
//! by the store after the appends commit, at most one per task every 10 ms), status changes
//! (`"<origin replica> <task id>"`) and requests for a task's owner (the owner's id). A
//! notification carries no log text and no status: the receiving replica reads the rows, so a
//! viewer on any replica sees exactly what the database holds, in order, and a reconnect after
//! `Last-Event-ID` loses nothing. When the listening connection drops, notifications sent
//! meanwhile are lost; the relay then tells every local viewer to re-read the database.
//!
//! On SQLite (one replica) no relay runs: the hub's in-process fan-out is the whole story.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::TaskRunner;
use super::hub::{EventHub, StatusChange};
use crate::store::{CONTROL_CHANNEL, EVENTS_CHANNEL, STATUS_CHANNEL, Store};

/// Starts the relay of replica `me` (PostgreSQL only) until `stop` is cancelled.
pub async fn start(
    store: Store,
    hub: Arc<EventHub>,
    runner: TaskRunner,
    me: String,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let Some(mut listener) = store
        .listen(&[EVENTS_CHANNEL, STATUS_CHANNEL, CONTROL_CHANNEL])
        .await?
    else {
        return Ok(());
    };
    let (tx, mut changed) = mpsc::unbounded_channel::<String>();
    hub.relay_status_to(tx);
    // Announce this replica's status changes.
    let announce_store = store.clone();
    let announce_me = me.clone();
    let announce_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let task_id = tokio::select! {
                task_id = changed.recv() => task_id,
                () = announce_stop.cancelled() => return,
            };
            let Some(task_id) = task_id else { return };
            let payload = format!("{announce_me} {task_id}");
            if let Err(err) = announce_store.notify(STATUS_CHANNEL, &payload).await {
                tracing::warn!(error = %err, "could not announce a status change to other replicas");
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                () = stop.cancelled() => return,
            };
            match received {
                Ok(Some(n)) => {
                    relay_one(&store, &hub, &runner, &me, n.channel(), n.payload()).await;
                }
                // The connection dropped and was re-established: anything may have been missed.
                Ok(None) => {
                    tracing::warn!("the live-event listener reconnected; viewers re-read the log");
                    hub.resync_all();
                    runner.act_on_requests().await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the live-event listener failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    Ok(())
}

async fn relay_one(
    store: &Store,
    hub: &EventHub,
    runner: &TaskRunner,
    me: &str,
    channel: &str,
    payload: &str,
) {
    match channel {
        EVENTS_CHANNEL => {
            if let Some((task_id, seq)) = payload.split_once(' ')
                && let Ok(seq) = seq.parse::<i64>()
            {
                hub.stored(task_id, seq);
            }
        }
        STATUS_CHANNEL => {
            let Some((origin, task_id)) = payload.split_once(' ') else {
                return;
            };
            if origin == me {
                return;
            }
            let Ok(Some(task)) = store.get_task_for_runner(task_id).await else {
                return;
            };
            match task.status.as_str() {
                // Queued through another replica: this one may have a free slot.
                "queued" => {
                    let runner = runner.clone();
                    tokio::spawn(async move { runner.schedule().await });
                }
                "running" => {}
                ended => hub.end(&task.id, ended),
            }
            hub.status_changed_here(StatusChange {
                user_id: task.user_id,
                task_id: task.id,
                status: task.status,
                status_reason: task.status_reason,
            });
        }
        CONTROL_CHANNEL if payload == me => runner.act_on_requests().await,
        _ => {}
    }
}
