//! Search of history (`src/store/search.rs`): `messages.search` holds each
//! message's terms as a tsvector (see `migrations/postgres/0008_search.sql`).

use crate::{Row, Rows, Statement};

/// The conversations with a message matching `query` (a tsquery literal),
/// each with the position of its latest match, below `before`, newest
/// first; the filters as `conversations::list`'s.
#[allow(clippy::too_many_arguments)]
pub fn hits(
    query: &str,
    app: Option<&str>,
    user: Option<&str>,
    client: Option<&str>,
    active: Option<bool>,
    idle_cutoff: i64,
    before: i64,
    limit: i64,
) -> Rows<impl Row<(String, i64)>> {
    sqlx::query!(
        r#"SELECT m.conversation_id AS "conversation_id!", max(m.pos) AS "hit!"
           FROM messages m JOIN conversations c ON c.id = m.conversation_id
           WHERE m.search @@ $1::text::tsquery
             AND ($2::text IS NULL OR c.app_id = $2)
             AND ($3::text IS NULL OR c.user_id = $3)
             AND ($4::text IS NULL OR c.client_id = $4)
             AND ($5::boolean IS NULL OR (c.expired_at IS NULL AND c.updated_at > $6) = $5)
           GROUP BY m.conversation_id HAVING max(m.pos) < $7
           ORDER BY 2 DESC LIMIT $8"#,
        query,
        app,
        user,
        client,
        active,
        idle_cutoff,
        before,
        limit
    )
    .map(|r| (r.conversation_id, r.hit))
}

/// Up to `limit` messages below row `below`, newest first: the next batch
/// of those stored before search existed.
pub fn unindexed(below: i64, limit: i64) -> Rows<impl Row<(i64, String)>> {
    sqlx::query!(
        "SELECT seq, text FROM messages WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
        below,
        limit
    )
    .map(|r| (r.seq, r.text))
}

/// Writes the terms (tsvector literals, NULL: none) of messages `seq`.
pub fn index(seq: &[i64], terms: &[Option<String>]) -> Statement {
    sqlx::query!(
        "UPDATE messages SET search = x.terms::tsvector
         FROM unnest($1::bigint[], $2::text[]) AS x (seq, terms)
         WHERE messages.seq = x.seq",
        seq,
        terms as &[Option<String>]
    )
}
