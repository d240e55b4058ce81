//! One room per integration point. Each room owns its run-time state (`relay::Forward` and `relay::Reverse`,
//! `connect::Tunnels`, `ftp::Ftp`, `app::Gateway`, `files::Files`), built from its part of the config by its own
//! constructor. A request reaches a room with a small [`Ctx`]: who connected, the facts of the hop it arrived on
//! ([`Hop`]) and the task tracker. A room returns a response or an [`Error`](crate::error::Error); it never
//! renders error pages, binds sockets, reads the config file or looks at another room.

pub mod app;
pub mod cgi;
pub mod connect;
pub mod fastcgi;
pub mod files;
pub mod ftp;
pub mod intercept;
pub mod meta;
pub mod relay;
pub mod scgi;

use std::net::SocketAddr;

use tokio_util::task::TaskTracker;

use crate::config::{Prefix, Timeouts};
use crate::error::{Error, Kind};
use crate::http::ViaName;

/// What every request of one listener shares about the hop it arrived on.
#[derive(Debug, Clone)]
pub struct Hop {
    /// The address the listener is bound to (port 0 resolved).
    pub local: SocketAddr,
    /// The listener terminates TLS (`https://`).
    pub tls: bool,
    /// The `received-by` this listener writes into Via and recognises as a loop.
    pub via_name: ViaName,
    pub timeouts: Timeouts,
}

impl Hop {
    /// The address clients reach this listener on, for hints in error pages.
    pub fn public_addr(&self) -> String {
        format!("{}://{}", self.scheme(), self.local)
    }

    /// `https` on a TLS listener, else `http`: the scheme clients used.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// What a room knows about the request's surroundings.
pub struct Ctx<'a> {
    /// Whoever connected to hopgate: the connection's peer, or, on a listener behind a balancer, the client its
    /// PROXY header names.
    pub client: SocketAddr,
    /// The address the client connected to: the listener's, or the destination a PROXY header names.
    pub local: SocketAddr,
    pub hop: &'a Hop,
    /// Tunnels and upgraded connections are spawned here so that the drain waits for them.
    pub tasks: &'a TaskTracker,
    /// Where the room reached the server that answered (the access log's upstream): set by the room, once.
    pub upstream: &'a std::sync::OnceLock<SocketAddr>,
}

impl Ctx<'_> {
    /// Notes the address of the upstream that answered this request (the first one noted stays).
    pub fn answered_from(&self, addr: SocketAddr) {
        let _ = self.upstream.set(addr);
    }
}

/// Why an application (FastCGI, SCGI) gave no response: with the request body back when none of the request
/// was written (the connection could not be opened, or died before the first byte), so that an upstream group
/// can send it to another member as it is.
pub enum NotAnswered<B> {
    Unsent(Error, B),
    Sent(Error),
}

impl<B> NotAnswered<B> {
    pub fn error(self) -> Error {
        match self {
            NotAnswered::Unsent(e, _) | NotAnswered::Sent(e) => e,
        }
    }
}

/// A request in a room whose route prefix its path is not under. `route::Table::pick` hands a room only requests
/// under its route's prefix, so this is a bug: a 500 naming both, rather than the path served as if it were under
/// the prefix.
pub(crate) fn outside(prefix: &Prefix, path: &str) -> Error {
    Error::local(Kind::Internal, format!("{path} reached the route for {prefix}, which it is not under"))
}
