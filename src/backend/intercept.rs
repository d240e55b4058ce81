//! The intercepting room (issue 18, docs/intercept.md): connections the packet filter sent to an intercepting
//! listener (`mode = "intercept"`: NAT REDIRECT; `"tproxy"`: TPROXY) go where their client sent them, their
//! original destination, under the proxy's policy. `server::intercept` reads the original destination and what
//! the client speaks first, then enters by one of two doors:
//! - plain HTTP, per request ([`serve`]): the Host must resolve to the original destination (else 409, unless
//!   `host_verify = false`: a client must not steer the policy with a forged Host), then the relay
//!   (`relay::intercepted`) takes it to the original destination over the connection's own upstream connection;
//! - TLS, per connection ([`Intercept::dial`]): the original destination, dialled for the splice.
//!
//! Every upstream connection goes through the proxy's [`Dialer`]: its target policy, and the loop check, which
//! refuses an original destination that is one of hopgate's own listeners (508). With `spoof_source` (tproxy) it
//! is made from the client's own address.
//! Does not: decrypt TLS, follow a Host elsewhere than the original destination, or intercept UDP (HTTP/3).

use std::net::SocketAddr;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response, header};
use hyper::body::Incoming;
use tokio::net::TcpStream;

use super::Ctx;
use super::relay::{self, Forward};
use crate::config::{self, DEFAULT_UPSTREAM_MAX_STREAMS, InterceptMode, UpstreamHttp};
use crate::error::{Error, Kind};
use crate::http::Body;
use crate::http::upgrade::Allowed;
use crate::upstream::{Dialer, gateway_client};

/// An intercepting listener's room.
pub struct Intercept {
    mode: InterceptMode,
    host_verify: bool,
    spoof_source: bool,
    /// The proxy's: target policy and loop check.
    dialer: Dialer,
    upgrades: Allowed,
    pool_idle: Duration,
    /// How long resolving a Host for host_verify may take.
    resolve_timeout: Duration,
}

/// One intercepted connection: where its client was going, and the relay that takes its requests there (with
/// its own upstream connection, kept alive between them).
pub struct Intercepted {
    pub original: SocketAddr,
    relay: Forward,
}

impl Intercept {
    /// `dialer`: the proxy's; `upgrades`: the listener's.
    pub fn new(cfg: &config::Intercept, dialer: Dialer, upgrades: Allowed, timeouts: &config::Timeouts) -> Intercept {
        Intercept {
            mode: cfg.mode,
            host_verify: cfg.host_verify,
            spoof_source: cfg.spoof_source,
            dialer,
            upgrades,
            pool_idle: timeouts.pool_idle,
            resolve_timeout: timeouts.connect,
        }
    }

    pub fn mode(&self) -> InterceptMode {
        self.mode
    }

    /// The dialer of `client`'s connections: from its own address with `spoof_source`.
    fn dialer_for(&self, client: SocketAddr) -> Dialer {
        match self.spoof_source {
            true => self.dialer.clone().with_source(client.ip()),
            false => self.dialer.clone(),
        }
    }

    /// What a plain-HTTP intercepted connection of `client` to `original` needs for its requests.
    pub fn connection(&self, original: SocketAddr, client: SocketAddr) -> Result<Intercepted, Error> {
        let authority = Authority::try_from(original.to_string())
            .map_err(|_| Error::local(Kind::Internal, format!("{original} is no authority")))?;
        let client = gateway_client(
            self.dialer_for(client),
            None,
            &Scheme::HTTP,
            &authority,
            None,
            self.pool_idle,
            1,
            (UpstreamHttp::Http1, DEFAULT_UPSTREAM_MAX_STREAMS),
        );
        Ok(Intercepted { original, relay: Forward::fixed(client, self.upgrades.clone()) })
    }

    /// Connects to an intercepted TLS connection's original destination (policy, loop check, connect timeout).
    pub async fn dial(&self, original: SocketAddr, client: SocketAddr) -> Result<(TcpStream, SocketAddr), Error> {
        self.dialer_for(client).dial(&original.ip().to_string(), original.port()).await
    }
}

/// An intercepted plain-HTTP request: its Host checked against the original destination, then relayed there.
pub async fn serve(
    req: Request<Incoming>,
    ctx: &Ctx<'_>,
    room: &Intercept,
    conn: &Intercepted,
) -> Result<Response<Body>, Error> {
    if room.host_verify {
        verify_host(&req, conn.original, room.resolve_timeout).await?;
    }
    relay::intercepted(req, ctx, &conn.relay, conn.original).await
}

/// Squid's `host_verify_strict`: the Host (route::settle_host made an absolute-form target's authority the Host)
/// must name the original destination's port (80 when it names none) and resolve to its address. A request
/// without Host (HTTP/1.0) names nothing to check.
async fn verify_host<B>(req: &Request<B>, original: SocketAddr, limit: Duration) -> Result<(), Error> {
    let Some(field) = req.headers().get(header::HOST).filter(|h| !h.is_empty()) else { return Ok(()) };
    let Some((host, port)) = crate::http::parse_host(field.as_bytes()) else {
        return Err(Error::bad_request("invalid Host field"));
    };
    let shown = String::from_utf8_lossy(field.as_bytes()).into_owned();
    let forged = |why: String| {
        Error::client(Kind::HostForgery, format!("Host {shown} {why}, where the client connected (host_verify)"))
    };
    let port = port.unwrap_or(80);
    if port != original.port() {
        return Err(forged(format!("names port {port}, not {original}")));
    }
    let want = original.ip().to_canonical();
    let resolved: Vec<std::net::IpAddr> = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match tokio::time::timeout(limit, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
            Ok(Err(e)) => return Err(forged(format!("does not resolve ({e}), so it can't be {}", original.ip()))),
            Err(_) => {
                return Err(forged(format!("did not resolve within {limit:?}, so it can't be {}", original.ip())));
            }
        },
    };
    if resolved.iter().any(|ip| ip.to_canonical() == want) {
        return Ok(());
    }
    let list: Vec<String> = resolved.iter().take(3).map(ToString::to_string).collect();
    let more = if resolved.len() > 3 { ", ..." } else { "" };
    Err(forged(format!("resolves to {}{more}, not to {}", list.join(", "), original.ip())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &str) -> Request<()> {
        Request::builder().uri("/").header(header::HOST, host).body(()).unwrap()
    }

    #[tokio::test]
    async fn a_host_must_name_the_original_destination() {
        let original: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let t = Duration::from_secs(5);
        for ok in ["127.0.0.1", "127.0.0.1:80", "localhost"] {
            assert!(verify_host(&req(ok), original, t).await.is_ok(), "{ok}");
        }
        let e = verify_host(&req("127.0.0.2"), original, t).await.unwrap_err();
        assert_eq!(e.status(), 409);
        assert_eq!(
            e.detail(),
            "Host 127.0.0.2 resolves to 127.0.0.2, not to 127.0.0.1, where the client connected (host_verify)"
        );
        let e = verify_host(&req("127.0.0.1:8080"), original, t).await.unwrap_err();
        assert_eq!(
            e.detail(),
            "Host 127.0.0.1:8080 names port 8080, not 127.0.0.1:80, where the client connected (host_verify)"
        );
        let none = Request::builder().uri("/").body(()).unwrap();
        assert!(verify_host(&none, original, t).await.is_ok(), "HTTP/1.0 without Host");
    }
}
