-- Real time (WebSocket agents, live app streams).

-- The WebSocket session holding a delivery's lease, so that the lease can end
-- the moment the socket closes instead of when it times out. NULL for leases
-- taken by GET /poll.
ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
CREATE INDEX deliveries_by_lease_owner ON deliveries (lease_owner) WHERE lease_owner IS NOT NULL;

-- A streamed reply's id: the final message of a reply whose text was streamed
-- as reply.delta events carries the id the deltas used.
ALTER TABLE messages ADD COLUMN reply_id TEXT;

-- An app's live stream replays both directions of its conversations by cursor.
CREATE INDEX messages_by_app ON messages (app_id, seq);
