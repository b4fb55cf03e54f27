-- Deleting a conversation (the retention purge) makes SQLite check that no
-- delivery still refers to it; without a full index on the referring column
-- that check scanned every delivery, once per deleted conversation.
CREATE INDEX deliveries_by_conversation ON deliveries (conversation_id);
