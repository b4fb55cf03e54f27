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
            let adopted = conversations::adopt_unassigned(tx, &o, 5000)?.len();
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
                let m = messages::insert(
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
                        in_reply_to: None,
                        attachments: &[],
                        stopped: false,
                        now: 100 + i as i64,
                    },
                )?
                .message;
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
    let texts = |rows: &[(i64, std::sync::Arc<clawrelay::model::SharedMessage>)]| {
        rows.iter().map(|(_, m)| m.text.clone()).collect::<Vec<_>>()
    };
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
            .unwrap()
            .messages;
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
        .unwrap()
        .messages;
    out.push(format!("stream {:?}", texts(&stream)));
    let resumed = messages::stream(store.reader(), &app, None, stream[3].0, 100)
        .await
        .unwrap()
        .messages;
    out.push(format!("stream after the 4th {:?}", texts(&resumed)));
    let one = messages::stream(store.reader(), &app, Some(&conversations[1].2), 0, 100)
        .await
        .unwrap()
        .messages;
    out.push(format!("stream of bob {:?}", texts(&one)));
    let ann = UserId::parse("ann").unwrap();
    for outbound_only in [false, true] {
        let rows = messages::of_user(store.reader(), &app, &ann, None, 0, 100, outbound_only)
            .await
            .unwrap()
            .messages;
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
    use crate::helpers::agent_message;
    use clawrelay::store::conversations;
    use clawrelay::store::messages;
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
                        let text = format!("w{w}-{i}");
                        messages::insert(tx, agent_message(&c, &a, &g, "user", &text))
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
            .unwrap()
            .messages;
        for (cursor, m) in page {
            assert!(cursor > after, "cursor {cursor} after {after}");
            after = cursor;
            seen.push(m.text.clone());
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

/// Sets up agents `a` and `b`, an app and three conversations (ann and bob
/// with `a`, cat unassigned), and stores and enqueues inbound messages as
/// `/inbound` does: ann 3, bob 2, cat 1, named by conversation and index.
/// Returns the conversations and whether each enqueue was ready.
async fn delivery_backlog(
    store: &Store,
    a: &ClientId,
    b: &ClientId,
) -> (Vec<clawrelay::ids::ConversationId>, Vec<bool>) {
    use clawrelay::model::Direction;
    use clawrelay::store::messages::{self, NewMessage};
    use clawrelay::store::{conversations, deliveries};
    let (a, b) = (a.clone(), b.clone());
    store
        .write(move |tx| {
            clients::insert(tx, &a, "a", "h", 1)?;
            clients::insert(tx, &b, "b", "h", 1)?;
            let app = AppId::generate();
            apps::insert(tx, &app, "site", "h", 1)?;
            let mut convs = Vec::new();
            let mut ready = Vec::new();
            for (user, client, n) in [("ann", Some(&a), 3), ("bob", Some(&a), 2), ("cat", None, 1)]
            {
                let user_id = UserId::parse(user).unwrap();
                let conv = conversations::create(tx, &app, &user_id, client, 1)?;
                for i in 0..n {
                    let seq = messages::insert(
                        tx,
                        NewMessage {
                            conversation_id: &conv,
                            app_id: &app,
                            client_id: client,
                            direction: Direction::Inbound,
                            from: user,
                            to: "agent",
                            text: &format!("{user}{i}"),
                            reply_id: None,
                            in_reply_to: None,
                            attachments: &[],
                            stopped: false,
                            now: 10,
                        },
                    )?
                    .seq;
                    ready.push(deliveries::enqueue(tx, seq, &conv, client, 10)?);
                }
                convs.push(conv);
            }
            Ok::<_, StoreError>((convs, ready))
        })
        .await
        .unwrap()
}

/// The delivery queue as the domain drives it: enqueue, claim (due, lease,
/// the claimed messages), leases that end, acks one by one and per
/// conversation, the next message promoted, release of a session's leases,
/// adoption and moves between agents, a row out of attempts retired and
/// requeued, and the admin listing by each filter.
async fn delivery_transcript(store: &Store) -> Vec<String> {
    use clawrelay::model::DeliveryState;
    use clawrelay::store::deliveries::{self, Filter};
    let (a, b) = (ClientId::generate(), ClientId::generate());
    let (convs, ready) = delivery_backlog(store, &a, &b).await;
    let name = |c: &clawrelay::ids::ConversationId| {
        ["ann", "bob", "cat"][convs.iter().position(|x| x == c).unwrap()]
    };
    let mut out = vec![format!("enqueued ready {ready:?}")];
    let reader = store.reader().clone();
    out.push(format!(
        "a earliest ready {:?}, oldest due at 5 {:?} and at 10 {:?}",
        deliveries::earliest_ready(store.hot(), &a).await.unwrap(),
        deliveries::oldest_due(&reader, &a, 5).await.unwrap(),
        deliveries::oldest_due(&reader, &a, 10).await.unwrap(),
    ));

    // A claim as `Relay::claim` makes it: due rows, leased, their messages.
    let claim = |client: ClientId, now: i64, until: i64, owner: Option<&'static str>| {
        store.write(move |tx| {
            let due = deliveries::due(tx, &client, now, 10)?;
            let seqs: Vec<i64> = due.iter().map(|d| d.seq).collect();
            deliveries::lease(tx, &seqs, until, now, owner)?;
            let messages = deliveries::claimed_messages(tx, &seqs)?;
            let next = deliveries::next_visible_at(tx, &client, now)?;
            Ok::<_, StoreError>((due, messages, next))
        })
    };
    let show = |(due, messages, next): &(
        Vec<deliveries::Due>,
        Vec<clawrelay::model::Message>,
        Option<i64>,
    )| {
        let got: Vec<String> = messages
            .iter()
            .map(|m| format!("{} attempt {:?}", m.text, m.attempt))
            .collect();
        format!("{} rows {got:?} next visible {next:?}", due.len())
    };
    let first = claim(a.clone(), 100, 600, Some("s1")).await.unwrap();
    out.push(format!("a claims at 100: {}", show(&first)));
    out.push(format!(
        "b claims at 100: {}",
        show(&claim(b.clone(), 100, 600, None).await.unwrap())
    ));
    out.push(format!(
        "a claims at 200: {}",
        show(&claim(a.clone(), 200, 700, None).await.unwrap())
    ));
    out.push(format!(
        "s1 holds at 200: {}, at 600: {}",
        deliveries::count_owned(&reader, "s1", 200).await.unwrap(),
        deliveries::count_owned(&reader, "s1", 600).await.unwrap(),
    ));

    // Acks: ann's first by a (then again, then by b), bob's per conversation.
    let ann0 = first.1[0].id.clone();
    let (a2, b2, bob) = (a.clone(), b.clone(), convs[1].clone());
    let acks = store
        .write(move |tx| {
            let acked = deliveries::ack(tx, &a2, &ann0, 300)?;
            let promoted = match &acked {
                Some(c) => deliveries::promote_next(tx, c, 300)?,
                None => None,
            };
            let again = deliveries::ack(tx, &a2, &ann0, 300)?;
            let by_b = deliveries::ack(tx, &b2, &ann0, 300)?;
            let unclaimed = deliveries::ack_conversation(tx, &b2, &bob, 300)?.count;
            let per_conversation = deliveries::ack_conversation(tx, &a2, &bob, 300)?.count;
            let bob_next = deliveries::promote_next(tx, &bob, 300)?;
            let bob_twice = deliveries::promote_next(tx, &bob, 300)?;
            Ok::<_, StoreError>((
                acked,
                promoted,
                again,
                by_b,
                unclaimed,
                per_conversation,
                bob_next,
                bob_twice,
            ))
        })
        .await
        .unwrap();
    out.push(format!(
        "ack ann0: {:?} promoted {:?}; again {:?}; by b {:?}; bob by b {}, by a {}, \
         bob's next promoted {:?}, twice {:?}",
        acks.0.as_ref().map(name),
        acks.1.as_ref().map(|c| c.as_ref() == Some(&a)),
        acks.2,
        acks.3,
        acks.4,
        acks.5,
        acks.6.as_ref().map(|c| c.as_ref() == Some(&a)),
        acks.7,
    ));

    // A session's leases end with it: its rows are due again at once.
    let second = claim(a.clone(), 400, 900, Some("s2")).await.unwrap();
    out.push(format!("a claims at 400 for s2: {}", show(&second)));
    let released = store
        .write(|tx| deliveries::release_owner(tx, "s2", 450))
        .await
        .unwrap();
    out.push(format!(
        "s2 released {released}; s2 holds {}; a claims at 450: {}",
        deliveries::count_owned(&reader, "s2", 450).await.unwrap(),
        show(&claim(a.clone(), 450, 950, None).await.unwrap())
    ));

    // b adopts the unassigned conversation's row; ann moves to b, with its
    // lease ended; then what each agent holds.
    let (a2, b2, ann) = (a.clone(), b.clone(), convs[0].clone());
    let moved = store
        .write(move |tx| {
            let adopted = clawrelay::store::conversations::adopt_unassigned(tx, &b2, 500)?.len();
            deliveries::move_conversation(tx, &ann, Some(&b2), 500)?;
            let of_a = deliveries::open_conversations_of(tx, &a2)?;
            let mut of_b = deliveries::open_conversations_of(tx, &b2)?;
            of_b.sort_by_key(|c| c.as_str().to_owned());
            Ok::<_, StoreError>((adopted, of_a, of_b))
        })
        .await
        .unwrap();
    let mut of_b: Vec<&str> = moved.2.iter().map(name).collect();
    of_b.sort();
    out.push(format!(
        "b adopted {}; a holds {:?}; b holds {of_b:?}",
        moved.0,
        moved.1.iter().map(name).collect::<Vec<_>>(),
    ));
    out.push(format!(
        "b claims at 500: {}",
        show(&claim(b.clone(), 500, 500, None).await.unwrap())
    ));

    // Cat's row, leased until it is due at once, runs out of attempts: the
    // claim retires it, and an admin requeues it.
    for now in [510, 520] {
        claim(b.clone(), now, now, None).await.unwrap();
    }
    let (b2, cat) = (b.clone(), convs[2].clone());
    let retired = store
        .write(move |tx| {
            let due = deliveries::due(tx, &b2, 530, 10)?;
            let mut outcomes = Vec::new();
            for d in &due {
                if d.conversation_id == cat {
                    outcomes.push((d.attempts, deliveries::retire(tx, d, 530)?, d.seq));
                }
            }
            Ok::<_, StoreError>(outcomes)
        })
        .await
        .unwrap();
    let (attempts, outcome, cat_seq) = retired[0].clone();
    out.push(format!(
        "cat's row after {attempts} attempts retired: {outcome:?}"
    ));
    let requeued = store
        .write(move |tx| {
            let first = deliveries::requeue(tx, cat_seq, 540)?;
            let again = deliveries::requeue(tx, cat_seq, 540)?;
            Ok::<_, StoreError>((first, again))
        })
        .await
        .unwrap();
    out.push(format!(
        "requeued {:?}, again {:?}",
        requeued.0.as_ref().map(|(c, r)| (name(c), r)),
        requeued.1
    ));

    // The admin listing, by each filter, at 545.
    let list = |state, client, conversation, before| {
        let reader = reader.clone();
        async move {
            deliveries::list(
                &reader,
                Filter {
                    state,
                    client,
                    conversation,
                    before,
                    limit: 3,
                },
                545,
            )
            .await
            .unwrap()
        }
    };
    let describe = |rows: &[(i64, clawrelay::model::Delivery)]| {
        rows.iter()
            .map(|(_, d)| {
                format!(
                    "{} {:?} x{} {}",
                    d.message.text,
                    d.state,
                    d.attempts,
                    d.client_id
                        .as_ref()
                        .map_or("-", |c| if c == &a { "a" } else { "b" })
                )
            })
            .collect::<Vec<_>>()
    };
    let page = list(None, None, None, None).await;
    out.push(format!("list {:?}", describe(&page)));
    let next = list(None, None, None, Some(page.last().unwrap().0)).await;
    out.push(format!("list, next page {:?}", describe(&next)));
    for state in [
        DeliveryState::Pending,
        DeliveryState::Leased,
        DeliveryState::Queued,
        DeliveryState::Acked,
        DeliveryState::Dead,
    ] {
        let rows = list(Some(state), None, None, None).await;
        out.push(format!("list {state:?} {:?}", describe(&rows)));
    }
    out.push(format!(
        "list of b {:?}",
        describe(&list(None, Some(&b), None, None).await)
    ));
    out.push(format!(
        "list of bob {:?}",
        describe(&list(None, None, Some(&convs[1]), None).await)
    ));
    out
}

#[tokio::test]
async fn postgres_store_keeps_the_delivery_queue_like_sqlite() {
    same_on_both(
        |store| async move { delivery_transcript(&store).await },
        &[
            "enqueued ready [true, false, false, true, false, true]",
            "a claims at 100: 2 rows [\"ann0 attempt Some(1)\", \"bob0 attempt Some(1)\"] next visible Some(600)",
            "a claims at 200: 0 rows [] next visible Some(600)",
            "s2 released 2; s2 holds 0; a claims at 450: 2 rows [\"ann1 attempt Some(2)\", \"bob1 attempt Some(2)\"] next visible Some(950)",
            "b adopted 1; a holds [\"bob\"]; b holds [\"ann\", \"cat\"]",
            "cat's row after 3 attempts retired: Dead { promoted: None }",
            "requeued Some((\"cat\", true)), again None",
            "list of b [\"cat0 Pending x0 b\", \"ann2 Queued x0 b\", \"ann1 Pending x5 b\"]",
            "list Leased [\"bob1 Leased x2 a\"]",
        ],
    )
    .await;
}

/// A backlog of inbound messages for one agent (see [`claim_backlog`]).
struct Backlog {
    app: AppId,
    agent: ClientId,
    /// Each conversation with its messages' ids in order.
    conversations: Vec<(clawrelay::ids::ConversationId, Vec<MessageId>)>,
}

impl Backlog {
    /// Agent `agent`, an app, and `conversations` conversations of theirs.
    async fn open(store: &Store, agent: &ClientId, conversations: usize) -> Backlog {
        use clawrelay::store::conversations as convs;
        let (app, a) = (AppId::generate(), agent.clone());
        let app2 = app.clone();
        let ids = store
            .write(move |tx| {
                clients::insert(tx, &a, "a", "h", 1)?;
                apps::insert(tx, &app2, "site", "h", 1)?;
                let mut ids = Vec::new();
                for c in 0..conversations {
                    let user = UserId::parse(&format!("u{c}")).unwrap();
                    ids.push(convs::create(tx, &app2, &user, Some(&a), 1)?);
                }
                Ok::<_, StoreError>(ids)
            })
            .await
            .unwrap();
        Backlog {
            app,
            agent: agent.clone(),
            conversations: ids.into_iter().map(|c| (c, Vec::new())).collect(),
        }
    }

    /// Stores and enqueues message `i` (its text) of each conversation as
    /// `/inbound` does, one write per message; answers which were ready.
    async fn add(&mut self, store: &Store, i: usize) -> Vec<bool> {
        use clawrelay::model::Direction;
        use clawrelay::store::deliveries;
        use clawrelay::store::messages::{self, NewMessage};
        let mut ready = Vec::new();
        for (conv, messages) in &mut self.conversations {
            let (app, agent, c) = (self.app.clone(), self.agent.clone(), conv.clone());
            let (id, is_ready) = store
                .write(move |tx| {
                    let messages::Inserted {
                        seq, message: m, ..
                    } = messages::insert(
                        tx,
                        NewMessage {
                            conversation_id: &c,
                            app_id: &app,
                            client_id: Some(&agent),
                            direction: Direction::Inbound,
                            from: "u",
                            to: "agent",
                            text: &i.to_string(),
                            reply_id: None,
                            in_reply_to: None,
                            attachments: &[],
                            stopped: false,
                            now: 10,
                        },
                    )?;
                    let ready = deliveries::enqueue(tx, seq, &c, Some(&agent), 10)?;
                    Ok::<_, StoreError>((m.id, ready))
                })
                .await
                .unwrap();
            messages.push(id);
            ready.push(is_ready);
        }
        ready
    }
}

/// Agent `agent` with `conversations` conversations of `n` inbound messages
/// each (texts are the messages' indexes), stored and enqueued as
/// `/inbound` does, one write per message. Returns each conversation with
/// its messages' ids in order.
async fn claim_backlog(
    store: &Store,
    agent: &ClientId,
    conversations: usize,
    n: usize,
) -> Vec<(clawrelay::ids::ConversationId, Vec<MessageId>)> {
    let mut backlog = Backlog::open(store, agent, conversations).await;
    for i in 0..n {
        let ready = backlog.add(store, i).await;
        assert!(
            ready.iter().all(|r| *r == (i == 0)),
            "only a conversation's first message is ready"
        );
    }
    backlog.conversations
}

/// Three relays, two claimers each, claiming for one agent at once through
/// `Store::write` as `Relay::claim` and `Relay::ack` do, while half of the
/// messages arrive through a fourth relay: every message is
/// claimed exactly once within its lease (SKIP LOCKED hands different rows
/// to concurrent claims, a row leased meanwhile is left alone), and each
/// conversation's messages go out in order, one in flight at a time: the
/// log written inside the transactions reads claim 0, ack 0, claim 1, ...
#[tokio::test]
async fn postgres_concurrent_claims_take_each_row_once_in_order() {
    use clawrelay::store::deliveries;
    use std::sync::{Arc, Mutex};
    const CONVERSATIONS: usize = 20;
    const EACH: usize = 10;
    let cluster = Cluster::start();
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push(Store::connect_postgres(&cluster.url, 6).await.unwrap());
    }
    let agent = ClientId::generate();
    let mut backlog = Backlog::open(&relays[0], &agent, CONVERSATIONS).await;
    for i in 0..EACH / 2 {
        backlog.add(&relays[0], i).await;
    }
    /// (conversation, "claim" or "ack", the message's index), in the order
    /// the transactions did them.
    type Log = Arc<Mutex<Vec<(String, &'static str, usize)>>>;
    let log: Log = Arc::default();
    // The other half arrives through a fourth relay while the agent works,
    // each enqueue racing the acks of its conversation.
    let producing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let producer = {
        let store = Store::connect_postgres(&cluster.url, 2).await.unwrap();
        let producing = producing.clone();
        tokio::spawn(async move {
            for i in EACH / 2..EACH {
                backlog.add(&store, i).await;
            }
            producing.store(false, std::sync::atomic::Ordering::SeqCst);
            store.close().await;
            backlog
        })
    };

    let mut claimers = Vec::new();
    for (r, relay) in relays.iter().enumerate() {
        for k in 0..2 {
            let (store, agent, log) = (relay.clone(), agent.clone(), log.clone());
            let producing = producing.clone();
            claimers.push(tokio::spawn(async move {
                let owner: &'static str = Box::leak(format!("relay{r}-{k}").into_boxed_str());
                let mut claimed = 0;
                let mut idle = 0;
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
                while idle < 40 && tokio::time::Instant::now() < deadline {
                    let (who, log2) = (agent.clone(), log.clone());
                    let messages = store
                        .write_relaxed(move |tx| {
                            let now = clawrelay::store::now_ms();
                            let due = deliveries::due(tx, &who, now, 3)?;
                            let seqs: Vec<i64> = due.iter().map(|d| d.seq).collect();
                            deliveries::lease(tx, &seqs, now + 60_000, now, Some(owner))?;
                            let messages = deliveries::claimed_messages(tx, &seqs)?;
                            let mut log = log2.lock().unwrap();
                            for m in &messages {
                                log.push((
                                    m.conversation_id.as_str().to_owned(),
                                    "claim",
                                    m.text.parse().unwrap(),
                                ));
                            }
                            Ok::<_, StoreError>(messages)
                        })
                        .await
                        .unwrap();
                    if messages.is_empty() {
                        if !producing.load(std::sync::atomic::Ordering::SeqCst) {
                            idle += 1;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        continue;
                    }
                    idle = 0;
                    for m in messages {
                        assert_eq!(m.attempt, Some(1), "claimed once within its lease");
                        let (who, log2) = (agent.clone(), log.clone());
                        store
                            .write(move |tx| {
                                let now = clawrelay::store::now_ms();
                                let acked = deliveries::ack(tx, &who, &m.id, now)?;
                                assert_eq!(acked.as_ref(), Some(&m.conversation_id));
                                deliveries::promote_next(tx, &m.conversation_id, now)?;
                                log2.lock().unwrap().push((
                                    m.conversation_id.as_str().to_owned(),
                                    "ack",
                                    m.text.parse().unwrap(),
                                ));
                                Ok::<_, StoreError>(())
                            })
                            .await
                            .unwrap();
                        claimed += 1;
                    }
                }
                claimed
            }));
        }
    }
    let backlog = producer.await.unwrap();
    let mut busy_claimers = 0;
    let mut total = 0;
    for c in claimers {
        let n = c.await.unwrap();
        busy_claimers += usize::from(n > 0);
        total += n;
    }
    assert_eq!(total, CONVERSATIONS * EACH, "every message claimed once");
    assert!(busy_claimers >= 2, "the claims were spread over claimers");
    let log = std::mem::take(&mut *log.lock().unwrap());
    for (conv, _) in &backlog.conversations {
        let steps: Vec<(&str, usize)> = log
            .iter()
            .filter(|(c, _, _)| c == conv.as_str())
            .map(|(_, kind, i)| (*kind, *i))
            .collect();
        let expected: Vec<(&str, usize)> =
            (0..EACH).flat_map(|i| [("claim", i), ("ack", i)]).collect();
        assert_eq!(steps, expected, "the turns of {conv}");
    }
    let live = [agent.clone()];
    let open = relays[1]
        .write(move |tx| clients::least_loaded(tx, &live))
        .await
        .unwrap();
    assert_eq!(open, Some((agent.clone(), 0)), "nothing left open");
    for r in &relays {
        r.close().await;
    }
}

/// A claim that finds rows out of attempts retires them (dead, the next
/// message of the conversation ready) under the conversation's lock, and
/// never waits for it: here an agent's late ack of one of those rows holds
/// its conversation and waits for the row the claim holds. The claim leaves
/// that row to the ack instead of deadlocking with it (PostgreSQL would
/// abort one of the two), and retires the other.
#[tokio::test]
async fn postgres_a_dead_letter_never_waits_for_a_busy_conversation() {
    use clawrelay::store::deliveries::{self, Retired};
    use clawrelay::store::{Reader, Tx};
    use std::time::{Duration, Instant};
    let cluster = Cluster::start();
    let store = Store::connect_postgres(&cluster.url, 6).await.unwrap();
    let Reader::Postgres(db) = store.reader().clone() else {
        unreachable!()
    };
    let agent = ClientId::generate();
    let backlog = claim_backlog(&store, &agent, 2, 2).await;
    let now = clawrelay::store::now_ms();
    // Both first messages were delivered 3 times and their leases ended.
    sqlx::query("UPDATE deliveries SET attempts = 3, visible_at = $1 WHERE state = 'ready'")
        .bind(now - 1)
        .execute(&db)
        .await
        .unwrap();

    // The claim takes (and locks) both due rows, lets the test start the
    // ack, waits until the ack waits for one of its rows, then retires both.
    let (took, taken) = tokio::sync::oneshot::channel();
    let mut took = Some(took);
    let claim = {
        let (agent, store) = (agent.clone(), store.clone());
        async move {
            store
                .write(move |tx| {
                    let due = deliveries::due(tx, &agent, now, 10)?;
                    assert_eq!(due.len(), 2);
                    assert!(due.iter().all(|d| d.attempts == 3));
                    took.take().unwrap().send(()).unwrap();
                    let Tx::Postgres(pg) = tx else { unreachable!() };
                    let deadline = Instant::now() + Duration::from_secs(20);
                    loop {
                        let waiting: i64 = pg.fetch_one(
                            sqlx::query("SELECT count(*) FROM pg_locks WHERE NOT granted")
                                .try_map(|r: sqlx::postgres::PgRow| sqlx::Row::try_get(&r, 0)),
                        )?;
                        if waiting > 0 {
                            break;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "the ack never waited for the claim"
                        );
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let started = Instant::now();
                    let mut outcomes = Vec::new();
                    for d in &due {
                        outcomes.push((d.conversation_id.clone(), deliveries::retire(tx, d, now)?));
                    }
                    Ok::<_, StoreError>((outcomes, started.elapsed()))
                })
                .await
        }
    };
    let claim = tokio::spawn(claim);
    taken.await.unwrap();
    // The late ack of the first conversation's row: it locks that
    // conversation, then waits for the row.
    let ack = {
        let (agent, id, store) = (agent.clone(), backlog[0].1[0].clone(), store.clone());
        tokio::spawn(async move {
            store
                .write(move |tx| {
                    let acked = deliveries::ack(tx, &agent, &id, now)?;
                    let promoted = match &acked {
                        Some(conv) => deliveries::promote_next(tx, conv, now)?,
                        None => None,
                    };
                    Ok::<_, StoreError>((acked, promoted))
                })
                .await
        })
    };
    let (outcomes, retiring) = claim.await.unwrap().unwrap();
    assert!(
        retiring < Duration::from_secs(1),
        "retiring took {retiring:?}"
    );
    assert_eq!(
        outcomes,
        [
            (backlog[0].0.clone(), Retired::Busy),
            (
                backlog[1].0.clone(),
                Retired::Dead {
                    promoted: Some(Some(agent.clone()))
                }
            ),
        ]
    );

    // The ack went through once the claim let go of the row.
    let (acked, promoted) = tokio::time::timeout(Duration::from_secs(10), ack)
        .await
        .expect("the ack finishes")
        .unwrap()
        .unwrap();
    assert_eq!(acked.as_ref(), Some(&backlog[0].0));
    assert_eq!(promoted, Some(Some(agent.clone())));

    let states: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.id, d.state FROM deliveries d JOIN messages m ON m.seq = d.message_seq",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let state_of = |id: &MessageId| {
        states
            .iter()
            .find(|(m, _)| m == id.as_str())
            .map(|(_, s)| s.as_str())
            .unwrap()
    };
    let got: Vec<&str> = backlog
        .iter()
        .flat_map(|(_, ids)| ids.iter().map(state_of))
        .collect();
    assert_eq!(got, ["acked", "ready", "dead", "ready"]);
    store.close().await;
}

/// An inbound message arriving while an agent's ack of the conversation's
/// message in flight is still open (on another relay) waits for that ack,
/// then finds nothing in flight and is ready at once. Were it not to wait,
/// it would see the acked row still ready, queue behind it, and stay queued
/// for ever: the ack's promotion ran before the new row existed. (The ack
/// holds the conversation's lock; the new message's insert takes it first,
/// and the enqueue takes it too.)
#[tokio::test]
async fn postgres_an_enqueue_racing_an_ack_is_not_stranded() {
    use clawrelay::store::deliveries;
    use clawrelay::store::Tx;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let cluster = Cluster::start();
    let (a, b) = (
        Store::connect_postgres(&cluster.url, 4).await.unwrap(),
        Store::connect_postgres(&cluster.url, 4).await.unwrap(),
    );
    let agent = ClientId::generate();
    let mut backlog = Backlog::open(&a, &agent, 1).await;
    assert_eq!(backlog.add(&a, 0).await, [true]);
    let who = agent.clone();
    let claimed = a
        .write(move |tx| {
            let due = deliveries::due(tx, &who, 100, 10)?;
            let seqs: Vec<i64> = due.iter().map(|d| d.seq).collect();
            deliveries::lease(tx, &seqs, 60_000, 100, None)?;
            deliveries::claimed_messages(tx, &seqs)
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);

    // The ack on relay a stays open until the enqueue on relay b has
    // either finished or is seen waiting for a lock.
    let (acked_tx, acked) = tokio::sync::oneshot::channel();
    let mut acked_tx = Some(acked_tx);
    let enqueued = Arc::new(AtomicBool::new(false));
    let ack = {
        let (store, who, id, enqueued) = (
            a.clone(),
            agent.clone(),
            claimed[0].id.clone(),
            enqueued.clone(),
        );
        tokio::spawn(async move {
            store
                .write(move |tx| {
                    let conversation = deliveries::ack(tx, &who, &id, 200)?;
                    let promoted =
                        deliveries::promote_next(tx, conversation.as_ref().unwrap(), 200)?;
                    acked_tx.take().unwrap().send(()).unwrap();
                    let Tx::Postgres(pg) = tx else { unreachable!() };
                    let deadline = Instant::now() + Duration::from_secs(20);
                    let mut enqueue_waited = false;
                    while !enqueued.load(Ordering::SeqCst) && !enqueue_waited {
                        assert!(
                            Instant::now() < deadline,
                            "the enqueue neither ended nor waited"
                        );
                        std::thread::sleep(Duration::from_millis(10));
                        let waiting: i64 = pg.fetch_one(
                            sqlx::query("SELECT count(*) FROM pg_locks WHERE NOT granted")
                                .try_map(|r: sqlx::postgres::PgRow| sqlx::Row::try_get(&r, 0)),
                        )?;
                        enqueue_waited = waiting > 0;
                    }
                    Ok::<_, StoreError>((promoted, enqueue_waited))
                })
                .await
        })
    };
    acked.await.unwrap();
    let ready = backlog.add(&b, 1).await;
    enqueued.store(true, Ordering::SeqCst);
    let (promoted, enqueue_waited) = ack.await.unwrap().unwrap();
    assert_eq!(promoted, None, "nothing was queued when the ack promoted");
    assert!(enqueue_waited, "the enqueue waited for the ack");
    assert_eq!(
        ready,
        [true],
        "the new message is ready, not queued behind the acked one"
    );
    let who = agent.clone();
    let due = b
        .write(move |tx| deliveries::due(tx, &who, 300, 10))
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "the new message is claimable");
    a.close().await;
    b.close().await;
}

/// Sessions and the accounts behind them: logins opened, refreshed,
/// revoked one by one and per account, credentials as an app's rotation,
/// an account's disabling and a revoked app end them, and the purge of
/// ended sessions.
async fn session_transcript(store: &Store) -> Vec<String> {
    use clawrelay::ids::{AccountId, SessionId};
    use clawrelay::store::sessions::{self, NewSession};
    let (app, account) = (AppId::generate(), AccountId::generate());
    let ids: Vec<SessionId> = (0..4).map(|_| SessionId::generate()).collect();
    let (app2, account2, ids2) = (app.clone(), account.clone(), ids.clone());
    let mut out = Vec::new();
    let setup = store
        .write(move |tx| {
            apps::insert(tx, &app2, "site", "h", 1)?;
            let free = sessions::name_taken(tx, "ann")?;
            sessions::insert_account(tx, &account2, &app2, "ann", "pw1", 5)?;
            let taken = sessions::name_taken(tx, "ann")?;
            let user = UserId::parse("ann").unwrap();
            for (i, id) in ids2.iter().enumerate() {
                sessions::insert(
                    tx,
                    NewSession {
                        id,
                        app: &app2,
                        user: &user,
                        account: (i < 2).then_some(&account2),
                        token_hash: &format!("t{i}"),
                        now: 10,
                        expires_at: 1000 + i as i64,
                    },
                )?;
            }
            Ok::<_, StoreError>((free, taken))
        })
        .await
        .unwrap();
    out.push(format!("name taken before {}, after {}", setup.0, setup.1));
    let show = |c: Option<sessions::SessionCredential>| {
        c.map(|c| {
            format!(
                "{} {} v{} until {}",
                c.hash,
                c.user.as_str(),
                c.version,
                c.expires_at
            )
        })
    };
    for id in &ids {
        out.push(format!(
            "credential at 500 {:?}",
            show(sessions::credential(store.reader(), id, 500).await.unwrap())
        ));
    }
    let ids2 = ids.clone();
    let changed = store
        .write(move |tx| {
            Ok::<_, StoreError>((
                sessions::refresh(tx, &ids2[0], 500, 5000)?,
                sessions::refresh(tx, &ids2[3], 2000, 5000)?,
                sessions::revoke(tx, &ids2[2], 600)?,
                sessions::revoke(tx, &ids2[2], 600)?,
            ))
        })
        .await
        .unwrap();
    out.push(format!(
        "refresh live {:?}, expired {:?}; revoke {}, again {}",
        changed.0, changed.1, changed.2, changed.3
    ));
    out.push(format!(
        "after: 0 at 2000 {:?}, 2 at 700 {:?}",
        show(
            sessions::credential(store.reader(), &ids[0], 2000)
                .await
                .unwrap()
        ),
        show(
            sessions::credential(store.reader(), &ids[2], 700)
                .await
                .unwrap()
        ),
    ));
    let account2 = account.clone();
    let accounts = store
        .write(move |tx| {
            let disabled = sessions::set_disabled(tx, "ann", Some(800))?;
            let nobody = sessions::set_disabled(tx, "bob", Some(800))?;
            let password = sessions::set_password(tx, "ann", "pw2")?;
            let revoked = sessions::revoke_for_account(tx, &account2, 900)?;
            Ok::<_, StoreError>((disabled, nobody, password, revoked))
        })
        .await
        .unwrap();
    out.push(format!(
        "disable ann {}, bob {:?}; password ann {}; revoked for account {:?}",
        accounts.0.as_ref() == Some(&account),
        accounts.1,
        accounts.2.as_ref() == Some(&account),
        {
            // A set: in no particular order.
            let mut revoked: Vec<usize> = accounts
                .3
                .iter()
                .map(|s| ids.iter().position(|x| x == s).unwrap())
                .collect();
            revoked.sort();
            revoked
        }
    ));
    for (name, app) in [(Some("ann"), None), (None, Some(&app)), (Some("bob"), None)] {
        let rows = sessions::accounts(store.reader(), name, app).await.unwrap();
        out.push(format!(
            "accounts {name:?}: {:?}",
            rows.iter()
                .map(|a| format!(
                    "{} {} {} {:?}",
                    a.name, a.password_hash, a.created_at, a.disabled_at
                ))
                .collect::<Vec<_>>()
        ));
    }
    out.push(format!(
        "credential of 3 (no account) at 900 {:?}",
        show(
            sessions::credential(store.reader(), &ids[3], 900)
                .await
                .unwrap()
        )
    ));
    let purged = store
        .write(|tx| sessions::purge(tx, 1002, 100))
        .await
        .unwrap();
    out.push(format!("purged before 1002: {purged}"));
    out
}

#[tokio::test]
async fn postgres_store_keeps_sessions_like_sqlite() {
    same_on_both(
        |store| async move { session_transcript(&store).await },
        &[
            "name taken before false, after true",
            "refresh live Some(5000), expired None; revoke true, again false",
            "disable ann true, bob None; password ann true; revoked for account [0, 1]",
            "accounts Some(\"ann\"): [\"ann pw2 5 Some(800)\"]",
            "credential of 3 (no account) at 900 Some(\"t3 ann v0 until 1003\")",
        ],
    )
    .await;
}

/// Webhook endpoints and their queue: events recorded for subscribers only,
/// attempts delivered, retried, given up and disabling an endpoint past its
/// limit, re-enabling, replays, a secret rotation, the admin listing and
/// the purge of old events.
async fn webhook_transcript(store: &Store) -> Vec<String> {
    use clawrelay::ids::{ConversationId, WebhookId};
    use clawrelay::store::conversations;
    use clawrelay::store::webhooks::{self, Change, NewWebhook, Outcome, ReplayRange, Retry};
    let (app, hooks) = (
        AppId::generate(),
        [WebhookId::generate(), WebhookId::generate()],
    );
    let (app2, hooks2) = (app.clone(), hooks.clone());
    let conv: ConversationId = store
        .write(move |tx| {
            apps::insert(tx, &app2, "site", "h", 1)?;
            for (id, events) in hooks2.iter().zip(["message delivery.dead", "message"]) {
                webhooks::insert(
                    tx,
                    NewWebhook {
                        id,
                        app_id: &app2,
                        url: "http://127.0.0.1:9/hook",
                        events,
                        secret: b"sealed-secret",
                        now: 10,
                    },
                )?;
            }
            conversations::create(tx, &app2, &UserId::parse("ann").unwrap(), None, 10)
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    let (app2, conv2) = (app.clone(), conv.clone());
    let recorded = store
        .write(move |tx| {
            let mut r = Vec::new();
            for (i, kind) in [
                "message",
                "delivery.dead",
                "conversation.expired",
                "message",
            ]
            .iter()
            .enumerate()
            {
                r.push(
                    webhooks::record_event(
                        tx,
                        &app2,
                        kind,
                        &conv2,
                        || format!("{{\"n\":{i}}}"),
                        100 + i as i64,
                    )?
                    .map(|q| {
                        (
                            q.body.to_string(),
                            q.endpoints.len(),
                            q.conversation_id == conv2,
                        )
                    }),
                );
            }
            Ok::<_, StoreError>(r)
        })
        .await
        .unwrap();
    out.push(format!("recorded {recorded:?}"));
    let name = |id: &WebhookId| if id == &hooks[0] { "h0" } else { "h1" };
    let list = |store: Store| async move {
        webhooks::list(store.reader(), None, None)
            .await
            .unwrap()
            .iter()
            .map(|w| {
                format!(
                    "{:?} enabled {} failures {} since {:?} reason {:?} backlog {} old until {:?} updated {}",
                    w.events, w.enabled, w.failures, w.failing_since, w.disabled_reason, w.backlog,
                    w.old_secret_until, w.updated_at
                )
            })
            .collect::<Vec<_>>()
    };
    out.push(format!("list {:?}", list(store.clone()).await));
    let endpoints = webhooks::enabled(store.reader()).await.unwrap();
    out.push(format!(
        "enabled {:?}",
        endpoints
            .iter()
            .map(|e| (name(&e.id), e.secret.clone()))
            .collect::<Vec<_>>()
    ));
    let pending = webhooks::pending(store.reader(), &hooks[0], 10)
        .await
        .unwrap();
    let mut bodies = Vec::new();
    for p in &pending {
        let (_, body) = webhooks::event(store.reader(), p.event_seq)
            .await
            .unwrap()
            .unwrap();
        bodies.push((body, p.next_at, p.conversation_id == conv));
    }
    out.push(format!("h0 pending {bodies:?}"));
    let seqs: Vec<i64> = pending.iter().map(|p| p.event_seq).collect();

    // h0: the first event delivered, the second fails twice (given up the
    // second time), the third fails and disables the endpoint (limit 3).
    let (h0, s) = (hooks[0].clone(), seqs.clone());
    let attempts = store
        .write(move |tx| {
            let outcome = |seq: i64, status: Option<u16>, at: i64| Outcome {
                webhook_id: h0.clone(),
                event_seq: seq,
                at,
                status,
                latency_ms: 7,
                error: status.is_none().then(|| "connection refused".to_owned()),
                response: status.map(|s| format!("body {s}")),
            };
            let retry = |give_up_before: i64| Retry {
                next_at: 900,
                give_up_before,
                disable_after: 3,
            };
            let mut r = Vec::new();
            for (seq, status, at, give_up) in [
                (s[0], Some(204), 200, 0),
                (s[1], Some(500), 210, 0),
                (s[1], None, 220, 1000),
                (s[2], Some(503), 230, 0),
            ] {
                let rec = webhooks::record_attempt(tx, &outcome(seq, status, at), true, |_| {
                    retry(give_up)
                })?;
                r.push(format!(
                    "attempt {} gave up {} disabled {} attempts now {}",
                    status.map_or("refused".to_owned(), |s| s.to_string()),
                    rec.gave_up,
                    rec.disabled,
                    webhooks::attempts_of(tx, &h0, seq)?
                ));
            }
            webhooks::trim_attempts(tx, &h0)?;
            Ok::<_, StoreError>(r)
        })
        .await
        .unwrap();
    out.extend(attempts);
    out.push(format!("list {:?}", list(store.clone()).await));
    let tried = webhooks::attempts(store.reader(), &hooks[0], 3)
        .await
        .unwrap();
    out.push(format!(
        "h0 attempts {:?}",
        tried
            .iter()
            .map(|a| format!(
                "{} {} {:?} {:?} {:?}",
                a.event_type, a.at, a.status, a.error, a.response
            ))
            .collect::<Vec<_>>()
    ));
    let mut backlog = webhooks::backlog(store.reader()).await.unwrap();
    backlog.sort_by_key(|b| name(&b.0));
    out.push(format!(
        "backlog {:?}",
        backlog
            .iter()
            .map(|(id, n, oldest)| (name(id), n, oldest))
            .collect::<Vec<_>>()
    ));

    let (h0, h1) = (hooks[0].clone(), hooks[1].clone());
    let changed = store
        .write(move |tx| {
            let enable = webhooks::update(
                tx,
                &h0,
                Change {
                    url: Some("http://127.0.0.1:9/new"),
                    events: None,
                    enabled: Some(true),
                },
                300,
            )?;
            let unknown = webhooks::update(
                tx,
                &WebhookId::generate(),
                Change {
                    url: None,
                    events: None,
                    enabled: Some(false),
                },
                300,
            )?;
            let replayed = webhooks::replay(
                tx,
                &h0,
                ReplayRange::Between {
                    since: 100,
                    until: 102,
                },
                310,
            )?;
            let rotated = webhooks::rotate_secret(tx, &h1, b"new-secret", 5000, 320)?;
            let deleted = webhooks::delete(tx, &h1)?;
            let again = webhooks::delete(tx, &h1)?;
            Ok::<_, StoreError>((enable, unknown, replayed, rotated, deleted, again))
        })
        .await
        .unwrap();
    out.push(format!(
        "enable, unknown, replayed, rotated, deleted, again: {changed:?}"
    ));
    out.push(format!("list {:?}", list(store.clone()).await));
    let (event_id, _) = webhooks::event(store.reader(), seqs[0])
        .await
        .unwrap()
        .unwrap();
    let h0 = hooks[0].clone();
    let one = store
        .write(move |tx| webhooks::replay(tx, &h0, ReplayRange::One(&event_id), 330))
        .await
        .unwrap();
    out.push(format!(
        "replayed one {one}; old events before 102: {}",
        webhooks::count_old_events(store.reader(), 102)
            .await
            .unwrap()
    ));
    let purged = store
        .write(|tx| webhooks::purge_events(tx, 102, 100))
        .await
        .unwrap();
    out.push(format!(
        "purged {purged}; h0 pending now {}",
        webhooks::pending(store.reader(), &hooks[0], 10)
            .await
            .unwrap()
            .len()
    ));
    out
}

#[tokio::test]
async fn postgres_store_keeps_webhooks_like_sqlite() {
    same_on_both(
        |store| async move { webhook_transcript(&store).await },
        &[
            r#"recorded [Some(("{\"n\":0}", 2, true)), Some(("{\"n\":1}", 1, true)), None, Some(("{\"n\":3}", 2, true))]"#,
            "attempt 204 gave up false disabled false attempts now 1",
            "attempt refused gave up true disabled false attempts now 2",
            "attempt 503 gave up false disabled true attempts now 1",
            "purged 2; h0 pending now 1",
        ],
    )
    .await;
}

/// Attachments and retention: uploads staged in chunks and finished (new
/// content, shared content, over quota, gone), which a poster may attach,
/// a message carrying two, who may download them and their bytes; then
/// the conversation expires and retention counts and purges it with its
/// messages, deliveries, dead deliveries, old keys, the attachments no
/// message carries any more, unused blobs and abandoned uploads.
async fn attachment_transcript(store: &Store) -> Vec<String> {
    use clawrelay::model::Direction;
    use clawrelay::store::attachments::{self, FinishError, NewAttachment, Party};
    use clawrelay::store::messages::{self, NewMessage};
    use clawrelay::store::{conversations, deliveries, retention};
    let (app, agent, other) = (
        AppId::generate(),
        ClientId::generate(),
        ClientId::generate(),
    );
    let (app2, agent2, other2) = (app.clone(), agent.clone(), other.clone());
    let mut out = Vec::new();
    let (conv, results) = store
        .write(move |tx| {
            apps::insert(tx, &app2, "site", "h", 1)?;
            clients::insert(tx, &agent2, "agent", "h", 1)?;
            clients::insert(tx, &other2, "other", "h", 1)?;
            let ann = UserId::parse("ann").unwrap();
            let conv = conversations::create(tx, &app2, &ann, Some(&agent2), 10)?;
            let uploader = Party {
                app: Some(app2.clone()),
                user: Some(ann.clone()),
                client: None,
            };
            let mut results = Vec::new();
            let upload = |content: &[&[u8]], sha: &str, quota: Option<i64>, drop: bool| {
                let blob = attachments::stage(tx, 4, 20)?;
                for (i, c) in content.iter().enumerate() {
                    attachments::append_chunk(tx, blob, i as i64, c, 20)?;
                }
                if drop {
                    attachments::drop_staged(tx, blob)?;
                }
                let size = content.iter().map(|c| c.len() as i64).sum();
                let done = attachments::finish(
                    tx,
                    NewAttachment {
                        blob,
                        sha256: sha,
                        size,
                        name: &format!("{sha}.txt"),
                        mime: "text/plain",
                        uploader: &uploader,
                        quota,
                        now: 30,
                    },
                );
                let late = attachments::append_chunk(tx, blob, 9, b"x", 31)?;
                Ok::<_, StoreError>((done, late))
            };
            for (content, sha, quota, drop) in [
                (&[&b"abcd"[..], &b"ef"[..]][..], "sha-x", Some(100), false),
                (&[&b"abcd"[..], &b"ef"[..]][..], "sha-x", None, false),
                (&[&b"zz"[..]][..], "sha-z", None, false),
                (&[&b"yyyy"[..]][..], "sha-y", Some(15), false),
                (&[&b"ww"[..]][..], "sha-w", None, true),
            ] {
                let (done, late) = upload(content, sha, quota, drop)?;
                results.push(match done {
                    Ok((a, shared)) => Ok((a, shared, late)),
                    Err(FinishError::Store(e)) => return Err(e),
                    Err(e) => Err(e.to_string()),
                });
            }
            Ok((conv, results))
        })
        .await
        .unwrap();
    for r in &results {
        out.push(match r {
            Ok((a, shared, late)) => format!(
                "finished {} {} {} {} shared {shared} chunk after finish {late}",
                a.name, a.mime, a.size, a.sha256
            ),
            Err(e) => format!("refused: {e}"),
        });
    }
    let ids: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|(a, _, _)| a.id.clone()))
        .collect();
    let (app2, agent2, conv2, ids2) = (app.clone(), agent.clone(), conv.clone(), ids.clone());
    let (by_user, by_agent, message) = store
        .write(move |tx| {
            let ann = Party {
                app: Some(app2.clone()),
                user: Some(UserId::parse("ann").unwrap()),
                client: None,
            };
            let by_user = attachments::for_message(tx, &ids2[..2], &ann)?;
            let by_agent = attachments::for_message(tx, &ids2[..1], &Party::client(&agent2))?;
            let carried = by_user.clone().unwrap();
            let messages::Inserted {
                seq, message: m, ..
            } = messages::insert(
                tx,
                NewMessage {
                    conversation_id: &conv2,
                    app_id: &app2,
                    client_id: Some(&agent2),
                    direction: Direction::Inbound,
                    from: "ann",
                    to: "agent",
                    text: "see attached",
                    reply_id: None,
                    in_reply_to: None,
                    attachments: &carried,
                    stopped: false,
                    now: 40,
                },
            )?;
            deliveries::enqueue(tx, seq, &conv2, Some(&agent2), 40)?;
            Ok::<_, StoreError>((by_user, by_agent, m))
        })
        .await
        .unwrap();
    let names = |list: &[clawrelay::model::Attachment]| {
        list.iter().map(|a| a.name.clone()).collect::<Vec<_>>()
    };
    out.push(format!(
        "ann may attach {:?}; the agent before the message {:?}; the message carries {:?}",
        by_user
            .as_ref()
            .map(|l| names(l))
            .map_err(|id| ids.iter().position(|x| x == id)),
        by_agent
            .as_ref()
            .map(|l| names(l))
            .map_err(|id| ids.iter().position(|x| x == id)),
        names(&message.attachments)
    ));
    let readers = [
        (
            "ann",
            Party {
                app: Some(app.clone()),
                user: Some(UserId::parse("ann").unwrap()),
                client: None,
            },
            false,
        ),
        (
            "bob",
            Party {
                app: Some(app.clone()),
                user: Some(UserId::parse("bob").unwrap()),
                client: None,
            },
            false,
        ),
        (
            "the app",
            Party {
                app: Some(app.clone()),
                user: None,
                client: None,
            },
            false,
        ),
        ("the agent", Party::client(&agent), false),
        ("another agent", Party::client(&other), false),
        ("an admin", Party::default(), true),
    ];
    for (who, party, admin) in &readers {
        let mut seen = Vec::new();
        for id in &ids {
            let got = attachments::readable(store.reader(), id, party, *admin)
                .await
                .unwrap();
            seen.push(got.map(|d| (d.attachment.name, d.chunk_size)));
        }
        out.push(format!("{who} may download {seen:?}"));
    }
    let first = attachments::readable(store.reader(), &ids[0], &readers[5].1, true)
        .await
        .unwrap()
        .unwrap();
    let mut bytes = Vec::new();
    for idx in 0..3 {
        bytes.push(
            attachments::chunk(store.reader(), first.blob, idx)
                .await
                .unwrap(),
        );
    }
    out.push(format!("chunks of the first {bytes:?}"));

    // Retention: a dead delivery of another conversation, an old key, an
    // abandoned upload, then ann's conversation expires at 100.
    let (app2, agent2, conv2) = (app.clone(), agent.clone(), conv.clone());
    store
        .write(move |tx| {
            let bob = UserId::parse("bob").unwrap();
            let other_conv = conversations::create(tx, &app2, &bob, Some(&agent2), 10)?;
            let messages::Inserted {
                seq, message: m, ..
            } = messages::insert(
                tx,
                NewMessage {
                    conversation_id: &other_conv,
                    app_id: &app2,
                    client_id: Some(&agent2),
                    direction: Direction::Inbound,
                    from: "bob",
                    to: "agent",
                    text: "never answered",
                    reply_id: None,
                    in_reply_to: None,
                    attachments: &[],
                    stopped: false,
                    now: 50,
                },
            )?;
            deliveries::enqueue(tx, seq, &other_conv, Some(&agent2), 50)?;
            let due = deliveries::due(tx, &agent2, 60, 10)?;
            for d in due.iter().filter(|d| d.seq == seq) {
                deliveries::retire(tx, d, 60)?;
            }
            idempotency::record(
                tx,
                app2.as_str(),
                &IdempotencyKey::parse("old").unwrap(),
                &m.id,
                55,
            )?;
            attachments::stage(tx, 4, 56)?;
            conversations::expire(tx, &conv2, 100)?;
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
    let counted = retention::count(store.reader(), 200, 200, 0, 35)
        .await
        .unwrap();
    out.push(format!("retention would purge {counted:?}"));
    let purged = store
        .write(|tx| {
            let mut p = retention::purge_conversations(tx, 200, 50)?;
            p.dead_deliveries = retention::purge_dead(tx, 200, 100)?;
            p.idempotency_keys = retention::purge_keys(tx, 200, 100)?;
            let staged = attachments::purge_staged(tx, 57, 10)?;
            p.attachments = attachments::purge_unreferenced(tx, 35, 100)?;
            let (blobs, bytes) = attachments::purge_blobs(tx, 10)?;
            p.blobs = staged + blobs;
            p.blob_bytes = bytes;
            Ok::<_, StoreError>(p)
        })
        .await
        .unwrap();
    out.push(format!("purged {purged:?}"));
    let after = retention::count(store.reader(), 200, 200, 0, 35)
        .await
        .unwrap();
    out.push(format!("then nothing is left: {}", after.is_empty()));
    out.push(format!(
        "the first attachment after the purge: {:?}",
        attachments::readable(store.reader(), &ids[0], &readers[5].1, true)
            .await
            .unwrap()
            .map(|d| d.attachment.name)
    ));
    out
}

#[tokio::test]
async fn postgres_store_keeps_attachments_and_retention_like_sqlite() {
    same_on_both(
        |store| async move { attachment_transcript(&store).await },
        &[
            "finished sha-x.txt text/plain 6 sha-x shared true chunk after finish false",
            "refused: quota exceeded: 14 bytes held, 15 allowed",
            "refused: the staged upload is gone",
            "the agent may download [Some((\"sha-x.txt\", 4)), Some((\"sha-x.txt\", 4)), None]",
            "chunks of the first [Some([97, 98, 99, 100]), Some([101, 102]), None]",
            "purged Purged { conversations: 1, messages: 1, deliveries: 1, dead_deliveries: 1, \
             idempotency_keys: 1, webhook_events: 0, sessions: 0, attachments: 3, blobs: 4, \
             blob_bytes: 8 }",
            "then nothing is left: true",
        ],
    )
    .await;
}
