//! What a relay keeps in memory of agents' turns, for Stop
//! (`POST /conversations/{id}/stop`):
//!
//! - **Replies being written.** Every `reply.delta` that reaches this
//!   relay's streams (from its own agents, or forwarded by another relay of
//!   a cluster) is added to its conversation's growing reply, so that a stop
//!   stores what the user saw streamed, and a stopped reply's late deltas
//!   are dropped instead of shown.
//! - **Stops.** A stopped conversation refuses its agent's reply (its
//!   deltas and its acking `send`, 409 `reply_stopped`) until the agent
//!   claims new work there. Agents hear of a stop as a cancel notice: a
//!   `cancel` event on their sockets, `cancelled` in their next poll.
//!
//! Nothing here is durable: after a restart a late reply to a stopped turn
//! is stored like any reply (its delivery stays ended either way).

use crate::ids::{ClientId, ConversationId, MessageId};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Conversations with a growing reply kept before stale ones are dropped.
const GROWING: usize = 1024;
/// How long (ms) an untouched growing reply or a stop is kept.
const KEPT_MS: i64 = 15 * 60 * 1000;
/// How long (ms) a cancel notice waits for its agent's next poll.
const NOTICE_MS: i64 = 60 * 1000;

/// A stop, as the agent holding the conversation hears it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cancel {
    pub conversation_id: ConversationId,
    /// The messages whose turn ended: drop their work, send nothing.
    #[schema(value_type = Vec<String>)]
    pub message_ids: Vec<MessageId>,
    /// The streamed reply that was stopped, if one was being written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_id: Option<String>,
}

struct Growing {
    /// The `replyId` of the deltas (None: a stop before any delta).
    reply_id: Option<String>,
    text: String,
    stopped: bool,
    at: i64,
}

#[derive(Default)]
struct Notices {
    /// (number, when, notice), oldest first.
    queue: VecDeque<(u64, i64, Arc<Cancel>)>,
    next: u64,
    /// Notices below this number were handed to a poll.
    polled: u64,
}

#[derive(Default)]
struct Inner {
    growing: HashMap<ConversationId, Growing>,
    notices: HashMap<ClientId, Notices>,
}

/// See the module documentation.
pub struct Turns {
    inner: Mutex<Inner>,
    /// Largest text kept per reply (`[limits] max_text_bytes`).
    max_bytes: usize,
    /// Stops kept: while none, a claim need not look.
    stops: AtomicUsize,
    /// Conversations with a growing reply or a stop: while none, a stored
    /// reply has nothing to settle (the common case on `send`).
    kept: AtomicUsize,
}

/// What a stop took of the conversation's growing reply.
pub struct Taken {
    pub reply_id: Option<String>,
    pub text: String,
}

impl Turns {
    pub fn new(max_bytes: usize) -> Turns {
        Turns {
            inner: Mutex::new(Inner::default()),
            max_bytes,
            stops: AtomicUsize::new(0),
            kept: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes how many conversations are kept (called with the lock held).
    fn count(&self, inner: &Inner) {
        self.kept.store(inner.growing.len(), Ordering::Relaxed);
    }

    /// A `reply.delta` on its way to the streams: adds it to the growing
    /// reply. Returns false when it belongs to a stopped reply (drop it).
    pub fn delta(
        &self,
        conversation: &ConversationId,
        reply_id: &str,
        piece: &str,
        now: i64,
    ) -> bool {
        let mut inner = self.lock();
        if let Some(g) = inner.growing.get_mut(conversation) {
            if g.reply_id.as_deref() == Some(reply_id) {
                if g.stopped {
                    return false;
                }
                if g.text.len() + piece.len() <= self.max_bytes {
                    g.text.push_str(piece);
                }
                g.at = now;
                return true;
            }
            if g.stopped {
                self.stops.fetch_sub(1, Ordering::Relaxed);
            }
        } else if inner.growing.len() >= GROWING {
            let stops = &self.stops;
            inner.growing.retain(|_, g| {
                let keep = now - g.at < KEPT_MS;
                if !keep && g.stopped {
                    stops.fetch_sub(1, Ordering::Relaxed);
                }
                keep
            });
        }
        let mut text = String::new();
        if piece.len() <= self.max_bytes {
            text.push_str(piece);
        }
        inner.growing.insert(
            conversation.clone(),
            Growing {
                reply_id: Some(reply_id.to_owned()),
                text,
                stopped: false,
                at: now,
            },
        );
        self.count(&inner);
        true
    }

    /// A reply was stored in the conversation: it grows no more (a stop
    /// stays, for the stopped reply's late deltas).
    pub fn settled(&self, conversation: &ConversationId) {
        if self.kept.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.growing.get(conversation).is_some_and(|g| !g.stopped) {
            inner.growing.remove(conversation);
            self.count(&inner);
        }
    }

    /// Stops the conversation's reply: takes what was written of it (empty
    /// when nothing was streamed), and from now on refuses it.
    pub fn stop(&self, conversation: &ConversationId, now: i64) -> Taken {
        let mut inner = self.lock();
        let g = inner
            .growing
            .entry(conversation.clone())
            .or_insert_with(|| Growing {
                reply_id: None,
                text: String::new(),
                stopped: false,
                at: now,
            });
        if !g.stopped {
            self.stops.fetch_add(1, Ordering::Relaxed);
        }
        g.stopped = true;
        g.at = now;
        let taken = Taken {
            reply_id: g.reply_id.clone(),
            text: std::mem::take(&mut g.text),
        };
        self.count(&inner);
        taken
    }

    /// A stop heard from another relay (a cancel notice): refuse the reply
    /// here too.
    pub fn stopped_elsewhere(&self, cancel: &Cancel, now: i64) {
        let mut inner = self.lock();
        let g = inner
            .growing
            .entry(cancel.conversation_id.clone())
            .or_insert_with(|| Growing {
                reply_id: cancel.reply_id.clone(),
                text: String::new(),
                stopped: false,
                at: now,
            });
        if !g.stopped {
            self.stops.fetch_add(1, Ordering::Relaxed);
        }
        if cancel.reply_id.is_some() {
            g.reply_id = cancel.reply_id.clone();
        }
        g.stopped = true;
        g.text.clear();
        g.at = now;
        self.count(&inner);
    }

    /// Whether the agent's reply in the conversation (streamed under
    /// `reply_id`, or None for a `send` without one) was stopped.
    pub fn refuses(&self, conversation: &ConversationId, reply_id: Option<&str>) -> bool {
        if self.stops.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let inner = self.lock();
        inner.growing.get(conversation).is_some_and(|g| {
            g.stopped
                && (g.reply_id.is_none() || reply_id.is_none() || g.reply_id.as_deref() == reply_id)
        })
    }

    /// The agent claimed new work in these conversations: their stops are
    /// over.
    pub fn claimed<'a>(&self, conversations: impl IntoIterator<Item = &'a ConversationId>) {
        if self.stops.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut inner = self.lock();
        for c in conversations {
            if inner.growing.get(c).is_some_and(|g| g.stopped) {
                inner.growing.remove(c);
                self.stops.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.count(&inner);
    }

    /// Queues a cancel notice for `client`'s polls (its sockets are told by
    /// their sessions, see [`Turns::notices_since`]).
    pub fn notify(&self, client: &ClientId, cancel: Arc<Cancel>, now: i64) {
        let mut inner = self.lock();
        let n = inner.notices.entry(client.clone()).or_default();
        while n
            .queue
            .front()
            .is_some_and(|(_, at, _)| now - at > NOTICE_MS)
        {
            n.queue.pop_front();
        }
        n.queue.push_back((n.next, now, cancel));
        n.next += 1;
    }

    /// The number the client's next notice will have: a socket opened now
    /// is told of notices from there on.
    pub fn notice_mark(&self, client: &ClientId) -> u64 {
        self.lock().notices.get(client).map_or(0, |n| n.next)
    }

    /// The client's notices numbered `from` or later, and the number after
    /// them (a socket's next `from`).
    pub fn notices_since(&self, client: &ClientId, from: u64) -> (Vec<Arc<Cancel>>, u64) {
        let inner = self.lock();
        let Some(n) = inner.notices.get(client) else {
            return (Vec::new(), from);
        };
        let new = n
            .queue
            .iter()
            .filter(|(k, _, _)| *k >= from)
            .map(|(_, _, c)| c.clone())
            .collect();
        (new, n.next)
    }

    /// The client's notices no poll has taken yet; marks them taken.
    pub fn take_for_poll(&self, client: &ClientId) -> Vec<Arc<Cancel>> {
        let mut inner = self.lock();
        let Some(n) = inner.notices.get_mut(client) else {
            return Vec::new();
        };
        let from = n.polled;
        n.polled = n.next;
        n.queue
            .iter()
            .filter(|(k, _, _)| *k >= from)
            .map(|(_, _, c)| c.clone())
            .collect()
    }
}
