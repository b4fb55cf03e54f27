-- User sessions and built-in accounts (web chat).
--
-- A session lets one user of one app act as that user only: post as them and
-- read their own conversations. An app's backend opens one for its user
-- (POST /sessions), or a built-in account logs in (POST /login). Like every
-- credential, the token is 256 random bits shown once; only its argon2id hash
-- is stored. Revoking the app ends its sessions (the credential check joins
-- the app); disabling an account or resetting its password revokes its
-- sessions (`revoked_at`, which a running server polls like the
-- credentials_changed_at of clients and apps).

-- Accounts for a deployment without an app backend. `name` is the login name
-- and the user id the account's messages carry; unique across the relay, so a
-- login names one account. `password_hash` is an argon2id PHC string.
CREATE TABLE accounts (
    id            TEXT PRIMARY KEY NOT NULL,
    app_id        TEXT NOT NULL REFERENCES apps (id),
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    disabled_at   INTEGER
) STRICT;

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY NOT NULL,
    app_id     TEXT NOT NULL REFERENCES apps (id),
    user_id    TEXT NOT NULL,
    -- Set for a login of a built-in account; NULL for an app-issued session.
    account_id TEXT REFERENCES accounts (id),
    token_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE INDEX sessions_by_account ON sessions (account_id) WHERE account_id IS NOT NULL;
CREATE INDEX sessions_by_app ON sessions (app_id);
CREATE INDEX sessions_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
