-- Network policy and model gateway (issue 17): what a task's sandbox may reach, the requests
-- its egress proxy refused, and the model use metered by the gateway.

-- The task's network policy as JSON (egress::policy::NetworkPolicy); NULL = no policy (off).
ALTER TABLE tasks ADD COLUMN network_policy TEXT;
-- Requests the egress proxy refused, all turns.
ALTER TABLE tasks ADD COLUMN blocked_requests BIGINT NOT NULL DEFAULT 0;
-- The agent's CLI cannot use the model gateway, so its key was given to the sandbox.
ALTER TABLE tasks ADD COLUMN key_in_sandbox BOOLEAN NOT NULL DEFAULT FALSE;
-- Model use through the gateway, all turns: tokens, and cost in millionths of a US dollar.
ALTER TABLE tasks ADD COLUMN input_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN output_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN cache_read_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN cost_micro_usd BIGINT NOT NULL DEFAULT 0;

-- One row per request the egress proxy refused (the newest are listed on the task).
CREATE TABLE task_blocked (
    id         TEXT PRIMARY KEY NOT NULL,
    task_id    TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    turn       BIGINT NOT NULL,
    method     TEXT NOT NULL,
    url        TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX task_blocked_task ON task_blocked (task_id, created_at);

-- One row per model response metered by the gateway; user_id for the daily budget (a deleted
-- task's use no longer counts).
CREATE TABLE task_usage (
    id                 TEXT PRIMARY KEY NOT NULL,
    task_id            TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    user_id            TEXT NOT NULL,
    turn               BIGINT NOT NULL,
    provider           TEXT NOT NULL,
    model              TEXT NOT NULL,
    input_tokens       BIGINT NOT NULL,
    output_tokens      BIGINT NOT NULL,
    cache_read_tokens  BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cost_micro_usd     BIGINT NOT NULL,
    created_at         BIGINT NOT NULL
);
CREATE INDEX task_usage_user_day ON task_usage (user_id, created_at);
CREATE INDEX task_usage_task ON task_usage (task_id, turn);
