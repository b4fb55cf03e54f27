//! The storage seam: the domain's write closures and the store's reads,
//! run unchanged on SQLite and on a real PostgreSQL 15, give the same
//! results; a write on PostgreSQL is one transaction.

use super::postgres::Cluster;
use clawrelay::ids::{AppId, ClientId, IdempotencyKey, MessageId, UserId};
use clawrelay::store::{apps, clients, idempotency, settings, Store, StoreError, Synchronous};

/// Runs `transcript` on a SQLite file and on a throwaway PostgreSQL, asserts
/// the two are equal and hold each of `expected` (so that a transcript
/// cannot pass by saying nothing), and returns PostgreSQL's.
async fn same_on_both<F, Fut>(transcript: F, expected: &[&str])
where
    F: Fn(Store) -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&dir.path().join("relay.db"), Synchronous::Full)
        .await
        .unwrap();
    let cluster = Cluster::start();
    let pg = Store::connect_postgres(&cluster.url, 4).await.unwrap();
    let on_sqlite = transcript(sqlite.clone()).await;
    let on_pg = transcript(pg.clone()).await;
    assert_eq!(on_sqlite, on_pg);
    for line in expected {
        assert!(on_pg.iter().any(|l| l == line), "{line} not in {on_pg:#?}");
    }
    sqlite.close().await;
    pg.close().await;
}

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
    // Revocations, rotations, last seen.
    same_on_both(
        |store| async move { admin_transcript(&store).await },
        &[
            "revoke true false; set_token Some(\"agent-2\") None; app Some(\"site\") true public false",
            "client agent-1 pending 0 seen None created 1001 revoked Some(2000)",
        ],
    )
    .await;
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

/// Conversations and idempotency keys through the same calls the message
/// path makes, as comparable lines.
async fn conversation_transcript(store: &Store) -> Vec<String> {
    use clawrelay::model::ConversationState;
    use clawrelay::store::conversations::{self, Filter};
    let (app, agent, other) = (
        AppId::generate(),
        ClientId::generate(),
        ClientId::generate(),
    );
    let (a, o, app2) = (agent.clone(), other.clone(), app.clone());
    // Users u0..u3: u0 and u1 on `agent`, u2 unassigned, u3 on `other`.
    let ids = store
        .write(move |tx| {
            clients::insert(tx, &a, "agent", "h", 1)?;
            clients::insert(tx, &o, "other", "h", 1)?;
            apps::insert(tx, &app2, "site", "h", 1)?;
            let mut ids = Vec::new();
            for (i, client) in [Some(&a), Some(&a), None, Some(&o)].into_iter().enumerate() {
                let user = UserId::parse(&format!("u{i}")).unwrap();
                assert!(conversations::find_active(tx, &app2, &user)?.is_none());
                ids.push(conversations::create(
                    tx,
                    &app2,
                    &user,
                    client,
                    1000 + i as i64,
                )?);
            }
            Ok::<_, StoreError>(ids)
        })
        .await
        .unwrap();
    let user = |i: usize| UserId::parse(&format!("u{i}")).unwrap();
    let mut out = Vec::new();
    let (app2, ids2, o) = (app.clone(), ids.clone(), other.clone());
    let lines = store
        .write(move |tx| {
            let mut out = Vec::new();
            let found = conversations::find_active(tx, &app2, &user(0))?.unwrap();
            out.push(format!(
                "active u0 same {} client_active {} pending {} updated {}",
                found.id == ids2[0],
                found.client_active,
                found.client_pending,
                found.updated_at
            ));
            conversations::touch(tx, &ids2[0], 5000)?;
            conversations::expire_or_touch(tx, &ids2[1], 1500, 100, 6000)?; // idle: expires
            conversations::expire_or_touch(tx, &ids2[3], 500, 100, 6000)?; // touched
            conversations::set_client(tx, &ids2[0], Some(&o))?;
            let adopted = conversations::adopt_unassigned(tx, &o)?;
            let owners =
                conversations::owners(tx, &ids2[2])?.map(|w| w.client_id == Some(o.clone()));
            out.push(format!("adopted {adopted} owner of u2 is other {owners:?}"));
            let expired = conversations::expire_idle(tx, 4000, 50, 10)?;
            out.push(format!(
                "expired idle {:?}",
                expired
                    .iter()
                    .map(|e| e.user_id.clone())
                    .collect::<Vec<_>>()
            ));
            conversations::expire(tx, &ids2[3], 7000)?;
            out.push(format!(
                "u1 active {} u3 active {}",
                conversations::find_active(tx, &app2, &user(1))?.is_some(),
                conversations::find_active(tx, &app2, &user(3))?.is_some()
            ));
            Ok::<_, StoreError>(out)
        })
        .await
        .unwrap();
    out.extend(lines);

    let show = |c: &clawrelay::model::Conversation| {
        let u = c.user_id.clone();
        format!(
            "{u} {:?} created {} updated {} expired {:?} messages {} client {}",
            c.state,
            c.created_at,
            c.updated_at,
            c.expired_at,
            c.message_count,
            match &c.client_id {
                None => "none",
                Some(x) if x == &agent => "agent",
                Some(_) => "other",
            }
        )
    };
    for (i, id) in ids.iter().enumerate() {
        let got = conversations::get(store.reader(), id, 2000)
            .await
            .unwrap()
            .unwrap();
        out.push(format!("get {}", show(&got)));
        let owners = conversations::owners_of(store.reader(), id)
            .await
            .unwrap()
            .unwrap();
        out.push(format!("owners of u{i}: {}", owners.user_id.as_str()));
    }
    let filters: Vec<(&str, Filter<'_>)> = vec![
        (
            "all",
            Filter {
                app: None,
                user: None,
                client: None,
                state: None,
                before: None,
                limit: 10,
            },
        ),
        (
            "app, 2",
            Filter {
                app: Some(&app),
                user: None,
                client: None,
                state: None,
                before: None,
                limit: 2,
            },
        ),
        (
            "user u3",
            Filter {
                app: None,
                user: Some("u3"),
                client: None,
                state: None,
                before: None,
                limit: 10,
            },
        ),
        (
            "client other",
            Filter {
                app: None,
                user: None,
                client: Some(&other),
                state: None,
                before: None,
                limit: 10,
            },
        ),
        (
            "active",
            Filter {
                app: Some(&app),
                user: None,
                client: None,
                state: Some(ConversationState::Active),
                before: None,
                limit: 10,
            },
        ),
        (
            "expired",
            Filter {
                app: None,
                user: None,
                client: None,
                state: Some(ConversationState::Expired),
                before: None,
                limit: 10,
            },
        ),
    ];
    for (name, f) in filters {
        let rows = conversations::list(store.reader(), f, 2000).await.unwrap();
        out.push(format!(
            "list {name}: {:?}",
            rows.iter()
                .map(|(_, c)| c.user_id.clone())
                .collect::<Vec<_>>()
        ));
    }
    let page = conversations::list(
        store.reader(),
        Filter {
            app: None,
            user: None,
            client: None,
            state: None,
            before: None,
            limit: 2,
        },
        2000,
    )
    .await
    .unwrap();
    let cursor = page.last().map(|(seq, _)| *seq);
    let next = conversations::list(
        store.reader(),
        Filter {
            app: None,
            user: None,
            client: None,
            state: None,
            before: cursor,
            limit: 10,
        },
        2000,
    )
    .await
    .unwrap();
    out.push(format!(
        "next page: {:?}",
        next.iter()
            .map(|(_, c)| c.user_id.clone())
            .collect::<Vec<_>>()
    ));
    out.push(format!(
        "count active {}",
        conversations::count_active(store.reader(), 2000)
            .await
            .unwrap()
    ));

    // Idempotency keys: recorded, found, replaced.
    let key = IdempotencyKey::parse("retry-1").unwrap();
    let (m1, m2) = (MessageId::generate(), MessageId::generate());
    let found = store
        .write(move |tx| {
            let before = idempotency::lookup(tx, "app:x", &key)?;
            idempotency::record(tx, "app:x", &key, &m1, 10)?;
            let first = idempotency::lookup(tx, "app:x", &key)? == Some(m1.clone());
            let other_principal = idempotency::lookup(tx, "app:y", &key)?;
            idempotency::record(tx, "app:x", &key, &m2, 20)?;
            let replaced = idempotency::lookup(tx, "app:x", &key)? == Some(m2.clone());
            Ok::<_, StoreError>(format!(
                "key before {before:?} first {first} other principal {other_principal:?} replaced {replaced}"
            ))
        })
        .await
        .unwrap();
    out.push(found);
    out
}

#[tokio::test]
async fn postgres_store_keeps_conversations_like_sqlite() {
    same_on_both(
        |store| async move { conversation_transcript(&store).await },
        &[
            "adopted 1 owner of u2 is other Some(true)",
            "u1 active false u3 active false",
            "key before None first true other principal None replaced true",
        ],
    )
    .await;
}

/// Two relays taking first messages of one user at once: one conversation
/// opens, and every writer finds it (the advisory lock of `find_active`);
/// requests retried with one idempotency key at once: the first recording
/// wins and every retry finds it.
#[tokio::test]
async fn postgres_racing_writers_open_one_conversation_and_keep_one_key() {
    use clawrelay::store::conversations;
    let cluster = Cluster::start();
    let relays = [
        Store::connect_postgres(&cluster.url, 4).await.unwrap(),
        Store::connect_postgres(&cluster.url, 4).await.unwrap(),
    ];
    let app = AppId::generate();
    let app2 = app.clone();
    relays[0]
        .write(move |tx| apps::insert(tx, &app2, "site", "h", 1))
        .await
        .unwrap();
    // Each race alone: the key's lock would otherwise serialize the users too.
    for round in 0..10 {
        let keys = round % 2 == 1;
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = relays[i % 2].clone();
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let user = UserId::parse(&format!("racer-{round}")).unwrap();
                let key = IdempotencyKey::parse(&format!("k-{round}")).unwrap();
                store
                    .write(move |tx| {
                        if keys {
                            let kept = match idempotency::lookup(tx, "app:x", &key)? {
                                Some(m) => m,
                                None => {
                                    let m = MessageId::generate();
                                    idempotency::record(tx, "app:x", &key, &m, 1)?;
                                    m
                                }
                            };
                            return Ok::<_, StoreError>(kept.to_string());
                        }
                        let conversation = match conversations::find_active(tx, &app, &user)? {
                            Some(active) => active.id,
                            None => conversations::create(tx, &app, &user, None, 1)?,
                        };
                        Ok(conversation.to_string())
                    })
                    .await
            }));
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in tasks {
            seen.insert(t.await.unwrap().expect("no writer fails"));
        }
        assert_eq!(seen.len(), 1, "round {round}: {seen:?}");
    }
    for r in &relays {
        r.close().await;
    }
}

/// Messages of two apps' conversations, stored as the message path stores
/// them and read back the ways the API reads them (outbox and stream pages
/// resumed from their cursors, a user's history, one conversation).
async fn message_transcript(store: &Store) -> Vec<String> {
    use clawrelay::model::{Direction, Message};
    use clawrelay::store::conversations;
    use clawrelay::store::messages::{self, NewMessage};
    let (app, other_app, agent) = (AppId::generate(), AppId::generate(), ClientId::generate());
    let (app2, other2, agent2) = (app.clone(), other_app.clone(), agent.clone());
    let (conversations, ids) = store
        .write(move |tx| {
            clients::insert(tx, &agent2, "agent", "h", 1)?;
            apps::insert(tx, &app2, "site", "h", 1)?;
            apps::insert(tx, &other2, "elsewhere", "h", 1)?;
            let mut convs = Vec::new();
            for (a, u) in [(&app2, "ann"), (&app2, "bob"), (&other2, "ann")] {
                let user = UserId::parse(u).unwrap();
                convs.push((
                    a.clone(),
                    u.to_owned(),
                    conversations::create(tx, a, &user, Some(&agent2), 1)?,
                ));
            }
            let mut ids = Vec::new();
            for i in 0..12 {
                let (a, u, c) = &convs[i % 3];
                let direction = if i % 2 == 0 {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                };
                let (from, to) = match direction {
                    Direction::Inbound => (u.as_str(), "agent"),
                    Direction::Outbound => ("agent", u.as_str()),
                };
                let reply = format!("r{i}");
                let (_, m) = messages::insert(
                    tx,
                    NewMessage {
                        conversation_id: c,
                        app_id: a,
                        client_id: Some(&agent2),
                        direction,
                        from,
                        to,
                        text: &format!("m{i}"),
                        reply_id: (i % 4 == 1).then_some(reply.as_str()),
                        attachments: &[],
                        now: 100 + i as i64,
                    },
                )?;
                ids.push(m.id);
            }
            Ok::<_, StoreError>((convs, ids))
        })
        .await
        .unwrap();
    let show = |m: &Message| {
        format!(
            "{} {:?} {}->{} t{} reply {:?}",
            m.text, m.direction, m.from, m.to, m.timestamp, m.reply_id
        )
    };
    let texts =
        |rows: &[(i64, Message)]| rows.iter().map(|(_, m)| m.text.clone()).collect::<Vec<_>>();
    let mut out = Vec::new();
    let (first, last) = (ids[0].clone(), ids[11].clone());
    let got = store
        .write(move |tx| {
            Ok::<_, StoreError>((
                messages::get(tx, &first)?,
                messages::seq_of(tx, &last)?.is_some(),
                messages::get(tx, &MessageId::generate())?.is_none(),
            ))
        })
        .await
        .unwrap();
    out.push(format!(
        "get {:?} seq_of known {} unknown none {}",
        got.0.as_ref().map(show),
        got.1,
        got.2
    ));
    for (a, u, c) in &conversations {
        let history = messages::of_conversation(store.reader(), c).await.unwrap();
        out.push(format!(
            "conversation {u}@{}: {:?}",
            if a == &app { "site" } else { "elsewhere" },
            history.iter().map(show).collect::<Vec<_>>()
        ));
    }
    // The outbox of `app` in pages of 2, each resumed from the last cursor.
    let mut after = 0;
    loop {
        let page = messages::outbox(store.reader(), &app, after, 2)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        out.push(format!("outbox page {:?}", texts(&page)));
        let cursor = page.last().unwrap().0;
        assert!(cursor > after, "cursors grow");
        let at = messages::by_seq(store.reader(), cursor).await.unwrap();
        assert_eq!(at.map(|m| m.text), page.last().map(|(_, m)| m.text.clone()));
        after = cursor;
    }
    let stream = messages::stream(store.reader(), &app, None, 0, 100)
        .await
        .unwrap();
    out.push(format!("stream {:?}", texts(&stream)));
    let resumed = messages::stream(store.reader(), &app, None, stream[3].0, 100)
        .await
        .unwrap();
    out.push(format!("stream after the 4th {:?}", texts(&resumed)));
    let one = messages::stream(store.reader(), &app, Some(&conversations[1].2), 0, 100)
        .await
        .unwrap();
    out.push(format!("stream of bob {:?}", texts(&one)));
    let ann = UserId::parse("ann").unwrap();
    for outbound_only in [false, true] {
        let rows = messages::of_user(store.reader(), &app, &ann, None, 0, 100, outbound_only)
            .await
            .unwrap();
        out.push(format!(
            "ann on site, outbound only {outbound_only}: {:?}",
            texts(&rows)
        ));
    }
    let last = messages::last_seq(store.reader()).await.unwrap();
    out.push(format!(
        "last cursor is the stream's last: {}",
        last >= stream.last().unwrap().0
    ));
    out
}

#[tokio::test]
async fn postgres_store_keeps_messages_like_sqlite() {
    same_on_both(
        |store| async move { message_transcript(&store).await },
        &[
            "outbox page [\"m1\", \"m3\"]",
            "stream of bob [\"m1\", \"m4\", \"m7\", \"m10\"]",
            "ann on site, outbound only true: [\"m3\", \"m9\"]",
        ],
    )
    .await;
}

/// Replies stored at once through two relays, read by an app tailing its
/// outbox through a third: every reply once, cursors increasing, nothing
/// skipped although the writers commit in any order (the stamp after each
/// write numbers committed messages in turn).
#[tokio::test]
async fn postgres_outbox_tailed_on_another_relay_misses_nothing() {
    use clawrelay::model::Direction;
    use clawrelay::store::conversations;
    use clawrelay::store::messages::{self, NewMessage};
    let cluster = Cluster::start();
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push(Store::connect_postgres(&cluster.url, 4).await.unwrap());
    }
    let (app, agent) = (AppId::generate(), ClientId::generate());
    let (app2, agent2) = (app.clone(), agent.clone());
    let convs = relays[0]
        .write(move |tx| {
            clients::insert(tx, &agent2, "agent", "h", 1)?;
            apps::insert(tx, &app2, "site", "h", 1)?;
            (0..8)
                .map(|i| {
                    let user = UserId::parse(&format!("u{i}")).unwrap();
                    conversations::create(tx, &app2, &user, Some(&agent2), 1)
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .unwrap();
    const PER_WRITER: usize = 15;
    let mut writers = Vec::new();
    for (w, conversation) in convs.into_iter().enumerate() {
        let store = relays[w % 2].clone();
        let (app, agent) = (app.clone(), agent.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let (c, a, g) = (conversation.clone(), app.clone(), agent.clone());
                store
                    .write(move |tx| {
                        messages::insert(
                            tx,
                            NewMessage {
                                conversation_id: &c,
                                app_id: &a,
                                client_id: Some(&g),
                                direction: Direction::Outbound,
                                from: "agent",
                                to: "user",
                                text: &format!("w{w}-{i}"),
                                reply_id: None,
                                attachments: &[],
                                now: 1,
                            },
                        )
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    let total = 8 * PER_WRITER;
    let reader = relays[2].clone();
    let mut seen = Vec::new();
    let mut after = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.len() < total {
        assert!(
            std::time::Instant::now() < deadline,
            "saw {} of {total}",
            seen.len()
        );
        let page = messages::outbox(reader.reader(), &app, after, 7)
            .await
            .unwrap();
        for (cursor, m) in page {
            assert!(cursor > after, "cursor {cursor} after {after}");
            after = cursor;
            seen.push(m.text);
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let unique: std::collections::BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), total, "each reply once");
    // Each writer's replies in its order.
    for w in 0..8 {
        let mine: Vec<_> = seen
            .iter()
            .filter(|t| t.starts_with(&format!("w{w}-")))
            .cloned()
            .collect();
        let expected: Vec<_> = (0..PER_WRITER).map(|i| format!("w{w}-{i}")).collect();
        assert_eq!(mine, expected);
    }
    for r in &relays {
        r.close().await;
    }
}
