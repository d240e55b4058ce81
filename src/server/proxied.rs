//! A listener behind a layer-4 balancer (`proxy_protocol`, `proxy_protocol_from`; docs/scale-out.md): every
//! connection starts with a PROXY protocol header (`crate::proxy_protocol`) naming the client, read before any
//! byte is answered and before TLS. The client it names is then the connection's client everywhere: the access
//! log, Forwarded/X-Forwarded-For, CGI's REMOTE_ADDR, the per-address authentication throttle, a header hopgate
//! sends on (`send_proxy_protocol`). A connection from an address outside `proxy_protocol_from`, or whose first
//! bytes are not a valid header of the listener's version, is closed unanswered; so is one whose header is not
//! complete within `header_read_secs`.

use std::fmt;
use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::listener::ListenerState;
use crate::config::ProxyProtocol;
use crate::metrics::ProxyHeaderMetrics;
use crate::proxy_protocol::{self, Header, ReadError};

/// Who is at the other end of a client connection: the client (as a PROXY header names it, behind a balancer)
/// and the address it connected to (the listener's, or the destination the header names). Displayed as the
/// client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub client: SocketAddr,
    pub local: SocketAddr,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.client.fmt(f)
    }
}

/// A listener's PROXY protocol settings and counters.
pub struct Proxied {
    pub config: ProxyProtocol,
    pub metrics: ProxyHeaderMetrics,
}

/// The peer of a new connection: on a listener with `proxy_protocol`, as its header says (None: the connection
/// is to be closed; why is logged); otherwise the connection's own addresses.
pub async fn peer(stream: &mut TcpStream, from: SocketAddr, state: &ListenerState) -> Option<Peer> {
    let Some(proxied) = &state.proxied else { return Some(Peer { client: from, local: local_addr(stream, state) }) };
    let (version, m) = (proxied.config.version, &proxied.metrics);
    if !proxied.config.trusts(from.ip()) {
        tracing::info!(client = %from, "connection from {from} closed: {} is not in proxy_protocol_from", from.ip());
        m.untrusted.inc();
        return None;
    }
    let limit = state.hop.timeouts.header_read;
    match tokio::time::timeout(limit, proxy_protocol::read(stream, version)).await {
        Ok(Ok(Header::Proxied(addrs))) => {
            m.proxied.inc();
            // An IPv4 client in a v2 IPv6 block is an IPv4 client.
            let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
            let peer = Peer { client: canonical(addrs.src), local: canonical(addrs.dst) };
            tracing::trace!(client = %peer, "PROXY {version} header from {from}");
            Some(peer)
        }
        Ok(Ok(Header::Local)) => {
            m.local.inc();
            Some(Peer { client: from, local: local_addr(stream, state) })
        }
        Ok(Err(ReadError::Invalid(why))) => {
            tracing::info!(client = %from, "invalid PROXY header ({version}) from {from}: {why}; connection closed");
            m.invalid.inc();
            None
        }
        Ok(Err(e @ ReadError::Closed(_))) => {
            // A balancer's TCP health check connects and closes: not worth more than a debug line.
            tracing::debug!(client = %from, "no PROXY header from {from}: {e}");
            m.closed.inc();
            None
        }
        Err(_) => {
            tracing::info!(client = %from, "PROXY header from {from} not complete within {limit:?}: connection closed");
            m.timeout.inc();
            None
        }
    }
}

/// The address a connection reached: the listener's, or, on a listener bound to every address, the socket's.
fn local_addr(stream: &TcpStream, state: &ListenerState) -> SocketAddr {
    let bound = state.hop.local;
    if bound.ip().is_unspecified() { stream.local_addr().unwrap_or(bound) } else { bound }
}
