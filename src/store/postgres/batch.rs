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
/// The wait while other relays are alive on the same database. There the
/// database's cost per statement is what every relay queues on, so larger
/// batches pay for a longer wait (measured, three relays at 4 x 64 on two
/// cores: 0.5 ms 2285/1937 round trips/s at 1.34 statements and 0.59-0.67 ms
/// of database CPU each; 2 ms 3065/2546; 5 ms 2855/2714 at 0.61 statements
/// and 0.29-0.31 ms). One relay alone loses by it (5 ms: 3769 -> 2454), so
/// it waits [`GATHER`].
const GATHER_SHARED: std::time::Duration = std::time::Duration::from_millis(5);

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
    /// as SQLite's writer labels its own; `others` is how many other relays
    /// the cluster sees alive on the database (see [`GATHER_SHARED`]; an
    /// idle standby relay counts too).
    pub fn start(
        name: &'static str,
        durability: &'static str,
        lanes: usize,
        max: usize,
        others: Arc<AtomicI64>,
        run: Run<Q, A>,
    ) -> Batcher<Q, A> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..lanes.max(1) {
            let (rx, run, others) = (rx.clone(), run.clone(), others.clone());
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
                            tokio::time::sleep(gather(others.load(Ordering::Relaxed))).await;
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

/// How long a smaller batch waits for more under load: [`GATHER`] while this
/// relay is alone on its database, [`GATHER_SHARED`] while the cluster sees
/// other relays alive on it.
fn gather(others: i64) -> std::time::Duration {
    if others > 0 {
        GATHER_SHARED
    } else {
        GATHER
    }
}
