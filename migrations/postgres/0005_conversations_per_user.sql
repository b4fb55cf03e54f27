-- A user may hold several active conversations (a "new conversation" beside
-- the others, as the web chat and the OpenAI-compatible door open them): the
-- one-active-conversation index becomes a plain one, ordered for "the user's
-- most recently active" (as SQLite's 0012).
DROP INDEX conversations_active_user;
CREATE INDEX conversations_active_user ON conversations (app_id, user_id, updated_at)
    WHERE expired_at IS NULL;

-- relay_inbound (0003, which stays as it was applied) with the same body,
-- except that a user's message goes to the user's most recently active
-- conversation (highest updated_at, then id), as the general path's
-- find_active picks it. Messages naming a conversation take the general path.
CREATE OR REPLACE FUNCTION relay_inbound(
    p_app TEXT[], p_user TEXT[], p_text TEXT[], p_key TEXT[], p_id TEXT[],
    p_now BIGINT[], p_ttl_ms BIGINT, p_max_pending BIGINT, p_kept TEXT[]
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
                                  recipient, text, created_at, pos)
            SELECT t.id, t.conv, t.app, t.agent, 'inbound', t.usr, t.agent, t.body, t.at, t.pos
            FROM unnest(p_id, o_conv, p_app, o_agent, p_user, p_text, p_now, o_pos)
                 AS t (id, conv, app, agent, usr, body, at, pos)
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
