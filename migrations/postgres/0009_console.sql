-- Admin console sessions (/admin), as SQLite's 0016: a login with the admin
-- token opens one; its token goes in an HttpOnly cookie and only its
-- argon2id hash is stored. Expired ones go with the retention purge.
CREATE TABLE console_sessions (
    id         TEXT PRIMARY KEY NOT NULL,
    token_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
