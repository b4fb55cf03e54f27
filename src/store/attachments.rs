//! Attachments and the blobs that hold their bytes (see
//! `migrations/0009_attachments.sql`).
//!
//! An upload is written as a staged blob, one chunk per transaction
//! ([`stage`], [`append_chunk`]); [`finish`] then names the blob by its hash
//! (or drops it for an existing blob with the same content) and records the
//! attachment, in one transaction. Readers never see a staged blob: only
//! attachments point at blobs, and only [`finish`] makes one.
//!
//! On PostgreSQL, where relays write at once, rows in use are locked
//! against the purges: [`finish`] shares the blob it reuses and
//! [`for_message`] the attachments it hands to a message, and the purges
//! skip locked rows and re-check that nothing uses a row as they delete it.
//! Uploads of one party take turns in [`finish`] (its quota), and so do
//! uploads of one content (its name, `sha256`).

use super::postgres::error as pg_error;
use super::tx::PgTx;
use super::{Reader, StoreError, StoreResult, Tx};
use crate::ids::{AppId, AttachmentId, ClientId, UserId};
use crate::model::Attachment;
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

/// Who uploads or reads an attachment, as the access rules see them: an app
/// (`app`), one user of an app (`app` and `user`), or an agent (`client`).
/// An app may use what its users uploaded; a user only their own uploads.
#[derive(Clone, Debug, Default)]
pub struct Party {
    pub app: Option<AppId>,
    pub user: Option<UserId>,
    pub client: Option<ClientId>,
}

impl Party {
    pub fn client(client: &ClientId) -> Party {
        Party {
            client: Some(client.clone()),
            ..Party::default()
        }
    }

    /// Whose quota an upload counts against: its app's (with the app's
    /// users; `true`) or its agent's, by id. None for nobody's.
    fn quota_owner(&self) -> Option<(bool, &str)> {
        match (&self.app, &self.client) {
            (Some(app), _) => Some((true, app.as_str())),
            (None, Some(client)) => Some((false, client.as_str())),
            (None, None) => None,
        }
    }

    /// App, user and client as the PostgreSQL statements take them.
    fn ids(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
        (
            self.app.as_ref().map(AppId::as_str),
            self.user.as_ref().map(UserId::as_str),
            self.client.as_ref().map(ClientId::as_str),
        )
    }
}

/// A finished upload, before it has its row.
pub struct NewAttachment<'a> {
    pub blob: i64,
    pub sha256: &'a str,
    pub size: i64,
    pub name: &'a str,
    pub mime: &'a str,
    pub uploader: &'a Party,
    /// The most bytes of live attachments the uploader may hold (None: no quota).
    pub quota: Option<i64>,
    pub now: i64,
}

impl NewAttachment<'_> {
    /// The attachment as the API shows it, once recorded as `id`.
    fn attachment(&self, id: AttachmentId) -> Attachment {
        Attachment {
            url: Attachment::url_of(&id),
            id,
            name: self.name.to_owned(),
            mime: self.mime.to_owned(),
            size: self.size,
            sha256: self.sha256.to_owned(),
        }
    }
}

/// Why [`finish`] refused an upload.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    #[error("quota exceeded: {used} bytes held, {quota} allowed")]
    Quota { used: i64, quota: i64 },
    /// The staged blob was deleted (as abandoned) before the upload finished.
    #[error("the staged upload is gone")]
    Gone,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for FinishError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Starts a staged blob; returns its id.
pub fn stage(tx: &Tx, chunk_size: i64, now: i64) -> StoreResult<i64> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let id = pg.fetch_one(pgsql::attachments::stage(chunk_size, now))?;
            return Ok(id);
        }
    };
    tx.prepare_cached(
        "INSERT INTO blobs (sha256, size, chunk_size, touched_at) VALUES (NULL, 0, ?, ?)",
    )?
    .execute((chunk_size, now))?;
    Ok(tx.last_insert_rowid())
}

/// Writes chunk `idx` of a staged blob. False when the blob is gone (the
/// purge took it as abandoned): the upload cannot go on.
pub fn append_chunk(tx: &Tx, blob: i64, idx: i64, data: &[u8], now: i64) -> StoreResult<bool> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let staged = pg.execute(pgsql::attachments::touch_staged(blob, now))?;
            if staged == 0 {
                return Ok(false);
            }
            pg.execute(pgsql::attachments::insert_chunk(blob, idx, data))?;
            return Ok(true);
        }
    };
    let staged = tx
        .prepare_cached("UPDATE blobs SET touched_at = ? WHERE id = ? AND sha256 IS NULL")?
        .execute((now, blob))?;
    if staged == 0 {
        return Ok(false);
    }
    tx.prepare_cached("INSERT INTO blob_chunks (blob_id, idx, data) VALUES (?, ?, ?)")?
        .execute((blob, idx, data))?;
    Ok(true)
}

/// Deletes a staged blob and its chunks (an upload that failed or was
/// refused). A named blob is left alone.
pub fn drop_staged(tx: &Tx, blob: i64) -> StoreResult<()> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            pg.execute(pgsql::attachments::drop_staged(blob))?;
            return Ok(());
        }
    };
    tx.prepare_cached("DELETE FROM blobs WHERE id = ? AND sha256 IS NULL")?
        .execute([blob])?;
    Ok(())
}

/// Deletes up to `limit` staged blobs last written before `before`: uploads
/// a crash or a lost connection cut short. Returns how many.
pub fn purge_staged(tx: &Tx, before: i64, limit: i64) -> StoreResult<i64> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            // An upload writing a chunk right now holds its blob: skipped.
            let n = pg.execute(pgsql::attachments::purge_staged(before, limit))?;
            return Ok(n as i64);
        }
    };
    let n = tx
        .prepare_cached(
            "DELETE FROM blobs WHERE id IN
                 (SELECT id FROM blobs WHERE sha256 IS NULL AND touched_at < ? LIMIT ?)",
        )?
        .execute((before, limit))?;
    Ok(n as i64)
}

/// Bytes of live attachments held by the uploader's app (with its users) or agent.
fn usage(tx: &Tx, party: &Party) -> StoreResult<i64> {
    let Some((by_app, owner)) = party.quota_owner() else {
        return Ok(0);
    };
    match tx {
        Tx::Sqlite(conn) => {
            let sql = if by_app {
                "SELECT COALESCE(SUM(size), 0) FROM attachments WHERE app_id = ?"
            } else {
                "SELECT COALESCE(SUM(size), 0) FROM attachments WHERE client_id = ?"
            };
            Ok(conn.prepare_cached(sql)?.query_row([owner], |r| r.get(0))?)
        }
        Tx::Postgres(pg) => {
            let used = if by_app {
                pg.fetch_one(pgsql::attachments::usage_of_app(owner))?
            } else {
                pg.fetch_one(pgsql::attachments::usage_of_client(owner))?
            };
            Ok(used)
        }
    }
}

/// Completes an upload: names the staged blob by its hash (or, when a blob
/// with that content exists, drops the staged one and shares it) and records
/// the attachment. Returns the attachment and whether its bytes were already
/// stored.
pub fn finish(tx: &Tx, a: NewAttachment<'_>) -> Result<(Attachment, bool), FinishError> {
    let conn = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => return finish_postgres(tx, pg, a),
    };
    if let Some(quota) = a.quota {
        let used = usage(tx, a.uploader)?;
        if used + a.size > quota {
            return Err(FinishError::Quota { used, quota });
        }
    }
    let existing: Option<i64> = conn
        .prepare_cached("SELECT id FROM blobs WHERE sha256 = ?")?
        .query_row([a.sha256], |r| r.get(0))
        .optional()?;
    let blob = match existing {
        Some(id) => {
            drop_staged(tx, a.blob)?;
            id
        }
        None => {
            let named = conn
                .prepare_cached(
                    "UPDATE blobs SET sha256 = ?, size = ?, touched_at = ? WHERE id = ? AND sha256 IS NULL",
                )?
                .execute((a.sha256, a.size, a.now, a.blob))?;
            if named == 0 {
                return Err(FinishError::Gone);
            }
            a.blob
        }
    };
    let id = AttachmentId::generate();
    conn.prepare_cached(
        "INSERT INTO attachments (id, blob_id, app_id, user_id, client_id, name, mime, size, sha256, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute((
        &id,
        blob,
        &a.uploader.app,
        &a.uploader.user,
        &a.uploader.client,
        a.name,
        a.mime,
        a.size,
        a.sha256,
        a.now,
    ))?;
    Ok((a.attachment(id), existing.is_some()))
}

/// [`finish`] on PostgreSQL: the uploader's turn (for its quota), then the
/// content's turn (for its name), then the same steps as on SQLite, the
/// reused blob shared against the purge.
fn finish_postgres(
    tx: &Tx,
    pg: &PgTx,
    a: NewAttachment<'_>,
) -> Result<(Attachment, bool), FinishError> {
    if let Some(quota) = a.quota {
        let owner = a.uploader.quota_owner().map_or("", |(_, id)| id);
        pg.execute(pgsql::attachments::lock_uploader(owner))?;
        let used = usage(tx, a.uploader)?;
        if used + a.size > quota {
            return Err(FinishError::Quota { used, quota });
        }
    }
    pg.execute(pgsql::attachments::lock_content(a.sha256))?;
    let existing = pg.fetch_optional(pgsql::attachments::blob_with(a.sha256))?;
    let blob = match existing {
        Some(id) => {
            drop_staged(tx, a.blob)?;
            id
        }
        None => {
            let named = pg.execute(pgsql::attachments::name_blob(
                a.blob, a.sha256, a.size, a.now,
            ))?;
            if named == 0 {
                return Err(FinishError::Gone);
            }
            a.blob
        }
    };
    let id = AttachmentId::generate();
    let (app, user, client) = a.uploader.ids();
    pg.execute(pgsql::attachments::insert(
        id.as_str(),
        blob,
        app,
        user,
        client,
        a.name,
        a.mime,
        a.size,
        a.sha256,
        a.now,
    ))?;
    Ok((a.attachment(id), existing.is_some()))
}

/// The attachments `ids` for a new message by `poster`, in order, or the
/// first id the poster may not use (unknown, or not theirs to read).
pub fn for_message(
    tx: &Tx,
    ids: &[AttachmentId],
    poster: &Party,
) -> StoreResult<Result<Vec<Attachment>, AttachmentId>> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            let mut found = Vec::with_capacity(ids.len());
            let (app, user, client) = poster.ids();
            for id in ids {
                // Shared until the message is stored: the purge skips it.
                let row = pg.fetch_optional(pgsql::attachments::for_message(
                    id.as_str(),
                    app,
                    user,
                    client,
                ))?;
                match row {
                    Some((name, mime, size, sha256)) => found.push(Attachment {
                        id: id.clone(),
                        name,
                        mime,
                        size,
                        sha256,
                        url: Attachment::url_of(id),
                    }),
                    None => return Ok(Err(id.clone())),
                }
            }
            return Ok(Ok(found));
        }
    };
    let mut stmt = tx.prepare_cached(
        "SELECT a.name, a.mime, a.size, a.sha256 FROM attachments a
         WHERE a.id = ?1 AND EXISTS (SELECT 1 FROM attachment_parties p
             WHERE p.attachment_id = a.id
               AND ((?2 IS NOT NULL AND p.app_id = ?2 AND (?3 IS NULL OR p.user_id = ?3))
                    OR (?4 IS NOT NULL AND p.client_id = ?4)))",
    )?;
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        let row = stmt
            .query_row((id, &poster.app, &poster.user, &poster.client), |r| {
                Ok(Attachment {
                    id: id.clone(),
                    name: r.get(0)?,
                    mime: r.get(1)?,
                    size: r.get(2)?,
                    sha256: r.get(3)?,
                    url: Attachment::url_of(id),
                })
            })
            .optional()?;
        match row {
            Some(a) => found.push(a),
            None => return Ok(Err(id.clone())),
        }
    }
    Ok(Ok(found))
}

/// Records that message `seq` carries `attachments` (in order).
pub fn link(tx: &Tx, seq: i64, attachments: &[Attachment], now: i64) -> StoreResult<()> {
    let tx = match tx {
        Tx::Sqlite(c) => c,
        Tx::Postgres(pg) => {
            for (position, a) in attachments.iter().enumerate() {
                pg.execute(pgsql::attachments::link(
                    a.id.as_str(),
                    seq,
                    position as i64,
                ))?;
                pg.execute(pgsql::attachments::mark_referenced(a.id.as_str(), now))?;
            }
            return Ok(());
        }
    };
    for (position, a) in attachments.iter().enumerate() {
        tx.prepare_cached(
            "INSERT INTO message_attachments (attachment_id, message_seq, position) VALUES (?, ?, ?)",
        )?
        .execute((&a.id, seq, position as i64))?;
        tx.prepare_cached(
            "UPDATE attachments SET referenced_at = ? WHERE id = ? AND referenced_at IS NULL",
        )?
        .execute((now, &a.id))?;
    }
    Ok(())
}

/// How a message stores its attachments (its `attachments` column): the
/// API fields but the url, which follows from the id.
#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    name: String,
    mime: String,
    size: i64,
    sha256: String,
}

/// The `attachments` column for a message carrying `list` (NULL for none).
pub fn to_column(list: &[Attachment]) -> Option<String> {
    if list.is_empty() {
        return None;
    }
    let stored: Vec<Stored> = list
        .iter()
        .map(|a| Stored {
            id: a.id.as_str().to_owned(),
            name: a.name.clone(),
            mime: a.mime.clone(),
            size: a.size,
            sha256: a.sha256.clone(),
        })
        .collect();
    serde_json::to_string(&stored).ok()
}

/// A message's attachments from its `attachments` column.
pub fn from_column(column: Option<&str>) -> Vec<Attachment> {
    let Some(json) = column else {
        return Vec::new();
    };
    let stored: Vec<Stored> = serde_json::from_str(json).unwrap_or_default();
    stored
        .into_iter()
        .map(|s| {
            let id = AttachmentId::from_db(s.id);
            Attachment {
                url: Attachment::url_of(&id),
                id,
                name: s.name,
                mime: s.mime,
                size: s.size,
                sha256: s.sha256,
            }
        })
        .collect()
}

/// An attachment with where its bytes are, for a download.
pub struct Download {
    pub attachment: Attachment,
    pub blob: i64,
    pub chunk_size: i64,
}

/// The attachment `id` if `reader` may download it: its uploader, or a
/// principal of a conversation with a message that carries it; `admin`: any.
pub async fn readable(
    db: &Reader,
    id: &AttachmentId,
    reader: &Party,
    admin: bool,
) -> StoreResult<Option<Download>> {
    let (app, user, client) = (&reader.app, &reader.user, &reader.client);
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            let (app, user, client) = reader.ids();
            let row = pgsql::attachments::readable(id.as_str(), app, user, client, admin)
                .fetch_optional(pool)
                .await
                .map_err(pg_error)?;
            return Ok(
                row.map(|(name, mime, size, sha256, blob, chunk_size)| Download {
                    attachment: Attachment {
                        url: Attachment::url_of(id),
                        id: id.clone(),
                        name,
                        mime,
                        size,
                        sha256,
                    },
                    blob,
                    chunk_size,
                }),
            );
        }
    };
    let row = sqlx::query!(
        r#"SELECT a.name, a.mime, a.size, a.sha256, a.blob_id, b.chunk_size
           FROM attachments a JOIN blobs b ON b.id = a.blob_id
           WHERE a.id = ?1 AND (?5 = 1 OR EXISTS (SELECT 1 FROM attachment_parties p
               WHERE p.attachment_id = a.id
                 AND ((?2 IS NOT NULL AND p.app_id = ?2 AND (?3 IS NULL OR p.user_id = ?3))
                      OR (?4 IS NOT NULL AND p.client_id = ?4))))"#,
        id,
        app,
        user,
        client,
        admin
    )
    .fetch_optional(ex)
    .await?;
    Ok(row.map(|r| Download {
        attachment: Attachment {
            url: Attachment::url_of(id),
            id: id.clone(),
            name: r.name,
            mime: r.mime,
            size: r.size,
            sha256: r.sha256,
        },
        blob: r.blob_id,
        chunk_size: r.chunk_size,
    }))
}

/// Chunk `idx` of a blob.
pub async fn chunk(db: &Reader, blob: i64, idx: i64) -> StoreResult<Option<Vec<u8>>> {
    let ex = match db {
        Reader::Sqlite(pool) => pool,
        Reader::Postgres(pool) => {
            return pgsql::attachments::chunk(blob, idx)
                .fetch_optional(pool)
                .await
                .map_err(pg_error);
        }
    };
    let data = sqlx::query_scalar!(
        "SELECT data FROM blob_chunks WHERE blob_id = ? AND idx = ?",
        blob,
        idx
    )
    .fetch_optional(ex)
    .await?;
    Ok(data)
}

/// Deletes up to `limit` attachments no message carries: uploads never
/// referenced and created before `unreferenced_before`, and uploads whose
/// messages are gone (purged). Returns how many.
pub fn purge_unreferenced(tx: &Tx, unreferenced_before: i64, limit: i64) -> StoreResult<i64> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => {
            // Attachments a message is being stored with are shared
            // (`for_message`): skipped; the outer statement re-checks that
            // no message carries what it deletes.
            let n = pg.execute(pgsql::attachments::purge(unreferenced_before, limit))?;
            return Ok(n as i64);
        }
    };
    let n = tx
        .prepare_cached(
            "DELETE FROM attachments WHERE id IN
                 (SELECT id FROM attachments
                  WHERE referenced_at IS NULL AND created_at < ?1
                  UNION ALL
                  SELECT a.id FROM attachments a
                  WHERE a.referenced_at IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM message_attachments ma WHERE ma.attachment_id = a.id)
                  LIMIT ?2)",
        )?
        .execute((unreferenced_before, limit))?;
    Ok(n as i64)
}

/// Deletes up to `limit` named blobs no attachment points at (with their
/// chunks). Returns how many and their bytes.
pub fn purge_blobs(tx: &Tx, limit: i64) -> StoreResult<(i64, i64)> {
    let tx = match tx {
        Tx::Sqlite(conn) => conn,
        Tx::Postgres(pg) => return purge_blobs_postgres(pg, limit),
    };
    let doomed: Vec<(i64, i64)> = tx
        .prepare_cached(
            "SELECT b.id, b.size FROM blobs b
             WHERE b.sha256 IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.blob_id = b.id)
             LIMIT ?",
        )?
        .query_map([limit], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut bytes = 0;
    for (id, size) in &doomed {
        tx.prepare_cached("DELETE FROM blobs WHERE id = ?")?
            .execute([id])?;
        bytes += size;
    }
    Ok((doomed.len() as i64, bytes))
}

/// [`purge_blobs`] on PostgreSQL: a blob an upload is reusing right now is
/// shared (`finish`) and skipped; each delete re-checks, in its own
/// statement, that no attachment points at the blob.
fn purge_blobs_postgres(pg: &PgTx, limit: i64) -> StoreResult<(i64, i64)> {
    let doomed = pg.fetch_all(pgsql::attachments::orphan_blobs(limit))?;
    let (mut count, mut bytes) = (0, 0);
    for id in doomed {
        let gone = pg.fetch_optional(pgsql::attachments::delete_orphan_blob(id))?;
        if let Some(size) = gone {
            count += 1;
            bytes += size;
        }
    }
    Ok((count, bytes))
}
