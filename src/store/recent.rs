//! The messages the writer committed last, kept in memory in cursor order
//! (SQLite only): the app streams and outbox polls that follow the newest
//! messages read what was just committed from here, not from the database.
//! Under load each stored message was read back once per stream or poll
//! that carries it, each read a hand-off to a reader connection's thread.
//!
//! The writer gathers the messages a transaction stores on its own thread
//! ([`stored`]), drops those of an operation rolled back, and after the
//! commit, before any caller hears of it (so before any announcement wakes
//! a reader), appends them to [`Recent`]. What [`Recent`] promises: it holds
//! every message with a cursor above its floor. A reader whose cursor is
//! below the floor reads the database, as before.
//!
//! It stays true because one writer assigns cursors in commit order and
//! `AUTOINCREMENT` hands them out one after the other: a commit whose first
//! message does not follow the last one held (another process wrote
//! messages in between) starts the window over above the messages it did
//! not see. A transaction that deletes messages empties it: the retention
//! purge says so through [`deleted`], and one that deletes messages it
//! stored itself is found just before it commits. Messages are never
//! changed once stored. The window holds at most [`MAX_MESSAGES`] messages
//! and [`MAX_BYTES`] of text; the oldest leave first, raising the floor.

use super::messages::Page;
use crate::ids::{AppId, ConversationId};
use crate::model::{Direction, Message, SharedMessage};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// The most messages held.
pub const MAX_MESSAGES: usize = 512;
/// The most text held, in bytes.
pub const MAX_BYTES: usize = 1 << 20;

thread_local! {
    /// The messages the writer's current transaction stored, in order.
    static PENDING: RefCell<Vec<(i64, Message)>> = const { RefCell::new(Vec::new()) };
    /// Whether the current transaction deleted messages.
    static DELETED: Cell<bool> = const { Cell::new(false) };
}

/// Message `seq` was stored in the writer's current transaction.
pub(super) fn stored(seq: i64, message: &Message) {
    PENDING.with(|p| p.borrow_mut().push((seq, message.clone())));
}

/// The writer's current transaction deletes messages.
pub(super) fn deleted() {
    DELETED.with(|d| d.set(true));
}

/// How many messages wait (where an operation's savepoint begins).
pub(super) fn mark() -> usize {
    PENDING.with(|p| p.borrow().len())
}

/// The operation since `mark` was rolled back: its messages are dropped.
/// (A deletion it made is not forgotten: emptying the window once too
/// often costs reads, never a message.)
pub(super) fn rollback(mark: usize) {
    PENDING.with(|p| p.borrow_mut().truncate(mark));
}

/// The transaction is over without a commit: nothing of it is kept.
pub(super) fn discard() {
    rollback(0);
    DELETED.with(|d| d.set(false));
}

/// Just before the commit: whether every message the transaction stored
/// is still there. One it deleted again (with statements that did not say
/// so through [`deleted`]) counts as a deletion.
pub(super) fn verify(conn: &rusqlite::Connection) -> super::StoreResult<()> {
    let range = PENDING.with(|p| {
        let p = p.borrow();
        Some((p.first()?.0, p.last()?.0, p.len() as i64))
    });
    let Some((first, last, count)) = range else {
        return Ok(());
    };
    let present: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM messages WHERE seq >= ?1 AND seq <= ?2")?
        .query_row((first, last), |r| r.get(0))?;
    if present != count {
        deleted();
    }
    Ok(())
}

/// The transaction committed: what it stored joins the window.
pub(super) fn committed(recent: &Recent) {
    let stored = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let deleted = DELETED.with(|d| d.replace(false));
    recent.append(stored, deleted);
}

/// The window of the last committed messages.
pub struct Recent {
    inner: Mutex<Window>,
}

struct Window {
    /// Every message above this cursor is in `messages`; `None` until the
    /// first commit after start.
    floor: Option<i64>,
    /// The messages above the floor, oldest first, shared with the pages
    /// read from the window (and so their JSON, see [`SharedMessage`]).
    messages: VecDeque<(i64, Arc<SharedMessage>)>,
    /// Their text, in bytes.
    bytes: usize,
}

impl Window {
    /// The last cursor held (the floor when none is).
    fn top(&self) -> Option<i64> {
        self.messages.back().map(|(seq, _)| *seq).or(self.floor)
    }
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            inner: Mutex::new(Window {
                floor: None,
                messages: VecDeque::new(),
                bytes: 0,
            }),
        }
    }
}

impl Recent {
    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a commit's messages (in cursor order). A commit that
    /// deleted messages empties the window instead: it starts over above
    /// everything known.
    fn append(&self, stored: Vec<(i64, Message)>, deleted: bool) {
        let mut w = self.lock();
        let last = stored.last().map(|(seq, _)| *seq);
        if deleted {
            w.floor = w.top().max(last);
            w.messages.clear();
            w.bytes = 0;
            return;
        }
        let Some(first) = stored.first().map(|(seq, _)| *seq) else {
            return;
        };
        if w.top() != Some(first - 1) {
            // Messages this writer did not store lie between (or this is
            // the first commit): the window starts over above them.
            w.messages.clear();
            w.bytes = 0;
            w.floor = Some(first - 1);
        }
        for (seq, message) in stored {
            w.bytes += message.text.len();
            w.messages.push_back((seq, SharedMessage::new(message)));
        }
        while w.messages.len() > MAX_MESSAGES || w.bytes > MAX_BYTES {
            let Some((seq, gone)) = w.messages.pop_front() else {
                break;
            };
            w.bytes -= gone.text.len();
            w.floor = Some(seq);
        }
    }

    /// Up to `limit` of the app's messages after cursor `after` (of one
    /// conversation, or replies only, when asked), oldest first, as the
    /// database read would page them; None when the window does not reach
    /// back to `after` (read the database).
    pub fn after(
        &self,
        app: &AppId,
        conversation: Option<&ConversationId>,
        outbound_only: bool,
        after: i64,
        limit: i64,
    ) -> Option<Page> {
        let w = self.lock();
        if w.floor.is_none_or(|floor| after < floor) {
            return None;
        }
        let start = w.messages.partition_point(|(seq, _)| *seq <= after);
        let messages = w
            .messages
            .range(start..)
            .filter(|(_, m)| {
                m.app_id == *app
                    && conversation.is_none_or(|c| m.conversation_id == *c)
                    && (!outbound_only || m.direction == Direction::Outbound)
            })
            .take(limit.max(0) as usize)
            .cloned()
            .collect();
        // One writer commits in cursor order: all that is committed is
        // readable.
        Some(Page {
            messages,
            horizon: i64::MAX,
        })
    }
}
