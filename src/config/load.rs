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

parsed_string!(BalanceField, Balance, Balance::parse);
parsed_string!(HealthField, HealthCheck, HealthCheck::parse);

/// A route's `to`: one target, or a list of members, each a target or `{ url = "...", weight = N }`.
enum RawTo {
    One(Target),
    Many(Vec<Spanned<RawMember>>),
}

impl<'de> Deserialize<'de> for RawTo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RawTo;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a target such as \"http://127.0.0.1:8080\", or a list of them (an upstream group)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawTo, E> {
                Target::parse(v).map(RawTo::One).map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawTo, A::Error> {
                let mut members = Vec::new();
                while let Some(m) = seq.next_element::<Spanned<RawMember>>()? {
                    members.push(m);
                }
                if members.is_empty() {
                    return Err(de::Error::custom("to = []: an upstream group needs at least one member"));
                }
                Ok(RawTo::Many(members))
            }
        }
        d.deserialize_any(V)
    }
}

/// One member of a `to` list.
struct RawMember {
    to: Target,
    weight: Option<Spanned<u32>>,
}

impl<'de> Deserialize<'de> for RawMember {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RawMember;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a target, or { url = \"...\", weight = N }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawMember, E> {
                Target::parse(v).map(|to| RawMember { to, weight: None }).map_err(E::custom)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawMember, A::Error> {
                let (mut to, mut weight) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "url" => to = Some(map.next_value::<TargetField>()?.0),
                        "weight" => weight = Some(map.next_value::<Spanned<u32>>()?),
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown key {other:?} in a group member: url and weight are expected"
                            )));
                        }
                    }
                }
                let to = to.ok_or_else(|| de::Error::custom("a group member needs url = \"...\""))?;
                Ok(RawMember { to, weight })
            }
        }
        d.deserialize_any(V)
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
    mode: Option<Spanned<String>>,
    host_verify: Option<Spanned<bool>>,
    spoof_source: Option<Spanned<bool>>,
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
    connect_ports: Option<Spanned<Vec<Spanned<u16>>>>,
    #[serde(default)]
    allow_targets: Vec<CidrField>,
    users: Option<Spanned<PathBuf>>,
    parent: Option<Spanned<ParentField>>,
    ca: Option<Spanned<PathBuf>>,
    max_tunnels: Option<Spanned<usize>>,
    #[serde(default)]
    allow_domains: Vec<Spanned<String>>,
    #[serde(default)]
    deny_domains: Vec<Spanned<String>>,
    groups: Option<Spanned<PathBuf>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    max_requests_per_second: Option<Spanned<u32>>,
    max_bytes_per_second: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    users: Vec<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    #[serde(default)]
    allow_domains: Vec<Spanned<String>>,
    #[serde(default)]
    deny_domains: Vec<Spanned<String>>,
    connect_ports: Option<Vec<Spanned<u16>>>,
    max_requests_per_second: Option<Spanned<u32>>,
    max_bytes_per_second: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    to: Spanned<RawTo>,
    name: Option<Spanned<String>>,
    balance: Option<Spanned<BalanceField>>,
    health_check: Option<Spanned<HealthField>>,
    health_interval_secs: Option<Spanned<Secs>>,
    health_timeout_secs: Option<Spanned<Secs>>,
    unhealthy_after: Option<Spanned<u32>>,
    healthy_after: Option<Spanned<u32>>,
    max_fails: Option<Spanned<u32>>,
    retries: Option<Spanned<u32>>,
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
        let users = a.users.as_ref().map(|u| self.users_file(u)).transpose()?.map(|(path, _)| path);
        let admin = Admin { listen: listen.addr, users, at: Some(self.at(a.listen.span())) };
        admin.check().map_err(|why| self.err(a.listen.span(), why))?;
        Ok(admin)
    }

    fn listener(&self, l: RawListener, span: Range<usize>) -> Result<Listener, ConfigError> {
        let listen = l.listen.get_ref().0;
        let intercept = self.intercept(&l)?;
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
            None if intercept.is_some() => Some(Proxy::default()),
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
            intercept,
        })
    }

    /// `mode`, `host_verify` and `spoof_source`, and what an intercepting listener can't have (each refused at
    /// its own line): TLS termination, routes, proxy authentication (users, rules) and a parent.
    fn intercept(&self, l: &RawListener) -> Result<Option<Intercept>, ConfigError> {
        let Some(mode) = &l.mode else {
            for (key, span) in [
                ("host_verify", l.host_verify.as_ref().map(|v| v.span())),
                ("spoof_source", l.spoof_source.as_ref().map(|v| v.span())),
            ] {
                if let Some(span) = span {
                    return Err(self.err(
                        span,
                        format!("{key} only applies to a listener with mode = \"intercept\" or \"tproxy\""),
                    ));
                }
            }
            return Ok(None);
        };
        let mode_span = mode.span();
        let mode = InterceptMode::parse(mode.get_ref()).map_err(|e| self.err(mode_span.clone(), e))?;
        let intercept = Intercept {
            mode,
            host_verify: l.host_verify.as_ref().map_or(DEFAULT_HOST_VERIFY, |v| *v.get_ref()),
            spoof_source: l.spoof_source.as_ref().map_or(DEFAULT_SPOOF_SOURCE, |v| *v.get_ref()),
        };
        if let Some(v) = &l.spoof_source
            && *v.get_ref()
            && mode != InterceptMode::Tproxy
        {
            return Err(self.err(
                v.span(),
                "spoof_source needs mode = \"tproxy\": a REDIRECTed connection can't keep the client's address",
            ));
        }
        let what = format!("mode = \"{}\"", mode.as_str());
        if l.listen.get_ref().0.tls {
            return Err(self.err(
                mode_span,
                format!("{what} on an https:// listener: intercepted TLS is spliced, never terminated; listen on a plain address"),
            ));
        }
        if l.proxy_protocol.is_some() || l.reuse_port == Some(true) {
            return Err(self.err(
                mode_span,
                format!("{what} with proxy_protocol or reuse_port: an intercepted connection's original destination is read from its own socket, which a balancer in front would hide"),
            ));
        }
        if let Some(r) = l.route.first() {
            return Err(self.err(
                r.span(),
                format!("[[listener.route]] on a listener with {what}: its requests go to their original destination"),
            ));
        }
        if let Some(p) = &l.proxy {
            let p = p.get_ref();
            if let Some(u) = &p.users {
                return Err(self.err(
                    u.span(),
                    format!("users on a listener with {what}: intercepted clients are not configured for a proxy and can't authenticate"),
                ));
            }
            if let Some(r) = p.rule.first() {
                return Err(self.err(
                    r.span(),
                    format!("[[listener.proxy.rule]] on a listener with {what}: rules match authenticated users, and intercepted clients can't authenticate"),
                ));
            }
            if let Some(parent) = &p.parent {
                return Err(self.err(
                    parent.span(),
                    format!(
                        "parent on a listener with {what}: intercepted connections go to their original destination"
                    ),
                ));
            }
            // Keys of what an intercepting listener never does: CONNECT, absolute-form https://, rules.
            for (key, span) in [
                ("connect_ports", p.connect_ports.as_ref().map(|v| v.span())),
                ("max_tunnels", p.max_tunnels.as_ref().map(|v| v.span())),
                ("ca", p.ca.as_ref().map(|v| v.span())),
                ("groups", p.groups.as_ref().map(|v| v.span())),
            ] {
                if let Some(span) = span {
                    return Err(self.err(
                        span,
                        format!("{key} does not apply to a listener with {what}: it never serves CONNECT, https:// targets or rules"),
                    ));
                }
            }
        }
        Ok(Some(intercept))
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
        if let Some(ports) = &p.connect_ports {
            out.connect_ports = self.ports(ports.get_ref())?;
        }
        out.allow_targets = p.allow_targets.into_iter().map(|c| c.0).collect();
        let users = p.users.as_ref().map(|u| self.users_file(u)).transpose()?;
        out.users = users.as_ref().map(|(path, _)| path.clone());
        out.parent = p.parent.map(|p| p.into_inner().0);
        out.ca = p.ca.as_ref().map(|c| self.ca_bundle(c)).transpose()?;
        out.max_tunnels = self.positive(&p.max_tunnels, "max_tunnels", DEFAULT_MAX_TUNNELS)?;
        out.allow_domains = self.domains(&p.allow_domains, "allow_domains")?;
        out.deny_domains = self.domains(&p.deny_domains, "deny_domains")?;
        out.rates = self.rates(&p.max_requests_per_second, &p.max_bytes_per_second)?;
        let groups = p.groups.as_ref().map(|g| self.groups_file(g)).transpose()?;
        out.groups = groups.as_ref().map(|(path, _)| path.clone());
        for r in p.rule {
            let span = r.span();
            let rule = r.into_inner();
            let Some((_, users)) = &users else {
                return Err(self.err(
                    span,
                    "[[listener.proxy.rule]] needs users = \"FILE\" in [listener.proxy]: rules match authenticated users",
                ));
            };
            out.rules.push(self.rule(rule, span, users, groups.as_ref().map(|(_, g)| g))?);
        }
        Ok(out)
    }

    /// `allow_domains` / `deny_domains`: names and `*.suffix` patterns, each error at its own line.
    fn domains(&self, list: &[Spanned<String>], key: &str) -> Result<Vec<DomainPattern>, ConfigError> {
        list.iter()
            .map(|d| DomainPattern::parse(d.get_ref()).map_err(|e| self.err(d.span(), format!("{key}: {e}"))))
            .collect()
    }

    fn rates(&self, requests: &Option<Spanned<u32>>, bytes: &Option<Spanned<u64>>) -> Result<Rates, ConfigError> {
        if let Some(r) = requests
            && *r.get_ref() == 0
        {
            return Err(self.err(r.span(), "max_requests_per_second must be at least 1"));
        }
        if let Some(b) = bytes
            && *b.get_ref() < MIN_BYTES_PER_SECOND
        {
            return Err(self.err(
                b.span(),
                format!(
                    "max_bytes_per_second must be at least {MIN_BYTES_PER_SECOND}: slower, a request head could not \
                     arrive within header_read_secs"
                ),
            ));
        }
        Ok(Rates {
            requests_per_second: requests.as_ref().map(|r| *r.get_ref()),
            bytes_per_second: bytes.as_ref().map(|b| *b.get_ref()),
        })
    }

    /// One `[[listener.proxy.rule]]`: it names users of the users file, or groups of the groups file, or both.
    fn rule(
        &self,
        r: RawRule,
        span: Range<usize>,
        users: &crate::http::htpasswd::Users,
        groups: Option<&crate::http::groups::Groups>,
    ) -> Result<ProxyRule, ConfigError> {
        if r.users.is_empty() && r.groups.is_empty() {
            return Err(self.err(span, "[[listener.proxy.rule]] names nobody: give it users = [...] or groups = [...]"));
        }
        let mut rule = ProxyRule { at: Some(self.at(span)), ..ProxyRule::default() };
        for u in &r.users {
            if !users.has_user(u.get_ref()) {
                return Err(self.err(u.span(), format!("user {:?} is not in the users file", u.get_ref())));
            }
            rule.users.push(u.get_ref().clone());
        }
        for g in &r.groups {
            let Some(groups) = groups else {
                return Err(self.err(g.span(), "groups in a rule need groups = \"FILE\" in [listener.proxy]"));
            };
            if !groups.contains(g.get_ref()) {
                return Err(self.err(g.span(), format!("group {:?} is not in the groups file", g.get_ref())));
            }
            rule.groups.push(g.get_ref().clone());
        }
        rule.allow_domains = self.domains(&r.allow_domains, "allow_domains")?;
        rule.deny_domains = self.domains(&r.deny_domains, "deny_domains")?;
        rule.connect_ports = match &r.connect_ports {
            None => DEFAULT_CONNECT_PORTS.to_vec(),
            Some(ports) => self.ports(ports)?,
        };
        rule.rates = self.rates(&r.max_requests_per_second, &r.max_bytes_per_second)?;
        Ok(rule)
    }

    fn ports(&self, ports: &[Spanned<u16>]) -> Result<Vec<u16>, ConfigError> {
        ports
            .iter()
            .map(|p| match *p.get_ref() {
                0 => Err(self.err(p.span(), "connect port 0")),
                n => Ok(n),
            })
            .collect()
    }

    fn route(&self, r: RawRoute) -> Result<Route, ConfigError> {
        let to_span = r.to.span();
        let (first, mut group) = self.group(&r)?;
        let mut route = Route::new(first);
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
        if let Some(g) = &mut group {
            for m in &mut g.members {
                if let Target::FastCgi(FastCgiTarget { socket: UpstreamSocket::Unix(path), .. }) = &mut m.to {
                    *path = self.base.join(&*path);
                }
            }
        }
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
            // Every member of a group has the route's options (they are all of one kind).
            if let Some(g) = &mut group {
                for m in &mut g.members {
                    let _ = m.to.set(option.clone());
                }
            }
            route.to.set(option).map_err(|e| match e {
                OptionError::Misplaced { which } => {
                    self.err(span, format!("{key} only applies to {which}, not to {}", route.to))
                }
                OptionError::Invalid(why) => self.err(span, why),
            })?;
        }
        route.group = group;
        Ok(route)
    }

    /// A route's `to` and group keys: its first (or only) target, and the group when `to` is a list or a group
    /// key is given. Members of another kind than the first, an unknown `balance` or a check that does not fit
    /// the members are errors at their line.
    fn group(&self, r: &RawRoute) -> Result<(Target, Option<Group>), ConfigError> {
        let keys_given = r.balance.is_some()
            || r.health_check.is_some()
            || r.health_interval_secs.is_some()
            || r.health_timeout_secs.is_some()
            || r.unhealthy_after.is_some()
            || r.healthy_after.is_some()
            || r.max_fails.is_some()
            || r.retries.is_some();
        let members: Vec<(Range<usize>, Member)> = match r.to.get_ref() {
            RawTo::One(t) if !keys_given => return Ok((t.clone(), None)),
            RawTo::One(t) => vec![(r.to.span(), Member { to: t.clone(), weight: 1 })],
            RawTo::Many(list) => {
                let mut out = Vec::new();
                for m in list {
                    let weight = match &m.get_ref().weight {
                        None => 1,
                        Some(w) if *w.get_ref() == 0 || *w.get_ref() > MAX_WEIGHT => {
                            return Err(self.err(w.span(), format!("weight must be from 1 to {MAX_WEIGHT}")));
                        }
                        Some(w) => *w.get_ref(),
                    };
                    out.push((m.span(), Member { to: m.get_ref().to.clone(), weight }));
                }
                out
            }
        };
        check_members(members.iter().map(|(_, m)| &m.to)).map_err(|(i, why)| self.err(members[i].0.clone(), why))?;
        let first = members[0].1.to.clone();
        let mut g = Group::new(members.into_iter().map(|(_, m)| m).collect());
        if let Some(b) = &r.balance {
            g.balance = b.get_ref().0.clone();
        }
        if let Some(h) = &r.health_check {
            g.health_check = Some(h.get_ref().0.clone());
            g.check_fits().map_err(|why| self.err(h.span(), why))?;
        }
        if let Some(v) = &r.health_interval_secs {
            g.health_interval = v.get_ref().0;
        }
        if let Some(v) = &r.health_timeout_secs {
            g.health_timeout = v.get_ref().0;
        }
        let count = |v: &Option<Spanned<u32>>, name: &str, min: u32, default: u32| match v {
            None => Ok(default),
            Some(n) if *n.get_ref() < min || *n.get_ref() > MAX_COUNT => {
                Err(self.err(n.span(), format!("{name} must be from {min} to {MAX_COUNT}")))
            }
            Some(n) => Ok(*n.get_ref()),
        };
        g.unhealthy_after = count(&r.unhealthy_after, "unhealthy_after", 1, DEFAULT_UNHEALTHY_AFTER)?;
        g.healthy_after = count(&r.healthy_after, "healthy_after", 1, DEFAULT_HEALTHY_AFTER)?;
        g.max_fails = count(&r.max_fails, "max_fails", 0, DEFAULT_MAX_FAILS)?;
        g.retries = count(&r.retries, "retries", 0, DEFAULT_RETRIES)?;
        Ok((first, Some(g)))
    }

    /// A users file that is readable and parses, so that `check` refuses what `run` could not load.
    fn users_file(&self, p: &Spanned<PathBuf>) -> Result<(PathBuf, crate::http::htpasswd::Users), ConfigError> {
        let path = self.file(p, "users file")?;
        let users =
            crate::http::htpasswd::Users::load(&path).map_err(|e| self.err(p.span(), format!("users file {e}")))?;
        Ok((path, users))
    }

    /// A groups file (Apache's AuthGroupFile) that is readable and parses.
    fn groups_file(&self, p: &Spanned<PathBuf>) -> Result<(PathBuf, crate::http::groups::Groups), ConfigError> {
        let path = self.file(p, "groups file")?;
        let groups =
            crate::http::groups::Groups::load(&path).map_err(|e| self.err(p.span(), format!("groups file {e}")))?;
        Ok((path, groups))
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
    fn intercepting_listeners() {
        let l = "[[listener]]\nlisten = \":1\"\n";
        let c = load(&format!("{l}mode = \"intercept\"\n")).unwrap();
        let i = c.listeners[0].intercept.unwrap();
        assert_eq!((i.mode, i.host_verify, i.spoof_source), (InterceptMode::Redirect, true, false));
        assert!(c.listeners[0].proxy.is_some(), "an intercepting listener's policy defaults to none");
        assert!(c.summary().contains("intercept (original destination, host_verify)"), "{}", c.summary());
        let c = load(&format!("{l}mode = \"tproxy\"\nspoof_source = true\nhost_verify = false\n")).unwrap();
        let i = c.listeners[0].intercept.unwrap();
        assert_eq!((i.mode, i.host_verify, i.spoof_source), (InterceptMode::Tproxy, false, true));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users"), "ann:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n").unwrap();
        let load_in = |src: &str| load_str(src, "t.toml", dir.path());
        for (src, line, words) in [
            (format!("{l}mode = \"redirect\"\n"), 3, "expected \"intercept\""),
            (format!("{l}host_verify = false\n[listener.proxy]\n"), 3, "host_verify only applies"),
            (format!("{l}mode = \"intercept\"\nspoof_source = true\n"), 4, "spoof_source needs mode = \"tproxy\""),
            ("[[listener]]\nlisten = \"https://:1\"\nmode = \"intercept\"\n".into(), 3, "spliced, never terminated"),
            (format!("{l}mode = \"intercept\"\n[[listener.route]]\nto = \"http://a:1\"\n"), 4, "original destination"),
            (format!("{l}mode = \"tproxy\"\n[listener.proxy]\nusers = \"users\"\n"), 5, "can't authenticate"),
            (format!("{l}mode = \"tproxy\"\n[listener.proxy]\nparent = \"http://p:3128\"\n"), 5, "parent on"),
            (
                format!("{l}mode = \"intercept\"\n[listener.proxy]\nconnect_ports = [\n443]\n"),
                5,
                "connect_ports does not",
            ),
            (format!("{l}mode = \"intercept\"\n[listener.proxy]\nmax_tunnels = 1\n"), 5, "max_tunnels does not"),
            (format!("{l}mode = \"intercept\"\nproxy_protocol = \"v2\"\n"), 3, "a balancer in front would hide"),
        ] {
            let e = load_in(&src).unwrap_err();
            assert_eq!(e.line(), line, "{src}: {e}");
            assert!(e.message.contains(words), "{src}: {e}");
        }
    }

    #[test]
    fn policies_and_rules() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users"), "ann:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n").unwrap();
        std::fs::write(dir.path().join("groups"), "staff: ann bob\n").unwrap();
        let load_in = |src: &str| load_str(src, "t.toml", dir.path());
        let p = "[[listener]]\nlisten = \":1\"\n[listener.proxy]\n";
        let c = load_in(&format!(
            "{p}users = \"users\"\ngroups = \"groups\"\nallow_domains = [\"*.A.example.\"]\n\
             max_requests_per_second = 5\n[[listener.proxy.rule]]\ngroups = [\"staff\"]\nconnect_ports = [443, 8443]\n\
             max_bytes_per_second = 2048\n"
        ))
        .unwrap();
        let proxy = c.listeners[0].proxy.as_ref().unwrap();
        assert_eq!(proxy.allow_domains, [DomainPattern::Under("a.example".into())]);
        assert_eq!(proxy.rates, Rates { requests_per_second: Some(5), bytes_per_second: None });
        let rule = &proxy.rules[0];
        assert_eq!(
            (rule.groups.as_slice(), rule.connect_ports.as_slice()),
            (&["staff".to_string()][..], &[443, 8443][..])
        );
        assert_eq!(rule.rates.bytes_per_second, Some(2048));
        assert_eq!(rule.at.as_ref().map(|a| a.line), Some(8));
        for (src, line, words) in [
            (
                format!("{p}deny_domains = [\"ok.example\",\n\"a b\"]\n"),
                5,
                "deny_domains: \"a b\" is not a domain pattern",
            ),
            (format!("{p}[[listener.proxy.rule]]\nusers = [\"ann\"]\n"), 4, "needs users = \"FILE\""),
            (format!("{p}users = \"users\"\n[[listener.proxy.rule]]\nallow_domains = [\"a\"]\n"), 5, "names nobody"),
            (
                format!("{p}users = \"users\"\n[[listener.proxy.rule]]\nusers = [\"ann\", \"zed\"]\n"),
                6,
                "user \"zed\" is not in",
            ),
            (
                format!("{p}users = \"users\"\n[[listener.proxy.rule]]\ngroups = [\"staff\"]\n"),
                6,
                "need groups = \"FILE\"",
            ),
            (
                format!("{p}users = \"users\"\ngroups = \"groups\"\n[[listener.proxy.rule]]\ngroups = [\"ops\"]\n"),
                7,
                "group \"ops\" is not in",
            ),
            (format!("{p}max_requests_per_second = 0\n"), 4, "at least 1"),
            (format!("{p}max_bytes_per_second = 1000\n"), 4, "at least 1024"),
            (format!("{p}groups = \"missing\"\n"), 4, "groups file"),
        ] {
            let e = load_in(&src).unwrap_err();
            assert_eq!(e.line(), line, "{src}: {e}");
            assert!(e.message.contains(words), "{src}: {e}");
        }
    }

    #[test]
    fn upstream_groups() {
        let route = |body: &str| load(&format!("[[listener]]\nlisten = \":1\"\n[[listener.route]]\n{body}"));
        let c = route(
            "to = [\"http://a:1\", { url = \"https://b:2\", weight = 3 }]\nbalance = \"least_conn\"\n\
             health_check = \"/healthz\"\nhealth_interval_secs = 1\nunhealthy_after = 3\nretries = 0\nmax_fails = 0\n",
        )
        .unwrap();
        let r = &c.listeners[0].routes[0];
        let g = r.group.as_ref().unwrap();
        assert_eq!(
            g.members.iter().map(|m| (m.to.to_string(), m.weight)).collect::<Vec<_>>(),
            [("http://a:1".to_string(), 1), ("https://b:2".to_string(), 3)]
        );
        assert_eq!(r.to.to_string(), "http://a:1");
        assert_eq!(g.balance, Balance::LeastConn);
        assert_eq!(g.health_check, Some(HealthCheck::Get("/healthz".into())));
        assert_eq!((g.health_interval, g.health_timeout), (Duration::from_secs(1), Duration::from_secs(2)));
        assert_eq!((g.unhealthy_after, g.healthy_after, g.max_fails, g.retries), (3, 2, 0, 0));
        assert_eq!(r.name(), "http://a:1,https://b:2");
        // A single target without group keys stays a plain route; with one it is a group of one.
        assert!(route("to = \"http://a:1\"\n").unwrap().listeners[0].routes[0].group.is_none());
        assert!(route("to = \"http://a:1\"\nretries = 2\n").unwrap().listeners[0].routes[0].group.is_some());
        // Options reach every member.
        let c = route("to = [\"fastcgi://a:1\", \"fastcgi://b:1\"]\nmax_connections = 7\n").unwrap();
        for m in &c.listeners[0].routes[0].group.as_ref().unwrap().members {
            assert!(matches!(&m.to, Target::FastCgi(t) if t.max_connections == Some(7)), "{:?}", m.to);
        }
        for (body, line, why) in [
            ("to = [\n\"http://a:1\",\n\"fastcgi://b:1\"]\n", 6, "not of the group's kind"),
            ("to = [\"http://a:1\", \"scgi://b:1\"]\n", 4, "not of the group's kind"),
            ("to = [\"ftp://a/\", \"ftp://b/\"]\n", 4, "can't be a member"),
            ("to = [\"http://a:1\"]\nbalance = \"random\"\n", 5, "unknown balance \"random\""),
            ("to = [\"http://a:1\", { url = \"http://b:1\", weight = 0 }]\n", 4, "weight"),
            ("to = [\"http://a:1\", { url = \"http://b:1\", wait = 1 }]\n", 4, "unknown key"),
            ("to = []\n", 4, "at least one member"),
            ("to = [\"fastcgi://a:1\"]\nhealth_check = \"/x\"\n", 5, "HTTP check"),
            ("to = [\"http://a:1\"]\nhealth_check = \"fcgi\"\n", 5, "FastCGI"),
            ("to = [\"http://a:1\"]\nhealth_check = \"healthz\"\n", 5, "a path"),
            ("to = [\"http://a:1\"]\nunhealthy_after = 0\n", 5, "unhealthy_after"),
        ] {
            let e = route(body).unwrap_err();
            assert_eq!(e.line(), line, "{body}: {e}");
            assert!(e.message.contains(why), "{body}: {e}");
        }
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
