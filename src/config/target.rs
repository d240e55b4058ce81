//! What a gateway route points at (`--to`), and host:port authorities.

use std::fmt;
use std::path::PathBuf;

use super::percent_decode;

/// A host (name or IP, IPv6 without brackets) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Authority {
    pub host: String,
    pub port: u16,
}

impl Authority {
    /// Parses `host:port`, `[v6]:port`, or `host` when a default port is given.
    pub fn parse(s: &str, default_port: Option<u16>) -> Result<Authority, String> {
        if s.is_empty() {
            return Err("empty host".into());
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or("unclosed [ in IPv6 address")?;
            h.parse::<std::net::Ipv6Addr>().map_err(|_| format!("bad IPv6 address {h:?}"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("unexpected {after:?} after IPv6 address")),
            };
            (h, port)
        } else {
            match s.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(format!("IPv6 address {s:?} needs brackets: [ADDR]:PORT"));
                }
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            Some(p) => parse_port(p)?,
            None => default_port.ok_or("missing port")?,
        };
        if host.is_empty()
            || host.bytes().any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':')))
        {
            return Err(format!("bad host {host:?}"));
        }
        Ok(Authority { host: host.to_ascii_lowercase(), port })
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A TCP port as a URI or an address writes it (RFC 3986 §3.2.3 `port = *DIGIT`): decimal digits only, 1 to
/// 65535. Rust's own `u16` parsing would also take `+80`; `99999`, `80a`, `-80` and `0` are no port to connect to.
pub fn parse_port(p: &str) -> Result<u16, String> {
    let invalid = || format!("invalid port {p:?} (a port is a number from 1 to 65535)");
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid()),
        Ok(port) => Ok(port),
    }
}

/// The port of an authority a client gave (`[userinfo@]host[:port]`, `[IPv6]:port`), as in a request target:
/// `None` when there is none, or when it is empty (`host:`, which RFC 3986 §3.2.3 reads as the scheme's
/// default). Every place that takes a port from a client-given authority goes through here: the http crate's
/// `Authority::port_u16` reads `:99999` or `:80a` as no port at all, which would send the request to the
/// scheme's default port.
pub fn authority_port(authority: &str) -> Result<Option<u16>, String> {
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let port = match hostport.strip_prefix('[') {
        // `[::1]` ends in a group, not in a port.
        Some(v6) => match v6.split_once(']') {
            Some((_, "")) => None,
            Some((_, after)) => {
                Some(after.strip_prefix(':').ok_or_else(|| format!("unexpected {after:?} after an IPv6 address"))?)
            }
            None => return Err("unclosed [ in an IPv6 address".into()),
        },
        None => hostport.rsplit_once(':').map(|(_, p)| p),
    };
    match port {
        None | Some("") => Ok(None),
        Some(p) => parse_port(p).map(Some),
    }
}

/// A TCP address or a unix socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamSocket {
    Tcp(Authority),
    Unix(PathBuf),
}

/// Where a gateway route sends requests.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// `http://HOST:PORT[/base]` (relay) or `https://...` (HTTP/HTTPS: verified TLS to the origin).
    Http { tls: bool, authority: Authority, base: String },
    /// `ftp://[USER[:PASS]@]HOST[:PORT][/dir]`.
    Ftp { authority: Authority, user: Option<String>, pass: Option<String>, dir: String },
    /// `cgi:DIR`.
    Cgi { dir: PathBuf },
    /// `fastcgi://HOST:PORT` or `fastcgi+unix:PATH`.
    FastCgi { socket: UpstreamSocket },
    /// `scgi://HOST:PORT`.
    Scgi { authority: Authority },
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        let bad = |why: &str| format!("target {s:?}: {why}");
        if let Some(dir) = s.strip_prefix("cgi:") {
            if dir.is_empty() {
                return Err(bad("cgi: needs a directory"));
            }
            return Ok(Target::Cgi { dir: PathBuf::from(dir) });
        }
        if let Some(path) = s.strip_prefix("fastcgi+unix:") {
            if path.is_empty() {
                return Err(bad("fastcgi+unix: needs a socket path"));
            }
            return Ok(Target::FastCgi { socket: UpstreamSocket::Unix(PathBuf::from(path)) });
        }
        let (scheme, rest) = s.split_once("://").ok_or_else(|| {
            bad("expected http://, https://, ftp://, cgi:DIR, fastcgi://, fastcgi+unix:PATH or scgi://")
        })?;
        let (hostpart, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let base = path.trim_end_matches('/').to_string();
        if base.contains(['?', '#']) {
            return Err(bad("a query or fragment is not allowed"));
        }
        match scheme {
            "http" | "https" => {
                let tls = scheme == "https";
                let authority = Authority::parse(hostpart, Some(if tls { 443 } else { 80 })).map_err(|e| bad(&e))?;
                Ok(Target::Http { tls, authority, base })
            }
            "ftp" => {
                let (creds, hostport) = match hostpart.rsplit_once('@') {
                    Some((c, h)) => (Some(c), h),
                    None => (None, hostpart),
                };
                let (user, pass) = match creds {
                    Some(c) => match c.split_once(':') {
                        Some((u, p)) => (Some(percent_decode(u)), Some(percent_decode(p))),
                        None => (Some(percent_decode(c)), None),
                    },
                    None => (None, None),
                };
                let authority = Authority::parse(hostport, Some(21)).map_err(|e| bad(&e))?;
                let dir = percent_decode(&base);
                // These end up in FTP command lines: a line break would smuggle a second command.
                if [user.as_deref(), pass.as_deref(), Some(dir.as_str())]
                    .into_iter()
                    .flatten()
                    .any(|p| p.contains(['\r', '\n', '\0']))
                {
                    return Err(bad("the user, password or directory contains CR, LF or NUL"));
                }
                if dir.split('/').any(|seg| seg == "." || seg == "..") {
                    return Err(bad("the directory has a . or .. segment"));
                }
                Ok(Target::Ftp { authority, user, pass, dir })
            }
            "fastcgi" | "scgi" => {
                if !base.is_empty() {
                    return Err(bad("a path is not allowed"));
                }
                let authority = Authority::parse(hostpart, None).map_err(|e| bad(&e))?;
                Ok(if scheme == "scgi" {
                    Target::Scgi { authority }
                } else {
                    Target::FastCgi { socket: UpstreamSocket::Tcp(authority) }
                })
            }
            other => Err(bad(&format!("unknown scheme {other:?}"))),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Http { tls, authority, base } => {
                write!(f, "{}://{authority}{base}", if *tls { "https" } else { "http" })
            }
            // Credentials stay out of logs and summaries.
            Target::Ftp { authority, user, dir, .. } => match user {
                Some(u) => write!(f, "ftp://{u}@{authority}{dir}"),
                None => write!(f, "ftp://{authority}{dir}"),
            },
            Target::Cgi { dir } => write!(f, "cgi:{}", dir.display()),
            Target::FastCgi { socket: UpstreamSocket::Tcp(a) } => write!(f, "fastcgi://{a}"),
            Target::FastCgi { socket: UpstreamSocket::Unix(p) } => write!(f, "fastcgi+unix:{}", p.display()),
            Target::Scgi { authority } => write!(f, "scgi://{authority}"),
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(Authority::parse("Example.com", Some(80)).unwrap().to_string(), "example.com:80");
        assert_eq!(Authority::parse("[::1]:8080", None).unwrap().host, "::1");
        assert_eq!(Authority::parse("[::1]:8080", None).unwrap().to_string(), "[::1]:8080");
        assert!(Authority::parse("h:0", None).is_err());
        assert!(Authority::parse("h", None).is_err());
        assert!(Authority::parse("a b:1", None).is_err());
        assert!(Authority::parse("::1:80", None).is_err());
        for bad in ["h:+80", "h:99999", "h:65536", "h:80a", "h:-80", "h:", "[::1]:0x50"] {
            assert!(Authority::parse(bad, Some(80)).is_err(), "{bad}");
        }
        assert_eq!(Authority::parse("h:080", None).unwrap().port, 80);
    }

    #[test]
    fn ports_of_client_authorities() {
        for (a, want) in [
            ("example.com", None),
            ("example.com:", None),
            ("example.com:8080", Some(8080)),
            ("example.com:65535", Some(65535)),
            ("[::1]", None),
            ("[::1]:443", Some(443)),
            ("[::1]:", None),
            ("u:p@h", None),
            ("u:p@h:21", Some(21)),
            ("u:p:x@[::1]:21", Some(21)),
        ] {
            assert_eq!(authority_port(a), Ok(want), "{a}");
        }
        for (a, port) in [
            ("h:99999", "99999"),
            ("h:65536", "65536"),
            ("h:80a", "80a"),
            ("h:-80", "-80"),
            ("h:+80", "+80"),
            ("h:0", "0"),
            ("h:00000", "00000"),
            ("[::1]:99999", "99999"),
            ("u:1@h:x", "x"),
        ] {
            let e = authority_port(a).unwrap_err();
            assert!(e.starts_with(&format!("invalid port {port:?}")), "{a}: {e}");
        }
        assert!(authority_port("[::1]x").is_err());
        assert!(authority_port("[::1").is_err());
    }

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("http://127.0.0.1:9000/app/").unwrap(),
            Target::Http {
                tls: false,
                authority: Authority { host: "127.0.0.1".into(), port: 9000 },
                base: "/app".into()
            }
        );
        match Target::parse("ftp://bob:s%40cret@ftp.example.org/pub").unwrap() {
            Target::Ftp { authority, user, pass, dir } => {
                assert_eq!(authority.port, 21);
                assert_eq!(user.as_deref(), Some("bob"));
                assert_eq!(pass.as_deref(), Some("s@cret"));
                assert_eq!(dir, "/pub");
            }
            t => panic!("{t}"),
        }
        assert!(matches!(Target::parse("cgi:/srv/cgi").unwrap(), Target::Cgi { .. }));
        assert!(matches!(
            Target::parse("fastcgi+unix:/run/php.sock").unwrap(),
            Target::FastCgi { socket: UpstreamSocket::Unix(_) }
        ));
        assert!(Target::parse("scgi://127.0.0.1:4000").is_ok());
        assert!(Target::parse("scgi://127.0.0.1").is_err());
        assert!(Target::parse("gopher://x:70").is_err());
        assert!(!Target::parse("ftp://u:pw@h/").unwrap().to_string().contains("pw"));
        for bad in ["ftp://h/a/../b", "ftp://h/./b", "ftp://h/a%2F..%2Fb", "ftp://u%0D%0A:p@h/", "ftp://h/a%0Ab"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
