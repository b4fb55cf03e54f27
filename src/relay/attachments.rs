//! Attachments: uploads streamed into the database in chunks, downloads
//! streamed out of it, and who may do either.
//!
//! An upload never holds more than one chunk in memory and never holds the
//! writer for more than one chunk's insert: each chunk is its own short
//! transaction (relaxed: a crash may undo it, and the upload was not
//! acknowledged yet), and the last one, which names the blob and records the
//! attachment, is durable. An upload that fails, is refused or is cut off
//! deletes what it staged; what a crash leaves is deleted at the next start
//! and by the maintenance.

use super::Relay;
use crate::auth::Principal;
use crate::error::Error;
use crate::ids::AttachmentId;
use crate::model::Attachment;
use crate::store::attachments::{self, Download, FinishError, NewAttachment, Party};
use crate::store::{now_ms, Store};
use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use std::ops::RangeInclusive;

/// Bytes per stored chunk: one chunk is the most an upload buffers and the
/// longest it holds the writer (a 256 KiB insert).
pub const CHUNK: usize = 256 * 1024;
/// A staged blob not written to for this long belongs to an upload that is
/// gone (uploads stall out long before: `[limits] request_timeout_secs`).
pub(crate) const STAGED_ABANDONED_MS: i64 = 10 * 60 * 1000;
/// Types a download shows inline (in a browser tab or an `<img>`); every
/// other type is served as a download. No SVG: it can carry script.
const INLINE: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// What the uploader says about an upload; only the name is kept as given
/// (cleaned), the type is sniffed from the bytes.
pub struct UploadMeta {
    pub name: Option<String>,
    /// The `Content-Type` the uploader sent for the bytes.
    pub declared: Option<String>,
    /// The `Content-Length` of the request, when known.
    pub length: Option<u64>,
}

/// Whom the access rules see in a principal (None: the admin, who reads
/// everything and uploads nothing).
pub fn party_of(p: &Principal) -> Option<Party> {
    match p {
        Principal::Admin => None,
        Principal::App(app) => Some(Party {
            app: Some(app.clone()),
            ..Party::default()
        }),
        Principal::User(s) => Some(Party {
            app: Some(s.app.clone()),
            user: Some(s.user.clone()),
            client: None,
        }),
        Principal::Client(c) => Some(Party::client(c)),
    }
}

/// A file name as kept: its last path part, without control or
/// bidirectional-override characters, leading dots or surrounding spaces,
/// at most 255 bytes; "attachment" when nothing is left.
pub fn clean_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let kept: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}'))
        .collect();
    let trimmed = kept.trim().trim_start_matches('.').trim();
    let mut name = String::new();
    for c in trimmed.chars() {
        if name.len() + c.len_utf8() > 255 {
            break;
        }
        name.push(c);
    }
    if name.is_empty() {
        "attachment".to_owned()
    } else {
        name
    }
}

/// The type of the bytes that start with `head`: what `infer` recognizes by
/// its magic numbers, else `text/plain` for UTF-8 text, else
/// `application/octet-stream`.
pub fn sniff(head: &[u8]) -> &'static str {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type();
    }
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        // Cut in the middle of a character at the end of the sample.
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    let controls = head
        .iter()
        .any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c));
    if text && !controls {
        "text/plain"
    } else {
        "application/octet-stream"
    }
}

/// Refuses bytes that are not what the uploader claimed they are when the
/// claim is a media type (an "image" that is not one), which a receiver
/// would otherwise trust.
fn check_claim(declared: Option<&str>, sniffed: &str) -> Result<(), Error> {
    let Some(declared) = declared else {
        return Ok(());
    };
    let declared = declared
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    for family in ["image/", "audio/", "video/"] {
        if declared.starts_with(family) && !sniffed.starts_with(family) {
            return Err(Error::invalid(
                "content_type_mismatch",
                format!("the upload says it is {declared}, but its bytes are {sniffed}"),
            ));
        }
    }
    Ok(())
}

/// Whether a type is shown inline by a download.
pub fn inline(mime: &str) -> bool {
    INLINE.contains(&mime)
}

/// Deletes a staged blob when dropped while still armed: an upload that
/// failed, was refused, or whose request went away mid-way.
struct Staged {
    store: Store,
    blob: Option<i64>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let Some(blob) = self.blob.take() else { return };
        let store = self.store.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let dropped = store
                    .write_relaxed(move |tx| attachments::drop_staged(tx, blob))
                    .await;
                if let Err(e) = dropped {
                    tracing::warn!(error = %e, blob, "could not delete an aborted upload (the maintenance will)");
                }
            });
        }
    }
}

impl Relay {
    /// `POST /attachments`: stores the bytes of `body` for `uploader` and
    /// answers the attachment once it is committed.
    pub async fn upload<S, E>(
        &self,
        uploader: Party,
        meta: UploadMeta,
        mut body: S,
    ) -> Result<Attachment, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let max = self.rules.attachment_max_bytes;
        let too_large = || Error::TooLarge {
            code: "attachment_too_large",
            message: format!("an attachment may be at most {max} bytes ([attachments] max_bytes)"),
        };
        if meta.length.is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let name = clean_name(meta.name.as_deref().unwrap_or_default());
        let idle = self.rules.upload_idle;
        let mut staged = Staged {
            store: self.store.clone(),
            blob: None,
        };
        let mut hasher = Sha256::new();
        let mut buffer: Vec<u8> = Vec::with_capacity(CHUNK);
        let mut mime: Option<&'static str> = None;
        let mut size: u64 = 0;
        let mut chunks: i64 = 0;
        loop {
            let next =
                tokio::time::timeout(idle, body.next())
                    .await
                    .map_err(|_| Error::BadRequest {
                        code: "upload_stalled",
                        message: format!(
                            "no bytes arrived for {} s ([limits] request_timeout_secs)",
                            idle.as_secs()
                        ),
                    })?;
            let bytes = match next {
                None => break,
                Some(Ok(bytes)) => bytes,
                Some(Err(e)) => {
                    return Err(Error::BadRequest {
                        code: "upload_aborted",
                        message: format!("the upload was cut off: {e}"),
                    })
                }
            };
            size += bytes.len() as u64;
            if size > max {
                return Err(too_large());
            }
            hasher.update(&bytes);
            buffer.extend_from_slice(&bytes);
            while buffer.len() >= CHUNK {
                if mime.is_none() {
                    let sniffed = sniff(&buffer);
                    check_claim(meta.declared.as_deref(), sniffed)?;
                    mime = Some(sniffed);
                }
                let rest = buffer.split_off(CHUNK);
                let chunk = std::mem::replace(&mut buffer, rest);
                self.write_chunk(&mut staged, chunks, chunk).await?;
                chunks += 1;
            }
        }
        if size == 0 {
            return Err(Error::invalid(
                "empty_attachment",
                "the upload has no bytes",
            ));
        }
        let mime = match mime {
            Some(m) => m,
            None => {
                let sniffed = sniff(&buffer);
                check_claim(meta.declared.as_deref(), sniffed)?;
                sniffed
            }
        };
        if !buffer.is_empty() {
            self.write_chunk(&mut staged, chunks, buffer).await?;
        }
        let Some(blob) = staged.blob else {
            return Err(Error::Internal(
                "an upload with bytes staged nothing".into(),
            ));
        };
        let sha256 = crate::auth::hex(&hasher.finalize());
        let quota = self.rules.attachment_quota;
        let (attachment, shared) = self
            .store
            .write(move |tx| {
                let finished = attachments::finish(
                    tx,
                    NewAttachment {
                        blob,
                        sha256: &sha256,
                        size: size as i64,
                        name: &name,
                        mime,
                        uploader: &uploader,
                        quota,
                        now: now_ms(),
                    },
                );
                finished.map_err(|e| match e {
                    FinishError::Quota { used, quota } => Error::TooLarge {
                        code: "attachment_quota_exceeded",
                        message: format!(
                            "this upload of {size} bytes would pass the quota: {used} of {quota} bytes are in use ([attachments] quota_mb); files go when the retention purges their conversations, or raise the quota"
                        ),
                    },
                    FinishError::Gone => upload_lost(),
                    FinishError::Store(e) => e.into(),
                })
            })
            .await?;
        // Committed: the staged blob is the attachment's now (or was dropped
        // in the same transaction for an identical one).
        staged.blob = None;
        let m = crate::metrics::get();
        m.attachments
            .with_label_values(&[if shared { "shared" } else { "stored" }])
            .inc();
        m.attachment_bytes.inc_by(size);
        Ok(attachment)
    }

    /// Stores chunk `idx`, starting the staged blob with the first one.
    /// Uploads take turns: one chunk at a time is queued for the writer,
    /// however many uploads run, so they never crowd out other writes.
    async fn write_chunk(&self, staged: &mut Staged, idx: i64, data: Vec<u8>) -> Result<(), Error> {
        let _turn = self
            .upload_turn
            .acquire()
            .await
            .map_err(|_| Error::from(crate::store::StoreError::Closed))?;
        let blob = staged.blob;
        let written = self
            .store
            .write_relaxed(move |tx| {
                let now = now_ms();
                let blob = match blob {
                    Some(b) => b,
                    None => attachments::stage(tx, CHUNK as i64, now)?,
                };
                if !attachments::append_chunk(tx, blob, idx, &data, now)? {
                    return Err(upload_lost());
                }
                Ok::<_, Error>(blob)
            })
            .await?;
        staged.blob = Some(written);
        Ok(())
    }

    /// `GET /attachments/:id`: the attachment if `viewer` may read it (its
    /// uploader, a principal of a conversation with a message that carries
    /// it, the admin); anything else is "not found".
    pub async fn attachment(
        &self,
        viewer: &Principal,
        id: &AttachmentId,
    ) -> Result<Download, Error> {
        let party = party_of(viewer).unwrap_or_default();
        let admin = matches!(viewer, Principal::Admin);
        attachments::readable(self.store.reader(), id, &party, admin)
            .await?
            .ok_or_else(|| Error::not_found("attachment_not_found", format!("no attachment {id}")))
    }

    /// The bytes `range` of a download, one stored chunk at a time.
    pub fn attachment_bytes(
        &self,
        d: &Download,
        range: RangeInclusive<u64>,
    ) -> impl Stream<Item = Result<Bytes, Error>> + Send + 'static {
        let store = self.store.clone();
        let blob = d.blob;
        let chunk_size = d.chunk_size.max(1) as u64;
        let (start, end) = (*range.start(), *range.end());
        futures_util::stream::try_unfold(start, move |at| {
            let store = store.clone();
            async move {
                if at > end {
                    return Ok(None);
                }
                let idx = at / chunk_size;
                let data = attachments::chunk(store.reader(), blob, idx as i64)
                    .await?
                    .ok_or_else(|| {
                        Error::Internal(format!("chunk {idx} of blob {blob} is missing"))
                    })?;
                let from = (at - idx * chunk_size) as usize;
                let to = ((end - idx * chunk_size + 1) as usize).min(data.len());
                if from >= to {
                    return Err(Error::Internal(format!(
                        "chunk {idx} of blob {blob} is short"
                    )));
                }
                let next = idx * chunk_size + to as u64;
                Ok(Some((Bytes::copy_from_slice(&data[from..to]), next)))
            }
        })
    }

    /// The attachment ids a message names, checked (see [`parse_ids`])
    /// against `[attachments] max_per_message`.
    pub fn attachment_ids(&self, raw: &[String]) -> Result<Vec<AttachmentId>, Error> {
        parse_ids(raw, self.rules.attachments_per_message)
    }

    /// At start, when no upload can be running: deletes every staged blob
    /// (what uploads cut short by a crash or a stop left).
    pub async fn drop_staged_uploads(&self) -> Result<i64, Error> {
        let mut total = 0;
        loop {
            let n = self
                .store
                .write_relaxed(|tx| attachments::purge_staged(tx, i64::MAX, 16))
                .await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }
}

/// An upload whose staged chunks were deleted under it (it sent nothing for
/// so long that the purge took it as abandoned).
fn upload_lost() -> Error {
    Error::Overloaded {
        code: "upload_lost",
        message: "the upload's stored chunks were deleted as abandoned (it stalled); upload again"
            .into(),
    }
}

/// Message attachment ids from a request body: valid ids, no repeats, at
/// most `[attachments] max_per_message`.
fn parse_ids(raw: &[String], max: usize) -> Result<Vec<AttachmentId>, Error> {
    if raw.len() > max {
        return Err(Error::invalid(
            "too_many_attachments",
            format!(
                "a message may carry at most {max} attachments ([attachments] max_per_message)"
            ),
        ));
    }
    let mut ids: Vec<AttachmentId> = Vec::with_capacity(raw.len());
    for r in raw {
        let id = AttachmentId::parse(r).ok_or_else(|| {
            Error::invalid(
                "unknown_attachment",
                format!("no attachment {r} that you may use"),
            )
        })?;
        if ids.contains(&id) {
            return Err(Error::invalid(
                "duplicate_attachment",
                format!("attachment {id} is listed twice"),
            ));
        }
        ids.push(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_paths_controls_and_leading_dots() {
        assert_eq!(clean_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_name("C:\\Users\\me\\report.pdf"), "report.pdf");
        assert_eq!(clean_name("a\u{0}b\nc\u{202e}gpj.exe"), "abcgpj.exe");
        assert_eq!(clean_name(".."), "attachment");
        assert_eq!(clean_name(".hidden"), "hidden");
        assert_eq!(clean_name(""), "attachment");
        let long = "é".repeat(200);
        let cleaned = clean_name(&long);
        assert!(cleaned.len() <= 255 && cleaned.chars().all(|c| c == 'é'));
    }

    #[test]
    fn types_come_from_the_bytes() {
        let png = [
            0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, b'I', b'H', b'D', b'R',
        ];
        assert_eq!(sniff(&png), "image/png");
        assert_eq!(sniff(b"hello, world\n"), "text/plain");
        assert_eq!(sniff("grüß".as_bytes()), "text/plain");
        // A sample cut inside a multi-byte character is still text.
        assert_eq!(sniff(&"grüß".as_bytes()[..3]), "text/plain");
        assert_eq!(sniff(&[0, 1, 2, 3, 0xff]), "application/octet-stream");
        assert!(check_claim(Some("image/png"), "text/plain").is_err());
        assert!(check_claim(Some("image/jpeg; q=1"), "image/png").is_ok());
        assert!(check_claim(Some("application/x-www-form-urlencoded"), "text/plain").is_ok());
        assert!(check_claim(None, "application/octet-stream").is_ok());
        assert!(inline("image/png") && !inline("image/svg+xml") && !inline("text/html"));
    }

    #[test]
    fn attachment_lists_are_checked() {
        let id = AttachmentId::generate();
        assert_eq!(
            parse_ids(&[id.to_string()], 1).map(|v| v.len()).ok(),
            Some(1)
        );
        assert!(parse_ids(&[id.to_string(), id.to_string()], 5).is_err());
        assert!(parse_ids(&["att_x".into()], 5).is_err());
        assert!(parse_ids(&[id.to_string()], 0).is_err());
    }
}
