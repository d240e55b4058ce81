//! TOML loading for `hopgate run` and `hopgate check`: one loader, errors as `FILE:LINE: reason`.
//! examples/hopgate.toml documents every key with its default.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;

use super::*;

/// A config error with the place it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Loads and validates a config file, checking that every file it names can be read.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let at_file = |message: String| ConfigError { file: file.clone(), line: 0, message };
    // A device or a FIFO would never end or block: only a regular file (or a link to one) is read.
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => return Err(at_file("cannot read config: not a regular file".into())),
        Ok(_) => {}
        Err(e) => return Err(at_file(format!("cannot read config: {e}"))),
    }
    let src = std::fs::read_to_string(path).map_err(|e| at_file(format!("cannot read config: {e}")))?;
    let base = path.parent().unwrap_or(Path::new("."));
    load_str(&src, &file, base)
}

/// Loads a config from text; relative paths in it are resolved against `base`.
pub fn load_str(src: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
    let at = |span: Option<Range<usize>>, message: String| ConfigError {
        file: file.to_string(),
        line: span.map(|s| line_of(src, s.start)).unwrap_or(0),
        message,
    };
    let raw: RawConfig = toml::from_str(src).map_err(|e| at(e.span(), e.message().trim().to_string()))?;
    let ctx = Ctx { src, file, base };
    ctx.build(raw)
}

fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Seconds as an integer or a float, positive and finite.
#[derive(Debug, Clone, Copy)]
struct Secs(Duration);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Secs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a positive number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secs, E> {
                self.visit_f64(v as f64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Secs, E> {
                if v.is_finite() && v > 0.0 && v < 1e9 {
                    Ok(Secs(Duration::from_secs_f64(v)))
                } else {
                    Err(E::custom(format!("{v} is not a positive number of seconds")))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A value parsed from a string by a function, so that its errors carry the value's span.
macro_rules! parsed_string {
    ($name:ident, $ty:ty, $parse:expr) => {
        #[derive(Debug, Clone)]
        struct $name($ty);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                let f: fn(&str) -> Result<$ty, String> = $parse;
                f(&s).map($name).map_err(de::Error::custom)
            }
        }
    };
}

parsed_string!(ListenField, ListenAddr, parse_listen);
parsed_string!(TargetField, Target, Target::parse);
parsed_string!(ParentField, Parent, parse_parent);
parsed_string!(CidrField, ipnet::IpNet, |s| {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not a CIDR (for example 10.0.0.0/8) or an IP address"))
});

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    drain_secs: Option<Secs>,
    access_log: Option<String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    listener: Vec<Spanned<RawListener>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_head_bytes: Option<Spanned<usize>>,
    max_uri_bytes: Option<Spanned<usize>>,
    max_headers: Option<Spanned<usize>>,
    max_connections: Option<Spanned<usize>>,
    auth_max_verifying: Option<Spanned<usize>>,
    auth_max_queued: Option<Spanned<usize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    header_read_secs: Option<Secs>,
    idle_secs: Option<Secs>,
    connect_secs: Option<Secs>,
    response_head_secs: Option<Secs>,
    pool_idle_secs: Option<Secs>,
    tunnel_idle_secs: Option<Secs>,
    tls_handshake_secs: Option<Secs>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    listen: Spanned<ListenField>,
    #[serde(default)]
    tls: Vec<Spanned<RawCert>>,
    proxy: Option<Spanned<RawProxy>>,
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
    via_name: Option<Spanned<String>>,
    upgrades: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCert {
    cert: Spanned<PathBuf>,
    key: Spanned<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    connect_ports: Option<Vec<Spanned<u16>>>,
    #[serde(default)]
    allow_targets: Vec<CidrField>,
    users: Option<Spanned<PathBuf>>,
    parent: Option<ParentField>,
    ca: Option<Spanned<PathBuf>>,
    max_tunnels: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    to: Spanned<TargetField>,
    ca: Option<Spanned<PathBuf>>,
    root: Option<Spanned<PathBuf>>,
    index: Option<Spanned<String>>,
    uploads: Option<Spanned<bool>>,
    script_timeout_secs: Option<Spanned<Secs>>,
    max_scripts: Option<Spanned<usize>>,
    split_path: Option<Spanned<String>>,
    pass_authorization: Option<Spanned<bool>>,
    upgrades: Option<Spanned<Vec<Spanned<String>>>>,
}

struct Ctx<'a> {
    src: &'a str,
    file: &'a str,
    base: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError { file: self.file.to_string(), line: line_of(self.src, span.start), message: message.into() }
    }

    fn positive(&self, v: &Option<Spanned<usize>>, name: &str, default: usize) -> Result<usize, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) if *s.get_ref() == 0 => Err(self.err(s.span(), format!("{name} must be at least 1"))),
            Some(s) => Ok(*s.get_ref()),
        }
    }

    /// Resolves a path against the config file's directory and checks that it can be opened.
    fn readable(&self, p: &Spanned<PathBuf>, what: &str) -> Result<PathBuf, ConfigError> {
        let path = self.base.join(p.get_ref());
        match std::fs::metadata(&path) {
            Ok(_) => Ok(path),
            Err(e) => Err(self.err(p.span(), format!("{what} {}: {e}", path.display()))),
        }
    }

    /// A path (relative to the config file) that must be a regular file: a device (/dev/zero) or a FIFO named by
    /// mistake would make loading it never end or block.
    fn file(&self, p: &Spanned<PathBuf>, what: &str) -> Result<PathBuf, ConfigError> {
        let path = self.readable(p, what)?;
        if !path.is_file() {
            return Err(self.err(p.span(), format!("{what} {} is not a regular file", path.display())));
        }
        Ok(path)
    }

    /// A CA bundle that is readable and holds usable CA certificates.
    fn ca_bundle(&self, p: &Spanned<PathBuf>) -> Result<PathBuf, ConfigError> {
        let path = self.file(p, "CA bundle")?;
        crate::upstream::tls::load_ca(&path).map_err(|e| self.err(p.span(), e))?;
        Ok(path)
    }

    fn build(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let limits = Limits {
            max_head_bytes: self.positive(&raw.limits.max_head_bytes, "max_head_bytes", DEFAULT_MAX_HEAD_BYTES)?,
            max_uri_bytes: self.positive(&raw.limits.max_uri_bytes, "max_uri_bytes", DEFAULT_MAX_URI_BYTES)?,
            max_headers: self.positive(&raw.limits.max_headers, "max_headers", DEFAULT_MAX_HEADERS)?,
            max_connections: self.positive(&raw.limits.max_connections, "max_connections", DEFAULT_MAX_CONNECTIONS)?,
            auth_max_verifying: self.positive(
                &raw.limits.auth_max_verifying,
                "auth_max_verifying",
                default_auth_max_verifying(),
            )?,
            auth_max_queued: self.positive(&raw.limits.auth_max_queued, "auth_max_queued", DEFAULT_AUTH_MAX_QUEUED)?,
        };
        if let Some(h) = &raw.limits.max_head_bytes
            && *h.get_ref() < 1024
        {
            return Err(self.err(h.span(), "max_head_bytes must be at least 1024"));
        }
        let t = &raw.timeouts;
        let d = Timeouts::default();
        let pick = |v: Option<Secs>, def: Duration| v.map(|s| s.0).unwrap_or(def);
        let timeouts = Timeouts {
            header_read: pick(t.header_read_secs, d.header_read),
            idle: pick(t.idle_secs, d.idle),
            connect: pick(t.connect_secs, d.connect),
            response_head: pick(t.response_head_secs, d.response_head),
            pool_idle: pick(t.pool_idle_secs, d.pool_idle),
            tunnel_idle: pick(t.tunnel_idle_secs, d.tunnel_idle),
            tls_handshake: pick(t.tls_handshake_secs, d.tls_handshake),
        };
        let access_log = match raw.access_log.as_deref() {
            None | Some("stdout") => AccessLog::Stdout,
            Some("off") => AccessLog::Off,
            Some(path) => AccessLog::File(self.base.join(path)),
        };
        if raw.listener.is_empty() {
            return Err(ConfigError {
                file: self.file.to_string(),
                line: 1,
                message: "no [[listener]]: a config needs at least one".into(),
            });
        }
        if let Some(h) = &raw.limits.max_headers
            && *h.get_ref() > MAX_HEADERS_LIMIT
        {
            // hyper allocates room for this many fields per request head.
            return Err(self.err(h.span(), format!("max_headers must be at most {MAX_HEADERS_LIMIT}")));
        }
        if let Some(v) = &raw.limits.auth_max_verifying
            && *v.get_ref() > MAX_AUTH_VERIFYING_LIMIT
        {
            // One thread each, all started at the first check.
            return Err(self.err(v.span(), format!("auth_max_verifying must be at most {MAX_AUTH_VERIFYING_LIMIT}")));
        }
        let mut listeners: Vec<Listener> = Vec::new();
        for l in raw.listener {
            let span = l.span();
            let listen_span = l.get_ref().listen.span();
            let listener = self.listener(l.into_inner(), span)?;
            // `run` would fail to bind the second one: a config that checks is a config that runs.
            if listener.listen.addr.port() != 0
                && let Some(other) = listeners.iter().find(|o| o.listen.addr == listener.listen.addr)
            {
                return Err(self.err(
                    listen_span,
                    format!(
                        "{} is already the address of another listener ({})",
                        listener.listen.addr,
                        other.listen.scheme()
                    ),
                ));
            }
            listeners.push(listener);
        }
        Ok(Config {
            drain: raw.drain_secs.map(|s| s.0).unwrap_or(Duration::from_secs_f64(DEFAULT_DRAIN_SECS)),
            access_log,
            limits,
            timeouts,
            listeners,
        })
    }

    fn listener(&self, l: RawListener, span: Range<usize>) -> Result<Listener, ConfigError> {
        let listen = l.listen.get_ref().0;
        let mut certs = Vec::new();
        for c in &l.tls {
            let pair = CertPair {
                cert: self.file(&c.get_ref().cert, "certificate")?,
                key: self.file(&c.get_ref().key, "key")?,
            };
            // Parse and match them now, so that the error points at the key naming the wrong file.
            if let Err(e) = crate::server::tls::load_pair(&pair) {
                let span = match e.which {
                    crate::server::tls::Which::Cert => c.get_ref().cert.span(),
                    crate::server::tls::Which::Key => c.get_ref().key.span(),
                };
                return Err(self.err(span, e.to_string()));
            }
            certs.push(pair);
        }
        if listen.tls && certs.is_empty() {
            return Err(self.err(
                l.listen.span(),
                "an https:// listener needs a certificate: add [[listener.tls]] with cert and key",
            ));
        }
        if !listen.tls && !certs.is_empty() {
            return Err(self.err(l.tls[0].span(), "[[listener.tls]] on a plain listener: use listen = \"https://...\""));
        }
        let proxy = match l.proxy {
            None => None,
            Some(p) => Some(self.proxy(p.into_inner())?),
        };
        let mut routes = Vec::new();
        for r in l.route {
            routes.push(self.route(r.into_inner())?);
        }
        if proxy.is_none() && routes.is_empty() {
            return Err(self.err(span, "this listener serves nothing: add [listener.proxy] or a [[listener.route]]"));
        }
        // Most specific route first: longer paths, then routes with a host before host-less ones.
        routes.sort_by(|a, b| b.path.len().cmp(&a.path.len()).then(b.host.is_some().cmp(&a.host.is_some())));
        if let Some(v) = &l.via_name {
            let name = v.get_ref();
            // RFC 9110 §7.6.3: received-by is a host[:port] or a pseudonym (a token); hopgate finds itself in a
            // Via by that word, so it can't hold spaces or commas.
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                return Err(self.err(
                    v.span(),
                    format!("via_name {name:?}: one word of visible characters without commas is expected"),
                ));
            }
        }
        let upgrades = match &l.upgrades {
            Some(list) => self.upgrades(list.get_ref())?,
            None => Upgrades::default(),
        };
        Ok(Listener { listen, certs, proxy, routes, via_name: l.via_name.map(|v| v.into_inner()), upgrades })
    }

    /// An `upgrades` list: protocol tokens (`name` or `name/version`), never h2c, h2 or HTTP.
    fn upgrades(&self, list: &[Spanned<String>]) -> Result<Upgrades, ConfigError> {
        let mut out = Vec::new();
        for item in list {
            let text = item.get_ref();
            let Some(p) = UpgradeProtocol::parse(text) else {
                return Err(self.err(
                    item.span(),
                    format!("upgrades: {text:?} is not a protocol token (NAME or NAME/VERSION, such as \"websocket\")"),
                ));
            };
            if let Some(why) = p.never_allowed() {
                return Err(self.err(item.span(), format!("upgrades: {why}")));
            }
            out.push(p);
        }
        Ok(Upgrades::new(out))
    }

    fn proxy(&self, p: RawProxy) -> Result<Proxy, ConfigError> {
        let mut out = Proxy::default();
        if let Some(ports) = p.connect_ports {
            out.connect_ports = Vec::new();
            for port in ports {
                if *port.get_ref() == 0 {
                    return Err(self.err(port.span(), "connect port 0"));
                }
                out.connect_ports.push(*port.get_ref());
            }
        }
        out.allow_targets = p.allow_targets.into_iter().map(|c| c.0).collect();
        out.users = p.users.as_ref().map(|u| self.file(u, "users file")).transpose()?;
        out.parent = p.parent.map(|p| p.0);
        out.ca = p.ca.as_ref().map(|c| self.ca_bundle(c)).transpose()?;
        out.max_tunnels = self.positive(&p.max_tunnels, "max_tunnels", DEFAULT_MAX_TUNNELS)?;
        Ok(out)
    }

    fn route(&self, r: RawRoute) -> Result<Route, ConfigError> {
        let to = r.to.get_ref().0.clone();
        let mut route = Route::new(to.clone());
        if let Some(h) = &r.host {
            let given = h.get_ref();
            // Requests are matched by host_key too: lowercase, one trailing dot (the root label) removed.
            let host = host_key(given);
            if host.is_empty() || host.ends_with('.') || host.contains(['/', ' ', ':', '[', ']', '@']) {
                return Err(self.err(h.span(), format!("host {given:?}: a bare host name without port is expected")));
            }
            route.host = Some(host);
        }
        if let Some(p) = &r.path {
            let path = p.get_ref();
            if !path.starts_with('/') {
                return Err(self.err(p.span(), format!("path {path:?} must start with /")));
            }
            route.path = path.trim_end_matches('/').to_string();
            if route.path.is_empty() {
                route.path = "/".into();
            }
        }
        self.keys_fit_the_target(&r, &to)?;
        route.ca = r.ca.as_ref().map(|c| self.ca_bundle(c)).transpose()?;
        route.root = r.root.as_ref().map(|c| self.directory(c, "root directory")).transpose()?;
        if let Some(i) = &r.index {
            let index = i.get_ref();
            if index.is_empty() || index == "." || index == ".." || index.contains(['/', '%', '\0']) {
                return Err(self.err(i.span(), format!("index {index:?}: a plain file name is expected")));
            }
        }
        if let Some(sp) = &r.split_path
            && (sp.get_ref().is_empty() || sp.get_ref().contains(['/', '\0']))
        {
            return Err(
                self.err(sp.span(), format!("split_path {:?}: a file name suffix such as \".php\"", sp.get_ref()))
            );
        }
        route.index = r.index.map(|i| i.into_inner());
        route.uploads = r.uploads.map(|u| u.into_inner()).unwrap_or(true);
        route.script_timeout = r.script_timeout_secs.map(|s| s.into_inner().0);
        route.max_scripts = match &r.max_scripts {
            Some(_) => Some(self.positive(&r.max_scripts, "max_scripts", 1)?),
            None => None,
        };
        route.split_path = r.split_path.map(|s| s.into_inner());
        route.pass_authorization = r.pass_authorization.map(|p| p.into_inner()).unwrap_or(false);
        route.upgrades = r.upgrades.as_ref().map(|u| self.upgrades(u.get_ref())).transpose()?;
        if let Target::Cgi { dir } = &to {
            let dir = self.base.join(dir);
            if !dir.is_dir() {
                return Err(self.err(r.to.span(), format!("CGI directory {} does not exist", dir.display())));
            }
            route.to = Target::Cgi { dir };
        }
        // Like every path in the file, a relative unix socket path is relative to the file's directory.
        if let Target::FastCgi { socket: UpstreamSocket::Unix(path) } = &to {
            route.to = Target::FastCgi { socket: UpstreamSocket::Unix(self.base.join(path)) };
        }
        Ok(route)
    }

    /// A key for another kind of route would be silently ignored: say so, at its line, as the command line
    /// does for `--root` and `--index`.
    fn keys_fit_the_target(&self, r: &RawRoute, to: &Target) -> Result<(), ConfigError> {
        let https = matches!(to, Target::Http { tls: true, .. });
        let http = matches!(to, Target::Http { .. });
        let ftp = matches!(to, Target::Ftp { .. });
        let cgi = matches!(to, Target::Cgi { .. });
        let fastcgi = matches!(to, Target::FastCgi { .. });
        let app = cgi || fastcgi || matches!(to, Target::Scgi { .. });
        let checks = [
            ("ca", r.ca.as_ref().map(|v| v.span()), https, "https:// routes"),
            ("upgrades", r.upgrades.as_ref().map(|v| v.span()), http, "http:// and https:// routes"),
            ("uploads", r.uploads.as_ref().map(|v| v.span()), ftp, "ftp:// routes"),
            ("root", r.root.as_ref().map(|v| v.span()), fastcgi, "fastcgi:// and fastcgi+unix: routes"),
            ("index", r.index.as_ref().map(|v| v.span()), cgi || fastcgi, "cgi: and fastcgi routes"),
            ("split_path", r.split_path.as_ref().map(|v| v.span()), fastcgi, "fastcgi:// and fastcgi+unix: routes"),
            ("max_scripts", r.max_scripts.as_ref().map(|v| v.span()), cgi, "cgi: routes"),
            (
                "script_timeout_secs",
                r.script_timeout_secs.as_ref().map(|v| v.span()),
                app,
                "cgi:, fastcgi and scgi routes",
            ),
            (
                "pass_authorization",
                r.pass_authorization.as_ref().map(|v| v.span()),
                app,
                "cgi:, fastcgi and scgi routes",
            ),
        ];
        // The first misplaced key in the file is the one reported.
        let misplaced = checks
            .into_iter()
            .filter_map(|(key, span, fits, which)| span.filter(|_| !fits).map(|span| (span, key, which)))
            .min_by_key(|(span, _, _)| span.start);
        match misplaced {
            Some((span, key, which)) => Err(self.err(span, format!("{key} only applies to {which}, not to {to}"))),
            None => Ok(()),
        }
    }

    /// A path (relative to the config file) that must be an existing directory.
    fn directory(&self, p: &Spanned<PathBuf>, what: &str) -> Result<PathBuf, ConfigError> {
        let path = self.readable(p, what)?;
        if !path.is_dir() {
            return Err(self.err(p.span(), format!("{what} {} is not a directory", path.display())));
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> Result<Config, ConfigError> {
        load_str(src, "t.toml", Path::new("."))
    }

    #[test]
    fn minimal_proxy() {
        let c = load("[[listener]]\nlisten = \"127.0.0.1:0\"\n[listener.proxy]\n").unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].proxy.as_ref().unwrap().connect_ports, vec![443]);
        assert_eq!(c.timeouts, Timeouts::default());
    }

    #[test]
    fn route_hosts_compare_as_requests_do() {
        let route = |host: &str| {
            load(&format!(
                "[[listener]]\nlisten = \":1\"\n[[listener.route]]\nto = \"http://127.0.0.1:1\"\nhost = \"{host}\"\n"
            ))
        };
        for (given, kept) in [("A.Example", "a.example"), ("a.example.", "a.example")] {
            assert_eq!(route(given).unwrap().listeners[0].routes[0].host.as_deref(), Some(kept), "{given}");
        }
        for bad in ["a.example..", ".", "a.example:80", "[::1]", "u@a.example", ""] {
            let e = route(bad).unwrap_err();
            assert_eq!(e.line, 5, "{bad}: {e}");
            assert!(e.message.contains("a bare host name"), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        let e = load("drain_secs = 1\n\n[[listener]]\nlisten = \"nope\"\n[listener.proxy]\n").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.to_string().starts_with("t.toml:4: "), "{e}");
        let e =
            load("[[listener]]\nlisten = \":1\"\n[listener.proxy]\nallow_targets = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        let e = load("[timeouts]\nidle_secs = -1\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = load("bogus = 1\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        assert!(e.message.contains("bogus"), "{e}");
        let e = load("[[listener]]\nlisten = \":1\"\n").unwrap_err();
        assert!(e.message.contains("serves nothing"), "{e}");
        let e = load("[[listener]]\nlisten = \"https://:1\"\n[listener.proxy]\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn what_would_not_run_does_not_check() {
        let e = load(
            "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[listener.proxy]\n\
             [[listener]]\nlisten = \"http://127.0.0.1:8080\"\n[listener.proxy]\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("already"), "{e}");
        assert!(
            load("[[listener]]\nlisten = \":0\"\n[listener.proxy]\n[[listener]]\nlisten = \":0\"\n[listener.proxy]\n")
                .is_ok()
        );
        for bad in ["a b", "x,y", "", "caf\u{e9}"] {
            let e =
                load(&format!("[[listener]]\nlisten = \":0\"\nvia_name = \"{bad}\"\n[listener.proxy]\n")).unwrap_err();
            assert_eq!(e.line, 3, "{bad:?}: {e}");
        }
        let e =
            load("[limits]\nmax_headers = 100000000\n[[listener]]\nlisten = \":0\"\n[listener.proxy]\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn upgrades_lists() {
        let c = load("[[listener]]\nlisten = \":1\"\n[listener.proxy]\n").unwrap();
        assert_eq!(c.listeners[0].upgrades, Upgrades::default());
        let c = load(
            "[[listener]]\nlisten = \":1\"\nupgrades = []\n[[listener.route]]\nto = \"http://a:1\"\n\
             upgrades = [\"WebSocket\", \"foo/1\"]\n[[listener.route]]\npath = \"/b\"\nto = \"http://b:1\"\n",
        )
        .unwrap();
        let l = &c.listeners[0];
        assert!(l.upgrades.protocols().is_empty());
        let own = l.routes.iter().find(|r| r.path == "/").unwrap().upgrades.as_ref().unwrap();
        assert_eq!(own.protocols().iter().map(|p| p.to_string()).collect::<Vec<_>>(), ["WebSocket", "foo/1"]);
        assert_eq!(l.routes.iter().find(|r| r.path == "/b").unwrap().upgrades, None);
        for (bad, line) in [("[\"h2c\"]", 3), ("[\"ok\",\n\"H2C/1\"]", 4), ("[\"a b\"]", 3), ("[1]", 3)] {
            let e = load(&format!("[[listener]]\nlisten = \":1\"\nupgrades = {bad}\n[listener.proxy]\n")).unwrap_err();
            assert_eq!(e.line, line, "{bad}: {e}");
        }
    }

    #[test]
    fn routes_sorted_most_specific_first() {
        let c = load(
            "[[listener]]\nlisten = \":1\"\n[[listener.route]]\nto = \"http://a:1\"\n\
             [[listener.route]]\npath = \"/api/\"\nto = \"http://b:1\"\n",
        )
        .unwrap();
        assert_eq!(c.listeners[0].routes[0].path, "/api");
        assert_eq!(c.listeners[0].routes[1].path, "/");
    }
}
