-- Follow-up turns, kept-alive sandboxes and dev-server previews.

-- The turn a message belongs to; NULL for a user message waiting for its turn (the queue of
-- follow-ups, run in order).
ALTER TABLE task_messages ADD COLUMN turn BIGINT;
UPDATE task_messages SET turn = 1 WHERE task_id IN (SELECT id FROM tasks WHERE status <> 'queued');
CREATE INDEX task_messages_turn ON task_messages(task_id, turn);

-- Turns started so far.
ALTER TABLE tasks ADD COLUMN turns BIGINT NOT NULL DEFAULT 0;
UPDATE tasks SET turns = 1 WHERE status <> 'queued';

-- The commit the first turn started from (the whole task's diff is taken from it).
ALTER TABLE tasks ADD COLUMN base_sha TEXT;

-- A kept-alive sandbox (tasks.container_id set while the task is not running) is removed
-- after this time, unix ms.
ALTER TABLE tasks ADD COLUMN sandbox_expires_at BIGINT;

-- The port of the dev server started in the kept-alive sandbox, while it runs.
ALTER TABLE tasks ADD COLUMN preview_port BIGINT;
