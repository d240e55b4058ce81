//! A parent proxy (`--parent http://[user:pass@]host:port`): every relayed request goes to it in absolute form,
//! every tunnel is a CONNECT through it, each with the parent's own Proxy-Authorization.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Dialer;
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
    HeaderValue::from_str(&format!("Basic {token}")).ok()
}

/// Sends `CONNECT target` over `io` with hyper's client and returns the tunnel once the proxy answers 2xx.
/// Bytes the proxy sent after its answer stay in the returned stream. `proxy` names the proxy in errors.
pub async fn connect_through<IO>(
    io: IO,
    target: &str,
    auth: Option<&HeaderValue>,
    proxy: &str,
) -> Result<Upgraded, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
        .await
        .map_err(|e| Error::upstream(Kind::UpstreamClosedEarly, format!("proxy {proxy}: {e}")))?;
    tokio::spawn(async move {
        // Drives the connection until the upgrade hands it over.
        let _ = conn.with_upgrades().await;
    });
    let mut req = Request::builder().method(Method::CONNECT).uri(target).header(header::HOST, target);
    if let Some(a) = auth {
        req = req.header(header::PROXY_AUTHORIZATION, a.clone());
    }
    let req = req.body(Empty::new()).map_err(|_| Error::bad_request(format!("invalid tunnel target {target}")))?;
    let resp = sender.send_request(req).await.map_err(|e| {
        Error::upstream(Kind::UpstreamClosedEarly, format!("proxy {proxy} closed the connection on CONNECT {target}"))
            .with_source(e)
    })?;
    let status = resp.status();
    if !status.is_success() {
        // The parent's own failure status says what happened; a timeout stays a timeout.
        let kind = if status == StatusCode::GATEWAY_TIMEOUT { Kind::ResponseTimeout } else { Kind::ConnectFailed };
        return Err(Error::upstream(
            kind,
            format!(
                "proxy {proxy} refused CONNECT {target}: {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ),
        ));
    }
    hyper::upgrade::on(resp)
        .await
        .map_err(|e| Error::upstream(Kind::UpstreamClosedEarly, format!("proxy {proxy}: tunnel failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials() {
        assert_eq!(basic("Aladdin", "open sesame").unwrap(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }
}
