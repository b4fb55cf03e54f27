//! The dispatcher: one task that sends due webhook events and records each
//! attempt.
//!
//! It scans the enabled endpoints when woken (a commit queued events), when
//! an attempt finishes, and at least once a second (retries come due; the
//! CLI may have changed an endpoint). Per endpoint it walks the pending rows
//! oldest first and starts an attempt for each due row whose conversation
//! has no earlier row pending, up to `max_in_flight`: so a conversation's
//! events arrive in order, different conversations and endpoints in
//! parallel. Everything it knows is in the database, so a restart resumes
//! where it stopped (an attempt cut short is made again, with the same
//! `webhook-id`).

use super::sign;
use super::target::GuardedResolver;
use crate::ids::WebhookId;
use crate::relay::Relay;
use crate::shutdown::Shutdown;
use crate::store::now_ms;
use crate::store::webhooks::{self, Outcome, Pending};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Pending rows read per endpoint and scan.
const WINDOW: i64 = 256;
/// The longest wait between scans.
const RESCAN: Duration = Duration::from_secs(1);
/// Bytes of a receiver's answer that are read (and at most 256 kept).
const READ_BYTES: usize = 1024;
const KEEP_BYTES: usize = 256;

/// What an attempt sends.
struct Request {
    url: String,
    keys: Arc<Vec<Vec<u8>>>,
    row: Pending,
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
    let mut in_flight: HashMap<WebhookId, HashSet<i64>> = HashMap::new();
    let mut attempts: JoinSet<(WebhookId, i64)> = JoinSet::new();
    let mut warned: HashSet<WebhookId> = HashSet::new();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let woken = wh.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let next_due = match scan(&relay, &client, &mut in_flight, &mut attempts, &mut warned).await
        {
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
        tokio::select! {
            _ = &mut stop => break,
            _ = &mut woken => {}
            Some(done) = attempts.join_next(), if !attempts.is_empty() => finish(&mut in_flight, done),
            _ = tokio::time::sleep(wait) => {}
        }
        while let Some(done) = attempts.try_join_next() {
            finish(&mut in_flight, done);
        }
    }
    // Attempts cut short stay pending and are made again after the restart.
    attempts.shutdown().await;
}

fn finish(
    in_flight: &mut HashMap<WebhookId, HashSet<i64>>,
    done: Result<(WebhookId, i64), tokio::task::JoinError>,
) {
    if let Ok((endpoint, seq)) = done {
        if let Some(set) = in_flight.get_mut(&endpoint) {
            set.remove(&seq);
        }
    }
}

/// Starts the attempts that are due; returns when the next retry is due.
async fn scan(
    relay: &Arc<Relay>,
    client: &reqwest::Client,
    in_flight: &mut HashMap<WebhookId, HashSet<i64>>,
    attempts: &mut JoinSet<(WebhookId, i64)>,
    warned: &mut HashSet<WebhookId>,
) -> Result<Option<i64>, crate::error::Error> {
    let max = relay.webhooks.rules.max_in_flight;
    let reader = relay.store.reader();
    let now = now_ms();
    let mut next_due: Option<i64> = None;
    for endpoint in webhooks::enabled(reader).await? {
        let busy = in_flight.entry(endpoint.id.clone()).or_default();
        if busy.len() >= max {
            continue;
        }
        let keys = match relay.webhook_keys(&endpoint, now) {
            Ok(keys) => {
                warned.remove(&endpoint.id);
                Arc::new(keys)
            }
            Err(e) => {
                if warned.insert(endpoint.id.clone()) {
                    tracing::error!(webhook = %endpoint.id, error = %e, "cannot sign for this endpoint; its events wait");
                }
                continue;
            }
        };
        let mut seen = HashSet::new();
        for row in webhooks::pending(reader, &endpoint.id, WINDOW).await? {
            // Only the oldest pending row of a conversation may be sent.
            if !seen.insert(row.conversation_id.clone()) || busy.contains(&row.event_seq) {
                continue;
            }
            if row.next_at > now {
                next_due = Some(next_due.map_or(row.next_at, |n| n.min(row.next_at)));
                continue;
            }
            if busy.len() >= max {
                break;
            }
            busy.insert(row.event_seq);
            let request = Request {
                url: endpoint.url.clone(),
                keys: keys.clone(),
                row,
            };
            attempts.spawn(attempt(
                relay.clone(),
                client.clone(),
                endpoint.id.clone(),
                request,
            ));
        }
    }
    Ok(next_due)
}

/// Sends one event and records how it went.
async fn attempt(
    relay: Arc<Relay>,
    client: reqwest::Client,
    endpoint: WebhookId,
    request: Request,
) -> (WebhookId, i64) {
    let seq = request.row.event_seq;
    let at = now_ms();
    let started = Instant::now();
    let (status, error, response) = post(&relay, &client, &request, at / 1000).await;
    let outcome = Outcome {
        webhook_id: endpoint.clone(),
        event_seq: seq,
        at,
        status,
        latency_ms: started.elapsed().as_millis() as i64,
        error,
        response,
    };
    relay.record_webhook_attempt(outcome).await;
    (endpoint, seq)
}

async fn post(
    relay: &Relay,
    client: &reqwest::Client,
    request: &Request,
    timestamp: i64,
) -> (Option<u16>, Option<String>, Option<String>) {
    let url = match relay.webhooks.policy.check_form(&request.url) {
        Ok(url) => url,
        Err(e) => return (None, Some(e), None),
    };
    if let Some(refused) = relay.webhooks.policy.refuse_literal(&url) {
        return (None, Some(refused), None);
    }
    let id = request.row.event_id.as_str();
    let body = request.row.payload.as_bytes();
    let signature = sign::header(request.keys.iter().map(Vec::as_slice), id, timestamp, body);
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(request.row.payload.clone())
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
