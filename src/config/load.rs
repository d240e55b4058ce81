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

/// Loads and validates a config file, checking that every file it names can be read.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let at_file = |message: String| ConfigError::new(format!("{file}: {message}"));
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
    let ctx = Ctx { src, file: file.into(), base };
    let raw: RawConfig = toml::from_str(src).map_err(|e| {
        let line = e.span().map(|s| line_of(src, s.start)).unwrap_or(1);
        ConfigError::at(Some(&ctx.place(line)), e.message().trim())
    })?;
    ctx.build(raw)
}

fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Seconds as an integer or a float, finite, and positive (or, with `ZERO`, zero or more).
#[derive(Debug, Clone, Copy)]
struct Secs<const ZERO: bool = false>(Duration);

impl<'de, const ZERO: bool> Deserialize<'de> for Secs<ZERO> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const ZERO: bool>;
        impl<const ZERO: bool> de::Visitor<'_> for V<ZERO> {
            type Value = Secs<ZERO>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(if ZERO { "a number of seconds, 0 or more" } else { "a positive number of seconds" })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs<ZERO>, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secs<ZERO>, E> {
                self.visit_f64(v as f64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Secs<ZERO>, E> {
                if v.is_finite() && (v > 0.0 || (ZERO && v == 0.0)) && v < 1e9 {
                    Ok(Secs(Duration::from_secs_f64(v)))
                } else if ZERO {
                    Err(E::custom(format!("{v} is not a number of seconds, 0 or more")))
                } else {
                    Err(E::custom(format!("{v} is not a positive number of seconds")))
                }
            }
        }
        d.deserialize_any(V::<ZERO>)
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
parsed_string!(FormatField, AccessLogFormat, AccessLogFormat::parse);
/// `"v1"` or `"v2"` (`proxy_protocol`, `send_proxy_protocol`).
#[derive(Debug, Clone, Copy)]
struct VersionField(ProxyVersion);

impl<'de> Deserialize<'de> for VersionField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = VersionField;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"v1\" or \"v2\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<VersionField, E> {
                ProxyVersion::parse(v).map(VersionField).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

parsed_string!(UpstreamHttpField, UpstreamHttp, UpstreamHttp::parse);

parsed_string!(CidrField, ipnet::IpNet, |s| {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not a CIDR (for example 10.0.0.0/8) or an IP address"))
});

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    drain_secs: Option<Secs>,
    drain_grace_secs: Option<Secs<true>>,
    access_log: Option<String>,
    access_log_format: Option<FormatField>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    listener: Vec<Spanned<RawListener>>,
    admin: Option<Spanned<RawAdmin>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Spanned<String>,
    users: Option<Spanned<PathBuf>>,
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
    proxy_protocol: Option<VersionField>,
    proxy_protocol_from: Option<Spanned<Vec<CidrField>>>,
    reuse_port: Option<bool>,
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
    name: Option<Spanned<String>>,
    ca: Option<Spanned<PathBuf>>,
    root: Option<Spanned<PathBuf>>,
    index: Option<Spanned<String>>,
    uploads: Option<Spanned<bool>>,
    script_timeout_secs: Option<Spanned<Secs>>,
    max_scripts: Option<Spanned<usize>>,
    split_path: Option<Spanned<String>>,
    pass_authorization: Option<Spanned<bool>>,
    upgrades: Option<Spanned<Vec<Spanned<String>>>>,
    browse: Option<Spanned<bool>>,
    dotfiles: Option<Spanned<bool>>,
    symlinks: Option<Spanned<String>>,
    #[serde(rename = "static")]
    static_files: Option<Spanned<bool>>,
    front_controller: Option<Spanned<String>>,
    max_connections: Option<Spanned<usize>>,
    script_total_secs: Option<Spanned<Secs>>,
    send_proxy_protocol: Option<Spanned<VersionField>>,
    upstream_http: Option<Spanned<UpstreamHttpField>>,
    upstream_max_streams: Option<Spanned<usize>>,
}

struct Ctx<'a> {
    src: &'a str,
    file: std::sync::Arc<str>,
    base: &'a Path,
}

impl Ctx<'_> {
    fn place(&self, line: usize) -> At {
        At { file: self.file.clone(), line }
    }

    fn at(&self, span: Range<usize>) -> At {
        self.place(line_of(self.src, span.start))
    }

    fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::at(Some(&self.at(span)), message)
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
        crate::tls::load_ca(&path).map_err(|e| self.err(p.span(), e))?;
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
            return Err(ConfigError::at(Some(&self.place(1)), "no [[listener]]: a config needs at least one"));
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
        let admin = raw.admin.map(|a| self.admin(a.into_inner())).transpose()?;
        Ok(Config {
            drain: raw.drain_secs.map(|s| s.0).unwrap_or(Duration::from_secs_f64(DEFAULT_DRAIN_SECS)),
            drain_grace: raw.drain_grace_secs.map(|s| s.0).unwrap_or(Duration::ZERO),
            access_log,
            access_log_format: raw.access_log_format.map(|f| f.0).unwrap_or_default(),
            limits,
            timeouts,
            listeners,
            admin,
        })
    }

    /// `[admin]`: `listen` is `IP:PORT` (or `:PORT`, every address, which then needs `users`).
    fn admin(&self, a: RawAdmin) -> Result<Admin, ConfigError> {
        let listen = parse_listen(a.listen.get_ref()).ok().filter(|l| !l.tls).ok_or_else(|| {
            self.err(a.listen.span(), format!("admin listen {:?}: IP:PORT expected", a.listen.get_ref()))
        })?;
        let users = a.users.as_ref().map(|u| self.users_file(u)).transpose()?;
        let admin = Admin { listen: listen.addr, users, at: Some(self.at(a.listen.span())) };
        admin.check().map_err(|why| self.err(a.listen.span(), why))?;
        Ok(admin)
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
            if let Err(e) = crate::tls::load_pair(&pair.cert, &pair.key) {
                let span = match e.which {
                    crate::tls::Which::Cert => c.get_ref().cert.span(),
                    crate::tls::Which::Key => c.get_ref().key.span(),
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
        routes.sort_by(|a, b| {
            b.path.as_str().len().cmp(&a.path.as_str().len()).then(b.host.is_some().cmp(&a.host.is_some()))
        });
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
        let proxy_protocol = match (l.proxy_protocol, l.proxy_protocol_from) {
            (Some(VersionField(version)), None) => Some(ProxyProtocol { version, from: Vec::new() }),
            (Some(VersionField(version)), Some(from)) => {
                if from.get_ref().is_empty() {
                    return Err(self.err(
                        from.span(),
                        "proxy_protocol_from is empty: list the balancers' addresses (CIDRs), or leave the key out \
                         to take headers from any address",
                    ));
                }
                Some(ProxyProtocol { version, from: from.into_inner().into_iter().map(|c| c.0).collect() })
            }
            (None, Some(from)) => {
                return Err(self.err(from.span(), "proxy_protocol_from needs proxy_protocol = \"v1\" or \"v2\""));
            }
            (None, None) => None,
        };
        let at = Some(self.at(l.listen.span()));
        Ok(Listener {
            listen,
            certs,
            proxy,
            routes,
            via_name: l.via_name.map(|v| v.into_inner()),
            at,
            upgrades,
            proxy_protocol,
            reuse_port: l.reuse_port.unwrap_or(false),
        })
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
        out.users = p.users.as_ref().map(|u| self.users_file(u)).transpose()?;
        out.parent = p.parent.map(|p| p.0);
        out.ca = p.ca.as_ref().map(|c| self.ca_bundle(c)).transpose()?;
        out.max_tunnels = self.positive(&p.max_tunnels, "max_tunnels", DEFAULT_MAX_TUNNELS)?;
        Ok(out)
    }

    fn route(&self, r: RawRoute) -> Result<Route, ConfigError> {
        let to_span = r.to.span();
        let mut route = Route::new(r.to.into_inner().0);
        route.at = Some(self.at(to_span.clone()));
        if let Some(h) = &r.host {
            let given = h.get_ref();
            // Requests are matched by host_key too: lowercase, one trailing dot (the root label) removed.
            let host = host_key(given);
            if host.is_empty() || host.ends_with('.') || host.contains(['/', ' ', ':', '[', ']', '@']) {
                return Err(self.err(h.span(), format!("host {given:?}: a bare host name without port is expected")));
            }
            route.host = Some(host);
        }
        if let Some(n) = &r.name {
            check_route_name(n.get_ref()).map_err(|why| self.err(n.span(), why))?;
            route.name = Some(n.get_ref().clone());
        }
        if let Some(p) = &r.path {
            route.path = Prefix::parse(p.get_ref()).map_err(|e| self.err(p.span(), e))?;
        }
        // Paths in the file are relative to the file's directory, a unix socket's too.
        match &mut route.to {
            Target::Cgi(t) => {
                t.dir = self.base.join(&t.dir);
                if !t.dir.is_dir() {
                    return Err(self.err(to_span, format!("CGI directory {} does not exist", t.dir.display())));
                }
            }
            Target::File(t) => {
                t.dir = self.base.join(&t.dir);
                if !t.dir.is_dir() {
                    return Err(self.err(to_span, format!("file directory {} does not exist", t.dir.display())));
                }
            }
            Target::FastCgi(FastCgiTarget { socket: UpstreamSocket::Unix(path), .. }) => *path = self.base.join(&*path),
            _ => {}
        }
        // Each key goes to the target it belongs to; the first one in the file that does not fit is reported.
        let mut options: Vec<(Range<usize>, TargetOption)> = Vec::new();
        if let Some(c) = &r.ca {
            options.push((c.span(), TargetOption::Ca(self.ca_bundle(c)?)));
        }
        if let Some(c) = &r.root {
            options.push((c.span(), TargetOption::Root(self.directory(c, "root directory")?)));
        }
        let mut add = |span: Range<usize>, o: TargetOption| options.push((span, o));
        if let Some(v) = &r.index {
            add(v.span(), TargetOption::Index(v.get_ref().clone()));
        }
        if let Some(v) = &r.uploads {
            add(v.span(), TargetOption::Uploads(*v.get_ref()));
        }
        if let Some(v) = &r.script_timeout_secs {
            add(v.span(), TargetOption::ScriptTimeout(v.get_ref().0));
        }
        if let Some(v) = &r.max_scripts {
            add(v.span(), TargetOption::MaxScripts(*v.get_ref()));
        }
        if let Some(v) = &r.split_path {
            add(v.span(), TargetOption::SplitPath(v.get_ref().clone()));
        }
        if let Some(v) = &r.pass_authorization {
            add(v.span(), TargetOption::PassAuthorization(*v.get_ref()));
        }
        if let Some(v) = &r.upgrades {
            let list = self.upgrades(v.get_ref())?;
            add(v.span(), TargetOption::Upgrades(list));
        }
        if let Some(v) = &r.browse {
            add(v.span(), TargetOption::Browse(*v.get_ref()));
        }
        if let Some(v) = &r.dotfiles {
            add(v.span(), TargetOption::Dotfiles(*v.get_ref()));
        }
        if let Some(v) = &r.symlinks {
            add(v.span(), TargetOption::Symlinks(Symlinks::parse(v.get_ref()).map_err(|e| self.err(v.span(), e))?));
        }
        if let Some(v) = &r.static_files {
            add(v.span(), TargetOption::Static(*v.get_ref()));
        }
        if let Some(v) = &r.front_controller {
            add(v.span(), TargetOption::FrontController(v.get_ref().clone()));
        }
        if let Some(v) = &r.max_connections {
            add(v.span(), TargetOption::MaxConnections(*v.get_ref()));
        }
        if let Some(v) = &r.script_total_secs {
            add(v.span(), TargetOption::ScriptTotal(v.get_ref().0));
        }
        if let Some(v) = &r.send_proxy_protocol {
            add(v.span(), TargetOption::SendProxyProtocol(v.get_ref().0));
        }
        if let Some(v) = &r.upstream_http {
            add(v.span(), TargetOption::UpstreamHttp(v.get_ref().0));
        }
        if let Some(v) = &r.upstream_max_streams {
            add(v.span(), TargetOption::UpstreamMaxStreams(*v.get_ref()));
        }
        options.sort_by_key(|(span, _)| span.start);
        for (span, option) in options {
            let key = option.key();
            route.to.set(option).map_err(|e| match e {
                OptionError::Misplaced { which } => {
                    self.err(span, format!("{key} only applies to {which}, not to {}", route.to))
                }
                OptionError::Invalid(why) => self.err(span, why),
            })?;
        }
        Ok(route)
    }

    /// A users file that is readable and parses, so that `check` refuses what `run` could not load.
    fn users_file(&self, p: &Spanned<PathBuf>) -> Result<PathBuf, ConfigError> {
        let path = self.file(p, "users file")?;
        crate::http::htpasswd::Users::load(&path).map_err(|e| self.err(p.span(), format!("users file {e}")))?;
        Ok(path)
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

    impl ConfigError {
        fn line(&self) -> usize {
            self.at.as_ref().map_or(0, |a| a.line)
        }
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
            assert_eq!(e.line(), 5, "{bad}: {e}");
            assert!(e.message.contains("a bare host name"), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        let e = load("drain_secs = 1\n\n[[listener]]\nlisten = \"nope\"\n[listener.proxy]\n").unwrap_err();
        assert_eq!(e.line(), 4, "{e}");
        assert!(e.to_string().starts_with("t.toml:4: "), "{e}");
        let e =
            load("[[listener]]\nlisten = \":1\"\n[listener.proxy]\nallow_targets = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert_eq!(e.line(), 4, "{e}");
        let e = load("[timeouts]\nidle_secs = -1\n").unwrap_err();
        assert_eq!(e.line(), 2, "{e}");
        let e = load("bogus = 1\n").unwrap_err();
        assert_eq!(e.line(), 1, "{e}");
        assert!(e.message.contains("bogus"), "{e}");
        let e = load("[[listener]]\nlisten = \":1\"\n").unwrap_err();
        assert!(e.message.contains("serves nothing"), "{e}");
        let e = load("[[listener]]\nlisten = \"https://:1\"\n[listener.proxy]\n").unwrap_err();
        assert_eq!(e.line(), 2, "{e}");
    }

    #[test]
    fn what_would_not_run_does_not_check() {
        let e = load(
            "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[listener.proxy]\n\
             [[listener]]\nlisten = \"http://127.0.0.1:8080\"\n[listener.proxy]\n",
        )
        .unwrap_err();
        assert_eq!(e.line(), 5, "{e}");
        assert!(e.message.contains("already"), "{e}");
        assert!(
            load("[[listener]]\nlisten = \":0\"\n[listener.proxy]\n[[listener]]\nlisten = \":0\"\n[listener.proxy]\n")
                .is_ok()
        );
        for bad in ["a b", "x,y", "", "caf\u{e9}"] {
            let e =
                load(&format!("[[listener]]\nlisten = \":0\"\nvia_name = \"{bad}\"\n[listener.proxy]\n")).unwrap_err();
            assert_eq!(e.line(), 3, "{bad:?}: {e}");
        }
        let e =
            load("[limits]\nmax_headers = 100000000\n[[listener]]\nlisten = \":0\"\n[listener.proxy]\n").unwrap_err();
        assert_eq!(e.line(), 2, "{e}");
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
        let upgrades = |path: &str| match &l.routes.iter().find(|r| r.path.as_str() == path).unwrap().to {
            Target::Http(t) => t.upgrades.clone(),
            _ => None,
        };
        let own = upgrades("/").unwrap();
        assert_eq!(own.protocols().iter().map(|p| p.to_string()).collect::<Vec<_>>(), ["WebSocket", "foo/1"]);
        assert_eq!(upgrades("/b"), None);
        for (bad, line) in [("[\"h2c\"]", 3), ("[\"ok\",\n\"H2C/1\"]", 4), ("[\"a b\"]", 3), ("[1]", 3)] {
            let e = load(&format!("[[listener]]\nlisten = \":1\"\nupgrades = {bad}\n[listener.proxy]\n")).unwrap_err();
            assert_eq!(e.line(), line, "{bad}: {e}");
        }
    }

    #[test]
    fn access_log_formats_and_route_names() {
        let proxy = "[[listener]]\nlisten = \":1\"\n[listener.proxy]\n";
        assert_eq!(load(proxy).unwrap().access_log_format, AccessLogFormat::Hopgate);
        for (text, format) in [("common", AccessLogFormat::Common), ("json", AccessLogFormat::Json)] {
            let c = load(&format!("access_log_format = \"{text}\"\n{proxy}")).unwrap();
            assert_eq!(c.access_log_format, format);
        }
        let e = load(&format!("drain_secs = 1\naccess_log_format = \"Common\"\n{proxy}")).unwrap_err();
        assert_eq!(e.line(), 2, "{e}");
        assert!(e.message.contains("\"Common\"") && e.message.contains("hopgate, common, combined or json"), "{e}");

        let c = load(
            "[[listener]]\nlisten = \":1\"\n[[listener.route]]\nto = \"ftp://u:p@a:21/d\"\n\
             [[listener.route]]\npath = \"/b\"\nname = \"api v2\"\nto = \"http://b:1\"\n",
        )
        .unwrap();
        let routes = &c.listeners[0].routes;
        assert_eq!((routes[0].name.as_deref(), routes[0].name()), (Some("api v2"), "api v2".to_string()));
        assert_eq!((routes[1].name.as_deref(), routes[1].name()), (None, "ftp://u@a:21/d".to_string()), "no password");
        assert!(c.summary().contains("/b -> http://b:1 (api v2)"), "{}", c.summary());
        for (bad, why) in
            [("\"\"", "empty"), ("\"a\\tb\"", "control"), (&format!("\"{}\"", "x".repeat(129)), "at most 128")]
        {
            let e = load(&format!(
                "[[listener]]\nlisten = \":1\"\n[[listener.route]]\nto = \"http://b:1\"\nname = {bad}\n"
            ))
            .unwrap_err();
            assert_eq!(e.line(), 5, "{bad}: {e}");
            assert!(e.message.starts_with("route name") && e.message.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn scale_out_keys() {
        let c = load(
            "[[listener]]\nlisten = \":1\"\nproxy_protocol = \"v2\"\nproxy_protocol_from = [\"10.0.0.0/8\", \"192.0.2.7\"]\n\
             reuse_port = true\n[[listener.route]]\nto = \"https://a:1\"\nsend_proxy_protocol = \"v1\"\n",
        )
        .unwrap();
        let l = &c.listeners[0];
        let pp = l.proxy_protocol.as_ref().unwrap();
        assert_eq!(pp.version, ProxyVersion::V2);
        assert_eq!(pp.from.iter().map(|n| n.to_string()).collect::<Vec<_>>(), ["10.0.0.0/8", "192.0.2.7/32"]);
        assert!(pp.trusts("10.1.2.3".parse().unwrap()) && pp.trusts("::ffff:192.0.2.7".parse().unwrap()));
        assert!(!pp.trusts("192.0.2.8".parse().unwrap()));
        assert!(l.reuse_port);
        assert!(matches!(&l.routes[0].to, Target::Http(t) if t.send_proxy_protocol == Some(ProxyVersion::V1)));
        assert!(c.summary().contains("(PROXY v2 from 10.0.0.0/8 192.0.2.7/32)"), "{}", c.summary());
        let c = load("[[listener]]\nlisten = \":1\"\n[listener.proxy]\n").unwrap();
        assert_eq!((c.listeners[0].proxy_protocol.as_ref(), c.listeners[0].reuse_port), (None, false));
        let e = load(
            "[[listener]]\nlisten = \":1\"\nproxy_protocol = \"v1\"\nproxy_protocol_from = []\n[listener.proxy]\n",
        )
        .unwrap_err();
        assert_eq!(e.line(), 4, "{e}");
    }

    #[test]
    fn routes_sorted_most_specific_first() {
        let c = load(
            "[[listener]]\nlisten = \":1\"\n[[listener.route]]\nto = \"http://a:1\"\n\
             [[listener.route]]\npath = \"/api/\"\nto = \"http://b:1\"\n",
        )
        .unwrap();
        assert_eq!(c.listeners[0].routes[0].path.as_str(), "/api");
        assert_eq!(c.listeners[0].routes[1].path.as_str(), "/");
    }
}
