-- The write path for several relays without a global lock (see
-- docs/postgres.md, "The write path"): the message cursor taken from the
-- writing transaction's id instead of a stamp after commit, open-delivery
-- counters no two transactions share, and the hot operations (inbound,
-- claim, reply) as one statement each for a batch of requests.
--
-- Relays running an older version must be stopped before one of this
-- version starts: this migration numbers the messages their stamps left.

-- 1. The cursor. ------------------------------------------------------------
--
-- A message's position (`pos`, the outbox and stream cursor) is given when
-- it is stored: the id of the transaction that stores it, shifted left by 20
-- bits, plus its order among that transaction's messages. Readers read only
-- positions below the oldest transaction still running when their statement
-- took its snapshot (`readable_pos()`): every transaction with a lower id
-- has ended and is visible to that statement, and every transaction still
-- to commit has a higher id, so nothing is ever found behind a position a
-- reader has passed. Positions are unique and follow causality (a write that
-- begins after another committed gets a higher transaction id), and every
-- reader sees the same order. No writer waits for another, and nothing runs
-- after commit. A write transaction of any kind that stays open holds the
-- readable position back until it ends (see docs/postgres.md).
--
-- Positions numbered by the stamps of earlier versions stay as they were
-- (and `cursor_base` keeps every new position above them), so cursors apps
-- hold keep working.

UPDATE messages m SET pos = s.pos
FROM (SELECT seq, nextval('messages_pos') AS pos
      FROM (SELECT seq FROM messages WHERE pos IS NULL ORDER BY seq) o) s
WHERE m.seq = s.seq;

DROP INDEX messages_unstamped;
DROP SEQUENCE messages_pos;
ALTER TABLE messages DROP CONSTRAINT messages_pos_key;

-- Added to transaction ids so that new positions stay above every stored
-- one: 0, unless the database was restored into a cluster whose
-- transaction ids are lower than those that wrote its messages
-- (`ensure_cursor_base()`, run by every relay at start, raises it then).
CREATE TABLE cursor_base (
    one  BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    base BIGINT NOT NULL
);
INSERT INTO cursor_base (base) VALUES (0);

-- The position of the next message this transaction stores. The order
-- among its messages is counted in a transaction-local setting.
CREATE FUNCTION message_pos() RETURNS BIGINT LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n INTEGER := coalesce(nullif(current_setting('clawrelay.messages', true), ''), '0')::integer;
BEGIN
    IF n >= 1048576 THEN
        RAISE EXCEPTION 'more than 1048576 messages in one transaction';
    END IF;
    PERFORM set_config('clawrelay.messages', (n + 1)::text, true);
    RETURN first_pos() | n;
END
$$;

-- The position of this transaction's first message (add its order for
-- the others): its transaction id, above the stored positions.
CREATE FUNCTION first_pos() RETURNS BIGINT LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN (pg_current_xact_id()::text::bigint + (SELECT base FROM cursor_base)) << 20;
END
$$;

ALTER TABLE messages ALTER COLUMN pos SET DEFAULT message_pos();
ALTER TABLE messages ALTER COLUMN pos SET NOT NULL;

-- Positions below this are readable by the calling statement (see above).
-- STABLE: evaluated with the caller's snapshot.
-- (PL/pgSQL, so that its statement is planned once per session; STABLE: it
-- runs with its caller's snapshot, whose oldest running transaction
-- pg_current_snapshot() reports.)
CREATE FUNCTION readable_pos() RETURNS BIGINT LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (pg_snapshot_xmin(pg_current_snapshot())::text::bigint
            + (SELECT base FROM cursor_base)) << 20;
END
$$;

-- The highest position stored (0 for none): one look per app at its index.
CREATE FUNCTION highest_pos() RETURNS BIGINT LANGUAGE sql STABLE AS $$
    SELECT coalesce(max(top), 0) FROM apps a,
           LATERAL (SELECT max(m.pos) AS top FROM messages m WHERE m.app_id = a.id) t
$$;

-- Raises cursor_base when this cluster's transaction ids run below the
-- stored positions (a restore into a new cluster). Returns the base.
CREATE FUNCTION ensure_cursor_base() RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    b BIGINT;
    top BIGINT;
    xid BIGINT;
BEGIN
    SELECT base INTO b FROM cursor_base FOR UPDATE;
    top := highest_pos();
    xid := pg_current_xact_id()::text::bigint;
    IF ((xid + b) << 20) <= top THEN
        b := (top >> 20) + 1 - xid;
        UPDATE cursor_base SET base = b;
    END IF;
    RETURN b;
END
$$;
SELECT ensure_cursor_base();

-- 2. Open deliveries per client. --------------------------------------------
--
-- `clients.pending` was one row every enqueue and ack of a client updated:
-- a lock all writers of that client queued on, and a source of deadlocks
-- between writers touching two clients in different orders. Changes now go
-- to a row per client and database session (`client_pending`), which no
-- two transactions share; `client_pending(id)` adds them up, and the
-- leader folds them into `clients.pending` now and then
-- (`fold_client_pending()`).
CREATE TABLE client_pending (
    client_id TEXT NOT NULL,
    backend   INTEGER NOT NULL,
    n         BIGINT NOT NULL,
    PRIMARY KEY (client_id, backend)
) WITH (fillfactor = 50);

DROP TRIGGER deliveries_pending ON deliveries;
DROP FUNCTION deliveries_pending();

-- Inserts and deletes are counted once per statement (from its transition
-- tables), not per row: a statement that queues or purges many deliveries
-- adds one count per client.
CREATE FUNCTION deliveries_pending_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO client_pending (client_id, backend, n)
    SELECT client_id, pg_backend_pid(), count(*) FROM new_rows
    WHERE client_id IS NOT NULL AND state IN ('ready', 'queued')
    GROUP BY client_id
    ON CONFLICT (client_id, backend) DO UPDATE SET n = client_pending.n + excluded.n;
    RETURN NULL;
END
$$;

CREATE FUNCTION deliveries_pending_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO client_pending (client_id, backend, n)
    SELECT client_id, pg_backend_pid(), -count(*) FROM old_rows
    WHERE client_id IS NOT NULL AND state IN ('ready', 'queued')
    GROUP BY client_id
    ON CONFLICT (client_id, backend) DO UPDATE SET n = client_pending.n + excluded.n;
    RETURN NULL;
END
$$;

-- An update changes a client's count only when it changes a delivery's
-- state or client (a lease does neither): a row trigger, fired only then.
CREATE FUNCTION deliveries_pending_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.client_id IS NOT NULL AND OLD.state IN ('ready', 'queued') THEN
        INSERT INTO client_pending (client_id, backend, n) VALUES (OLD.client_id, pg_backend_pid(), -1)
        ON CONFLICT (client_id, backend) DO UPDATE SET n = client_pending.n - 1;
    END IF;
    IF NEW.client_id IS NOT NULL AND NEW.state IN ('ready', 'queued') THEN
        INSERT INTO client_pending (client_id, backend, n) VALUES (NEW.client_id, pg_backend_pid(), 1)
        ON CONFLICT (client_id, backend) DO UPDATE SET n = client_pending.n + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER deliveries_pending_inserted AFTER INSERT ON deliveries
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION deliveries_pending_inserted();
CREATE TRIGGER deliveries_pending_deleted AFTER DELETE ON deliveries
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION deliveries_pending_deleted();
CREATE TRIGGER deliveries_pending_updated AFTER UPDATE OF state, client_id ON deliveries
FOR EACH ROW
WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.client_id IS DISTINCT FROM NEW.client_id)
EXECUTE FUNCTION deliveries_pending_updated();

-- A client's open deliveries.
CREATE FUNCTION client_pending(client TEXT) RETURNS BIGINT LANGUAGE sql STABLE AS $$
    SELECT c.pending + coalesce((SELECT sum(p.n) FROM client_pending p WHERE p.client_id = c.id), 0)
    FROM clients c WHERE c.id = client
$$;

-- Moves the per-session counts into clients.pending (the rows a running
-- transaction holds wait for the next fold). Returns the clients changed.
CREATE FUNCTION fold_client_pending() RETURNS BIGINT LANGUAGE sql AS $$
    WITH moved AS (
        DELETE FROM client_pending p
        WHERE p.ctid IN (SELECT ctid FROM client_pending FOR UPDATE SKIP LOCKED)
        RETURNING p.client_id, p.n
    ), sums AS (
        SELECT client_id, sum(n) AS n FROM moved GROUP BY client_id HAVING sum(n) <> 0
    ), changed AS (
        UPDATE clients c SET pending = c.pending + s.n FROM sums s WHERE c.id = s.client_id
        RETURNING 1
    )
    SELECT count(*) FROM changed
$$;

-- Rows updated in place (a lease, an ack, a touch) leave room on their page.
ALTER TABLE deliveries SET (fillfactor = 80);
ALTER TABLE conversations SET (fillfactor = 80);

-- The foreign keys of the queue's rows (a message's conversation, a
-- delivery's message, conversation and client) checked, for every row
-- stored, what its writer had just locked or stored in the same
-- transaction, and each check took a lock on the parent row that joined
-- the writer's own into a multixact: a quarter of the database's CPU per
-- round trip (measured: 0.63 -> 0.48 ms). The references hold by
-- construction: a message is stored into the conversation its writer
-- locks, a delivery with the message just stored, conversations go only
-- after their messages and deliveries (the retention purge deletes
-- children first), clients are never deleted (they are revoked).
ALTER TABLE messages DROP CONSTRAINT messages_conversation_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_message_seq_fkey,
                       DROP CONSTRAINT deliveries_conversation_id_fkey,
                       DROP CONSTRAINT deliveries_client_id_fkey;

-- A conversation's `updated_at` changes with each of its messages. Indexed,
-- each of those updates wrote a new entry in every index of the table and
-- left the old ones for vacuum, so a lookup of an active conversation
-- walked all its versions; not indexed, the update stays on its page (a
-- HOT update) and touches no index. The expiry finds idle conversations by
-- the active ones' index instead (a scan of the active conversations every
-- maintenance tick).
DROP INDEX conversations_idle;

-- The relays sharing the database, as each last said it was alive (every
-- second or so): a relay alone does not notify (nobody would hear it).
CREATE TABLE relays (
    id      TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL
);

-- 3. The hot operations, a batch of requests per statement. -----------------
--
-- Each runs its statements with generic plans (planned once per session,
-- not at every call) and never as sequential scans: every lookup here has
-- its index, and a table that grew since its statistics were taken (a new
-- database under load, before autovacuum's first analyze) would otherwise
-- be scanned whole at every call. Without JIT compilation: the cost a
-- disabled sequential scan is given (on a table of one row, say) would
-- otherwise compile that statement at every call.
--
-- Each takes arrays (element i of every array is request i) and answers a
-- row per request (`n` is i; requests it leaves to the general path answer
-- with NULLs, see each). They follow the general path's rules and locks
-- (src/store/*.rs): idempotency keys first, then conversations, always in
-- one order (keys by hash, conversations by id), so that batches and
-- single writes never wait for each other in a cycle. A batch is one
-- transaction: the relay answers its requests after it commits.

-- Takes the turn of each idempotency key (`p_principal[i]`, `p_key[i]`; the
-- general path's lock) in one order; answers those already used, as
-- "principal key".
CREATE FUNCTION lock_keys(p_principal TEXT[], p_key TEXT[]) RETURNS TEXT[] LANGUAGE plpgsql AS $$
DECLARE
    h BIGINT;
    used TEXT[];
BEGIN
    FOR h IN SELECT DISTINCT hashtextextended(t.p || ' ' || t.k, 1)
             FROM unnest(p_principal, p_key) AS t (p, k) WHERE t.k IS NOT NULL ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(h);
    END LOOP;
    SELECT coalesce(array_agg(ik.principal || ' ' || ik.key), '{}') INTO used
    FROM idempotency_keys ik, unnest(p_principal, p_key) AS t (p, k)
    WHERE t.k IS NOT NULL AND ik.principal = t.p AND ik.key = t.k;
    RETURN used;
END
$$;

-- Inbound messages of users whose active conversation is with a client that
-- is active, not revoked, in `kept` (the relay's not-gone clients) and
-- below `max_pending`. Anything else (a first message, an expiry, a move,
-- an idempotency key already used) answers NULLs: the general path takes
-- it. `ready`: the delivery is claimable now.
--
-- Decided request by request on what is read (and locked) once for the
-- batch, then written with one statement per table for the whole batch.
CREATE FUNCTION relay_inbound(
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
        k := array_position(c_key, wanted[i]);
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

-- Claims for several clients (or WebSocket sessions: `p_owner`): up to
-- `p_max` due ready rows each, oldest first, skipping rows another
-- transaction holds, leased until `p_until` with one more attempt. Answers a
-- row per claimed message in claim order, or one row with a NULL message
-- and `next_due` (when the client's next lease ends) when nothing was
-- claimed. `exhausted`: a due row is out of attempts (left as it is: the
-- general path's claim retires it). Committed without waiting for the
-- flush, as every claim (an undone claim is a redelivery).
CREATE FUNCTION relay_claim(
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
            lease_owner = p_owner[due.i::INTEGER]
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

-- Replies of agents to conversations they hold, to the conversation's user,
-- without attachments; each acks what its agent claimed of the
-- conversation (unless `p_ack` is false) and promotes the next message.
-- Anything else (another agent's or an unknown conversation, another
-- recipient, an idempotency key already used) answers NULLs: the general
-- path takes it (and says what is wrong). `p_payload` is the webhook body
-- of the reply, recorded (as `p_event`) for the app's endpoints subscribed
-- to `message` (NULL when the relay could not make it: then a reply to an
-- app with such endpoints is left to the general path too). Answers the
-- position, the app, how many deliveries were acked, the client of a
-- promoted delivery (`promoted` says whether one was), and whether webhook
-- events were queued.
CREATE FUNCTION relay_send(
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
        WITH stored AS (
            INSERT INTO messages (id, conversation_id, app_id, client_id, direction, sender,
                                  recipient, text, created_at, reply_id, pos)
            SELECT t.id, t.conv, t.app, t.agent, 'outbound', t.agent, t.recipient, t.body, t.at,
                   t.reply, t.pos
            FROM unnest(p_id, o_conv, o_app, p_client, p_to, p_text, p_now, p_reply, o_pos)
                 AS t (id, conv, app, agent, recipient, body, at, reply, pos)
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
        IF cardinality(ack_conv) > 0 THEN
            WITH acked AS (
                UPDATE deliveries d SET state = 'acked', updated_at = t.at, lease_owner = NULL
                FROM unnest(o_conv, p_client, p_now, o_acks) AS t (conv, agent, at, acks)
                WHERE d.conversation_id = ANY (ack_conv) AND d.state = 'ready'
                  AND t.acks = 1 AND d.conversation_id = t.conv
                  AND d.client_id = t.agent AND d.attempts > 0
                RETURNING d.conversation_id
            )
            SELECT array_agg(a.conversation_id), array_agg(a.n) INTO acked_conv, acked_n
            FROM (SELECT conversation_id, count(*) AS n FROM acked GROUP BY conversation_id) a;
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
