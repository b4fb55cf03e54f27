//! Rate limits (token buckets, `[rate_limits]`): per app, per app user, per
//! agent, and per IP on failed authentications. Over a limit a request gets
//! 429 with `Retry-After`. A limit of 0 switches that limit off.
//!
//! An IP whose failed authentications exceed the limit is refused until its
//! bucket refills, before any token is verified: that is what keeps guessing
//! from costing argon2 time.

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

pub struct Limiters {
    app: Option<Keyed>,
    user: Option<Keyed>,
    agent: Option<Keyed>,
    failed_auth: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// IPs refused until the given time after too many failed authentications.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
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

    /// Refuses an IP that failed to authenticate too often, before any
    /// verification work.
    pub fn check_ip(&self, ip: Option<IpAddr>) -> Result<(), Error> {
        let Some(ip) = ip else { return Ok(()) };
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        match blocked.get(&ip) {
            Some(until) if *until > Instant::now() => Err(too_many(
                "failed authentications from this address ([rate_limits] failed_auth_per_min)",
                *until - Instant::now(),
            )),
            Some(_) => {
                blocked.remove(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failed authentication; past the limit the IP is blocked.
    pub fn failed_auth(&self, ip: Option<IpAddr>) {
        let (Some(ip), Some(limiter)) = (ip, &self.failed_auth) else {
            return;
        };
        if let Err(not_until) = limiter.check_key(&ip) {
            let wait = not_until
                .wait_time_from(self.clock.now())
                .max(Duration::from_secs(1));
            self.blocked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ip, Instant::now() + wait);
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
