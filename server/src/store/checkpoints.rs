//! SQLite's write-ahead log, copied into the database file in the background.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the log past 1,000 pages:
//! that commit copies the log into the database file and syncs it before it returns, and every
//! log line queued behind that append waits. The store turns it off (`wal_autocheckpoint=0`)
//! and checkpoints from a task of its own instead (<https://sqlite.org/wal.html#ckpt>):
//! every second a PASSIVE checkpoint copies what it can without waiting for anyone. The log
//! starts over (and its file stops growing) when a writer finds it copied whole; writes without
//! a pause never do, so a log past [`RESTART_PAGES`] gets a RESTART checkpoint, which holds
//! writers off while it copies what the PASSIVE one left and makes the log start over. It waits
//! for the writer before it and for readers of older snapshots at most 100 ms ([`RESTART_WAIT`],
//! not the pool's 10-s busy timeout), so a read left open cannot stall appends for long.

use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::SqlitePool;

/// How often the log is checkpointed.
const EVERY: Duration = Duration::from_secs(1);
/// Pages of log (of 4 KiB) past which the log is made to start over by a RESTART checkpoint.
const RESTART_PAGES: i64 = 10_000;

/// The checkpointing task of one store's pool; aborted on drop.
#[derive(Debug)]
pub(super) struct Checkpoints(tokio::task::AbortHandle);

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Checkpoints {
    /// Starts checkpointing `pool`'s database every [`EVERY`] until the pool closes.
    pub(super) fn start(pool: SqlitePool) -> Arc<Self> {
        Arc::new(Self(tokio::spawn(run(pool)).abort_handle()))
    }
}

async fn run(pool: SqlitePool) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        every.tick().await;
        if pool.is_closed() {
            return;
        }
        match checkpoint(&pool).await {
            Ok(()) => failing = false,
            Err(sqlx::Error::PoolClosed) => return,
            Err(err) => {
                if !failing {
                    tracing::warn!(error = %err, "could not checkpoint the SQLite write-ahead log; trying again every second");
                }
                failing = true;
            }
        }
    }
}

/// One round: a PASSIVE checkpoint, then a RESTART one if the log is still longer than
/// [`RESTART_PAGES`] (it has not started over for a while: writers kept adding to it while it was
/// copied).
async fn checkpoint(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let (_, pages, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await?;
    if pages > RESTART_PAGES {
        restart(pool).await?;
    }
    Ok(())
}

/// Sets how long (ms) a RESTART checkpoint waits for the writer before it, and then for readers
/// of older snapshots, while it holds every other writer off. Short, so that a read left open
/// for long does not stall appends: the checkpoint gives up (and is tried again next round).
const RESTART_WAIT: &str = "PRAGMA busy_timeout = 100";

/// A RESTART checkpoint on a connection of its own whose busy timeout is [`RESTART_WAIT`]
/// instead of the pool's; the connection is closed afterwards rather than returned with it.
async fn restart(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    conn.close_on_drop();
    sqlx::query(RESTART_WAIT).execute(&mut *conn).await?;
    // Answers (1 if it gave up waiting, pages in the log, pages copied); giving up is no error.
    let _: (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(RESTART)")
        .fetch_one(&mut *conn)
        .await?;
    Ok(())
}
