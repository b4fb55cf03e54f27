//! An app's stream, independent of the transport: first every stored message
//! (both directions) after a cursor, then, live, each newly stored message and
//! each live-only event. WebSocket app sessions and `GET /events` read it.
//!
//! Stored messages are always read back from the store in sequence order (a
//! wake-up only says "look again"), so a stream never skips or repeats a
//! message, whatever order commits are announced in; a consumer that
//! reconnects with its last cursor continues exactly. A live-only event keeps
//! its place among them: it carries the highest message announced when it was
//! published, and the feed shows it after those messages and before later
//! ones, even when one read of the store returns both. They are sent with
//! back-pressure. Live-only events go through a bounded buffer: a consumer
//! that falls behind by more than `[ws] outgoing_buffer` of them is a slow
//! consumer and its feed ends. So does the feed of an app whose token is
//! revoked or rotated, and of a user session that ends.
//!
//! A user session's feed carries that user's conversations only: stored
//! messages are read through them, live events are filtered by user.

use crate::auth::Principal;
use crate::hub::{CredentialWatch, LiveEvent};
use crate::ids::ConversationId;
use crate::model::{Direction, Message, SharedMessage};
use crate::relay::Relay;
use crate::shutdown::Shutdown;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};

/// Stored messages read from the store at once.
const PAGE: i64 = 100;

pub enum FeedItem {
    /// A stored message and its cursor.
    Stored {
        cursor: i64,
        message: Arc<SharedMessage>,
    },
    /// A live-only event.
    Live(Arc<LiveEvent>),
}

/// The payload of a stored message's `message` event. On a user session's
/// stream (the web chat's) an agent's message also comes rendered from its
/// Markdown, as `html` beside `text` (see [`crate::webchat::markdown`]).
/// Serialized straight into the frame (no JSON tree built first); as an
/// app reads it, the message's JSON is the one every stream and outbox
/// read that carries it shares (see [`SharedMessage`]).
pub fn stored_payload<'a>(
    viewer: &Principal,
    cursor: i64,
    message: &'a SharedMessage,
) -> Stored<'a> {
    let message = match viewed(viewer, message) {
        Viewed { html: None, .. } => StoredMessage::Shared(message),
        viewed => StoredMessage::Viewed(viewed),
    };
    Stored {
        cursor: cursor.to_string(),
        message,
    }
}

/// See [`stored_payload`].
#[derive(serde::Serialize)]
pub struct Stored<'a> {
    cursor: String,
    message: StoredMessage<'a>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum StoredMessage<'a> {
    Shared(&'a SharedMessage),
    Viewed(Viewed<'a>),
}

/// A stored message as `viewer` reads it: on a user session's reads an
/// agent's message comes with `html` beside `text`.
pub fn viewed<'a>(viewer: &Principal, message: &'a Message) -> Viewed<'a> {
    let html = (matches!(viewer, Principal::User(_)) && message.direction == Direction::Outbound)
        .then(|| crate::webchat::markdown::render(&message.text));
    Viewed { message, html }
}

/// See [`viewed`].
#[derive(serde::Serialize)]
pub struct Viewed<'a> {
    #[serde(flatten)]
    message: &'a Message,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<String>,
}

impl Viewed<'_> {
    /// As a JSON value, for a response that holds several.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

pub struct Feed {
    pub items: mpsc::Receiver<FeedItem>,
    slow: Arc<AtomicBool>,
    revoked: Arc<AtomicBool>,
}

impl Feed {
    /// After `items` ended: whether because the app's token was revoked.
    pub fn was_revoked(&self) -> bool {
        self.revoked.load(Ordering::Relaxed)
    }

    /// After `items` ended: whether because the consumer fell behind.
    pub fn was_slow(&self) -> bool {
        self.slow.load(Ordering::Relaxed)
    }
}

/// Starts the feed of an app or a user session (optionally one
/// conversation) after `after`.
pub fn spawn(
    relay: Arc<Relay>,
    viewer: Principal,
    conversation: Option<ConversationId>,
    after: i64,
    buffer: usize,
    watch: CredentialWatch,
    shutdown: Shutdown,
) -> Feed {
    let (tx, items) = mpsc::channel(buffer.max(1));
    let slow = Arc::new(AtomicBool::new(false));
    let revoked = Arc::new(AtomicBool::new(false));
    let task_revoked = revoked.clone();
    let Some(app) = viewer.app().cloned() else {
        // Only the app side has a stream: nothing to feed.
        return Feed {
            items,
            slow,
            revoked,
        };
    };
    // Subscribed before the first read: no live event between the two is lost.
    let live = relay.hub.subscribe_app(&app);
    let task_slow = slow.clone();
    tokio::spawn(async move {
        // Counted as an open app stream while it runs.
        let _stream = crate::metrics::StreamGuard::new();
        run(
            relay,
            viewer,
            conversation,
            after,
            tx,
            live,
            Ends {
                slow: task_slow,
                revoked: task_revoked,
                watch,
            },
            shutdown,
        )
        .await
    });
    Feed {
        items,
        slow,
        revoked,
    }
}

/// Why a feed may end early, and the watch that tells one of them.
struct Ends {
    slow: Arc<AtomicBool>,
    revoked: Arc<AtomicBool>,
    watch: CredentialWatch,
}

/// Resolves at `at` (Unix ms); never for None.
async fn until(at: Option<i64>) {
    match at {
        Some(at) => {
            let left = (at - crate::store::now_ms()).max(0) as u64;
            tokio::time::sleep(std::time::Duration::from_millis(left)).await
        }
        None => std::future::pending().await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    relay: Arc<Relay>,
    principal: Principal,
    conversation: Option<ConversationId>,
    mut cursor: i64,
    tx: mpsc::Sender<FeedItem>,
    mut live: broadcast::Receiver<Arc<LiveEvent>>,
    mut ends: Ends,
    shutdown: Shutdown,
) {
    let slow = ends.slow.clone();
    let (Some(app), user) = (principal.app().cloned(), principal.user().cloned()) else {
        return;
    };
    let stop = shutdown.wait();
    tokio::pin!(stop);
    // A user session's feed ends when the session does: at its expiry, unless
    // it was refreshed by then (then at the new one).
    let mut expiry = match &principal {
        Principal::User(s) => match relay.session_expiry(&s.session).await {
            Ok(at) => Some(at),
            Err(_) => {
                ends.revoked.store(true, Ordering::Relaxed);
                return;
            }
        },
        _ => None,
    };
    let wanted = |e: &LiveEvent| {
        e.event != LiveEvent::REPLY_STORED
            && conversation
                .as_ref()
                .is_none_or(|c| *c == e.conversation_id)
            && user.as_ref().is_none_or(|u| u.as_str() == e.user_id)
    };
    // Live events taken from the broadcast that must wait for stored
    // messages announced before them (see `LiveEvent::after`).
    let mut held: VecDeque<Arc<LiveEvent>> = VecDeque::new();
    // Every stored message up to this sequence number has been read: the
    // last complete read started after it was announced.
    let mut covered = 0i64;
    loop {
        let wake = relay.hub.app_wake(&app);
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        // Whether a message announced to this app was not readable yet by
        // the last read (see `Page::horizon`): then the feed reads again
        // once it is.
        let mut behind: Option<i64>;
        loop {
            let announced = relay.hub.announced();
            let target = relay.hub.app_announced(&app);
            let page = match relay
                .stream_page(&app, user.as_ref(), conversation.as_ref(), cursor, PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "reading an app stream failed");
                    return;
                }
            };
            let horizon = page.horizon;
            let page = page.messages;
            let full = page.len() as i64 == PAGE;
            for (seq, message) in page {
                // The live events published before this message was
                // announced go first.
                if !take_live(&mut live, &mut held, wanted, &slow) {
                    return;
                }
                while held.front().is_some_and(|e| e.after < seq) {
                    if let Some(e) = held.pop_front() {
                        if tx.send(FeedItem::Live(e)).await.is_err() {
                            return;
                        }
                    }
                }
                if tx
                    .send(FeedItem::Stored {
                        cursor: seq,
                        message,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                cursor = seq;
            }
            if full {
                continue;
            }
            // What this read saw: everything announced before it began, up
            // to the position its snapshot could read.
            covered = covered.max(announced.min(horizon.saturating_sub(1)));
            if !take_live(&mut live, &mut held, wanted, &slow) {
                return;
            }
            while held.front().is_some_and(|e| e.after <= covered) {
                if let Some(e) = held.pop_front() {
                    if tx.send(FeedItem::Live(e)).await.is_err() {
                        return;
                    }
                }
            }
            // An event published after messages this read may have missed
            // waits for one more read (once they are readable, when this
            // read could not see them yet).
            let need = held.back().map_or(target, |e| e.after.max(target));
            behind = (need >= horizon).then_some(need);
            if !held.is_empty() && behind.is_none() {
                continue;
            }
            break;
        }

        // Biased, the wake-up first: a stored message is announced before a
        // live event that followed it (a `send`, then a delta of the next
        // reply) is published, so when both are ready the message goes first.
        let readable = async {
            match behind {
                Some(target) => relay.store.readable_beyond(target).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(readable);
        // A live event shown at once does not make the feed read the store
        // again: it reads when woken, so it never shows a stored message
        // before hearing of it. (On PostgreSQL a message another relay
        // stored can be readable before that relay's live events sent ahead
        // of it have arrived here; they arrive before its notice does.)
        loop {
            tokio::select! {
                biased;
                _ = &mut notified => break,
                _ = &mut readable => break,
                event = live.recv() => match event {
                    Ok(event) => {
                        if !wanted(&event) {
                            continue;
                        }
                        if event.after > covered {
                            // Stored messages announced before it come
                            // first: read up to them.
                            held.push_back(event);
                            break;
                        }
                        match tx.try_send(FeedItem::Live(event)) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                slow.store(true, Ordering::Relaxed);
                                return;
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        slow.store(true, Ordering::Relaxed);
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tx.closed() => return,
                _ = crate::ws::credential_gone(&mut ends.watch, &relay, &principal) => {
                    ends.revoked.store(true, Ordering::Relaxed);
                    return;
                }
                _ = until(expiry) => {
                    let Principal::User(s) = &principal else { return };
                    match relay.session_expiry(&s.session).await {
                        Ok(at) => expiry = Some(at),
                        Err(_) => {
                            ends.revoked.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                    break;
                }
                _ = &mut stop => return,
            }
        }
    }
}

/// Moves the live events waiting in the broadcast that this feed shows into
/// `held`. False when the feed must end: it fell behind the broadcast (a
/// slow consumer) or the broadcast closed.
fn take_live(
    live: &mut broadcast::Receiver<Arc<LiveEvent>>,
    held: &mut VecDeque<Arc<LiveEvent>>,
    wanted: impl Fn(&LiveEvent) -> bool,
    slow: &AtomicBool,
) -> bool {
    loop {
        match live.try_recv() {
            Ok(e) => {
                if wanted(&e) {
                    held.push_back(e);
                }
            }
            Err(broadcast::error::TryRecvError::Empty) => return true,
            Err(broadcast::error::TryRecvError::Lagged(_)) => {
                slow.store(true, Ordering::Relaxed);
                return false;
            }
            Err(broadcast::error::TryRecvError::Closed) => return false,
        }
    }
}
