-- Fewer writes per round trip on PostgreSQL.
--
-- Every message updates its conversation's activity (updated_at). 0003 kept
-- that column out of every index so the update is HOT (a new version of the
-- row on the same page, no index touched); 0005 put it back, in
-- conversations_active_user, and since then every such update wrote a new
-- entry into each of the conversation's seven indexes (`bench cluster`:
-- 2.3 updates of conversations per round trip, none HOT). A user holds few
-- active conversations; the most recent is picked among them by reading
-- them (relay_inbound loops over them, find_active sorts them).
DROP INDEX conversations_active_user;
CREATE INDEX conversations_active_user ON conversations (app_id, user_id)
    WHERE expired_at IS NULL;

-- A HOT update needs room for the new version on the row's own page; a
-- conversation is updated twice per round trip, so leave a fifth of each
-- page free (applies to pages written from now on).
ALTER TABLE conversations SET (fillfactor = 80);

-- A delivery's state change counted once per statement, from its transition
-- tables, as inserts and deletes already are (0003): a batch's acks made one
-- upsert of client_pending per row (1.0 per round trip, the most frequent
-- statement PostgreSQL ran), now one per client and statement. Without a
-- column list (a trigger with transition tables may not have one) it fires
-- for every update of deliveries; a lease moves no count, and adds nothing.
DROP TRIGGER deliveries_pending_updated ON deliveries;
DROP FUNCTION deliveries_pending_updated();

CREATE FUNCTION deliveries_pending_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO client_pending (client_id, backend, n)
    SELECT t.client_id, pg_backend_pid(), sum(t.n)
    FROM (SELECT client_id, -1 AS n FROM old_rows
          WHERE client_id IS NOT NULL AND state IN ('ready', 'queued')
          UNION ALL
          SELECT client_id, 1 FROM new_rows
          WHERE client_id IS NOT NULL AND state IN ('ready', 'queued')) t
    GROUP BY t.client_id
    HAVING sum(t.n) <> 0
    ON CONFLICT (client_id, backend) DO UPDATE SET n = client_pending.n + excluded.n;
    RETURN NULL;
END
$$;

CREATE TRIGGER deliveries_pending_updated AFTER UPDATE ON deliveries
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION deliveries_pending_updated();
