-- The inbound message a reply answers (as SQLite's 0013): the delivery its
-- send acked. The OpenAI-compatible endpoint waits on it, and finds the
-- conversation a front end continues by the text of its last reply.
ALTER TABLE messages ADD COLUMN in_reply_to BIGINT;
CREATE INDEX messages_in_reply_to ON messages (in_reply_to) WHERE in_reply_to IS NOT NULL;
CREATE INDEX messages_answers_by_text ON messages (app_id, recipient, substr(btrim(text, E' \t\n\r'), 1, 64))
    WHERE in_reply_to IS NOT NULL;

-- relay_send (0003, which stays as it was applied) with the same body,
-- except that the acks come before the replies are stored, so that each
-- acking reply records the message it answers (the highest acked).
CREATE OR REPLACE FUNCTION relay_send(
    p_client TEXT[], p_conv TEXT[], p_to TEXT[], p_text TEXT[], p_reply TEXT[], p_key TEXT[],
    p_id TEXT[], p_ack BOOLEAN[], p_payload TEXT[], p_event TEXT[], p_now BIGINT[],
    p_ttl_ms BIGINT
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
                                  recipient, text, created_at, reply_id, pos, in_reply_to)
            SELECT t.id, t.conv, t.app, t.agent, 'outbound', t.agent, t.recipient, t.body, t.at,
                   t.reply, t.pos, t.answers
            FROM unnest(p_id, o_conv, o_app, p_client, p_to, p_text, p_now, p_reply, o_pos,
                        o_in_reply)
                 AS t (id, conv, app, agent, recipient, body, at, reply, pos, answers)
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
