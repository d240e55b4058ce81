//! A parent proxy (`--parent http://[user:pass@]host:port`): every relayed request goes to it in absolute form,
//! every tunnel is a CONNECT through it, each with the parent's own Proxy-Authorization.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{StatusCode, Version};
use hyper::upgrade::Upgraded;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{ConnectError, Dialer};
use crate::config::{Authority, Parent};
use crate::error::{Error, Kind};
use crate::http::{ViaName, append_via, basic};

pub struct ParentProxy {
    pub authority: Authority,
    /// `Basic ...` for the parent, when the URL had credentials.
    pub auth: Option<HeaderValue>,
    /// The parent is the operator's choice: no target policy.
    dialer: Dialer,
    /// How long the parent may take to answer a CONNECT.
    answer_timeout: Duration,
    /// The listener's Via name, for the CONNECTs it sends.
    via_name: ViaName,
}

impl ParentProxy {
    pub fn new(cfg: &Parent, dialer: Dialer, answer_timeout: Duration, via_name: &ViaName) -> ParentProxy {
        let auth = cfg.credentials.as_ref().map(|(u, p)| basic::encode(u, p));
        ParentProxy { authority: cfg.authority.clone(), auth, dialer, answer_timeout, via_name: via_name.clone() }
    }

    /// A TCP connection to the parent.
    pub async fn dial(&self) -> Result<(tokio::net::TcpStream, SocketAddr), Error> {
        self.dialer.dial(&self.authority.host, self.authority.port).await
    }

    /// A tunnel to `target` (`host:port`) through the parent. The CONNECT carries the Via fields of `client`
    /// (the client's CONNECT; none for the tunnels hopgate opens for its own https:// requests) with this hop
    /// (`VERSION NAME`) appended, as a relayed request does: a chain of parents that leads back to this listener
    /// ends there in 508 instead of opening tunnels until memory runs out.
    pub async fn tunnel(
        &self,
        target: &str,
        client: &HeaderMap,
        version: Version,
    ) -> Result<(Upgraded, SocketAddr), Error> {
        let mut fields = HeaderMap::new();
        for via in client.get_all(header::VIA) {
            fields.append(header::VIA, via.clone());
        }
        append_via(&mut fields, version, &self.via_name);
        if let Some(auth) = &self.auth {
            fields.insert(header::PROXY_AUTHORIZATION, auth.clone());
        }
        let (tcp, addr) = self.dial().await?;
        let name = self.authority.to_string();
        match tokio::time::timeout(self.answer_timeout, connect_through(tcp, target, fields, &name)).await {
            Ok(r) => r.map(|u| (u, addr)),
            Err(_) => Err(Error::upstream(
                Kind::ResponseTimeout,
                format!("parent proxy {name} did not answer CONNECT {target} within {:?}", self.answer_timeout),
            )),
        }
    }
}

/// `CONNECT target` through a proxy already dialled (`upstream::connect`, shared with `hopgate tunnel`), as
/// hopgate's error: the proxy's refusal is a 502 naming the parent and its status; a 504 stays a 504, and a 508
/// stays a 508 (the parent, or one further up, found that the tunnel would come round in a loop).
async fn connect_through<IO>(io: IO, target: &str, fields: HeaderMap, proxy: &str) -> Result<Upgraded, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let authority: http::uri::Authority =
        target.parse().map_err(|_| Error::bad_request(format!("invalid tunnel target {target}")))?;
    super::connect::connect(io, &authority, fields).await.map_err(|e| {
        let (kind, what) = match &e {
            ConnectError::Refused { status: StatusCode::GATEWAY_TIMEOUT, .. } => (Kind::ResponseTimeout, "refused"),
            ConnectError::Refused { status: StatusCode::LOOP_DETECTED, .. } => (Kind::Loop, "refused"),
            ConnectError::Refused { status: StatusCode::SERVICE_UNAVAILABLE, .. } => {
                (Kind::UpstreamUnavailable, "refused")
            }
            // the parent could not reach the target itself
            ConnectError::Refused { status: StatusCode::BAD_GATEWAY, .. } => (Kind::ConnectFailed, "refused"),
            // 403, 407...: the parent refuses hopgate
            ConnectError::Refused { .. } => (Kind::UpstreamRejected, "refused"),
            ConnectError::Handshake(_) => (Kind::UpstreamClosedEarly, "gave no answer to"),
        };
        Error::upstream(kind, format!("parent proxy {proxy} {what} CONNECT {target}: {e}"))
    })
}
