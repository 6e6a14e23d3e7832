-- drydock schema, version 1 (PostgreSQL). Keep in step with migrations/sqlite/0001_initial.sql.
-- Ids are TEXT UUIDs; timestamps are integer unix milliseconds; booleans are BOOLEAN.

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    github_id     BIGINT NOT NULL UNIQUE,
    login         TEXT NOT NULL,
    name          TEXT,
    email         TEXT,
    avatar_url    TEXT,
    created_at    BIGINT NOT NULL,
    last_login_at BIGINT NOT NULL
);

CREATE TABLE github_accounts (
    user_id           TEXT PRIMARY KEY NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    access_token_enc  TEXT NOT NULL,
    scopes            TEXT NOT NULL DEFAULT '',
    token_expires_at  BIGINT,
    refresh_token_enc TEXT,
    updated_at        BIGINT NOT NULL
);

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    user_agent TEXT
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE api_keys (
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider   TEXT NOT NULL,
    key_enc    TEXT NOT NULL,
    hint       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, provider)
);

CREATE TABLE connectors (
    id              TEXT PRIMARY KEY NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    transport       TEXT NOT NULL CHECK (transport IN ('stdio', 'http')),
    command         TEXT,
    args            TEXT NOT NULL DEFAULT '[]',
    url             TEXT,
    env_enc         TEXT,
    headers_enc     TEXT,
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    last_status     TEXT,
    last_checked_at BIGINT,
    last_error      TEXT,
    tool_count      BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (user_id, name)
);

CREATE TABLE tasks (
    id             TEXT PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title          TEXT NOT NULL,
    prompt         TEXT NOT NULL,
    repo           TEXT NOT NULL,
    base_branch    TEXT,
    branch         TEXT,
    agent          TEXT NOT NULL,
    model          TEXT,
    status         TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'stopped', 'timed_out')),
    status_reason  TEXT,
    install_deps   BOOLEAN NOT NULL DEFAULT FALSE,
    max_duration_s BIGINT NOT NULL,
    keep_alive     BOOLEAN NOT NULL DEFAULT FALSE,
    create_pr      BOOLEAN NOT NULL DEFAULT FALSE,
    container_id   TEXT,
    commit_sha     TEXT,
    pr_url         TEXT,
    pr_number      BIGINT,
    -- The last seq handed out in task_events; bumped atomically by each append.
    event_seq      BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    started_at     BIGINT,
    finished_at    BIGINT,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX tasks_user_created ON tasks(user_id, created_at DESC);
CREATE INDEX tasks_status ON tasks(status, created_at);

CREATE TABLE task_connectors (
    task_id      TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    connector_id TEXT NOT NULL,
    PRIMARY KEY (task_id, connector_id)
);

CREATE TABLE task_messages (
    id         TEXT PRIMARY KEY NOT NULL,
    task_id    TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('user', 'agent')),
    content    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX task_messages_task ON task_messages(task_id, created_at);

CREATE TABLE task_events (
    task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    seq     BIGINT NOT NULL,
    ts      BIGINT NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('info', 'command', 'stdout', 'stderr', 'agent', 'error', 'success')),
    text    TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
);
