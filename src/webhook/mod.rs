//! Webhooks: agent replies and lifecycle events pushed to apps' HTTP
//! endpoints, signed per Standard Webhooks, delivered at least once from
//! durable state.
//!
//! - An event is recorded in the same transaction as what it reports (the
//!   reply, the expiry, the dead letter), with one queue row per subscribed
//!   endpoint (`store::webhooks`);
//! - [`dispatch`] sends due rows, one at a time per conversation and up to
//!   `max_in_flight` per endpoint, and records each attempt; failures are
//!   retried with exponential backoff and jitter until the retry horizon;
//! - [`sign`] computes the signature headers, [`vault`] keeps endpoint
//!   secrets encrypted at rest, [`target`] keeps endpoints off private
//!   networks.

pub mod dispatch;
pub mod sign;
pub mod target;
pub mod vault;

use crate::config::Config;
use crate::store::webhooks::Queued;
use std::sync::Arc;
use std::time::Duration;

/// The event types an endpoint may subscribe to.
pub const EVENT_TYPES: [&str; 3] = ["message", "conversation.expired", "delivery.dead"];

/// Timing rules, from `[webhooks]`.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub retry_initial_ms: i64,
    pub retry_max_ms: i64,
    pub horizon_ms: i64,
    pub disable_after: i64,
    pub grace_ms: i64,
}

/// What the relay needs for webhooks: the rules, the secret vault, the
/// target policy, and the dispatcher's wake-up.
pub struct Webhooks {
    pub rules: Rules,
    pub vault: vault::Vault,
    pub policy: Arc<target::Policy>,
    /// Notified when the queue must be read from the tables: events queued
    /// by another relay or process, replays, endpoint changes.
    pub wake: tokio::sync::Notify,
    /// Events this relay's commits queued, handed to the dispatcher.
    fed: std::sync::Mutex<Fed>,
    /// Notified when `fed` got events.
    pub fed_wake: tokio::sync::Notify,
    /// Set when this process changed an endpoint: the dispatcher rereads them.
    pub changed: std::sync::atomic::AtomicBool,
}

impl Webhooks {
    pub fn from_config(c: &Config) -> Result<Webhooks, String> {
        let w = &c.webhooks;
        let policy = target::Policy::new(w.allow_private, &w.allowed_networks)
            .map_err(|e| format!("webhooks.allowed_networks: {e}"))?;
        Ok(Webhooks {
            rules: Rules {
                timeout: Duration::from_secs(w.timeout_secs),
                max_in_flight: w.max_in_flight,
                retry_initial_ms: w.retry_initial_ms as i64,
                retry_max_ms: (w.retry_max_secs * 1000) as i64,
                horizon_ms: (w.retry_horizon_secs * 1000) as i64,
                disable_after: i64::from(w.disable_after_failures),
                grace_ms: (w.rotation_grace_secs * 1000) as i64,
            },
            vault: vault::Vault::new(c.webhook_key_file()),
            policy: Arc::new(policy),
            wake: tokio::sync::Notify::new(),
            fed: std::sync::Mutex::new(Fed::default()),
            fed_wake: tokio::sync::Notify::new(),
            changed: std::sync::atomic::AtomicBool::new(true),
        })
    }
}

/// Events handed over since the dispatcher last took them.
#[derive(Default)]
pub struct Fed {
    pub events: Vec<Queued>,
    /// Events were dropped (the dispatcher fell behind): it reads the
    /// tables before sending what it was handed after them.
    pub lost: bool,
}

/// The most events held for the dispatcher; past it they are read from the
/// tables instead.
const FED_MAX: usize = 4096;

impl Webhooks {
    /// Hands events a commit queued to the dispatcher.
    pub fn feed(&self, queued: Vec<Queued>) {
        let mut fed = self.fed.lock().unwrap_or_else(|p| p.into_inner());
        if fed.events.len() + queued.len() > FED_MAX {
            fed.lost = true;
        } else {
            fed.events.extend(queued);
        }
        drop(fed);
        self.fed_wake.notify_one();
    }

    /// Takes what was handed over.
    pub fn take_fed(&self) -> Fed {
        std::mem::take(&mut *self.fed.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// An endpoint changed (created, updated, deleted, rotated): the
    /// dispatcher rereads them before its next scan.
    pub fn changed(&self) {
        self.changed
            .store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_one();
    }
}

impl Rules {
    /// The wait before the attempt after the `attempts`-th failure: the
    /// initial delay doubled per failure, capped, plus `jitter` (0 to 1) of
    /// up to a fifth of it.
    pub fn backoff_ms(&self, attempts: i64, jitter: f64) -> i64 {
        let doublings = attempts.clamp(1, 40) - 1;
        let base = self
            .retry_initial_ms
            .saturating_mul(1i64 << doublings)
            .min(self.retry_max_ms);
        base + (base as f64 * 0.2 * jitter.clamp(0.0, 1.0)) as i64
    }
}

/// The body of every webhook: `{"type", "timestamp", "data"}`, serialized
/// straight from `data` (no JSON tree built first).
pub fn envelope(kind: &str, timestamp: i64, data: impl serde::Serialize) -> String {
    #[derive(serde::Serialize)]
    struct Envelope<'a, D> {
        #[serde(rename = "type")]
        kind: &'a str,
        timestamp: i64,
        data: D,
    }
    serde_json::to_string(&Envelope {
        kind,
        timestamp,
        data,
    })
    .unwrap_or_default()
}

/// The events list of an endpoint as stored: the known types, in a fixed
/// order, space-separated. None names the unknown one.
pub fn normalize_events(events: &[String]) -> Result<String, String> {
    if events.is_empty() {
        return Err(format!(
            "`events` must name at least one of {}",
            EVENT_TYPES.join(", ")
        ));
    }
    if let Some(bad) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
        return Err(format!(
            "`{bad}` is not an event type; the types are {}",
            EVENT_TYPES.join(", ")
        ));
    }
    Ok(EVENT_TYPES
        .iter()
        .filter(|t| events.iter().any(|e| e == *t))
        .copied()
        .collect::<Vec<_>>()
        .join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let r = Rules {
            timeout: Duration::from_secs(1),
            max_in_flight: 1,
            retry_initial_ms: 100,
            retry_max_ms: 1000,
            horizon_ms: 0,
            disable_after: 0,
            grace_ms: 0,
        };
        assert_eq!(r.backoff_ms(1, 0.0), 100);
        assert_eq!(r.backoff_ms(2, 0.0), 200);
        assert_eq!(r.backoff_ms(4, 0.0), 800);
        assert_eq!(r.backoff_ms(5, 0.0), 1000);
        assert_eq!(r.backoff_ms(500, 0.0), 1000);
        assert_eq!(r.backoff_ms(1, 1.0), 120);
    }

    #[test]
    fn events_are_known_types_in_a_fixed_order() {
        let e = |v: &[&str]| normalize_events(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            e(&["delivery.dead", "message"]).unwrap(),
            "message delivery.dead"
        );
        assert!(e(&[]).is_err());
        assert!(e(&["message", "nope"]).unwrap_err().contains("nope"));
    }
}
