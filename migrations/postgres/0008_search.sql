-- Search of history (GET /conversations?q=, as SQLite's 0015): each
-- message's terms (computed by the relay, see src/search.rs) as a tsvector,
-- under a GIN index. The relay writes the column with the message, in the
-- same statement; the messages stored before this migration are indexed by
-- the relay after its start, downward from the position recorded here.
ALTER TABLE messages ADD COLUMN search tsvector;
CREATE INDEX messages_search ON messages USING gin (search);
INSERT INTO settings (key, value)
    SELECT 'search_backfill_below', (coalesce(max(seq), 0) + 1)::text FROM messages;

-- relay_inbound (0005) and relay_send (0006), which stay as they were
-- applied, with the same bodies but for one more parameter, p_search: each
-- message's terms as a tsvector literal, stored in `search`. The old
-- signatures are dropped (a function's parameters are part of its name).
DROP FUNCTION relay_inbound(TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], BIGINT[], BIGINT, BIGINT, TEXT[]);
DROP FUNCTION relay_send(TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], BOOLEAN[], TEXT[],
                         TEXT[], BIGINT[], BIGINT);

CREATE FUNCTION relay_inbound(
    p_app TEXT[], p_user TEXT[], p_text TEXT[], p_key TEXT[], p_id TEXT[],
    p_now BIGINT[], p_ttl_ms BIGINT, p_max_pending BIGINT, p_kept TEXT[], p_search TEXT[]
) RETURNS TABLE (n INTEGER, mseq BIGINT, mpos BIGINT, conv TEXT, agent TEXT, ready BOOLEAN)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    cnt INTEGER := coalesce(array_length(p_app, 1), 0);
    keyed BOOLEAN := cardinality(array_remove(p_key, NULL)) > 0;
    i INTEGER;
    j INTEGER;
    k INTEGER;
    a INTEGER;
    -- Idempotency keys already used ("app key").
    used TEXT[] := '{}';
    -- The requests' users ("app user").
    wanted TEXT[] := '{}';
    -- The users' active conversations, as locked: key ("app user"), id,
    -- client, last activity; and those with a ready delivery.
    c_key TEXT[];
    c_id TEXT[];
    c_client TEXT[];
    c_updated BIGINT[];
    c_ready TEXT[];
    -- Their clients: id, usable (not revoked), open deliveries.
    a_id TEXT[];
    a_usable BOOLEAN[];
    a_pending BIGINT[];
    -- What each request gets.
    o_conv TEXT[] := array_fill(NULL::TEXT, ARRAY[cnt]);
    o_agent TEXT[] := array_fill(NULL::TEXT, ARRAY[cnt]);
    o_ready BOOLEAN[] := array_fill(NULL::BOOLEAN, ARRAY[cnt]);
    o_pos BIGINT[] := array_fill(NULL::BIGINT, ARRAY[cnt]);
    o_seq BIGINT[] := array_fill(NULL::BIGINT, ARRAY[cnt]);
    ins_pos BIGINT[];
    ins_seq BIGINT[];
    first BIGINT;
    ord INTEGER := 0;
    stored_keys BOOLEAN := false;
BEGIN
    IF keyed THEN
        used := lock_keys(p_app, p_key);
    END IF;
    FOR i IN 1 .. cnt LOOP
        wanted := wanted || (p_app[i] || ' ' || p_user[i]);
    END LOOP;
    -- Locked in id order (every writer of conversations locks in this
    -- order); what is read under the lock stays true until the transaction
    -- ends.
    SELECT array_agg(x.app_id || ' ' || x.user_id), array_agg(x.id), array_agg(x.client_id),
           array_agg(x.updated_at)
    INTO c_key, c_id, c_client, c_updated
    FROM (SELECT cv.id, cv.app_id, cv.user_id, cv.client_id, cv.updated_at FROM conversations cv
          WHERE cv.app_id = ANY (p_app) AND cv.user_id = ANY (p_user) AND cv.expired_at IS NULL
            AND (cv.app_id || ' ' || cv.user_id) = ANY (wanted)
          ORDER BY cv.id FOR UPDATE) x;
    SELECT coalesce(array_agg(d.conversation_id), '{}') INTO c_ready FROM deliveries d
    WHERE d.conversation_id = ANY (c_id) AND d.state = 'ready';
    SELECT array_agg(cl.id), array_agg(cl.revoked_at IS NULL),
           array_agg(cl.pending + coalesce((SELECT sum(p.n) FROM client_pending p
                                            WHERE p.client_id = cl.id), 0))
    INTO a_id, a_usable, a_pending
    FROM clients cl WHERE cl.id = ANY (c_client);
    FOR i IN 1 .. cnt LOOP
        IF p_key[i] IS NOT NULL THEN
            IF (p_app[i] || ' ' || p_key[i]) = ANY (used) THEN
                CONTINUE;
            END IF;
        END IF;
        -- The user's most recently active conversation.
        k := NULL;
        FOR j IN 1 .. coalesce(array_length(c_key, 1), 0) LOOP
            IF c_key[j] = wanted[i] AND (k IS NULL OR c_updated[j] > c_updated[k]
                                         OR (c_updated[j] = c_updated[k] AND c_id[j] > c_id[k])) THEN
                k := j;
            END IF;
        END LOOP;
        IF k IS NULL OR c_client[k] IS NULL OR c_updated[k] <= p_now[i] - p_ttl_ms
           OR NOT (c_client[k] = ANY (p_kept)) THEN
            CONTINUE;
        END IF;
        a := array_position(a_id, c_client[k]);
        IF a IS NULL OR NOT a_usable[a] OR a_pending[a] >= p_max_pending THEN
            CONTINUE;
        END IF;
        a_pending[a] := a_pending[a] + 1;
        IF p_key[i] IS NOT NULL THEN
            -- A second request with the key in this batch replays this one.
            used := used || (p_app[i] || ' ' || p_key[i]);
            stored_keys := true;
        END IF;
        IF first IS NULL THEN
            first := first_pos();
        END IF;
        o_conv[i] := c_id[k];
        o_agent[i] := c_client[k];
        o_pos[i] := first | ord;
        ord := ord + 1;
        o_ready[i] := NOT (c_id[k] = ANY (c_ready));
        IF o_ready[i] THEN
            c_ready := c_ready || c_id[k];
        END IF;
    END LOOP;
    IF ord > 0 THEN
        WITH stored AS (
            INSERT INTO messages (id, conversation_id, app_id, client_id, direction, sender,
                                  recipient, text, created_at, pos, search)
            SELECT t.id, t.conv, t.app, t.agent, 'inbound', t.usr, t.agent, t.body, t.at, t.pos,
                   t.terms::tsvector
            FROM unnest(p_id, o_conv, p_app, o_agent, p_user, p_text, p_now, o_pos, p_search)
                 AS t (id, conv, app, agent, usr, body, at, pos, terms)
            WHERE t.conv IS NOT NULL
            ORDER BY t.pos
            RETURNING messages.pos, messages.seq
        )
        SELECT array_agg(stored.pos), array_agg(stored.seq) INTO ins_pos, ins_seq FROM stored;
        FOR i IN 1 .. cnt LOOP
            IF o_pos[i] IS NOT NULL THEN
                o_seq[i] := ins_seq[array_position(ins_pos, o_pos[i])];
            END IF;
        END LOOP;
        INSERT INTO deliveries (message_seq, conversation_id, client_id, state, attempts,
                                visible_at, created_at, updated_at)
        SELECT t.seq, t.conv, t.agent, CASE WHEN t.ready THEN 'ready' ELSE 'queued' END, 0,
               t.at, t.at, t.at
        FROM unnest(o_seq, o_conv, o_agent, o_ready, p_now) AS t (seq, conv, agent, ready, at)
        WHERE t.conv IS NOT NULL;
        UPDATE conversations cv SET updated_at = t.at
        FROM (SELECT u.conv, max(u.at) AS at FROM unnest(o_conv, p_now) AS u (conv, at)
              WHERE u.conv IS NOT NULL GROUP BY u.conv) t
        WHERE cv.id = ANY (o_conv) AND cv.id = t.conv;
        IF stored_keys THEN
            INSERT INTO idempotency_keys (principal, key, message_id, created_at)
            SELECT t.app, t.key, t.id, t.at
            FROM unnest(p_app, p_key, p_id, p_now, o_conv) AS t (app, key, id, at, conv)
            WHERE t.key IS NOT NULL AND t.conv IS NOT NULL
            ON CONFLICT (principal, key)
            DO UPDATE SET message_id = excluded.message_id, created_at = excluded.created_at;
        END IF;
    END IF;
    FOR i IN 1 .. cnt LOOP
        n := i; mseq := o_seq[i]; mpos := o_pos[i]; conv := o_conv[i]; agent := o_agent[i];
        ready := o_ready[i];
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE FUNCTION relay_send(
    p_client TEXT[], p_conv TEXT[], p_to TEXT[], p_text TEXT[], p_reply TEXT[], p_key TEXT[],
    p_id TEXT[], p_ack BOOLEAN[], p_payload TEXT[], p_event TEXT[], p_now BIGINT[],
    p_ttl_ms BIGINT, p_search TEXT[]
) RETURNS TABLE (n INTEGER, mseq BIGINT, mpos BIGINT, app TEXT, acked BIGINT,
                 promoted BOOLEAN, promoted_to TEXT, hooked BOOLEAN)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    cnt INTEGER := coalesce(array_length(p_client, 1), 0);
    keyed BOOLEAN := cardinality(array_remove(p_key, NULL)) > 0;
    i INTEGER;
    k INTEGER;
    used TEXT[] := '{}';
    -- The conversations, as locked: id, app, user, client.
    c_id TEXT[];
    c_app TEXT[];
    c_user TEXT[];
    c_client TEXT[];
    -- Apps with endpoints subscribed to `message`.
    w_apps TEXT[];
    -- What each reply gets.
    o_conv TEXT[] := array_fill(NULL::TEXT, ARRAY[cnt]);
    o_app TEXT[] := array_fill(NULL::TEXT, ARRAY[cnt]);
    o_pos BIGINT[] := array_fill(NULL::BIGINT, ARRAY[cnt]);
    o_seq BIGINT[] := array_fill(NULL::BIGINT, ARRAY[cnt]);
    o_hooked BOOLEAN[] := array_fill(NULL::BOOLEAN, ARRAY[cnt]);
    -- The first acking reply of each conversation (acks and promotion are
    -- its): index per conversation.
    o_acks INTEGER[] := array_fill(NULL::INTEGER, ARRAY[cnt]);
    ack_conv TEXT[] := '{}';
    acked_conv TEXT[];
    acked_n BIGINT[];
    acked_last BIGINT[];
    o_in_reply BIGINT[] := array_fill(NULL::BIGINT, ARRAY[cnt]);
    prom_conv TEXT[];
    prom_client TEXT[];
    ins_pos BIGINT[];
    ins_seq BIGINT[];
    first BIGINT;
    ord INTEGER := 0;
    stored_keys BOOLEAN := false;
BEGIN
    IF keyed THEN
        used := lock_keys(p_client, p_key);
    END IF;
    SELECT array_agg(x.id), array_agg(x.app_id), array_agg(x.user_id), array_agg(x.client_id)
    INTO c_id, c_app, c_user, c_client
    FROM (SELECT cv.id, cv.app_id, cv.user_id, cv.client_id FROM conversations cv
          WHERE cv.id = ANY (p_conv) ORDER BY cv.id FOR UPDATE) x;
    SELECT array_agg(DISTINCT w.app_id) INTO w_apps FROM webhooks w
    WHERE w.app_id = ANY (c_app) AND position(' message ' IN ' ' || w.events || ' ') > 0;
    w_apps := coalesce(w_apps, '{}');
    FOR i IN 1 .. cnt LOOP
        IF p_key[i] IS NOT NULL THEN
            IF (p_client[i] || ' ' || p_key[i]) = ANY (used) THEN
                CONTINUE;
            END IF;
        END IF;
        k := array_position(c_id, p_conv[i]);
        IF k IS NULL OR c_client[k] IS DISTINCT FROM p_client[i] OR c_user[k] <> p_to[i] THEN
            CONTINUE;
        END IF;
        o_hooked[i] := c_app[k] = ANY (w_apps);
        IF o_hooked[i] AND p_payload[i] IS NULL THEN
            o_hooked[i] := NULL;
            CONTINUE;
        END IF;
        IF p_key[i] IS NOT NULL THEN
            used := used || (p_client[i] || ' ' || p_key[i]);
            stored_keys := true;
        END IF;
        IF first IS NULL THEN
            first := first_pos();
        END IF;
        o_conv[i] := p_conv[i];
        o_app[i] := c_app[k];
        o_pos[i] := first | ord;
        ord := ord + 1;
        IF p_ack[i] AND NOT (p_conv[i] = ANY (ack_conv)) THEN
            ack_conv := ack_conv || p_conv[i];
            o_acks[i] := 1;
        END IF;
    END LOOP;
    IF ord > 0 THEN
        -- Activity, or expiry of a conversation idle past its TTL (as of
        -- the first reply to it here; it stays as it was then).
        UPDATE conversations cv
        SET expired_at = CASE WHEN cv.updated_at <= t.first_at - p_ttl_ms
                              THEN cv.updated_at + p_ttl_ms END,
            updated_at = CASE WHEN cv.updated_at <= t.first_at - p_ttl_ms
                              THEN cv.updated_at ELSE t.last_at END
        FROM (SELECT u.conv, min(u.at) AS first_at, max(u.at) AS last_at
              FROM unnest(o_conv, p_now) AS u (conv, at) WHERE u.conv IS NOT NULL
              GROUP BY u.conv) t
        WHERE cv.id = ANY (o_conv) AND cv.id = t.conv AND cv.expired_at IS NULL;
        IF cardinality(ack_conv) > 0 THEN
            WITH acked AS (
                UPDATE deliveries d SET state = 'acked', updated_at = t.at, lease_owner = NULL
                FROM unnest(o_conv, p_client, p_now, o_acks) AS t (conv, agent, at, acks)
                WHERE d.conversation_id = ANY (ack_conv) AND d.state = 'ready'
                  AND t.acks = 1 AND d.conversation_id = t.conv
                  AND d.client_id = t.agent AND d.attempts > 0
                RETURNING d.conversation_id, d.message_seq
            )
            SELECT array_agg(a.conversation_id), array_agg(a.n), array_agg(a.last)
            INTO acked_conv, acked_n, acked_last
            FROM (SELECT conversation_id, count(*) AS n, max(message_seq) AS last
                  FROM acked GROUP BY conversation_id) a;
            FOR i IN 1 .. cnt LOOP
                IF o_acks[i] = 1 THEN
                    o_in_reply[i] := acked_last[array_position(acked_conv, o_conv[i])];
                END IF;
            END LOOP;
            WITH next AS (
                SELECT DISTINCT ON (q.conversation_id) q.message_seq, t.at
                FROM deliveries q
                JOIN unnest(o_conv, p_now, o_acks) AS t (conv, at, acks)
                  ON t.acks = 1 AND q.conversation_id = t.conv
                WHERE q.conversation_id = ANY (ack_conv) AND q.state = 'queued'
                  AND NOT EXISTS (SELECT 1 FROM deliveries r
                                  WHERE r.conversation_id = q.conversation_id AND r.state = 'ready')
                ORDER BY q.conversation_id, q.message_seq
            ), made_ready AS (
                UPDATE deliveries d SET state = 'ready', updated_at = next.at
                FROM next WHERE d.message_seq = next.message_seq
                RETURNING d.conversation_id, d.client_id
            )
            SELECT array_agg(m.conversation_id), array_agg(m.client_id) INTO prom_conv, prom_client
            FROM made_ready m;
        END IF;
        WITH stored AS (
            INSERT INTO messages (id, conversation_id, app_id, client_id, direction, sender,
                                  recipient, text, created_at, reply_id, pos, in_reply_to, search)
            SELECT t.id, t.conv, t.app, t.agent, 'outbound', t.agent, t.recipient, t.body, t.at,
                   t.reply, t.pos, t.answers, t.terms::tsvector
            FROM unnest(p_id, o_conv, o_app, p_client, p_to, p_text, p_now, p_reply, o_pos,
                        o_in_reply, p_search)
                 AS t (id, conv, app, agent, recipient, body, at, reply, pos, answers, terms)
            WHERE t.conv IS NOT NULL
            ORDER BY t.pos
            RETURNING messages.pos, messages.seq
        )
        SELECT array_agg(stored.pos), array_agg(stored.seq) INTO ins_pos, ins_seq FROM stored;
        FOR i IN 1 .. cnt LOOP
            IF o_pos[i] IS NOT NULL THEN
                o_seq[i] := ins_seq[array_position(ins_pos, o_pos[i])];
            END IF;
        END LOOP;
        IF true = ANY (o_hooked) THEN
            WITH events AS (
                INSERT INTO webhook_events (id, app_id, type, conversation_id, payload, created_at)
                SELECT t.event, t.app, 'message', t.conv, t.payload, t.at
                FROM unnest(p_event, o_app, o_conv, p_payload, p_now, o_hooked, o_pos)
                     AS t (event, app, conv, payload, at, hooked, pos)
                WHERE t.hooked
                ORDER BY t.pos
                RETURNING webhook_events.seq, webhook_events.app_id, webhook_events.conversation_id,
                          webhook_events.created_at
            )
            INSERT INTO webhook_deliveries
                (webhook_id, event_seq, conversation_id, state, attempts, next_at, updated_at)
            SELECT w.id, e.seq, e.conversation_id, 'pending', 0, e.created_at, e.created_at
            FROM events e JOIN webhooks w ON w.app_id = e.app_id
            WHERE position(' message ' IN ' ' || w.events || ' ') > 0;
        END IF;
        IF stored_keys THEN
            INSERT INTO idempotency_keys (principal, key, message_id, created_at)
            SELECT t.agent, t.key, t.id, t.at
            FROM unnest(p_client, p_key, p_id, p_now, o_conv) AS t (agent, key, id, at, conv)
            WHERE t.key IS NOT NULL AND t.conv IS NOT NULL
            ON CONFLICT (principal, key)
            DO UPDATE SET message_id = excluded.message_id, created_at = excluded.created_at;
        END IF;
    END IF;
    prom_conv := coalesce(prom_conv, '{}');
    FOR i IN 1 .. cnt LOOP
        n := i; mseq := o_seq[i]; mpos := o_pos[i]; app := o_app[i];
        acked := NULL; promoted := NULL; promoted_to := NULL; hooked := NULL;
        IF o_conv[i] IS NOT NULL THEN
            hooked := o_hooked[i];
            acked := 0;
            promoted := false;
            IF o_acks[i] = 1 THEN
                acked := coalesce(acked_n[array_position(acked_conv, o_conv[i])], 0);
                k := array_position(prom_conv, o_conv[i]);
                promoted := k IS NOT NULL;
                IF promoted THEN
                    promoted_to := prom_client[k];
                END IF;
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
