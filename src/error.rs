//! One error type for everything a request can run into. It says who failed ([`Side`]) and what happened
//! ([`Kind`]); [`Error::status`] is the one place that turns that into an HTTP status.

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
    /// A framing problem: the connection can't be trusted for another request.
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
    ResponseTimeout,
    /// Something in hopgate itself (a file it could not read, a resource exhausted).
    Internal,
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
}

impl Error {
    pub fn new(kind: Kind, side: Side, detail: impl Into<String>) -> Error {
        Error { kind, side, detail: detail.into(), challenge: None, fields: Vec::new(), source: None }
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
            Kind::TargetForbidden | Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::AuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Loop => StatusCode::LOOP_DETECTED,
            Kind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Kind::DnsFailed
            | Kind::ConnectRefused
            | Kind::ConnectFailed
            | Kind::UpstreamTls
            | Kind::UpstreamClosedEarly
            | Kind::UpstreamProtocol => StatusCode::BAD_GATEWAY,
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
    }

    #[test]
    fn chain_includes_sources_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::upstream(Kind::ConnectRefused, "connect to 1.2.3.4:80").with_source(io);
        assert_eq!(e.chain(), "connect to 1.2.3.4:80: refused");
    }
}
