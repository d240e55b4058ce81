//! A parent proxy (`--parent http://[user:pass@]host:port`): every relayed request goes to it in absolute form,
//! every tunnel is a CONNECT through it, each with the parent's own Proxy-Authorization.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use http::StatusCode;
use http::header::HeaderValue;
use hyper::upgrade::Upgraded;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{ConnectError, Dialer};
use crate::config::{Authority, Parent};
use crate::error::{Error, Kind};

pub struct ParentProxy {
    pub authority: Authority,
    /// `Basic ...` for the parent, when the URL had credentials.
    pub auth: Option<HeaderValue>,
    /// The parent is the operator's choice: no target policy.
    dialer: Dialer,
    /// How long the parent may take to answer a CONNECT.
    answer_timeout: Duration,
}

impl ParentProxy {
    pub fn new(cfg: &Parent, dialer: Dialer, answer_timeout: Duration) -> ParentProxy {
        let auth = cfg.credentials.as_ref().and_then(|(u, p)| basic(u, p));
        ParentProxy { authority: cfg.authority.clone(), auth, dialer, answer_timeout }
    }

    /// A TCP connection to the parent.
    pub async fn dial(&self) -> Result<(tokio::net::TcpStream, SocketAddr), Error> {
        self.dialer.dial(&self.authority.host, self.authority.port).await
    }

    /// A tunnel to `target` (`host:port`) through the parent.
    pub async fn tunnel(&self, target: &str) -> Result<(Upgraded, SocketAddr), Error> {
        let (tcp, addr) = self.dial().await?;
        let name = self.authority.to_string();
        match tokio::time::timeout(self.answer_timeout, connect_through(tcp, target, self.auth.as_ref(), &name)).await {
            Ok(r) => r.map(|u| (u, addr)),
            Err(_) => Err(Error::upstream(
                Kind::ResponseTimeout,
                format!("parent proxy {name} did not answer CONNECT {target} within {:?}", self.answer_timeout),
            )),
        }
    }
}

/// `Basic base64(user:pass)`.
pub fn basic(user: &str, pass: &str) -> Option<HeaderValue> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
    // Kept out of Debug output, as hyper-util does for the credentials it adds.
    value.set_sensitive(true);
    Some(value)
}

/// `CONNECT target` through a proxy already dialled (`upstream::connect`, shared with `hopgate tunnel`), as
/// hopgate's error: the proxy's refusal is a 502 naming the proxy and its status (a 504 stays a 504).
async fn connect_through<IO>(io: IO, target: &str, auth: Option<&HeaderValue>, proxy: &str) -> Result<Upgraded, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let authority: http::uri::Authority =
        target.parse().map_err(|_| Error::bad_request(format!("invalid tunnel target {target}")))?;
    let mut fields = http::HeaderMap::new();
    if let Some(auth) = auth {
        fields.insert(http::header::PROXY_AUTHORIZATION, auth.clone());
    }
    super::connect::connect(io, &authority, fields).await.map_err(|e| {
        let kind = match &e {
            ConnectError::Refused { status: StatusCode::GATEWAY_TIMEOUT, .. } => Kind::ResponseTimeout,
            ConnectError::Refused { status: StatusCode::SERVICE_UNAVAILABLE, .. } => Kind::UpstreamUnavailable,
            // the parent could not reach the target itself
            ConnectError::Refused { status: StatusCode::BAD_GATEWAY, .. } => Kind::ConnectFailed,
            // 403, 407...: the parent refuses hopgate
            ConnectError::Refused { .. } => Kind::UpstreamRejected,
            ConnectError::Handshake(_) => Kind::UpstreamClosedEarly,
        };
        let what = match &e {
            ConnectError::Refused { .. } => "refused",
            ConnectError::Handshake(_) => "gave no answer to",
        };
        Error::upstream(kind, format!("proxy {proxy} {what} CONNECT {target}: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials() {
        let value = basic("Aladdin", "open sesame").unwrap();
        assert_eq!(value, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("QWxh"), "{value:?}");
    }
}
