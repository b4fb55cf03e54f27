//! Cross-relay wake-ups: the highest message position any relay has
//! stamped, as a `watch` value each relay's long polls and streams can wait
//! on.
//!
//! Every stamp notifies [`cursor::CHANNEL`] with the highest position it
//! gave (`cursor::stamp`), so a message stored through relay A wakes a
//! waiter on relay B within a round trip. Notifications are not durable: one
//! sent while the listening connection is down is lost. So the listener
//! reads the highest position itself whenever it (re)subscribes, after its
//! LISTEN, so that a stamp is either in that read or notified afterwards;
//! and once per `every` in any case. A lost notification only delays a
//! waiter until then.

use super::{cursor, error};
use crate::store::StoreResult;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::watch;

/// Starts listening on `pool`'s database. The receiver's value is the
/// highest stamped position seen, never lower than the database's when the
/// listener started. The listener holds one of the pool's connections; its
/// task ends when every receiver is dropped.
pub async fn listen(pool: PgPool, every: Duration) -> StoreResult<watch::Receiver<i64>> {
    let listener = subscribe(&pool).await.map_err(error)?;
    // After the LISTEN: what was stamped before it is in this read.
    let (tx, rx) = watch::channel(highest(&pool).await?);
    tokio::spawn(run(pool, tx, every, listener));
    Ok(rx)
}

/// The highest position given so far.
pub async fn highest(pool: &PgPool) -> StoreResult<i64> {
    sqlx::query_scalar("SELECT coalesce(max(pos), 0) FROM messages")
        .fetch_one(pool)
        .await
        .map_err(error)
}

fn raise(tx: &watch::Sender<i64>, pos: i64) {
    tx.send_if_modified(|seen| {
        let higher = pos > *seen;
        if higher {
            *seen = pos;
        }
        higher
    });
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(cursor::CHANNEL).await?;
    Ok(listener)
}

async fn run(pool: PgPool, tx: watch::Sender<i64>, every: Duration, listener: PgListener) {
    let mut listener = Some(listener);
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if listener.is_none() {
            match subscribe(&pool).await {
                Ok(l) => listener = Some(l),
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot listen for other relays' messages; checking every {every:?} instead"
                ),
            }
            // After the LISTEN: what was stamped before it is in this read.
            match highest(&pool).await {
                Ok(pos) => raise(&tx, pos),
                Err(e) => tracing::warn!(error = %e, "cannot read the highest message position"),
            }
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.try_recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tx.closed() => return,
            got = notified => match got {
                Ok(Some(n)) => match n.payload().parse::<i64>() {
                    Ok(pos) => raise(&tx, pos),
                    Err(_) => tracing::warn!(payload = n.payload(), "unexpected notification on {}", cursor::CHANNEL),
                },
                // The connection was lost: subscribe again, then read.
                Ok(None) => listener = None,
                Err(e) => {
                    tracing::warn!(error = %e, "listening for other relays' messages failed; subscribing again");
                    listener = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            _ = check.tick() => match highest(&pool).await {
                Ok(pos) => raise(&tx, pos),
                Err(e) => tracing::warn!(error = %e, "cannot read the highest message position"),
            },
        }
    }
}
