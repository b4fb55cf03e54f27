//! The single writer: a thread that owns the one read-write connection.
//!
//! Callers hand it operations over a channel. The thread takes whatever is
//! queued (up to [`MAX_BATCH`]) and runs it inside one `BEGIN IMMEDIATE`
//! transaction, each operation in its own savepoint (when it shares the
//! transaction with others), then commits once. So under load one fsync
//! serves many requests (group commit), and when idle a lone operation
//! commits at once. Each caller learns its result only after the commit
//! succeeded and the log holding it is on disk: a result is never reported
//! for data not on disk. That sync runs beside the next batch when one waits
//! (see [`Syncer`]).
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

use super::checkpoint::Cue;
use super::recent::{self, Recent};
use super::{search, StoreError, StoreResult, Tx};
use rusqlite::Connection;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    /// Time spent in COMMIT, microseconds in all.
    pub commit_micros: AtomicU64,
    /// Syncs of the write-ahead log (one covers every transaction committed
    /// before it began; with `normal`, no caller waits for them).
    pub syncs: AtomicU64,
}

#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Msg>,
    pub stats: Arc<WriterStats>,
}

impl Writer {
    /// `full`: a transaction that carried a durable operation is reported
    /// once the log is synced after its COMMIT (the connection itself runs
    /// with NORMAL: see [`Syncer`]). What it commits joins `recent`.
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
            .spawn(move || run(conn, rx, thread_stats, full, wal, &recent))?;
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
    stats: Arc<WriterStats>,
    full: bool,
    mut wal: WalBound,
    recent: &Recent,
) {
    // Operations see the connection as a `Tx`; the writer's own statements
    // (BEGIN, savepoints, COMMIT) use it directly.
    let tx = Tx::Sqlite(conn);
    let Ok(conn) = tx.sqlite() else { return };
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let log = Arc::new(LogFile::new(wal.path.clone(), stats.clone()));
    let mut sync = Syncer::start(full, log);
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
            let committed = run_batch(&tx, conn, &mut batch, &stats, recent, full);
            sync.complete(committed, rx.is_empty());
            wal.keep_bounded(conn);
        }
    }
    // Every caller hears of its commit before the connection closes.
    sync.finish();
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

/// A transaction's end, for its callers: its completions and outcome, and
/// whether they wait for the log on disk (`full`, and it carried a durable
/// operation).
struct Committed {
    completions: Vec<Completion>,
    outcome: StoreResult<()>,
    durable: bool,
}

impl Committed {
    /// Tells every caller; `synced`: what the log's sync after the commit
    /// did (a durable operation's caller hears of a failed sync).
    fn report(self, synced: &StoreResult<()>) {
        let outcome = match (self.outcome, self.durable) {
            (Ok(()), true) => synced.clone(),
            (outcome, _) => outcome,
        };
        for completion in self.completions {
            completion(outcome.clone());
        }
    }
}

/// The write-ahead log's file, synced on its own descriptor. The writer's
/// connection keeps the log in existence while it is open (SQLite removes
/// it when the last connection closes), so one descriptor serves for the
/// writer's life.
struct LogFile {
    path: std::path::PathBuf,
    file: std::sync::OnceLock<std::fs::File>,
    stats: Arc<WriterStats>,
}

impl LogFile {
    fn new(path: std::path::PathBuf, stats: Arc<WriterStats>) -> LogFile {
        LogFile {
            path,
            file: std::sync::OnceLock::new(),
            stats,
        }
    }

    /// Puts everything written to the log so far on disk (`fdatasync`,
    /// as SQLite's own sync of the log).
    fn sync(&self) -> StoreResult<()> {
        let failed =
            |e: std::io::Error| StoreError::Io(format!("cannot sync {}: {e}", self.path.display()));
        if self.file.get().is_none() {
            let file = std::fs::File::open(&self.path).map_err(failed)?;
            let _ = self.file.set(file);
        }
        let file = self
            .file
            .get()
            .ok_or_else(|| StoreError::Io(format!("cannot open {}", self.path.display())))?;
        let started = std::time::Instant::now();
        file.sync_data().map_err(failed)?;
        crate::metrics::get()
            .log_sync_seconds
            .observe(started.elapsed().as_secs_f64());
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Puts commits on disk and tells their callers, in commit order.
///
/// With `synchronous = full` the connection commits with NORMAL, which
/// writes the log without syncing it, and the sync follows the COMMIT: on
/// the writer's thread when nothing else waits (a lone request's latency is
/// what FULL's would be), otherwise on the sync thread while the writer runs
/// the next batch, so the fsync no longer stalls every writer. One sync
/// covers every transaction committed before it began. A caller hears of its
/// commit only once the log holding it is on disk, and no caller hears of a
/// later commit before an earlier one's callers (a claim never answers with
/// a message whose sender has not been told it is stored). A transaction
/// committed but not yet synced is visible to reads: only a power loss in
/// that millisecond can take back what a reader saw, and never what a
/// caller was told is stored. A sync that fails is reported to the callers
/// of every transaction it covered (503): what they wrote may be stored all
/// the same, as when an answer is lost on its way back.
///
/// With `synchronous = normal` callers are answered at once, and the sync
/// thread still syncs the log behind the commits (no one waits for it), so
/// the log never holds much unsynced: the checkpoint that restarts it must
/// sync all of it first while every writer waits (64 MiB of it cost 40–60 ms
/// at 4 × 64, the p99 of a round trip).
struct Syncer {
    full: bool,
    log: Arc<LogFile>,
    /// Transactions handed to the sync thread and not yet reported.
    queued: Arc<AtomicUsize>,
    /// `normal`: a sync behind the commits is asked for and not yet begun.
    flush_asked: Arc<AtomicBool>,
    handoff: Option<std::sync::mpsc::Sender<Handed>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the sync thread is given.
enum Handed {
    /// A transaction whose callers it tells, after a sync if it is durable.
    Commit(Committed),
    /// `normal`: sync what the log holds; no one waits.
    Flush,
}

impl Syncer {
    fn start(full: bool, log: Arc<LogFile>) -> Syncer {
        let queued = Arc::new(AtomicUsize::new(0));
        let flush_asked = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<Handed>();
        let thread = {
            let (log, queued, flush_asked) = (log.clone(), queued.clone(), flush_asked.clone());
            std::thread::Builder::new()
                .name("clawrelay-sync".into())
                .spawn(move || sync_loop(&rx, &log, &queued, &flush_asked))
        };
        let (handoff, thread) = match thread {
            Ok(thread) => (Some(tx), Some(thread)),
            Err(e) => {
                // Every sync is then the writer's own, as with FULL.
                tracing::warn!(error = %e, "cannot start the log's sync thread");
                (None, None)
            }
        };
        Syncer {
            full,
            log,
            queued,
            flush_asked,
            handoff,
            thread,
        }
    }

    /// A transaction ended: its callers hear of it once it is on disk.
    /// `idle`: no operation waits for the writer.
    fn complete(&mut self, committed: Committed, idle: bool) {
        if !self.full {
            let wrote = committed.outcome.is_ok();
            committed.report(&Ok(()));
            if wrote && !self.flush_asked.swap(true, Ordering::AcqRel) {
                if let Some(handoff) = &self.handoff {
                    let _ = handoff.send(Handed::Flush);
                }
            }
            return;
        }
        let needs_sync = committed.durable && committed.outcome.is_ok();
        let behind = self.queued.load(Ordering::Acquire) > 0;
        let committed = match (&self.handoff, behind || (needs_sync && !idle)) {
            (Some(handoff), true) => {
                self.queued.fetch_add(1, Ordering::AcqRel);
                match handoff.send(Handed::Commit(committed)) {
                    Ok(()) => return,
                    Err(std::sync::mpsc::SendError(handed)) => {
                        self.queued.fetch_sub(1, Ordering::AcqRel);
                        self.handoff = None;
                        let Handed::Commit(committed) = handed else {
                            return;
                        };
                        committed
                    }
                }
            }
            _ => committed,
        };
        let synced = if needs_sync { self.log.sync() } else { Ok(()) };
        committed.report(&synced);
    }

    /// Reports what the sync thread still holds, and ends it.
    fn finish(&mut self) {
        self.handoff = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The sync thread: takes everything handed over so far, syncs the log once
/// if any of it needs that, reports the transactions in order.
fn sync_loop(
    rx: &std::sync::mpsc::Receiver<Handed>,
    log: &LogFile,
    queued: &AtomicUsize,
    flush_asked: &AtomicBool,
) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        group.extend(rx.try_iter());
        let mut needs_sync = false;
        for handed in &group {
            match handed {
                Handed::Commit(c) => needs_sync |= c.durable && c.outcome.is_ok(),
                Handed::Flush => {
                    // Commits from here on ask for the next sync.
                    flush_asked.store(false, Ordering::Release);
                    needs_sync = true;
                }
            }
        }
        let synced = if needs_sync { log.sync() } else { Ok(()) };
        if let Err(e) = &synced {
            tracing::error!(error = %e, "syncing the write-ahead log failed");
        }
        for handed in group {
            if let Handed::Commit(committed) = handed {
                committed.report(&synced);
                queued.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
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
    recent: &Recent,
    full: bool,
) -> Committed {
    // Whether its callers wait for the log's sync (`full`, and a durable
    // operation among them).
    let durable = full && batch.iter().any(|j| j.durable);
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        tracing::warn!(error = %e, "could not begin a write transaction");
        let completions = batch
            .drain(..)
            .map(|job| (job.run)(Err(e.clone())).1)
            .collect();
        return Committed {
            completions,
            outcome: Err(e),
            durable,
        };
    }

    // A lone operation needs no savepoint (if it fails, the transaction is
    // rolled back whole); in a batch each operation runs in its own, and a
    // failed one is undone with ROLLBACK TO it and released (with the
    // messages it left for the end of the transaction).
    recent::discard();
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
        return Committed {
            completions,
            outcome: Ok(()),
            durable: false,
        };
    }

    let started = std::time::Instant::now();
    let outcome = match broken {
        None => search::catch_up_if_due(tx)
            .and_then(|()| recent::verify(conn))
            .and_then(|()| exec(conn, "COMMIT")),
        Some(e) => Err(e),
    };
    match &outcome {
        Ok(()) => {
            // Before any caller hears of the commit (and announces it).
            recent::committed(recent);
            let durability = if durable { "full" } else { "relaxed" };
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
    Committed {
        completions,
        outcome,
        durable,
    }
}

/// Where an operation's savepoint begins in what the transaction's
/// operations left for its end (messages for [`Recent`]).
struct Deferred {
    messages: usize,
}

impl Deferred {
    fn mark() -> Deferred {
        Deferred {
            messages: recent::mark(),
        }
    }

    /// The operation was rolled back: what it left goes too.
    fn roll_back(self) {
        recent::rollback(self.messages);
        search::forget_mark();
    }
}

/// The transaction ends without a commit: nothing it left is kept.
fn discard_deferred() {
    recent::discard();
    search::forget_mark();
}

/// Keeps the write-ahead log under its limit.
///
/// The checkpointer copies the log into the database without blocking
/// anyone, but SQLite only starts the log over when a checkpoint has copied
/// all of it and no reader still uses it, which a steady stream of writes
/// never allows: the `-wal` file then grows without end (9 GB after 200 000
/// messages). So when it has outgrown its limit, the writer itself, between
/// two batches (holding no transaction, and being the only writer, it waits
/// for no lock), runs a RESTART checkpoint: it copies what the checkpointer
/// has not copied yet, syncs the database file and waits briefly for readers
/// to leave the log; the next commit then writes the log from its start
/// again, and `journal_size_limit` cuts the file back to the limit. (A TRUNCATE
/// checkpoint, which empties the file, cost 23–30 ms a time under load against
/// 3–9 ms: the file's blocks freed, then allocated again by the next commits,
/// while every writer waits. At 4 × 64 the log fills several times a second.)
/// Copying up to half a second of the log and syncing the file held every
/// writer for 6–11 ms at 4 × 64 (the p99 of a round trip), so the writer
/// first asks the checkpointer for a pass ([`Cue`]) and goes on writing; it
/// restarts after that pass (or [`WalBound::CUE_WAIT`]), when only the
/// pages committed meanwhile are left to copy and sync.
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
    cue: Arc<Cue>,
    /// A pass asked for and not yet followed by a restart: what
    /// [`Cue::ask`] returned, and when.
    asked: Option<(u64, std::time::Instant)>,
}

impl WalBound {
    /// The longest a restart waits for readers still using the log.
    const READER_WAIT: std::time::Duration = std::time::Duration::from_millis(100);
    /// How long after a restart that could not finish the next is tried.
    const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

    /// The longest the writer waits for the checkpointer's pass before it
    /// restarts the log all the same (a pass takes a few milliseconds).
    const CUE_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

    pub fn new(path: std::path::PathBuf, limit: u64, cue: Arc<Cue>) -> WalBound {
        WalBound {
            path,
            limit,
            not_before: None,
            cue,
            asked: None,
        }
    }

    fn keep_bounded(&mut self, conn: &Connection) {
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if size <= self.limit {
            self.asked = None;
            return;
        }
        let now = std::time::Instant::now();
        if self.not_before.is_some_and(|t| now < t) {
            return;
        }
        match self.asked {
            None => {
                self.asked = Some((self.cue.ask(), now));
                return;
            }
            Some((asked, at))
                if !self.cue.passed_since(asked) && now.duration_since(at) < Self::CUE_WAIT =>
            {
                return;
            }
            Some(_) => self.asked = None,
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
    use super::{Cue, WalBound};
    use crate::store::{settings, Store, StoreError, Synchronous};
    use std::sync::atomic::Ordering;

    #[derive(Debug)]
    struct Refused;

    /// A store on a new file in a temporary directory (kept while the
    /// directory handle lives).
    async fn open(synchronous: Synchronous) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("w.db"), synchronous)
            .await
            .unwrap();
        (dir, store)
    }

    impl From<StoreError> for Refused {
        fn from(_: StoreError) -> Refused {
            Refused
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_operation_is_rolled_back_alone_within_a_shared_commit() {
        let (_dir, store) = open(Synchronous::Full).await;

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

    /// With `synchronous = full` a durable write is answered after a sync of
    /// the log, relaxed writes alone sync nothing, and many writers at once
    /// share syncs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durable_commits_are_answered_after_a_sync_of_the_log() {
        let (_dir, store) = open(Synchronous::Full).await;
        let stats = store.writer_stats().expect("a SQLite store has a writer");
        let syncs = || stats.syncs.load(Ordering::Relaxed);

        let before = syncs();
        store
            .write_relaxed(|tx| settings::set(tx, "relaxed", "1"))
            .await
            .unwrap();
        assert_eq!(syncs(), before, "a relaxed write syncs nothing");
        store
            .write(|tx| settings::set(tx, "durable", "1"))
            .await
            .unwrap();
        assert_eq!(
            syncs(),
            before + 1,
            "a durable write is answered once synced"
        );

        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .write(move |tx| settings::set(tx, &format!("k{i}"), "v"))
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let shared = syncs() - before - 1;
        assert!(
            (1..100).contains(&shared),
            "200 writes at once shared syncs ({shared})"
        );
        store.close().await;
    }

    /// With `synchronous = normal` writes are answered without a sync, and
    /// the log is still synced behind them (so a checkpoint never has much
    /// to sync while writers wait).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_normal_the_log_is_synced_behind_the_commits() {
        let (_dir, store) = open(Synchronous::Normal).await;
        let stats = store.writer_stats().expect("a SQLite store has a writer");
        for round in 0..3 {
            let before = stats.syncs.load(Ordering::Relaxed);
            store
                .write(move |tx| settings::set(tx, "k", &round.to_string()))
                .await
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while stats.syncs.load(Ordering::Relaxed) == before {
                assert!(
                    std::time::Instant::now() < deadline,
                    "round {round}: no sync followed the commit"
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        store.close().await;
    }

    /// The write-ahead log's header: how many times it was started over.
    fn restarts(wal: &std::path::Path) -> u32 {
        let header = std::fs::read(wal).expect("read the log");
        u32::from_be_bytes(header[12..16].try_into().expect("header"))
    }

    #[test]
    fn the_log_is_started_over_only_after_the_checkpointers_pass() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bound.db");
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (x BLOB);",
        )
        .expect("schema");
        let insert = |n: usize| {
            for _ in 0..n {
                conn.execute("INSERT INTO t VALUES (zeroblob(8000))", [])
                    .expect("insert");
            }
        };
        insert(40);
        let wal = crate::store::wal_path(&path);
        let cue = std::sync::Arc::new(Cue::default());
        let mut bound = WalBound::new(wal.clone(), 64 << 10, cue.clone());
        let before = restarts(&wal);

        // Past the limit: the writer asks for a pass and keeps writing.
        bound.keep_bounded(&conn);
        insert(1);
        bound.keep_bounded(&conn);
        insert(1);
        assert_eq!(restarts(&wal), before, "no restart before the pass");

        // A pass asked for, then finished: the next batch starts it over.
        cue.begin_pass();
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .expect("pass");
        cue.end_pass();
        bound.keep_bounded(&conn);
        insert(1);
        assert_eq!(restarts(&wal), before + 1, "started over after the pass");
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 43);
    }

    #[tokio::test]
    async fn writes_after_close_are_refused_not_lost_silently() {
        let (_dir, store) = open(Synchronous::Full).await;
        store.close().await;
        let r = store.write(|tx| settings::set(tx, "k", "v")).await;
        assert!(matches!(r, Err(StoreError::Closed)));
    }
}
