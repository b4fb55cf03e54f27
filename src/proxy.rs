//! Trusted proxies (`[server] trusted_proxies`) and the client address of a
//! request. Behind a reverse proxy every connection comes from the proxy, so
//! per-address limits would treat all clients as one; the proxy names the
//! client in `X-Forwarded-For` or `Forwarded`. Those headers are believed
//! only when the TCP peer is a trusted proxy, and then read from the right:
//! the client is the last address that is not itself a trusted proxy (what
//! a client writes into the header itself stands further left and is never
//! taken).

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::Arc;

/// The addresses and networks whose forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    /// Parses addresses (`10.0.0.5`, `::1`) and networks (`10.0.0.0/8`);
    /// the error names the entry that is neither.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<TrustedProxies, String> {
        entries
            .iter()
            .map(|e| {
                let e = e.as_ref().trim();
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("`{e}` is neither an IP address nor a network (a.b.c.d/n)")
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| TrustedProxies(v.into()))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether the client reached a trusted proxy over https (the proxy says
    /// so in `X-Forwarded-Proto` or `Forwarded: proto=`); from anyone else
    /// these headers mean nothing.
    pub fn https(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        if !self.contains(peer) {
            return false;
        }
        let forwarded_proto = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().eq_ignore_ascii_case("https"));
        forwarded_proto.unwrap_or_else(|| {
            headers
                .get_all("forwarded")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split([',', ';']))
                .any(|part| part.trim().eq_ignore_ascii_case("proto=https"))
        })
    }

    /// The client's address: `peer`, or, when `peer` is a trusted proxy, the
    /// rightmost address in the forwarding headers that is not a trusted
    /// proxy (`X-Forwarded-For` first, then `Forwarded`).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let chain = forwarded_chain(headers);
        let mut client = peer;
        for ip in chain.into_iter().rev() {
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The addresses the forwarding headers list, leftmost (the client's claim)
/// first. Entries that are not addresses (`unknown`, obfuscated names) end
/// the usable chain at that point.
fn forwarded_chain(headers: &HeaderMap) -> Vec<IpAddr> {
    let xff: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let entries: Vec<String> = if !xff.is_empty() {
        xff.into_iter().map(str::to_owned).collect()
    } else {
        headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.eq_ignore_ascii_case("for")
                        .then(|| v.trim().trim_matches('"').to_owned())
                })
            })
            .collect()
    };
    let mut chain = Vec::new();
    for entry in entries {
        match parse_node(&entry) {
            Some(ip) => chain.push(canonical(ip)),
            // An unusable entry: nothing left of it can be attributed.
            None => chain.clear(),
        }
    }
    chain
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:5678`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn https_is_believed_only_from_a_trusted_proxy() {
        let t = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        let h = headers(&[("x-forwarded-proto", "https")]);
        assert!(t.https(proxy, &h));
        assert!(!t.https(stranger, &h));
        assert!(!t.https(proxy, &headers(&[("x-forwarded-proto", "http")])));
        let h = headers(&[("forwarded", "for=1.2.3.4;proto=https")]);
        assert!(t.https(proxy, &h));
        assert!(!t.https(proxy, &HeaderMap::new()));
    }

    #[test]
    fn forwarding_headers_are_ignored_from_an_untrusted_peer() {
        let t = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(t.client_ip(peer, &h), peer);
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let t = TrustedProxies::parse(&["10.0.0.0/8", "127.0.0.1"]).unwrap();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        // The client claims 1.1.1.1; the proxies added what they saw.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.1.2.3")]);
        assert_eq!(
            t.client_ip(peer, &h),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let h = headers(&[("forwarded", "for=\"[2001:db8::5]:4711\";proto=https")]);
        assert_eq!(
            t.client_ip(peer, &h),
            "2001:db8::5".parse::<IpAddr>().unwrap()
        );
        // No header: the proxy itself.
        assert_eq!(t.client_ip(peer, &HeaderMap::new()), peer);
    }

    #[test]
    fn entries_that_are_not_addresses_are_named() {
        let e = TrustedProxies::parse(&["10.0.0.1", "proxy.local"]).unwrap_err();
        assert!(e.contains("proxy.local"), "{e}");
    }
}
