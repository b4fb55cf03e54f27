//! Relays sharing one PostgreSQL database behave as one relay. The store
//! already makes every write safe from any relay; what one relay keeps in
//! memory (its [`Hub`](crate::hub::Hub)) is shared here:
//!
//! - **Wake-ups.** A relay that wakes an agent (new work for it, or
//!   unassigned work), publishes a live event (`reply.delta`, `typing`,
//!   ...) or queues webhook events while another relay leads also signals
//!   the other relays (`wakeups::signal`, in order, from
//!   one task), and each transaction that stores messages tells every
//!   relay which apps' messages it stored. A lost notification only delays:
//!   when the listening connection was down, everything is woken.
//! - **Liveness.** Each relay writes when it last saw its agents
//!   (`presence`, every [`Cluster::refresh_every`]) and reads what all of
//!   them saw, so an agent connected anywhere counts as connected for
//!   assignment, stickiness and moving work away from gone agents.
//! - **Leadership.** One relay at a time holds a session advisory lock and
//!   runs the background tasks (expiry, reassignment, retention, webhook
//!   delivery), folds the open-delivery counts, releases what the sockets
//!   of relays gone silent held, and prunes old presence rows.
//!   When it dies PostgreSQL ends its session, and another relay takes
//!   the lock within [`LEAD_EVERY`].
//!
//! On SQLite there is one relay and no cluster: it always leads.

use crate::hub::LiveEvent;
use crate::ids::{AppId, ClientId, ConversationId, MessageId, RelayId};
use crate::relay::Relay;
use crate::shutdown::Shutdown;
use crate::store::now_ms;
use crate::store::postgres::leader::{keys, Leadership};
use crate::store::postgres::wakeups::{self, Heard, MAX_SIGNAL_BYTES};
use crate::store::postgres::{presence, PgStore};
use crate::turns::Cancel;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often a relay that does not lead tries to, and the leader checks it
/// still does (and folds the open-delivery counts).
pub const LEAD_EVERY: Duration = Duration::from_secs(1);
/// How often the listener reads the highest position even when notified.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Signals waiting to be sent before new ones are dropped (with a warning).
const OUTGOING: usize = 8192;
/// Signals sent per statement.
const SIGNALS_PER_NOTIFY: usize = 256;
/// Room an envelope takes besides its signals.
const ENVELOPE_BYTES: usize = 128;
/// Leader ticks between prunes of old presence rows.
const PRUNE_EVERY_TICKS: u64 = 60;

/// What relays tell each other: the signals one relay sent at once (as
/// many as fit one notification).
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The sending relay (it ignores its own signals).
    from: String,
    /// Numbers the sender's notifications: no two payloads are identical,
    /// so PostgreSQL never folds two into one.
    n: u64,
    signals: Vec<Signal>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Signal {
    /// A relay started: the others count it at once (they send nothing
    /// while they think they are alone).
    Hello,
    /// New work for this agent.
    Wake { client: String },
    /// Unassigned work: whichever agent looks first adopts it.
    AnyClient,
    /// Webhook events were queued: for the leader's dispatcher.
    Webhooks,
    /// A stop ended turns of this agent (see `relay::stop`).
    Cancel {
        client: String,
        conversation: String,
        messages: Vec<String>,
        reply: Option<String>,
    },
    /// A live event for an app's streams.
    Live {
        app: String,
        conversation: String,
        user: String,
        event: String,
        payload: serde_json::Value,
        after: i64,
    },
}

/// This relay's membership of the cluster.
pub struct Cluster {
    id: RelayId,
    pg: PgStore,
    leading: AtomicBool,
    outgoing: mpsc::Sender<String>,
    /// How often this relay writes when it saw its agents (and that it is
    /// alive).
    refresh_every: Duration,
    /// Other relays alive at the last refresh: while there are none, this
    /// relay sends no signals and no notices of stored messages (nobody
    /// would hear them; a relay that starts looks at everything at first,
    /// see `wakeups`).
    others: Arc<AtomicI64>,
    /// When another relay was last heard storing messages (milliseconds
    /// since the epoch; 0: never): the batch wait follows it (see
    /// `store::postgres::batch`).
    others_wrote: Arc<AtomicI64>,
}

impl Cluster {
    /// Joins the relays on `pg`'s database; `stale_after_ms` is the clients'
    /// stale window (presence is refreshed four times within it, at least
    /// once a second). Starts the task that sends this relay's signals.
    pub fn join(pg: PgStore, stale_after_ms: i64) -> Cluster {
        let (outgoing, rx) = mpsc::channel(OUTGOING);
        let others = Arc::new(AtomicI64::new(0));
        let id = RelayId::generate();
        tokio::spawn(send_signals(
            pg.pool().clone(),
            id.clone(),
            rx,
            pg.notices().clone(),
            others.clone(),
        ));
        Cluster {
            id,
            pg,
            leading: AtomicBool::new(false),
            outgoing,
            refresh_every: Duration::from_millis((stale_after_ms / 4).clamp(100, 1000) as u64),
            others,
            others_wrote: Arc::new(AtomicI64::new(0)),
        }
    }

    /// When another relay was last heard storing messages (milliseconds
    /// since the epoch; 0: never).
    pub fn others_wrote(&self) -> Arc<AtomicI64> {
        self.others_wrote.clone()
    }

    /// A new WebSocket session's id, which names this relay: when the
    /// relay dies, the leader releases what its sessions held (see
    /// `Lead::duties`).
    pub fn session_id(&self) -> String {
        crate::store::postgres::presence::session_id(self.id.as_str())
    }

    /// Whether this relay runs the background tasks now.
    pub fn leads(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Tells the other relays that a stop ended turns of `client`.
    pub fn cancel(&self, client: &ClientId, cancel: &Cancel) {
        self.send(Signal::Cancel {
            client: client.as_str().to_owned(),
            conversation: cancel.conversation_id.as_str().to_owned(),
            messages: cancel
                .message_ids
                .iter()
                .map(|m| m.as_str().to_owned())
                .collect(),
            reply: cancel.reply_id.clone(),
        });
    }

    /// Tells the other relays to wake `client`'s polls and sockets.
    pub fn wake_client(&self, client: &ClientId) {
        self.send(Signal::Wake {
            client: client.to_string(),
        });
    }

    /// Tells the other relays that unassigned work waits.
    pub fn wake_any_client(&self) {
        self.send(Signal::AnyClient);
    }

    /// Tells the leader that webhook events were queued.
    pub fn wake_webhooks(&self) {
        self.send(Signal::Webhooks);
    }

    /// Sends a live event published here to the app's streams on the other
    /// relays. An event too large for a notification (a `progress` event's
    /// data can be 64 KiB) reaches only the streams on this relay.
    pub fn forward(&self, app: &AppId, event: &LiveEvent) {
        self.send(Signal::Live {
            app: app.to_string(),
            conversation: event.conversation_id.to_string(),
            user: event.user_id.clone(),
            event: event.event.to_owned(),
            payload: event.payload.clone(),
            after: event.after,
        });
    }

    fn send(&self, signal: Signal) {
        if self.others.load(Ordering::Relaxed) == 0 && !matches!(signal, Signal::Hello) {
            return;
        }
        let Ok(payload) = serde_json::to_string(&signal) else {
            return;
        };
        if payload.len() > MAX_SIGNAL_BYTES - ENVELOPE_BYTES {
            tracing::debug!(
                bytes = payload.len(),
                "a live event too large for a notification reaches this relay's streams only"
            );
            return;
        }
        if self.outgoing.try_send(payload).is_err() {
            tracing::warn!("signals to the other relays are backing up; one was dropped (they catch up by their periodic checks)");
        }
    }
}

/// Sends queued signals in order and notices of stored messages (see
/// `cursor::Notices`), as many per statement as are waiting, while other
/// relays are alive to hear them.
async fn send_signals(
    pool: sqlx::PgPool,
    from: RelayId,
    mut rx: mpsc::Receiver<String>,
    notices: Arc<crate::store::postgres::cursor::Notices>,
    others: Arc<AtomicI64>,
) {
    let mut batch = Vec::new();
    let mut sent = 0u64;
    loop {
        let stored = tokio::select! {
            n = rx.recv_many(&mut batch, SIGNALS_PER_NOTIFY) => {
                if n == 0 {
                    return;
                }
                notices.try_take()
            }
            taken = notices.take() => {
                while batch.len() < SIGNALS_PER_NOTIFY {
                    match rx.try_recv() {
                        Ok(signal) => batch.push(signal),
                        Err(_) => break,
                    }
                }
                Some(taken)
            }
        };
        // A relay alone still sends its hello (queued only then).
        if others.load(Ordering::Relaxed) == 0 && stored.is_some() && batch.is_empty() {
            continue;
        }
        let stored = stored.filter(|_| others.load(Ordering::Relaxed) > 0);
        let n = batch.len();
        let payloads = envelopes(from.as_str(), &mut sent, batch.drain(..));
        if let Err(e) = wakeups::signal(&pool, from.as_str(), payloads, stored).await {
            tracing::warn!(error = %e, signals = n, "cannot signal the other relays; they catch up by their periodic checks");
        }
    }
}

/// The notifications that carry `signals` (each a serialized [`Signal`]):
/// [`Envelope`]s, as few as fit [`MAX_SIGNAL_BYTES`] each.
fn envelopes(from: &str, sent: &mut u64, signals: impl Iterator<Item = String>) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut open: Option<String> = None;
    for signal in signals {
        if let Some(p) = open.as_mut() {
            if p.len() + signal.len() + 2 <= MAX_SIGNAL_BYTES {
                p.push(',');
                p.push_str(&signal);
                continue;
            }
        }
        if let Some(mut p) = open.take() {
            p.push_str("]}");
            payloads.push(p);
        }
        *sent += 1;
        let head = serde_json::json!({ "from": from, "n": *sent }).to_string();
        // `{"from":…,"n":…` then `,"signals":[` and the signals.
        let mut p = head[..head.len() - 1].to_owned();
        p.push_str(",\"signals\":[");
        p.push_str(&signal);
        open = Some(p);
    }
    if let Some(mut p) = open {
        p.push_str("]}");
        payloads.push(p);
    }
    payloads
}

/// What a heard signal does here.
fn apply(relay: &Relay, cluster: &Cluster, heard: Heard) {
    let hub = &relay.hub;
    match heard {
        Heard::Stored { upto, apps, from } => {
            if from.is_some_and(|f| f != cluster.id.as_str()) {
                cluster.others_wrote.store(now_ms(), Ordering::Relaxed);
            }
            match apps {
                Some(apps) => {
                    for app in apps.iter().filter_map(|a| AppId::parse(a)) {
                        hub.wake_app(&app, upto);
                    }
                }
                None => hub.announce_all(upto),
            }
        }
        Heard::Missed => {
            hub.announce_all(0);
            hub.note_unassigned();
            hub.wake_all_clients();
            relay.wake_webhooks(cluster.leads());
        }
        Heard::Signal(payload) => {
            let envelope: Envelope = match serde_json::from_str(&payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "unexpected signal from another relay");
                    return;
                }
            };
            if envelope.from == cluster.id.as_str() {
                return;
            }
            // Work for agents, live events, cancels: another relay writes.
            if envelope.signals.iter().any(|s| !matches!(s, Signal::Hello)) {
                cluster.others_wrote.store(now_ms(), Ordering::Relaxed);
            }
            for signal in envelope.signals {
                apply_signal(relay, cluster, signal);
            }
        }
    }
}

/// What a signal from another relay does here.
fn apply_signal(relay: &Relay, cluster: &Cluster, signal: Signal) {
    let hub = &relay.hub;
    match signal {
        Signal::Wake { client } => {
            if let Some(c) = ClientId::parse(&client) {
                hub.wake_client(&c);
            }
        }
        Signal::AnyClient => {
            hub.note_unassigned();
            hub.wake_all_clients();
        }
        Signal::Hello => {
            cluster.others.fetch_max(1, Ordering::Relaxed);
        }
        Signal::Webhooks => relay.wake_webhooks(cluster.leads()),
        Signal::Cancel {
            client,
            conversation,
            messages,
            reply,
        } => {
            let (Some(client), Some(conversation_id)) = (
                ClientId::parse(&client),
                ConversationId::parse(&conversation),
            ) else {
                return;
            };
            let message_ids = messages
                .iter()
                .filter_map(|m| MessageId::parse(m))
                .collect();
            relay.heard_cancel(
                &client,
                Cancel {
                    conversation_id,
                    message_ids,
                    reply_id: reply,
                },
            );
        }
        Signal::Live {
            app,
            conversation,
            user,
            event,
            payload,
            after,
        } => {
            let (Some(app), Some(conversation_id), Some(event)) = (
                AppId::parse(&app),
                ConversationId::parse(&conversation),
                LiveEvent::kind(&event),
            ) else {
                return;
            };
            hub.deliver(
                &app,
                Arc::new(LiveEvent {
                    event,
                    conversation_id,
                    user_id: user,
                    payload,
                    after,
                    answer: None,
                }),
            );
        }
    }
}

/// The cluster's side of a relay: starts listening to the other relays and
/// makes a first bid for the lead (so that a relay starting alone leads
/// before it serves), then runs until shutdown: hears the other relays,
/// shares liveness, and leads when it can. When it stops it gives the lead
/// up and deletes this relay's presence rows.
pub async fn start(
    relay: Arc<Relay>,
    cluster: Arc<Cluster>,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let pool = cluster.pg.pool().clone();
    let ears = wakeups::listen(pool.clone(), CHECK_EVERY).await;
    let mut leadership = Lead::default();
    leadership.tick(&relay, &cluster).await;
    share_liveness(&relay, &cluster).await;
    // Listening already: the others start telling this relay at once.
    cluster.send(Signal::Hello);
    tokio::spawn(async move {
        let stop = shutdown.wait();
        tokio::pin!(stop);
        let mut ears = match ears {
            Ok(ears) => ears,
            Err(mut e) => loop {
                tracing::warn!(error = %e, "cannot listen to the other relays; trying again");
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(LEAD_EVERY) => {}
                }
                match wakeups::listen(pool.clone(), CHECK_EVERY).await {
                    Ok(ears) => break ears,
                    Err(again) => e = again,
                }
            },
        };
        let mut refresh = tokio::time::interval(cluster.refresh_every);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lead = tokio::time::interval(LEAD_EVERY);
        lead.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(heard) = ears.heard.recv() => apply(&relay, &cluster, heard),
                _ = refresh.tick() => share_liveness(&relay, &cluster).await,
                _ = lead.tick() => leadership.tick(&relay, &cluster).await,
            }
        }
        leadership.resign(&cluster).await;
        if let Err(e) = presence::relay_gone(&pool, cluster.id.as_str()).await {
            tracing::warn!(error = %e, "cannot delete this relay's presence rows; they age out");
        }
    })
}

/// Writes when this relay saw its agents (and that it is alive), reads when
/// any relay did (and how many others are alive).
async fn share_liveness(relay: &Relay, cluster: &Cluster) {
    let pool = cluster.pg.pool();
    let now = now_ms();
    let since = now - 3 * cluster.refresh_every.as_millis() as i64;
    match presence::alive(pool, cluster.id.as_str(), now, since).await {
        Ok(n) => cluster.others.store(n, Ordering::Relaxed),
        Err(e) => {
            tracing::warn!(error = %e, "cannot record that this relay is alive");
            // Unknown: tell whoever may listen.
            cluster.others.store(1, Ordering::Relaxed);
        }
    }
    let here = relay.hub.seen_here(now);
    if let Err(e) = presence::seen(pool, cluster.id.as_str(), &here).await {
        tracing::warn!(error = %e, "cannot record which agents this relay sees");
        relay.hub.unreport(here);
    }
    let since = now - relay.hub.liveness().disconnected_after_ms;
    match presence::recent(pool, since).await {
        Ok(seen) => relay.hub.seen_elsewhere(seen),
        Err(e) => tracing::warn!(error = %e, "cannot read which agents the other relays see"),
    }
}

/// This relay's bid for leadership.
#[derive(Default)]
struct Lead {
    held: Option<Leadership>,
    /// The connection attempts are made on while another relay leads.
    candidate: Option<sqlx::PgConnection>,
    ticks: u64,
}

impl Lead {
    async fn tick(&mut self, relay: &Relay, cluster: &Cluster) {
        if let Some(held) = self.held.as_mut() {
            if !held.still_held().await {
                tracing::warn!(relay = %cluster.id, "lost the lead of the background tasks (its database session ended)");
                self.held = None;
                cluster.leading.store(false, Ordering::SeqCst);
            }
        }
        if self.held.is_none() {
            let conn = match self.candidate.take() {
                Some(conn) => conn,
                None => match cluster.pg.pool().acquire().await {
                    Ok(conn) => conn.detach(),
                    Err(e) => {
                        tracing::debug!(error = %e, "no connection to bid for the lead");
                        return;
                    }
                },
            };
            match Leadership::try_take(conn, keys::MAINTENANCE).await {
                Ok(Ok(held)) => {
                    tracing::info!(relay = %cluster.id, "leading the background tasks");
                    self.held = Some(held);
                    cluster.leading.store(true, Ordering::SeqCst);
                    // Work the last leader left unassigned, events it left unsent.
                    relay.hub.note_unassigned();
                    relay.wake_webhooks(true);
                }
                Ok(Err(conn)) => self.candidate = Some(conn),
                Err(e) => tracing::debug!(error = %e, "bidding for the lead failed"),
            }
        }
        if self.held.is_some() {
            self.duties(relay, cluster).await;
        }
    }

    /// What only the leader does, besides the background tasks.
    async fn duties(&mut self, relay: &Relay, cluster: &Cluster) {
        if let Err(e) = cluster.pg.fold_pending().await {
            tracing::warn!(error = %e, "folding the open-delivery counts failed");
        }
        // A relay silent for the clients' stale window died (or lost its
        // database): its sockets are gone, so what they held is due now
        // rather than when the leases end, as on a restart of one relay.
        let now = now_ms();
        let silent_since = now - relay.hub.liveness().stale_after_ms;
        match presence::release_gone_relays(cluster.pg.pool(), silent_since, now).await {
            Ok(released) if !released.is_empty() => {
                tracing::info!(
                    clients = released.len(),
                    "released the deliveries held by the sockets of a relay that stopped answering"
                );
                for client in &released {
                    relay.hub.wake_client(client);
                    cluster.wake_client(client);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot release the deliveries of relays that died")
            }
        }
        self.ticks += 1;
        if self.ticks.is_multiple_of(PRUNE_EVERY_TICKS) {
            let before = now_ms() - 2 * relay.hub.liveness().disconnected_after_ms;
            if let Err(e) = presence::prune(cluster.pg.pool(), before).await {
                tracing::warn!(error = %e, "cannot prune old presence rows");
            }
        }
    }

    async fn resign(&mut self, cluster: &Cluster) {
        cluster.leading.store(false, Ordering::SeqCst);
        if let Some(held) = self.held.take() {
            held.release().await;
        }
        if let Some(conn) = self.candidate.take() {
            use sqlx::Connection;
            let _ = conn.close().await;
        }
    }
}
