//! WAL checkpoints off the write path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the
//! threshold: on our single writer, every write in the process then waits
//! while the WAL is copied into the database file and fsynced (benchmarks
//! showed stalls of up to seconds). So the writer's auto-checkpoint is off,
//! and this task checkpoints from its own connection with `PASSIVE`, which
//! never blocks the writer or readers; it copies what no reader still needs.

use sqlx::{Connection, SqliteConnection};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How often the WAL is checkpointed.
const INTERVAL: Duration = Duration::from_millis(500);

pub struct Checkpointer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Checkpointer {
    pub fn spawn(conn: SqliteConnection) -> Checkpointer {
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(run(conn, rx));
        Checkpointer { stop, task }
    }

    /// Stops checkpointing and closes the connection.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn run(mut conn: SqliteConnection, mut stop: oneshot::Receiver<()>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut conn).await {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
            _ = &mut stop => break,
        }
    }
    let _ = conn.close().await;
}
