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
            v4.is_loopback()
                || v4.is_link_local()
                // 0.0.0.0/8, "this network" (RFC 1122 §3.2.1.3), with 0.0.0.0 itself: this host.
                || v4.octets()[0] == 0
                || v4.is_multicast()
                || v4.is_broadcast()
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

    /// Whether connecting to `target` would reach one of hopgate's own listeners on its port:
    /// - a listener on exactly that address (`::ffff:a.b.c.d` is `a.b.c.d`);
    /// - any listener, when the target is unspecified (0.0.0.0, ::): connecting there reaches this host
    ///   (RFC 1122 §3.2.1.3), whatever address the listener is on;
    /// - a listener on the unspecified address of the target's family (all interfaces; IPv6 listeners are
    ///   IPv6-only), when the target is a loopback address or an address of one of this host's interfaces.
    ///   The interfaces are read (getifaddrs) only when such a listener has the target's port, so that an
    ///   address added after start-up counts too.
    pub fn contains(&self, target: SocketAddr) -> bool {
        let Ok(addrs) = self.addrs.read() else {
            return false;
        };
        let ip = target.ip().to_canonical();
        let mut wildcard = false;
        for own in addrs.iter().filter(|own| own.port() == target.port()) {
            let own_ip = own.ip().to_canonical();
            if own_ip == ip || ip.is_unspecified() {
                return true;
            }
            if own_ip.is_unspecified() && own_ip.is_ipv4() == ip.is_ipv4() {
                if ip.is_loopback() {
                    return true;
                }
                wildcard = true;
            }
        }
        drop(addrs);
        wildcard && local_addrs().contains(&ip)
    }
}

/// The addresses of this host's interfaces (getifaddrs(3)); empty if they can't be read.
fn local_addrs() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that stays valid until freeifaddrs; on failure it returns -1
    // and `head` is not used.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        tracing::debug!("getifaddrs failed: {}", std::io::Error::last_os_error());
        return out;
    }
    let mut next = head;
    while !next.is_null() {
        // SAFETY: `next` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*next };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is; the casts below
            // only read the struct of that family.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()));
            } else if family == libc::AF_INET6 {
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr).to_canonical());
            }
        }
        next = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_refuses_internal() {
        let p = TargetPolicy::default();
        for ip in [
            "127.0.0.1",
            "::1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::",
            "::ffff:0.0.0.0",
        ] {
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
        own.add("127.0.0.2:7000".parse().unwrap());
        for hit in [
            "127.0.0.1:8080",
            "127.9.9.9:8080",
            "[::ffff:127.0.0.1]:8080",
            "0.0.0.0:8080",
            "[::]:8080",
            "[::1]:9000",
            // Unspecified: this host, whatever address the listener is on.
            "0.0.0.0:9000",
            "[::]:9000",
            "[::ffff:0.0.0.0]:9000",
            "0.0.0.0:7000",
            "[::]:7000",
            "127.0.0.2:7000",
        ] {
            assert!(own.contains(hit.parse().unwrap()), "{hit}");
        }
        for miss in ["127.0.0.1:9000", "127.0.0.1:7000", "[::1]:8080", "0.0.0.0:8081", "192.0.2.200:8080", "[::1]:7000"]
        {
            assert!(!own.contains(miss.parse().unwrap()), "{miss}");
        }
    }

    #[test]
    fn a_wildcard_listener_is_reached_on_every_interface_address() {
        let own = OwnAddrs::new();
        own.add("0.0.0.0:8080".parse().unwrap());
        own.add("[::]:8443".parse().unwrap());
        let local = local_addrs();
        assert!(local.contains(&"127.0.0.1".parse().unwrap()), "{local:?}");
        for ip in local {
            let port = if ip.is_ipv4() { 8080 } else { 8443 };
            assert!(own.contains(SocketAddr::new(ip, port)), "{ip}");
            assert!(!own.contains(SocketAddr::new(ip, port + 1)), "{ip}");
        }
    }
}
