//! Connections to a FastCGI application over TCP or a unix socket, and the small pool of kept
//! ones (FCGI_KEEP_CONN).
//!
//! Each kept connection holds one php-fpm worker while it sits idle, so keep `max_idle` below
//! the application's worker count (`pm.max_children`): otherwise new connections can wait in its
//! backlog behind idle ones until the timeout.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

use crate::backend::meta::{GatewayError, GatewayErrorKind};
use crate::config::Authority;
use crate::error::Error;
use crate::upstream::Dialer;

/// Where the FastCGI application listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FastCgiAddr {
    /// `fastcgi://HOST:PORT`.
    Tcp(Authority),
    /// A unix socket path (`fastcgi+unix:PATH`).
    Unix(PathBuf),
}

impl std::fmt::Display for FastCgiAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FastCgiAddr::Tcp(a) => write!(f, "fastcgi://{a}"),
            FastCgiAddr::Unix(p) => write!(f, "fastcgi+unix:{}", p.display()),
        }
    }
}

/// One connection to the application.
#[derive(Debug)]
pub(crate) enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn fd(&self) -> RawFd {
        match self {
            Conn::Tcp(s) => s.as_raw_fd(),
            Conn::Unix(s) => s.as_raw_fd(),
        }
    }

    /// A kept connection is alive when reading would block: no EOF, no error, and no stray bytes
    /// (the application must not talk between requests).
    fn is_alive(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: recv(2) writes at most 1 byte into `byte`, which outlives the call; MSG_PEEK
        // leaves the socket's data in place and MSG_DONTWAIT never blocks the runtime.
        let n = unsafe { libc::recv(self.fd(), (&raw mut byte).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Dials the application: TCP through `dialer` (its errors: DNS, refused, loop, its connect timeout), a unix
/// socket here within `timeout` (refused: ConnectRefused, a missing socket: ConnectFailed, no answer in time:
/// ConnectTimeout).
pub(crate) async fn dial(addr: &FastCgiAddr, dialer: &Dialer, timeout: Duration) -> Result<Conn, Error> {
    let path = match addr {
        FastCgiAddr::Tcp(a) => return dialer.dial(&a.host, a.port).await.map(|(s, _)| Conn::Tcp(s)),
        FastCgiAddr::Unix(path) => path,
    };
    match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
        Ok(Ok(s)) => {
            if let Some(route) = dialer.route() {
                route.opened.inc();
            }
            Ok(Conn::Unix(s))
        }
        Ok(Err(e)) => Err(GatewayError::connect(format!("connecting to {addr}"), e).into()),
        Err(_) => Err(GatewayError::new(GatewayErrorKind::ConnectTimeout, format!("connecting to {addr}")).into()),
    }
}

/// Idle kept connections, newest last.
#[derive(Debug)]
pub(crate) struct Pool {
    idle: Mutex<Vec<(Conn, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool { idle: Mutex::new(Vec::new()), max_idle, idle_timeout }
    }

    pub(crate) fn keeps(&self) -> bool {
        self.max_idle > 0
    }

    /// The newest idle connection that still looks alive; stale and dead ones are dropped.
    pub(crate) fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < self.idle_timeout && conn.is_alive() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection whose request ended cleanly, if there is room.
    pub(crate) fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|(_, since)| since.elapsed() < self.idle_timeout);
        if idle.len() < self.max_idle {
            idle.push((conn, Instant::now()));
        }
    }
}
