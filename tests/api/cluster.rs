//! Several relays on one PostgreSQL database behave as one relay: the real
//! binary three times on a throwaway PostgreSQL 15, agents spread over two
//! relays, the app on the third. Every message is delivered, in order per
//! conversation, with no duplicate within a lease; kill -9 of a relay under
//! load loses nothing acknowledged, its agent carries on through another
//! relay and its leases come back; when the leader dies, another relay
//! takes the background tasks over.

use super::helpers::{eventually, free_port, get_json, post_json, wait_ready, ADMIN};
use super::postgres::Cluster;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Seconds a claim lasts: short, so that a dead relay's leases come back
/// within the test.
const LEASE_SECS: u64 = 3;
/// Seconds a conversation may idle before the leader expires it.
const TTL_SECS: u64 = 12;

struct Node {
    child: Child,
    base: String,
}

impl Node {
    fn start(url: &str) -> Node {
        Node::start_with(url, &[])
    }

    /// A relay with `env` set besides (and over) the settings above.
    fn start_with(url: &str, env: &[(&str, &str)]) -> Node {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_clawrelay"))
            .args(["serve", "--port", &port.to_string()])
            .env("DATABASE_URL", url)
            .env("ADMIN_TOKEN", ADMIN)
            .env("LOG_LEVEL", "warn")
            .env("CLAWRELAY_DELIVERY__LEASE_SECS", LEASE_SECS.to_string())
            .env("CLAWRELAY_CONVERSATIONS__TTL_SECS", TTL_SECS.to_string())
            .env("CLAWRELAY_TASKS__MAINTENANCE_INTERVAL_SECS", "1")
            .env("CLAWRELAY_RATE_LIMITS__APP_PER_SEC", "0")
            .env("CLAWRELAY_RATE_LIMITS__AGENT_PER_SEC", "0")
            .env("CLAWRELAY_RATE_LIMITS__USER_PER_SEC", "0")
            .env("CLAWRELAY_STORAGE__MAX_CONNECTIONS", "8")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start clawrelay");
        Node {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn kill(&mut self) {
        // SIGKILL: no shutdown, no goodbye to the database.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the relay at `base` leads (its `clawrelay_leader` gauge).
async fn leads(http: &reqwest::Client, base: &str) -> Option<bool> {
    let body = http
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let line = body.lines().find(|l| l.starts_with("clawrelay_leader "))?;
    Some(line.ends_with(" 1"))
}

async fn create(http: &reqwest::Client, base: &str, kind: &str, name: &str) -> String {
    let reply = post_json(
        http,
        &format!("{base}/{kind}"),
        ADMIN,
        json!({ "name": name }),
    )
    .await;
    reply["token"].as_str().expect("a token").to_owned()
}

/// What the agents saw: each delivery of each message, when.
#[derive(Default)]
struct Deliveries {
    seen: HashMap<String, Vec<Instant>>,
}

/// When set, the agent drops the next messages its first relay gives it
/// unanswered, as if that relay died before its answer arrived, and says
/// which ones.
type Lose = Arc<Mutex<Option<tokio::sync::oneshot::Sender<Vec<String>>>>>;

/// An agent: long-polls one relay, answers each message with "re: <text>"
/// (the answer acks it; its Idempotency-Key makes a retry through another
/// relay safe), and moves to the next relay when its relay stops answering.
async fn agent(
    http: reqwest::Client,
    relays: Vec<String>,
    token: String,
    log: Arc<Mutex<Deliveries>>,
    stop: Arc<AtomicBool>,
    lose: Lose,
) {
    let mut at = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let base = relays[at % relays.len()].clone();
        let polled = http
            .get(format!("{base}/poll?wait=1&max=10"))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let messages = match polled {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.unwrap()["messages"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            _ => {
                at += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if at.is_multiple_of(relays.len()) && !messages.is_empty() {
            let taken = lose.lock().unwrap().take();
            if let Some(tell) = taken {
                let mut log = log.lock().unwrap();
                let ids: Vec<String> = messages
                    .iter()
                    .map(|m| m["id"].as_str().unwrap().to_owned())
                    .collect();
                for id in &ids {
                    log.seen.entry(id.clone()).or_default().push(Instant::now());
                }
                let _ = tell.send(ids);
                continue;
            }
        }
        for m in messages {
            let id = m["id"].as_str().unwrap().to_owned();
            log.lock()
                .unwrap()
                .seen
                .entry(id.clone())
                .or_default()
                .push(Instant::now());
            let body = json!({
                "to": m["from"],
                "conversationId": m["conversationId"],
                "text": format!("re: {}", m["text"].as_str().unwrap()),
            });
            let mut tries = 0;
            loop {
                let base = relays[at % relays.len()].clone();
                let sent = http
                    .post(format!("{base}/send"))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", format!("re-{id}"))
                    .json(&body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => break,
                    Ok(r) if r.status().is_client_error() => {
                        panic!("send refused: {} {}", r.status(), r.text().await.unwrap())
                    }
                    _ => {
                        tries += 1;
                        assert!(tries < 50, "no relay took the answer to {id}");
                        at += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
}

/// Posts `each` messages for every user, each user's in order (the next
/// once the last is acknowledged), the users at once. Returns the posted
/// texts per user.
async fn post_all(
    http: &reqwest::Client,
    base: &str,
    site: &str,
    users: &[String],
    each: usize,
    tag: &str,
) -> BTreeMap<String, Vec<String>> {
    let posts = users.iter().map(|user| {
        let (http, base, site, user) =
            (http.clone(), base.to_owned(), site.to_owned(), user.clone());
        let tag = tag.to_owned();
        async move {
            let mut texts = Vec::new();
            for i in 0..each {
                let text = format!("{user} {tag} {i}");
                let reply = http
                    .post(format!("{base}/inbound"))
                    .bearer_auth(&site)
                    .json(&json!({ "from": user, "text": text }))
                    .send()
                    .await
                    .unwrap();
                assert!(reply.status().is_success(), "{}", reply.status());
                texts.push(text);
            }
            (user, texts)
        }
    });
    futures_util::future::join_all(posts)
        .await
        .into_iter()
        .collect()
}

/// The app's outbox from `after`, read in pages through `base`: the answers
/// per user, in the order stored, and the last cursor.
async fn outbox(
    http: &reqwest::Client,
    base: &str,
    site: &str,
    mut after: i64,
    into: &mut BTreeMap<String, Vec<String>>,
) -> i64 {
    loop {
        let page = get_json(
            http,
            &format!("{base}/outbox?after={after}&limit=100"),
            site,
        )
        .await;
        let messages = page["messages"].as_array().expect("an outbox page");
        for m in messages {
            into.entry(m["to"].as_str().unwrap().to_owned())
                .or_default()
                .push(m["text"].as_str().unwrap().to_owned());
        }
        // The cursor is a string (opaque to apps); here it is a number.
        let cursor: i64 = page["cursor"]
            .as_str()
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("a cursor: {page}"));
        assert!(cursor >= after, "the cursor never goes back");
        after = cursor;
        if messages.is_empty() {
            return after;
        }
    }
}

/// Waits until the outbox holds an answer to every posted message, then
/// asserts each user's answers are exactly the posted texts answered, in
/// order, none twice.
async fn all_answered(
    http: &reqwest::Client,
    base: &str,
    site: &str,
    posted: &BTreeMap<String, Vec<String>>,
    after: i64,
) -> i64 {
    let total: usize = posted.values().map(Vec::len).sum();
    let mut answers = BTreeMap::new();
    let mut cursor = after;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        cursor = outbox(http, base, site, cursor, &mut answers).await;
        let got: usize = answers.values().map(Vec::len).sum();
        if got >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{got} of {total} messages answered after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (user, texts) in posted {
        let expected: Vec<String> = texts.iter().map(|t| format!("re: {t}")).collect();
        assert_eq!(answers.get(user), Some(&expected), "answers to {user}");
    }
    cursor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_cluster_of_three_relays() {
    let pg = Cluster::start();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    // A leads: it started first.
    let mut a = Node::start(&pg.url);
    wait_ready(&http, &a.base).await;
    let b = Node::start(&pg.url);
    let c = Node::start(&pg.url);
    wait_ready(&http, &b.base).await;
    wait_ready(&http, &c.base).await;
    assert_eq!(leads(&http, &a.base).await, Some(true));
    assert_eq!(leads(&http, &b.base).await, Some(false));
    assert_eq!(leads(&http, &c.base).await, Some(false));

    let site = create(&http, &c.base, "apps", "site").await;
    let one = create(&http, &a.base, "clients", "one").await;
    let two = create(&http, &b.base, "clients", "two").await;
    let log = Arc::new(Mutex::new(Deliveries::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let lose: Lose = Arc::default();
    // Agent one on A (then B, then C), agent two on B (then C, then A).
    let agents = [
        (one, vec![a.base.clone(), b.base.clone(), c.base.clone()]),
        (two, vec![b.base.clone(), c.base.clone(), a.base.clone()]),
    ]
    .map(|(token, relays)| {
        tokio::spawn(agent(
            http.clone(),
            relays,
            token,
            log.clone(),
            stop.clone(),
            lose.clone(),
        ))
    });
    // Both agents have polled, and every relay knows both are connected.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let agents_on = |base: String| {
        let http = http.clone();
        async move {
            let list: Value = http
                .get(format!("{base}/clients"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let connected = list["clients"]
                .as_array()?
                .iter()
                .filter(|c| c["state"] == "connected")
                .count();
            (connected == 2).then_some(())
        }
    };
    for base in [&a.base, &b.base, &c.base] {
        eventually("every relay counts both agents connected", || {
            agents_on(base.clone())
        })
        .await;
    }

    // 1. Every message delivered once, in order per conversation, the app
    // on C, the agents on A and B.
    let users: Vec<String> = (0..8).map(|u| format!("user{u}")).collect();
    let started = Instant::now();
    let posted = post_all(&http, &c.base, &site, &users, 10, "calm").await;
    let cursor = all_answered(&http, &c.base, &site, &posted, 0).await;
    println!(
        "3 relays: 80 round trips (8 conversations, app on C, agents on A and B) in {:?}",
        started.elapsed()
    );
    {
        let log = log.lock().unwrap();
        assert_eq!(log.seen.len(), 80);
        assert!(
            log.seen.values().all(|d| d.len() == 1),
            "no message delivered twice without a failure"
        );
    }
    // Both agents took part: conversations spread over the cluster.
    let conversations =
        get_json(&http, &format!("{}/conversations?limit=100", b.base), ADMIN).await;
    let holders: std::collections::BTreeSet<&str> = conversations["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["clientId"].as_str())
        .collect();
    assert_eq!(holders.len(), 2, "{conversations}");

    // 2. Under load, kill -9 relay A (agent one's relay, and the leader)
    // right after it handed agent one messages whose answers never come
    // (agent two's relay B gives nothing up, agent two never reads A).
    let (tell, lost) = tokio::sync::oneshot::channel();
    *lose.lock().unwrap() = Some(tell);
    let posting = {
        let (http, base, site, users) = (http.clone(), c.base.clone(), site.clone(), users.clone());
        tokio::spawn(async move { post_all(&http, &base, &site, &users, 15, "storm").await })
    };
    let lost = tokio::time::timeout(Duration::from_secs(20), lost)
        .await
        .expect("agent one gets messages from relay A")
        .unwrap();
    a.kill();
    let killed = Instant::now();
    let posted = posting.await.unwrap();
    // Nothing acknowledged is lost; what A's agent held comes back when its
    // lease ends, and agent one answers it through another relay.
    all_answered(&http, &c.base, &site, &posted, cursor).await;
    println!(
        "after kill -9 of relay A: all 120 answered {:?} after the kill",
        killed.elapsed()
    );
    {
        let log = log.lock().unwrap();
        assert_eq!(log.seen.len(), 200);
        let lease = Duration::from_secs(LEASE_SECS) - Duration::from_millis(500);
        let again: Vec<&Vec<Instant>> = log.seen.values().filter(|d| d.len() > 1).collect();
        for d in &again {
            assert!(
                d.windows(2).all(|w| w[1] - w[0] >= lease),
                "a message was delivered twice within a lease"
            );
        }
        // The leases agent one held through the dead relay came back.
        for id in &lost {
            assert_eq!(log.seen[id].len(), 2, "{id} delivered again once");
        }
        println!(
            "{} messages left unanswered on relay A when it died, {} delivered again after their lease ended",
            lost.len(),
            again.len()
        );
    }

    // 3. The leader died with A: B or C leads now, and runs the tasks: the
    // idle conversations expire.
    eventually("another relay leads", || async {
        let (lb, lc) = (leads(&http, &b.base).await?, leads(&http, &c.base).await?);
        assert!(!(lb && lc), "two leaders");
        (lb || lc).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for a in agents {
        a.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(TTL_SECS + 20);
    loop {
        let active = get_json(
            &http,
            &format!("{}/conversations?state=active&limit=100", c.base),
            ADMIN,
        )
        .await;
        if active["conversations"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "conversations still active {TTL_SECS} s after going idle: no relay runs the expiry"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A streamed reply across relays: the agent's socket on relay A, the app's
/// WebSocket and SSE streams on relay B. The message posted through B is
/// pushed to the agent on A at once (a signal, not a periodic look), and
/// the typing, deltas, progress and the final message reach both streams
/// on B in the order the agent made them, the final message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cluster_streams_a_reply_across_relays() {
    use super::helpers::spawn_with;
    use super::realtime::{stream_a_reply, STREAMED_REPLY};
    use super::ws_client::{Sse, Ws};
    let pg = Cluster::start();
    let url = pg.url.clone();
    let relay_a = spawn_with(|c| c.storage.url = Some(url.clone())).await;
    let relay_b = spawn_with(|c| c.storage.url = Some(url.clone())).await;
    let (_, client) = relay_a.create_client("agent").await;
    let (_, web) = relay_b.create_app("web").await;
    let mut agent = Ws::agent(&relay_a, &client, 10).await;
    let (mut watcher, _) = Ws::app(&relay_b, &web, None).await;
    let mut sse = Sse::open(&relay_b, &web, "", None).await;

    let posted = Instant::now();
    let m = relay_b.inbound(&web, "alice", "tell me a story").await;
    let pushed = agent.event().await["payload"].clone();
    let latency = posted.elapsed();
    println!("inbound on relay B → pushed to the agent socket on relay A: {latency:?}");
    // The socket's only other wake-ups are its pings (every 20 s).
    assert!(
        latency < Duration::from_secs(10),
        "pushed after {latency:?}"
    );
    assert_eq!(pushed["id"], m["id"]);
    stream_a_reply(&mut agent, &pushed["conversationId"]).await;
    let expected = STREAMED_REPLY;
    // Relay B may store the message before it hears that the agent on A is
    // connected: then the message waits unassigned, the agent adopts it,
    // and the streams also get `conversation.assigned` (once, after it).
    let mut ws_events = Vec::new();
    let mut ws_assigned = 0;
    while ws_events.len() < expected.len() {
        let e = watcher.event().await;
        if e["event"] == "conversation.assigned" {
            ws_assigned += 1;
        } else {
            ws_events.push(e);
        }
    }
    let mut sse_names = Vec::new();
    let mut sse_assigned = 0;
    while sse_names.len() < expected.len() {
        let e = sse.event().await.event;
        if e == "conversation.assigned" {
            sse_assigned += 1;
        } else {
            sse_names.push(e);
        }
    }
    assert!(ws_assigned <= 1 && ws_assigned == sse_assigned);
    assert_eq!(ws_assigned == 1, m["clientId"].is_null(), "{m}");
    let names: Vec<_> = ws_events
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, expected);
    assert_eq!(sse_names, expected);
    let deltas: String = ws_events[2..5]
        .iter()
        .map(|e| e["payload"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "Once upon a time.");
    assert_eq!(ws_events[6]["payload"]["message"]["replyId"], "r1");
    assert!(watcher.quiet_for(300).await, "the final message came once");
}

/// A stop made through another relay than the agent's: the relay that
/// stops stores what the agent's relay streamed, and the agent hears of it
/// on its own relay, whose next piece of the stopped reply it refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cluster_stops_a_turn_across_relays() {
    use super::helpers::spawn_with;
    use super::ws_client::Ws;
    let pg = Cluster::start();
    let url = pg.url.clone();
    let relay_a = spawn_with(|c| c.storage.url = Some(url.clone())).await;
    let relay_b = spawn_with(|c| c.storage.url = Some(url.clone())).await;
    let (_, client) = relay_a.create_client("agent").await;
    let (_, web) = relay_b.create_app("web").await;
    let mut agent = Ws::agent(&relay_a, &client, 10).await;
    let (mut watcher, _) = Ws::app(&relay_b, &web, None).await;

    let m = relay_b.inbound(&web, "alice", "a long one").await;
    let pushed = loop {
        let e = agent.event().await;
        if e["event"] == "message" {
            break e["payload"].clone();
        }
    };
    assert_eq!(pushed["id"], m["id"]);
    let conversation = pushed["conversationId"].clone();
    for piece in ["Far away, ", "long ago"] {
        let r = agent
            .request(
                "reply.delta",
                json!({ "conversationId": conversation, "replyId": "r9", "text": piece }),
            )
            .await;
        assert_eq!(r["ok"], true, "{r}");
    }
    // Relay B has seen both pieces once its app stream has.
    let mut seen = 0;
    while seen < 2 {
        let e = watcher.event().await;
        if e["event"] == "reply.delta" {
            seen += 1;
        }
    }
    let stopped = relay_b
        .post(
            &format!("/conversations/{}/stop", conversation.as_str().unwrap()),
            &web,
            json!({}),
        )
        .await
        .ok();
    assert_eq!(stopped["cancelled"], json!([m["id"]]), "{stopped}");
    assert_eq!(
        stopped["message"]["text"], "Far away, long ago",
        "{stopped}"
    );
    assert_eq!(stopped["message"]["stopped"], true);

    let cancel = loop {
        let e = agent
            .event_within(Duration::from_secs(10))
            .await
            .expect("a cancel event within 10 s");
        if e["event"] == "cancel" {
            break e["payload"].clone();
        }
    };
    assert_eq!(cancel["messageIds"], json!([m["id"]]));
    assert_eq!(cancel["replyId"], "r9");
    let late = agent
        .request(
            "reply.delta",
            json!({ "conversationId": conversation, "replyId": "r9", "text": " and more" }),
        )
        .await;
    assert_eq!(late["error"]["code"], "reply_stopped", "{late}");
}

/// What the adopting agents of one round saw.
#[derive(Default)]
struct Adoption {
    /// Answers refused with 404 `conversation_not_found`: the delivery was
    /// handed to an agent its conversation does not belong to.
    refused: u64,
    answered: u64,
}

/// An agent of the adoption race: long-polls `base` until `stop`, answers
/// each message there, and counts answers the relay refuses as not its
/// conversation's (a mismatch) instead of failing at once.
async fn adopting_agent(
    http: reqwest::Client,
    base: String,
    token: String,
    seen: Arc<Mutex<Adoption>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let page = get_json(&http, &format!("{base}/poll?wait=1&max=10"), &token).await;
        for m in page["messages"].as_array().cloned().unwrap_or_default() {
            let answer = http
                .post(format!("{base}/send"))
                .bearer_auth(&token)
                .json(&json!({
                    "to": m["from"],
                    "conversationId": m["conversationId"],
                    "text": format!("re: {}", m["text"].as_str().unwrap()),
                }))
                .send()
                .await
                .unwrap();
            match answer.status().as_u16() {
                200 => seen.lock().unwrap().answered += 1,
                404 => seen.lock().unwrap().refused += 1,
                other => panic!("send answered {other}: {}", answer.text().await.unwrap()),
            }
        }
    }
}

/// Work that waits with no agent connected is adopted by the first agents
/// to poll, conversation and deliveries together: users open conversations
/// through two relays while agents start polling on the third, round after
/// round (each round's agents are new, the last round's revoked). Every
/// delivery stays with its conversation's agent, so every answer is taken
/// and every message answered. (Adoption once updated conversations and
/// deliveries in two statements that took separate snapshots and no
/// conversation lock: a concurrent adoption could take a conversation's
/// delivery while another took the conversation, and the agent holding the
/// delivery got 404 for its answer.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_cluster_adopts_unassigned_work_with_its_conversation() {
    const ROUNDS: usize = 6;
    const AGENTS: usize = 6;
    const USERS: usize = 32;
    let pg = Cluster::start();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let nodes = [
        Node::start(&pg.url),
        Node::start(&pg.url),
        Node::start(&pg.url),
    ];
    for n in &nodes {
        wait_ready(&http, &n.base).await;
    }
    let (a, b, c) = (&nodes[0].base, &nodes[1].base, &nodes[2].base);
    let site = create(&http, a, "apps", "site").await;
    let db = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let mut cursor = 0;
    let (mut refused, mut answered) = (0, 0);
    for round in 0..ROUNDS {
        let mut agents = Vec::new();
        for k in 0..AGENTS {
            let reply = post_json(
                &http,
                &format!("{c}/clients"),
                ADMIN,
                json!({ "name": format!("agent-{round}-{k}") }),
            )
            .await;
            agents.push((
                reply["clientId"].as_str().unwrap().to_owned(),
                reply["token"].as_str().unwrap().to_owned(),
            ));
        }
        // First messages of new users through A and B (no agent is
        // connected: their conversations wait unassigned) while the
        // agents start polling on C, all at once.
        let seen = Arc::new(Mutex::new(Adoption::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let users: Vec<String> = (0..USERS).map(|u| format!("r{round}u{u}")).collect();
        let (through_a, through_b) = users.split_at(USERS / 2);
        let posting = futures_util::future::join(
            post_all(&http, a, &site, through_a, 2, "adopt"),
            post_all(&http, b, &site, through_b, 2, "adopt"),
        );
        let polling: Vec<_> = agents
            .iter()
            .map(|(_, token)| {
                tokio::spawn(adopting_agent(
                    http.clone(),
                    c.clone(),
                    token.clone(),
                    seen.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        let (mut posted, more) = posting.await;
        posted.extend(more);
        let total: usize = posted.values().map(Vec::len).sum();
        // Every message is answered (a refused answer never is: its
        // message goes round its attempts to the dead letters).
        let mut answers = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            cursor = outbox(&http, c, &site, cursor, &mut answers).await;
            let got: usize = answers.values().map(Vec::len).sum();
            if got >= total {
                break;
            }
            if Instant::now() > deadline || seen.lock().unwrap().refused > 0 {
                let mismatched: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM deliveries d JOIN conversations c ON c.id = d.conversation_id
                     WHERE d.state IN ('ready', 'queued') AND d.client_id IS DISTINCT FROM c.client_id",
                )
                .fetch_one(&db)
                .await
                .unwrap();
                panic!(
                    "round {round}: {got} of {total} answered, {} answers refused as another agent's \
                     conversation, {mismatched} open deliveries held by an agent their conversation \
                     does not belong to",
                    seen.lock().unwrap().refused
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::SeqCst);
        for p in polling {
            p.await.unwrap();
        }
        {
            let seen = seen.lock().unwrap();
            refused += seen.refused;
            answered += seen.answered;
        }
        // The next round's conversations find no agent connected.
        for (id, _) in &agents {
            let gone = http
                .delete(format!("{c}/clients/{id}"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            assert!(gone.status().is_success(), "{}", gone.status());
        }
    }
    println!("{ROUNDS} rounds: {answered} answers taken, {refused} refused");
    assert_eq!(refused, 0);
    assert_eq!(answered, (ROUNDS * USERS * 2) as u64);
}

/// The ids of the next `n` messages pushed to an agent's socket, sorted;
/// fails saying `what` unless all come within `wait`.
async fn pushed_ids(
    ws: &mut super::ws_client::Ws,
    n: usize,
    wait: Duration,
    what: &str,
) -> Vec<String> {
    // One deadline for the whole wait: the relay's heartbeats would restart
    // a per-frame one.
    let mut ids = tokio::time::timeout(wait, async {
        let mut ids = Vec::new();
        while ids.len() < n {
            let e = ws.event().await;
            if e["event"] == "message" {
                ids.push(e["payload"]["id"].as_str().unwrap().to_owned());
            }
        }
        ids
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
    ids.sort();
    ids
}

/// A relay killed with WebSocket sessions open: once it has been silent
/// for the clients' stale window, the leader ends the leases its sockets
/// held, so the agent, back through another relay, gets those messages
/// again within seconds instead of when their five-minute leases end. A
/// live relay's session keeps what it holds.
#[tokio::test]
async fn postgres_cluster_releases_a_dead_relays_socket_leases() {
    use super::ws_client::Ws;
    let pg = Cluster::start();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let settings = [
        ("CLAWRELAY_DELIVERY__LEASE_SECS", "300"),
        ("CLAWRELAY_CLIENTS__STALE_AFTER_SECS", "2"),
    ];
    let a = Node::start_with(&pg.url, &settings);
    wait_ready(&http, &a.base).await;
    let mut b = Node::start_with(&pg.url, &settings);
    wait_ready(&http, &b.base).await;
    assert_eq!(leads(&http, &a.base).await, Some(true));
    let site = create(&http, &a.base, "apps", "site").await;
    let one = create(&http, &a.base, "clients", "one").await;
    let two = create(&http, &a.base, "clients", "two").await;
    let inbound = |user: &'static str| {
        let (http, url, site) = (http.clone(), format!("{}/inbound", a.base), site.clone());
        async move {
            let m = post_json(
                &http,
                &url,
                &site,
                json!({ "from": user, "text": "hold it" }),
            )
            .await;
            m["id"].as_str().expect("a message id").to_owned()
        }
    };

    // Agent one, on relay B, takes three messages and does not answer.
    let mut one_on_b = Ws::agent_at(&b.base, &one, 10).await;
    let mut held = Vec::new();
    for user in ["u1", "u2", "u3"] {
        held.push(inbound(user).await);
    }
    held.sort();
    let got = pushed_ids(
        &mut one_on_b,
        3,
        Duration::from_secs(10),
        "agent one gets its messages on relay B",
    )
    .await;
    assert_eq!(got, held);
    // Agent two, on relay A, takes one (the least busy agent gets the new
    // conversation) and does not answer either.
    let mut two_on_a = Ws::agent_at(&a.base, &two, 10).await;
    let kept = inbound("u4").await;
    let got = pushed_ids(
        &mut two_on_a,
        1,
        Duration::from_secs(10),
        "agent two gets its message on relay A",
    )
    .await;
    assert_eq!(got, [kept]);

    b.kill();
    let killed = Instant::now();
    let mut one_on_a = Ws::agent_at(&a.base, &one, 10).await;
    let again = pushed_ids(
        &mut one_on_a,
        3,
        Duration::from_secs(15),
        "the dead relay's leases end well before their five minutes",
    )
    .await;
    assert_eq!(again, held, "the same messages, delivered again");
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "{:?}",
        killed.elapsed()
    );
    // What agent two's live session holds stays its own.
    let released = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if two_on_a.event().await["event"] == "message" {
                break;
            }
        }
    })
    .await;
    assert!(released.is_err(), "a live session's lease was released");
}
