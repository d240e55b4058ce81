//! CONNECT tunnels (RFC 9110 §9.3.6, "SSL tunneling"): `CONNECT host:port` becomes an opaque two-way byte
//! stream. A CONNECT whose Via names this listener is a loop (508). The ports CONNECT may reach and the names it
//! may reach are the proxy's policy (`crate::policy`, judged before the room is entered, with [`target`] as the
//! one reader of the authority). The target is dialled first (target policy, loop check; through a parent: a
//! CONNECT carrying Via) and `200 Connection Established` is answered only once it is connected; otherwise
//! 400/403/502/504/508. Bytes the client sent before reading the 200
//! stay in hyper's upgrade buffer and reach the target. Each direction half-closes on its own
//! (tunnel::pump); a tunnel idle for `tunnel_idle_secs` is closed; at most `max_tunnels` are open at once (503).
//! The request's access-log line is written when the tunnel ends, with its bytes each way (tunnel::report).
//! Over HTTP/2 each CONNECT stream is a tunnel under the same rules (RFC 9113 §8.5); a tunnel that fails (the
//! target reset its connection) resets the stream with CONNECT_ERROR, and a stream the client reset resets the
//! target's TCP connection (SO_LINGER 0).
//! Does not: look inside the stream, or retry.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;

use super::Ctx;
use crate::config;
use crate::error::{Error, Kind};
use crate::http::{Body, via_names};
use crate::tunnel::{self, Ended};
use crate::upstream::{Dialer, ParentProxy, display_target};

/// The forward proxy's CONNECT room: how targets are reached, and how many tunnels may be open.
pub struct Tunnels {
    /// Client-chosen targets: the proxy's target policy applies.
    dialer: Dialer,
    parent: Option<Arc<ParentProxy>>,
    /// One permit per open tunnel.
    permits: Arc<Semaphore>,
    max: usize,
}

impl Tunnels {
    pub fn new(cfg: &config::Proxy, dialer: Dialer, parent: Option<Arc<ParentProxy>>) -> Tunnels {
        let max = cfg.max_tunnels;
        Tunnels { dialer, parent, permits: Arc::new(Semaphore::new(max)), max }
    }
}

/// The far end of a tunnel.
enum Far {
    Direct(tokio::net::TcpStream),
    Parent(TokioIo<hyper::upgrade::Upgraded>),
}

pub async fn serve(mut req: Request<Incoming>, ctx: &Ctx<'_>, tunnels: &Tunnels) -> Result<Response<Body>, Error> {
    // A CONNECT that already passed through this listener came round a chain of parents: refused before
    // anything is dialled, or the chain would open tunnels until memory runs out (the relay's check).
    let name = &ctx.hop.via_name;
    if via_names(req.headers(), name) {
        return Err(Error::client(Kind::Loop, format!("CONNECT already passed through {name} (Via): loop")));
    }
    let (host, port) = target(req.uri())?;
    let target = display_target(&host, port);
    let permit = tunnels
        .permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| Error::local(Kind::Overloaded, format!("too many tunnels open (limit {})", tunnels.max)))?;
    let (far, addr): (Far, SocketAddr) = match &tunnels.parent {
        None => {
            let (tcp, addr) = tunnels.dialer.dial(&host, port).await?;
            (Far::Direct(tcp), addr)
        }
        Some(parent) => {
            // The parent resolves names; an address literal can still be checked here.
            if let Ok(ip) = host.parse() {
                tunnels.dialer.check(SocketAddr::new(ip, port), &target)?;
            }
            // The client's Via goes on with this hop appended: the loop check above, one chain further.
            let (up, addr) = parent.tunnel(&target, req.headers(), req.version()).await?;
            (Far::Parent(TokioIo::new(up)), addr)
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let idle = ctx.hop.timeouts.tunnel_idle;
    let client = ctx.client;
    let (report, watch) = tunnel::report(None);
    ctx.tasks.spawn(async move {
        let _permit = permit;
        let up = match on_upgrade.await {
            Ok(up) => up,
            Err(e) => {
                tracing::debug!(%client, %target, "tunnel not established: {e}");
                report.not_established();
                return;
            }
        };
        // Two plain TCP sockets: spliced, no byte through user space (tunnel::splice). A client connection the
        // server hands over in any other shape (TLS, an HTTP/2 stream, one held to a byte rate) is pumped.
        let up = match far {
            Far::Direct(mut tcp) => match tunnel::tcp_of(up) {
                Ok((mut near, early, held)) => {
                    let outcome = report.splice(&mut near, early, &mut tcp, bytes::Bytes::new(), idle).await;
                    if let Some(held) = held {
                        held.count(outcome.a_to_b, outcome.b_to_a);
                    }
                    if let Ended::Failed(_) = outcome.ended {
                        let _ = socket2::SockRef::from(&tcp).set_linger(Some(std::time::Duration::ZERO));
                    }
                    let (up, down) = (outcome.a_to_b, outcome.b_to_a);
                    tracing::debug!(%client, %target, up, down, "tunnel ended (spliced): {:?}", outcome.ended);
                    report.outcome(&outcome);
                    return;
                }
                Err(up) => (up, Far::Direct(tcp)),
            },
            far => (up, far),
        };
        let (mut near, far) = (TokioIo::new(up.0), up.1);
        let outcome = match far {
            Far::Direct(mut tcp) => {
                let outcome = report.pump(&mut near, &mut tcp, idle).await;
                if let Ended::Failed(_) = outcome.ended {
                    // RFC 9113 §8.5: an error on the client's side (its stream reset) resets the target's TCP.
                    let _ = socket2::SockRef::from(&tcp).set_linger(Some(std::time::Duration::ZERO));
                }
                outcome
            }
            Far::Parent(mut up) => report.pump(&mut near, &mut up, idle).await,
        };
        if let Ended::Failed(_) = outcome.ended {
            // RFC 9113 §8.5: a reset (or any error) of the target's connection is RST_STREAM(CONNECT_ERROR) on an
            // HTTP/2 client's stream, never an end that looks like the target closed. (HTTP/1.1: nothing to do.)
            near.inner_mut().reset_h2_stream(tunnel::H2_CONNECT_ERROR);
        }
        let (up, down) = (outcome.a_to_b, outcome.b_to_a);
        tracing::debug!(%client, %target, up, down, "tunnel ended: {:?}", outcome.ended);
        report.outcome(&outcome);
    });
    let mut resp = Response::new(Body::empty());
    resp.extensions_mut().insert(ReasonPhrase::from_static(b"Connection Established"));
    ctx.answered_from(addr);
    resp.extensions_mut().insert(watch);
    Ok(resp)
}

/// `host:port` from an authority-form request target (the host lowercase, without IPv6 brackets): the one reader
/// of a CONNECT's target, for the policy and the room.
pub fn target(uri: &Uri) -> Result<(String, u16), Error> {
    let bad = || Error::bad_request(format!("CONNECT needs host:port, got {uri:?}"));
    if uri.scheme().is_some() || uri.path_and_query().is_some_and(|p| !p.as_str().is_empty() && p.as_str() != "/") {
        return Err(bad());
    }
    let authority = uri.authority().ok_or_else(bad)?;
    if authority.as_str().contains('@') {
        return Err(bad());
    }
    let port = config::authority_port(authority.as_str())
        .map_err(|e| Error::bad_request(format!("CONNECT {uri}: {e}")))?
        .ok_or_else(bad)?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_form_targets() {
        assert_eq!(target(&"example.com:443".parse().unwrap()).unwrap(), ("example.com".into(), 443));
        assert_eq!(target(&"[::1]:22".parse().unwrap()).unwrap(), ("::1".into(), 22));
        assert!(target(&"example.com".parse().unwrap()).is_err());
        assert!(target(&"http://example.com:443/".parse().unwrap()).is_err());
        assert!(target(&"example.com:0".parse().unwrap()).is_err());
    }
}
