-- Attachments: files and images carried by messages, kept in this database
-- so that a backup stays one file.
--
-- The bytes live in `blobs`, content-addressed by their sha256 and shared by
-- every attachment with the same content. A blob is written in chunks, each
-- chunk its own short transaction, so a large upload never holds the writer
-- for long: while an upload runs its blob has no `sha256` yet (it is staged,
-- invisible to readers); the upload's last transaction names it, or drops it
-- for an existing blob with the same content. Staged blobs an aborted or
-- crashed upload left behind are deleted at start and by the maintenance.
CREATE TABLE blobs (
    id         INTEGER PRIMARY KEY,
    sha256     TEXT UNIQUE,
    size       INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    -- When its last chunk was written (a staged blob not touched for long
    -- belongs to an upload that is gone).
    touched_at INTEGER NOT NULL
) STRICT;

CREATE INDEX blobs_staged ON blobs (touched_at) WHERE sha256 IS NULL;

-- Chunk `idx` holds bytes [idx * chunk_size, (idx + 1) * chunk_size).
CREATE TABLE blob_chunks (
    blob_id INTEGER NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
    idx     INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (blob_id, idx)
) STRICT;

-- One upload: who sent it (an app, one user of an app, or an agent), under
-- which name and type. `mime` is sniffed from the bytes, never taken from
-- the uploader. An upload is readable by its uploader until a message
-- references it, then by everyone who may read that message's conversation.
-- `referenced_at` is set by the first message that references it; an upload
-- never referenced expires, one no longer referenced (its messages purged)
-- goes with them.
CREATE TABLE attachments (
    id            TEXT PRIMARY KEY NOT NULL,
    blob_id       INTEGER NOT NULL REFERENCES blobs (id),
    app_id        TEXT REFERENCES apps (id),
    user_id       TEXT,
    client_id     TEXT REFERENCES clients (id),
    name          TEXT NOT NULL,
    mime          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    referenced_at INTEGER,
    CHECK ((app_id IS NULL) != (client_id IS NULL))
) STRICT;

CREATE INDEX attachments_by_blob ON attachments (blob_id);
CREATE INDEX attachments_by_app ON attachments (app_id) WHERE app_id IS NOT NULL;
CREATE INDEX attachments_by_client ON attachments (client_id) WHERE client_id IS NOT NULL;
CREATE INDEX attachments_unreferenced ON attachments (created_at) WHERE referenced_at IS NULL;

-- Which messages carry which attachments (for access and for the purge).
CREATE TABLE message_attachments (
    attachment_id TEXT NOT NULL REFERENCES attachments (id),
    message_seq   INTEGER NOT NULL REFERENCES messages (seq) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    PRIMARY KEY (attachment_id, message_seq)
) STRICT, WITHOUT ROWID;

CREATE INDEX message_attachments_by_message ON message_attachments (message_seq);

-- A message's attachments as the API shows them (`[{id, name, mime, size,
-- sha256}]`), written with the message: attachments never change, and every
-- read of a message (claims included) then costs no join.
ALTER TABLE messages ADD COLUMN attachments TEXT;
