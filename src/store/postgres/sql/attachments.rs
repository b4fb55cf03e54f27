//! Attachments and their blobs (`src/store/attachments.rs`).

use crate::{Row, Rows, Statement};

/// Starts a staged (unnamed) blob; returns its id.
pub fn stage(chunk_size: i64, now: i64) -> Rows<impl Row<i64>> {
    sqlx::query!(
        "INSERT INTO blobs (sha256, size, chunk_size, touched_at)
         VALUES (NULL, 0, $1, $2) RETURNING id",
        chunk_size,
        now
    )
    .map(|r| r.id)
}

/// Marks a staged blob as written to now; no row changes when it is gone.
pub fn touch_staged(blob: i64, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE blobs SET touched_at = $1 WHERE id = $2 AND sha256 IS NULL",
        now,
        blob
    )
}

pub fn insert_chunk(blob: i64, idx: i64, data: &[u8]) -> Statement {
    sqlx::query!(
        "INSERT INTO blob_chunks (blob_id, idx, data) VALUES ($1, $2, $3)",
        blob,
        idx,
        data
    )
}

pub fn drop_staged(blob: i64) -> Statement {
    sqlx::query!("DELETE FROM blobs WHERE id = $1 AND sha256 IS NULL", blob)
}

/// Deletes up to `limit` staged blobs untouched since `before`; a blob an
/// upload is writing right now is locked, and skipped.
pub fn purge_staged(before: i64, limit: i64) -> Statement {
    sqlx::query!(
        "DELETE FROM blobs WHERE id IN
             (SELECT id FROM blobs WHERE sha256 IS NULL AND touched_at < $1
              LIMIT $2 FOR UPDATE SKIP LOCKED)",
        before,
        limit
    )
}

/// Bytes of the live attachments of an app (with its users).
pub fn usage_of_app(app: &str) -> Rows<impl Row<i64>> {
    sqlx::query!(
        r#"SELECT COALESCE(SUM(size), 0)::BIGINT AS "used!" FROM attachments WHERE app_id = $1"#,
        app
    )
    .map(|r| r.used)
}

/// Bytes of the live attachments of an agent.
pub fn usage_of_client(client: &str) -> Rows<impl Row<i64>> {
    sqlx::query!(
        r#"SELECT COALESCE(SUM(size), 0)::BIGINT AS "used!" FROM attachments WHERE client_id = $1"#,
        client
    )
    .map(|r| r.used)
}

/// Uploads by one quota owner take turns until their transactions end.
pub fn lock_uploader(owner: &str) -> Statement {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 3))",
        owner
    )
}

/// Uploads of one content take turns until their transactions end.
pub fn lock_content(sha256: &str) -> Statement {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 4))",
        sha256
    )
}

/// The blob holding this content, shared until the transaction ends (the
/// purge skips it).
pub fn blob_with(sha256: &str) -> Rows<impl Row<i64>> {
    sqlx::query!("SELECT id FROM blobs WHERE sha256 = $1 FOR SHARE", sha256).map(|r| r.id)
}

/// Names a staged blob by its content; no row changes when it is gone.
pub fn name_blob(blob: i64, sha256: &str, size: i64, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE blobs SET sha256 = $1, size = $2, touched_at = $3
         WHERE id = $4 AND sha256 IS NULL",
        sha256,
        size,
        now,
        blob
    )
}

#[allow(clippy::too_many_arguments)]
pub fn insert(
    id: &str,
    blob: i64,
    app: Option<&str>,
    user: Option<&str>,
    client: Option<&str>,
    name: &str,
    mime: &str,
    size: i64,
    sha256: &str,
    now: i64,
) -> Statement {
    sqlx::query!(
        "INSERT INTO attachments
            (id, blob_id, app_id, user_id, client_id, name, mime, size, sha256, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        id,
        blob,
        app,
        user,
        client,
        name,
        mime,
        size,
        sha256,
        now
    )
}

/// Name, mime, size and digest of attachment `id` when the poster (an app
/// and maybe one of its users, or an agent) is one of its parties; shared
/// until the transaction ends, so the purge skips it.
pub fn for_message(
    id: &str,
    app: Option<&str>,
    user: Option<&str>,
    client: Option<&str>,
) -> Rows<impl Row<(String, String, i64, String)>> {
    sqlx::query!(
        "SELECT a.name, a.mime, a.size, a.sha256 FROM attachments a
         WHERE a.id = $1 AND EXISTS (SELECT 1 FROM attachment_parties p
             WHERE p.attachment_id = a.id
               AND (($2::text IS NOT NULL AND p.app_id = $2
                     AND ($3::text IS NULL OR p.user_id = $3))
                    OR ($4::text IS NOT NULL AND p.client_id = $4)))
         FOR SHARE OF a",
        id,
        app,
        user,
        client
    )
    .map(|r| (r.name, r.mime, r.size, r.sha256))
}

pub fn link(attachment: &str, seq: i64, position: i64) -> Statement {
    sqlx::query!(
        "INSERT INTO message_attachments (attachment_id, message_seq, position)
         VALUES ($1, $2, $3)",
        attachment,
        seq,
        position
    )
}

pub fn mark_referenced(attachment: &str, now: i64) -> Statement {
    sqlx::query!(
        "UPDATE attachments SET referenced_at = $1 WHERE id = $2 AND referenced_at IS NULL",
        now,
        attachment
    )
}

/// Name, mime, size, digest, blob and chunk size of attachment `id` when
/// the reader is one of its parties, or `admin`.
#[allow(clippy::type_complexity)]
pub fn readable(
    id: &str,
    app: Option<&str>,
    user: Option<&str>,
    client: Option<&str>,
    admin: bool,
) -> Rows<impl Row<(String, String, i64, String, i64, i64)>> {
    sqlx::query!(
        "SELECT a.name, a.mime, a.size, a.sha256, a.blob_id, b.chunk_size
         FROM attachments a JOIN blobs b ON b.id = a.blob_id
         WHERE a.id = $1 AND ($5 OR EXISTS (SELECT 1 FROM attachment_parties p
             WHERE p.attachment_id = a.id
               AND (($2::text IS NOT NULL AND p.app_id = $2
                     AND ($3::text IS NULL OR p.user_id = $3))
                    OR ($4::text IS NOT NULL AND p.client_id = $4))))",
        id,
        app,
        user,
        client,
        admin
    )
    .map(|r| (r.name, r.mime, r.size, r.sha256, r.blob_id, r.chunk_size))
}

pub fn chunk(blob: i64, idx: i64) -> Rows<impl Row<Vec<u8>>> {
    sqlx::query!(
        "SELECT data FROM blob_chunks WHERE blob_id = $1 AND idx = $2",
        blob,
        idx
    )
    .map(|r| r.data)
}

/// Deletes up to `limit` attachments never sent since `unreferenced_before`
/// or no longer carried by any message. Attachments a message is being
/// stored with are shared (`for_message`): skipped; the outer statement
/// re-checks that no message carries what it deletes.
pub fn purge(unreferenced_before: i64, limit: i64) -> Statement {
    sqlx::query!(
        "DELETE FROM attachments d
         WHERE d.id IN
             (SELECT id FROM attachments
              WHERE (referenced_at IS NULL AND created_at < $1)
                 OR (referenced_at IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM message_attachments ma
                                     WHERE ma.attachment_id = attachments.id))
              LIMIT $2 FOR UPDATE SKIP LOCKED)
           AND NOT EXISTS (SELECT 1 FROM message_attachments ma
                           WHERE ma.attachment_id = d.id)",
        unreferenced_before,
        limit
    )
}

/// Up to `limit` named blobs no attachment points at, locked (a blob an
/// upload is reusing is shared: skipped).
pub fn orphan_blobs(limit: i64) -> Rows<impl Row<i64>> {
    sqlx::query!(
        "SELECT b.id FROM blobs b
         WHERE b.sha256 IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.blob_id = b.id)
         LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit
    )
    .map(|r| r.id)
}

/// Deletes blob `id` if still no attachment points at it; returns its size.
pub fn delete_orphan_blob(id: i64) -> Rows<impl Row<i64>> {
    sqlx::query!(
        "DELETE FROM blobs b WHERE b.id = $1
           AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.blob_id = b.id)
         RETURNING b.size",
        id
    )
    .map(|r| r.size)
}
