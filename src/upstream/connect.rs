//! The client side of CONNECT (RFC 9110 §9.3.6): asks a proxy, over a connection already made to it (TLS done if
//! any), for a tunnel to `host:port`, with hyper's HTTP/1.1 client. Used by the forward proxy to tunnel through
//! its parent and by `hopgate tunnel`.

use std::fmt;

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Why a proxy gave no tunnel.
#[derive(Debug)]
pub enum ConnectError {
    /// The proxy closed or answered something that is not an HTTP/1 response.
    Handshake(hyper::Error),
    /// The proxy answered CONNECT with a non-2xx status (and this reason phrase).
    Refused { status: StatusCode, reason: String },
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Handshake(e) => {
                write!(f, "{e}")?;
                if let Some(cause) = std::error::Error::source(e) {
                    write!(f, ": {cause}")?;
                }
                Ok(())
            }
            ConnectError::Refused { status, reason } => {
                let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
                write!(f, "{} {reason}", status.as_u16())
            }
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Handshake(e) => Some(e),
            ConnectError::Refused { .. } => None,
        }
    }
}

/// Sends `CONNECT target` over `io` with `fields` (Proxy-Authorization, Via...) and returns the tunnel once the
/// proxy answers 2xx. Bytes that came after the proxy's blank line are read first from the returned stream.
pub async fn connect<S>(io: S, target: &Authority, fields: HeaderMap) -> Result<Upgraded, ConnectError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(ConnectError::Handshake)?;
    // The connection task hands the socket over to `Upgraded` once the 2xx is read.
    let driver = tokio::spawn(connection.with_upgrades());
    let mut request = Request::new(Empty::<Bytes>::new());
    *request.method_mut() = Method::CONNECT;
    *request.uri_mut() = http::Uri::from(target.clone());
    let headers = request.headers_mut();
    if let Ok(host) = header::HeaderValue::from_str(target.as_str()) {
        headers.insert(header::HOST, host);
    }
    headers.extend(fields);
    if let Some(auth) = headers.get_mut(header::PROXY_AUTHORIZATION) {
        auth.set_sensitive(true);
    }
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(e) => {
            driver.abort();
            return Err(ConnectError::Handshake(e));
        }
    };
    let status = response.status();
    if !status.is_success() {
        driver.abort();
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .or_else(|| status.canonical_reason().map(str::to_owned))
            .unwrap_or_default();
        return Err(ConnectError::Refused { status, reason });
    }
    hyper::upgrade::on(response).await.map_err(ConnectError::Handshake)
}
