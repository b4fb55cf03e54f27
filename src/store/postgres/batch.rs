//! Group commit on PostgreSQL: requests of one kind that arrive while a
//! batch of them is being written wait, and go together in the next one,
//! as one statement (a function taking arrays, see `engine`) and so one
//! transaction and one flush. A batch is as large as what queued while the
//! last one ran (under load, plus what arrives within [`GATHER`]): one
//! request alone is written at once.
//!
//! A batch that fails is not the failure of every request in it: when
//! PostgreSQL aborted it for a concurrent transaction (a deadlock, a
//! serialization failure) it runs again, up to `RETRIES` times; for any
//! other failure each request runs alone, so only the one at fault fails.

use super::{error, retryable, RETRIES};
use crate::store::{StoreError, StoreResult};
use futures_util::future::BoxFuture;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Requests waiting for a batch before new ones are refused (answered as
/// the storage being unavailable).
const QUEUE: usize = 16_384;
/// A batch of this many requests means load: the next one, if smaller,
/// waits [`GATHER`] for more (measured: three relays on one database, 1282
/// -> 1461 round trips/s, database CPU 1.02 -> 0.87 ms per round trip).
const LOADED: usize = 4;
const GATHER: std::time::Duration = std::time::Duration::from_micros(500);
/// The wait while other relays write to the same database. There the
/// database's cost per statement is what every relay queues on, so larger
/// batches pay for a longer wait (measured, three relays at 4 x 64 on two
/// cores: 0.5 ms 2285/1937 round trips/s at 1.34 statements and 0.59-0.67 ms
/// of database CPU each; 2 ms 3065/2546; 5 ms 2855/2714 at 0.61 statements
/// and 0.29-0.31 ms). One relay alone loses by it (5 ms: 3769 -> 2454), so
/// it waits [`GATHER`], and so does a relay beside idle ones (a standby).
const GATHER_SHARED: std::time::Duration = std::time::Duration::from_millis(5);
/// Another relay heard storing messages within this long counts as writing.
const WROTE_WITHIN_MS: i64 = 1000;

type Waiting<Q, A> = (Q, oneshot::Sender<StoreResult<A>>);

/// Writes a batch: one answer per request, in their order.
pub type Run<Q, A> =
    Arc<dyn Fn(Arc<Vec<Q>>) -> BoxFuture<'static, Result<Vec<A>, sqlx::Error>> + Send + Sync>;

/// The queue of one kind of request, and the tasks ("lanes") that write its
/// batches: each lane takes everything waiting (up to `max`) when it is
/// free, so with two lanes a batch is written while the next one fills.
pub struct Batcher<Q, A> {
    queue: mpsc::Sender<Waiting<Q, A>>,
}

impl<Q: Send + Sync + 'static, A: Send + 'static> Batcher<Q, A> {
    /// `durability` labels its commits in the metrics (`full`, `relaxed`),
    /// as SQLite's writer labels its own; `others_wrote` is when another
    /// relay was last heard storing messages on the database (milliseconds
    /// since the epoch, 0: never; see [`GATHER_SHARED`]).
    pub fn start(
        name: &'static str,
        durability: &'static str,
        lanes: usize,
        max: usize,
        others_wrote: Arc<AtomicI64>,
        run: Run<Q, A>,
    ) -> Batcher<Q, A> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..lanes.max(1) {
            let (rx, run, others_wrote) = (rx.clone(), run.clone(), others_wrote.clone());
            tokio::spawn(async move {
                let mut taken: Vec<Waiting<Q, A>> = Vec::with_capacity(max);
                let mut last = 0usize;
                loop {
                    {
                        // Held while waiting, so the lanes take turns at the
                        // queue; never across a write.
                        let mut rx = rx.lock().await;
                        if rx.recv_many(&mut taken, max).await == 0 {
                            return;
                        }
                        // Under load (the last batch held several), a batch
                        // that starts smaller waits a moment for the
                        // requests on their way: fewer, larger batches
                        // cost the database less per request.
                        if last >= LOADED && taken.len() < last {
                            let wrote = others_wrote.load(Ordering::Relaxed);
                            tokio::time::sleep(gather(wrote, crate::store::now_ms())).await;
                            while taken.len() < max {
                                match rx.try_recv() {
                                    Ok(w) => taken.push(w),
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                    last = taken.len();
                    let (requests, answers): (Vec<Q>, Vec<_>) = taken.drain(..).unzip();
                    write((name, durability), &run, requests, answers).await;
                }
            });
        }
        Batcher { queue }
    }

    /// Queues a request; resolves with its answer once its batch committed.
    pub async fn submit(&self, request: Q) -> StoreResult<A> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .try_send((request, tx))
            .map_err(|_| StoreError::Busy)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

async fn write<Q, A>(
    (name, durability): (&'static str, &'static str),
    run: &Run<Q, A>,
    requests: Vec<Q>,
    answers: Vec<oneshot::Sender<StoreResult<A>>>,
) {
    let m = crate::metrics::get();
    m.batch_size
        .with_label_values(&[durability])
        .observe(requests.len() as f64);
    let requests = Arc::new(requests);
    let mut tries = 0;
    let failed = loop {
        tries += 1;
        let started = std::time::Instant::now();
        match run(requests.clone()).await {
            Ok(done) => {
                m.commit_seconds
                    .with_label_values(&[durability])
                    .observe(started.elapsed().as_secs_f64());
                for (answer, a) in answers.into_iter().zip(done) {
                    let _ = answer.send(Ok(a));
                }
                return;
            }
            Err(e) if retryable(&e) && tries <= RETRIES => {
                tracing::debug!(
                    batch = name,
                    tries,
                    "PostgreSQL aborted a batch; writing it again"
                );
            }
            Err(e) => break e,
        }
    };
    if requests.len() == 1 || retryable(&failed) {
        let e = error(failed);
        for answer in answers {
            let _ = answer.send(Err(e.clone()));
        }
        return;
    }
    // One request may be at fault: each runs alone (retried the same way).
    tracing::debug!(batch = name, error = %failed, "a batch failed; writing its requests one by one");
    let Ok(requests) = Arc::try_unwrap(requests) else {
        for answer in answers {
            let _ = answer.send(Err(StoreError::Closed));
        }
        return;
    };
    for (request, answer) in requests.into_iter().zip(answers) {
        Box::pin(write((name, durability), run, vec![request], vec![answer])).await;
    }
}

/// How long a smaller batch waits for more under load: [`GATHER_SHARED`]
/// while other relays write to the database (one was heard storing messages
/// at `others_wrote`, within [`WROTE_WITHIN_MS`] of `now`), else [`GATHER`].
fn gather(others_wrote: i64, now: i64) -> std::time::Duration {
    if others_wrote > 0 && now - others_wrote < WROTE_WITHIN_MS {
        GATHER_SHARED
    } else {
        GATHER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_wait_longer_only_while_another_relay_writes() {
        let now = 1_000_000;
        // Alone, or beside relays never heard storing (a standby).
        assert_eq!(gather(0, now), GATHER);
        // Another relay stored messages a moment ago, and long ago.
        assert_eq!(gather(now - 10, now), GATHER_SHARED);
        assert_eq!(gather(now - WROTE_WITHIN_MS, now), GATHER);
    }
}
