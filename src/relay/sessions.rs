//! User sessions (one user of one app, for a while) and the built-in
//! accounts that open them by logging in. A session token is a credential
//! like the others: 256 random bits shown once, stored as an argon2id hash,
//! verified once and then cached by `auth` (see `docs/protocol.md`, "User
//! role", for what a session may do).

use super::Relay;
use crate::auth::{hash_token, issue_token, random_hex, UserSession};
use crate::error::Error;
use crate::ids::{AccountId, AppId, SessionId, UserId};
use crate::store::sessions::{self, NewSession};
use crate::store::{apps, now_ms};
use serde::Serialize;

/// A session just opened: the token is shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedSession {
    pub token: String,
    pub session_id: SessionId,
    pub app_id: AppId,
    pub user_id: UserId,
    /// Unix ms.
    pub expires_at: i64,
}

/// A built-in account as listed (never its password hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountInfo {
    pub id: AccountId,
    pub app_id: AppId,
    pub name: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

/// Passwords: at least this many characters...
const MIN_PASSWORD_CHARS: usize = 8;
/// ...and at most this many bytes (argon2 takes any length; a bound keeps
/// a login request cheap to read).
const MAX_PASSWORD_BYTES: usize = 256;

/// A password an account may have: 8 characters to 256 bytes.
pub fn check_password(password: &str) -> Result<(), Error> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid(
            "invalid_password",
            format!(
                "a password must be {MIN_PASSWORD_CHARS} characters to {MAX_PASSWORD_BYTES} bytes"
            ),
        ));
    }
    Ok(())
}

/// A login name: what `UserId` accepts, and at most 64 bytes, no spaces at
/// either end.
pub fn check_account_name(name: &str) -> Result<UserId, Error> {
    let bad = |why: &str| Error::invalid("invalid_name", format!("the account name {why}"));
    if name.len() > 64 {
        return Err(bad("must be at most 64 bytes"));
    }
    if name.trim() != name {
        return Err(bad("must not start or end with a space"));
    }
    UserId::parse(name).map_err(bad)
}

/// A generated password: 96 random bits as 24 hex digits.
pub fn generate_password() -> String {
    random_hex()[..24].to_owned()
}

impl Relay {
    /// Opens a session for `user` of `app` (`account`: a login) lasting `ttl_ms`.
    pub async fn open_session(
        &self,
        app: &AppId,
        user: UserId,
        account: Option<AccountId>,
        ttl_ms: Option<i64>,
    ) -> Result<IssuedSession, Error> {
        let ttl_ms = self.session_ttl(ttl_ms)?;
        if !apps::is_active(self.store.reader(), app).await? {
            return Err(Error::not_found(
                "app_not_found",
                format!("no active app {app}"),
            ));
        }
        let id = SessionId::generate();
        let (token, hash) = issue_token(id.as_str()).await?;
        let now = now_ms();
        let expires_at = now + ttl_ms;
        let (id2, app2, user2) = (id.clone(), app.clone(), user.clone());
        self.store
            .write(move |tx| {
                sessions::insert(
                    tx,
                    NewSession {
                        id: &id2,
                        app: &app2,
                        user: &user2,
                        account: account.as_ref(),
                        token_hash: &hash,
                        now,
                        expires_at,
                    },
                )
            })
            .await?;
        Ok(IssuedSession {
            token,
            session_id: id,
            app_id: app.clone(),
            user_id: user,
            expires_at,
        })
    }

    /// The lifetime asked for, or the default; within `[sessions] max_ttl_secs`.
    fn session_ttl(&self, asked_ms: Option<i64>) -> Result<i64, Error> {
        let ttl = asked_ms.unwrap_or(self.rules.session_ttl_ms);
        if ttl < 1000 || ttl > self.rules.session_max_ttl_ms {
            return Err(Error::invalid(
                "invalid_ttl",
                format!(
                    "`ttlSecs` must be 1 to {} ([sessions] max_ttl_secs)",
                    self.rules.session_max_ttl_ms / 1000
                ),
            ));
        }
        Ok(ttl)
    }

    /// Extends a live session to `ttl_ms` from now; returns the new expiry.
    pub async fn refresh_session(
        &self,
        session: &UserSession,
        ttl_ms: Option<i64>,
    ) -> Result<i64, Error> {
        let ttl_ms = self.session_ttl(ttl_ms)?;
        let id = session.session.clone();
        let now = now_ms();
        self.store
            .write(move |tx| sessions::refresh(tx, &id, now, now + ttl_ms))
            .await?
            .ok_or(Error::Unauthorized("the session has ended"))
    }

    /// When a live session expires.
    pub async fn session_expiry(&self, session: &SessionId) -> Result<i64, Error> {
        sessions::credential(self.store.reader(), session, now_ms())
            .await?
            .map(|c| c.expires_at)
            .ok_or(Error::Unauthorized("the session has ended"))
    }

    /// Ends a session (logout): its token stops working and its streams close.
    pub async fn close_session(&self, session: &SessionId) -> Result<(), Error> {
        let id = session.clone();
        let now = now_ms();
        if self
            .store
            .write(move |tx| sessions::revoke(tx, &id, now))
            .await?
        {
            self.hub.credentials_changed(session.as_str(), now);
        }
        Ok(())
    }

    /// Creates a built-in account of `app` named `name`.
    pub async fn create_account(
        &self,
        app: &AppId,
        name: &str,
        password: String,
    ) -> Result<AccountInfo, Error> {
        check_account_name(name)?;
        check_password(&password)?;
        if !apps::is_active(self.store.reader(), app).await? {
            return Err(Error::not_found(
                "app_not_found",
                format!("no active app {app}"),
            ));
        }
        let hash = hash_token(password).await?;
        let id = AccountId::generate();
        let now = now_ms();
        let (id2, app2, name2) = (id.clone(), app.clone(), name.to_owned());
        self.store
            .write(move |tx| {
                if sessions::name_taken(tx, &name2)? {
                    return Err(Error::Conflict {
                        code: "name_taken",
                        message: format!("there is already an account named `{name2}`"),
                    });
                }
                sessions::insert_account(tx, &id2, &app2, &name2, &hash, now)?;
                Ok(())
            })
            .await?;
        Ok(AccountInfo {
            id,
            app_id: app.clone(),
            name: name.to_owned(),
            created_at: now,
            disabled_at: None,
        })
    }

    /// Built-in accounts, all or one app's, by name.
    pub async fn accounts(&self, app: Option<&AppId>) -> Result<Vec<AccountInfo>, Error> {
        Ok(sessions::accounts(self.store.reader(), None, app)
            .await?
            .into_iter()
            .map(|a| AccountInfo {
                id: a.id,
                app_id: a.app,
                name: a.name,
                created_at: a.created_at,
                disabled_at: a.disabled_at,
            })
            .collect())
    }

    /// Disables (its sessions end) or enables the account named `name`.
    pub async fn set_account_disabled(&self, name: &str, disabled: bool) -> Result<(), Error> {
        let name2 = name.to_owned();
        let now = now_ms();
        let ended = self
            .store
            .write(move |tx| {
                let Some(id) = sessions::set_disabled(tx, &name2, disabled.then_some(now))? else {
                    return Ok(None);
                };
                let ended = if disabled {
                    sessions::revoke_for_account(tx, &id, now)?
                } else {
                    Vec::new()
                };
                Ok::<_, Error>(Some(ended))
            })
            .await?
            .ok_or_else(|| account_not_found(name))?;
        self.announce_ended(&ended, now);
        Ok(())
    }

    /// Sets a new password on the account named `name`; its sessions end.
    pub async fn set_account_password(&self, name: &str, password: String) -> Result<(), Error> {
        check_password(&password)?;
        let hash = hash_token(password).await?;
        let name2 = name.to_owned();
        let now = now_ms();
        let ended = self
            .store
            .write(move |tx| {
                let Some(id) = sessions::set_password(tx, &name2, &hash)? else {
                    return Ok(None);
                };
                Ok::<_, Error>(Some(sessions::revoke_for_account(tx, &id, now)?))
            })
            .await?
            .ok_or_else(|| account_not_found(name))?;
        self.announce_ended(&ended, now);
        Ok(())
    }

    fn announce_ended(&self, ended: &[SessionId], at: i64) {
        for s in ended {
            self.hub.credentials_changed(s.as_str(), at);
        }
    }

    /// The account a login names, if any.
    pub async fn account(&self, name: &str) -> Result<Option<sessions::Account>, Error> {
        Ok(sessions::accounts(self.store.reader(), Some(name), None)
            .await?
            .into_iter()
            .next())
    }
}

fn account_not_found(name: &str) -> Error {
    Error::not_found("account_not_found", format!("no account named `{name}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_and_passwords_are_checked() {
        assert!(check_account_name("alice").is_ok());
        assert!(check_account_name(" alice").is_err());
        assert!(check_account_name("").is_err());
        assert!(check_account_name("a\nb").is_err());
        assert!(check_account_name(&"a".repeat(65)).is_err());
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
        assert!(check_password(&"x".repeat(257)).is_err());
        let p = generate_password();
        assert_eq!(p.len(), 24);
        assert!(check_password(&p).is_ok());
    }
}
