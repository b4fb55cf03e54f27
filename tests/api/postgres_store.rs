//! The storage seam: the domain's write closures and the store's reads,
//! run unchanged on SQLite and on a real PostgreSQL 15, give the same
//! results; a write on PostgreSQL is one transaction.

use super::postgres::Cluster;
use clawrelay::ids::{AppId, ClientId};
use clawrelay::store::{apps, clients, settings, Store, StoreError, Synchronous};

/// What the admin side does with clients, apps and settings, written as
/// the domain writes it (closures over `Tx`), and what it reads back, as
/// lines comparable across backends (ids are generated, so lines name
/// things by their names).
async fn admin_transcript(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    let (a, b, c) = (
        ClientId::generate(),
        ClientId::generate(),
        ClientId::generate(),
    );
    let app = AppId::generate();
    let ids = [a.clone(), b.clone(), c.clone()];
    let app_id = app.clone();
    store
        .write(move |tx| {
            for (i, id) in ids.iter().enumerate() {
                clients::insert(
                    tx,
                    id,
                    &format!("agent-{i}"),
                    &format!("hash-{i}"),
                    1000 + i as i64,
                )?;
            }
            apps::insert(tx, &app_id, "site", "app-hash", 1500)?;
            settings::set(tx, settings::ADMIN_TOKEN_HASH, "first")?;
            settings::set(tx, settings::ADMIN_TOKEN_HASH, "second")?;
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();

    let name = |id: &ClientId, list: &[clients::Row]| {
        list.iter()
            .find(|r| &r.id == id)
            .map(|r| r.name.clone())
            .unwrap_or_else(|| "none".into())
    };
    let (b2, c2, app2) = (b.clone(), c.clone(), app.clone());
    let changed = store
        .write(move |tx| {
            let revoked = clients::revoke(tx, &b2, 2000)?;
            let again = clients::revoke(tx, &b2, 2001)?;
            let renamed = clients::set_token(tx, &c2, "hash-new", 2100)?;
            let gone = clients::set_token(tx, &b2, "hash-x", 2100)?;
            clients::set_last_seen(tx, &c2, 3000)?;
            clients::set_last_seen(tx, &c2, 2500)?; // never moves back
            let app_token = apps::set_token(tx, &app2, "app-hash-2", 2200)?;
            let app_revoked = apps::revoke(tx, &app2, 2300)?;
            let public_revoked = apps::revoke(tx, &AppId::public(), 2300)?;
            Ok::<_, StoreError>(format!(
                "revoke {revoked} {again}; set_token {renamed:?} {gone:?}; app {app_token:?} {app_revoked} public {public_revoked}"
            ))
        })
        .await
        .unwrap();
    out.push(changed);

    let list = clients::list(store.reader()).await.unwrap();
    for r in &list {
        out.push(format!(
            "client {} pending {} seen {:?} created {} revoked {:?}",
            r.name, r.pending, r.last_seen_at, r.created_at, r.revoked_at
        ));
    }
    for r in apps::list(store.reader()).await.unwrap() {
        out.push(format!(
            "app {} public {} created {} revoked {:?}",
            r.name, r.public, r.created_at, r.revoked_at
        ));
    }
    for id in [&a, &b, &c] {
        let cred = clients::credential(store.reader(), id).await.unwrap();
        out.push(format!(
            "credential {} {:?}",
            name(id, &list),
            cred.map(|c| (c.hash, c.version))
        ));
    }
    let app_cred = apps::credential(store.reader(), &app).await.unwrap();
    let public_cred = apps::credential(store.reader(), &AppId::public())
        .await
        .unwrap();
    out.push(format!(
        "app credential {:?} public {:?}",
        app_cred.map(|c| c.version),
        public_cred.map(|c| c.version)
    ));
    out.push(format!(
        "active app {} public {}",
        apps::is_active(store.reader(), &app).await.unwrap(),
        apps::is_active(store.reader(), &AppId::public())
            .await
            .unwrap()
    ));
    let mut since: Vec<_> = clients::credentials_changed_since(store.reader(), 2050)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, at)| at)
        .collect();
    since.sort();
    out.push(format!("changed since 2050 at {since:?}"));
    out.push(format!(
        "setting {:?} missing {:?}",
        settings::get(store.reader(), settings::ADMIN_TOKEN_HASH)
            .await
            .unwrap(),
        settings::get(store.reader(), "nothing").await.unwrap()
    ));
    // Ties are broken at random: among the live, only `c` is not revoked.
    let live = vec![b.clone(), c.clone()];
    let (least, none) = store
        .write(move |tx| {
            Ok::<_, StoreError>((
                clients::least_loaded(tx, &live)?,
                clients::least_loaded(tx, &[])?,
            ))
        })
        .await
        .unwrap();
    out.push(format!(
        "least loaded {:?} of none {none:?}",
        least.map(|(id, pending)| (name(&id, &list), pending))
    ));
    out
}

#[tokio::test]
async fn postgres_store_runs_the_domain_writes_like_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&dir.path().join("relay.db"), Synchronous::Full)
        .await
        .unwrap();
    let cluster = Cluster::start();
    let pg = Store::connect_postgres(&cluster.url, 4).await.unwrap();

    let on_sqlite = admin_transcript(&sqlite).await;
    let on_pg = admin_transcript(&pg).await;
    assert_eq!(on_sqlite, on_pg);
    // The transcript says something: revocations, rotations, last seen.
    assert!(
        on_pg.contains(
            &"client agent-1 pending 0 seen None created 1001 revoked Some(2000)".to_owned()
        ),
        "{on_pg:#?}"
    );
    assert!(
        on_pg[0].starts_with("revoke true false; set_token Some(\"agent-2\") None"),
        "{on_pg:#?}"
    );
    sqlite.close().await;
    pg.close().await;
}

#[tokio::test]
async fn postgres_store_write_is_one_transaction() {
    let cluster = Cluster::start();
    let store = Store::connect_postgres(&cluster.url, 4).await.unwrap();

    // A closure that fails after writing leaves nothing behind.
    let id = ClientId::generate();
    let failed = store
        .write(move |tx| {
            clients::insert(tx, &id, "half", "h", 1)?;
            Err::<(), _>(StoreError::Other("the domain refused".into()))
        })
        .await;
    assert!(matches!(failed, Err(StoreError::Other(_))));
    assert!(clients::list(store.reader()).await.unwrap().is_empty());

    // A statement that violates a constraint fails the whole write, as a
    // bug in the caller (not as unavailability).
    let id = ClientId::generate();
    let dup = store
        .write(move |tx| {
            clients::insert(tx, &id, "one", "h", 1)?;
            clients::insert(tx, &id, "two", "h", 1)
        })
        .await;
    match dup {
        Err(e @ StoreError::Constraint(_)) => assert!(!e.is_unavailable()),
        other => panic!("expected a constraint violation, got {:?}", other.err()),
    }
    assert!(clients::list(store.reader()).await.unwrap().is_empty());

    // Concurrent writes each commit once; relaxed writes commit too.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = ClientId::generate();
            let op =
                move |tx: &clawrelay::store::Tx| clients::insert(tx, &id, &format!("c{i}"), "h", i);
            if i % 2 == 0 {
                store.write(op).await
            } else {
                store.write_relaxed(op).await
            }
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let names: std::collections::BTreeSet<String> = clients::list(store.reader())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names.len(), 40);
    assert!(store.writer_stats().is_none());
    assert!(store.path().is_none());
    store.ping().await.unwrap();
    store.close().await;
}
