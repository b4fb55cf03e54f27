-- When a delivery's current lease began (as SQLite's 0011): renewals move
-- its end, but never past [delivery] max_lease_secs from this moment.
-- Set by every claim: the general claim, and relay_claim (0003), replaced
-- here with the same body plus `leased_at = p_now` (0003 stays as it was
-- applied).
ALTER TABLE deliveries ADD COLUMN leased_at BIGINT;

CREATE OR REPLACE FUNCTION relay_claim(
    p_client TEXT[], p_max INTEGER[], p_owner TEXT[], p_now BIGINT, p_until BIGINT,
    p_max_attempts BIGINT
) RETURNS TABLE (n INTEGER, mseq BIGINT, msg_id TEXT, conv TEXT, agent TEXT, app TEXT,
                 sender TEXT, recipient TEXT, body TEXT, created BIGINT, attempt BIGINT,
                 files TEXT, exhausted BOOLEAN, next_due BIGINT)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    l_i BIGINT[];
    l_seq BIGINT[];
    l_attempts BIGINT[];
    l_client TEXT[];
    worn BIGINT[];
    i INTEGER;
    -- Clients that got nothing (index, id).
    e_i INTEGER[] := '{}';
    e_client TEXT[] := '{}';
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    WITH due AS (
        SELECT r.i, d.message_seq, d.attempts,
               row_number() OVER (PARTITION BY r.i ORDER BY d.visible_at, d.message_seq) AS k
        FROM unnest(p_client, p_max) WITH ORDINALITY AS r (client, max, i),
             LATERAL (SELECT q.message_seq, q.attempts, q.visible_at FROM deliveries q
                      WHERE q.client_id = r.client AND q.state = 'ready' AND q.visible_at <= p_now
                      ORDER BY q.visible_at, q.message_seq LIMIT r.max
                      FOR UPDATE SKIP LOCKED) d
    ), leased AS (
        UPDATE deliveries d
        SET attempts = d.attempts + 1, visible_at = p_until, updated_at = p_now,
            lease_owner = p_owner[due.i::INTEGER], leased_at = p_now
        FROM due WHERE d.message_seq = due.message_seq AND due.attempts < p_max_attempts
        RETURNING due.i, due.k, d.message_seq, d.attempts, d.client_id
    ), taken AS (
        SELECT array_agg(l.i ORDER BY l.i, l.k) AS i, array_agg(l.message_seq ORDER BY l.i, l.k) AS seq,
               array_agg(l.attempts ORDER BY l.i, l.k) AS attempts,
               array_agg(l.client_id ORDER BY l.i, l.k) AS client
        FROM leased l
    )
    SELECT t.i, t.seq, t.attempts, t.client,
           (SELECT array_agg(DISTINCT due.i) FROM due WHERE due.attempts >= p_max_attempts)
    INTO l_i, l_seq, l_attempts, l_client, worn
    FROM taken t;
    worn := coalesce(worn, '{}');
    RETURN QUERY
    SELECT l.i::INTEGER, m.seq, m.id, m.conversation_id, l.client, m.app_id, m.sender,
           m.recipient, m.text, m.created_at, l.attempts, m.attachments, l.i = ANY (worn),
           NULL::BIGINT
    FROM unnest(l_i, l_seq, l_attempts, l_client) WITH ORDINALITY AS l (i, seq, attempts, client, k)
    JOIN messages m ON m.seq = l.seq
    ORDER BY l.k;
    -- Clients that got nothing: when their next lease ends.
    l_i := coalesce(l_i, '{}');
    FOR i IN 1 .. coalesce(array_length(p_client, 1), 0) LOOP
        IF NOT (i = ANY (l_i)) THEN
            e_i := e_i || i;
            e_client := e_client || p_client[i];
        END IF;
    END LOOP;
    IF cardinality(e_i) > 0 THEN
        RETURN QUERY
        SELECT r.i, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::TEXT,
               NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::TEXT,
               r.i = ANY (worn),
               (SELECT min(q.visible_at) FROM deliveries q
                WHERE q.client_id = r.client AND q.state = 'ready' AND q.visible_at > p_now)
        FROM unnest(e_client, e_i) AS r (client, i);
    END IF;
END
$$;
