//! The dispatcher: one task that sends webhook events and records each
//! attempt.
//!
//! It keeps, per enabled endpoint, the pending rows it knows, oldest first.
//! The events this relay's commits queue are handed to it with their bodies
//! (`Webhooks::feed`), so sending them reads nothing back. The tables are
//! read at start, when it is woken for events it was not handed (another
//! relay's, a replay, an endpoint enabled again), when a backlog grew past
//! what it holds, and once a second (the CLI, another process, may have
//! changed the queue). Per endpoint it starts an attempt for each due row
//! whose conversation has no earlier row pending, up to `max_in_flight`
//! requests: so a conversation's events arrive in order, different
//! conversations and endpoints in parallel. An answered attempt frees its
//! slot at once; the answers are recorded in batches, one transaction for
//! those that came while the previous batch was written (a row being
//! recorded is not sent again meanwhile, and a delivered one no longer holds
//! up its conversation). Everything it knows is in the database, so a
//! restart resumes where it stopped (an attempt cut short, or answered but
//! not yet recorded, is made again with the same `webhook-id`). Of relays
//! sharing a PostgreSQL database, only the leader dispatches
//! (`crate::cluster`); a new leader resumes the same way.

use super::sign;
use super::target::GuardedResolver;
use crate::ids::{ConversationId, EventId, WebhookId};
use crate::relay::Relay;
use crate::shutdown::Shutdown;
use crate::store::now_ms;
use crate::store::webhooks::{self, Outcome, Pending, Queued, Recorded};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Pending rows read per endpoint from the tables.
const WINDOW: i64 = 256;
/// The most rows held per endpoint; past it, events handed over are left
/// in the tables until the backlog shrinks.
const HELD_MAX: usize = 1024;
/// How long the list of endpoints (and their keys) is reused when nothing
/// changed it through this process.
const ENDPOINTS_TTL: Duration = Duration::from_secs(1);
/// The longest time between reads of the tables.
const REREAD: Duration = Duration::from_secs(1);
/// Bytes of a receiver's answer that are read (and at most 256 kept).
const READ_BYTES: usize = 1024;
const KEEP_BYTES: usize = 256;

/// An event's `webhook-id` and body.
type Event = (EventId, Arc<str>);

/// What an attempt sends.
struct Request {
    url: String,
    keys: Arc<Vec<Vec<u8>>>,
    event_seq: i64,
    /// Handed over with the event; None: read from the tables.
    event: Option<Event>,
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Idle,
    Sending,
    /// Answered, the record not yet committed: whether it was delivered.
    Recording(bool),
}

/// A pending row of an endpoint.
struct Row {
    conversation: ConversationId,
    next_at: i64,
    event: Option<Event>,
    state: State,
}

/// An endpoint's pending rows as the dispatcher knows them.
#[derive(Default)]
struct Queue {
    rows: BTreeMap<i64, Row>,
    /// Pending rows past this event are in the tables only (the last read
    /// filled its window, or the queue was full): events handed over past
    /// it wait for a later read, so none overtakes an older one.
    horizon: Option<i64>,
}

impl Queue {
    /// Takes what the tables list as pending (the first `WINDOW` rows):
    /// rows not sent nor being recorded follow the tables (a replay or an
    /// endpoint enabled again makes them due now; purged or delivered
    /// elsewhere, they go), and the rows listed are known from now on.
    fn merge(&mut self, pending: Vec<Pending>) {
        let listed: HashSet<i64> = pending.iter().map(|p| p.event_seq).collect();
        self.rows
            .retain(|seq, row| row.state != State::Idle || listed.contains(seq));
        self.horizon = (pending.len() as i64 >= WINDOW)
            .then(|| pending.last().map(|p| p.event_seq))
            .flatten();
        for p in pending {
            let row = self.rows.entry(p.event_seq).or_insert(Row {
                conversation: p.conversation_id,
                next_at: p.next_at,
                event: None,
                state: State::Idle,
            });
            if row.state == State::Idle {
                row.next_at = p.next_at;
            }
        }
    }

    /// Takes an event handed over, unless it must wait in the tables.
    fn take(&mut self, e: &Queued) {
        if self.horizon.is_some_and(|h| e.seq > h) {
            return;
        }
        if let Some(row) = self.rows.get_mut(&e.seq) {
            row.event
                .get_or_insert_with(|| (e.id.clone(), e.body.clone()));
            return;
        }
        if self.rows.len() >= HELD_MAX {
            self.horizon = self.rows.last_key_value().map(|(seq, _)| *seq);
            return;
        }
        self.rows.insert(
            e.seq,
            Row {
                conversation: e.conversation_id.clone(),
                next_at: 0,
                event: Some((e.id.clone(), e.body.clone())),
                state: State::Idle,
            },
        );
    }

    /// The rows to send now, oldest first, with at most `max` on their way
    /// at once, and when the next one waiting for its retry time is due.
    fn due(&self, now: i64, max: usize) -> (Vec<i64>, Option<i64>) {
        // Most turns follow an answer, with nothing waiting to be sent.
        if !self.rows.values().any(|r| r.state == State::Idle) {
            return (Vec::new(), None);
        }
        let mut start = Vec::new();
        let mut next_due: Option<i64> = None;
        let mut seen: HashSet<&ConversationId> = HashSet::new();
        let mut sending = 0;
        for (seq, row) in &self.rows {
            sending += usize::from(row.state == State::Sending);
            // Delivered, being recorded: done, and no longer in the way.
            if row.state == State::Recording(true) {
                continue;
            }
            // Only the oldest undelivered row of a conversation may be sent.
            if !seen.insert(&row.conversation) || row.state != State::Idle {
                continue;
            }
            if row.next_at > now {
                next_due = Some(next_due.map_or(row.next_at, |n| n.min(row.next_at)));
                continue;
            }
            start.push(*seq);
        }
        start.truncate(max.saturating_sub(sending));
        (start, next_due)
    }
}

/// An enabled endpoint with the keys that sign for it now.
struct Target {
    id: WebhookId,
    url: String,
    keys: Arc<Vec<Vec<u8>>>,
}

/// The enabled endpoints, reread when the relay changed one or after
/// `ENDPOINTS_TTL` (the CLI, another process, may have).
struct Targets {
    list: Vec<Target>,
    read_at: Option<Instant>,
    warned: HashSet<WebhookId>,
}

impl Targets {
    async fn get(&mut self, relay: &Relay) -> Result<&[Target], crate::error::Error> {
        let stale = self.read_at.is_none_or(|t| t.elapsed() >= ENDPOINTS_TTL)
            || relay
                .webhooks
                .changed
                .swap(false, std::sync::atomic::Ordering::AcqRel);
        if stale {
            let now = now_ms();
            let mut list = Vec::new();
            for endpoint in webhooks::enabled(relay.store.reader()).await? {
                match relay.webhook_keys(&endpoint, now) {
                    Ok(keys) => {
                        self.warned.remove(&endpoint.id);
                        list.push(Target {
                            id: endpoint.id,
                            url: endpoint.url,
                            keys: Arc::new(keys),
                        });
                    }
                    Err(e) => {
                        if self.warned.insert(endpoint.id.clone()) {
                            tracing::error!(webhook = %endpoint.id, error = %e, "cannot sign for this endpoint; its events wait");
                        }
                    }
                }
            }
            self.list = list;
            self.read_at = Some(Instant::now());
        }
        Ok(&self.list)
    }
}

/// Answered attempts waiting to be recorded, and whether a batch is being
/// written.
#[derive(Default)]
struct Records {
    waiting: Vec<Outcome>,
    writing: bool,
}

enum Done {
    Sent(Outcome),
    /// A batch was recorded: per attempt its endpoint, event and whether it
    /// was delivered, and what was written (None: nothing was).
    Recorded(
        Vec<(WebhookId, i64, bool)>,
        Option<Vec<(Recorded, Option<i64>)>>,
    ),
}

/// What the dispatcher holds between turns of its loop.
struct Dispatcher {
    relay: Arc<Relay>,
    client: reqwest::Client,
    queues: HashMap<WebhookId, Queue>,
    targets: Targets,
    tasks: JoinSet<Done>,
    records: Records,
    /// The tables are to be read before the next sends.
    read: bool,
    read_at: Instant,
}

pub async fn run(relay: Arc<Relay>, shutdown: Shutdown) {
    let wh = &relay.webhooks;
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(GuardedResolver(wh.policy.clone())))
        .timeout(wh.rules.timeout)
        .connect_timeout(wh.rules.timeout)
        .user_agent(concat!("clawrelay/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are not delivered");
            return;
        }
    };
    let mut d = Dispatcher {
        relay: relay.clone(),
        client,
        queues: HashMap::new(),
        targets: Targets {
            list: Vec::new(),
            read_at: None,
            warned: HashSet::new(),
        },
        tasks: JoinSet::new(),
        records: Records::default(),
        read: true,
        read_at: Instant::now(),
    };
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut leading = false;
    loop {
        let woken = wh.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let fed = wh.fed_wake.notified();
        tokio::pin!(fed);
        fed.as_mut().enable();
        let deadline = if relay.leads() {
            if !leading {
                leading = true;
                d.read = true;
            }
            d.turn().await
        } else {
            // Of relays sharing a database, only the leader sends.
            leading = false;
            d.queues.clear();
            drop(wh.take_fed());
            tokio::time::Instant::now() + REREAD
        };
        tokio::select! {
            _ = &mut stop => break,
            _ = &mut woken => d.read = true,
            _ = &mut fed => {}
            Some(done) = d.tasks.join_next(), if !d.tasks.is_empty() => d.finish(done),
            _ = tokio::time::sleep_until(deadline) => {}
        }
        while let Some(done) = d.tasks.try_join_next() {
            d.finish(done);
        }
        d.record();
    }
    // Attempts cut short stay pending and are made again after the restart.
    d.tasks.shutdown().await;
}

impl Dispatcher {
    /// Reads the tables if due, takes the events handed over, starts the
    /// attempts that are due; returns when to look again.
    async fn turn(&mut self) -> tokio::time::Instant {
        let fed = self.relay.webhooks.take_fed();
        if fed.lost
            || self.read_at.elapsed() >= REREAD
            || self
                .relay
                .webhooks
                .changed
                .load(std::sync::atomic::Ordering::Acquire)
        {
            self.read = true;
        }
        if self.read {
            // Events handed over were committed before this read: it sees
            // them, and taking them after it only adds their bodies.
            match self.read_tables().await {
                Ok(()) => self.read = false,
                Err(e) => tracing::warn!(error = %e, "reading the webhook queue failed"),
            }
            self.read_at = Instant::now();
        }
        for event in &fed.events {
            for endpoint in &event.endpoints {
                // An endpoint not known yet is read with its rows.
                if let Some(q) = self.queues.get_mut(endpoint) {
                    q.take(event);
                }
            }
        }
        let next_due = self.start();
        let reread = tokio::time::Instant::from_std(self.read_at + REREAD);
        match next_due {
            Some(at) => {
                let wait = Duration::from_millis((at - now_ms()).max(0) as u64);
                reread.min(tokio::time::Instant::now() + wait)
            }
            None => reread,
        }
    }

    /// Reads the enabled endpoints and their first pending rows.
    async fn read_tables(&mut self) -> Result<(), crate::error::Error> {
        let reader = self.relay.store.reader();
        let targets = self.targets.get(&self.relay).await?;
        self.queues
            .retain(|id, _| targets.iter().any(|t| &t.id == id));
        for t in targets {
            let pending = webhooks::pending(reader, &t.id, WINDOW).await?;
            self.queues.entry(t.id.clone()).or_default().merge(pending);
        }
        Ok(())
    }

    /// Starts the attempts that are due; returns when the next retry is due.
    fn start(&mut self) -> Option<i64> {
        let max = self.relay.webhooks.rules.max_in_flight;
        let now = now_ms();
        let mut next_due: Option<i64> = None;
        for t in &self.targets.list {
            let Some(q) = self.queues.get_mut(&t.id) else {
                continue;
            };
            let (start, due) = q.due(now, max);
            if let Some(at) = due {
                next_due = Some(next_due.map_or(at, |n| n.min(at)));
            }
            for seq in start {
                let Some(row) = q.rows.get_mut(&seq) else {
                    continue;
                };
                row.state = State::Sending;
                let request = Request {
                    url: t.url.clone(),
                    keys: t.keys.clone(),
                    event_seq: seq,
                    event: row.event.clone(),
                };
                self.tasks.spawn(attempt(
                    self.relay.clone(),
                    self.client.clone(),
                    t.id.clone(),
                    request,
                ));
            }
        }
        next_due
    }

    /// Takes a finished task's result.
    fn finish(&mut self, done: Result<Done, tokio::task::JoinError>) {
        match done {
            Ok(Done::Sent(outcome)) => {
                if let Some(q) = self.queues.get_mut(&outcome.webhook_id) {
                    if let Some(row) = q.rows.get_mut(&outcome.event_seq) {
                        row.state = State::Recording(outcome.delivered());
                    }
                }
                self.records.waiting.push(outcome);
            }
            Ok(Done::Recorded(attempts, written)) => {
                self.records.writing = false;
                let retry_soon = now_ms() + 1000;
                for (i, (endpoint, seq, delivered)) in attempts.into_iter().enumerate() {
                    let Some(q) = self.queues.get_mut(&endpoint) else {
                        continue;
                    };
                    match written.as_ref().map(|w| &w[i]) {
                        Some((r, _)) if delivered || r.gave_up => {
                            q.rows.remove(&seq);
                            if q.horizon.is_some() && q.rows.len() <= WINDOW as usize / 2 {
                                self.read = true;
                            }
                        }
                        // Failed, due again at `next_at`; or not written: the
                        // row is pending still, and tried again soon.
                        recorded => {
                            if let Some(row) = q.rows.get_mut(&seq) {
                                row.state = State::Idle;
                                row.next_at =
                                    recorded.and_then(|(_, at)| *at).unwrap_or(retry_soon);
                            }
                        }
                    }
                }
            }
            Err(e) => {
                // A task that panicked (an attempt, or a batch of records)
                // leaves rows in flight: they are read from the tables again.
                tracing::error!(error = %e, "a webhook dispatch task failed");
                for q in self.queues.values_mut() {
                    q.rows.retain(|_, r| r.state == State::Idle);
                }
                self.records.writing = false;
                self.read = true;
            }
        }
    }

    /// Writes the answered attempts, one batch at a time.
    fn record(&mut self) {
        if self.records.writing || self.records.waiting.is_empty() {
            return;
        }
        self.records.writing = true;
        let batch = std::mem::take(&mut self.records.waiting);
        let relay = self.relay.clone();
        self.tasks.spawn(async move {
            let attempts = batch
                .iter()
                .map(|o| (o.webhook_id.clone(), o.event_seq, o.delivered()))
                .collect();
            let written = relay.record_webhook_attempts(batch).await;
            Done::Recorded(attempts, written)
        });
    }
}

/// Sends one event; its outcome is recorded by the dispatcher.
async fn attempt(
    relay: Arc<Relay>,
    client: reqwest::Client,
    endpoint: WebhookId,
    request: Request,
) -> Done {
    let seq = request.event_seq;
    let at = now_ms();
    let started = Instant::now();
    let event = match request.event.clone() {
        Some(event) => Ok(Some(event)),
        None => webhooks::event(relay.store.reader(), seq)
            .await
            .map(|e| e.map(|(id, body)| (id, Arc::from(body)))),
    };
    let (status, error, response) = match event {
        Ok(Some((id, body))) => post(&relay, &client, &request, &id, &body, at / 1000).await,
        Ok(None) => (None, Some("the event was purged".to_owned()), None),
        Err(e) => (None, Some(format!("reading the event failed: {e}")), None),
    };
    Done::Sent(Outcome {
        webhook_id: endpoint,
        event_seq: seq,
        at,
        status,
        latency_ms: started.elapsed().as_millis() as i64,
        error,
        response,
    })
}

async fn post(
    relay: &Relay,
    client: &reqwest::Client,
    request: &Request,
    id: &EventId,
    body: &str,
    timestamp: i64,
) -> (Option<u16>, Option<String>, Option<String>) {
    let url = match relay.webhooks.policy.check_form(&request.url) {
        Ok(url) => url,
        Err(e) => return (None, Some(e), None),
    };
    if let Some(refused) = relay.webhooks.policy.refuse_literal(&url) {
        return (None, Some(refused), None);
    }
    let id = id.as_str();
    let signature = sign::header(
        request.keys.iter().map(Vec::as_slice),
        id,
        timestamp,
        body.as_bytes(),
    );
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_owned())
        .send()
        .await;
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => return (None, Some(describe(&e, relay)), None),
    };
    let status = response.status().as_u16();
    let mut head = Vec::new();
    // Only the start of the answer is read; the rest is dropped unread.
    while head.len() < READ_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    head.truncate(KEEP_BYTES);
    let text = String::from_utf8_lossy(&head).into_owned();
    let error = (!(200..300).contains(&status)).then(|| format!("HTTP {status}"));
    (Some(status), error, (!text.is_empty()).then_some(text))
}

/// A transport error in words: the kind and its causes, never the URL (its
/// query string may hold a receiver's token).
fn describe(e: &reqwest::Error, relay: &Relay) -> String {
    if e.is_timeout() {
        return format!(
            "no answer within {} s ([webhooks] timeout_secs)",
            relay.webhooks.rules.timeout.as_secs()
        );
    }
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    let mut text = if parts.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {}", parts.join(": "))
    };
    if text.len() > 300 {
        let mut cut = 300;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}
