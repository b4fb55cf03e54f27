//! Rate limits (token buckets, `[rate_limits]`): per app, per app user, per
//! agent, and on failed authentications per client address and per
//! presented id. Over a limit a request gets 429 with `Retry-After`. A limit
//! of 0 switches that limit off.
//!
//! An address or id whose failed authentications exceed the limit is blocked
//! until its bucket refills. Blocked does not mean refused: a token that
//! verifies is always accepted (behind a proxy, or with one misconfigured
//! agent, many clients share an address); blocked sources are verified one
//! at a time (`auth::Lane::Suspect`) and their failures answered 429.

use crate::config::RateLimits;
use crate::error::Error;
use crate::ids::{AppId, ClientId, UserId};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Keyed = DefaultKeyedRateLimiter<String>;

/// What failed authentications are counted by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Source {
    Address(IpAddr),
    /// The id a token presented (`cli_…`, `app_…`, or `admin`).
    Id(String),
}

pub struct Limiters {
    app: Option<Keyed>,
    user: Option<Keyed>,
    agent: Option<Keyed>,
    failed_auth: Option<DefaultKeyedRateLimiter<Source>>,
    /// Sources blocked until the given time after too many failed authentications.
    blocked: Mutex<HashMap<Source, Instant>>,
    clock: DefaultClock,
}

fn per_second(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    Some(Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate)))
}

impl Limiters {
    pub fn new(c: &RateLimits) -> Limiters {
        Limiters {
            app: per_second(c.app_per_sec, c.app_burst).map(Keyed::keyed),
            user: per_second(c.user_per_sec, c.user_burst).map(Keyed::keyed),
            agent: per_second(c.agent_per_sec, c.agent_burst).map(Keyed::keyed),
            failed_auth: NonZeroU32::new(c.failed_auth_per_min)
                .map(|n| DefaultKeyedRateLimiter::keyed(Quota::per_minute(n))),
            blocked: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    fn check(&self, limiter: &Option<Keyed>, key: String, what: &str) -> Result<(), Error> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            too_many(what, wait)
        })
    }

    pub fn check_app(&self, app: &AppId) -> Result<(), Error> {
        self.check(
            &self.app,
            app.as_str().to_owned(),
            "this app's request rate ([rate_limits] app_per_sec)",
        )
    }

    pub fn check_user(&self, app: &AppId, user: &UserId) -> Result<(), Error> {
        let key = format!("{app}\u{0}{}", user.as_str());
        self.check(
            &self.user,
            key,
            "this user's message rate ([rate_limits] user_per_sec)",
        )
    }

    pub fn check_agent(&self, client: &ClientId) -> Result<(), Error> {
        self.check(
            &self.agent,
            client.as_str().to_owned(),
            "this agent's request rate ([rate_limits] agent_per_sec)",
        )
    }

    /// Whether the address or the presented id is blocked; if so, the 429
    /// its failures get.
    pub fn blocked(&self, ip: Option<IpAddr>, id: &str) -> Option<Error> {
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        // Every authenticated request asks: nothing to look up (or to
        // allocate) in the usual case.
        if blocked.is_empty() {
            return None;
        }
        let sources = ip
            .map(Source::Address)
            .into_iter()
            .chain([Source::Id(id.to_owned())]);
        let mut until = None;
        for source in sources {
            match blocked.get(&source) {
                Some(t) if *t > now => until = until.max(Some(*t)),
                Some(_) => {
                    blocked.remove(&source);
                }
                None => {}
            }
        }
        until.map(|t| {
            too_many(
                "failed authentications from this address or for this id ([rate_limits] failed_auth_per_min)",
                t - now,
            )
        })
    }

    /// Counts a failed authentication against the address and the presented
    /// id; past the limit, that source is blocked.
    pub fn failed_auth(&self, ip: Option<IpAddr>, id: Option<&str>) {
        let Some(limiter) = &self.failed_auth else {
            return;
        };
        let sources = ip
            .map(Source::Address)
            .into_iter()
            .chain(id.map(|id| Source::Id(id.to_owned())));
        for source in sources {
            if let Err(not_until) = limiter.check_key(&source) {
                let wait = not_until
                    .wait_time_from(self.clock.now())
                    .max(Duration::from_secs(1));
                self.blocked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(source, Instant::now() + wait);
            }
        }
    }

    /// Forgets buckets that are full again (run by the maintenance tick).
    pub fn prune(&self) {
        for l in [&self.app, &self.user, &self.agent].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.failed_auth {
            l.retain_recent();
            l.shrink_to_fit();
        }
        let now = Instant::now();
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, until| *until > now);
    }
}

fn too_many(what: &str, wait: Duration) -> Error {
    let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Error::TooManyRequests {
        message: format!("over {what}; retry after {retry_after_secs} s"),
        retry_after_secs: retry_after_secs.max(1),
    }
}
