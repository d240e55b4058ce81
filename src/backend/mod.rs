//! One room per integration point. A backend sees the request, a [`Ctx`] and its own state, and returns a
//! response or an [`Error`](crate::error::Error); it never renders error pages, binds sockets or reads the
//! config file.

pub mod app;
pub mod cgi;
pub mod connect;
pub mod fastcgi;
pub mod ftp;
pub mod meta;
pub mod relay;
pub mod scgi;

use std::net::SocketAddr;

use tokio_util::task::TaskTracker;

use crate::server::listener::ListenerState;

/// What a backend knows about the request's surroundings.
pub struct Ctx<'a> {
    /// Whoever connected to hopgate.
    pub client: SocketAddr,
    pub listener: &'a ListenerState,
    /// Tunnels and upgraded connections are spawned here so that the drain waits for them.
    pub tasks: &'a TaskTracker,
}
