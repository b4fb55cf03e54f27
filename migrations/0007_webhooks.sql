-- Webhooks: agent replies and lifecycle events pushed to app backends.
--
-- An endpoint belongs to an app. Its signing secret must be usable (HMAC
-- needs the secret itself, a hash will not do), so it is stored encrypted
-- (XChaCha20-Poly1305, nonce || ciphertext) under a key kept outside the
-- database ([webhooks] key_file). `old_secret` signs too until
-- `old_secret_until` (the grace period of a rotation). `failures` counts
-- consecutive failed attempts; `failing_since` is when they began; an
-- endpoint disabled by the relay says why in `disabled_reason`.
CREATE TABLE webhooks (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    app_id           TEXT NOT NULL REFERENCES apps (id),
    url              TEXT NOT NULL,
    events           TEXT NOT NULL,
    enabled          INTEGER NOT NULL,
    secret           BLOB NOT NULL,
    old_secret       BLOB,
    old_secret_until INTEGER,
    failures         INTEGER NOT NULL DEFAULT 0,
    failing_since    INTEGER,
    disabled_reason  TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;

CREATE INDEX webhooks_by_app ON webhooks (app_id);

-- One row per event of an app that at least one endpoint subscribes to,
-- written in the same transaction as what it reports (the reply, the expiry,
-- the dead letter). `id` is the `webhook-id` header: a redelivery keeps it.
-- `seq` is commit order.
CREATE TABLE webhook_events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    app_id          TEXT NOT NULL,
    type            TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      INTEGER NOT NULL
) STRICT;

CREATE INDEX webhook_events_by_age ON webhook_events (created_at);

-- The per-endpoint queue: one row per (endpoint, event), in the same
-- transaction as the event. A row is 'pending' until a 2xx ('delivered') or
-- until it fails past the retry horizon ('failed'). Within a conversation an
-- endpoint gets one event at a time, in `event_seq` order.
CREATE TABLE webhook_deliveries (
    webhook_id      TEXT NOT NULL,
    event_seq       INTEGER NOT NULL REFERENCES webhook_events (seq),
    conversation_id TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_at         INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (webhook_id, event_seq)
) STRICT, WITHOUT ROWID;

CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id, event_seq) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_seq);

-- Recent attempts per endpoint, for the admin API (the newest 100 are kept).
-- `status` is the HTTP status (NULL when there was no response); `response`
-- is at most the first 256 bytes of the receiver's answer.
CREATE TABLE webhook_attempts (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id TEXT NOT NULL,
    event_seq  INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    status     INTEGER,
    latency_ms INTEGER NOT NULL,
    error      TEXT,
    response   TEXT
) STRICT;

CREATE INDEX webhook_attempts_by_webhook ON webhook_attempts (webhook_id, seq);
