//! hopgate: one binary for every HTTP integration point of "HTTP: The Definitive Guide", chapter 8:
//! relays, tunnels, protocol gateways and resource gateways. docs/ARCHITECTURE.md has the map.

pub mod arrival;
pub mod backend;
pub mod cli;
pub mod clienthello;
pub mod config;
pub mod date;
pub mod error;
pub mod fuzz;
pub mod h1;
pub mod heap;
pub mod http;
pub mod idle;
pub mod limit;
pub mod metrics;
pub mod policy;
pub mod proxy_protocol;
pub mod route;
pub mod server;
pub mod tls;
pub mod tunnel;
pub mod tunnel_client;
pub mod upstream;
