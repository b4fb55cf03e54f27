//! The dispatcher: one task that sends due webhook events and records each
//! attempt.
//!
//! It scans the enabled endpoints when woken (a commit queued events), when
//! an attempt finishes, and at least once a second (retries come due; the
//! CLI may have changed an endpoint). Per endpoint it walks the pending rows
//! oldest first and starts an attempt for each due row whose conversation
//! has no earlier row pending, up to `max_in_flight` requests: so a
//! conversation's events arrive in order, different conversations and
//! endpoints in parallel. An answered attempt frees its slot at once; its
//! record is written next (the row is not sent again meanwhile, and a
//! delivered one no longer holds up its conversation). Everything it knows
//! is in the database, so a restart resumes where it stopped (an attempt cut
//! short, or answered but not yet recorded, is made again with the same
//! `webhook-id`). Of relays sharing a PostgreSQL database, only the leader
//! dispatches (`crate::cluster`); a new leader resumes the same way.

use super::sign;
use super::target::GuardedResolver;
use crate::ids::{EventId, WebhookId};
use crate::relay::Relay;
use crate::shutdown::Shutdown;
use crate::store::now_ms;
use crate::store::webhooks::{self, Outcome};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Pending rows read per endpoint and scan.
const WINDOW: i64 = 64;
/// How long the list of endpoints (and their keys) is reused between scans
/// when nothing changed it through this process.
const ENDPOINTS_TTL: Duration = Duration::from_secs(1);
/// The longest wait between scans.
const RESCAN: Duration = Duration::from_secs(1);
/// Bytes of a receiver's answer that are read (and at most 256 kept).
const READ_BYTES: usize = 1024;
const KEEP_BYTES: usize = 256;

/// What an attempt sends.
struct Request {
    url: String,
    keys: Arc<Vec<Vec<u8>>>,
    event_seq: i64,
}

/// An endpoint's rows the dispatcher is busy with.
#[derive(Default)]
struct Busy {
    /// Requests on their way.
    sending: HashSet<i64>,
    /// Answered, record not yet committed: whether it was delivered.
    recording: HashMap<i64, bool>,
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

enum Done {
    Sent(Outcome),
    /// The endpoint, the event, and whether it was delivered.
    Recorded(WebhookId, i64, bool),
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
    let mut busy: HashMap<WebhookId, Busy> = HashMap::new();
    let mut tasks: JoinSet<Done> = JoinSet::new();
    let mut targets = Targets {
        list: Vec::new(),
        read_at: None,
        warned: HashSet::new(),
    };
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let mut rescan = true;
    let mut deadline = tokio::time::Instant::now();
    loop {
        let woken = wh.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        // Of relays sharing a database, only the leader sends.
        if rescan && !relay.leads() {
            deadline = tokio::time::Instant::now() + RESCAN;
        } else if rescan {
            let next_due = match scan(&relay, &client, &mut busy, &mut tasks, &mut targets).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook scan failed");
                    None
                }
            };
            let wait = next_due
                .map(|at| Duration::from_millis((at - now_ms()).max(0) as u64))
                .unwrap_or(RESCAN)
                .min(RESCAN);
            deadline = tokio::time::Instant::now() + wait;
        }
        rescan = false;
        tokio::select! {
            _ = &mut stop => break,
            _ = &mut woken => rescan = true,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                rescan |= finish(&relay, &mut busy, &mut tasks, done);
            }
            _ = tokio::time::sleep_until(deadline) => rescan = true,
        }
        while let Some(done) = tasks.try_join_next() {
            rescan |= finish(&relay, &mut busy, &mut tasks, done);
        }
    }
    // Attempts cut short stay pending and are made again after the restart.
    tasks.shutdown().await;
}

/// Takes a finished task's result; says whether a scan may now start
/// something (a slot freed, or a failed row's retry time is now known).
fn finish(
    relay: &Arc<Relay>,
    busy: &mut HashMap<WebhookId, Busy>,
    tasks: &mut JoinSet<Done>,
    done: Result<Done, tokio::task::JoinError>,
) -> bool {
    match done {
        Ok(Done::Sent(outcome)) => {
            let b = busy.entry(outcome.webhook_id.clone()).or_default();
            b.sending.remove(&outcome.event_seq);
            b.recording.insert(outcome.event_seq, outcome.delivered());
            let relay = relay.clone();
            tasks.spawn(async move {
                let (endpoint, seq) = (outcome.webhook_id.clone(), outcome.event_seq);
                let delivered = outcome.delivered();
                relay.record_webhook_attempt(outcome).await;
                Done::Recorded(endpoint, seq, delivered)
            });
            true
        }
        Ok(Done::Recorded(endpoint, seq, delivered)) => {
            if let Some(b) = busy.get_mut(&endpoint) {
                b.recording.remove(&seq);
            }
            !delivered
        }
        Err(e) => {
            tracing::error!(error = %e, "a webhook attempt task failed");
            true
        }
    }
}

/// Starts the attempts that are due; returns when the next retry is due.
async fn scan(
    relay: &Arc<Relay>,
    client: &reqwest::Client,
    busy: &mut HashMap<WebhookId, Busy>,
    tasks: &mut JoinSet<Done>,
    targets: &mut Targets,
) -> Result<Option<i64>, crate::error::Error> {
    let max = relay.webhooks.rules.max_in_flight;
    let reader = relay.store.reader();
    let now = now_ms();
    let mut next_due: Option<i64> = None;
    for endpoint in targets.get(relay).await? {
        let b = busy.entry(endpoint.id.clone()).or_default();
        if b.sending.len() >= max {
            continue;
        }
        let mut seen = HashSet::new();
        for row in webhooks::pending(reader, &endpoint.id, WINDOW).await? {
            // Delivered, being recorded: done, and no longer in the way.
            if b.recording.get(&row.event_seq) == Some(&true) {
                continue;
            }
            // Only the oldest undelivered row of a conversation may be sent.
            if !seen.insert(row.conversation_id.clone())
                || b.sending.contains(&row.event_seq)
                || b.recording.contains_key(&row.event_seq)
            {
                continue;
            }
            if row.next_at > now {
                next_due = Some(next_due.map_or(row.next_at, |n| n.min(row.next_at)));
                continue;
            }
            if b.sending.len() >= max {
                break;
            }
            b.sending.insert(row.event_seq);
            let request = Request {
                url: endpoint.url.clone(),
                keys: endpoint.keys.clone(),
                event_seq: row.event_seq,
            };
            tasks.spawn(attempt(
                relay.clone(),
                client.clone(),
                endpoint.id.clone(),
                request,
            ));
        }
    }
    Ok(next_due)
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
    let (status, error, response) = match webhooks::event(relay.store.reader(), seq).await {
        Ok(Some((id, body))) => post(&relay, &client, &request, &id, body, at / 1000).await,
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
    body: String,
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
        .body(body)
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
