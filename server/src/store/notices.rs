//! Notices of stored log events to other replicas (PostgreSQL `NOTIFY`), coalesced.
//!
//! A viewer on another replica learns from a notice on [`super::EVENTS_CHANNEL`]
//! (`"<task id> <last seq>"`) that a task's log grew, and reads the rows itself, so one notice
//! naming the last seq stands for every append before it. Notices are sent after the append
//! commits, by a task of the store's own, never by the append: a `NOTIFY` makes its commit take
//! PostgreSQL's notification queue lock and wake every listening backend (this replica's own
//! among them, whose relay then wakes too), and at a thousand appends a second those wake-ups
//! held lines up on a two-core machine.
//!
//! The first notice after a quiet spell goes out at once; while appends keep coming, one
//! statement every [`WINDOW`] carries each task's newest seq (a throttle with leading and
//! trailing edges). A viewer on another replica therefore sees a line at most [`WINDOW`] (plus a
//! round trip) after it was stored, and the last line of every burst is always announced.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPool;
use tokio::sync::mpsc;

/// Shortest time between two notice statements while appends keep coming.
pub(super) const WINDOW: Duration = Duration::from_millis(10);

/// The notifying task of one store's pool; aborted on drop.
#[derive(Debug)]
pub(super) struct Notices {
    stored: mpsc::UnboundedSender<(String, i64)>,
    task: tokio::task::AbortHandle,
}

impl Drop for Notices {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Notices {
    /// Starts announcing stored events on `pool` until the pool closes.
    pub(super) fn start(pool: PgPool) -> Arc<Self> {
        let (stored, pending) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(pool, pending)).abort_handle();
        Arc::new(Self { stored, task })
    }

    /// Announces that `task_id`'s log is stored up to `seq` (soon; never waits).
    pub(super) fn stored(&self, task_id: &str, seq: i64) {
        let _ = self.stored.send((task_id.to_owned(), seq));
    }
}

async fn run(pool: PgPool, mut stored: mpsc::UnboundedReceiver<(String, i64)>) {
    let mut pending: HashMap<String, i64> = HashMap::new();
    let mut failing = false;
    loop {
        // Quiet: the next notice goes out as soon as it comes.
        let Some((task_id, seq)) = stored.recv().await else {
            return;
        };
        pending.insert(task_id, seq);
        loop {
            while let Ok((task_id, seq)) = stored.try_recv() {
                let newest = pending.entry(task_id).or_insert(seq);
                *newest = (*newest).max(seq);
            }
            if pending.is_empty() {
                break;
            }
            let next = tokio::time::Instant::now() + WINDOW;
            match send(&pool, &pending).await {
                Ok(()) => {
                    pending.clear();
                    failing = false;
                }
                Err(sqlx::Error::PoolClosed) => return,
                // Kept, and tried again with whatever comes meanwhile.
                Err(err) => {
                    if !failing {
                        tracing::warn!(
                            error = %err,
                            "could not announce stored log events to other replicas; trying again"
                        );
                    }
                    failing = true;
                }
            }
            tokio::time::sleep_until(next).await;
            if failing {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One statement, so one transaction: listeners receive the notices together, in one wake-up.
async fn send(pool: &PgPool, pending: &HashMap<String, i64>) -> Result<(), sqlx::Error> {
    let (tasks, seqs): (Vec<&str>, Vec<i64>) = pending
        .iter()
        .map(|(task_id, seq)| (task_id.as_str(), *seq))
        .unzip();
    sqlx::query(
        "SELECT pg_notify($1, stored.task_id || ' ' || stored.seq) \
         FROM unnest($2::text[], $3::int8[]) AS stored(task_id, seq)",
    )
    .bind(super::EVENTS_CHANNEL)
    .bind(&tasks)
    .bind(&seqs)
    .execute(pool)
    .await?;
    Ok(())
}
