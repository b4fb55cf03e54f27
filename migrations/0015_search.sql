-- Search of history (GET /conversations?q=): each message's terms (computed
-- by the relay, see src/search.rs: words in lowercase, Chinese, Japanese and
-- Korean text as overlapping two-character pieces) in an FTS5 index whose
-- rowid is the message's seq. The index keeps no copy of the text
-- (contentless), and a message's row goes with it (the trigger: the
-- retention purge deletes messages). The relay writes a message's terms in
-- the transaction that stores it; the messages stored before this migration
-- are indexed by the relay after its start, downward from the seq recorded
-- here.
CREATE VIRTUAL TABLE message_search USING fts5(
    terms, content = '', contentless_delete = 1, tokenize = 'unicode61 remove_diacritics 0'
);
CREATE TRIGGER message_search_gone AFTER DELETE ON messages
BEGIN
    DELETE FROM message_search WHERE rowid = OLD.seq;
END;
INSERT INTO settings (key, value)
    SELECT 'search_backfill_below', CAST(coalesce(max(seq), 0) + 1 AS TEXT) FROM messages;
