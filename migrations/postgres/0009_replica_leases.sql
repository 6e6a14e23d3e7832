-- Several drydock replicas on one PostgreSQL (issue 22): which replicas are alive, a lease on
-- each running turn, and requests a replica makes of the one that owns a task.

-- One row per `drydock serve` process that ever ran against this database, by instance id.
-- `heartbeat_at` (unix ms) is renewed every quarter of `lease_ms`; a replica whose heartbeat is
-- older than `lease_ms` is lost, and another removes what it kept.
CREATE TABLE replicas (
    id           TEXT PRIMARY KEY NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    lease_ms     BIGINT NOT NULL
);

-- The lease of a running turn: its owner is `runner_id`; it ends at `lease_expires_at` (unix ms)
-- unless the owner's heartbeat renews it. NULL when no turn runs.
ALTER TABLE tasks ADD COLUMN lease_expires_at BIGINT;
-- What a replica asked of the task's owner: `stop` (end the running turn) or `release` (remove
-- the kept-alive sandbox). The owner acts on it and clears it.
ALTER TABLE tasks ADD COLUMN control_request TEXT;
CREATE INDEX tasks_running_lease ON tasks (status, lease_expires_at);
