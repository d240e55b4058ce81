//! Intercepting listeners (issue 18, docs/intercept.md), per accepted connection: the original destination
//! (`SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST` after a NAT REDIRECT; the connection's own local address after
//! TPROXY), then what the client speaks first:
//! - a TLS handshake record: the ClientHello is read (reassembled over records and segments, up to
//!   `clienthello::MAX_HELLO_BYTES`), judged by its SNI under the proxy's policy, and the connection is spliced to
//!   the original destination, the bytes read first; nothing is decrypted, so the client verifies the origin's
//!   certificate itself. A refusal is a fatal TLS alert (access_denied for the policy, a loop or the target
//!   policy; decode_error for a malformed or oversized ClientHello; internal_error when the destination can't be
//!   reached), a log line naming the SNI, and an access-log line `CONNECT NAME:PORT` (the route `intercept`);
//! - anything else: HTTP/1.1, served like any listener's connection, every request going to the original
//!   destination (backend::intercept: host_verify, then the relay).
//!
//! A spliced connection holds its place among `max_connections` until it ends (`tunnel_idle_secs` of silence end
//! it, as they end a CONNECT tunnel).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::listener::ListenerState;
use super::log::Record;
use crate::backend::intercept::Intercept;
use crate::clienthello::{self, Alert, ClientHello, Read};
use crate::config::InterceptMode;
use crate::error::{Error, Kind, Side};
use crate::limit::Throttled;
use crate::policy::Target;
use crate::route::ProxyRooms;
use crate::tunnel;

/// How long a refused client has to read its alert and close, before the connection is dropped.
const ALERT_LINGER: Duration = Duration::from_secs(1);

/// Whether the listener intercepts (its connections go to their original destinations).
pub fn intercepting(state: &ListenerState) -> bool {
    rooms(state).is_some()
}

fn rooms(state: &ListenerState) -> Option<(&ProxyRooms, &Intercept)> {
    let proxy = state.table.proxy.as_ref()?;
    Some((proxy, proxy.intercept.as_ref()?))
}

/// Where the client was going before the packet filter sent it here.
fn original_destination(stream: &TcpStream, mode: InterceptMode) -> io::Result<SocketAddr> {
    let local = stream.local_addr()?;
    if mode == InterceptMode::Tproxy {
        // TPROXY does not rewrite the destination: the socket is bound to it (IP_TRANSPARENT).
        return Ok(local);
    }
    let socket = socket2::SockRef::from(stream);
    let original = match local {
        SocketAddr::V4(_) => socket.original_dst_v4()?,
        SocketAddr::V6(_) => socket.original_dst_v6()?,
    };
    original.as_socket().ok_or_else(|| io::Error::other("the original destination is no IP address"))
}

/// One connection on an intercepting listener.
pub async fn serve(stream: TcpStream, conn: super::Accepted) {
    // The connection keeps the state it was accepted with for what it decides once (its destination, a splice);
    // its HTTP requests load the current state, as every listener's do.
    let state = conn.slot.load_full();
    let peer_addr = conn.peer.client;
    let Some((_, room)) = rooms(&state) else { return };
    let original = match original_destination(&stream, room.mode()) {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(client = %peer_addr, "no original destination ({e}): was the connection redirected here by the packet filter? closed");
            return;
        }
    };
    // Both HTTP and TLS clients speak first; one that says nothing is idle.
    let mut first = [0u8; 1];
    match tokio::time::timeout(state.hop.timeouts.idle, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    if first[0] == clienthello::HANDSHAKE {
        // Counted open (connections_open) until the splice ends: `conn` lives to the end of this call.
        splice(stream, peer_addr, original, &state).await;
        drop(conn);
        return;
    }
    let intercepted = match room.connection(original, peer_addr) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::warn!(client = %peer_addr, "intercepted connection to {original}: {}", e.chain());
            return;
        }
    };
    drop(state);
    super::serve_http1(stream, conn, Some(intercepted), false).await;
}

/// Reads from `stream` into `buf` until the ClientHello is complete or refused.
async fn read_hello(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Read> {
    let mut chunk = [0u8; 4096];
    loop {
        match clienthello::read(buf) {
            Read::Incomplete => {}
            done => return Ok(done),
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// An intercepted TLS connection: ClientHello, policy, dial, splice.
async fn splice(mut stream: TcpStream, peer: SocketAddr, original: SocketAddr, state: &Arc<ListenerState>) {
    let Some((proxy, room)) = rooms(state) else { return };
    let limit = state.hop.timeouts.tls_handshake;
    let mut buf = Vec::with_capacity(2048);
    let hello: ClientHello = match tokio::time::timeout(limit, read_hello(&mut stream, &mut buf)).await {
        Err(_) => {
            tracing::info!(client = %peer, "intercepted TLS: no complete ClientHello within {limit:?}: connection closed");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(client = %peer, "intercepted TLS: the client went away in its ClientHello: {e}");
            return;
        }
        Ok(Ok(Read::Hello(h))) => h,
        Ok(Ok(Read::Refused(why))) => {
            let e = Error::client(Kind::BadRequest, why.to_string());
            let r = Refused { sni: None, version: 0x0303, alert: Alert::DecodeError, e };
            return refuse(stream, peer, original, r, state).await;
        }
        Ok(Ok(Read::Incomplete)) => return,
    };
    let sni = hello.sni.as_deref();
    let target = match sni {
        Some(host) => Target::Host { host, port: original.port(), connect: false },
        None => Target::Unnamed,
    };
    let grant = match proxy.policy.admit(target, None, peer.ip()) {
        Ok(g) => g,
        Err(e) => {
            let r = Refused { sni, version: hello.record_version, alert: Alert::AccessDenied, e };
            return refuse(stream, peer, original, r, state).await;
        }
    };
    let (upstream, reached) = match room.dial(original, peer).await {
        Ok(up) => up,
        Err(e) => {
            let alert = match e.kind() {
                Kind::Loop | Kind::TargetForbidden => Alert::AccessDenied,
                _ => Alert::InternalError,
            };
            let r = Refused { sni, version: hello.record_version, alert, e };
            return refuse(stream, peer, original, r, state).await;
        }
    };
    let throttle = state.throttle();
    if let Some(t) = &throttle {
        t.set(grant.bandwidth);
    }
    let shown = shown_target(sni, original);
    tracing::debug!(client = %peer, target = %shown, ech = hello.ech, "intercepted TLS spliced to {reached}");
    let (report, watch) = tunnel::report(None);
    if let Some(mut record) = record(peer, &shown, proxy, state) {
        record.upstream = Some(reached);
        state.log.connection(record, Some(watch), &state.metrics);
    }
    // The ClientHello goes first, then whatever else the client sends; the bytes up count it.
    let client = Prefixed { prefix: buf, at: 0, inner: Throttled::new(stream, throttle) };
    let outcome = report.pump(client, upstream, state.hop.timeouts.tunnel_idle).await;
    tracing::debug!(client = %peer, target = %shown, up = outcome.a_to_b, down = outcome.b_to_a, "intercepted TLS ended: {:?}", outcome.ended);
    report.outcome(&outcome);
}

/// Why an intercepted TLS connection is refused, and how the client is told.
struct Refused<'a> {
    sni: Option<&'a str>,
    /// The record version of the client's hello (the alert's).
    version: u16,
    alert: Alert,
    e: Error,
}

/// A fatal alert, then the connection closes; a log line names the SNI and the reason, and the access log has
/// the refusal's status.
async fn refuse(mut stream: TcpStream, peer: SocketAddr, original: SocketAddr, r: Refused<'_>, state: &ListenerState) {
    let shown = shown_target(r.sni, original);
    let (status, reason, sni) = (r.e.status(), r.e.kind().reason(), r.sni.unwrap_or("-"));
    match r.e.side() {
        Side::Client => tracing::info!(client = %peer, target = %shown, %sni, %reason, "{status}: {}", r.e.chain()),
        _ => tracing::warn!(client = %peer, target = %shown, %sni, %reason, "{status}: {}", r.e.chain()),
    }
    if let Some((proxy, _)) = rooms(state)
        && let Some(mut record) = record(peer, &shown, proxy, state)
    {
        record.status = status;
        state.log.connection(record, None, &state.metrics);
    }
    let linger = async {
        stream.write_all(&clienthello::alert(r.version, r.alert)).await?;
        stream.shutdown().await?;
        // Read what the client still sends until it closes, so that closing does not reset the connection
        // (a reset may make the client lose the alert); bounded in time and bytes.
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(ALERT_LINGER, linger).await;
}

/// What the access log and the log lines call an intercepted TLS connection: `SNI:PORT`, or the original
/// destination without one.
fn shown_target(sni: Option<&str>, original: SocketAddr) -> String {
    match sni {
        Some(name) => format!("{name}:{}", original.port()),
        None => original.to_string(),
    }
}

/// The access-log record of an intercepted TLS connection: `CONNECT TARGET`, as a proxy logs a tunnel.
fn record(peer: SocketAddr, shown: &str, proxy: &ProxyRooms, state: &ListenerState) -> Option<Record> {
    let uri: Uri = shown.parse().ok()?;
    let req = Request::builder().method(Method::CONNECT).uri(uri).body(()).ok()?;
    let mut record = Record::new(peer, &req, &state.log);
    record.route = Some(proxy.name.clone());
    record.metrics = Some(proxy.metrics.clone());
    Some(record)
}

/// A stream whose first bytes read are `prefix` (the ClientHello already read from it).
struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.at);
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
