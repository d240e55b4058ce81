//! Upstream groups: a route whose `to` is a list (or `--to` given more than once), with how a member is picked
//! for each request (`balance`), the active and passive health checks and the retries. docs/upstreams.md.

use std::fmt;
use std::time::Duration;

use super::Target;

/// Seconds between two active checks of a member, and how long a passive check takes a member out.
pub const DEFAULT_HEALTH_INTERVAL_SECS: f64 = 5.0;
/// Seconds an active check may take (connect, request, response head) before it counts as a failure.
pub const DEFAULT_HEALTH_TIMEOUT_SECS: f64 = 2.0;
/// Failed active checks in a row that take a member down.
pub const DEFAULT_UNHEALTHY_AFTER: u32 = 2;
/// Successful active checks in a row that bring a member that is down back.
pub const DEFAULT_HEALTHY_AFTER: u32 = 2;
/// Answers of 502, 503 or 504 from a member within `health_interval_secs` that take it out for that long.
pub const DEFAULT_MAX_FAILS: u32 = 3;
/// How often a request that may have reached the application (idempotent, no body) is sent to another member.
pub const DEFAULT_RETRIES: u32 = 1;
/// The most members a group may have.
pub const MAX_GROUP_MEMBERS: usize = 64;
/// The largest member `weight`.
pub const MAX_WEIGHT: u32 = 1000;
/// The largest `retries`, `max_fails`, `unhealthy_after` and `healthy_after`.
pub const MAX_COUNT: u32 = 100;

/// How a group picks the member of a request (`balance`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Balance {
    /// Smooth weighted round robin, as nginx does it (`round_robin`, the default).
    #[default]
    RoundRobin,
    /// The member with the fewest requests in flight relative to its weight; ties go to the heavier one
    /// (`least_conn`).
    LeastConn,
    /// Consistent hashing (weighted rendezvous) of the client's address (`client_ip`).
    ClientIp,
    /// Consistent hashing of a request header field's value (`header:NAME`, the name lowercase).
    Header(String),
    /// Consistent hashing of a cookie's value (`cookie:NAME`).
    Cookie(String),
}

impl Balance {
    pub fn parse(s: &str) -> Result<Balance, String> {
        let token = |name: &str| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
        };
        match s {
            "round_robin" => return Ok(Balance::RoundRobin),
            "least_conn" => return Ok(Balance::LeastConn),
            "client_ip" => return Ok(Balance::ClientIp),
            _ => {}
        }
        if let Some(name) = s.strip_prefix("header:")
            && token(name)
        {
            return Ok(Balance::Header(name.to_ascii_lowercase()));
        }
        if let Some(name) = s.strip_prefix("cookie:")
            && token(name)
        {
            return Ok(Balance::Cookie(name.to_owned()));
        }
        Err(format!("unknown balance {s:?}: expected round_robin, least_conn, client_ip, header:NAME or cookie:NAME"))
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Balance::RoundRobin => f.write_str("round_robin"),
            Balance::LeastConn => f.write_str("least_conn"),
            Balance::ClientIp => f.write_str("client_ip"),
            Balance::Header(n) => write!(f, "header:{n}"),
            Balance::Cookie(n) => write!(f, "cookie:{n}"),
        }
    }
}

/// What an active check does (`health_check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// `http(s)://` members: a GET of this path; 2xx or 3xx is healthy.
    Get(String),
    /// FastCGI members (`"fcgi"`): a connection and an `FCGI_GET_VALUES` exchange.
    Fcgi,
}

impl HealthCheck {
    pub fn parse(s: &str) -> Result<HealthCheck, String> {
        if s == "fcgi" {
            return Ok(HealthCheck::Fcgi);
        }
        if s.starts_with('/') && s.bytes().all(|b| b.is_ascii_graphic()) && !s.contains('#') {
            return Ok(HealthCheck::Get(s.to_owned()));
        }
        Err(format!("health_check {s:?}: a path such as \"/healthz\" (http members) or \"fcgi\" (FastCGI members)"))
    }
}

/// One member of a group: a target of the route's kind, with the route's options, and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub to: Target,
    pub weight: u32,
}

/// A route's upstream group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// At least one; all of one kind ([`kind`]).
    pub members: Vec<Member>,
    pub balance: Balance,
    /// None: active checks are off (passive ones are always on).
    pub health_check: Option<HealthCheck>,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
    /// 0: answers of 502/503/504 do not take a member out.
    pub max_fails: u32,
    pub retries: u32,
}

impl Group {
    pub fn new(members: Vec<Member>) -> Group {
        Group {
            members,
            balance: Balance::default(),
            health_check: None,
            health_interval: Duration::from_secs_f64(DEFAULT_HEALTH_INTERVAL_SECS),
            health_timeout: Duration::from_secs_f64(DEFAULT_HEALTH_TIMEOUT_SECS),
            unhealthy_after: DEFAULT_UNHEALTHY_AFTER,
            healthy_after: DEFAULT_HEALTHY_AFTER,
            max_fails: DEFAULT_MAX_FAILS,
            retries: DEFAULT_RETRIES,
        }
    }

    /// Whether `check` fits the members' kind.
    pub fn check_fits(&self) -> Result<(), String> {
        let Some(first) = self.members.first() else { return Err("an upstream group needs a member".into()) };
        match (&self.health_check, &first.to) {
            (None, _)
            | (Some(HealthCheck::Get(_)), Target::Http(_))
            | (Some(HealthCheck::Fcgi), Target::FastCgi(_)) => Ok(()),
            (Some(HealthCheck::Get(p)), t) => {
                Err(format!("health_check {p:?} is an HTTP check, for http:// and https:// members, not {t}"))
            }
            (Some(HealthCheck::Fcgi), t) => Err(format!("health_check \"fcgi\" is for FastCGI members, not {t}")),
        }
    }
}

/// The kind of member a target can be: members of one group share it. None: the target can't be a member.
pub fn kind(t: &Target) -> Option<&'static str> {
    match t {
        Target::Http(_) => Some("http:// and https://"),
        Target::FastCgi(_) => Some("fastcgi:// and fastcgi+unix:"),
        Target::Scgi(_) => Some("scgi://"),
        Target::Ftp(_) | Target::Cgi(_) | Target::File(_) => None,
    }
}

/// Checks that `targets` can form one group: every one a possible member, all of the first one's kind, no more
/// than [`MAX_GROUP_MEMBERS`]. `Err((i, why))`: the first target at fault.
pub fn check_members<'a>(targets: impl IntoIterator<Item = &'a Target>) -> Result<(), (usize, String)> {
    let mut first: Option<(&'static str, &Target)> = None;
    for (i, t) in targets.into_iter().enumerate() {
        if i >= MAX_GROUP_MEMBERS {
            return Err((i, format!("an upstream group has at most {MAX_GROUP_MEMBERS} members")));
        }
        let Some(k) = kind(t) else {
            return Err((
                i,
                format!(
                    "{t} can't be a member of an upstream group: members are http(s)://, fastcgi or scgi:// upstreams"
                ),
            ));
        };
        match first {
            None => first = Some((k, t)),
            Some((fk, ft)) if fk != k => {
                return Err((i, format!("{t} is not of the group's kind: {ft} makes it a group of {fk} members")));
            }
            Some(_) => {}
        }
        if let (Target::Http(a), Some((_, Target::Http(b)))) = (t, first)
            && a.base != b.base
        {
            return Err((i, format!("{t}: every member of a group has the same path ({:?})", b.base)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_values() {
        assert_eq!(Balance::parse("round_robin"), Ok(Balance::RoundRobin));
        assert_eq!(Balance::parse("least_conn"), Ok(Balance::LeastConn));
        assert_eq!(Balance::parse("client_ip"), Ok(Balance::ClientIp));
        assert_eq!(Balance::parse("header:X-User"), Ok(Balance::Header("x-user".into())));
        assert_eq!(Balance::parse("cookie:sid"), Ok(Balance::Cookie("sid".into())));
        for bad in ["random", "header:", "cookie:a b", "Round_Robin", ""] {
            assert!(Balance::parse(bad).unwrap_err().contains("unknown balance"), "{bad}");
        }
    }

    #[test]
    fn members_of_one_kind() {
        let t = |s: &str| Target::parse(s).unwrap();
        let ok = [t("http://a:1"), t("https://b:2")];
        assert!(check_members(&ok).is_ok());
        let ok = [t("fastcgi://a:1"), t("fastcgi+unix:/run/x.sock")];
        assert!(check_members(&ok).is_ok());
        let mixed = [t("http://a:1"), t("http://b:1"), t("fastcgi://c:1")];
        assert_eq!(check_members(&mixed).unwrap_err().0, 2);
        let ftp = [t("ftp://a/"), t("ftp://b/")];
        assert_eq!(check_members(&ftp).unwrap_err().0, 0);
        let bases = [t("http://a:1/x"), t("http://b:1/y")];
        assert_eq!(check_members(&bases).unwrap_err().0, 1);
    }
}
