-- Admin console sessions (/admin). A login with the admin token opens one:
-- its token (256 random bits, `cns_<id>.<64 hex>`, like every credential)
-- goes in an HttpOnly cookie and only its argon2id hash is stored here. It
-- lasts `[console] session_minutes` from its last refresh; logging out
-- deletes it, and the retention purge deletes the expired ones. Kept in the
-- database so that a console behind a load balancer stays logged in on
-- every relay of a cluster.
CREATE TABLE console_sessions (
    id         TEXT PRIMARY KEY NOT NULL,
    token_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
