//! A full disk: writes get 503 storage_unavailable with nothing half-written,
//! reads go on, and the relay recovers by itself when space returns. Runs on
//! a real 4 MiB tmpfs, so it needs the right to mount (root, as in CI).

use crate::helpers::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap().keep();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir))
    }

    fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn fill(path: &Path, bytes: u64) {
    std::fs::write(path, vec![0u8; bytes as usize]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_503_keeps_reads_and_recovers_by_itself() {
    if sqlite_only("fills the disk under the SQLite file") {
        return;
    }
    let Some(disk) = Tmpfs::mount("4m") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs for this test"
        );
        eprintln!("skipped: cannot mount a tmpfs here (not root)");
        return;
    };
    let mut app = spawn_with(|c| c.storage.path = disk.0.join("relay.db")).await;
    let (_, agent) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&agent, "").await;
    let first = app.inbound(&web, "alice", "before the disk fills").await;

    // Leave ~100 KiB free, then write until the disk is full.
    let spacer = disk.0.join("spacer");
    fill(&spacer, disk.free_bytes().saturating_sub(100 * 1024));
    let big = "x".repeat(30_000);
    let mut refused = None;
    for i in 0..60 {
        let r = app
            .post(
                "/inbound",
                &web,
                json!({"from": format!("u{i}"), "text": big}),
            )
            .await;
        if r.status != 200 {
            refused = Some(r);
            break;
        }
    }
    let refused = refused.expect("the disk filled up");
    assert_eq!(
        (refused.status.as_u16(), refused.error_code()),
        (503, "storage_unavailable"),
        "{:?}",
        refused.body
    );

    // Reads go on, and what is stored is whole: every message has its delivery.
    let conv = first["conversationId"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/conversations/{conv}"), ADMIN)
            .await
            .status,
        200
    );
    assert_eq!(app.get("/health", ADMIN).await.status, 200);
    let db = app.db().await;
    let (m, d): (i64, i64) =
        sqlx::query_as("SELECT (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM deliveries)")
            .fetch_one(&db)
            .await
            .unwrap();
    db.close().await;
    assert_eq!(m, d, "a message without its delivery");

    // Space returns: writes work again without a restart.
    std::fs::remove_file(&spacer).unwrap();
    let after = app
        .post(
            "/inbound",
            &web,
            json!({"from": "bob", "text": "after the disk emptied"}),
        )
        .await;
    assert_eq!(after.status, 200, "{:?}", after.body);
    app.stop().await;
}
