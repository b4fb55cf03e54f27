//! Prometheus metrics: counters and histograms updated where things happen,
//! gauges (queue depth, connected agents, ...) computed when scraped.
//! `GET /metrics` (admin token) or `[metrics] bind` (a separate, unauthenticated
//! listener, for a loopback address) serve them in the text format.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::OnceLock;

pub struct Metrics {
    pub registry: Registry,
    /// Messages stored, by direction (inbound, outbound).
    pub messages: IntCounterVec,
    /// Deliveries leased to agents (every attempt).
    pub claimed: IntCounter,
    /// Deliveries leased again after an earlier attempt (redeliveries).
    pub redelivered: IntCounter,
    /// Deliveries acked (explicitly or by a reply).
    pub acked: IntCounter,
    /// Deliveries that ran out of attempts.
    pub dead: IntCounter,
    /// Requests by route, method and status, in seconds.
    pub http: HistogramVec,
    /// Write transactions: commit time (seconds) and operations per commit.
    pub commit_seconds: HistogramVec,
    pub log_sync_seconds: Histogram,
    pub batch_size: HistogramVec,
    /// Rows removed by the retention purge, by kind.
    pub purged: IntCounterVec,
    /// Scrape-time gauges.
    pub queue_depth: IntGaugeVec,
    pub oldest_pending_seconds: IntGaugeVec,
    pub connected_agents: IntGauge,
    pub app_streams: IntGauge,
    pub active_conversations: IntGauge,
    pub leader: IntGauge,
    /// Size of the database's write-ahead log, bytes.
    pub wal_bytes: IntGauge,
    /// Checkpoints that reset the write-ahead log, by outcome (done, busy).
    pub wal_truncations: IntCounterVec,
    /// Webhook attempts by endpoint and result (delivered, failed).
    pub webhook_attempts: IntCounterVec,
    /// Webhook attempt durations by endpoint, seconds.
    pub webhook_seconds: HistogramVec,
    /// Scrape-time: events waiting per endpoint, and the age of the oldest.
    pub webhook_backlog: IntGaugeVec,
    pub webhook_lag_seconds: IntGaugeVec,
    /// Uploads committed, by whether their bytes were new (stored) or
    /// already held (shared).
    pub attachments: IntCounterVec,
    /// Bytes received by committed uploads.
    pub attachment_bytes: IntCounter,
    /// Messages stored per minute over the last hour (the console's chart).
    pub per_minute: Minutes,
}

/// Counts per wall-clock minute, the last [`Minutes::SPAN`] of them.
pub struct Minutes {
    /// (minute since the epoch, count), at index minute % SPAN.
    slots: std::sync::Mutex<[(i64, u64); Minutes::SPAN]>,
}

impl Default for Minutes {
    fn default() -> Self {
        Minutes {
            slots: std::sync::Mutex::new([(i64::MIN, 0); Minutes::SPAN]),
        }
    }
}

impl Minutes {
    pub const SPAN: usize = 60;

    pub fn add(&self, n: u64) {
        self.add_at(crate::store::now_ms() / 60_000, n);
    }

    fn add_at(&self, minute: i64, n: u64) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut slots[minute.rem_euclid(Self::SPAN as i64) as usize];
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        slot.1 += n;
    }

    /// The counts of the last hour, oldest first; the last one is the
    /// minute under way.
    pub fn last_hour(&self) -> Vec<u64> {
        self.window(crate::store::now_ms() / 60_000)
    }

    fn window(&self, now: i64) -> Vec<u64> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        (now - Self::SPAN as i64 + 1..=now)
            .map(|minute| {
                let slot = slots[minute.rem_euclid(Self::SPAN as i64) as usize];
                if slot.0 == minute {
                    slot.1
                } else {
                    0
                }
            })
            .collect()
    }
}

/// Counts a message stored (`direction`: inbound or outbound).
pub fn message_stored(direction: &str) {
    let m = get();
    m.messages.with_label_values(&[direction]).inc();
    m.per_minute.add(1);
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let m = Metrics {
        messages: IntCounterVec::new(
            Opts::new("clawrelay_messages_total", "Messages stored, by direction"),
            &["direction"],
        )?,
        claimed: IntCounter::new(
            "clawrelay_deliveries_claimed_total",
            "Deliveries leased to agents",
        )?,
        redelivered: IntCounter::new(
            "clawrelay_deliveries_redelivered_total",
            "Deliveries leased again after an earlier attempt",
        )?,
        acked: IntCounter::new("clawrelay_deliveries_acked_total", "Deliveries acked")?,
        dead: IntCounter::new(
            "clawrelay_deliveries_dead_total",
            "Deliveries that ran out of attempts",
        )?,
        http: HistogramVec::new(
            HistogramOpts::new(
                "clawrelay_http_request_duration_seconds",
                "HTTP requests by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
                60.0,
            ]),
            &["route", "method", "status"],
        )?,
        commit_seconds: HistogramVec::new(
            HistogramOpts::new(
                "clawrelay_db_commit_seconds",
                "Time to commit a write transaction",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
            ]),
            &["durability"],
        )?,
        log_sync_seconds: Histogram::with_opts(
            HistogramOpts::new(
                "clawrelay_db_log_sync_seconds",
                "Time to sync SQLite's write-ahead log to disk (fdatasync), which durable commits wait for",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
            ]),
        )?,
        batch_size: HistogramVec::new(
            HistogramOpts::new(
                "clawrelay_db_batch_operations",
                "Operations sharing one commit",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            &["durability"],
        )?,
        purged: IntCounterVec::new(
            Opts::new(
                "clawrelay_purged_total",
                "Rows removed by the retention purge",
            ),
            &["kind"],
        )?,
        queue_depth: IntGaugeVec::new(
            Opts::new(
                "clawrelay_queue_depth",
                "Undelivered (pending or leased) messages per client",
            ),
            &["client"],
        )?,
        oldest_pending_seconds: IntGaugeVec::new(
            Opts::new(
                "clawrelay_oldest_pending_seconds",
                "Age of the oldest due, unclaimed message per client",
            ),
            &["client"],
        )?,
        connected_agents: IntGauge::new(
            "clawrelay_connected_agents",
            "Clients counting as connected",
        )?,
        app_streams: IntGauge::new(
            "clawrelay_app_streams",
            "Open app streams (WebSocket and SSE)",
        )?,
        active_conversations: IntGauge::new(
            "clawrelay_active_conversations",
            "Conversations not expired",
        )?,
        leader: IntGauge::new(
            "clawrelay_leader",
            "1 while this relay runs the background tasks (always on SQLite; on PostgreSQL the relay holding the lead)",
        )?,
        wal_bytes: IntGauge::new(
            "clawrelay_wal_bytes",
            "Size of the database's write-ahead log (-wal file), bytes",
        )?,
        wal_truncations: IntCounterVec::new(
            Opts::new(
                "clawrelay_wal_truncations_total",
                "Checkpoints that reset the write-ahead log past its limit, by outcome",
            ),
            &["outcome"],
        )?,
        webhook_attempts: IntCounterVec::new(
            Opts::new(
                "clawrelay_webhook_attempts_total",
                "Webhook delivery attempts, by endpoint and result",
            ),
            &["webhook", "result"],
        )?,
        webhook_seconds: HistogramVec::new(
            HistogramOpts::new(
                "clawrelay_webhook_attempt_seconds",
                "Time a webhook receiver took to answer",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["webhook"],
        )?,
        webhook_backlog: IntGaugeVec::new(
            Opts::new(
                "clawrelay_webhook_backlog",
                "Webhook events waiting for delivery, per endpoint",
            ),
            &["webhook"],
        )?,
        webhook_lag_seconds: IntGaugeVec::new(
            Opts::new(
                "clawrelay_webhook_lag_seconds",
                "Age of the oldest webhook event waiting for delivery, per endpoint",
            ),
            &["webhook"],
        )?,
        attachments: IntCounterVec::new(
            Opts::new(
                "clawrelay_attachments_total",
                "Uploads committed, by storage",
            ),
            &["storage"],
        )?,
        attachment_bytes: IntCounter::new(
            "clawrelay_attachment_bytes_total",
            "Bytes received by committed uploads",
        )?,
        per_minute: Minutes::default(),
        registry,
    };
    let r = &m.registry;
    r.register(Box::new(m.messages.clone()))?;
    r.register(Box::new(m.claimed.clone()))?;
    r.register(Box::new(m.redelivered.clone()))?;
    r.register(Box::new(m.acked.clone()))?;
    r.register(Box::new(m.dead.clone()))?;
    r.register(Box::new(m.http.clone()))?;
    r.register(Box::new(m.commit_seconds.clone()))?;
    r.register(Box::new(m.log_sync_seconds.clone()))?;
    r.register(Box::new(m.batch_size.clone()))?;
    r.register(Box::new(m.purged.clone()))?;
    r.register(Box::new(m.queue_depth.clone()))?;
    r.register(Box::new(m.oldest_pending_seconds.clone()))?;
    r.register(Box::new(m.connected_agents.clone()))?;
    r.register(Box::new(m.app_streams.clone()))?;
    r.register(Box::new(m.active_conversations.clone()))?;
    r.register(Box::new(m.leader.clone()))?;
    r.register(Box::new(m.wal_bytes.clone()))?;
    r.register(Box::new(m.wal_truncations.clone()))?;
    r.register(Box::new(m.webhook_attempts.clone()))?;
    r.register(Box::new(m.webhook_seconds.clone()))?;
    r.register(Box::new(m.webhook_backlog.clone()))?;
    r.register(Box::new(m.webhook_lag_seconds.clone()))?;
    r.register(Box::new(m.attachments.clone()))?;
    r.register(Box::new(m.attachment_bytes.clone()))?;
    Ok(m)
}

/// The process's metrics. Metric names are fixed, so building them cannot fail.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| match build() {
        Ok(m) => m,
        Err(e) => panic!("metric definitions are invalid: {e}"),
    })
}

/// Everything registered, in the Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    if let Err(e) = TextEncoder::new().encode_utf8(&get().registry.gather(), &mut out) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    out
}

/// Counts an app stream for as long as it lives.
pub struct StreamGuard;

impl StreamGuard {
    pub fn new() -> StreamGuard {
        get().app_streams.inc();
        StreamGuard
    }
}

impl Default for StreamGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        get().app_streams.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::Minutes;

    #[test]
    fn minutes_keep_the_last_hour_and_forget_older_ones() {
        let m = Minutes::default();
        m.add_at(1000, 2);
        m.add_at(1000, 1);
        m.add_at(1059, 5);
        let hour = m.window(1059);
        assert_eq!(hour.len(), 60);
        assert_eq!((hour[0], hour[59]), (3, 5));
        assert_eq!(hour[1..59].iter().sum::<u64>(), 0);
        // An hour on, minute 1000's slot is minute 1060's: the old count is gone.
        m.add_at(1060, 7);
        let hour = m.window(1060);
        assert_eq!((hour[58], hour[59]), (5, 7));
        assert_eq!(hour.iter().sum::<u64>(), 12);
        // Minutes with nothing stored read 0, not what the slot held an hour before.
        assert_eq!(m.window(1200).iter().sum::<u64>(), 0);
    }
}
