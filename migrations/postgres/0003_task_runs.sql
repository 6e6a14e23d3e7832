-- Task runner state: which server instance runs a task, the daily-quota ledger, and diffs.

-- The instance that claimed a running task, so a restarting server recovers only its own.
ALTER TABLE tasks ADD COLUMN runner_id TEXT;

-- One row per started turn (a task or a follow-up); deleting a task keeps its rows, so
-- deleting never gives quota back.
CREATE TABLE task_starts (
    id         TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    task_id    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX task_starts_user_created ON task_starts(user_id, created_at);

-- The redacted diff of a task's work, kept after its checkout is gone.
CREATE TABLE task_diffs (
    task_id    TEXT PRIMARY KEY NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    files      TEXT NOT NULL,
    patch      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
