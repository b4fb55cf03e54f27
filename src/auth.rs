//! Credentials: token format, argon2id hashing, the verified-token cache,
//! login passwords.
//! Below the domain: it knows the store, nothing of HTTP (the extractors that
//! say what access a handler needs are in `http::auth`).
//!
//! Tokens are 256 random bits, shown once, stored only as argon2id PHC
//! strings. A client or app token is `<id>.<64 hex>`: the id names the row, so
//! finding the hash is one primary-key read, never a scan. The admin token is
//! either the one configured (`--admin-token` / `ADMIN_TOKEN`) or one the
//! first start generated (`adm_<64 hex>`, its hash in the `settings` table).
//!
//! argon2 is slow on purpose, so it runs off the async threads (on one
//! dedicated thread, see `on_argon2_thread`), and a token that
//! verified is remembered: a poll loop costs one verification, not one per
//! request. After `[auth] cache_ttl_secs` a remembered token is checked again
//! against the stored credential (one primary-key read): while the stored hash
//! is the one it verified against, the answer cannot have changed and argon2
//! does not run again (a busy agent's requests would otherwise all queue
//! behind one verification each time the entry aged out: stalls of seconds).
//! Concurrent first verifications of one principal run once. Revoking or
//! rotating through the API forgets the entry at once; through the CLI
//! (another process) the change reaches a running server at that check.
//!
//! A user session's token is `ses_<id>.<64 hex>` like the others; its row
//! says which app and user it speaks for, until when. A cached verification
//! is checked again once the session's expiry passes (a refresh moves it).
//! An admin console login's token, `cns_<id>.<64 hex>`, is the admin's for
//! as long as its row lasts, in the same way.
//!
//! A token whose id names no principal costs the same argon2 verification
//! (against a hash of nothing) as a wrong secret, so timing does not tell
//! which ids exist. Requests from sources that failed too often (see
//! `limits`) are verified too, so a valid token is never refused for its
//! neighbours' mistakes, but through one narrow lane: blocked traffic holds
//! at most one argon2 verification at a time.

use crate::error::Error;
use crate::ids::{AppId, ClientId, ConsoleSessionId, SessionId, UserId};
use crate::store::{self, settings, Store};
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, SaltString};
use argon2::Argon2;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Who a request acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Admin,
    /// An agent instance.
    Client(ClientId),
    /// The user-facing side.
    App(AppId),
    /// One user of one app, through a session (web chat).
    User(UserSession),
}

/// Whom a user session speaks for: it may post as `user` only and read that
/// user's conversations of `app` only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSession {
    pub session: SessionId,
    pub app: AppId,
    pub user: UserId,
}

impl Principal {
    /// The app of an app or of a user session.
    pub fn app(&self) -> Option<&AppId> {
        match self {
            Principal::App(app) => Some(app),
            Principal::User(s) => Some(&s.app),
            _ => None,
        }
    }

    /// The user a user session is held to.
    pub fn user(&self) -> Option<&UserId> {
        match self {
            Principal::User(s) => Some(&s.user),
            _ => None,
        }
    }

    /// The keys whose revocation ends this principal's streams: its own, and
    /// for a user session also its app's.
    pub fn revocation_keys(&self) -> Vec<&str> {
        match self {
            Principal::User(s) => vec![s.session.as_str(), s.app.as_str()],
            other => vec![other.key()],
        }
    }

    /// The key idempotency records and the cache are scoped by.
    pub fn key(&self) -> &str {
        match self {
            Principal::Admin => "admin",
            Principal::Client(id) => id.as_str(),
            Principal::App(id) => id.as_str(),
            Principal::User(s) => s.session.as_str(),
        }
    }
}

/// Bytes as lowercase hex digits.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// 32 random bytes from the OS, as 64 lowercase hex digits.
pub(crate) fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

/// A new token for `id` and its argon2id hash.
pub async fn issue_token(id: &str) -> Result<(String, String), Error> {
    let token = format!("{id}.{}", random_hex());
    let hash = hash_token(token.clone()).await?;
    Ok((token, hash))
}

/// A new admin token and its argon2id hash.
pub async fn issue_admin_token() -> Result<(String, String), Error> {
    let token = format!("adm_{}", random_hex());
    let hash = hash_token(token.clone()).await?;
    Ok((token, hash))
}

/// Runs argon2 work on the one thread that does it all.
///
/// argon2id is memory-hard: each hash or verification allocates 19 MiB. Run
/// on whatever blocking thread is free, every thread's malloc arena would
/// keep its own 19 MiB block after use; on one thread, one block is reused.
/// The thread is started on first use and serves the whole process.
async fn on_argon2_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    type Work = Box<dyn FnOnce() + Send>;
    static THREAD: std::sync::OnceLock<std::sync::mpsc::Sender<Work>> = std::sync::OnceLock::new();
    let sender = THREAD.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Work>();
        let spawned = std::thread::Builder::new()
            .name("argon2".into())
            .spawn(move || {
                for work in rx {
                    work();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the argon2 thread");
        }
        tx
    });
    let (tx, rx) = tokio::sync::oneshot::channel();
    sender
        .send(Box::new(move || {
            let _ = tx.send(work());
        }))
        .map_err(|_| Error::Internal("the argon2 thread is gone".into()))?;
    rx.await
        .map_err(|_| Error::Internal("the argon2 thread dropped a job".into()))
}

thread_local! {
    /// argon2's working memory, kept for the life of the argon2 thread: a
    /// block freed after every hash would also raise glibc's dynamic mmap
    /// threshold to its size, after which freed heap memory is no longer
    /// returned to the system (the relay's RSS grew by over 100 MiB that way).
    static ARGON2_MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// argon2id of `password` with `salt`, computed in the thread's kept memory.
fn argon2_output(
    argon: &Argon2<'_>,
    params: &argon2::Params,
    password: &[u8],
    salt: &argon2::password_hash::Salt<'_>,
    len: usize,
) -> Result<argon2::password_hash::Output, Error> {
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_buf)
        .map_err(|e| Error::Internal(format!("argon2 salt: {e}")))?;
    ARGON2_MEMORY.with(|memory| {
        let mut blocks = memory.borrow_mut();
        if blocks.len() < params.block_count() {
            blocks.resize(params.block_count(), argon2::Block::default());
        }
        let blocks = &mut blocks[..params.block_count()];
        argon2::password_hash::Output::init_with(len, |out| {
            argon
                .hash_password_into_with_memory(password, salt_bytes, out, &mut *blocks)
                .map_err(|_| argon2::password_hash::Error::Crypto)
        })
        .map_err(|e| Error::Internal(format!("argon2: {e}")))
    })
}

/// The argon2id hash of a secret: a token, or an account's password.
pub async fn hash_token(token: String) -> Result<String, Error> {
    on_argon2_thread(move || {
        let salt = SaltString::generate(&mut OsRng);
        let argon = Argon2::default();
        let params = argon.params().clone();
        let len = params
            .output_len()
            .unwrap_or(argon2::Params::DEFAULT_OUTPUT_LEN);
        let output = argon2_output(&argon, &params, token.as_bytes(), &salt.as_salt(), len)?;
        let phc = PasswordHash {
            algorithm: argon2::Algorithm::Argon2id.ident(),
            version: Some(argon2::Version::V0x13.into()),
            params: argon2::password_hash::ParamsString::try_from(&params)
                .map_err(|e| Error::Internal(format!("argon2 params: {e}")))?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(phc.to_string())
    })
    .await?
}

async fn verify_token(token: String, hash: String) -> Result<bool, Error> {
    on_argon2_thread(move || {
        let parsed =
            PasswordHash::new(&hash).map_err(|e| Error::Internal(format!("stored hash: {e}")))?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Err(Error::Internal("stored hash without salt or output".into()));
        };
        let params = argon2::Params::try_from(&parsed)
            .map_err(|e| Error::Internal(format!("stored hash: {e}")))?;
        let algorithm = argon2::Algorithm::try_from(parsed.algorithm)
            .map_err(|e| Error::Internal(format!("stored hash: {e}")))?;
        let version = parsed
            .version
            .map(argon2::Version::try_from)
            .transpose()
            .map_err(|e| Error::Internal(format!("stored hash: {e}")))?
            .unwrap_or_default();
        let argon = Argon2::new(algorithm, version, params.clone());
        let actual = argon2_output(&argon, &params, token.as_bytes(), &salt, expected.len())?;
        // Output's equality is constant-time.
        Ok(actual == expected)
    })
    .await?
}

/// The CSRF token of a session token: what a page that logged in sends in
/// `X-CSRF-Token` with every change it asks for. Derived, so nothing more is
/// stored; one-way, so it does not give the session token away.
pub fn csrf_token(session_token: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"clawrelay-csrf\0")
        .chain_update(session_token.as_bytes())
        .finalize();
    hex(&digest[..16])
}

/// Equal contents, in time that depends only on the lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Verified {
    token: Box<str>,
    principal: Principal,
    /// The stored hash the token verified against.
    hash: Box<str>,
    version: i64,
    at: Instant,
    /// When a session's token stops being valid (Unix ms); None: not a session.
    expires_at: Option<i64>,
}

/// What the cache knows of a presented token.
enum Cached {
    Fresh(Authenticated),
    /// Verified against this stored hash, longer ago than the TTL.
    Aged(String),
    Miss,
}

/// A verified token: who it is, and the version of the credential it
/// matched (see [`crate::store::Credential`]; 0 for the admin token).
#[derive(Clone, Debug)]
pub struct Authenticated {
    pub principal: Principal,
    pub version: i64,
}

/// How a verification is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Normal,
    /// The source failed too often: one such verification at a time, and a
    /// request that cannot get its turn within [`SUSPECT_WAIT`] is refused.
    Suspect,
}

/// Cache size past which entries a request would check again are dropped.
const CACHE_PRUNE_AT: usize = 10_000;

/// How long a request in the suspect lane waits for its turn.
const SUSPECT_WAIT: Duration = Duration::from_secs(1);

pub struct Auth {
    store: Store,
    /// Hash of the configured admin token; None: use the generated one in the db.
    configured_admin: Option<String>,
    /// Verified tokens by principal key. Bounded by the number of principals.
    cache: Mutex<HashMap<String, Verified>>,
    ttl: Duration,
    /// What a token of an unknown id is verified against.
    nobody: String,
    /// One permit: the verification of blocked sources in progress.
    suspect_lane: tokio::sync::Semaphore,
    /// Verifications in progress, by principal key (existing principals
    /// only, so bounded): concurrent requests wait for the first one.
    flights: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    /// argon2 verifications run by `authenticate`.
    verifications: std::sync::atomic::AtomicU64,
}

impl Auth {
    /// Sets up admin authentication. With no configured admin token and none
    /// stored yet, generates one and returns it: the caller shows it once.
    pub async fn new(
        store: Store,
        configured_admin: Option<&str>,
        ttl: Duration,
    ) -> Result<(Auth, Option<String>), Error> {
        let mut generated = None;
        let configured = configured_admin.map(str::to_owned);
        let configured_admin = match configured_admin {
            Some(token) => Some(hash_token(token.to_owned()).await?),
            None => {
                if settings::get(store.reader(), settings::ADMIN_TOKEN_HASH)
                    .await?
                    .is_none()
                {
                    let (token, hash) = issue_admin_token().await?;
                    store
                        .write(move |tx| settings::set(tx, settings::ADMIN_TOKEN_HASH, &hash))
                        .await?;
                    generated = Some(token);
                }
                None
            }
        };
        end_console_sessions_of_another_admin(&store, configured.as_deref()).await?;
        let auth = Auth {
            store,
            configured_admin,
            cache: Mutex::new(HashMap::new()),
            ttl,
            nobody: hash_token(random_hex()).await?,
            suspect_lane: tokio::sync::Semaphore::new(1),
            flights: Mutex::new(HashMap::new()),
            verifications: std::sync::atomic::AtomicU64::new(0),
        };
        Ok((auth, generated))
    }

    /// The principal `token` belongs to, or `Unauthorized`.
    pub async fn authenticate(&self, token: &str, lane: Lane) -> Result<Authenticated, Error> {
        const WRONG: Error = Error::Unauthorized("invalid token");
        enum Kind {
            Admin,
            Client(ClientId),
            App(AppId),
            Session(SessionId),
            Console(ConsoleSessionId),
        }
        let kind = match token.split_once('.') {
            Some((id, _)) if id.starts_with(ClientId::PREFIX) => {
                Kind::Client(ClientId::parse(id).ok_or(WRONG)?)
            }
            Some((id, _)) if id.starts_with(AppId::PREFIX) => {
                Kind::App(AppId::parse(id).ok_or(WRONG)?)
            }
            Some((id, _)) if id.starts_with(SessionId::PREFIX) => {
                Kind::Session(SessionId::parse(id).ok_or(WRONG)?)
            }
            Some((id, _)) if id.starts_with(ConsoleSessionId::PREFIX) => {
                Kind::Console(ConsoleSessionId::parse(id).ok_or(WRONG)?)
            }
            // An id alone, without its secret part: say so.
            None if token.starts_with(ClientId::PREFIX) && ClientId::parse(token).is_some() => {
                return Err(Error::Unauthorized(
                    "invalid token: this is a client id without its secret part; the token is the whole `token` value printed when the client was created (id, a dot, the secret)",
                ));
            }
            None if token.starts_with(AppId::PREFIX) && AppId::parse(token).is_some() => {
                return Err(Error::Unauthorized(
                    "invalid token: this is an app id without its secret part; the token is the whole `token` value printed when the app was created (id, a dot, the secret)",
                ));
            }
            None if token.starts_with(ConsoleSessionId::PREFIX) => return Err(WRONG),
            None if token.starts_with(SessionId::PREFIX) && SessionId::parse(token).is_some() => {
                return Err(Error::Unauthorized(
                    "invalid token: this is a session id without its secret part; the token is the whole `token` value the login returned (id, a dot, the secret)",
                ));
            }
            _ => Kind::Admin,
        };
        let key = match &kind {
            Kind::Admin => "admin".to_owned(),
            Kind::Client(id) => id.as_str().to_owned(),
            Kind::App(id) => id.as_str().to_owned(),
            Kind::Session(id) => id.as_str().to_owned(),
            Kind::Console(id) => id.as_str().to_owned(),
        };

        let aged = match self.cached(&key, token) {
            Cached::Fresh(hit) => return Ok(hit),
            Cached::Aged(hash) => Some(hash),
            Cached::Miss => None,
        };
        let _turn = self.turn(lane).await?;
        let reader = self.store.reader();
        let mut expires_at = None;
        let found = match kind {
            Kind::Client(id) => store::clients::credential(reader, &id)
                .await?
                .map(|c| (Principal::Client(id), c)),
            Kind::App(id) => store::apps::credential(reader, &id)
                .await?
                .map(|c| (Principal::App(id), c)),
            Kind::Session(id) => store::sessions::credential(reader, &id, store::now_ms())
                .await?
                .map(|c| {
                    expires_at = Some(c.expires_at);
                    let credential = store::Credential {
                        hash: c.hash,
                        version: c.version,
                    };
                    let session = UserSession {
                        session: id,
                        app: c.app,
                        user: c.user,
                    };
                    (Principal::User(session), credential)
                }),
            Kind::Console(id) => store::console::credential(reader, &id, store::now_ms())
                .await?
                .map(|(hash, at)| {
                    expires_at = Some(at);
                    (Principal::Admin, store::Credential { hash, version: 0 })
                }),
            Kind::Admin => match &self.configured_admin {
                Some(hash) => Some(hash.clone()),
                None => settings::get(reader, settings::ADMIN_TOKEN_HASH).await?,
            }
            .map(|hash| (Principal::Admin, store::Credential { hash, version: 0 })),
        };
        let Some((principal, credential)) = found else {
            // The same work as a wrong secret: timing must not tell.
            let _ = verify_token(token.to_owned(), self.nobody.clone()).await?;
            return Err(WRONG);
        };
        // The same token against the same hash: verified already.
        let known = |hash: Option<&str>| hash == Some(credential.hash.as_str());
        if !known(aged.as_deref()) {
            let flight = self.flight(&key);
            let _flight = flight.lock().await;
            // Another request may have verified it while this one waited.
            match self.cached(&key, token) {
                Cached::Fresh(hit) => return Ok(hit),
                Cached::Aged(hash) if known(Some(&hash)) => {}
                _ => {
                    self.verify_fresh(&key, &flight, token, &credential.hash)
                        .await?
                }
            }
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_PRUNE_AT {
            // Sessions come and go: drop what a request would check again anyway.
            let now = crate::store::now_ms();
            cache.retain(|_, v| v.at.elapsed() <= self.ttl && v.expires_at.is_none_or(|e| e > now));
        }
        cache.insert(
            key,
            Verified {
                token: token.into(),
                principal: principal.clone(),
                hash: credential.hash.into(),
                version: credential.version,
                at: Instant::now(),
                expires_at,
            },
        );
        Ok(Authenticated {
            principal,
            version: credential.version,
        })
    }

    /// Waits for this lane's turn to run argon2 (the normal lane: at once).
    async fn turn(&self, lane: Lane) -> Result<Option<tokio::sync::SemaphorePermit<'_>>, Error> {
        match lane {
            Lane::Normal => Ok(None),
            Lane::Suspect => {
                match tokio::time::timeout(SUSPECT_WAIT, self.suspect_lane.acquire()).await {
                    Ok(Ok(permit)) => Ok(Some(permit)),
                    _ => Err(Error::TooManyRequests {
                        message: "too many failed authentications from this address or for this id; retry later".into(),
                        retry_after_secs: 1,
                    }),
                }
            }
        }
    }

    /// Whether `password` matches the stored `hash`; None (no such account)
    /// costs the same argon2 verification and is false. Scheduled in `lane`
    /// like a token's.
    pub async fn check_password(
        &self,
        password: &str,
        hash: Option<&str>,
        lane: Lane,
    ) -> Result<bool, Error> {
        let _turn = self.turn(lane).await?;
        let against = hash.unwrap_or(&self.nobody).to_owned();
        let matched = verify_token(password.to_owned(), against).await?;
        Ok(matched && hash.is_some())
    }

    fn cached(&self, key: &str, token: &str) -> Cached {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = cache.get(key) else {
            return Cached::Miss;
        };
        if !constant_time_eq(entry.token.as_bytes(), token.as_bytes()) {
            return Cached::Miss;
        }
        let expired = entry
            .expires_at
            .is_some_and(|e| e <= crate::store::now_ms());
        if expired || entry.at.elapsed() > self.ttl {
            return Cached::Aged(entry.hash.to_string());
        }
        Cached::Fresh(Authenticated {
            principal: entry.principal.clone(),
            version: entry.version,
        })
    }

    /// Runs argon2 for a token not verified against `hash` before.
    async fn verify_fresh(
        &self,
        key: &str,
        flight: &std::sync::Arc<tokio::sync::Mutex<()>>,
        token: &str,
        hash: &str,
    ) -> Result<(), Error> {
        self.verifications
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let verified = verify_token(token.to_owned(), hash.to_owned()).await;
        self.land(key, flight);
        if verified? {
            Ok(())
        } else {
            Err(Error::Unauthorized("invalid token"))
        }
    }

    /// The lock of `key`'s verification, shared by concurrent requests.
    fn flight(&self, key: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.entry(key.to_owned()).or_default().clone()
    }

    /// Ends a verification: the last of its waiters removes its lock.
    fn land(&self, key: &str, flight: &std::sync::Arc<tokio::sync::Mutex<()>>) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        // Held by the map and by this caller only: nobody else is waiting.
        if std::sync::Arc::strong_count(flight) == 2 {
            flights.remove(key);
        }
    }

    /// argon2 verifications of known principals' tokens so far.
    pub fn verifications(&self) -> u64 {
        self.verifications
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets a principal's verified token (after revoke or rotate); for an
    /// app, also those of its user sessions.
    pub fn forget(&self, key: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, v| {
                k != key && !matches!(&v.principal, Principal::User(s) if s.app.as_str() == key)
            });
    }
}

/// Ends the admin console's sessions when they were opened with another
/// admin token than the one in force now (a changed `ADMIN_TOKEN`, or the
/// generated token reset), and records the one in force.
async fn end_console_sessions_of_another_admin(
    store: &Store,
    configured: Option<&str>,
) -> Result<(), Error> {
    let reader = store.reader();
    let recorded = settings::get(reader, settings::CONSOLE_ADMIN).await?;
    let current = match configured {
        Some(token) => {
            let same = match recorded.clone() {
                Some(hash) => verify_token(token.to_owned(), hash).await?,
                None => false,
            };
            if same {
                return Ok(());
            }
            hash_token(token.to_owned()).await?
        }
        None => match settings::get(reader, settings::ADMIN_TOKEN_HASH).await? {
            Some(hash) if recorded.as_deref() != Some(hash.as_str()) => hash,
            _ => return Ok(()),
        },
    };
    store
        .write(move |tx| {
            store::console::delete_all(tx)?;
            settings::set(tx, settings::CONSOLE_ADMIN, &current)
        })
        .await?;
    Ok(())
}

/// The id a token presents (`cli_…`, `app_…`, `ses_…`, `cns_…`), or `admin`
/// for any other shape: what failed authentications are also counted by.
pub fn presented_id(token: &str) -> &str {
    match token.split_once('.') {
        Some((id, _))
            if id.len() <= 64
                && (id.starts_with(ClientId::PREFIX)
                    || id.starts_with(AppId::PREFIX)
                    || id.starts_with(SessionId::PREFIX)
                    || id.starts_with(ConsoleSessionId::PREFIX)) =>
        {
            id
        }
        _ => "admin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An aged cache entry is renewed by a read while the stored hash is
    /// unchanged; concurrent first requests share one verification; a
    /// changed hash (a rotation by another process) is verified afresh.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn argon2_runs_once_per_credential_not_once_per_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.db"), store::Synchronous::Full)
            .await
            .unwrap();
        let id = ClientId::generate();
        let (token, hash) = issue_token(id.as_str()).await.unwrap();
        let id2 = id.clone();
        store
            .write(move |tx| store::clients::insert(tx, &id2, "a", &hash, 0))
            .await
            .unwrap();
        // TTL zero: every request finds its entry aged.
        let (auth, _) = Auth::new(store.clone(), Some("admin"), Duration::ZERO)
            .await
            .unwrap();
        let auth = std::sync::Arc::new(auth);
        let mut first = Vec::new();
        for _ in 0..16 {
            let (auth, token) = (auth.clone(), token.clone());
            first.push(tokio::spawn(async move {
                auth.authenticate(&token, Lane::Normal).await
            }));
        }
        for f in first {
            assert!(f.await.unwrap().is_ok());
        }
        for _ in 0..5 {
            assert!(auth.authenticate(&token, Lane::Normal).await.is_ok());
        }
        assert_eq!(auth.verifications(), 1);

        // Rotated elsewhere: the old token is verified against the new hash, and fails.
        let (_, new_hash) = issue_token(id.as_str()).await.unwrap();
        store
            .write(move |tx| store::clients::set_token(tx, &id, &new_hash, 1))
            .await
            .unwrap();
        assert!(auth.authenticate(&token, Lane::Normal).await.is_err());
        assert_eq!(auth.verifications(), 2);
        store.close().await;
    }

    #[tokio::test]
    async fn an_issued_token_verifies_and_another_does_not() {
        let (token, hash) = issue_token("cli_0123456789abcdef0123456789abcdef")
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains(&token));
        assert!(verify_token(token.clone(), hash.clone()).await.unwrap());
        let (other, _) = issue_token("cli_0123456789abcdef0123456789abcdef")
            .await
            .unwrap();
        assert!(!verify_token(other, hash).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_agree_with_the_argon2_crates_own_api() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash_token("secret-token".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"secret-token", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"other", &parsed)
            .is_err());
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"secret-token", &salt)
            .unwrap()
            .to_string();
        assert!(verify_token("secret-token".into(), theirs.clone())
            .await
            .unwrap());
        assert!(!verify_token("other".into(), theirs).await.unwrap());
    }

    #[test]
    fn tokens_carry_their_id_and_256_bits() {
        let hex = random_hex();
        assert_eq!(hex.len(), 64);
        assert_ne!(hex, random_hex());
    }

    #[test]
    fn constant_time_eq_compares_contents() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
