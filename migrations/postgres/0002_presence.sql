-- Which relay holds a connection of which agent: liveness across relays
-- (PostgreSQL only; on SQLite the one relay's hub knows its connections).
--
-- A relay refreshes its rows while an agent's connection is up (throttled,
-- a few times per stale window), deletes a row when the agent's last
-- connection on it closes, and deletes its rows when it shuts down. A row
-- that is not refreshed within the stale window no longer counts: its relay
-- died. An agent is connected when any relay has a fresh row for it, so
-- least-pending assignment and stickiness see agents on every relay.
CREATE TABLE client_presence (
    client_id TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    relay_id  TEXT NOT NULL,
    seen_at   BIGINT NOT NULL,
    PRIMARY KEY (client_id, relay_id)
);
CREATE INDEX client_presence_seen ON client_presence (seen_at);
