//! Target policy for client-chosen targets (forward proxy, CONNECT): loopback, link-local, unspecified and
//! multicast addresses are refused unless an `allow_targets` CIDR covers them. A gateway's `--to` is the
//! operator's choice and is never filtered.
//!
//! The policy is applied to resolved addresses, and the dialer connects to exactly the addresses that passed:
//! a name is resolved once, so DNS rebinding between check and connect is not possible.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use ipnet::IpNet;

#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    allow: Vec<IpNet>,
}

impl TargetPolicy {
    pub fn new(allow: Vec<IpNet>) -> TargetPolicy {
        TargetPolicy { allow }
    }

    /// Whether a client may make hopgate connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        !is_internal(ip) || self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// Addresses a client must not reach through a proxy by default.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fe80::/10
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// The addresses hopgate's own listeners are bound to, so a request aimed back at hopgate is caught (508).
#[derive(Debug, Default)]
pub struct OwnAddrs {
    addrs: RwLock<Vec<SocketAddr>>,
}

impl OwnAddrs {
    pub fn new() -> Arc<OwnAddrs> {
        Arc::new(OwnAddrs::default())
    }

    pub fn add(&self, addr: SocketAddr) {
        if let Ok(mut a) = self.addrs.write() {
            a.push(addr);
        }
    }

    /// Whether connecting to `target` would reach one of hopgate's own listeners.
    pub fn contains(&self, target: SocketAddr) -> bool {
        let Ok(addrs) = self.addrs.read() else {
            return false;
        };
        let ip = target.ip().to_canonical();
        addrs.iter().any(|own| {
            own.port() == target.port()
                && (own.ip().to_canonical() == ip
                    // A wildcard listener answers on every local address; loopback ones are certain.
                    || own.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_refuses_internal() {
        let p = TargetPolicy::default();
        for ip in ["127.0.0.1", "::1", "169.254.169.254", "0.0.0.0", "224.0.0.1", "fe80::1", "::ffff:127.0.0.1", "::"] {
            assert!(!p.permits(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "10.0.0.1", "2001:db8::1"] {
            assert!(p.permits(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn allow_list_opens_a_range() {
        let p = TargetPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(p.permits("127.0.0.1".parse().unwrap()));
        assert!(p.permits("::ffff:127.0.0.2".parse().unwrap()));
        assert!(!p.permits("::1".parse().unwrap()));
    }

    #[test]
    fn own_addresses() {
        let own = OwnAddrs::new();
        own.add("0.0.0.0:8080".parse().unwrap());
        own.add("[::1]:9000".parse().unwrap());
        assert!(own.contains("127.0.0.1:8080".parse().unwrap()));
        assert!(own.contains("[::1]:9000".parse().unwrap()));
        assert!(!own.contains("127.0.0.1:9000".parse().unwrap()));
    }
}
