//! Attachments: upload, carry in messages both ways, download with ranges;
//! who may read what; limits; crashes mid-upload; the purge.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Write;

const PNG_MAGIC: [u8; 16] = [
    0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, b'I', b'H', b'D', b'R',
];

/// A "PNG" of `len` bytes: the magic number, then a pattern.
fn png(len: usize) -> Vec<u8> {
    let mut bytes = PNG_MAGIC.to_vec();
    bytes.extend((0..len - PNG_MAGIC.len()).map(|i| (i * 7 % 251) as u8));
    bytes
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `POST /attachments` with a chunked body (no Content-Length) of `parts`
/// parts of `size` bytes, over a raw socket; returns the status.
async fn chunked_upload(app: &TestApp, token: &str, parts: usize, size: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /attachments HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..parts {
        let chunk = format!("{size:x}\r\n");
        // The relay may answer (and close) before the whole body is sent.
        if socket.write_all(chunk.as_bytes()).await.is_err()
            || socket.write_all(&vec![b'a'; size]).await.is_err()
            || socket.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, socket.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

async fn upload_ok(app: &TestApp, token: &str, query: &str, bytes: Vec<u8>, mime: &str) -> Value {
    app.upload(
        token,
        &format!("/attachments{query}"),
        bytes,
        &[("content-type", mime)],
    )
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_travel_both_ways_and_download_with_ranges() {
    let app = spawn_app().await;
    let (_, agent) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    app.poll(&agent, "").await;

    // A 600 KiB image: three stored chunks, the last one short.
    let image = png(600 * 1024);
    let up = upload_ok(&app, &web, "?filename=shot.png", image.clone(), "image/png").await;
    let id = up["attachmentId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("att_"), "{up}");
    assert_eq!(up["id"], up["attachmentId"]);
    assert_eq!(up["mime"], "image/png");
    assert_eq!(up["size"], image.len());
    assert_eq!(up["name"], "shot.png");
    assert_eq!(up["sha256"], sha256_hex(&image));
    assert_eq!(up["url"], format!("/attachments/{id}"));

    let sent = app
        .post(
            "/inbound",
            &web,
            json!({ "from": "alice", "text": "look", "attachments": [id] }),
        )
        .await
        .ok();
    assert_eq!(sent["attachments"][0]["id"], id.as_str());

    // The agent sees it in the delivery and may download it.
    let m = app.poll(&agent, "").await.remove(0);
    let listed = &m["attachments"][0];
    assert_eq!(listed["sha256"], sha256_hex(&image));
    assert_eq!(listed["mime"], "image/png");
    let url = listed["url"].as_str().unwrap().to_owned();
    let (status, headers, bytes) = app.download(&url, &agent, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, image, "the bytes came back changed");
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["content-length"], image.len().to_string().as_str());
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["accept-ranges"], "bytes");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&image)));
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("inline; filename=\"shot.png\""));

    // A range across a chunk boundary, an open-ended one, a suffix.
    let (status, headers, part) = app
        .download(&url, &agent, &[("range", "bytes=262000-262299")])
        .await;
    assert_eq!(status, 206);
    assert_eq!(part, image[262000..262300]);
    assert_eq!(
        headers["content-range"],
        format!("bytes 262000-262299/{}", image.len()).as_str()
    );
    let (_, _, tail) = app
        .download(&url, &agent, &[("range", "bytes=600000-")])
        .await;
    assert_eq!(tail, image[600000..]);
    let (_, _, last) = app.download(&url, &agent, &[("range", "bytes=-10")]).await;
    assert_eq!(last, image[image.len() - 10..]);
    let (status, headers, _) = app
        .download(&url, &agent, &[("range", "bytes=9999999-")])
        .await;
    assert_eq!(status, 416);
    assert_eq!(
        headers["content-range"],
        format!("bytes */{}", image.len()).as_str()
    );
    // If-Range naming other content: the whole file.
    let (status, _, whole) = app
        .download(
            &url,
            &agent,
            &[("range", "bytes=0-9"), ("if-range", "\"other\"")],
        )
        .await;
    assert_eq!((status.as_u16(), whole.len()), (200, image.len()));
    let (status, _, empty) = app
        .download(&url, &agent, &[("if-none-match", &etag)])
        .await;
    assert_eq!((status.as_u16(), empty.len()), (304, 0));

    // The agent answers with a file of its own; the app downloads it.
    let report = b"total: 42\n".to_vec();
    let file = upload_ok(
        &app,
        &agent,
        "?filename=report.txt",
        report.clone(),
        "text/plain",
    )
    .await;
    assert_eq!(file["mime"], "text/plain");
    let reply = app
        .post(
            "/send",
            &agent,
            json!({
                "conversationId": m["conversationId"], "to": "alice", "text": "",
                "attachments": [file["attachmentId"]],
            }),
        )
        .await
        .ok();
    assert_eq!(reply["message"]["attachments"][0]["name"], "report.txt");
    let outbox = app.get("/outbox", &web).await.ok();
    let carried = &outbox["messages"][0]["attachments"][0];
    assert_eq!(carried["id"], file["attachmentId"]);
    let (status, headers, bytes) = app
        .download(carried["url"].as_str().unwrap(), &web, &[])
        .await;
    assert_eq!((status.as_u16(), bytes), (200, report));
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment;"));

    // The conversation shows both, in order.
    let conv = app
        .get(
            &format!("/conversations/{}", m["conversationId"].as_str().unwrap()),
            ADMIN,
        )
        .await
        .ok();
    let shown: Vec<&str> = conv["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["attachments"][0]["id"].as_str().unwrap())
        .collect();
    assert_eq!(shown, [id.as_str(), file["attachmentId"].as_str().unwrap()]);
    // Messages without attachments do not grow the field.
    let plain = app.inbound(&web, "bob", "no files").await;
    assert!(plain.get("attachments").is_none(), "{plain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_uploader_and_the_conversation_may_read_an_attachment() {
    let app = spawn_app().await;
    let (_, agent) = app.create_client("agent").await;
    let (_, other_agent) = app.create_client("other-agent").await;
    let (_, web) = app.create_app("web").await;
    let (_, shop) = app.create_app("shop").await;
    let alice = app.open_session(&web, "alice").await.0;
    let bob = app.open_session(&web, "bob").await.0;
    app.poll(&agent, "").await;

    // Alice uploads through her session: before any message, only she (and
    // her app, and the admin) may read it.
    let up = upload_ok(&app, &alice, "?filename=a.png", png(1000), "image/png").await;
    let url = up["url"].as_str().unwrap().to_owned();
    let status = |r: (reqwest::StatusCode, _, _)| r.0.as_u16();
    assert_eq!(status(app.download(&url, &alice, &[]).await), 200);
    assert_eq!(status(app.download(&url, &web, &[]).await), 200);
    assert_eq!(status(app.download(&url, ADMIN, &[]).await), 200);
    for (who, token) in [("bob", &bob), ("agent", &agent), ("shop", &shop)] {
        let (s, _, body) = app.download(&url, token, &[]).await;
        assert_eq!(s, 404, "{who} read an upload not theirs");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "attachment_not_found");
    }

    // Nobody else may put it in a message: not Bob, not another app, not an agent.
    let r = app
        .post(
            "/inbound",
            &bob,
            json!({ "text": "mine now", "attachments": [up["id"]] }),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (422, "unknown_attachment")
    );
    let r = app
        .post(
            "/inbound",
            &shop,
            json!({ "from": "alice", "text": "x", "attachments": [up["id"]] }),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (422, "unknown_attachment")
    );
    // An unknown id reads the same as a foreign one.
    let r = app
        .post(
            "/inbound",
            &web,
            json!({ "from": "alice", "text": "x", "attachments": ["att_0193f0c2a1b27c4d9e8f7a6b5c4d3e2f"] }),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (422, "unknown_attachment")
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM messages").await, 0);

    // Alice sends it: the agent holding her conversation may read it now;
    // another agent, Bob and another app still may not.
    app.post(
        "/inbound",
        &alice,
        json!({ "text": "see", "attachments": [up["id"]] }),
    )
    .await
    .ok();
    let m = app.poll(&agent, "").await.remove(0);
    assert_eq!(status(app.download(&url, &agent, &[]).await), 200);
    for token in [&other_agent, &bob, &shop] {
        assert_eq!(status(app.download(&url, token, &[]).await), 404);
    }

    // An agent's upload is its own until it sends it to Alice.
    let answer = upload_ok(&app, &agent, "", b"answer".to_vec(), "text/plain").await;
    let answer_url = answer["url"].as_str().unwrap().to_owned();
    assert_eq!(status(app.download(&answer_url, &alice, &[]).await), 404);
    let r = app
        .post(
            "/send",
            &other_agent,
            json!({ "conversationId": m["conversationId"], "to": "alice", "text": "x", "attachments": [answer["id"]] }),
        )
        .await;
    assert_eq!(
        r.status, 404,
        "another agent's send must not reach the conversation"
    );
    app.post(
        "/send",
        &agent,
        json!({ "conversationId": m["conversationId"], "to": "alice", "text": "here", "attachments": [answer["id"]] }),
    )
    .await
    .ok();
    assert_eq!(status(app.download(&answer_url, &alice, &[]).await), 200);
    assert_eq!(status(app.download(&answer_url, &web, &[]).await), 200);
    assert_eq!(status(app.download(&answer_url, &bob, &[]).await), 404);
    assert_eq!(
        status(app.download(&answer_url, &other_agent, &[]).await),
        404
    );

    // The admin uploads nothing; nobody downloads without a token.
    let r = app.upload(ADMIN, "/attachments", b"x".to_vec(), &[]).await;
    assert_eq!(r.status, 403);
    let r = app.request(Method::GET, &url, None, None).await;
    assert_eq!(r.status, 401);
    let r = app
        .request(Method::POST, "/attachments", None, Some(json!({})))
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_and_leave_nothing() {
    let app = spawn_with(|c| {
        c.attachments.max_bytes = 300 * 1024;
        c.attachments.max_per_message = 2;
        c.attachments.quota_mb = 1;
    })
    .await;
    let (_, web) = app.create_app("web").await;
    let nothing_stored = || async {
        (app.scalar("SELECT COUNT(*) FROM blobs").await == 0
            && app.scalar("SELECT COUNT(*) FROM attachments").await == 0)
            .then_some(())
    };

    // Over max_bytes: announced by Content-Length, or found while streaming
    // (a chunked body, after a first chunk was stored).
    let r = app.upload(&web, "/attachments", png(301 * 1024), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (413, "attachment_too_large")
    );
    let status = chunked_upload(&app, &web, 10, 64 * 1024).await;
    assert_eq!(status, 413);
    eventually("the refused upload's chunks to be deleted", nothing_stored).await;

    let r = app.upload(&web, "/attachments", Vec::new(), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (422, "empty_attachment")
    );
    // Text that claims to be an image.
    let r = app
        .upload(
            &web,
            "/attachments",
            b"<script>alert(1)</script>".to_vec(),
            &[("content-type", "image/png")],
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (422, "content_type_mismatch")
    );
    // HTML is stored, but served as a download in a sandbox, never as a page.
    let html = upload_ok(
        &app,
        &web,
        "?filename=x.html",
        b"<html><script>alert(1)</script>".to_vec(),
        "text/html",
    )
    .await;
    assert_eq!(html["mime"], "text/html");
    let (_, headers, _) = app.download(html["url"].as_str().unwrap(), &web, &[]).await;
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment;"));
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("sandbox"));
    eventually("nothing else stored", || async {
        (app.scalar("SELECT COUNT(*) FROM blobs").await == 1).then_some(())
    })
    .await;

    // Names lose their path parts and control characters.
    let up = app
        .upload(
            &web,
            "/attachments",
            b"x".to_vec(),
            &[("x-filename", "..%2F..%2Fetc%2Fpa%0Asswd%E2%80%AE.txt")],
        )
        .await
        .ok();
    assert_eq!(up["name"], "passwd.txt");
    let (_, headers, _) = app.download(up["url"].as_str().unwrap(), &web, &[]).await;
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"passwd.txt\"; filename*=UTF-8''passwd%2Etxt"
    );
    let up = upload_ok(&app, &web, "?filename=%2E%2E", b"y".to_vec(), "text/plain").await;
    assert_eq!(up["name"], "attachment");

    // Multipart, as a browser form sends it.
    let boundary = "XyZ";
    let mut form = Vec::new();
    write!(
        form,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nignored\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"C:\\\\tmp\\\\pic.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .unwrap();
    let image = png(5000);
    form.extend_from_slice(&image);
    write!(form, "\r\n--{boundary}--\r\n").unwrap();
    let up = app
        .upload(
            &web,
            "/attachments",
            form,
            &[(
                "content-type",
                &format!("multipart/form-data; boundary={boundary}"),
            )],
        )
        .await
        .ok();
    assert_eq!(
        (up["name"].as_str(), up["mime"].as_str()),
        (Some("pic.png"), Some("image/png"))
    );
    assert_eq!(up["sha256"], sha256_hex(&image));
    // A form too large, in its file part or as a whole.
    for (filler, file) in [(0, 301 * 1024), (400 * 1024, 100)] {
        let mut form = Vec::new();
        write!(
            form,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n"
        )
        .unwrap();
        form.extend(std::iter::repeat_n(b'n', filler));
        write!(form, "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n\r\n").unwrap();
        form.extend(png(file));
        write!(form, "\r\n--{boundary}--\r\n").unwrap();
        let r = app
            .upload(
                &web,
                "/attachments",
                form,
                &[(
                    "content-type",
                    &format!("multipart/form-data; boundary={boundary}"),
                )],
            )
            .await;
        assert_eq!(
            (r.status.as_u16(), r.error_code()),
            (413, "attachment_too_large"),
            "{filler}: {}",
            r.body
        );
    }

    // Per message: at most max_per_message, no repeats, valid ids.
    let ids: Vec<Value> = futures_util::future::join_all(
        (0..3).map(|i| upload_ok(&app, &web, "", vec![b'a' + i; 10], "text/plain")),
    )
    .await
    .into_iter()
    .map(|u| u["id"].clone())
    .collect();
    let try_send = |attachments: Value| {
        app.post(
            "/inbound",
            &web,
            json!({ "from": "al", "text": "x", "attachments": attachments }),
        )
    };
    let r = try_send(json!(ids)).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (422, "too_many_attachments")
    );
    let r = try_send(json!([ids[0], ids[0]])).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (422, "duplicate_attachment")
    );
    let r = try_send(json!(["att_nope"])).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (422, "unknown_attachment")
    );
    let r = try_send(json!("att_x")).await;
    assert_eq!(r.status, 422);
    // No text and no attachment is still empty.
    let r = app
        .post("/inbound", &web, json!({ "from": "al", "text": "" }))
        .await;
    assert_eq!((r.status.as_u16(), r.error_code()), (422, "empty_text"));
    assert_eq!(app.scalar("SELECT COUNT(*) FROM messages").await, 0);
    // An image alone is a message.
    app.post(
        "/inbound",
        &web,
        json!({ "from": "al", "attachments": [ids[0]] }),
    )
    .await
    .ok();

    // The quota (1 MiB) counts every upload of the app, its users' too.
    let alice = app.open_session(&web, "alice").await.0;
    for _ in 0..4 {
        upload_ok(&app, &alice, "", png(250 * 1024), "image/png").await;
    }
    let r = app
        .upload(&alice, "/attachments", png(250 * 1024), &[])
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code()),
        (413, "attachment_quota_exceeded")
    );
    // The same bytes are stored once however often they are uploaded.
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM blobs WHERE size = 256000")
            .await,
        1
    );
    eventually("the refused upload's chunks to be deleted", || async {
        (app.scalar("SELECT COUNT(*) FROM blobs WHERE sha256 IS NULL")
            .await
            == 0)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_upload_leaves_no_attachment_and_a_sound_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let http = reqwest::Client::new();
    let mut relay = start_binary(&db, &[]);
    wait_ready(&http, &relay.base).await;
    let created: Value = http
        .post(format!("{}/apps", relay.base))
        .bearer_auth(ADMIN)
        .json(&json!({ "name": "web" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap().to_owned();

    // 3 MiB of a 5 MiB upload, over a raw socket that then stays open.
    let addr = relay.base.trim_start_matches("http://").to_owned();
    let mut socket = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        socket,
        "POST /attachments?filename=big.bin HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        5 << 20
    )
    .unwrap();
    socket.write_all(&vec![7u8; 3 << 20]).unwrap();
    let reader = open_ro(&db).await;
    eventually("chunks of the upload to be stored", || async {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blob_chunks")
            .fetch_one(&reader)
            .await
            .ok()?;
        (n >= 8).then_some(())
    })
    .await;
    reader.close().await;
    relay.child.kill().unwrap(); // SIGKILL
    relay.child.wait().unwrap();
    drop(socket);

    let mut relay = start_binary(&db, &[]);
    wait_ready(&http, &relay.base).await;
    let check = open_ro(&db).await;
    let count = |sql: &'static str| {
        let check = check.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&check)
                .await
                .unwrap()
        }
    };
    assert_eq!(count("SELECT COUNT(*) FROM attachments").await, 0);
    // The restart deleted what the cut-off upload had staged.
    assert_eq!(count("SELECT COUNT(*) FROM blobs").await, 0);
    assert_eq!(count("SELECT COUNT(*) FROM blob_chunks").await, 0);
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&check)
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    check.close().await;

    // And uploads work again.
    let res = http
        .post(format!("{}/attachments", relay.base))
        .bearer_auth(&token)
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_deletes_attachments_nobody_needs_and_frees_their_space() {
    let app = spawn_with(|c| {
        c.conversations.ttl_secs = 1;
        c.conversations.retention_secs = 1;
        c.conversations.cleanup_interval_secs = 1;
        c.attachments.unreferenced_ttl_secs = 2;
    })
    .await;
    let (_, web) = app.create_app("web").await;
    // Sent with a message: goes when the conversation is purged.
    let sent = upload_ok(&app, &web, "", png(2 << 20), "image/png").await;
    app.post(
        "/inbound",
        &web,
        json!({ "from": "alice", "text": "x", "attachments": [sent["id"]] }),
    )
    .await
    .ok();
    // Never sent: goes after unreferenced_ttl_secs.
    let unsent = upload_ok(&app, &web, "", vec![b'u'; 1 << 20], "text/plain").await;
    assert_eq!(app.scalar("SELECT COUNT(*) FROM blobs").await, 2);
    let on_sqlite = app.on_sqlite();
    let free_before = if on_sqlite {
        app.scalar("PRAGMA freelist_count").await
    } else {
        0
    };

    eventually("both attachments to be purged", || async {
        (app.scalar("SELECT COUNT(*) FROM blobs").await == 0).then_some(())
    })
    .await;
    assert_eq!(app.scalar("SELECT COUNT(*) FROM attachments").await, 0);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM blob_chunks").await, 0);
    for gone in [&sent, &unsent] {
        let (status, _, _) = app
            .download(gone["url"].as_str().unwrap(), ADMIN, &[])
            .await;
        assert_eq!(status, 404);
    }
    // The 3 MiB are free pages now (reused by the next writes; VACUUM
    // returns them to the file system). PostgreSQL's VACUUM frees them
    // in its own time.
    if !on_sqlite {
        return;
    }
    let freed = (app.scalar("PRAGMA freelist_count").await - free_before)
        * app.scalar("PRAGMA page_size").await;
    assert!(freed >= 3 << 20, "only {freed} bytes were freed");
    let m = app.metrics().await;
    assert!(m.contains("clawrelay_purged_total{kind=\"blobs\"}"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_carry_attachments_and_the_backup_holds_them() {
    use crate::ws_client::Ws;
    let app = spawn_app().await;
    let (_, agent_token) = app.create_client("agent").await;
    let (_, web) = app.create_app("web").await;
    let mut agent = Ws::agent(&app, &agent_token, 4).await;
    let (mut watcher, _) = Ws::app(&app, &web, Some("0")).await;

    let image = png(3000);
    let up = upload_ok(&app, &web, "?filename=p.png", image.clone(), "image/png").await;
    let r = watcher
        .request(
            "inbound",
            json!({ "from": "zoe", "text": "", "attachments": [up["id"]] }),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["payload"]["message"]["attachments"][0]["id"], up["id"]);

    let pushed = agent.event().await;
    let m = &pushed["payload"];
    assert_eq!(m["attachments"][0]["sha256"], sha256_hex(&image));
    let answer = upload_ok(
        &app,
        &agent_token,
        "?filename=a.txt",
        b"answer".to_vec(),
        "text/plain",
    )
    .await;
    let r = agent
        .request(
            "send",
            json!({ "conversationId": m["conversationId"], "to": "zoe", "text": "see file",
                    "attachments": [answer["id"]] }),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    // A foreign id over the socket is refused like over HTTP.
    let r = agent
        .request(
            "send",
            json!({ "conversationId": m["conversationId"], "to": "zoe", "text": "x",
                    "attachments": ["att_0193f0c2a1b27c4d9e8f7a6b5c4d3e2f"] }),
        )
        .await;
    assert_eq!(r["error"]["code"], "unknown_attachment", "{r}");

    // The app's live stream shows both messages with their files.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = watcher.event().await;
        if e["event"] == "message" {
            seen.push(e["payload"]["message"]["attachments"][0]["id"].clone());
        }
    }
    assert_eq!(seen, [up["id"].clone(), answer["id"].clone()]);

    // `clawrelay backup` copies the files with the messages (SQLite's
    // backup; PostgreSQL's is pg_dump).
    if !app.on_sqlite() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("copy.db");
    app.cli(&["backup", backup.to_str().unwrap()]);
    let copy = open_ro(&backup).await;
    let chunks: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT c.data FROM blob_chunks c JOIN blobs b ON b.id = c.blob_id
         WHERE b.sha256 = ? ORDER BY c.idx",
    )
    .bind(sha256_hex(&image))
    .fetch_all(&copy)
    .await
    .unwrap();
    assert_eq!(chunks.concat(), image, "the backup lacks the image's bytes");
    copy.close().await;
}
