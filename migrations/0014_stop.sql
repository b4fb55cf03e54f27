-- Stop (`POST /conversations/{id}/stop`): the user ends the agent's work on
-- a conversation. A reply being written then is stored as far as it was
-- streamed, marked `stopped`; the deliveries it ended are acked (never
-- redelivered), with `stopped_at` saying why.
ALTER TABLE messages ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN stopped_at INTEGER;
