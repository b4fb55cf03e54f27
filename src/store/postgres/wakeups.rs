//! Cross-relay wake-ups: the highest message position any relay has
//! announced, as a `watch` value, and signals relays send each other (an
//! agent to wake, a live event).
//!
//! A relay that stored messages notifies [`cursor::CHANNEL`] with the
//! highest position and their apps once they committed ([`signal`], with
//! its signals on [`SIGNALS`]), so a message stored through relay A wakes a
//! waiter on relay B within a round trip.
//!
//! Notifications are not durable: one sent while the listening connection
//! is down is lost. So the listener reads the highest position itself
//! whenever it (re)subscribes, after its LISTEN, so that a message is either
//! in that read or notified afterwards, and once per `every` in any case;
//! and it reports [`Heard::Missed`] then, so that whoever listens looks
//! again at everything a lost signal may have been about. A lost
//! notification only delays a waiter until then.

use super::{cursor, error};
use crate::store::StoreResult;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Where relays signal each other; the payload is the sender's business.
pub const SIGNALS: &str = "clawrelay_signals";
/// The largest payload PostgreSQL's NOTIFY takes is just under 8000 bytes.
pub const MAX_SIGNAL_BYTES: usize = 7900;
/// How long a relay that just started looks at everything, and how often.
const STARTING: Duration = Duration::from_secs(3);
const STARTING_CHECK: Duration = Duration::from_millis(250);
/// The longest notice of stored messages that names its apps.
const MAX_NOTICE_APPS: usize = 4000;
/// Signals heard but not yet taken, before the listener reports them missed.
const BACKLOG: usize = 4096;

/// What the listener heard.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// Messages up to position `upto` are readable; `apps` are those whose
    /// messages were stored (None: any app's may be new, as when a
    /// periodic check found the position risen).
    Stored {
        upto: i64,
        apps: Option<Vec<String>>,
        /// The relay that stored them, when the notice says (a periodic
        /// check does not know; a relay of a version before it said none).
        from: Option<String>,
    },
    /// A [`signal`]'s payload.
    Signal(String),
    /// Signals may have been lost (the listening connection was down, or
    /// the receiver fell behind): look again at everything.
    Missed,
}

/// A relay's ears: positions and signals.
pub struct Listening {
    /// The highest notified position seen, never lower than the database's
    /// when the listener started.
    pub positions: watch::Receiver<i64>,
    pub heard: mpsc::Receiver<Heard>,
}

/// Starts listening on `pool`'s database. The listener holds one of the
/// pool's connections; its task ends when the positions' receivers are
/// dropped.
pub async fn listen(pool: PgPool, every: Duration) -> StoreResult<Listening> {
    let listener = subscribe(&pool).await.map_err(error)?;
    // After the LISTEN: what was stored before it is in this read.
    let (tx, positions) = watch::channel(highest(&pool).await?);
    let (heard_tx, heard) = mpsc::channel(BACKLOG);
    tokio::spawn(run(pool, tx, heard_tx, every, listener));
    Ok(Listening { positions, heard })
}

/// Notifies [`SIGNALS`] with each payload (at most [`MAX_SIGNAL_BYTES`]
/// each), then [`cursor::CHANNEL`] of `stored` messages (the highest
/// position and the apps), in one statement: listeners hear them in this
/// order. Identical payloads of one call are heard once.
pub async fn signal(
    pool: &PgPool,
    from: &str,
    payloads: Vec<String>,
    stored: Option<(i64, Vec<String>)>,
) -> StoreResult<()> {
    let mut channels = vec![SIGNALS; payloads.len()];
    let mut payloads = payloads;
    if let Some((top, apps)) = stored {
        channels.push(cursor::CHANNEL);
        payloads.push(notice(top, &apps, from));
    }
    if payloads.is_empty() {
        return Ok(());
    }
    pgsql::wakeups::notify_all(&channels, &payloads)
        .fetch_one(pool)
        .await
        .map_err(error)?;
    Ok(())
}

/// The notification of stored messages: the highest position, the apps
/// and the relay that stored them (`rly_…`), space-separated; or, when the
/// apps would not fit, the position alone (any app's messages may be new).
/// Read by [`parse_notice`]. A relay of a version before the sender was
/// named takes it for an app id that does not parse, and passes over it;
/// so that such a relay still wakes every app for a position alone, that
/// one names no sender (the cluster also learns of writing relays from
/// their signals).
pub fn notice(top: i64, apps: &[String], from: &str) -> String {
    let mut payload = top.to_string();
    for app in apps {
        payload.push(' ');
        payload.push_str(app);
    }
    if payload.len() > MAX_NOTICE_APPS {
        return top.to_string();
    }
    if !apps.is_empty() {
        payload.push(' ');
        payload.push_str(from);
    }
    payload
}

/// The highest position stored so far.
pub async fn highest(pool: &PgPool) -> StoreResult<i64> {
    cursor::highest(pool).await
}

/// Raises the highest position seen; says whether it rose.
fn raise(tx: &watch::Sender<i64>, pos: i64) -> bool {
    tx.send_if_modified(|seen| {
        let higher = pos > *seen;
        if higher {
            *seen = pos;
        }
        higher
    })
}

/// A position read rather than notified: any app's messages may be new.
fn checked(tx: &watch::Sender<i64>, ears: &mut Ears, pos: i64) {
    if raise(tx, pos) {
        ears.hear(Heard::Stored {
            upto: pos,
            apps: None,
            from: None,
        });
    }
}

/// A notice of stored messages (see [`notice`]):
/// `<position>[ <app>...][ <relay>]`.
fn parse_notice(payload: &str) -> Option<Heard> {
    let mut parts = payload.split(' ');
    let upto = parts.next()?.parse::<i64>().ok()?;
    let (relays, apps): (Vec<&str>, Vec<&str>) =
        parts.partition(|p| p.starts_with(crate::ids::RelayId::PREFIX));
    let apps: Vec<String> = apps.into_iter().map(str::to_owned).collect();
    Some(Heard::Stored {
        upto,
        apps: (!apps.is_empty()).then_some(apps),
        from: relays.first().map(|r| (*r).to_owned()),
    })
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([cursor::CHANNEL, SIGNALS]).await?;
    Ok(listener)
}

/// Passes heard signals on; once one could not be, reports [`Heard::Missed`]
/// as soon as there is room again.
struct Ears {
    tx: mpsc::Sender<Heard>,
    missed: bool,
}

impl Ears {
    fn hear(&mut self, heard: Heard) {
        if self.missed {
            self.missed = self.tx.try_send(Heard::Missed).is_err();
        }
        if !self.missed && self.tx.try_send(heard).is_err() {
            self.missed = true;
        }
    }
}

async fn run(
    pool: PgPool,
    tx: watch::Sender<i64>,
    heard: mpsc::Sender<Heard>,
    every: Duration,
    listener: PgListener,
) {
    let mut ears = Ears {
        tx: heard,
        missed: false,
    };
    let mut listener = Some(listener);
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A relay that just started is not yet known to the others, which send
    // nothing while they think they are alone (until their next refresh of
    // who is alive, within a second): it looks at everything often at first.
    let starting_until = tokio::time::Instant::now() + STARTING;
    let mut starting = tokio::time::interval(STARTING_CHECK);
    starting.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if listener.is_none() {
            match subscribe(&pool).await {
                Ok(l) => listener = Some(l),
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot listen for other relays' messages; checking every {every:?} instead"
                ),
            }
            // After the LISTEN: what was stored before it is in this read,
            // and what was signalled before it is looked at again.
            match highest(&pool).await {
                Ok(pos) => checked(&tx, &mut ears, pos),
                Err(e) => tracing::warn!(error = %e, "cannot read the highest message position"),
            }
            ears.hear(Heard::Missed);
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
                Ok(Some(n)) if n.channel() == SIGNALS => ears.hear(Heard::Signal(n.payload().to_owned())),
                Ok(Some(n)) => match parse_notice(n.payload()) {
                    Some(Heard::Stored { upto, apps, from }) => {
                        // Apps are woken even when their notice came in late.
                        raise(&tx, upto);
                        ears.hear(Heard::Stored { upto, apps, from });
                    }
                    _ => tracing::warn!(payload = n.payload(), "unexpected notification on {}", cursor::CHANNEL),
                },
                // The connection was lost: subscribe again, then read.
                Ok(None) => listener = None,
                Err(e) => {
                    tracing::warn!(error = %e, "listening for other relays' messages failed; subscribing again");
                    listener = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            _ = starting.tick(), if tokio::time::Instant::now() < starting_until => {
                match highest(&pool).await {
                    Ok(pos) => checked(&tx, &mut ears, pos),
                    Err(e) => tracing::warn!(error = %e, "cannot read the highest message position"),
                }
                ears.hear(Heard::Missed);
            }
            _ = check.tick() => {
                match highest(&pool).await {
                    Ok(pos) => checked(&tx, &mut ears, pos),
                    Err(e) => tracing::warn!(error = %e, "cannot read the highest message position"),
                }
                if listener.is_none() {
                    ears.hear(Heard::Missed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_names_its_position_apps_and_sender() {
        let apps = vec!["app_1".to_owned(), "app_2".to_owned()];
        assert_eq!(
            parse_notice(&notice(42, &apps, "rly_a")),
            Some(Heard::Stored {
                upto: 42,
                apps: Some(apps),
                from: Some("rly_a".to_owned()),
            })
        );
        // Too many apps to name: the position alone, which a relay of an
        // earlier version reads as "any app".
        let many: Vec<String> = (0..2000).map(|i| format!("app_{i:032}")).collect();
        assert_eq!(notice(7, &many, "rly_b"), "7");
        assert_eq!(
            parse_notice("7"),
            Some(Heard::Stored {
                upto: 7,
                apps: None,
                from: None,
            })
        );
        // A notice of a version before the sender was named.
        assert_eq!(
            parse_notice("9 app_1"),
            Some(Heard::Stored {
                upto: 9,
                apps: Some(vec!["app_1".to_owned()]),
                from: None,
            })
        );
    }
}
