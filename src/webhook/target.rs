//! Where webhooks may go. A target URL is http or https, without
//! credentials, and every address it resolves to must be public: loopback,
//! private, link-local, shared, unspecified, multicast and reserved
//! addresses are refused (an endpoint must not reach into the relay's own
//! network, e.g. a cloud metadata service at 169.254.169.254), unless
//! `[webhooks] allow_private` or `allowed_networks` allows them. The check
//! runs at creation and again at every connection, on the addresses the
//! connection will use (see [`GuardedResolver`]), so a DNS name that later
//! points somewhere private is refused too. Redirects are not followed.

use crate::proxy::TrustedProxies;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The longest URL an endpoint may have.
pub const MAX_URL_BYTES: usize = 2048;
/// How long resolving a host may take at creation.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct Policy {
    allow_private: bool,
    allowed: TrustedProxies,
}

/// Whether `ip` is an address anyone on the internet could reach.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 198 && (18..20).contains(&b)) // benchmarking
                || a >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || first == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || (first == 0x0064 && v6.segments()[1] == 0xff9b)) // NAT64 (hides an IPv4)
        }
    }
}

impl Policy {
    /// `allowed`: addresses or networks allowed although not public.
    pub fn new<S: AsRef<str>>(allow_private: bool, allowed: &[S]) -> Result<Policy, String> {
        Ok(Policy {
            allow_private,
            allowed: TrustedProxies::parse(allowed)?,
        })
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip) || self.allowed.contains(ip)
    }

    fn refusal(&self, ip: IpAddr) -> String {
        format!("{ip} is not a public address; set [webhooks] allow_private = true or list its network in [webhooks] allowed_networks to allow it")
    }

    /// Checks a URL's form and, after resolving its host, its addresses.
    /// The error says what is wrong, for a 422.
    pub async fn check(&self, url: &str) -> Result<Url, String> {
        let parsed = self.check_form(url)?;
        let host = parsed.host_str().unwrap_or_default();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addrs = match literal_ip(&parsed) {
            Some(ip) => vec![ip],
            None => tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| format!("resolving `{host}` took longer than 5 s"))?
                .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
                .map(|a| a.ip())
                .collect(),
        };
        if addrs.is_empty() {
            return Err(format!("`{host}` has no address"));
        }
        if let Some(ip) = addrs.iter().find(|ip| !self.allows(**ip)) {
            return Err(format!("`{host}` resolves to {}", self.refusal(*ip)));
        }
        Ok(parsed)
    }

    /// The URL's form alone: scheme, host, no credentials, length.
    pub fn check_form(&self, url: &str) -> Result<Url, String> {
        if url.len() > MAX_URL_BYTES {
            return Err(format!("the URL is over {MAX_URL_BYTES} bytes"));
        }
        let parsed = Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "the scheme must be http or https, not `{}`",
                parsed.scheme()
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err("the URL has no host".into());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("the URL must not carry credentials (user:password@); the signature authenticates the relay".into());
        }
        Ok(parsed)
    }

    /// For a URL whose host is an IP address (which no resolver sees): the
    /// refusal, if it is not allowed.
    pub fn refuse_literal(&self, url: &Url) -> Option<String> {
        literal_ip(url)
            .filter(|ip| !self.allows(*ip))
            .map(|ip| self.refusal(ip))
    }
}

fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// The HTTP client's resolver: the system's, keeping only the addresses the
/// policy allows (none left: the connection fails with the reason).
pub struct GuardedResolver(pub Arc<Policy>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| policy.allows(a.ip()))
                .collect();
            if allowed.is_empty() {
                let why = match all.first() {
                    Some(a) => format!("`{host}` resolves to {}", policy.refusal(a.ip())),
                    None => format!("`{host}` has no address"),
                };
                return Err(why.into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_for_form_and_address() {
        let strict = Policy::new::<&str>(false, &[]).unwrap();
        for bad in [
            "ftp://example.com/",
            "http://user:pw@1.1.1.1/",
            "not a url",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/hook",
            "http://[::1]:8080/",
            "http://localhost:9/",
        ] {
            assert!(strict.check(bad).await.is_err(), "{bad}");
        }
        assert!(strict.check("https://1.1.1.1/hook").await.is_ok());
        let some = Policy::new(false, &["127.0.0.0/8"]).unwrap();
        assert!(some.check("http://127.0.0.1:9/hook").await.is_ok());
        assert!(some.check("http://10.0.0.1/").await.is_err());
        let all = Policy::new::<&str>(true, &[]).unwrap();
        assert!(all.check("http://10.0.0.1/").await.is_ok());
    }
}
