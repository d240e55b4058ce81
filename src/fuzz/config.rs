//! Configuration: whole TOML files as `hopgate run`/`check` load them, and the values inside them (and on the
//! command line): `--to` targets, `host:port` authorities, listen addresses, parent and tunnel proxy URLs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{lines, text};
use crate::config::{
    self, Authority, DomainPattern, FastCgiTarget, FtpTarget, Target, UpstreamSocket, host_key, load_str, parse_listen,
    parse_parent, percent_decode,
};
use crate::tunnel_client::{ProxyUrl, TunnelClient, parse_proxy_user};

/// The directory relative paths in a fuzzed config resolve against: examples/, so that the example configs
/// (certificates, CGI directory, users file) load as they are.
fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"))
}

/// A config file (TOML): loaded into a [`config::Config`] that keeps the loader's promises (at least one
/// listener, limits in range, routes most specific first, no two listeners on one address), or refused with an
/// error that names this file and a line it has.
pub fn config_load(data: &[u8]) {
    // A file that is not UTF-8 is refused before parsing (load_file reads it as a string).
    let Ok(src) = std::str::from_utf8(data) else { return };
    let lines_in_file = src.lines().count().max(1);
    match load_str(src, "fuzz.toml", base()) {
        Ok(c) => {
            assert!(!c.listeners.is_empty());
            assert!(c.limits.max_head_bytes >= 1024);
            assert!(c.limits.max_uri_bytes >= 1 && c.limits.max_connections >= 1);
            assert!((1..=config::MAX_HEADERS_LIMIT).contains(&c.limits.max_headers));
            for (i, l) in c.listeners.iter().enumerate() {
                assert!(l.proxy.is_some() || !l.routes.is_empty(), "a listener serves something");
                assert_eq!(l.listen.tls, !l.certs.is_empty(), "certificates exactly on https:// listeners");
                if l.listen.addr.port() != 0 {
                    assert!(c.listeners[..i].iter().all(|o| o.listen.addr != l.listen.addr));
                }
                for w in l.routes.windows(2) {
                    assert!(w[0].path.as_str().len() >= w[1].path.as_str().len(), "most specific route first");
                }
                for r in &l.routes {
                    let p = r.path.as_str();
                    assert!(p.starts_with('/') && (p == "/" || !p.ends_with('/')), "{p:?}");
                    if let Some(h) = &r.host {
                        assert!(!h.is_empty() && *h == h.to_ascii_lowercase() && !h.contains([':', '/', ' ']));
                    }
                }
                if let Some(v) = &l.via_name {
                    assert!(!v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic() && b != b','));
                }
            }
            assert!(!c.summary().is_empty());
        }
        Err(e) => {
            let at = e.at.as_ref().expect("a config error names its place");
            assert_eq!(&*at.file, "fuzz.toml");
            assert!(at.line <= lines_in_file + 1, "line {} of a {lines_in_file}-line file: {e}", at.line);
            assert!(!e.message.is_empty());
            assert!(e.to_string().starts_with(&format!("fuzz.toml:{}: ", at.line)));
        }
    }
}

/// Config values, one per line, each tried as every kind: a target parses back from its own display (the
/// password of an ftp:// target never shown), an authority from its display, a listen address from its scheme
/// and address; percent-decoding never grows a value; tunnel proxy URLs and targets.
pub fn config_values(data: &[u8]) {
    for line in lines(data).take(32) {
        let s = text(line);
        let s = s.as_ref();
        for default in [None, Some(80)] {
            if let Ok(a) = Authority::parse(s, default) {
                assert_ne!(a.port, 0);
                assert!(!a.host.is_empty() && a.host == a.host.to_ascii_lowercase());
                assert_eq!(Authority::parse(&a.to_string(), None).as_ref(), Ok(&a), "{s:?}");
            }
        }
        if let Ok(t) = Target::parse(s) {
            let shown = t.to_string();
            match &t {
                Target::Ftp(FtpTarget { pass: Some(p), dir, .. }) if !p.is_empty() => {
                    // Up to the directory (which may hold any text), no `:PASS@`.
                    let head = shown.strip_suffix(dir.as_str()).unwrap_or(&shown);
                    assert!(!head.contains(&format!(":{p}@")), "the password is shown: {shown}");
                }
                Target::Ftp(_) => {}
                Target::FastCgi(FastCgiTarget { socket: UpstreamSocket::Unix(_), .. }) | Target::Cgi(_) => {
                    assert_eq!(Target::parse(&shown).as_ref(), Ok(&t));
                }
                _ => assert_eq!(Target::parse(&shown).as_ref(), Ok(&t), "{s:?} shown as {shown:?}"),
            }
        }
        if let Ok(l) = parse_listen(s) {
            let again = parse_listen(&format!("{}://{}", l.scheme(), l.addr));
            assert_eq!(again, Ok(l), "{s:?}");
        }
        if let Ok(d) = DomainPattern::parse(s) {
            assert_eq!(DomainPattern::parse(&d.to_string()).as_ref(), Ok(&d), "{s:?} shown as {d}");
            let name = match &d {
                DomainPattern::Exact(n) | DomainPattern::Under(n) => n,
            };
            assert_eq!(&host_key(name), name, "kept as names are compared");
        }
        if let Ok(p) = parse_parent(s) {
            assert_eq!(Authority::parse(&p.authority.to_string(), None).as_ref(), Ok(&p.authority));
        }
        let decoded = percent_decode(s);
        assert!(decoded.len() <= s.len(), "{s:?} decodes to {decoded:?}");
        if !s.contains('%') {
            assert_eq!(decoded, s);
        }
        if let Ok(p) = s.parse::<ProxyUrl>() {
            assert!(!p.host.is_empty());
            let scheme = if p.tls { "https" } else { "http" };
            let shown = if p.host.contains(':') {
                format!("{scheme}://[{}]:{}", p.host, p.port)
            } else {
                format!("{scheme}://{}:{}", p.host, p.port)
            };
            assert_eq!(shown.parse::<ProxyUrl>().ok(), Some(p.clone()), "{s:?}");
        }
        let _ = TunnelClient::new("http://127.0.0.1:3128", s);
        if let Ok((user, _)) = parse_proxy_user(s) {
            assert!(!user.contains(':'));
        }
    }
}
