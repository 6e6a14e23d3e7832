//! Queries on task logs: append with gap-free sequence numbers, and read after a position.

use super::{Store, StoreResult, TaskEvent, now_ms, text, with_pool};

/// Rows per INSERT statement; 5 parameters each stays far below SQLite's parameter limit.
const INSERT_CHUNK: usize = 200;

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
    /// On PostgreSQL the commit also notifies [`super::EVENTS_CHANNEL`] with `"<task id> <last
    /// seq>"`, so viewers on other replicas read the new rows at once.
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
                // five). The bump's row lock still serialises appenders of one task. Viewers on
                // every replica learn (task, last seq) when this commits, and read the rows
                // themselves: the payload stays small whatever the lines hold.
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
                         FROM bumped, unnest($4::text[], $5::text[], $7::int8[], $8::text[], \
                             $9::int8[]) WITH ORDINALITY AS line(kind, text, turn, stream, index, n) \
                     ) \
                     SELECT bumped.event_seq FROM bumped, \
                         LATERAL (SELECT pg_notify($6, $1 || ' ' || bumped.event_seq)) AS notified",
                )
                .bind(task_id)
                .bind(count)
                .bind(ts)
                .bind(&kinds)
                .bind(&texts)
                .bind(super::EVENTS_CHANNEL)
                .bind(&turns)
                .bind(&streams)
                .bind(&indexes)
                .fetch_one(pool)
                .await?;
                Ok(rows(last, texts))
            }
            super::Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let last: i64 = sqlx::query_scalar(
                    "UPDATE tasks SET event_seq = event_seq + $2 WHERE id = $1 RETURNING event_seq",
                )
                .bind(task_id)
                .bind(count)
                .fetch_one(&mut *tx)
                .await?;
                let rows = rows(last, texts);
                let sources: Vec<Option<EventSource>> = events.iter().map(|e| e.source).collect();
                for (chunk, sources) in rows.chunks(INSERT_CHUNK).zip(sources.chunks(INSERT_CHUNK))
                {
                    let mut insert = sqlx::QueryBuilder::new(
                        "INSERT INTO task_events (task_id, seq, ts, kind, text, agent_turn, \
                         agent_stream, agent_index) ",
                    );
                    insert.push_values(chunk.iter().zip(sources), |mut row, (event, source)| {
                        row.push_bind(&event.task_id)
                            .push_bind(event.seq)
                            .push_bind(event.ts)
                            .push_bind(&event.kind)
                            .push_bind(&event.text)
                            .push_bind(source.map(|s| s.turn))
                            .push_bind(source.map(|s| s.stream()))
                            .push_bind(source.map(|s| s.index));
                    });
                    insert.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(rows)
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
