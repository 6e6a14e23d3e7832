-- Triggers: personal API tokens, GitHub webhook deliveries, and where each task came from.

-- Personal API tokens. Only the SHA-256 of a token is stored (tokens are 32 random bytes, so a
-- plain hash is enough); `hint` is its first characters, to tell tokens apart.
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    scope        TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    hint         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);

-- One row per GitHub webhook delivery received (the status view). A first delivery is also the
-- idempotency receipt: its `receipt_key` is the X-GitHub-Delivery id, unique; a redelivery is a
-- row without one, pointing at the receipt through `duplicate_of`. Rows are pruned after
-- `expires_at`.
CREATE TABLE webhook_deliveries (
    id           TEXT PRIMARY KEY NOT NULL,
    delivery_id  TEXT,
    receipt_key  TEXT UNIQUE,
    duplicate_of TEXT,
    event        TEXT NOT NULL,
    repo         TEXT,
    sender       TEXT,
    user_id      TEXT,
    outcome      TEXT NOT NULL,
    detail       TEXT NOT NULL,
    task_id      TEXT,
    received_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_expires ON webhook_deliveries(expires_at);
CREATE INDEX webhook_deliveries_user ON webhook_deliveries(user_id, received_at);

-- The GitHub issue or pull request a task answers on (start and end comments go there).
CREATE TABLE task_github_threads (
    task_id      TEXT PRIMARY KEY NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    repo         TEXT NOT NULL,
    issue_number BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

-- Issues where drydock already told a non-user why it did nothing (at most one reply each).
CREATE TABLE webhook_replies (
    repo         TEXT NOT NULL,
    issue_number BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (repo, issue_number)
);

-- Where a task came from: web, api, cli or github; and the link to its source (an issue comment).
ALTER TABLE tasks ADD COLUMN origin TEXT NOT NULL DEFAULT 'web';
ALTER TABLE tasks ADD COLUMN source_url TEXT;
