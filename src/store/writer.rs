//! The single writer: a task that owns the one read-write connection.
//!
//! Callers hand it operations over a channel. The task takes whatever is
//! queued (up to [`MAX_BATCH`]) and runs it inside one `BEGIN IMMEDIATE`
//! transaction, each operation in its own savepoint (when it shares the
//! transaction with others), then commits once. So
//! under load one fsync serves many requests (group commit), and when idle a
//! lone operation commits at once. Each caller learns its result only after
//! the commit succeeded: a result is never reported for data not on disk.
//!
//! An operation must only do database work on the connection it is given:
//! while it runs, every other write waits.
//!
//! Between batches the writer also keeps the write-ahead log bounded (see
//! [`WalBound`]).

use super::{StoreError, StoreResult};
use sqlx::{Connection, Executor, SqliteConnection};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Delivers an operation's result once the fate of its transaction is known.
type Completion = Box<dyn FnOnce(StoreResult<()>) + Send>;
/// A type-erased operation. Given the connection it runs and says whether it
/// succeeded (to keep or roll back its savepoint) and how to report its
/// result after the commit; given an error it reports that error unrun.
type Run = Box<
    dyn for<'c> FnOnce(
            Result<&'c mut SqliteConnection, StoreError>,
        ) -> BoxFuture<'c, (bool, Completion)>
        + Send,
>;

/// An operation and whether its caller needs it on disk before the answer.
struct Job {
    run: Run,
    durable: bool,
}

/// The most operations one transaction takes. Bounds the latency a batch adds
/// to its first member.
const MAX_BATCH: usize = 256;
/// Operations waiting for the writer before submitters wait for room.
const QUEUE: usize = 4096;

/// The stop signal of the writer task and the task itself.
type Stopper = (oneshot::Sender<()>, JoinHandle<()>);

/// What the writer has done since start: for `GET /stats` and the benchmark.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Operations those transactions carried (operations / commits = batch size).
    pub operations: AtomicU64,
    /// Transactions that failed as a whole (rolled back).
    pub failed: AtomicU64,
    /// Time spent in COMMIT (the fsync), microseconds in all.
    pub commit_micros: AtomicU64,
}

#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    pub stats: Arc<WriterStats>,
    /// Tells the task to stop taking new operations; taken by the first `close`.
    stop: Arc<Mutex<Option<Stopper>>>,
}

impl Writer {
    /// `full`: the connection runs with `synchronous = FULL`, and batches
    /// of relaxed operations only are committed with NORMAL.
    pub fn spawn(conn: SqliteConnection, full: bool, wal: WalBound) -> Writer {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let (stop_tx, stop_rx) = oneshot::channel();
        let stats = Arc::new(WriterStats::default());
        let task = tokio::spawn(run(conn, rx, stop_rx, stats.clone(), full, wal));
        Writer {
            jobs,
            stats,
            stop: Arc::new(Mutex::new(Some((stop_tx, task)))),
        }
    }

    pub async fn submit<T, E, F>(&self, op: F, durable: bool) -> Result<T, E>
    where
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, E>>();
        let run: Run = Box::new(move |conn| {
            Box::pin(async move {
                let result = match conn {
                    Ok(conn) => op(conn).await,
                    Err(e) => Err(E::from(e)),
                };
                let ok = result.is_ok();
                let completion: Completion = Box::new(move |commit| {
                    let _ = tx.send(match commit {
                        Ok(()) => result,
                        Err(e) => Err(E::from(e)),
                    });
                });
                (ok, completion)
            })
        });
        self.jobs
            .send(Job { run, durable })
            .await
            .map_err(|_| E::from(StoreError::Closed))?;
        rx.await.map_err(|_| E::from(StoreError::Closed))?
    }

    /// Stops taking operations, finishes the queued ones and closes the connection.
    pub async fn close(&self) {
        let stop = self.stop.lock().ok().and_then(|mut s| s.take());
        if let Some((stop, task)) = stop {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Job>,
    mut stop: oneshot::Receiver<()>,
    stats: Arc<WriterStats>,
    full: bool,
    mut wal: WalBound,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut mode = Sync {
        full,
        durable_now: full,
    };
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => n,
            _ = &mut stop => {
                // No new operations; the ones already queued still run below.
                rx.close();
                while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                    run_batch(&mut conn, &mut batch, &stats, &mut mode).await;
                }
                break;
            }
        };
        if n == 0 {
            break;
        }
        run_batch(&mut conn, &mut batch, &stats, &mut mode).await;
        wal.keep_bounded(&mut conn).await;
    }
    let _ = conn.close().await;
}

/// Keeps the write-ahead log under its limit.
///
/// The checkpointer copies the log into the database without blocking
/// anyone, but SQLite only starts the log over when a checkpoint has copied
/// all of it and no reader still uses it, which a steady stream of writes
/// never allows: the `-wal` file then grows without end (9 GB after 200 000
/// messages). So when it has outgrown its limit, the writer itself, between
/// two batches (holding no transaction, and being the only writer, it waits
/// for no lock), runs a TRUNCATE checkpoint: it copies the little the
/// checkpointer has not copied yet, waits briefly for readers to leave the
/// log, and empties the file. If a long reader (a backup) holds the log, it
/// gives up after [`WalBound::READER_WAIT`] and tries again after
/// [`WalBound::RETRY`], so writers never stall behind it for longer.
pub struct WalBound {
    path: std::path::PathBuf,
    limit: u64,
    not_before: Option<std::time::Instant>,
}

impl WalBound {
    /// The longest a truncation waits for readers still using the log.
    const READER_WAIT: &'static str = "PRAGMA busy_timeout = 100";
    /// How long after a truncation that could not finish the next is tried.
    const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

    pub fn new(path: std::path::PathBuf, limit: u64) -> WalBound {
        WalBound {
            path,
            limit,
            not_before: None,
        }
    }

    async fn keep_bounded(&mut self, conn: &mut SqliteConnection) {
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if size <= self.limit {
            return;
        }
        let now = std::time::Instant::now();
        if self.not_before.is_some_and(|t| now < t) {
            return;
        }
        let m = crate::metrics::get();
        let _ = conn.execute(Self::READER_WAIT).await;
        let done = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *conn)
            .await;
        let usual = format!("PRAGMA busy_timeout = {}", super::BUSY_TIMEOUT.as_millis());
        let _ = conn.execute(usual.as_str()).await;
        match done {
            Ok((0, _, _)) => {
                self.not_before = None;
                m.wal_truncations.with_label_values(&["done"]).inc();
            }
            Ok(_) => {
                tracing::debug!(
                    bytes = size,
                    "readers held the write-ahead log; truncating later"
                );
                self.not_before = Some(now + Self::RETRY);
                m.wal_truncations.with_label_values(&["busy"]).inc();
            }
            Err(e) => {
                tracing::warn!(error = %e, bytes = size, "could not truncate the write-ahead log");
                self.not_before = Some(now + Self::RETRY);
                m.wal_truncations.with_label_values(&["failed"]).inc();
            }
        }
    }
}

/// The connection's `synchronous` setting. With `[storage] synchronous =
/// "full"`, a batch that holds only relaxed operations (claims, lease
/// releases, bookkeeping: what a crash may undo without losing anything a
/// caller was promised) commits with NORMAL, skipping the fsync. In WAL mode
/// the next FULL commit syncs those frames too, so a crash can only lose a
/// tail of relaxed commits, never one that a durable commit followed.
struct Sync {
    full: bool,
    durable_now: bool,
}

async fn run_batch(
    conn: &mut SqliteConnection,
    batch: &mut Vec<Job>,
    stats: &WriterStats,
    mode: &mut Sync,
) {
    if mode.full {
        let durable = batch.iter().any(|j| j.durable);
        if durable != mode.durable_now {
            let pragma = if durable {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            if conn.execute(pragma).await.is_ok() {
                mode.durable_now = durable;
            }
        }
    }
    if let Err(e) = conn.execute("BEGIN IMMEDIATE").await {
        let e = StoreError::from(e);
        tracing::warn!(error = %e, "could not begin a write transaction");
        for job in batch.drain(..) {
            let (_, completion) = (job.run)(Err(e.clone())).await;
            completion(Err(e.clone()));
        }
        return;
    }

    // Every statement is a round trip to the connection's thread, so each
    // operation costs one savepoint statement at most: a lone operation needs
    // none (if it fails, the transaction is rolled back whole), and in a batch
    // the savepoints nest and stay open until COMMIT ends them all; a failed
    // operation is undone with ROLLBACK TO its own (the innermost) savepoint.
    let alone = batch.len() == 1;
    let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
    let mut broken: Option<StoreError> = None;
    let mut failed_alone = false;
    for job in batch.drain(..) {
        if let Some(e) = &broken {
            let (_, completion) = (job.run)(Err(e.clone())).await;
            completions.push(completion);
            continue;
        }
        if !alone {
            if let Err(e) = conn.execute("SAVEPOINT op").await {
                let e = StoreError::from(e);
                let (_, completion) = (job.run)(Err(e.clone())).await;
                completions.push(completion);
                broken = Some(e);
                continue;
            }
        }
        let (ok, completion) = (job.run)(Ok(&mut *conn)).await;
        completions.push(completion);
        if ok {
            continue;
        }
        if alone {
            failed_alone = true;
        } else if let Err(e) = conn.execute("ROLLBACK TO op").await {
            // The transaction itself is no longer usable (disk full, I/O
            // error): nothing in this batch can be committed.
            broken = Some(e.into());
        }
    }

    if failed_alone {
        // The only operation failed: nothing to commit. Its error reaches its
        // caller through its completion, as usual.
        let _ = conn.execute("ROLLBACK").await;
        for completion in completions {
            completion(Ok(()));
        }
        return;
    }

    let started = std::time::Instant::now();
    let outcome = match broken {
        None => conn
            .execute("COMMIT")
            .await
            .map(|_| ())
            .map_err(StoreError::from),
        Some(e) => Err(e),
    };
    match &outcome {
        Ok(()) => {
            let durability = if mode.durable_now { "full" } else { "relaxed" };
            let m = crate::metrics::get();
            m.commit_seconds
                .with_label_values(&[durability])
                .observe(started.elapsed().as_secs_f64());
            m.batch_size
                .with_label_values(&[durability])
                .observe(completions.len() as f64);
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats
                .operations
                .fetch_add(completions.len() as u64, Ordering::Relaxed);
            stats
                .commit_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        Err(_) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Err(e) = &outcome {
        let _ = conn.execute("ROLLBACK").await;
        tracing::warn!(error = %e, operations = completions.len(), "write transaction failed");
    }
    for completion in completions {
        completion(outcome.clone());
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{settings, Store, StoreError, Synchronous};
    use std::sync::atomic::Ordering;

    #[derive(Debug)]
    struct Refused;

    impl From<StoreError> for Refused {
        fn from(_: StoreError) -> Refused {
            Refused
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_operation_is_rolled_back_alone_within_a_shared_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("w.db"), Synchronous::Full)
            .await
            .unwrap();

        // The first operation holds the writer while 60 more queue up, so
        // they share one transaction; every third of them writes and fails.
        let hold = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(|_tx| {
                        Box::pin(async move {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            Ok::<_, Refused>(())
                        })
                    })
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut tasks = Vec::new();
        for i in 0..60 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .write(move |tx| {
                        Box::pin(async move {
                            settings::set(tx, &format!("k{i}"), "v")
                                .await
                                .map_err(|_| Refused)?;
                            if i % 3 == 0 {
                                return Err(Refused);
                            }
                            Ok(())
                        })
                    })
                    .await
            }));
        }
        assert!(hold.await.unwrap().is_ok());
        for (i, t) in tasks.into_iter().enumerate() {
            let result = t.await.unwrap();
            assert_eq!(result.is_ok(), i % 3 != 0, "operation {i}");
        }
        for i in 0..60 {
            let stored = settings::get(store.reader(), &format!("k{i}"))
                .await
                .unwrap();
            assert_eq!(stored.is_some(), i % 3 != 0, "key k{i}");
        }
        let ops = store.writer_stats().operations.load(Ordering::Relaxed);
        let commits = store.writer_stats().commits.load(Ordering::Relaxed);
        assert!(
            ops > commits + 30,
            "the operations shared commits ({ops} in {commits})"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn writes_after_close_are_refused_not_lost_silently() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("w.db"), Synchronous::Full)
            .await
            .unwrap();
        store.close().await;
        let r = store
            .write(|tx| Box::pin(async move { settings::set(tx, "k", "v").await }))
            .await;
        assert!(matches!(r, Err(StoreError::Closed)));
    }
}
