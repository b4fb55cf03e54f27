//! The OpenAI-compatible door, driven by clients no one here wrote: the
//! official `openai` Python package and the `openai` npm package (installed
//! on the first run into `.cache/openai`), against the real server and a
//! scripted agent on the agent WebSocket. The scripts
//! (`tests/openai/sdk_test.py`, `.mjs`) check what the SDKs see; this side
//! checks the store behind it and how many turns the agent took.

use crate::helpers::*;
use crate::ws_client::Ws;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PYTHON_OPENAI: &str = "openai==3.63.0";
const NODE_OPENAI: &str = "openai@6.49.0";

fn cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/openai")
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("{what}: {e} (scripts/test.sh installs python3-venv and npm)"));
    assert!(status.success(), "{what} failed");
}

/// The Python SDK in a venv of its own; its interpreter.
fn python_sdk() -> PathBuf {
    let venv = cache().join("venv");
    let python = venv.join("bin/python");
    let marker = venv.join(PYTHON_OPENAI);
    if !marker.exists() {
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv",
        );
        run(
            Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                PYTHON_OPENAI,
            ]),
            "pip install openai",
        );
        std::fs::write(&marker, "").unwrap();
    }
    python
}

/// The npm SDK in a folder of its own, with the script beside it (so that
/// `import "openai"` finds it); the script's path.
fn node_sdk() -> PathBuf {
    let dir = cache().join("node");
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join(NODE_OPENAI);
    if !marker.exists() {
        run(
            Command::new("npm")
                .args([
                    "install",
                    "--silent",
                    "--no-audit",
                    "--no-fund",
                    NODE_OPENAI,
                ])
                .current_dir(&dir),
            "npm install openai",
        );
        std::fs::write(&marker, "").unwrap();
    }
    let script = dir.join("sdk_test.mjs");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai/sdk_test.mjs"),
        &script,
    )
    .unwrap();
    script
}

/// What the scripted agent answers to a message:
/// - `stream: X`: "Streaming the answer to X, piece by piece." in deltas
///   250 ms apart, then sent whole;
/// - `hold: X`: the same, 700 ms apart (long enough to hang up midway);
/// - with attachments: `sha256:` and the hex digest of each one's bytes as
///   downloaded, comma-separated;
/// - anything else: `echo: ` and the text, at once.
///
/// Counts the turns it took per text.
async fn scripted_agent(app: &TestApp, token: String, turns: Arc<Mutex<HashMap<String, usize>>>) {
    let mut ws = Ws::agent(app, &token, 1).await;
    loop {
        let Some(event) = ws.event_within(Duration::from_secs(600)).await else {
            return;
        };
        if event["event"] != "message" {
            continue;
        }
        let m = &event["payload"];
        let text = m["text"].as_str().unwrap_or_default().to_owned();
        *turns.lock().unwrap().entry(text.clone()).or_default() += 1;
        let conv = m["conversationId"].clone();
        let to = m["from"].clone();
        let streamed = [("stream: ", 250), ("hold: ", 700)]
            .into_iter()
            .find_map(|(prefix, ms)| text.strip_prefix(prefix).map(|x| (x.to_owned(), ms)));
        let answer = if let Some((topic, ms)) = streamed {
            let pieces = [
                "Streaming ".to_owned(),
                "the answer ".to_owned(),
                format!("to {topic}, "),
                "piece by piece.".to_owned(),
            ];
            let reply_id = format!("r-{}", m["id"].as_str().unwrap_or_default());
            for piece in &pieces {
                let r = ws
                    .request(
                        "reply.delta",
                        json!({"conversationId": conv, "replyId": reply_id, "text": piece}),
                    )
                    .await;
                assert_eq!(r["ok"], true, "{r}");
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            json!({"conversationId": conv, "to": to, "text": pieces.concat(), "replyId": reply_id})
        } else if let Some(files) = m["attachments"].as_array().filter(|a| !a.is_empty()) {
            let mut sums = Vec::new();
            for f in files {
                let url = f["url"].as_str().unwrap();
                let (status, _, bytes) = app.download(url, &token, &[]).await;
                assert_eq!(status, 200);
                sums.push(format!("{:x}", Sha256::digest(&bytes)));
            }
            json!({"conversationId": conv, "to": to, "text": format!("sha256:{}", sums.join(","))})
        } else {
            json!({"conversationId": conv, "to": to, "text": format!("echo: {text}")})
        };
        let r = ws.request("send", answer).await;
        assert_eq!(r["ok"], true, "{r}");
    }
}

/// Runs an SDK script against the relay; its stdout's JSON.
fn run_script(cmd: &mut Command, env: &[(&str, &str)]) -> Value {
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the SDK script runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the SDK script failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the script's last line is JSON ({e}): {stdout}"))
}

/// The texts of a conversation's messages, in order.
async fn texts_of(app: &TestApp, token: &str, conversation: &str) -> Vec<String> {
    let c = app
        .get(&format!("/conversations/{conversation}"), token)
        .await
        .ok();
    c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

/// The user's conversations (as the app lists them), each as its texts.
async fn conversations_of(app: &TestApp, token: &str, user: &str) -> Vec<Vec<String>> {
    let list = app
        .get(&format!("/conversations?userId={user}"), token)
        .await
        .ok();
    let mut out = Vec::new();
    for c in list["conversations"].as_array().unwrap() {
        out.push(texts_of(app, token, c["id"].as_str().unwrap()).await);
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdks_talk_to_an_agent_through_the_relay() {
    let python = python_sdk();
    let node_script = node_sdk();
    let app = Arc::new(
        spawn_with(|c| {
            // A user's messages: a few at once, then one a second (the scripts
            // flood one user to see the SDK's RateLimitError).
            c.rate_limits.user_per_sec = 1;
            c.rate_limits.user_burst = 8;
        })
        .await,
    );
    let (_, agent_token) = app.create_client("helper").await;
    let (_, web) = app.create_app("web").await;
    let (_, other) = app.create_app("other").await;
    let (session, _) = app.open_session(&web, "bob").await;
    let turns = Arc::new(Mutex::new(HashMap::new()));
    let agent = tokio::spawn({
        let (app, turns) = (app.clone(), turns.clone());
        async move { scripted_agent(&app, agent_token, turns).await }
    });

    let env = [
        ("RELAY", app.base.as_str()),
        ("APP_TOKEN", web.as_str()),
        ("OTHER_APP_TOKEN", other.as_str()),
        ("SESSION_TOKEN", session.as_str()),
        ("SESSION_USER", "bob"),
        ("AGENT_NAME", "helper"),
    ];
    let py = run_script(
        Command::new(&python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai/sdk_test.py")),
        &env,
    );
    let js = run_script(Command::new("node").arg(&node_script), &env);

    // The streamed pieces are the stored answer.
    let stored = |user: &str| {
        let app = app.clone();
        let web = web.clone();
        let user = user.to_owned();
        async move { conversations_of(&app, &web, &user).await }
    };
    assert_eq!(
        stored("py-stream").await,
        vec![vec![
            "stream: a story".to_owned(),
            py["streamed"].as_str().unwrap().to_owned()
        ]]
    );
    assert_eq!(
        py["streamed"],
        "Streaming the answer to a story, piece by piece."
    );
    assert_eq!(
        stored("js-stream").await,
        vec![vec![
            "stream: node".to_owned(),
            js["streamed"].as_str().unwrap().to_owned()
        ]]
    );
    // Two parallel chats and a third, named by its id, stayed apart.
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        stored("py-par").await,
        vec![
            strs(&["A1", "echo: A1", "A2", "echo: A2"]),
            strs(&["B1", "echo: B1", "B2", "echo: B2"]),
            strs(&["C1", "echo: C1", "C2", "echo: C2"]),
        ]
    );
    // The other app's user and the session's user got conversations of
    // their own.
    let other_conv = py["other_app_conversation"].as_str().unwrap();
    assert_eq!(
        texts_of(&app, &other, other_conv).await,
        strs(&["A3", "echo: A3"])
    );
    let session_conv = py["session_conversation"].as_str().unwrap();
    assert_eq!(
        texts_of(&app, &web, session_conv).await,
        strs(&["A4", "echo: A4"])
    );
    assert_eq!(
        app.get(&format!("/conversations/{other_conv}"), &web)
            .await
            .status,
        404
    );
    // The request dropped mid-stream and asked again twice: one turn, one
    // answer.
    assert_eq!(
        stored("py-drop").await,
        vec![vec![
            "hold: the long one".to_owned(),
            py["dropped"].as_str().unwrap().to_owned()
        ]]
    );
    let turns = turns.lock().unwrap().clone();
    assert_eq!(turns.get("hold: the long one"), Some(&1), "{turns:?}");
    assert_eq!(turns.get("stream: a story"), Some(&1), "{turns:?}");
    // Refused requests reached no agent.
    assert_eq!(turns.get("x"), None, "{turns:?}");
    agent.abort();
}

/// `POST /v1/chat/completions` with `token` and these headers.
async fn complete(app: &TestApp, token: &str, body: Value, headers: &[(&str, &str)]) -> Reply {
    app.request_with(
        reqwest::Method::POST,
        "/v1/chat/completions",
        Some(token),
        Some(body),
        headers,
    )
    .await
}

/// A plain completion request for `user`.
fn ask(user: &str, text: &str) -> Value {
    json!({"model": "clawrelay", "user": user, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_can_leave_the_agents_names_out() {
    let app = spawn_with(|c| c.openai.list_agents = false).await;
    app.create_client("secret-agent-name").await;
    let (_, web) = app.create_app("web").await;
    let models = app.get("/v1/models", &web).await.ok();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["clawrelay"]);
    let unknown =
        json!({"model": "nobody", "user": "u", "messages": [{"role": "user", "content": "hi"}]});
    let r = app.post("/v1/chat/completions", &web, unknown).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "model_not_found");
    assert_eq!(r.body["error"]["param"], "model");
    assert_eq!(r.body["error"]["type"], "not_found_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_bearer_token_opens_the_door() {
    let app = spawn_app().await;
    let (_, web) = app.create_app("web").await;
    let (session, _) = app.open_session(&web, "bob").await;
    // The chat's login cookie is not accepted here, even with its CSRF token.
    let cookie = format!("clawrelay_session={session}");
    let r = app
        .request_with(
            reqwest::Method::POST,
            "/v1/chat/completions",
            None,
            Some(ask("bob", "hi")),
            &[("cookie", cookie.as_str())],
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["type"], "authentication_error");
    assert!(r.body["error"]["message"].is_string());
    // Nothing was stored.
    assert_eq!(app.scalar("SELECT COUNT(*) FROM messages").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_wait_a_504_says_not_to_retry_and_the_same_key_later_reads_the_answer() {
    let app = spawn_with(|c| c.openai.reply_timeout_secs = 1).await;
    let (_, agent) = app.create_client("helper").await;
    let (_, web) = app.create_app("web").await;
    let key = [("idempotency-key", "late-1")];
    let r = complete(&app, &web, ask("u", "anyone?"), &key).await;
    assert_eq!(r.status, 504, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "reply_timeout");
    assert_eq!(r.body["error"]["type"], "timeout_error");
    assert_eq!(r.headers["x-should-retry"], "false");
    let conversation = r.headers["x-clawrelay-conversation"]
        .to_str()
        .unwrap()
        .to_owned();
    // The agent comes and answers (over HTTP: poll, then send).
    let m = app.poll(&agent, "").await.remove(0);
    app.send(&agent, &m, "here now").await;
    // The same request and key: the stored answer, no second message.
    let r = complete(&app, &web, ask("u", "anyone?"), &key).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["choices"][0]["message"]["content"], "here now");
    assert_eq!(
        r.body["id"],
        format!("chatcmpl-{}", m["id"].as_str().unwrap())
    );
    assert_eq!(r.headers["x-clawrelay-conversation"], conversation.as_str());
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM messages WHERE direction = 'inbound'")
            .await,
        1
    );
    // The key with another text is a conflict, not a retry.
    let r = complete(&app, &web, ask("u", "something else"), &key).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.headers["x-should-retry"], "false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_continues_the_conversation_whose_latest_answer_it_ends_with() {
    let app = Arc::new(spawn_app().await);
    let (_, agent) = app.create_client("helper").await;
    let (_, web) = app.create_app("web").await;
    let agent = tokio::spawn({
        let app = app.clone();
        async move { scripted_agent(&app, agent, Default::default()).await }
    });
    let user = |t: &str| json!({"role": "user", "content": t});
    let said = |t: &str| json!({"role": "assistant", "content": t});
    let chat =
        |messages: Vec<Value>| json!({"model": "clawrelay", "user": "ann", "messages": messages});
    let conversation = |r: &Reply| {
        r.headers["x-clawrelay-conversation"]
            .to_str()
            .unwrap()
            .to_owned()
    };

    let first = complete(&app, &web, chat(vec![user("a")]), &[]).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let x = conversation(&first);
    // Its answer, white space around it aside, continues it.
    let r = complete(
        &app,
        &web,
        chat(vec![user("a"), said("  echo: a\n"), user("b")]),
        &[],
    )
    .await;
    assert_eq!(r.body["choices"][0]["message"]["content"], "echo: b");
    assert_eq!(conversation(&r), x);
    // A second conversation of the same user with the same first answer:
    // the one answered last is continued.
    let r = complete(&app, &web, chat(vec![user("a")]), &[]).await;
    let y = conversation(&r);
    assert_ne!(y, x);
    let r = complete(
        &app,
        &web,
        chat(vec![user("a"), said("echo: a"), user("c")]),
        &[],
    )
    .await;
    assert_eq!(conversation(&r), y);
    // X's latest answer is "echo: b": ending with it continues X.
    let r = complete(
        &app,
        &web,
        chat(vec![user("b"), said("echo: b"), user("d")]),
        &[],
    )
    .await;
    assert_eq!(conversation(&r), x);
    // An answer that is no conversation's latest (X's first one) starts a
    // new conversation, as does one no conversation of this user has.
    for last in ["echo: a", "echo: zzz"] {
        let r = complete(
            &app,
            &web,
            chat(vec![user("a"), said(last), user("e")]),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let z = conversation(&r);
        assert!(z != x && z != y, "{last}: {z}");
    }
    agent.abort();
}
