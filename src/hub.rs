//! In-memory liveness and wake-ups. Nothing here is durable, nothing here is
//! needed for correctness after a restart: the store decides what is
//! delivered; the hub only decides *when* waiting pollers look again and which
//! clients count as connected.
//!
//! Locking: one `std::sync::Mutex` guards the maps; it is held only for map
//! updates and never across an `.await`. Waiters hold an `Arc<Notify>` taken
//! out of the map, so notifying never races with a waiter registering: a
//! `Notified` future created before the claim sees every later notification.

use crate::ids::{AppId, ClientId, ConversationId};
use crate::model::ClientState;
use crate::turns::Turns;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, Notify};

/// An event for an app's live streams that is not stored and never replayed:
/// `reply.delta`, `typing`, `progress`, `reply.stopped`,
/// `conversation.expired`, `conversation.assigned`.
#[derive(Clone, Debug, Serialize)]
pub struct LiveEvent {
    pub event: &'static str,
    #[serde(skip)]
    pub conversation_id: ConversationId,
    /// The conversation's user: a user session's stream sees only its own.
    #[serde(skip)]
    pub user_id: String,
    pub payload: serde_json::Value,
    /// The highest stored message announced when this event was published
    /// (set by [`Hub::publish`]): a stream shows the event after the stored
    /// messages up to it and before later ones, so a `send` and the delta of
    /// the next reply keep their order on every stream.
    #[serde(skip)]
    pub after: i64,
    /// `reply.stored`, published by this relay: the row number of the
    /// message the reply answers, and the reply (waiters on that message
    /// need not read it back; from another relay: None, they do).
    #[serde(skip)]
    pub answer: Option<(i64, Arc<crate::model::Message>)>,
}

impl LiveEvent {
    /// A reply that answers a message was stored in the conversation: for
    /// the relay's own waiters on the conversation (the OpenAI-compatible
    /// door's turns), never sent to app streams (the stored message is).
    pub const REPLY_STORED: &'static str = "reply.stored";

    /// Every kind of live event.
    pub const KINDS: [&'static str; 7] = [
        "reply.delta",
        "typing",
        "progress",
        "reply.stopped",
        "conversation.expired",
        "conversation.assigned",
        LiveEvent::REPLY_STORED,
    ];

    /// The kind named `name`, if it is one.
    pub fn kind(name: &str) -> Option<&'static str> {
        LiveEvent::KINDS.into_iter().find(|k| *k == name)
    }
}

/// What an app's streams wait on: a wake-up for stored messages (read back
/// from the store in order) and a bounded broadcast of live-only events.
struct AppChannel {
    wake: Arc<Notify>,
    live: broadcast::Sender<Arc<LiveEvent>>,
    /// The highest cursor of the app's messages announced so far.
    announced: i64,
}

#[derive(Default)]
struct Presence {
    /// Last poll seen by this process (ms), or loaded from the db at start.
    last_seen: Option<i64>,
    /// The newest time another relay sharing the database saw the client
    /// (see `crate::cluster`): liveness is the newer of the two.
    elsewhere: Option<i64>,
    /// This process's evidence last reported to the other relays.
    reported: Option<i64>,
    /// Value of `last_seen` last written to the database.
    persisted: Option<i64>,
    /// Long polls (and later sockets) of this client open right now.
    attached: usize,
    wake: Arc<Notify>,
}

struct Inner {
    clients: HashMap<ClientId, Presence>,
    apps: HashMap<AppId, AppChannel>,
    /// Live events of one conversation, for the relay's own waiters on it
    /// (the OpenAI-compatible door's turns): kept while someone listens.
    conversations: HashMap<ConversationId, broadcast::Sender<Arc<LiveEvent>>>,
}

/// Timing rules of client liveness (`[clients]`).
#[derive(Clone, Copy, Debug)]
pub struct Liveness {
    pub stale_after_ms: i64,
    pub disconnected_after_ms: i64,
}

pub struct Hub {
    inner: Mutex<Inner>,
    liveness: Liveness,
    /// When this process started: no client counts as disconnected before it
    /// has had `disconnected_after` to come back after a relay restart.
    started_at: i64,
    /// Live-only events a stream may fall behind by before it is a slow consumer.
    live_buffer: usize,
    /// Whether unassigned work may exist, so that a claim looks for it. Set
    /// whenever work is left unassigned, at start, and by every maintenance
    /// tick (work another process unassigned); a claim takes it.
    unassigned_hint: std::sync::atomic::AtomicBool,
    /// Revoked and rotated credentials, for the sockets and streams opened
    /// with them (see [`Revocation`]).
    revocations: broadcast::Sender<Arc<Revocation>>,
    /// The highest message cursor announced by [`Hub::wake_app`] (cursors
    /// are global).
    announced: AtomicI64,
    /// [`Hub::kept`]'s list and when it was made.
    kept: std::sync::Mutex<(i64, Arc<Vec<ClientId>>)>,
    /// Replies being written and stops (see [`Turns`]).
    pub turns: Turns,
}

/// Conversation channels kept before those nobody listens to are dropped
/// (they also go at their conversation's next event).
const CONVERSATION_CHANNELS: usize = 1024;

/// How long (ms) [`Hub::kept`]'s list is reused: being gone takes minutes.
const KEPT_FOR: i64 = 100;

/// A client's or app's token stopped being valid at `at` (ms, the credential's
/// new version): every socket or stream of that principal opened with an
/// older version must close. One opened with the rotated token carries
/// version `at` and is not concerned.
#[derive(Clone, Debug)]
pub struct Revocation {
    /// The client or app id.
    pub key: String,
    pub at: i64,
}

/// A session's view of revocations: resolves when the credential it was
/// opened with is revoked or replaced. Built by [`Hub::watch_credentials`]
/// with the version the session authenticated with.
pub struct CredentialWatch {
    rx: broadcast::Receiver<Arc<Revocation>>,
    version: i64,
}

impl CredentialWatch {
    /// The credential version the session was opened with.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Resolves when the credential of one of `keys` changed after the version this
    /// session authenticated with, or when revocations were missed (the receiver fell
    /// behind): the session then checks the store itself.
    pub async fn revoked(&mut self, keys: &[&str]) -> RevocationSeen {
        loop {
            match self.rx.recv().await {
                Ok(r) if keys.contains(&r.key.as_str()) && r.at > self.version => {
                    return RevocationSeen::Revoked
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return RevocationSeen::Missed,
                Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
            }
        }
    }
}

/// What [`CredentialWatch::revoked`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum RevocationSeen {
    Revoked,
    /// Some revocations went by unread: check the credential in the store.
    Missed,
}

impl Hub {
    /// `last_seq`: the newest stored message at start (see [`Hub::announced`]).
    /// `max_reply_bytes`: the most text kept of a reply being written.
    pub fn new(
        liveness: Liveness,
        started_at: i64,
        live_buffer: usize,
        last_seq: i64,
        max_reply_bytes: usize,
    ) -> Hub {
        Hub {
            inner: Mutex::new(Inner {
                conversations: HashMap::new(),
                clients: HashMap::new(),
                apps: HashMap::new(),
            }),
            liveness,
            started_at,
            live_buffer: live_buffer.max(1),
            unassigned_hint: std::sync::atomic::AtomicBool::new(true),
            revocations: broadcast::channel(256).0,
            announced: AtomicI64::new(last_seq),
            kept: std::sync::Mutex::new((0, Arc::new(Vec::new()))),
            turns: Turns::new(max_reply_bytes),
        }
    }

    /// Tells the open sessions of `key` (a client or app id) that its token
    /// stopped being valid at `at`.
    pub fn credentials_changed(&self, key: &str, at: i64) {
        let _ = self.revocations.send(Arc::new(Revocation {
            key: key.to_owned(),
            at,
        }));
    }

    /// Starts watching for changes of a credential of `version`. A change
    /// announced before this call is not seen: the caller checks the stored
    /// version after it.
    pub fn watch_credentials(&self, version: i64) -> CredentialWatch {
        CredentialWatch {
            rx: self.revocations.subscribe(),
            version,
        }
    }

    /// Unassigned work may exist now.
    pub fn note_unassigned(&self) {
        self.unassigned_hint
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a claim should look for unassigned work, leaving the hint set.
    pub fn unassigned_hinted(&self) -> bool {
        self.unassigned_hint
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether a claim should look for unassigned work; clears the hint.
    pub fn take_unassigned_hint(&self) -> bool {
        self.unassigned_hint
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves only counters behind; keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the last poll times the database remembers (at start).
    pub fn remember(&self, seen: impl IntoIterator<Item = (ClientId, Option<i64>)>) {
        let mut inner = self.lock();
        for (id, at) in seen {
            let p = inner.clients.entry(id).or_default();
            p.last_seen = p.last_seen.max(at);
            p.persisted = p.last_seen;
        }
    }

    /// Records a poll by `client`.
    pub fn touch(&self, client: &ClientId, now: i64) {
        let mut inner = self.lock();
        let p = inner.clients.entry(client.clone()).or_default();
        p.last_seen = p.last_seen.max(Some(now));
    }

    /// Marks `client` as attached (waiting in a long poll) until the guard drops.
    pub fn attach(self: &Arc<Self>, client: &ClientId) -> Attached {
        self.lock()
            .clients
            .entry(client.clone())
            .or_default()
            .attached += 1;
        Attached {
            hub: Arc::clone(self),
            client: client.clone(),
        }
    }

    /// The wake-up a poller of `client` waits on.
    pub fn client_wake(&self, client: &ClientId) -> Arc<Notify> {
        Arc::clone(&self.lock().clients.entry(client.clone()).or_default().wake)
    }

    pub fn wake_client(&self, client: &ClientId) {
        if let Some(p) = self.lock().clients.get(client) {
            p.wake.notify_waiters();
        }
    }

    /// Wakes every poller: for unassigned work, which the first poller adopts.
    pub fn wake_all_clients(&self) {
        for p in self.lock().clients.values() {
            p.wake.notify_waiters();
        }
    }

    fn app_channel<'a>(&self, inner: &'a mut Inner, app: &AppId) -> &'a AppChannel {
        let announced = self.announced();
        inner.apps.entry(app.clone()).or_insert_with(|| AppChannel {
            wake: Arc::new(Notify::new()),
            live: broadcast::channel(self.live_buffer).0,
            announced,
        })
    }

    /// The wake-up an app's outbox poll or stream waits on for stored messages.
    pub fn app_wake(&self, app: &AppId) -> Arc<Notify> {
        let mut inner = self.lock();
        Arc::clone(&self.app_channel(&mut inner, app).wake)
    }

    /// Announces stored message `seq` of the app (committed) to its outbox
    /// polls and streams.
    pub fn wake_app(&self, app: &AppId, seq: i64) {
        self.announced.fetch_max(seq, Ordering::SeqCst);
        if let Some(c) = self.lock().apps.get_mut(app) {
            c.announced = c.announced.max(seq);
            c.wake.notify_waiters();
        }
    }

    /// The highest cursor of the app's stored messages announced so far (or
    /// of any app's, announced before the app's first reader came).
    pub fn app_announced(&self, app: &AppId) -> i64 {
        let mut inner = self.lock();
        self.app_channel(&mut inner, app).announced
    }

    /// Announces that stored messages up to cursor `upto` (of any app) are
    /// readable, stored through another relay sharing the database: wakes
    /// every app's outbox polls and streams.
    pub fn announce_all(&self, upto: i64) {
        self.announced.fetch_max(upto, Ordering::SeqCst);
        for c in self.lock().apps.values_mut() {
            c.announced = c.announced.max(upto);
            c.wake.notify_waiters();
        }
    }

    /// The highest stored message (of any app) announced so far, or stored
    /// before this process started: a read of the store that starts now
    /// sees every message up to it, once the store says it is readable
    /// (`Store::readable_beyond`; at once on SQLite).
    pub fn announced(&self) -> i64 {
        self.announced.load(Ordering::SeqCst)
    }

    /// Live-only events of an app, from now on.
    pub fn subscribe_app(&self, app: &AppId) -> broadcast::Receiver<Arc<LiveEvent>> {
        let mut inner = self.lock();
        self.app_channel(&mut inner, app).live.subscribe()
    }

    /// Sends a live-only event to the app's current streams (none: dropped),
    /// after the stored messages announced so far. Returns it as sent.
    pub fn publish(&self, app: &AppId, mut event: LiveEvent) -> Arc<LiveEvent> {
        event.after = self.announced();
        let event = Arc::new(event);
        self.deliver(app, event.clone());
        event
    }

    /// Sends an event another relay published (its `after` kept) to the
    /// app's current streams here.
    pub fn deliver(&self, app: &AppId, event: Arc<LiveEvent>) {
        match event.event {
            // Kept for a stop; a stopped reply's late pieces are dropped.
            "reply.delta" => {
                let p = &event.payload;
                if let (Some(reply), Some(text)) = (p["replyId"].as_str(), p["text"].as_str()) {
                    if !self.turns.delta(
                        &event.conversation_id,
                        reply,
                        text,
                        crate::store::now_ms(),
                    ) {
                        return;
                    }
                }
            }
            LiveEvent::REPLY_STORED => self.turns.settled(&event.conversation_id),
            _ => {}
        }
        let mut inner = self.lock();
        if let Some(c) = inner.conversations.get(&event.conversation_id) {
            if c.send(event.clone()).is_err() {
                inner.conversations.remove(&event.conversation_id);
            }
        }
        // `reply.stored` is for the conversation's waiters only.
        if event.event == LiveEvent::REPLY_STORED {
            return;
        }
        if let Some(c) = inner.apps.get(app) {
            let _ = c.live.send(event);
        }
    }

    /// Whether someone here waits on the conversation's own events.
    pub fn listens_to(&self, conversation: &ConversationId) -> bool {
        self.lock()
            .conversations
            .get(conversation)
            .is_some_and(|c| c.receiver_count() > 0)
    }

    /// Live events of one conversation, from now on (every kind, including
    /// `reply.stored`, which app streams never see).
    pub fn subscribe_conversation(
        &self,
        conversation: &ConversationId,
    ) -> broadcast::Receiver<Arc<LiveEvent>> {
        let buffer = self.live_buffer;
        let mut inner = self.lock();
        if inner.conversations.len() >= CONVERSATION_CHANNELS {
            inner.conversations.retain(|_, c| c.receiver_count() > 0);
        }
        inner
            .conversations
            .entry(conversation.clone())
            .or_insert_with(|| broadcast::channel(buffer).0)
            .subscribe()
    }

    fn state_of(&self, p: &Presence, now: i64) -> ClientState {
        if p.attached > 0 {
            return ClientState::Connected;
        }
        let Some(seen) = p.last_seen.max(p.elsewhere) else {
            return ClientState::Registered;
        };
        let age = now - seen;
        if age <= self.liveness.stale_after_ms {
            ClientState::Connected
        } else if age <= self.liveness.disconnected_after_ms {
            ClientState::Stale
        } else {
            ClientState::Disconnected
        }
    }

    /// The client's liveness (revocation is the store's to know).
    pub fn state(&self, client: &ClientId, now: i64) -> ClientState {
        match self.lock().clients.get(client) {
            Some(p) => self.state_of(p, now),
            None => ClientState::Registered,
        }
    }

    /// Clients that count as connected now: candidates for new conversations.
    pub fn live_clients(&self, now: i64) -> Vec<ClientId> {
        self.lock()
            .clients
            .iter()
            .filter(|(_, p)| self.state_of(p, now) == ClientState::Connected)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The clients not gone now (see [`Hub::is_gone`]), as of at most
    /// [`KEPT_FOR`] ago: a conversation stays with one of them.
    pub fn kept(&self, now: i64) -> Arc<Vec<ClientId>> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if now - kept.0 > KEPT_FOR || now < kept.0 {
            let starting = now - self.started_at <= self.liveness.disconnected_after_ms;
            let list: Vec<ClientId> = self
                .lock()
                .clients
                .iter()
                .filter(|(_, p)| starting || self.state_of(p, now) != ClientState::Disconnected)
                .map(|(c, _)| c.clone())
                .collect();
            *kept = (now, Arc::new(list));
        }
        kept.1.clone()
    }

    /// Whether `client` has been gone so long that its conversations should move.
    pub fn is_gone(&self, client: &ClientId, now: i64) -> bool {
        if now - self.started_at <= self.liveness.disconnected_after_ms {
            return false;
        }
        match self.lock().clients.get(client) {
            Some(p) => self.state_of(p, now) == ClientState::Disconnected,
            None => true,
        }
    }

    /// Poll times not yet written to the database; marks them written.
    pub fn unpersisted_last_seen(&self) -> Vec<(ClientId, i64)> {
        let mut out = Vec::new();
        for (id, p) in self.lock().clients.iter_mut() {
            if let Some(seen) = p.last_seen {
                if p.persisted < Some(seen) {
                    p.persisted = Some(seen);
                    out.push((id.clone(), seen));
                }
            }
        }
        out
    }

    /// Raises what other relays saw of each client (ms): see
    /// [`Presence::elsewhere`].
    pub fn seen_elsewhere(&self, seen: impl IntoIterator<Item = (ClientId, i64)>) {
        let mut inner = self.lock();
        for (id, at) in seen {
            let p = inner.clients.entry(id).or_default();
            p.elsewhere = p.elsewhere.max(Some(at));
        }
    }

    /// The timing rules of liveness.
    pub fn liveness(&self) -> Liveness {
        self.liveness
    }

    /// Takes back [`Hub::seen_here`]'s marks (reporting them failed): the
    /// next call reports them again.
    pub fn unreport(&self, seen: Vec<(ClientId, i64)>) {
        let mut inner = self.lock();
        for (id, at) in seen {
            if let Some(p) = inner.clients.get_mut(&id) {
                if p.reported == Some(at) {
                    p.reported = None;
                }
            }
        }
    }

    /// This process's own evidence of its clients not yet reported to the
    /// other relays, marked reported: a client attached now counts as seen
    /// at `now` (so it is reported on every call), another one at its last
    /// poll. What other relays reported is never reported back.
    pub fn seen_here(&self, now: i64) -> Vec<(ClientId, i64)> {
        let mut out = Vec::new();
        for (id, p) in self.lock().clients.iter_mut() {
            let at = if p.attached > 0 {
                Some(now)
            } else {
                p.last_seen
            };
            if let Some(at) = at {
                if p.reported < Some(at) {
                    p.reported = Some(at);
                    out.push((id.clone(), at));
                }
            }
        }
        out
    }

    pub fn forget_client(&self, client: &ClientId) {
        if let Some(p) = self.lock().clients.remove(client) {
            p.wake.notify_waiters();
        }
    }
}

/// A long poll in progress; the client counts as connected while it lives.
pub struct Attached {
    hub: Arc<Hub>,
    client: ClientId,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let now = crate::store::now_ms();
        let mut inner = self.hub.lock();
        if let Some(p) = inner.clients.get_mut(&self.client) {
            p.attached = p.attached.saturating_sub(1);
            // Waiting until now was presence too.
            p.last_seen = p.last_seen.max(Some(now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Arc<Hub> {
        Arc::new(Hub::new(
            Liveness {
                stale_after_ms: 30_000,
                disconnected_after_ms: 300_000,
            },
            0,
            16,
            0,
            65_536,
        ))
    }

    #[test]
    fn client_state_follows_the_last_poll() {
        let hub = hub();
        let c = ClientId::generate();
        assert_eq!(hub.state(&c, 1_000_000), ClientState::Registered);
        hub.touch(&c, 1_000_000);
        assert_eq!(hub.state(&c, 1_020_000), ClientState::Connected);
        assert_eq!(hub.state(&c, 1_040_000), ClientState::Stale);
        assert_eq!(hub.state(&c, 1_400_000), ClientState::Disconnected);
        assert!(hub.is_gone(&c, 1_400_000));
    }

    #[test]
    fn an_attached_client_is_connected_however_old_its_last_poll() {
        let hub = hub();
        let c = ClientId::generate();
        hub.touch(&c, 1_000_000);
        let guard = hub.attach(&c);
        assert_eq!(hub.live_clients(1_400_000), vec![c.clone()]);
        drop(guard);
    }

    #[test]
    fn nobody_is_gone_right_after_a_restart() {
        let hub = Arc::new(Hub::new(
            Liveness {
                stale_after_ms: 30_000,
                disconnected_after_ms: 300_000,
            },
            1_000_000,
            16,
            0,
            65_536,
        ));
        let c = ClientId::generate();
        hub.remember([(c.clone(), Some(0))]);
        assert!(!hub.is_gone(&c, 1_100_000));
        assert!(hub.is_gone(&c, 1_400_000));
    }

    #[tokio::test]
    async fn a_revocation_reaches_sessions_of_older_credentials_only() {
        let hub = hub();
        let mut old = hub.watch_credentials(0);
        hub.credentials_changed("cli_other", 1_000);
        hub.credentials_changed("cli_me", 1_000);
        assert_eq!(old.revoked(&["cli_me"]).await, RevocationSeen::Revoked);
        // A session opened with the rotated token (version 1000) stays when
        // the same change is announced again (the CLI watcher's poll).
        let mut new = hub.watch_credentials(1_000);
        hub.credentials_changed("cli_me", 1_000);
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            new.revoked(&["cli_me"]),
        )
        .await;
        assert!(
            waited.is_err(),
            "a later session is not closed by an older change"
        );
    }

    #[test]
    fn clients_seen_by_other_relays_count_and_are_not_reported_back() {
        let hub = hub();
        let (here, there) = (ClientId::generate(), ClientId::generate());
        hub.touch(&here, 1_000_000);
        hub.seen_elsewhere([(there.clone(), 1_010_000)]);
        let mut live = hub.live_clients(1_020_000);
        live.sort();
        let mut both = vec![here.clone(), there.clone()];
        both.sort();
        assert_eq!(live, both);
        // Later evidence from elsewhere keeps `here` connected too.
        hub.seen_elsewhere([(here.clone(), 1_025_000)]);
        assert_eq!(hub.state(&here, 1_050_000), ClientState::Connected);
        assert_eq!(hub.state(&there, 1_050_000), ClientState::Stale);
        // Only this process's own evidence goes out, once.
        assert_eq!(hub.seen_here(1_050_000), vec![(here.clone(), 1_000_000)]);
        assert!(hub.seen_here(1_060_000).is_empty());
        // An attached client is reported at every call.
        let _guard = hub.attach(&there);
        assert_eq!(hub.seen_here(1_070_000), vec![(there.clone(), 1_070_000)]);
        assert_eq!(hub.seen_here(1_071_000), vec![(there.clone(), 1_071_000)]);
    }

    #[test]
    fn unpersisted_poll_times_are_reported_once() {
        let hub = hub();
        let c = ClientId::generate();
        hub.touch(&c, 5);
        assert_eq!(hub.unpersisted_last_seen(), vec![(c.clone(), 5)]);
        assert!(hub.unpersisted_last_seen().is_empty());
    }
}
