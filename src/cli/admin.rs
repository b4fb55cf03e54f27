//! The admin commands on clients, apps, accounts and webhooks.

use crate::auth::Principal;
use crate::ids::{AppId, ClientId, ConversationId, EventId, MessageId, WebhookId};
use crate::relay::admin::{ConversationFilter, DeliveryFilter};
use crate::relay::webhooks::Replay;
use crate::relay::Relay;
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand)]
pub(super) enum ConversationCommand {
    /// List conversations, newest first (the filters combine; as
    /// `GET /conversations`).
    List {
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// Those assigned to this client.
        #[arg(long)]
        client: Option<String>,
        /// active or expired.
        #[arg(long)]
        state: Option<String>,
        /// Search: those with a message holding every word, by latest
        /// match (each with it).
        #[arg(long)]
        q: Option<String>,
        /// At most this many (1 to 200).
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// A previous list's nextCursor: the page after it.
        #[arg(long)]
        cursor: Option<i64>,
    },
    /// One conversation with its messages.
    Show { id: String },
}

#[derive(Subcommand)]
pub(super) enum DeliveryCommand {
    /// List deliveries, newest first: `--state dead` lists the dead letters
    /// (as `GET /deliveries`).
    List {
        /// pending, leased, queued, acked or dead.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        conversation: Option<String>,
        /// At most this many (1 to 200).
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// A previous list's nextCursor: the page after it.
        #[arg(long)]
        cursor: Option<i64>,
    },
    /// Put dead deliveries (by message id) back in their conversations'
    /// queues, with fresh attempts.
    Requeue {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Subcommand)]
pub(super) enum ClientCommand {
    /// Create a client and print its token (shown only this once).
    Create {
        #[arg(long)]
        name: String,
    },
    /// List clients.
    List,
    /// Revoke a client; its open conversations move to other clients.
    Revoke { id: String },
    /// Replace a client's token and print the new one.
    Rotate { id: String },
}

#[derive(Subcommand)]
pub(super) enum AppCommand {
    /// Create an app and print its token (shown only this once).
    Create {
        #[arg(long)]
        name: String,
    },
    /// List apps.
    List,
    /// Revoke an app's token.
    Revoke { id: String },
    /// Replace an app's token and print the new one.
    Rotate { id: String },
}

#[derive(Subcommand)]
pub(super) enum UserCommand {
    /// Create an account of an app; prints a generated password (shown only
    /// this once) unless --password-stdin.
    Create {
        #[arg(long)]
        app: String,
        /// The login name, also the user id its messages carry.
        #[arg(long)]
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts (of one app with --app).
    List {
        #[arg(long)]
        app: Option<String>,
    },
    /// Disable an account: it cannot log in, its sessions end.
    Disable { name: String },
    /// Enable a disabled account.
    Enable { name: String },
    /// Set a new password (generated and printed, or --password-stdin); the
    /// account's sessions end.
    ResetPassword {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
pub(super) enum WebhookCommand {
    /// Create an endpoint for an app and print its secret (shown only this once).
    Create {
        #[arg(long)]
        app: String,
        #[arg(long)]
        url: String,
        /// Event types, comma-separated (default: all of message,
        /// conversation.expired, delivery.dead).
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
    },
    /// List endpoints (of one app with --app).
    List {
        #[arg(long)]
        app: Option<String>,
    },
    /// Change an endpoint's URL, events, or enabled state.
    Update {
        id: String,
        #[arg(long)]
        url: Option<String>,
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
        /// Resume delivery (clears the failure record).
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Stop delivery; events keep queuing for when it is enabled.
        #[arg(long)]
        disable: bool,
    },
    /// Delete an endpoint and its queue.
    Delete { id: String },
    /// Replace the secret and print the new one; the old one keeps signing
    /// for the grace period.
    Rotate {
        id: String,
        /// Seconds the old secret stays valid (default [webhooks] rotation_grace_secs).
        #[arg(long)]
        grace_secs: Option<u64>,
    },
    /// Show the endpoint's recent attempts, newest first.
    Attempts {
        id: String,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Send events again: one (--event) or those since a time (--since, Unix ms).
    Replay {
        id: String,
        #[arg(long, conflicts_with = "since", required_unless_present = "since")]
        event: Option<String>,
        #[arg(long)]
        since: Option<i64>,
        #[arg(long, requires = "since")]
        until: Option<i64>,
    },
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("clawrelay: {e}"),
    }
}

pub(super) async fn client_command(relay: &Relay, cmd: ClientCommand) -> Result<(), String> {
    let id = |s: &str| ClientId::parse(s).ok_or_else(|| format!("`{s}` is not a client id"));
    match cmd {
        ClientCommand::Create { name } => print_json(
            &relay
                .create_client(&name)
                .await
                .map_err(|e| e.to_string())?,
        ),
        ClientCommand::List => print_json(&relay.list_clients().await.map_err(|e| e.to_string())?),
        ClientCommand::Revoke { id: raw } => {
            relay
                .revoke_client(&id(&raw)?)
                .await
                .map_err(|e| e.to_string())?;
            println!("revoked {raw}");
        }
        ClientCommand::Rotate { id: raw } => print_json(
            &relay
                .rotate_client_token(&id(&raw)?)
                .await
                .map_err(|e| e.to_string())?,
        ),
    }
    Ok(())
}

pub(super) async fn app_command(relay: &Relay, cmd: AppCommand) -> Result<(), String> {
    let id = |s: &str| AppId::parse(s).ok_or_else(|| format!("`{s}` is not an app id"));
    match cmd {
        AppCommand::Create { name } => {
            print_json(&relay.create_app(&name).await.map_err(|e| e.to_string())?)
        }
        AppCommand::List => print_json(&relay.list_apps().await.map_err(|e| e.to_string())?),
        AppCommand::Revoke { id: raw } => {
            relay
                .revoke_app(&id(&raw)?)
                .await
                .map_err(|e| e.to_string())?;
            println!("revoked {raw}");
        }
        AppCommand::Rotate { id: raw } => print_json(
            &relay
                .rotate_app_token(&id(&raw)?)
                .await
                .map_err(|e| e.to_string())?,
        ),
    }
    Ok(())
}

/// A password from the first line of standard input, or a generated one
/// (then printed).
fn password(from_stdin: bool) -> Result<(String, bool), String> {
    if !from_stdin {
        return Ok((crate::relay::sessions::generate_password(), true));
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err("--password-stdin: standard input held no password".into());
    }
    Ok((password, false))
}

pub(super) async fn user_command(relay: &Relay, cmd: UserCommand) -> Result<(), String> {
    let e = |e: crate::error::Error| e.to_string();
    match cmd {
        UserCommand::Create {
            app,
            name,
            password_stdin,
        } => {
            let app = AppId::parse_any(&app).ok_or_else(|| format!("`{app}` is not an app id"))?;
            let (password, generated) = password(password_stdin)?;
            let account = relay
                .create_account(&app, &name, password.clone())
                .await
                .map_err(e)?;
            let mut shown = serde_json::to_value(&account).map_err(|e| e.to_string())?;
            if generated {
                shown["password"] = password.into();
            }
            print_json(&shown);
        }
        UserCommand::List { app } => {
            let app = app
                .map(|a| AppId::parse_any(&a).ok_or_else(|| format!("`{a}` is not an app id")))
                .transpose()?;
            print_json(&relay.accounts(app.as_ref()).await.map_err(e)?);
        }
        UserCommand::Disable { name } => {
            relay.set_account_disabled(&name, true).await.map_err(e)?;
            println!("disabled {name}; its sessions have ended");
        }
        UserCommand::Enable { name } => {
            relay.set_account_disabled(&name, false).await.map_err(e)?;
            println!("enabled {name}");
        }
        UserCommand::ResetPassword {
            name,
            password_stdin,
        } => {
            let (password, generated) = password(password_stdin)?;
            relay
                .set_account_password(&name, password.clone())
                .await
                .map_err(e)?;
            if generated {
                print_json(&serde_json::json!({ "name": name, "password": password }));
            } else {
                println!("password of {name} set; its sessions have ended");
            }
        }
    }
    Ok(())
}

pub(super) async fn webhook_command(relay: &Relay, cmd: WebhookCommand) -> Result<(), String> {
    let id = |s: &str| WebhookId::parse(s).ok_or_else(|| format!("`{s}` is not a webhook id"));
    let app_id = |s: &str| AppId::parse_any(s).ok_or_else(|| format!("`{s}` is not an app id"));
    let e = |e: crate::error::Error| e.to_string();
    match cmd {
        WebhookCommand::Create { app, url, events } => print_json(
            &relay
                .create_webhook(&app_id(&app)?, &url, events)
                .await
                .map_err(e)?,
        ),
        WebhookCommand::List { app } => {
            let app = app.as_deref().map(app_id).transpose()?;
            print_json(&relay.list_webhooks(app.as_ref()).await.map_err(e)?)
        }
        WebhookCommand::Update {
            id: raw,
            url,
            events,
            enable,
            disable,
        } => {
            let enabled = match (enable, disable) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            print_json(
                &relay
                    .update_webhook(&id(&raw)?, url, events, enabled)
                    .await
                    .map_err(e)?,
            )
        }
        WebhookCommand::Delete { id: raw } => {
            relay.delete_webhook(&id(&raw)?).await.map_err(e)?;
            println!("deleted {raw}");
        }
        WebhookCommand::Rotate {
            id: raw,
            grace_secs,
        } => print_json(
            &relay
                .rotate_webhook_secret(&id(&raw)?, grace_secs)
                .await
                .map_err(e)?,
        ),
        WebhookCommand::Attempts { id: raw, limit } => print_json(
            &relay
                .webhook_attempts(&id(&raw)?, limit.clamp(1, 100))
                .await
                .map_err(e)?,
        ),
        WebhookCommand::Replay {
            id: raw,
            event,
            since,
            until,
        } => {
            let replay = match (event, since) {
                (Some(ev), _) => Replay::One(
                    EventId::parse(&ev).ok_or_else(|| format!("`{ev}` is not an event id"))?,
                ),
                (None, Some(since)) => Replay::Between { since, until },
                (None, None) => return Err("give --event or --since".into()),
            };
            let n = relay.replay_webhook(&id(&raw)?, replay).await.map_err(e)?;
            println!("{n} events queued again for {raw}");
        }
    }
    Ok(())
}

/// A value of one of the API's lowercase enums (`state`), or an error that
/// names the flag and the values it takes.
fn one_of<T: serde::de::DeserializeOwned>(
    flag: &str,
    value: &str,
    values: &str,
) -> Result<T, String> {
    serde_json::from_value(json!(value))
        .map_err(|_| format!("--{flag} `{value}` is not one of {values}"))
}

fn check_limit(limit: i64) -> Result<i64, String> {
    if (1..=200).contains(&limit) {
        Ok(limit)
    } else {
        Err(format!("--limit {limit}: give 1 to 200"))
    }
}

pub(super) async fn conversation_command(
    relay: &Relay,
    cmd: ConversationCommand,
) -> Result<(), String> {
    let e = |e: crate::error::Error| e.to_string();
    match cmd {
        ConversationCommand::List {
            app,
            user,
            client,
            state,
            q,
            limit,
            cursor,
        } => {
            let filter = ConversationFilter {
                app: app
                    .map(|a| AppId::parse_any(&a).ok_or_else(|| format!("`{a}` is not an app id")))
                    .transpose()?,
                user,
                client: client
                    .map(|c| ClientId::parse(&c).ok_or_else(|| format!("`{c}` is not a client id")))
                    .transpose()?,
                state: state
                    .map(|s| one_of("state", &s, "active, expired"))
                    .transpose()?,
                before: cursor,
                limit: check_limit(limit)?,
            };
            let (listed, next) = match q {
                Some(q) => {
                    let page = relay.search_conversations(filter, &q).await.map_err(e)?;
                    let listed = page
                        .items
                        .into_iter()
                        .map(|(c, found)| {
                            let mut c = serde_json::to_value(c).unwrap_or_default();
                            c["match"] = serde_json::to_value(found).unwrap_or_default();
                            c
                        })
                        .collect::<Vec<_>>();
                    (listed, page.next)
                }
                None => {
                    let page = relay.list_conversations(filter).await.map_err(e)?;
                    let listed = page
                        .items
                        .into_iter()
                        .map(|c| serde_json::to_value(c).unwrap_or_default())
                        .collect();
                    (listed, page.next)
                }
            };
            print_json(&json!({
                "conversations": listed,
                "nextCursor": next.map(|n| n.to_string()),
            }));
        }
        ConversationCommand::Show { id } => {
            let id = ConversationId::parse(&id)
                .ok_or_else(|| format!("`{id}` is not a conversation id"))?;
            print_json(
                &relay
                    .conversation(&Principal::Admin, &id)
                    .await
                    .map_err(e)?,
            );
        }
    }
    Ok(())
}

pub(super) async fn delivery_command(relay: &Relay, cmd: DeliveryCommand) -> Result<(), String> {
    let e = |e: crate::error::Error| e.to_string();
    match cmd {
        DeliveryCommand::List {
            state,
            client,
            conversation,
            limit,
            cursor,
        } => {
            let filter = DeliveryFilter {
                state: state
                    .map(|s| one_of("state", &s, "pending, leased, queued, acked, dead"))
                    .transpose()?,
                client: client
                    .map(|c| ClientId::parse(&c).ok_or_else(|| format!("`{c}` is not a client id")))
                    .transpose()?,
                conversation: conversation
                    .map(|c| {
                        ConversationId::parse(&c)
                            .ok_or_else(|| format!("`{c}` is not a conversation id"))
                    })
                    .transpose()?,
                before: cursor,
                limit: check_limit(limit)?,
            };
            let page = relay.list_deliveries(filter).await.map_err(e)?;
            print_json(&json!({
                "deliveries": page.items,
                "nextCursor": page.next.map(|n| n.to_string()),
            }));
        }
        DeliveryCommand::Requeue { ids } => {
            let ids = ids
                .iter()
                .map(|raw| {
                    MessageId::parse(raw).ok_or_else(|| format!("`{raw}` is not a message id"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            for id in &ids {
                relay
                    .requeue(id)
                    .await
                    .map_err(|err| format!("{id}: {err}"))?;
                println!("requeued {id}");
            }
        }
    }
    Ok(())
}
