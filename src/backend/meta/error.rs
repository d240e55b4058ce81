//! The one error type of the resource gateways (CGI, FastCGI, SCGI).

use std::fmt;

use http::StatusCode;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong, named after what happened; `GatewayError::status` maps it to a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayErrorKind {
    /// No script for this path (missing, outside the root, traversal, bad encoding): 404.
    NotFound,
    /// The script exists but may not be run (not executable): 403. Its contents are never sent.
    Forbidden,
    /// The upstream cannot be reached or run (refused, missing socket, overloaded, spawn failed): 502.
    Unavailable,
    /// The upstream stayed silent past the timeout, or no script slot came free in time: 504.
    Timeout,
    /// The upstream answered garbage: no valid CGI head, bad records, closed early: 502.
    BadResponse,
    /// The request has a body of unknown length (chunked) and the interface needs one: 411.
    /// RFC 3875 §4.2 lets a server refuse such requests instead of buffering them.
    LengthRequired,
}

impl GatewayErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            GatewayErrorKind::NotFound => "not found",
            GatewayErrorKind::Forbidden => "forbidden",
            GatewayErrorKind::Unavailable => "upstream unavailable",
            GatewayErrorKind::Timeout => "upstream timed out",
            GatewayErrorKind::BadResponse => "bad upstream response",
            GatewayErrorKind::LengthRequired => "length required",
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

    pub fn kind(&self) -> GatewayErrorKind {
        self.kind
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The status the HTTP side answers with, when no response head has been sent yet.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            GatewayErrorKind::NotFound => StatusCode::NOT_FOUND,
            GatewayErrorKind::Forbidden => StatusCode::FORBIDDEN,
            GatewayErrorKind::Unavailable | GatewayErrorKind::BadResponse => StatusCode::BAD_GATEWAY,
            GatewayErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayErrorKind::LengthRequired => StatusCode::LENGTH_REQUIRED,
        }
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
