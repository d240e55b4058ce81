//! One error type for everything a request can run into. It says who failed ([`Side`]) and what happened
//! ([`Kind`]); [`Error::status`] is the one place that turns that into an HTTP status, and [`Kind::reason`] into
//! the stable token of the log line. Layers with errors of their own convert them in one place each
//! (`FtpError::into_error`, `From<GatewayError>`), keeping them as the typed source.

use std::fmt;

use http::StatusCode;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Who failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Local,
}

/// What happened, named after the event rather than the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed or can't be served as sent.
    BadRequest,
    /// A framing problem: the connection can't be trusted for another request (also: plain HTTP sent to a TLS
    /// port). 400 with `Connection: close`.
    BadFraming,
    UriTooLong,
    HeadTooLarge,
    /// A Transfer-Encoding hopgate does not implement.
    NotImplemented,
    /// A request body of unknown length that the upstream needs the length of, and hopgate will not buffer.
    LengthRequired,
    NotFound,
    /// The method is not served here; the error carries an `Allow` field.
    MethodNotAllowed,
    /// A `Range` the resource can't satisfy (starts at or past its end): 416.
    RangeNotSatisfiable,
    /// An `If-Match` or `If-Unmodified-Since` (RFC 9110 §13.1) that the representation does not meet: 412.
    PreconditionFailed,
    /// The client chose a target the policy refuses (loopback, a port CONNECT may not reach...).
    TargetForbidden,
    /// The upstream (FTP server, filesystem) refused access.
    Forbidden,
    AuthRequired,
    /// The origin wants credentials (FTP log-in refused).
    Unauthorized,
    /// The request would come back to hopgate itself.
    Loop,
    /// Too many tunnels or scripts at once.
    Overloaded,
    /// A client past its request rate (`max_requests_per_second`): 429 with Retry-After.
    RateLimited,
    /// An intercepted request whose Host does not resolve to the address the client connected to (a forged
    /// Host, Squid's `host_verify_strict`): 409.
    HostForgery,
    /// No member of the route's upstream group is up, or every one failed to take the request: 503 with
    /// `Retry-After` (docs/upstreams.md).
    NoUpstream,
    DnsFailed,
    ConnectRefused,
    ConnectFailed,
    ConnectTimeout,
    /// TLS to the upstream failed (untrusted, wrong name, expired...).
    UpstreamTls,
    /// The upstream closed or reset before a complete response.
    UpstreamClosedEarly,
    /// The upstream answered something that is not valid for its protocol.
    UpstreamProtocol,
    /// The upstream is up but refuses service for now: an FTP 421, FastCGI's FCGI_OVERLOADED, a parent's 503.
    UpstreamUnavailable,
    /// The upstream refused what it was asked with a negative answer of its protocol that has no status of its
    /// own here: an FTP reply such as `451` or `504` to a command, a parent proxy's 403/407 to hopgate's request.
    UpstreamRejected,
    /// The upstream's answer is larger than a hopgate limit allows (an FTP listing, a CGI response head).
    ResponseTooLarge,
    ResponseTimeout,
    /// hopgate could not start a CGI script (its interpreter is missing, the kernel can't run the file, no
    /// process or pipe could be made). Local: nothing of the script ran. Answered 502, not 500: a script that
    /// can't be run is, to the client, an upstream that is broken, and hopgate itself is still fine.
    SpawnFailed,
    /// Something in hopgate itself (a file it could not read, a resource exhausted).
    Internal,
}

impl Kind {
    /// A short, stable, lowercase token per kind (`refused`, `timeout`, `dns`, `tls`, `protocol`, `closed`,
    /// `unavailable`, `spawn`...): for counting errors by cause (`upstream_errors_total{reason}`) and for the
    /// `reason=` field of the error log line. Renaming one breaks dashboards: add, don't rename.
    pub fn reason(&self) -> &'static str {
        match self {
            Kind::BadRequest => "bad_request",
            Kind::BadFraming => "bad_framing",
            Kind::UriTooLong => "uri_too_long",
            Kind::HeadTooLarge => "head_too_large",
            Kind::NotImplemented => "not_implemented",
            Kind::LengthRequired => "length_required",
            Kind::NotFound => "not_found",
            Kind::MethodNotAllowed => "method_not_allowed",
            Kind::RangeNotSatisfiable => "range_not_satisfiable",
            Kind::PreconditionFailed => "precondition_failed",
            Kind::TargetForbidden => "target_forbidden",
            Kind::Forbidden => "forbidden",
            Kind::AuthRequired => "auth_required",
            Kind::Unauthorized => "unauthorized",
            Kind::Loop => "loop",
            Kind::Overloaded => "overloaded",
            Kind::RateLimited => "rate_limited",
            Kind::HostForgery => "host_forgery",
            Kind::NoUpstream => "no_upstream",
            Kind::DnsFailed => "dns",
            Kind::ConnectRefused => "refused",
            Kind::ConnectFailed => "connect",
            Kind::ConnectTimeout => "connect_timeout",
            Kind::UpstreamTls => "tls",
            Kind::UpstreamClosedEarly => "closed",
            Kind::UpstreamProtocol => "protocol",
            Kind::UpstreamUnavailable => "unavailable",
            Kind::UpstreamRejected => "rejected",
            Kind::ResponseTooLarge => "too_large",
            Kind::ResponseTimeout => "timeout",
            Kind::SpawnFailed => "spawn",
            Kind::Internal => "internal",
        }
    }
}

pub struct Error {
    kind: Kind,
    side: Side,
    /// Short, lowercase, no final period: shown to the client and logged.
    detail: String,
    /// For 401 and 407: the challenge (`Basic realm="..."`) the page sends in WWW-/Proxy-Authenticate.
    challenge: Option<http::HeaderValue>,
    /// Further fields the page carries: `Allow` on a 405, `Content-Range` on a 416.
    fields: Vec<(http::HeaderName, http::HeaderValue)>,
    source: Option<BoxError>,
    /// The detail already words `source` itself (a layer's own error converted to this one): the log line goes on
    /// with the source's causes only.
    detail_words_source: bool,
}

impl Error {
    pub fn new(kind: Kind, side: Side, detail: impl Into<String>) -> Error {
        Error {
            kind,
            side,
            detail: detail.into(),
            challenge: None,
            fields: Vec::new(),
            source: None,
            detail_words_source: false,
        }
    }

    pub fn client(kind: Kind, detail: impl Into<String>) -> Error {
        Error::new(kind, Side::Client, detail)
    }

    pub fn upstream(kind: Kind, detail: impl Into<String>) -> Error {
        Error::new(kind, Side::Upstream, detail)
    }

    pub fn local(kind: Kind, detail: impl Into<String>) -> Error {
        Error::new(kind, Side::Local, detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Error {
        Error::client(Kind::BadRequest, detail)
    }

    pub fn with_source(mut self, source: impl Into<BoxError>) -> Error {
        self.source = Some(source.into());
        self.detail_words_source = false;
        self
    }

    /// Keeps a layer's own error (`FtpError`, `GatewayError`) as the typed cause when the detail already says
    /// what it says: [`Error::chain`] then shows only the causes beneath it (the OS error of a failed spawn).
    pub fn with_worded_source(mut self, source: impl Into<BoxError>) -> Error {
        self.source = Some(source.into());
        self.detail_words_source = true;
        self
    }

    /// Adds the authentication challenge a 401 or 407 page carries.
    pub fn with_challenge(mut self, challenge: http::HeaderValue) -> Error {
        self.challenge = Some(challenge);
        self
    }

    pub fn challenge(&self) -> Option<&http::HeaderValue> {
        self.challenge.as_ref()
    }

    /// Adds a field the page carries (`Allow` on a 405, `Content-Range` on a 416).
    pub fn with_field(mut self, name: http::HeaderName, value: http::HeaderValue) -> Error {
        self.fields.push((name, value));
        self
    }

    pub fn fields(&self) -> &[(http::HeaderName, http::HeaderValue)] {
        &self.fields
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn side(&self) -> Side {
        self.side
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The status hopgate answers with; the only place that decides it.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::BadRequest | Kind::BadFraming => StatusCode::BAD_REQUEST,
            Kind::UriTooLong => StatusCode::URI_TOO_LONG,
            Kind::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Kind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Kind::LengthRequired => StatusCode::LENGTH_REQUIRED,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            Kind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Kind::TargetForbidden | Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::AuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Loop => StatusCode::LOOP_DETECTED,
            Kind::Overloaded | Kind::NoUpstream => StatusCode::SERVICE_UNAVAILABLE,
            Kind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Kind::HostForgery => StatusCode::CONFLICT,
            Kind::DnsFailed
            | Kind::ConnectRefused
            | Kind::ConnectFailed
            | Kind::UpstreamTls
            | Kind::UpstreamClosedEarly
            | Kind::UpstreamProtocol
            | Kind::UpstreamUnavailable
            | Kind::UpstreamRejected
            | Kind::ResponseTooLarge
            | Kind::SpawnFailed => StatusCode::BAD_GATEWAY,
            Kind::ConnectTimeout | Kind::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the client connection must be closed after the error page.
    pub fn closes_connection(&self) -> bool {
        matches!(self.kind, Kind::BadFraming | Kind::HeadTooLarge | Kind::UriTooLong)
    }

    /// The full chain, for the one log line where the request ends.
    pub fn chain(&self) -> String {
        let mut s = self.detail.clone();
        let mut next: Option<&(dyn std::error::Error + 'static)> = self.source.as_deref().map(|e| e as _);
        if self.detail_words_source {
            next = next.and_then(|e| e.source());
        }
        // A cause whose words are already in the line (a detail that quotes it) is not repeated.
        while let Some(e) = next {
            let text = e.to_string();
            if !s.contains(&text) {
                s.push_str(": ");
                s.push_str(&text);
            }
            next = e.source();
        }
        s
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}/{:?}: {}", self.kind, self.side, self.chain())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// Where in a config file a value came from: `FILE:LINE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub file: std::sync::Arc<str>,
    pub line: usize,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Why hopgate can't start (or `check` refuses a config): the place in the config file when there is one, and
/// the reason. `hopgate check` and `hopgate run` print it as `FILE:LINE: reason`; a command-line form names the
/// flag in the reason instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupError {
    pub at: Option<At>,
    pub message: String,
}

impl StartupError {
    /// A reason with no place yet: the caller that knows the config entry adds it ([`StartupError::or_at`]).
    pub fn new(message: impl Into<String>) -> StartupError {
        StartupError { at: None, message: message.into() }
    }

    pub fn at(at: Option<&At>, message: impl Into<String>) -> StartupError {
        StartupError { at: at.cloned(), message: message.into() }
    }

    /// Places the error at `at` unless it has a more precise place already.
    pub fn or_at(mut self, at: Option<&At>) -> StartupError {
        if self.at.is_none() {
            self.at = at.cloned();
        }
        self
    }

    /// Puts `context` in front of the reason (`listener 127.0.0.1:80: ...`).
    pub fn context(mut self, context: impl fmt::Display) -> StartupError {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl From<String> for StartupError {
    fn from(message: String) -> StartupError {
        StartupError::new(message)
    }
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{at}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for StartupError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(Error::upstream(Kind::ConnectRefused, "x").status(), 502);
        assert_eq!(Error::upstream(Kind::ConnectTimeout, "x").status(), 504);
        assert_eq!(Error::client(Kind::TargetForbidden, "x").status(), 403);
        assert_eq!(Error::client(Kind::Loop, "x").status(), 508);
        for kind in [Kind::UpstreamUnavailable, Kind::UpstreamRejected, Kind::ResponseTooLarge, Kind::SpawnFailed] {
            assert_eq!(Error::upstream(kind, "x").status(), 502, "{kind:?}");
        }
    }

    #[test]
    fn reasons_are_distinct_lowercase_tokens() {
        // every kind (a new one: add it here)
        let all = [
            Kind::BadRequest,
            Kind::BadFraming,
            Kind::UriTooLong,
            Kind::HeadTooLarge,
            Kind::NotImplemented,
            Kind::LengthRequired,
            Kind::NotFound,
            Kind::MethodNotAllowed,
            Kind::RangeNotSatisfiable,
            Kind::TargetForbidden,
            Kind::Forbidden,
            Kind::AuthRequired,
            Kind::Unauthorized,
            Kind::Loop,
            Kind::Overloaded,
            Kind::DnsFailed,
            Kind::ConnectRefused,
            Kind::ConnectFailed,
            Kind::ConnectTimeout,
            Kind::UpstreamTls,
            Kind::UpstreamClosedEarly,
            Kind::UpstreamProtocol,
            Kind::UpstreamUnavailable,
            Kind::UpstreamRejected,
            Kind::ResponseTooLarge,
            Kind::ResponseTimeout,
            Kind::SpawnFailed,
            Kind::Internal,
        ];
        let mut seen = std::collections::HashSet::new();
        for kind in all {
            let r = kind.reason();
            assert!(!r.is_empty() && r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{kind:?}: {r}");
            assert!(seen.insert(r), "{kind:?}: {r} twice");
        }
        // the ones the metrics issue counts upstream errors by
        for (kind, r) in [
            (Kind::ConnectRefused, "refused"),
            (Kind::ResponseTimeout, "timeout"),
            (Kind::DnsFailed, "dns"),
            (Kind::UpstreamTls, "tls"),
            (Kind::UpstreamProtocol, "protocol"),
            (Kind::UpstreamClosedEarly, "closed"),
            (Kind::UpstreamUnavailable, "unavailable"),
            (Kind::SpawnFailed, "spawn"),
        ] {
            assert_eq!(kind.reason(), r);
        }
    }

    #[test]
    fn chain_includes_sources_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::upstream(Kind::ConnectRefused, "connect to 1.2.3.4:80").with_source(io);
        assert_eq!(e.chain(), "connect to 1.2.3.4:80: refused");
    }

    #[test]
    fn a_worded_source_shows_only_its_causes() {
        #[derive(Debug)]
        struct Layer(std::io::Error);
        impl fmt::Display for Layer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the layer's own words")
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = std::io::Error::other("os error 2");
        let e = Error::upstream(Kind::SpawnFailed, "said otherwise").with_worded_source(Layer(io));
        assert_eq!(e.chain(), "said otherwise: os error 2");
        assert!(std::error::Error::source(&e).is_some_and(|s| s.is::<Layer>()), "the typed cause is kept");
    }
}
