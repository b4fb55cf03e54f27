//! `serve --demo`: a first look at the relay doing its job. The web chat is
//! on, with a demo app and an account `demo` whose password is printed at
//! start, and a built-in echo agent (a task of the relay, a client of its
//! own) answers every message: it types, streams its reply in pieces, then
//! stores it, in a little Markdown.
//!
//! The demo's app and client are marked as the demo's in the settings, so a
//! second `--demo` run reuses them. It refuses a database that holds
//! clients or apps of its own (the built-in public app does not count): a
//! demo never mixes with real work.

use crate::error::Error;
use crate::ids::{AppId, ClientId, ReplyId};
use crate::model::Message;
use crate::relay::messages::Reply;
use crate::relay::sessions::generate_password;
use crate::relay::Relay;
use crate::shutdown::Shutdown;
use crate::store::settings;
use std::sync::Arc;
use std::time::Duration;

/// The demo's login.
pub const ACCOUNT: &str = "demo";
const APP_KEY: &str = "demo_app_id";
const CLIENT_KEY: &str = "demo_client_id";

/// What a demo start set up.
pub struct Demo {
    pub app: AppId,
    /// The echo agent.
    pub client: ClientId,
    /// The password of [`ACCOUNT`], new at each start (only its hash is
    /// stored): shown once.
    pub password: String,
}

/// Sets the demo up on the relay's database, or says why not.
pub async fn prepare(relay: &Relay) -> Result<Demo, Error> {
    let reader = relay.store.reader();
    let marked_app = settings::get(reader, APP_KEY).await?;
    let marked_client = settings::get(reader, CLIENT_KEY).await?;
    let apps = relay.list_apps().await?;
    let clients = relay.list_clients().await?;
    let own_apps = apps
        .iter()
        .filter(|a| !a.public && Some(a.app_id.as_str()) != marked_app.as_deref())
        .count();
    let own_clients = clients
        .iter()
        .filter(|c| Some(c.client_id.as_str()) != marked_client.as_deref())
        .count();
    if own_apps + own_clients > 0 {
        return Err(Error::Conflict {
            code: "not_a_demo_database",
            message: format!(
                "--demo refuses this database: it holds {own_apps} app(s) and {own_clients} client(s) of its own; \
                 run the demo on a database of its own (e.g. --db demo.db), or start without --demo"
            ),
        });
    }
    let app = match apps
        .iter()
        .find(|a| Some(a.app_id.as_str()) == marked_app.as_deref() && a.revoked_at.is_none())
    {
        Some(a) => a.app_id.clone(),
        None => {
            let issued = relay.create_app("demo").await?;
            mark(relay, APP_KEY, issued.app_id.as_str()).await?;
            issued.app_id
        }
    };
    let client = match clients
        .iter()
        .find(|c| Some(c.client_id.as_str()) == marked_client.as_deref() && c.revoked_at.is_none())
    {
        Some(c) => c.client_id.clone(),
        None => {
            // The echo agent runs inside the relay: its token is not needed.
            let issued = relay.create_client("demo echo agent").await?;
            mark(relay, CLIENT_KEY, issued.client_id.as_str()).await?;
            issued.client_id
        }
    };
    let password = generate_password();
    match relay.account(ACCOUNT).await? {
        Some(_) => {
            relay
                .set_account_password(ACCOUNT, password.clone())
                .await?
        }
        None => {
            relay
                .create_account(&app, ACCOUNT, password.clone())
                .await?;
        }
    }
    Ok(Demo {
        app,
        client,
        password,
    })
}

async fn mark(relay: &Relay, key: &'static str, value: &str) -> Result<(), Error> {
    let value = value.to_owned();
    relay
        .store
        .write(move |tx| settings::set(tx, key, &value))
        .await?;
    Ok(())
}

/// The echo agent: long-polls as the demo's client until shutdown and
/// answers each message in its own task.
pub async fn echo_agent(relay: Arc<Relay>, client: ClientId, shutdown: Shutdown) {
    loop {
        let stop = shutdown.clone().wait();
        let polled = tokio::select! {
            polled = relay.poll(client.clone(), 10, Some(Duration::from_secs(25)), stop) => polled,
            _ = shutdown.clone().wait() => return,
        };
        match polled {
            Ok(polled) => {
                // A stopped answer ends by itself: its next piece is refused.
                for m in polled.messages {
                    tokio::spawn(answer(relay.clone(), client.clone(), m));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the demo's echo agent could not poll; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Types, streams the reply in pieces, then stores it (which acks the
/// message).
async fn answer(relay: Arc<Relay>, client: ClientId, m: Message) {
    let conversation = m.conversation_id.clone();
    let _ = relay.typing(&client, conversation.clone()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let text = reply_to(&m.text, m.attachments.len());
    let reply_id = ReplyId::parse(&format!("demo-{}", m.id)).expect("a visible ASCII id");
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    for piece in words.chunks(3) {
        let piece: String = piece.concat();
        let sent = relay
            .reply_delta(&client, conversation.clone(), reply_id.clone(), piece)
            .await;
        if sent.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let reply = Reply {
        to: m.from.clone(),
        text,
        attachments: Vec::new(),
        reply_id: Some(reply_id),
        key: None,
        ack: true,
    };
    if let Err(e) = relay.send(client, conversation, reply).await {
        tracing::warn!(error = %e, "the demo's echo agent could not answer");
    }
}

/// The echo agent's answer to a message of `text` with `files` files, in a
/// little Markdown.
fn reply_to(text: &str, files: usize) -> String {
    let text = text.trim();
    let mut reply = format!(
        "**Echo:** {}\n\n- {} characters, {} words",
        if text.is_empty() { "(no text)" } else { text },
        text.chars().count(),
        text.split_whitespace().count()
    );
    if files > 0 {
        reply.push_str(&format!("\n- {files} file(s) attached"));
    }
    reply.push_str(
        "\n\nI am the demo's built-in echo agent. Connect an agent of your own \
         (see the README's *OpenClaw* section) to get real answers.",
    );
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_echoes_and_counts() {
        let r = reply_to(" hello there ", 0);
        assert!(
            r.starts_with("**Echo:** hello there\n\n- 11 characters, 2 words\n\n"),
            "{r}"
        );
        assert!(reply_to("", 2).contains("(no text)") && reply_to("", 2).contains("2 file(s)"));
    }
}
