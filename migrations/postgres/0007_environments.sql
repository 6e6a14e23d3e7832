-- Environments (issue 18): what a user configured in drydock for one repository, and the
-- secrets its setup may use. Files in the repository (.drydock/environment.toml,
-- .devcontainer/devcontainer.json) take precedence over image and scripts here; variables and
-- secrets apply whatever the source.
CREATE TABLE environments (
    user_id           TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- owner/name
    repo              TEXT NOT NULL,
    -- An operator-registered image name; NULL for drydock's sandbox image.
    image             TEXT,
    setup             TEXT,
    maintenance       TEXT,
    -- JSON object of plain variables (name -> value), visible to setup and the agent.
    variables         TEXT NOT NULL DEFAULT '{}',
    -- Bumped by "rebuild": part of the cache key, so the next task runs setup afresh.
    generation        BIGINT NOT NULL DEFAULT 0,
    -- The last setup run for this repository: where the environment came from, when (unix ms),
    -- how it ended (`succeeded` | `failed`) and its log (redacted, last lines).
    last_source       TEXT,
    last_setup_at     BIGINT,
    last_setup_status TEXT,
    last_setup_log    TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (user_id, repo)
);

-- Write-only secrets of an environment, sealed (v1: AES-256-GCM). Given to setup and
-- maintenance only, unless agent_may_see. `version` (unix ms of the last change) is part of
-- the snapshot key; the value never is.
CREATE TABLE environment_secrets (
    user_id       TEXT NOT NULL,
    repo          TEXT NOT NULL,
    name          TEXT NOT NULL,
    value_enc     TEXT NOT NULL,
    agent_may_see BOOLEAN NOT NULL DEFAULT FALSE,
    version       BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (user_id, repo, name),
    FOREIGN KEY (user_id, repo) REFERENCES environments(user_id, repo) ON DELETE CASCADE
);
