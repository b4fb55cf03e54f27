//! WAL checkpoints off the write path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the
//! threshold: on our single writer, every write in the process then waits
//! while the WAL is copied into the database file and fsynced (benchmarks
//! showed stalls of up to seconds). So the writer's auto-checkpoint is off,
//! and this task checkpoints from its own connection with `PASSIVE`, which
//! never blocks the writer or readers; it copies what no reader still needs.
//!
//! When the log has outgrown its limit, the writer asks for a pass at once
//! ([`Cue`]) and starts the log over only after it (see
//! [`super::writer::WalBound`]): the copy and the sync of the database file
//! are then done here, and the writer's own checkpoint copies only the few
//! pages committed since.

use sqlx::{Connection, SqliteConnection};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How often the WAL is checkpointed.
const INTERVAL: Duration = Duration::from_millis(500);

/// How the writer asks for a pass and learns that one ran.
#[derive(Default)]
pub struct Cue {
    asked: tokio::sync::Notify,
    /// Passes begun and finished since start.
    begun: AtomicU64,
    finished: AtomicU64,
}

impl Cue {
    /// Asks for a pass now; returns what to give [`Cue::passed_since`].
    pub fn ask(&self) -> u64 {
        let begun = self.begun.load(Ordering::Acquire);
        self.asked.notify_one();
        begun
    }

    /// Whether a pass begun after the [`Cue::ask`] that returned `asked`
    /// has finished.
    pub fn passed_since(&self, asked: u64) -> bool {
        self.finished.load(Ordering::Acquire) > asked
    }

    pub(super) fn begin_pass(&self) {
        self.begun.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn end_pass(&self) {
        self.finished.fetch_add(1, Ordering::AcqRel);
    }
}

pub struct Checkpointer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Checkpointer {
    pub fn spawn(conn: SqliteConnection, cue: Arc<Cue>) -> Checkpointer {
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(run(conn, cue, rx));
        Checkpointer { stop, task }
    }

    /// Stops checkpointing and closes the connection.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn run(mut conn: SqliteConnection, cue: Arc<Cue>, mut stop: oneshot::Receiver<()>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cue.asked.notified() => {}
            _ = &mut stop => break,
        }
        cue.begin_pass();
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
        cue.end_pass();
    }
    let _ = conn.close().await;
}
