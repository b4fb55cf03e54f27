-- A delivery named its conversation with a foreign key, so deleting a
-- conversation checked deliveries through a full index on conversation_id
-- (0004), which every message wrote an entry into at its conversation's
-- place: about 8 % of the relay's CPU per round trip at 4 x 64. The key
-- adds nothing: a delivery references its message, which references the
-- conversation, so a conversation cannot go while a delivery of it stays.
-- The queries that read a conversation's open deliveries use the partial
-- indexes by state. SQLite drops a foreign key only by building the table
-- again: the same columns in the same order, the same rows, indexes (but
-- deliveries_by_conversation) and triggers. No other table, index or
-- trigger refers to deliveries; dropping it runs no trigger.
CREATE TABLE deliveries_rebuilt (
    message_seq     INTEGER PRIMARY KEY REFERENCES messages (seq),
    conversation_id TEXT NOT NULL,
    client_id       TEXT REFERENCES clients (id),
    state           TEXT NOT NULL CHECK (state IN ('ready', 'queued', 'acked', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    visible_at      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    lease_owner     TEXT,
    leased_at       INTEGER,
    stopped_at      INTEGER
) STRICT;
INSERT INTO deliveries_rebuilt
    (message_seq, conversation_id, client_id, state, attempts, visible_at, created_at,
     updated_at, lease_owner, leased_at, stopped_at)
SELECT message_seq, conversation_id, client_id, state, attempts, visible_at, created_at,
       updated_at, lease_owner, leased_at, stopped_at
FROM deliveries ORDER BY message_seq;
DROP TABLE deliveries;
ALTER TABLE deliveries_rebuilt RENAME TO deliveries;

CREATE INDEX deliveries_claim ON deliveries (client_id, visible_at, message_seq) WHERE state = 'ready';
CREATE INDEX deliveries_ready_by_conversation ON deliveries (conversation_id) WHERE state = 'ready';
CREATE INDEX deliveries_queued_by_conversation ON deliveries (conversation_id, message_seq) WHERE state = 'queued';
CREATE INDEX deliveries_dead ON deliveries (message_seq) WHERE state = 'dead';
CREATE INDEX deliveries_unassigned ON deliveries (message_seq) WHERE client_id IS NULL;
CREATE INDEX deliveries_by_lease_owner ON deliveries (lease_owner) WHERE lease_owner IS NOT NULL;

-- The open-delivery counts per client (as 0001 made them).
CREATE TRIGGER deliveries_pending_insert AFTER INSERT ON deliveries
WHEN NEW.client_id IS NOT NULL AND NEW.state IN ('ready', 'queued')
BEGIN
    UPDATE clients SET pending = pending + 1 WHERE id = NEW.client_id;
END;
CREATE TRIGGER deliveries_pending_update AFTER UPDATE OF state, client_id ON deliveries
WHEN (OLD.state IN ('ready', 'queued')) != (NEW.state IN ('ready', 'queued'))
     OR OLD.client_id IS NOT NEW.client_id
BEGIN
    UPDATE clients SET pending = pending - 1
        WHERE id = OLD.client_id AND OLD.state IN ('ready', 'queued');
    UPDATE clients SET pending = pending + 1
        WHERE id = NEW.client_id AND NEW.state IN ('ready', 'queued');
END;
CREATE TRIGGER deliveries_pending_delete AFTER DELETE ON deliveries
WHEN OLD.client_id IS NOT NULL AND OLD.state IN ('ready', 'queued')
BEGIN
    UPDATE clients SET pending = pending - 1 WHERE id = OLD.client_id;
END;
