//! The forward proxy's policy (issue 18): which targets a request may reach and how fast. One [`Policy`] per
//! proxy table, built from its config with the listener (so a new configuration brings new rules), evaluated
//! once per request where the forward proxy decides (`server::service`, after proxy authentication: absolute-form
//! targets, CONNECT authorities, intercepted Host names) and once per intercepted TLS connection (its SNI).
//!
//! - **Names.** `allow_domains` / `deny_domains`: exact names and `*.suffix` (every name under the suffix, not the
//!   suffix itself), compared lowercase and without a trailing dot. Deny wins; a non-empty allow list refuses
//!   what it does not name, a connection without a name (TLS without SNI) included. An address literal matches
//!   only an exact entry of the same address.
//! - **Rules.** The first `[[listener.proxy.rule]]` naming the authenticated user (directly, or by a group of the
//!   groups file) replaces the listener's allow/deny lists and CONNECT ports for that request (a key the rule
//!   does not set is empty, or `[443]` for ports), and its rates replace the listener's per-user rates.
//! - **Rates.** `max_requests_per_second` and `max_bytes_per_second`, per client address (IPv6: its /64) and per
//!   authenticated user, as token buckets (`crate::limit`): past the request rate 429 with Retry-After; the byte
//!   rate slows the client connection (each way) from this request on.
//!
//! Refusals are 403 pages naming the list and the pattern (or rule) that refused; the CONNECT port message is
//! the one the CONNECT room always gave.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{self, DomainPattern, Rates, host_key};
use crate::error::{Error, Kind, StartupError};
use crate::http::auth::ClientKey;
use crate::http::groups::Groups;
use crate::limit::{self, Entry, MAX_LIMITED_KEYS, Table};

/// What a request (or an intercepted connection) wants to reach.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Nothing: hopgate answers it itself (`OPTIONS *`). Only the request rate applies.
    Itself,
    /// A host (name or address literal) and port; `connect`: a CONNECT tunnel, which `connect_ports` bound.
    Host { host: &'a str, port: u16, connect: bool },
    /// An intercepted connection that names nothing (TLS without SNI, HTTP/1.0 without Host): it matches no
    /// pattern, so an allow list refuses it and deny lists let it through.
    Unnamed,
}

/// What the policy granted a request: the byte limits its connection is under from now on.
#[derive(Default)]
pub struct Grant {
    /// The client address's and the user's entries; empty: no byte limit.
    pub bandwidth: Vec<Arc<Entry>>,
}

/// A proxy table's policy.
pub struct Policy {
    base: Lists,
    rules: Vec<Rule>,
    /// The listener's rates: per client address, and per user unless the user's rule sets its own.
    rates: Rates,
    addresses: Option<Table<ClientKey>>,
    users: Table<Box<str>>,
    /// Some rule or the listener limits bytes: connections need a throttle.
    limits_bytes: bool,
}

/// The lists one request is judged by: the listener's, or its user's rule's.
struct Lists {
    allow: Patterns,
    deny: Patterns,
    connect_ports: Vec<u16>,
    /// `[listener.proxy]` or `[[listener.proxy.rule]] N (FILE:LINE)`, for pages.
    label: String,
}

#[derive(Default)]
struct Patterns {
    exact: HashSet<String>,
    /// Suffixes of `*.suffix` entries.
    under: HashSet<String>,
    /// The patterns as written (normalised), for pages.
    all: Vec<DomainPattern>,
}

struct Rule {
    /// Its users, and the members of its groups.
    users: HashSet<String>,
    lists: Lists,
    rates: Rates,
    /// Its users' entries: its own rates, so a table of its own.
    table: Option<Table<Box<str>>>,
}

impl Patterns {
    fn new(list: &[DomainPattern]) -> Patterns {
        let mut p = Patterns { all: list.to_vec(), ..Patterns::default() };
        for d in list {
            match d {
                DomainPattern::Exact(n) => p.exact.insert(n.clone()),
                DomainPattern::Under(n) => p.under.insert(n.clone()),
            };
        }
        p
    }

    fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The pattern `name` (a host key) matches, if any.
    fn matching(&self, name: &str) -> Option<DomainPattern> {
        if self.exact.contains(name) {
            return Some(DomainPattern::Exact(name.to_owned()));
        }
        if self.under.is_empty() || name.parse::<IpAddr>().is_ok() {
            return None;
        }
        // Every proper suffix at a label boundary: a.b.example.com -> b.example.com, example.com, com.
        let mut rest = name;
        while let Some((_, suffix)) = rest.split_once('.') {
            if self.under.contains(suffix) {
                return Some(DomainPattern::Under(suffix.to_owned()));
            }
            rest = suffix;
        }
        None
    }
}

impl fmt::Display for Patterns {
    /// `"a.example", "*.b.example"`, at most five, then how many more.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.all.iter().take(5).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "\"{p}\"")?;
        }
        if self.all.len() > 5 {
            write!(f, " and {} more", self.all.len() - 5)?;
        }
        Ok(())
    }
}

impl Policy {
    /// The policy of a proxy table: its lists, its rules (with the groups file's members), its rate tables.
    pub fn new(cfg: &config::Proxy) -> Result<Policy, StartupError> {
        let groups = match &cfg.groups {
            Some(path) => Groups::load(path).map_err(|e| StartupError::new(format!("groups file {e}")))?,
            None => Groups::default(),
        };
        let label = "[listener.proxy]".to_owned();
        let base = Lists {
            allow: Patterns::new(&cfg.allow_domains),
            deny: Patterns::new(&cfg.deny_domains),
            connect_ports: cfg.connect_ports.clone(),
            label,
        };
        let rates = cfg.rates;
        let mut limits_bytes = rates.bytes_per_second.is_some();
        let mut rules = Vec::new();
        for (i, r) in cfg.rules.iter().enumerate() {
            let mut users: HashSet<String> = r.users.iter().cloned().collect();
            for g in &r.groups {
                users.extend(groups.members(g).map(str::to_owned));
            }
            let label = match &r.at {
                Some(at) => format!("[[listener.proxy.rule]] {} ({at})", i + 1),
                None => format!("[[listener.proxy.rule]] {}", i + 1),
            };
            let lists = Lists {
                allow: Patterns::new(&r.allow_domains),
                deny: Patterns::new(&r.deny_domains),
                connect_ports: r.connect_ports.clone(),
                label,
            };
            // The rule's rates, each falling back to the listener's per-user rate.
            let own = Rates {
                requests_per_second: r.rates.requests_per_second.or(rates.requests_per_second),
                bytes_per_second: r.rates.bytes_per_second.or(rates.bytes_per_second),
            };
            limits_bytes |= own.bytes_per_second.is_some();
            let table = (!own.is_none()).then(|| user_table(own));
            rules.push(Rule { users, lists, rates: own, table });
        }
        let addresses = (!rates.is_none()).then(|| {
            Table::new(MAX_LIMITED_KEYS, move |now| Entry::new(rates.requests_per_second, rates.bytes_per_second, now))
        });
        Ok(Policy { base, rules, rates, addresses, users: user_table(rates), limits_bytes })
    }

    /// Whether the policy judges nothing but CONNECT ports (no lists, rules or rates): then only a CONNECT needs
    /// [`Policy::admit`], and other requests skip it at no cost.
    pub fn only_ports(&self) -> bool {
        self.base.allow.is_empty() && self.base.deny.is_empty() && self.rules.is_empty() && self.rates.is_none()
    }

    /// Whether any request may come under a byte limit (then client connections are wrapped in a throttle).
    pub fn limits_bytes(&self) -> bool {
        self.limits_bytes
    }

    /// Judges one request of `user` (authenticated, if the proxy has users) from `client` for `target`: 403
    /// naming the list that refuses it, 429 past a request rate; else the byte limits its connection is under.
    pub fn admit(&self, target: Target<'_>, user: Option<&str>, client: IpAddr) -> Result<Grant, Error> {
        let rule = user.and_then(|u| self.rules.iter().find(|r| r.users.contains(u)));
        let lists = rule.map_or(&self.base, |r| &r.lists);
        lists.judge(target)?;
        let mut entries = Vec::with_capacity(2);
        if let Some(table) = &self.addresses {
            entries.push((table.entry(&ClientKey::of(client)), Who::Address(client), self.rates, &self.base.label));
        }
        if let Some(user) = user {
            let (table, rates, label) = match rule {
                Some(r) => (r.table.as_ref(), r.rates, &r.lists.label),
                None => (Some(&self.users), self.rates, &self.base.label),
            };
            if let Some(table) = table.filter(|_| !rates.is_none()) {
                entries.push((table.entry(&Box::from(user)), Who::User(user), rates, label));
            }
        }
        take_requests(&entries)?;
        Ok(Grant { bandwidth: entries.into_iter().map(|(e, ..)| e).filter(|e| e.limits_bytes()).collect() })
    }
}

fn user_table(rates: Rates) -> Table<Box<str>> {
    Table::new(MAX_LIMITED_KEYS, move |now| Entry::new(rates.requests_per_second, rates.bytes_per_second, now))
}

/// Whom a request limit counts.
enum Who<'a> {
    Address(IpAddr),
    User(&'a str),
}

/// One request token from every entry, or none: 429 naming the limit that ran out, with Retry-After.
fn take_requests(entries: &[(Arc<Entry>, Who<'_>, Rates, &String)]) -> Result<(), Error> {
    let now = tokio::time::Instant::now();
    for (i, (entry, who, rates, label)) in entries.iter().enumerate() {
        let Some(bucket) = &entry.requests else { continue };
        let wait = match limit_lock(bucket).take_one(now) {
            Ok(()) => continue,
            Err(wait) => wait,
        };
        // The tokens already taken for this request go back: it was not served.
        for (earlier, ..) in &entries[..i] {
            if let Some(b) = &earlier.requests {
                limit_lock(b).refund_one();
            }
        }
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let per = rates.requests_per_second.unwrap_or(0);
        let who = match who {
            Who::Address(ip) => format!("from {}", ClientKey::of(*ip)),
            Who::User(u) => format!("of user {u}"),
        };
        return Err(Error::client(
            Kind::RateLimited,
            format!(
                "more than {per} request{} per second {who} (max_requests_per_second of {label}): retry in {secs} s",
                if per == 1 { "" } else { "s" }
            ),
        )
        .with_field(http::header::RETRY_AFTER, http::HeaderValue::from(secs)));
    }
    Ok(())
}

fn limit_lock(m: &std::sync::Mutex<limit::Bucket>) -> std::sync::MutexGuard<'_, limit::Bucket> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Lists {
    fn judge(&self, target: Target<'_>) -> Result<(), Error> {
        let (host, port, connect) = match target {
            Target::Itself => return Ok(()),
            Target::Unnamed if self.allow.is_empty() => return Ok(()),
            Target::Unnamed => {
                return Err(Error::client(
                    Kind::TargetForbidden,
                    format!(
                        "a connection that names no host (no SNI, no Host) matches no allow_domains pattern ({}) of {}",
                        self.allow, self.label
                    ),
                ));
            }
            Target::Host { host, port, connect } => (host, port, connect),
        };
        if !(self.allow.is_empty() && self.deny.is_empty()) {
            let mut name = host_key(host);
            // An address in its one written form, as exact entries keep it (`[0:0::1]` is `::1`).
            if let Ok(ip) = name.parse::<IpAddr>() {
                name = ip.to_string();
            }
            self.judge_name(&name)?;
        }
        if connect && !self.connect_ports.contains(&port) {
            let allowed = self.connect_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
            let mut why = format!("CONNECT to port {port} is not allowed (allowed: {allowed})");
            if !self.label.starts_with("[listener.proxy]") {
                why.push_str(&format!(" by {}", self.label));
            }
            return Err(Error::client(Kind::TargetForbidden, why));
        }
        Ok(())
    }

    fn judge_name(&self, name: &str) -> Result<(), Error> {
        if let Some(p) = self.deny.matching(name) {
            return Err(Error::client(
                Kind::TargetForbidden,
                format!("{name} is refused by deny_domains \"{p}\" of {}", self.label),
            ));
        }
        if !self.allow.is_empty() && self.allow.matching(name).is_none() {
            return Err(Error::client(
                Kind::TargetForbidden,
                format!("{name} matches no allow_domains pattern ({}) of {}", self.allow, self.label),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(list: &[&str]) -> Patterns {
        Patterns::new(&list.iter().map(|s| DomainPattern::parse(s).unwrap()).collect::<Vec<_>>())
    }

    #[test]
    fn names_match_exactly_or_under_a_suffix() {
        let p = pats(&["a.example", "*.b.example", "10.0.0.1"]);
        assert!(p.matching("a.example").is_some());
        assert!(p.matching("x.a.example").is_none(), "an exact name is not a suffix");
        assert!(p.matching("b.example").is_none(), "*.b.example is not b.example itself");
        assert_eq!(p.matching("x.b.example").unwrap().to_string(), "*.b.example");
        assert_eq!(p.matching("deep.x.b.example").unwrap().to_string(), "*.b.example");
        assert!(p.matching("xb.example").is_none(), "suffixes start at a label");
        assert!(p.matching("10.0.0.1").is_some());
        let under_ip = pats(&["*.com"]);
        assert!(under_ip.matching("1.2.3.com").is_some());
        assert!(pats(&["*.0.1"]).matching("10.0.0.1").is_none(), "an address is no name under a suffix");
    }

    fn policy(toml: &str) -> Policy {
        let cfg = config::load_str(toml, "t.toml", std::path::Path::new(".")).unwrap();
        Policy::new(cfg.listeners[0].proxy.as_ref().unwrap()).unwrap()
    }

    fn host(h: &str) -> Target<'_> {
        Target::Host { host: h, port: 80, connect: false }
    }

    #[test]
    fn deny_wins_and_allow_refuses_the_rest() {
        let p = policy(
            "[[listener]]\nlisten = \":1\"\n[listener.proxy]\nallow_domains = [\"*.example\"]\n\
             deny_domains = [\"bad.example\"]\n",
        );
        let ip = "192.0.2.1".parse().unwrap();
        assert!(p.admit(host("Good.Example."), None, ip).is_ok());
        let e = p.admit(host("bad.example"), None, ip).err().unwrap();
        assert_eq!(e.status(), 403);
        assert_eq!(e.detail(), "bad.example is refused by deny_domains \"bad.example\" of [listener.proxy]");
        let e = p.admit(host("example"), None, ip).err().unwrap();
        assert_eq!(e.detail(), "example matches no allow_domains pattern (\"*.example\") of [listener.proxy]");
        assert!(p.admit(Target::Unnamed, None, ip).is_err(), "no name under an allow list");
        assert!(p.admit(Target::Itself, None, ip).is_ok());
        let by_address = policy("[[listener]]\nlisten = \":1\"\n[listener.proxy]\ndeny_domains = [\"[::1]\"]\n");
        assert!(by_address.admit(host("[0:0::1]"), None, ip).is_err(), "an address in another written form");
        let deny_only = policy("[[listener]]\nlisten = \":1\"\n[listener.proxy]\ndeny_domains = [\"*.x\"]\n");
        assert!(deny_only.admit(Target::Unnamed, None, ip).is_ok(), "no name under a deny list");
    }

    #[test]
    fn request_rates_per_address() {
        let p = policy("[[listener]]\nlisten = \":1\"\n[listener.proxy]\nmax_requests_per_second = 2\n");
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(p.admit(host("x"), None, a).is_ok());
        assert!(p.admit(host("x"), None, a).is_ok());
        let e = p.admit(host("x"), None, a).err().unwrap();
        assert_eq!(e.status(), 429);
        assert_eq!(e.fields()[0].1, "1");
        assert!(e.detail().starts_with("more than 2 requests per second from 192.0.2.1"), "{}", e.detail());
        assert!(p.admit(host("x"), None, b).is_ok(), "another address has its own bucket");
    }
}
