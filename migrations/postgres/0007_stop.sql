-- Stop (as SQLite's 0014): a reply stored as far as it was streamed when the
-- user stopped it, and the deliveries a stop ended (acked, never redelivered).
ALTER TABLE messages ADD COLUMN stopped BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE deliveries ADD COLUMN stopped_at BIGINT;
