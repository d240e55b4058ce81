//! Backends: one room per integration point. Only the resource gateways live here so far.
pub mod cgi;
pub mod fastcgi;
pub mod meta;
pub mod scgi;
