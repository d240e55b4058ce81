//! Fuzz targets: one entry function per parser hopgate owns, each taking arbitrary bytes and asserting what the
//! parser promises (round trips, bounds, agreement between two readers of the same bytes, independence from how
//! input is cut into reads), not only that it does not panic. docs/fuzzing.md says how to run them.
//!
//! Two drivers call [`TARGETS`]: the cargo-fuzz (libFuzzer) targets in fuzz/fuzz_targets/ for deep runs on
//! nightly, and tests/fuzz.rs, which replays fuzz/corpus/NAME/ and then runs a seeded mutation loop
//! ([`mutate::Mutator`]) on every CI run. A failing assertion is a panic: libFuzzer saves the input, tests/fuzz.rs
//! prints it and writes it to target/fuzz-failures/.
//!
//! This module sits above everything it tests (like `cli`); nothing imports it.

mod app;
mod config;
mod ftp;
mod h1;
mod http;
mod json;
pub mod mutate;
mod proxy;
mod tls;

use std::borrow::Cow;

use ::http::{HeaderMap, HeaderName, HeaderValue};

pub use app::{cgi_head, fastcgi_record, scgi_netstring};
pub use config::{config_load, config_values};
pub use ftp::{ftp_listing, ftp_reply, range, url_paths};
pub use h1::{h1_chunked, h1_request_head, h1_response_head, h1_round_trip};
pub use http::{host, htpasswd, http_fields};
pub use proxy::proxy_protocol;
pub use tls::client_hello;

/// One fuzz target: its name (the cargo-fuzz target, the corpus and dictionary names) and its entry function.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    /// Longest input the stable runner makes for it.
    pub max_len: usize,
}

/// Every target. A new parser gets an entry here, a file in fuzz/fuzz_targets/, a corpus in fuzz/corpus/NAME/
/// and a line in docs/fuzzing.md.
pub const TARGETS: &[Target] = &[
    Target { name: "ftp_reply", run: ftp_reply, max_len: 4096 },
    Target { name: "ftp_listing", run: ftp_listing, max_len: 4096 },
    Target { name: "cgi_head", run: cgi_head, max_len: 2048 },
    Target { name: "fastcgi_record", run: fastcgi_record, max_len: 2048 },
    Target { name: "scgi_netstring", run: scgi_netstring, max_len: 2048 },
    Target { name: "htpasswd", run: htpasswd, max_len: 1024 },
    Target { name: "range", run: range, max_len: 512 },
    Target { name: "http_fields", run: http_fields, max_len: 1024 },
    Target { name: "host", run: host, max_len: 512 },
    Target { name: "config_load", run: config_load, max_len: 4096 },
    Target { name: "config_values", run: config_values, max_len: 1024 },
    Target { name: "url_paths", run: url_paths, max_len: 1024 },
    Target { name: "proxy_protocol", run: proxy_protocol, max_len: 1024 },
    Target { name: "client_hello", run: client_hello, max_len: 4096 },
    Target { name: "h1_request_head", run: h1_request_head, max_len: 4096 },
    Target { name: "h1_chunked", run: h1_chunked, max_len: 4096 },
    Target { name: "h1_response_head", run: h1_response_head, max_len: 4096 },
    Target { name: "h1_round_trip", run: h1_round_trip, max_len: 1024 },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The input's lines (split at LF, the LF dropped, CR kept).
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
}

/// The input as text, invalid UTF-8 replaced.
fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// `name: value` lines as header fields (lines that are not a valid field are skipped), in order.
fn header_map(data: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in lines(data) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(line[colon + 1..].trim_ascii()))
        else {
            continue;
        };
        h.append(name, value);
    }
    h
}
