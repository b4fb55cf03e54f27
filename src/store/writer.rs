//! The single writer: a thread that owns the one read-write connection.
//!
//! Callers hand it operations over a channel. The thread takes whatever is
//! queued (up to [`MAX_BATCH`]) and runs it inside one `BEGIN IMMEDIATE`
//! transaction, each operation in its own savepoint (when it shares the
//! transaction with others), then commits once. So under load one fsync
//! serves many requests (group commit), and when idle a lone operation
//! commits at once. Each caller learns its result only after the commit
//! succeeded: a result is never reported for data not on disk.
//!
//! The whole batch runs synchronously on this thread, through `rusqlite`
//! with prepared statements cached across batches: one hand-off to the thread
//! per batch and one back per operation, where an async driver costs two per
//! statement (those thread switches were most of the relay's CPU). Readers
//! stay on sqlx's pool; both use the same SQLite library.
//!
//! An operation must only do database work on the connection it is given:
//! while it runs, every other write waits.
//!
//! Between batches the writer also keeps the write-ahead log bounded (see
//! [`WalBound`]).

use super::recent::{self, Recent};
use super::{search, StoreError, StoreResult, Tx};
use rusqlite::Connection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Delivers an operation's result once the fate of its transaction is known.
type Completion = Box<dyn FnOnce(StoreResult<()>) + Send>;
/// A type-erased operation. Given the connection it runs and says whether it
/// succeeded (to keep or roll back its savepoint) and how to report its
/// result after the commit; given an error it reports that error unrun.
type Run = Box<dyn FnOnce(Result<&Tx, StoreError>) -> (bool, Completion) + Send>;

/// An operation and whether its caller needs it on disk before the answer.
struct Job {
    run: Run,
    durable: bool,
}

enum Msg {
    Job(Job),
    /// Finish what is queued, close the connection, then answer.
    Stop(oneshot::Sender<()>),
}

/// The most operations one transaction takes. Bounds the latency a batch adds
/// to its first member.
const MAX_BATCH: usize = 256;
/// Operations waiting for the writer before submitters wait for room.
const QUEUE: usize = 4096;
/// Prepared statements kept by the writer's connection.
const STATEMENT_CACHE: usize = 128;

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
    jobs: mpsc::Sender<Msg>,
    pub stats: Arc<WriterStats>,
}

impl Writer {
    /// `full`: the connection runs with `synchronous = FULL`, and batches
    /// of relaxed operations only are committed with NORMAL.
    /// What it commits joins `recent`.
    pub fn spawn(
        conn: Connection,
        full: bool,
        wal: WalBound,
        recent: Arc<Recent>,
    ) -> std::io::Result<Writer> {
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let (jobs, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("clawrelay-writer".into())
            .spawn(move || run(conn, rx, &thread_stats, full, wal, &recent))?;
        Ok(Writer { jobs, stats })
    }

    pub async fn submit<T, E, F>(&self, op: F, durable: bool) -> Result<T, E>
    where
        F: FnOnce(&Tx) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, E>>();
        let run: Run = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => op(conn),
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
        });
        self.jobs
            .send(Msg::Job(Job { run, durable }))
            .await
            .map_err(|_| E::from(StoreError::Closed))?;
        rx.await.map_err(|_| E::from(StoreError::Closed))?
    }

    /// Stops taking operations, finishes the queued ones and closes the
    /// connection. Calls made once it is closed return at once.
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.jobs.send(Msg::Stop(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Msg>,
    stats: &WriterStats,
    full: bool,
    mut wal: WalBound,
    recent: &Recent,
) {
    // Operations see the connection as a `Tx`; the writer's own statements
    // (BEGIN, savepoints, COMMIT) use it directly.
    let tx = Tx::Sqlite(conn);
    let Ok(conn) = tx.sqlite() else { return };
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut mode = Sync {
        full,
        durable_now: full,
    };
    // Those waiting for the close (each `close` call sends one).
    let mut stopped = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Job(job) => batch.push(job),
                Msg::Stop(done) => {
                    // No new operations; the ones already queued still run.
                    rx.close();
                    stopped.push(done);
                }
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            run_batch(&tx, conn, &mut batch, stats, &mut mode, recent);
            wal.keep_bounded(conn);
        }
    }
    // As the last connection, closing folds the WAL into the database file.
    if let Tx::Sqlite(conn) = tx {
        if let Err((_, e)) = conn.close() {
            tracing::warn!(error = %e, "closing the writer's connection failed");
        }
    }
    for done in stopped {
        let _ = done.send(());
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

/// Runs one statement of the writer's own (no rows, no parameters).
fn exec(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn run_batch(
    tx: &Tx,
    conn: &Connection,
    batch: &mut Vec<Job>,
    stats: &WriterStats,
    mode: &mut Sync,
    recent: &Recent,
) {
    if mode.full {
        let durable = batch.iter().any(|j| j.durable);
        if durable != mode.durable_now {
            let level = if durable { "FULL" } else { "NORMAL" };
            if conn.pragma_update(None, "synchronous", level).is_ok() {
                mode.durable_now = durable;
            }
        }
    }
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        tracing::warn!(error = %e, "could not begin a write transaction");
        for job in batch.drain(..) {
            let (_, completion) = (job.run)(Err(e.clone()));
            completion(Err(e.clone()));
        }
        return;
    }

    // A lone operation needs no savepoint (if it fails, the transaction is
    // rolled back whole); in a batch each operation runs in its own, and a
    // failed one is undone with ROLLBACK TO it and released (with the search
    // terms and messages it left for the end of the transaction).
    discard_deferred();
    let alone = batch.len() == 1;
    let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
    let mut broken: Option<StoreError> = None;
    let mut failed_alone = false;
    for job in batch.drain(..) {
        if let Some(e) = &broken {
            let (_, completion) = (job.run)(Err(e.clone()));
            completions.push(completion);
            continue;
        }
        let mark = Deferred::mark();
        if !alone {
            if let Err(e) = exec(conn, "SAVEPOINT op") {
                let (_, completion) = (job.run)(Err(e.clone()));
                completions.push(completion);
                broken = Some(e);
                continue;
            }
        }
        let (ok, completion) = (job.run)(Ok(tx));
        completions.push(completion);
        if alone {
            failed_alone = !ok;
            continue;
        }
        let end = if ok {
            exec(conn, "RELEASE op")
        } else {
            mark.roll_back();
            exec(conn, "ROLLBACK TO op").and_then(|()| exec(conn, "RELEASE op"))
        };
        if let Err(e) = end {
            // The transaction itself is no longer usable (disk full, I/O
            // error): nothing in this batch can be committed.
            broken = Some(e);
        }
    }

    if failed_alone {
        // The only operation failed: nothing to commit. Its error reaches its
        // caller through its completion, as usual.
        discard_deferred();
        let _ = exec(conn, "ROLLBACK");
        for completion in completions {
            completion(Ok(()));
        }
        return;
    }

    let started = std::time::Instant::now();
    let outcome = match broken {
        None => search::flush_deferred(conn)
            .and_then(|()| recent::verify(conn))
            .and_then(|()| exec(conn, "COMMIT")),
        Some(e) => Err(e),
    };
    match &outcome {
        Ok(()) => {
            // Before any caller hears of the commit (and announces it).
            recent::committed(recent);
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
        Err(e) => {
            discard_deferred();
            stats.failed.fetch_add(1, Ordering::Relaxed);
            if !conn.is_autocommit() {
                let _ = exec(conn, "ROLLBACK");
            }
            tracing::warn!(error = %e, operations = completions.len(), "write transaction failed");
        }
    }
    for completion in completions {
        completion(outcome.clone());
    }
}

/// Where an operation's savepoint begins in what the transaction's
/// operations left for its end (search terms, messages for [`Recent`]).
struct Deferred {
    terms: usize,
    messages: usize,
}

impl Deferred {
    fn mark() -> Deferred {
        Deferred {
            terms: search::deferred_mark(),
            messages: recent::mark(),
        }
    }

    /// The operation was rolled back: what it left goes too.
    fn roll_back(self) {
        search::deferred_rollback(self.terms);
        recent::rollback(self.messages);
    }
}

/// The transaction ends without a commit: nothing it left is kept.
fn discard_deferred() {
    search::deferred_rollback(0);
    recent::discard();
}

/// Keeps the write-ahead log under its limit.
///
/// The checkpointer copies the log into the database without blocking
/// anyone, but SQLite only starts the log over when a checkpoint has copied
/// all of it and no reader still uses it, which a steady stream of writes
/// never allows: the `-wal` file then grows without end (9 GB after 200 000
/// messages). So when it has outgrown its limit, the writer itself, between
/// two batches (holding no transaction, and being the only writer, it waits
/// for no lock), runs a RESTART checkpoint: it copies the little the
/// checkpointer has not copied yet and waits briefly for readers to leave the
/// log; the next commit then writes the log from its start again, and
/// `journal_size_limit` cuts the file back to the limit. (A TRUNCATE
/// checkpoint, which empties the file, cost 23–30 ms a time under load against
/// 3–9 ms: the file's blocks freed, then allocated again by the next commits,
/// while every writer waits. At 4 × 64 the log fills several times a second.)
/// If a long reader (a backup) holds the log, it
/// gives up after [`WalBound::READER_WAIT`] and tries again after
/// [`WalBound::RETRY`], so writers never stall behind it for longer. If the
/// checkpointer's PASSIVE pass holds the checkpoint lock, SQLite refuses at
/// once (it never waits for that lock); that pass ends soon, so the next
/// batch tries again.
pub struct WalBound {
    path: std::path::PathBuf,
    limit: u64,
    not_before: Option<std::time::Instant>,
}

impl WalBound {
    /// The longest a restart waits for readers still using the log.
    const READER_WAIT: std::time::Duration = std::time::Duration::from_millis(100);
    /// How long after a restart that could not finish the next is tried.
    const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

    pub fn new(path: std::path::PathBuf, limit: u64) -> WalBound {
        WalBound {
            path,
            limit,
            not_before: None,
        }
    }

    fn keep_bounded(&mut self, conn: &Connection) {
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if size <= self.limit {
            return;
        }
        let now = std::time::Instant::now();
        if self.not_before.is_some_and(|t| now < t) {
            return;
        }
        let m = crate::metrics::get();
        let _ = conn.busy_timeout(Self::READER_WAIT);
        let done = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
        let _ = conn.busy_timeout(super::BUSY_TIMEOUT);
        match done {
            Ok(0) => {
                self.not_before = None;
                m.wal_truncations.with_label_values(&["done"]).inc();
            }
            Ok(_) if now.elapsed() < Self::READER_WAIT => {
                // Refused at once: the checkpointer's own PASSIVE pass holds
                // the checkpoint lock (SQLite does not wait for that lock).
                // It ends soon; try again after the next batch.
                m.wal_truncations.with_label_values(&["busy"]).inc();
            }
            Ok(_) => {
                tracing::debug!(
                    bytes = size,
                    "readers held the write-ahead log; restarting it later"
                );
                self.not_before = Some(now + Self::RETRY);
                m.wal_truncations.with_label_values(&["busy"]).inc();
            }
            Err(e) => {
                tracing::warn!(error = %e, bytes = size, "could not restart the write-ahead log");
                self.not_before = Some(now + Self::RETRY);
                m.wal_truncations.with_label_values(&["failed"]).inc();
            }
        }
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
                        std::thread::sleep(std::time::Duration::from_millis(200));
                        Ok::<_, Refused>(())
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
                        settings::set(tx, &format!("k{i}"), "v").map_err(|_| Refused)?;
                        if i % 3 == 0 {
                            return Err(Refused);
                        }
                        Ok(())
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
        let stats = store.writer_stats().expect("a SQLite store has a writer");
        let ops = stats.operations.load(Ordering::Relaxed);
        let commits = stats.commits.load(Ordering::Relaxed);
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
        let r = store.write(|tx| settings::set(tx, "k", "v")).await;
        assert!(matches!(r, Err(StoreError::Closed)));
    }
}
