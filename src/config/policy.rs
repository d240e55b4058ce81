//! The forward proxy's policy as configured (issue 18): domain patterns, per-user rules and rate limits, and the
//! intercepting listener modes. `crate::policy` builds the run-time policy from these; docs/configuration.md
//! lists the keys, docs/intercept.md the modes.

use std::fmt;
use std::net::IpAddr;

use super::{At, host_key};

/// Refuse (409) an intercepted request whose Host does not resolve to its original destination.
pub const DEFAULT_HOST_VERIFY: bool = true;
/// A tproxy listener's upstream connections keep the client's address as their source only when asked.
pub const DEFAULT_SPOOF_SOURCE: bool = false;
/// The smallest `max_bytes_per_second`: below it a request head of a few KiB would take longer than
/// `header_read_secs` to arrive.
pub const MIN_BYTES_PER_SECOND: u64 = 1024;

/// A listener that takes connections the packet filter sent to it instead of their destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intercept {
    pub mode: InterceptMode,
    /// Refuse (409) a request whose Host does not resolve to the original destination (Squid's
    /// `host_verify_strict`).
    pub host_verify: bool,
    /// tproxy only: connect upstream from the client's own address (`IP_TRANSPARENT`).
    pub spoof_source: bool,
}

/// How the packet filter hands connections over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptMode {
    /// `mode = "intercept"`: NAT `REDIRECT`; the original destination is `SO_ORIGINAL_DST`.
    Redirect,
    /// `mode = "tproxy"`: `TPROXY`; the listener is `IP_TRANSPARENT` and the original destination is the
    /// connection's local address.
    Tproxy,
}

impl InterceptMode {
    /// The value of `mode`.
    pub fn parse(s: &str) -> Result<InterceptMode, String> {
        match s {
            "intercept" => Ok(InterceptMode::Redirect),
            "tproxy" => Ok(InterceptMode::Tproxy),
            other => Err(format!(
                "mode {other:?}: expected \"intercept\" (NAT REDIRECT) or \"tproxy\" (TPROXY); without mode, \
                 clients connect to the listener themselves"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InterceptMode::Redirect => "intercept",
            InterceptMode::Tproxy => "tproxy",
        }
    }
}

/// One entry of `allow_domains` / `deny_domains`: an exact name (or IP address), or `*.suffix`, which matches
/// every name under the suffix and not the suffix itself. Kept lowercase and without a trailing dot, as names
/// are compared ([`host_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DomainPattern {
    Exact(String),
    /// The suffix without `*.`: `example.com` for `*.example.com`.
    Under(String),
}

impl DomainPattern {
    pub fn parse(s: &str) -> Result<DomainPattern, String> {
        let bad = |why: &str| {
            format!("{s:?} is not a domain pattern ({why}): use a name such as \"example.com\" or \"*.example.com\"")
        };
        let (under, rest) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let name = host_key(rest);
        if name.is_empty() {
            return Err(bad("empty"));
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            if under {
                return Err(bad("*. needs a name, not an address"));
            }
            return Ok(DomainPattern::Exact(ip.to_string()));
        }
        if name.contains('*') {
            return Err(bad("* only as the whole first label"));
        }
        let label_ok = |l: &str| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(bad("labels of letters, digits, - and _ separated by single dots"));
        }
        Ok(if under { DomainPattern::Under(name) } else { DomainPattern::Exact(name) })
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Exact(n) => f.write_str(n),
            DomainPattern::Under(n) => write!(f, "*.{n}"),
        }
    }
}

/// `max_requests_per_second` and `max_bytes_per_second`: token buckets that hold at most one second of the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
    /// Past it: 429 with Retry-After.
    pub requests_per_second: Option<u32>,
    /// Each way; past it the transfer is slowed.
    pub bytes_per_second: Option<u64>,
}

impl Rates {
    pub fn is_none(&self) -> bool {
        self.requests_per_second.is_none() && self.bytes_per_second.is_none()
    }
}

/// A `[[listener.proxy.rule]]`: for the users it names (directly or by group), its lists replace the listener's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProxyRule {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub allow_domains: Vec<DomainPattern>,
    pub deny_domains: Vec<DomainPattern>,
    /// Ports CONNECT may reach for these users; default [`super::DEFAULT_CONNECT_PORTS`].
    pub connect_ports: Vec<u16>,
    /// Per user; unset: the listener's.
    pub rates: Rates,
    /// Where the rule is in its file (the `[[listener.proxy.rule]]` line).
    pub at: Option<At>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = |s: &str| DomainPattern::parse(s);
        assert_eq!(p("Example.COM.").unwrap(), DomainPattern::Exact("example.com".into()));
        assert_eq!(p("*.Example.com").unwrap(), DomainPattern::Under("example.com".into()));
        assert_eq!(p("*.example.com").unwrap().to_string(), "*.example.com");
        assert_eq!(p("10.0.0.1").unwrap(), DomainPattern::Exact("10.0.0.1".into()));
        assert_eq!(p("[::1]").unwrap(), DomainPattern::Exact("::1".into()));
        for bad in ["", "*", "*.", "a..b", "a b", "*a.com", "a.*.com", "*.10.0.0.1", "a/b", ".a.com", "a.com.."] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }
}
