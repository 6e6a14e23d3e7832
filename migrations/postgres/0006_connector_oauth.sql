-- Connectors that sign in with OAuth (the MCP authorization spec).

-- `headers` (static headers) or `oauth` (tokens from the authorization-code flow).
ALTER TABLE connectors ADD COLUMN auth TEXT NOT NULL DEFAULT 'headers';
-- Sealed JSON of the grant: issuer, endpoints, client id and secret, access and refresh tokens,
-- expiry and scopes (see connectors::oauth::Grant). NULL until the user connects.
ALTER TABLE connectors ADD COLUMN oauth_enc TEXT;
-- Why the grant can no longer be used (refresh refused or revoked), redacted; NULL when usable.
ALTER TABLE connectors ADD COLUMN oauth_error TEXT;

-- Authorization requests in flight: one row per "Connect", bound to the session that started
-- it, used at most once, expiring after 10 minutes.
CREATE TABLE connector_oauth_requests (
    state        TEXT PRIMARY KEY NOT NULL,
    connector_id TEXT NOT NULL REFERENCES connectors(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id   TEXT NOT NULL,
    -- Sealed JSON: PKCE verifier, client registration, endpoints, resource.
    pending_enc  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);

-- Circuit breaker: consecutive times the remote server could not be reached, and until when
-- (unix ms) drydock leaves it alone after too many.
ALTER TABLE connectors ADD COLUMN failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE connectors ADD COLUMN paused_until BIGINT;
