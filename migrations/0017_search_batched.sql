-- Messages are indexed for search after the transaction that stores them, in
-- batches (src/store/search.rs): every message above the seq recorded here
-- waits to be indexed. The messages stored so far were indexed as they were
-- stored.
INSERT INTO settings (key, value)
    SELECT 'search_indexed_through', CAST(coalesce(max(seq), 0) AS TEXT) FROM messages;
