//! What a gateway route points at (`--to`), and host:port authorities.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

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

/// Where a gateway route sends requests, with the options that belong to that kind of target.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// `http://HOST:PORT[/base]` (relay) or `https://...` (HTTP/HTTPS: verified TLS to the origin).
    Http(HttpTarget),
    /// `ftp://[USER[:PASS]@]HOST[:PORT][/dir]`.
    Ftp(FtpTarget),
    /// `cgi:DIR`.
    Cgi(CgiTarget),
    /// `fastcgi://HOST:PORT` or `fastcgi+unix:PATH`.
    FastCgi(FastCgiTarget),
    /// `scgi://HOST:PORT`.
    Scgi(ScgiTarget),
    /// `file:DIR`: the static-file room.
    File(FileTarget),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub tls: bool,
    pub authority: Authority,
    /// Path prefix on the upstream, without a trailing slash ("" for none).
    pub base: String,
    /// `https://` only: an extra CA bundle trusted besides the system roots.
    pub ca: Option<PathBuf>,
    /// The protocols requests may upgrade to; None: the listener's list.
    pub upgrades: Option<super::Upgrades>,
    /// Every upstream connection starts with a PROXY protocol header naming the client (`send_proxy_protocol`);
    /// such a connection then carries the requests of that one client connection only.
    pub send_proxy_protocol: Option<super::ProxyVersion>,
    /// The HTTP version spoken to the upstream (`upstream_http`).
    pub upstream_http: UpstreamHttp,
    /// Requests at once on one HTTP/2 upstream connection before another opens (`upstream_max_streams`); None:
    /// [`super::DEFAULT_UPSTREAM_MAX_STREAMS`].
    pub upstream_max_streams: Option<usize>,
}

/// The HTTP version a relay route speaks to its upstream (`upstream_http`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpstreamHttp {
    /// `"1.1"` (the default): HTTP/1.1, offered alone by ALPN on `https://`.
    #[default]
    Http1,
    /// `"2"`: HTTP/2 only, by ALPN on `https://` (the upstream must choose `h2`), with prior knowledge (h2c) on
    /// `http://`.
    Http2,
    /// `"auto"`: `https://` offers `h2` and `http/1.1` by ALPN and speaks what the upstream chose; `http://` is
    /// HTTP/1.1, since h2c can't be negotiated without an upgrade round trip.
    Auto,
}

impl UpstreamHttp {
    pub fn parse(s: &str) -> Result<UpstreamHttp, String> {
        match s {
            "1.1" => Ok(UpstreamHttp::Http1),
            "2" => Ok(UpstreamHttp::Http2),
            "auto" => Ok(UpstreamHttp::Auto),
            other => Err(format!("upstream_http {other:?}: \"1.1\", \"2\" or \"auto\"")),
        }
    }

    /// What it means on an `https://` (`tls`) or `http://` route: `"auto"` on `http://` is HTTP/1.1.
    pub fn effective(self, tls: bool) -> UpstreamHttp {
        match self {
            UpstreamHttp::Auto if !tls => UpstreamHttp::Http1,
            other => other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FtpTarget {
    pub authority: Authority,
    pub user: Option<String>,
    pub pass: Option<String>,
    /// The directory requests map under, percent-decoded ("" for the log-in directory).
    pub dir: String,
    /// Whether PUT becomes STOR (otherwise 405); default true.
    pub uploads: bool,
}

/// What the three resource gateways share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppOptions {
    /// Seconds the application may stay silent before the request is answered 504 (a CGI script's process
    /// group is killed); None: the room's default.
    pub script_timeout: Option<Duration>,
    /// Pass the Authorization header on as HTTP_AUTHORIZATION.
    pub pass_authorization: bool,
}

/// Whether a symlink under a served directory may lead out of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Symlinks {
    /// Followed wherever they point, as nginx and Apache (`FollowSymLinks`) do: the directory is the operator's.
    #[default]
    Follow,
    /// Anything that resolves outside the directory is 404.
    Inside,
}

impl Symlinks {
    pub fn parse(s: &str) -> Result<Symlinks, String> {
        match s {
            "follow" => Ok(Symlinks::Follow),
            "inside" => Ok(Symlinks::Inside),
            other => Err(format!("symlinks {other:?}: \"follow\" or \"inside\"")),
        }
    }
}

/// How files are served from a directory: the `file:` room, and the static half of a `fastcgi` route with a root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileOptions {
    /// Dotfiles (a path segment starting with `.`) are served and listed; `/.well-known/` always is.
    pub dotfiles: bool,
    pub symlinks: Symlinks,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTarget {
    pub dir: PathBuf,
    /// The file served for a directory request; None: the room's default (`index.html`).
    pub index: Option<String>,
    /// A directory without an index is listed (HTML, or JSON for `Accept: application/json`) instead of 404.
    pub browse: bool,
    pub files: FileOptions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiTarget {
    pub dir: PathBuf,
    /// The script run for a path ending in `/`.
    pub index: Option<String>,
    /// Scripts running at once; the rest queue. None: the room's default.
    pub max_scripts: Option<usize>,
    /// Seconds a script may run in all, however steadily it writes; None: the room's default.
    pub script_total: Option<Duration>,
    pub app: AppOptions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastCgiTarget {
    pub socket: UpstreamSocket,
    /// The directory SCRIPT_FILENAME is resolved under.
    pub root: Option<PathBuf>,
    /// The file served for a directory request.
    pub index: Option<String>,
    /// PATH_INFO starts after the first path segment ending in this suffix.
    pub split_path: Option<String>,
    /// With a root: other existing files under it are served as static files (default true).
    pub static_files: bool,
    /// With a root: the script (relative to the root) run for a path that names nothing; None: 404.
    pub front_controller: Option<String>,
    /// Connections to the application at once; the rest wait. None: the room's default.
    pub max_connections: Option<usize>,
    /// The static half's path rules.
    pub files: FileOptions,
    pub app: AppOptions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScgiTarget {
    pub authority: Authority,
    pub app: AppOptions,
}

/// A per-target option, from a config key or a command-line flag: [`Target::set`] is the one place that
/// decides whether it fits the target and whether its value is valid.
#[derive(Debug, Clone)]
pub enum TargetOption {
    Ca(PathBuf),
    Root(PathBuf),
    Index(String),
    Uploads(bool),
    ScriptTimeout(Duration),
    MaxScripts(usize),
    SplitPath(String),
    PassAuthorization(bool),
    Upgrades(super::Upgrades),
    Browse(bool),
    Dotfiles(bool),
    Symlinks(Symlinks),
    Static(bool),
    FrontController(String),
    MaxConnections(usize),
    ScriptTotal(Duration),
    SendProxyProtocol(super::ProxyVersion),
    UpstreamHttp(UpstreamHttp),
    UpstreamMaxStreams(usize),
}

/// Why an option can't be set on a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionError {
    /// The option belongs to other kinds of target (named).
    Misplaced { which: &'static str },
    /// The value itself is unusable.
    Invalid(String),
}

impl TargetOption {
    /// The config key's name (the command-line flag is `--` and the same with `-`).
    pub fn key(&self) -> &'static str {
        match self {
            TargetOption::Ca(_) => "ca",
            TargetOption::Root(_) => "root",
            TargetOption::Index(_) => "index",
            TargetOption::Uploads(_) => "uploads",
            TargetOption::ScriptTimeout(_) => "script_timeout_secs",
            TargetOption::MaxScripts(_) => "max_scripts",
            TargetOption::SplitPath(_) => "split_path",
            TargetOption::PassAuthorization(_) => "pass_authorization",
            TargetOption::Upgrades(_) => "upgrades",
            TargetOption::Browse(_) => "browse",
            TargetOption::Dotfiles(_) => "dotfiles",
            TargetOption::Symlinks(_) => "symlinks",
            TargetOption::Static(_) => "static",
            TargetOption::FrontController(_) => "front_controller",
            TargetOption::MaxConnections(_) => "max_connections",
            TargetOption::ScriptTotal(_) => "script_total_secs",
            TargetOption::SendProxyProtocol(_) => "send_proxy_protocol",
            TargetOption::UpstreamHttp(_) => "upstream_http",
            TargetOption::UpstreamMaxStreams(_) => "upstream_max_streams",
        }
    }
}

impl Target {
    /// Sets one option on the target it belongs to, checking its value.
    pub fn set(&mut self, option: TargetOption) -> Result<(), OptionError> {
        use TargetOption as O;
        let misplaced = |which| Err(OptionError::Misplaced { which });
        match (self, option) {
            (Target::Http(t), O::Ca(ca)) if t.tls => t.ca = Some(ca),
            (_, O::Ca(_)) => return misplaced("https:// routes"),
            (Target::Http(t), O::Upgrades(list)) => t.upgrades = Some(list),
            (_, O::Upgrades(_)) => return misplaced("http:// and https:// routes"),
            (Target::Http(t), O::SendProxyProtocol(v)) => t.send_proxy_protocol = Some(v),
            (_, O::SendProxyProtocol(_)) => return misplaced("http:// and https:// routes"),
            (Target::Http(t), O::UpstreamHttp(v)) => t.upstream_http = v,
            (_, O::UpstreamHttp(_)) => return misplaced("http:// and https:// routes"),
            (Target::Http(_), O::UpstreamMaxStreams(0)) => {
                return Err(OptionError::Invalid("upstream_max_streams must be at least 1".into()));
            }
            (Target::Http(t), O::UpstreamMaxStreams(n)) => t.upstream_max_streams = Some(n),
            (_, O::UpstreamMaxStreams(_)) => return misplaced("http:// and https:// routes"),
            (Target::Ftp(t), O::Uploads(on)) => t.uploads = on,
            (_, O::Uploads(_)) => return misplaced("ftp:// routes"),
            (Target::FastCgi(t), O::Root(root)) => t.root = Some(root),
            (_, O::Root(_)) => return misplaced("fastcgi:// and fastcgi+unix: routes"),
            (Target::Cgi(_) | Target::FastCgi(_) | Target::File(_), O::Index(index))
                if index.is_empty() || index == "." || index == ".." || index.contains(['/', '%', '\0']) =>
            {
                return Err(OptionError::Invalid(format!("index {index:?}: a plain file name is expected")));
            }
            (Target::Cgi(t), O::Index(index)) => t.index = Some(index),
            (Target::FastCgi(t), O::Index(index)) => t.index = Some(index),
            (Target::File(t), O::Index(index)) => t.index = Some(index),
            (_, O::Index(_)) => return misplaced("cgi:, fastcgi and file: routes"),
            (Target::File(t), O::Browse(on)) => t.browse = on,
            (_, O::Browse(_)) => return misplaced("file: routes"),
            (Target::File(t), O::Dotfiles(on)) => t.files.dotfiles = on,
            (Target::FastCgi(t), O::Dotfiles(on)) => t.files.dotfiles = on,
            (_, O::Dotfiles(_)) => return misplaced("file: and fastcgi routes"),
            (Target::File(t), O::Symlinks(s)) => t.files.symlinks = s,
            (Target::FastCgi(t), O::Symlinks(s)) => t.files.symlinks = s,
            (_, O::Symlinks(_)) => return misplaced("file: and fastcgi routes"),
            (Target::FastCgi(t), O::Static(on)) => t.static_files = on,
            (_, O::Static(_)) => return misplaced("fastcgi:// and fastcgi+unix: routes"),
            (Target::FastCgi(_), O::FrontController(fc))
                if fc.is_empty()
                    || fc.contains(['%', '\0', '\\'])
                    || fc.trim_start_matches('/').split('/').any(|s| s.is_empty() || s == "." || s == "..") =>
            {
                return Err(OptionError::Invalid(format!(
                    "front_controller {fc:?}: a script path under the root is expected, such as \"index.php\""
                )));
            }
            (Target::FastCgi(t), O::FrontController(fc)) => {
                t.front_controller = Some(fc.trim_start_matches('/').to_owned())
            }
            (_, O::FrontController(_)) => return misplaced("fastcgi:// and fastcgi+unix: routes"),
            (Target::FastCgi(_), O::MaxConnections(0)) => {
                return Err(OptionError::Invalid("max_connections must be at least 1".into()));
            }
            (Target::FastCgi(t), O::MaxConnections(n)) => t.max_connections = Some(n),
            (_, O::MaxConnections(_)) => return misplaced("fastcgi:// and fastcgi+unix: routes"),
            (Target::Cgi(t), O::ScriptTotal(d)) => t.script_total = Some(d),
            (_, O::ScriptTotal(_)) => return misplaced("cgi: routes"),
            (Target::FastCgi(_), O::SplitPath(sp)) if sp.is_empty() || sp.contains(['/', '\0']) => {
                return Err(OptionError::Invalid(format!("split_path {sp:?}: a file name suffix such as \".php\"")));
            }
            (Target::FastCgi(t), O::SplitPath(sp)) => t.split_path = Some(sp),
            (_, O::SplitPath(_)) => return misplaced("fastcgi:// and fastcgi+unix: routes"),
            (Target::Cgi(_), O::MaxScripts(0)) => {
                return Err(OptionError::Invalid("max_scripts must be at least 1".into()));
            }
            (Target::Cgi(t), O::MaxScripts(n)) => t.max_scripts = Some(n),
            (_, O::MaxScripts(_)) => return misplaced("cgi: routes"),
            (target, O::ScriptTimeout(d)) => match target.app_mut() {
                Some(app) => app.script_timeout = Some(d),
                None => return misplaced("cgi:, fastcgi and scgi routes"),
            },
            (target, O::PassAuthorization(on)) => match target.app_mut() {
                Some(app) => app.pass_authorization = on,
                None => return misplaced("cgi:, fastcgi and scgi routes"),
            },
        }
        Ok(())
    }

    fn app_mut(&mut self) -> Option<&mut AppOptions> {
        match self {
            Target::Cgi(t) => Some(&mut t.app),
            Target::FastCgi(t) => Some(&mut t.app),
            Target::Scgi(t) => Some(&mut t.app),
            Target::Http(_) | Target::Ftp(_) | Target::File(_) => None,
        }
    }

    pub fn parse(s: &str) -> Result<Target, String> {
        let bad = |why: &str| format!("target {s:?}: {why}");
        if let Some(dir) = s.strip_prefix("file:") {
            if dir.is_empty() {
                return Err(bad("file: needs a directory"));
            }
            return Ok(Target::File(FileTarget {
                dir: PathBuf::from(dir),
                index: None,
                browse: false,
                files: FileOptions::default(),
            }));
        }
        if let Some(dir) = s.strip_prefix("cgi:") {
            if dir.is_empty() {
                return Err(bad("cgi: needs a directory"));
            }
            return Ok(Target::Cgi(CgiTarget {
                dir: PathBuf::from(dir),
                index: None,
                max_scripts: None,
                script_total: None,
                app: AppOptions::default(),
            }));
        }
        if let Some(path) = s.strip_prefix("fastcgi+unix:") {
            if path.is_empty() {
                return Err(bad("fastcgi+unix: needs a socket path"));
            }
            return Ok(Target::FastCgi(FastCgiTarget::new(UpstreamSocket::Unix(PathBuf::from(path)))));
        }
        let (scheme, rest) = s.split_once("://").ok_or_else(|| {
            bad("expected http://, https://, ftp://, cgi:DIR, fastcgi://, fastcgi+unix:PATH, scgi:// or file:DIR")
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
                Ok(Target::Http(HttpTarget {
                    tls,
                    authority,
                    base,
                    ca: None,
                    upgrades: None,
                    send_proxy_protocol: None,
                    upstream_http: UpstreamHttp::Http1,
                    upstream_max_streams: None,
                }))
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
                Ok(Target::Ftp(FtpTarget { authority, user, pass, dir, uploads: true }))
            }
            "fastcgi" | "scgi" => {
                if !base.is_empty() {
                    return Err(bad("a path is not allowed"));
                }
                let authority = Authority::parse(hostpart, None).map_err(|e| bad(&e))?;
                Ok(if scheme == "scgi" {
                    Target::Scgi(ScgiTarget { authority, app: AppOptions::default() })
                } else {
                    Target::FastCgi(FastCgiTarget::new(UpstreamSocket::Tcp(authority)))
                })
            }
            other => Err(bad(&format!("unknown scheme {other:?}"))),
        }
    }
}

impl FastCgiTarget {
    fn new(socket: UpstreamSocket) -> FastCgiTarget {
        FastCgiTarget {
            socket,
            root: None,
            index: None,
            split_path: None,
            static_files: true,
            front_controller: None,
            max_connections: None,
            files: FileOptions::default(),
            app: AppOptions::default(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Http(HttpTarget { tls, authority, base, .. }) => {
                write!(f, "{}://{authority}{base}", if *tls { "https" } else { "http" })
            }
            // Credentials stay out of logs and summaries.
            Target::Ftp(FtpTarget { authority, user, dir, .. }) => match user {
                Some(u) => write!(f, "ftp://{u}@{authority}{dir}"),
                None => write!(f, "ftp://{authority}{dir}"),
            },
            Target::Cgi(t) => write!(f, "cgi:{}", t.dir.display()),
            Target::FastCgi(t) => match &t.socket {
                UpstreamSocket::Tcp(a) => write!(f, "fastcgi://{a}"),
                UpstreamSocket::Unix(p) => write!(f, "fastcgi+unix:{}", p.display()),
            },
            Target::Scgi(t) => write!(f, "scgi://{}", t.authority),
            Target::File(t) => write!(f, "file:{}", t.dir.display()),
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
            Target::Http(HttpTarget {
                tls: false,
                authority: Authority { host: "127.0.0.1".into(), port: 9000 },
                base: "/app".into(),
                ca: None,
                upgrades: None,
                send_proxy_protocol: None,
                upstream_http: UpstreamHttp::Http1,
                upstream_max_streams: None,
            })
        );
        match Target::parse("ftp://bob:s%40cret@ftp.example.org/pub").unwrap() {
            Target::Ftp(FtpTarget { authority, user, pass, dir, .. }) => {
                assert_eq!(authority.port, 21);
                assert_eq!(user.as_deref(), Some("bob"));
                assert_eq!(pass.as_deref(), Some("s@cret"));
                assert_eq!(dir, "/pub");
            }
            t => panic!("{t}"),
        }
        assert!(matches!(Target::parse("cgi:/srv/cgi").unwrap(), Target::Cgi(_)));
        assert!(matches!(
            Target::parse("fastcgi+unix:/run/php.sock").unwrap(),
            Target::FastCgi(FastCgiTarget { socket: UpstreamSocket::Unix(_), .. })
        ));
        assert!(Target::parse("scgi://127.0.0.1:4000").is_ok());
        assert!(Target::parse("scgi://127.0.0.1").is_err());
        assert!(Target::parse("gopher://x:70").is_err());
        assert!(!Target::parse("ftp://u:pw@h/").unwrap().to_string().contains("pw"));
        let mut t = Target::parse("scgi://127.0.0.1:4000").unwrap();
        assert_eq!(
            t.set(TargetOption::Index("i".into())),
            Err(OptionError::Misplaced { which: "cgi:, fastcgi and file: routes" })
        );
        assert!(t.set(TargetOption::PassAuthorization(true)).is_ok());
        let mut t = Target::parse("cgi:/srv").unwrap();
        assert!(matches!(t.set(TargetOption::Index("../x".into())), Err(OptionError::Invalid(_))));
        assert!(matches!(t.set(TargetOption::MaxScripts(0)), Err(OptionError::Invalid(_))));
        let mut t = Target::parse("http://h:1").unwrap();
        assert!(matches!(t.set(TargetOption::Ca("c".into())), Err(OptionError::Misplaced { .. })), "ca needs https");
        for bad in ["ftp://h/a/../b", "ftp://h/./b", "ftp://h/a%2F..%2Fb", "ftp://u%0D%0A:p@h/", "ftp://h/a%0Ab"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
