//! Queries on task logs: append with gap-free sequence numbers, and read after a position.

use super::{Store, StoreError, StoreResult, TaskEvent, now_ms, text, with_pool};

/// An append on SQLite, as one call: `$1` task id, `$2` number of lines, `$3` timestamp (ms),
/// `$4` the lines as a JSON array of `[kind, text, agent turn, agent stream, agent index]`.
/// Answers the task's last seq after the bump, or no row for a task that does not exist (then
/// nothing is written).
const SQLITE_APPEND: &str = "\
    BEGIN IMMEDIATE; \
    UPDATE tasks SET event_seq = event_seq + $2 WHERE id = $1 RETURNING event_seq; \
    INSERT INTO task_events (task_id, seq, ts, kind, text, agent_turn, agent_stream, agent_index) \
        SELECT $1, tasks.event_seq - $2 + line.key + 1, $3, line.value ->> 0, \
            line.value ->> 1, line.value ->> 2, line.value ->> 3, line.value ->> 4 \
        FROM tasks, json_each($4) AS line WHERE tasks.id = $1; \
    COMMIT;";

/// A pooled SQLite connection running [`SQLITE_APPEND`]. Dropped before the transaction is known
/// to be committed (a statement failed part-way, or the append was cancelled), it closes the
/// connection instead of returning it to the pool: closing rolls the transaction back, and
/// a connection left inside a transaction would hold the database's write lock.
struct OpenTransaction {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    committed: bool,
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        if !self.committed {
            self.conn.close_on_drop();
        }
    }
}

/// A log line to append (already redacted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// `info`, `command`, `stdout`, `stderr`, `agent`, `error` or `success`.
    pub kind: &'static str,
    /// The text.
    pub text: String,
    /// Which output of the turn's agent it was made from, for an event made from the agent's
    /// output; `None` for every other line.
    pub source: Option<EventSource>,
}

/// Where an event made from an agent's output came from: stored with the event, so the log says
/// exactly how far each output stream got (a replica that adopts the turn replays the output
/// kept in the sandbox and skips what is stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSource {
    /// The turn.
    pub turn: i64,
    /// `false` for standard output, `true` for standard error.
    pub stderr: bool,
    /// The event's index among the events made from that stream in that turn, from 0.
    pub index: i64,
}

impl EventSource {
    fn stream(&self) -> &'static str {
        if self.stderr { "stderr" } else { "stdout" }
    }
}

impl Store {
    /// Appends events to a task's log in one transaction and returns them with their seqs.
    ///
    /// On PostgreSQL, after the commit, other replicas are notified on [`super::EVENTS_CHANNEL`]
    /// with `"<task id> <last seq>"` and their viewers read the new rows: at once after a quiet
    /// spell, else within 10 ms (one notice for every append of a task in that time).
    ///
    /// Seqs come from bumping `tasks.event_seq` first: that row lock (PostgreSQL) or the single
    /// writer (SQLite) serialises concurrent appenders of one task, so seqs are unique, increasing
    /// and gap-free, while appenders of different tasks do not wait on each other (PostgreSQL).
    pub async fn append_task_events(
        &self,
        task_id: &str,
        events: &[NewEvent],
    ) -> StoreResult<Vec<TaskEvent>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let ts = now_ms();
        let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
        // What is published must be what is stored.
        let texts: Vec<String> = events
            .iter()
            .map(|event| text(event.text.as_str()).into_owned())
            .collect();
        let rows = |last: i64, texts: Vec<String>| -> Vec<TaskEvent> {
            events
                .iter()
                .zip(texts)
                .zip(last - count + 1..)
                .map(|((event, text), seq)| TaskEvent {
                    task_id: task_id.to_owned(),
                    seq,
                    ts,
                    kind: event.kind.to_owned(),
                    text,
                })
                .collect()
        };
        match &self.pool {
            super::Pool::Postgres(pool) => {
                // One statement, so one round trip and an implicit transaction: on a busy
                // machine every round trip to the database's process can wait for the CPU, and
                // a line waits for the whole append (BEGIN, bump, insert, notify, COMMIT were
                // five). The bump's row lock still serialises appenders of one task. The notice
                // to other replicas goes after the commit, coalesced (`notices`): a `NOTIFY`
                // in this statement would make its commit wake every listener.
                let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
                let turns: Vec<Option<i64>> =
                    events.iter().map(|e| e.source.map(|s| s.turn)).collect();
                let streams: Vec<Option<&str>> = events
                    .iter()
                    .map(|e| e.source.map(|s| s.stream()))
                    .collect();
                let indexes: Vec<Option<i64>> =
                    events.iter().map(|e| e.source.map(|s| s.index)).collect();
                let last: i64 = sqlx::query_scalar(
                    "WITH bumped AS ( \
                         UPDATE tasks SET event_seq = event_seq + $2 WHERE id = $1 \
                         RETURNING event_seq \
                     ), inserted AS ( \
                         INSERT INTO task_events (task_id, seq, ts, kind, text, agent_turn, \
                             agent_stream, agent_index) \
                         SELECT $1, bumped.event_seq - $2 + line.n, $3, line.kind, line.text, \
                             line.turn, line.stream, line.index \
                         FROM bumped, unnest($4::text[], $5::text[], $6::int8[], $7::text[], \
                             $8::int8[]) WITH ORDINALITY AS line(kind, text, turn, stream, index, n) \
                     ) \
                     SELECT bumped.event_seq FROM bumped",
                )
                .bind(task_id)
                .bind(count)
                .bind(ts)
                .bind(&kinds)
                .bind(&texts)
                .bind(&turns)
                .bind(&streams)
                .bind(&indexes)
                .fetch_one(pool)
                .await?;
                if let Some(notices) = &self.notices {
                    notices.stored(task_id, last);
                }
                Ok(rows(last, texts))
            }
            super::Pool::Sqlite(pool) => {
                // One call to the connection's worker thread for the whole transaction (it was
                // five: the pool's ping, BEGIN, bump, insert, COMMIT), since each call waits
                // for that thread to be scheduled and a line waits for the whole append. The
                // lines travel as one JSON array, so the statements are the same whatever the
                // batch size and stay prepared.
                let lines: Vec<_> = events
                    .iter()
                    .zip(&texts)
                    .map(|(event, text)| {
                        (
                            event.kind,
                            text,
                            event.source.map(|s| s.turn),
                            event.source.map(|s| s.stream()),
                            event.source.map(|s| s.index),
                        )
                    })
                    .collect();
                let lines = serde_json::to_string(&lines)
                    .map_err(|err| StoreError::Database(sqlx::Error::Encode(Box::new(err))))?;
                let mut open = OpenTransaction {
                    conn: pool.acquire().await?,
                    committed: false,
                };
                // `fetch_all`, not `fetch_one`: that stops after the first row, before COMMIT.
                let bumped: Vec<i64> = sqlx::query_scalar(SQLITE_APPEND)
                    .bind(task_id)
                    .bind(count)
                    .bind(ts)
                    .bind(&lines)
                    .fetch_all(&mut *open.conn)
                    .await?;
                open.committed = true;
                let last = *bumped.first().ok_or(sqlx::Error::RowNotFound)?;
                Ok(rows(last, texts))
            }
        }
    }

    /// How many events made from each output stream of turn `turn`'s agent are stored:
    /// (stdout, stderr). Indexes are handed out in order and stored in order by one writer, so
    /// the count is the highest stored index plus one.
    pub async fn agent_events_stored(&self, task_id: &str, turn: i64) -> StoreResult<(i64, i64)> {
        let rows = with_pool!(self, pool => {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT agent_stream, MAX(agent_index) FROM task_events
                 WHERE task_id = $1 AND agent_turn = $2 AND agent_stream IS NOT NULL
                 GROUP BY agent_stream",
            )
            .bind(task_id)
            .bind(turn)
            .fetch_all(pool)
            .await?
        });
        let mut counts = (0, 0);
        for (stream, max) in rows {
            match stream.as_str() {
                "stderr" => counts.1 = max + 1,
                _ => counts.0 = max + 1,
            }
        }
        Ok(counts)
    }

    /// Up to `limit` events of a task with seq greater than `after`, in order.
    pub async fn list_task_events_after(
        &self,
        task_id: &str,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<TaskEvent>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as::<_, TaskEvent>(
                "SELECT * FROM task_events WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(task_id)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }
}
