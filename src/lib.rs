//! hopgate: one binary for every HTTP integration point of "HTTP: The Definitive Guide", chapter 8:
//! relays, tunnels, protocol gateways and resource gateways.
pub mod backend;
