//! The one error type of the resource gateways (CGI, FastCGI, SCGI): what went wrong, in the words of the
//! protocol layer. It has no status of its own: `impl From<GatewayError> for Error` below is the one place it
//! becomes hopgate's [`Error`] (whose `status()` picks the status), keeping it as the source for the log line.

use std::{fmt, io};

use crate::error::{BoxError, Error, Kind, Side};

/// What went wrong, named after what happened. Each kind keeps its own meaning in hopgate's [`Kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayErrorKind {
    /// No script for this path (missing, outside the root, traversal, bad encoding): 404.
    NotFound,
    /// The script exists but may not be run (not executable): 403. Its contents are never sent.
    Forbidden,
    /// The request has a body of unknown length (chunked) and the interface needs one: 411.
    /// RFC 3875 §4.2 lets a server refuse such requests instead of buffering them.
    LengthRequired,
    /// hopgate could not start the script: its interpreter is missing, the kernel can't run the file, no
    /// process or pipes could be made. Nothing of the script ran: 502 (`Kind::SpawnFailed`, hopgate's side).
    Spawn,
    /// The application refused the connection (nothing listens on its unix socket): 502. TCP connections are
    /// made, and their failures worded, by `upstream::Dialer`.
    ConnectRefused,
    /// The connection to the application could not be made otherwise (no such socket file...): 502.
    ConnectFailed,
    /// Connecting to the application's unix socket took longer than the timeout: 504.
    ConnectTimeout,
    /// The application is there but refuses service (FastCGI's FCGI_OVERLOADED), or the gateway is closing: 502.
    Unavailable,
    /// The application stayed silent past the timeout, or no script slot came free in time: 504.
    Timeout,
    /// The application answered something its protocol does not allow: no valid CGI head, bad records or
    /// netstrings: 502.
    BadResponse,
    /// Reading from or writing to the application failed (a reset connection, a broken pipe): 502.
    Closed,
    /// The application's response head is over hopgate's limit: 502.
    TooLarge,
}

impl GatewayErrorKind {
    /// The words that start the detail shown on the page.
    fn as_str(self) -> &'static str {
        match self {
            GatewayErrorKind::NotFound => "not found",
            GatewayErrorKind::Forbidden => "forbidden",
            GatewayErrorKind::LengthRequired => "length required",
            GatewayErrorKind::Spawn => "cannot start the script",
            GatewayErrorKind::ConnectRefused => "connection refused",
            GatewayErrorKind::ConnectFailed => "cannot connect",
            GatewayErrorKind::ConnectTimeout => "connect timed out",
            GatewayErrorKind::Unavailable => "upstream unavailable",
            GatewayErrorKind::Timeout => "upstream timed out",
            GatewayErrorKind::BadResponse => "bad upstream response",
            GatewayErrorKind::Closed => "upstream connection failed",
            GatewayErrorKind::TooLarge => "upstream response too large",
        }
    }

    /// hopgate's kind for this one, and whose side the failure is on. The one mapping of this layer.
    fn kind_and_side(self) -> (Kind, Side) {
        match self {
            GatewayErrorKind::NotFound => (Kind::NotFound, Side::Client),
            GatewayErrorKind::Forbidden => (Kind::Forbidden, Side::Upstream),
            GatewayErrorKind::LengthRequired => (Kind::LengthRequired, Side::Client),
            GatewayErrorKind::Spawn => (Kind::SpawnFailed, Side::Local),
            GatewayErrorKind::ConnectRefused => (Kind::ConnectRefused, Side::Upstream),
            GatewayErrorKind::ConnectFailed => (Kind::ConnectFailed, Side::Upstream),
            GatewayErrorKind::ConnectTimeout => (Kind::ConnectTimeout, Side::Upstream),
            GatewayErrorKind::Unavailable => (Kind::UpstreamUnavailable, Side::Upstream),
            GatewayErrorKind::Timeout => (Kind::ResponseTimeout, Side::Upstream),
            GatewayErrorKind::BadResponse => (Kind::UpstreamProtocol, Side::Upstream),
            GatewayErrorKind::Closed => (Kind::UpstreamClosedEarly, Side::Upstream),
            GatewayErrorKind::TooLarge => (Kind::ResponseTooLarge, Side::Upstream),
        }
    }
}

/// A failed gateway request: a kind, a short detail, and the underlying cause when there is one.
#[derive(Debug)]
pub struct GatewayError {
    kind: GatewayErrorKind,
    detail: String,
    source: Option<BoxError>,
}

impl GatewayError {
    pub fn new(kind: GatewayErrorKind, detail: impl Into<String>) -> GatewayError {
        GatewayError { kind, detail: detail.into(), source: None }
    }

    pub fn with_source(mut self, source: impl Into<BoxError>) -> GatewayError {
        self.source = Some(source.into());
        self
    }

    pub fn not_found(detail: impl Into<String>) -> GatewayError {
        GatewayError::new(GatewayErrorKind::NotFound, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> GatewayError {
        GatewayError::new(GatewayErrorKind::Forbidden, detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> GatewayError {
        GatewayError::new(GatewayErrorKind::Unavailable, detail)
    }

    pub fn timeout(detail: impl Into<String>) -> GatewayError {
        GatewayError::new(GatewayErrorKind::Timeout, detail)
    }

    pub fn bad_response(detail: impl Into<String>) -> GatewayError {
        GatewayError::new(GatewayErrorKind::BadResponse, detail)
    }

    /// The script could not be started; `source` says why.
    pub fn spawn(detail: impl Into<String>, source: io::Error) -> GatewayError {
        GatewayError::new(GatewayErrorKind::Spawn, detail).with_source(source)
    }

    /// Reading from or writing to the application failed with `source`.
    pub fn closed(detail: impl Into<String>, source: impl Into<BoxError>) -> GatewayError {
        GatewayError::new(GatewayErrorKind::Closed, detail).with_source(source)
    }

    /// Connecting to the application failed with `source`: refused, or otherwise.
    pub fn connect(detail: impl Into<String>, source: io::Error) -> GatewayError {
        let kind = match source.kind() {
            io::ErrorKind::ConnectionRefused => GatewayErrorKind::ConnectRefused,
            _ => GatewayErrorKind::ConnectFailed,
        };
        GatewayError::new(kind, detail).with_source(source)
    }

    pub fn kind(&self) -> GatewayErrorKind {
        self.kind
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            f.write_str(self.kind.as_str())
        } else {
            write!(f, "{}: {}", self.kind.as_str(), self.detail)
        }
    }
}

impl std::error::Error for GatewayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The one place a gateway error becomes hopgate's: its kind keeps its meaning, the page shows the detail
/// (`bad upstream response: FastCGI record version 72`), and the error stays the source, so the log line also
/// shows its cause (the OS error of a failed spawn or connect).
impl From<GatewayError> for Error {
    fn from(e: GatewayError) -> Error {
        let (kind, side) = e.kind.kind_and_side();
        Error::new(kind, side, e.to_string()).with_worded_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_keeps_its_meaning_and_status() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let missing = io::Error::from(io::ErrorKind::NotFound);
        let cases = [
            (GatewayError::not_found("x"), Kind::NotFound, Side::Client, 404),
            (GatewayError::forbidden("x"), Kind::Forbidden, Side::Upstream, 403),
            (GatewayError::new(GatewayErrorKind::LengthRequired, "x"), Kind::LengthRequired, Side::Client, 411),
            (
                GatewayError::spawn("/a.sh", io::Error::from(io::ErrorKind::NotFound)),
                Kind::SpawnFailed,
                Side::Local,
                502,
            ),
            (GatewayError::connect("connecting to a", refused), Kind::ConnectRefused, Side::Upstream, 502),
            (GatewayError::connect("connecting to a", missing), Kind::ConnectFailed, Side::Upstream, 502),
            (GatewayError::new(GatewayErrorKind::ConnectTimeout, "x"), Kind::ConnectTimeout, Side::Upstream, 504),
            (GatewayError::unavailable("x"), Kind::UpstreamUnavailable, Side::Upstream, 502),
            (GatewayError::timeout("x"), Kind::ResponseTimeout, Side::Upstream, 504),
            (GatewayError::bad_response("x"), Kind::UpstreamProtocol, Side::Upstream, 502),
            (
                GatewayError::closed("x", io::Error::from(io::ErrorKind::BrokenPipe)),
                Kind::UpstreamClosedEarly,
                Side::Upstream,
                502,
            ),
            (GatewayError::new(GatewayErrorKind::TooLarge, "x"), Kind::ResponseTooLarge, Side::Upstream, 502),
        ];
        for (e, kind, side, status) in cases {
            let what = e.to_string();
            let err = Error::from(e);
            assert_eq!((err.kind(), err.side(), err.status().as_u16()), (kind, side, status), "{what}");
        }
    }

    #[test]
    fn the_page_keeps_the_words_and_the_log_the_cause() {
        let e = Error::from(GatewayError::bad_response("FastCGI record version 72"));
        assert_eq!(e.detail(), "bad upstream response: FastCGI record version 72");
        let source = io::Error::new(io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let e = Error::from(GatewayError::spawn("/x.sh", source));
        assert_eq!(e.detail(), "cannot start the script: /x.sh");
        assert_eq!(e.chain(), "cannot start the script: /x.sh: No such file or directory (os error 2)");
    }
}
