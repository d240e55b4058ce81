//! What the three resource gateways share: the CGI/1.1 meta-variables (RFC 3875 §4.1), the CGI
//! response head (§6), script resolution, the streamed body type and the error type.
//!
//! Does not: turn a hyper Request into calls of CGI/FastCGI/SCGI or their results into a hyper
//! Response (the HTTP side does, on top of `GatewayResponse`), or follow local redirects.

mod body;
mod error;
mod head;
mod resolve;

use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;

use http::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderName, Version};

pub use body::GatewayBody;
pub(crate) use body::{FeedError, ReadEnd, TaskGuard, UpstreamReader, feed_body};
pub use error::{GatewayError, GatewayErrorKind};
pub use head::{CgiHead, HeadKind, HeadParser, MAX_HEAD_BYTES, MAX_LOCAL_REDIRECTS, parse_head};
pub use resolve::{
    CgiScript, FastCgiLayout, ScriptPath, decode_segments, fastcgi_script, is_script_name, plain_segments, resolve_app,
    resolve_cgi, resolve_fastcgi, stat_under,
};

/// A parsed CGI response head and the body that follows it, streamed.
#[derive(Debug)]
pub struct GatewayResponse {
    pub head: CgiHead,
    pub body: GatewayBody,
}

/// What the HTTP side knows about the connection a request came in on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The request came in over TLS: sets `HTTPS=on`.
    pub https: bool,
    /// SERVER_NAME; `None` takes the host of the Host header (or URI authority), else the local IP.
    pub server_name: Option<String>,
    /// SERVER_PORT; `None` takes the local port.
    pub server_port: Option<u16>,
    /// SERVER_SOFTWARE, e.g. "hopgate/0.1.0".
    pub server_software: String,
}

/// Everything `build` needs besides the request head.
#[derive(Debug, Clone, Copy)]
pub struct MetaInput<'a> {
    pub conn: &'a ConnInfo,
    pub script: &'a ScriptPath,
    /// CONTENT_LENGTH; see `request_content_length`.
    pub content_length: Option<u64>,
    /// Pass `Authorization` on as HTTP_AUTHORIZATION (off by default: RFC 3875 §4.1.18 lets the
    /// server hide credentials from scripts).
    pub pass_authorization: bool,
}

/// Meta-variables in the order they were set. Names are ASCII; values are bytes (header values
/// may carry obs-text, paths may not be UTF-8).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaVars {
    vars: Vec<(String, Vec<u8>)>,
}

impl MetaVars {
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// Sets a variable, replacing an earlier value of the same name.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        let name = name.into();
        let value = value.into();
        match self.vars.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name, value)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.vars.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }
}

/// CONTENT_LENGTH for a request: its Content-Length, `None` without a body. A body of unknown
/// length (Transfer-Encoding without Content-Length) is refused with LengthRequired (411): all
/// three interfaces need the length up front (RFC 3875 §4.2) and hopgate does not buffer bodies.
pub fn request_content_length(parts: &Parts) -> Result<Option<u64>, GatewayError> {
    if let Some(v) = parts.headers.get(CONTENT_LENGTH) {
        let n = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| GatewayError::new(GatewayErrorKind::LengthRequired, "bad Content-Length"))?;
        return Ok(Some(n));
    }
    if parts.headers.contains_key(TRANSFER_ENCODING) {
        return Err(GatewayError::new(GatewayErrorKind::LengthRequired, "request body without Content-Length"));
    }
    Ok(None)
}

// Hop-by-hop fields (RFC 9110 §7.6.1) never become meta-variables, whatever the HTTP side left.
// Proxy-Authorization: credentials meant for hopgate, never for a script.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Builds the meta-variables for one request (RFC 3875 §4.1).
pub fn build(parts: &Parts, input: &MetaInput<'_>) -> MetaVars {
    let mut m = MetaVars::default();
    let conn = input.conn;
    let script = input.script;
    m.set("GATEWAY_INTERFACE", "CGI/1.1");
    m.set("SERVER_SOFTWARE", conn.server_software.as_str());
    m.set("SERVER_PROTOCOL", protocol(parts.version));
    m.set("SERVER_NAME", server_name(parts, conn));
    m.set("SERVER_PORT", conn.server_port.unwrap_or(conn.local.port()).to_string());
    m.set("REQUEST_METHOD", parts.method.as_str());
    m.set("REQUEST_URI", parts.uri.path_and_query().map_or("/", |pq| pq.as_str()));
    m.set("QUERY_STRING", parts.uri.query().unwrap_or(""));
    m.set("SCRIPT_NAME", script.script_name.as_str());
    m.set("PATH_INFO", script.path_info.as_str());
    if let Some(p) = &script.path_translated {
        m.set("PATH_TRANSLATED", p.as_os_str().as_bytes());
    }
    if let Some(p) = &script.script_filename {
        m.set("SCRIPT_FILENAME", p.as_os_str().as_bytes());
    }
    if let Some(p) = &script.document_root {
        m.set("DOCUMENT_ROOT", p.as_os_str().as_bytes());
    }
    if let Some(n) = input.content_length {
        m.set("CONTENT_LENGTH", n.to_string());
    }
    if let Some(t) = parts.headers.get(CONTENT_TYPE) {
        m.set("CONTENT_TYPE", t.as_bytes());
    }
    m.set("REMOTE_ADDR", conn.remote.ip().to_canonical().to_string());
    m.set("REMOTE_PORT", conn.remote.port().to_string());
    if conn.https {
        m.set("HTTPS", "on");
    }
    add_header_vars(&mut m, parts, input.pass_authorization);
    m
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn server_name(parts: &Parts, conn: &ConnInfo) -> String {
    if let Some(n) = &conn.server_name {
        return n.clone();
    }
    let authority = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .or_else(|| parts.uri.authority().cloned());
    match authority {
        Some(a) => a.host().to_owned(),
        None => conn.local.ip().to_canonical().to_string(),
    }
}

/// RFC 3875 §4.1.18: HTTP_* variables from the request header fields.
fn add_header_vars(m: &mut MetaVars, parts: &Parts, pass_authorization: bool) {
    let named_by_connection: Vec<String> = parts
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for name in parts.headers.keys() {
        if !passes(name, pass_authorization, &named_by_connection) {
            continue;
        }
        // RFC 6265 §5.4: cookies are joined with "; " (HTTP/2 splits them into several fields).
        let sep: &[u8] = if name == COOKIE { b"; " } else { b", " };
        let mut value = Vec::new();
        for (i, v) in parts.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                value.extend_from_slice(sep);
            }
            value.extend_from_slice(v.as_bytes());
        }
        m.set(var_name(name), value);
    }
    // HTTP/2 carries the host in :authority only; scripts still expect HTTP_HOST.
    if !parts.headers.contains_key(HOST)
        && let Some(a) = parts.uri.authority()
    {
        m.set("HTTP_HOST", a.as_str());
    }
}

fn passes(name: &HeaderName, pass_authorization: bool, named_by_connection: &[String]) -> bool {
    let n = name.as_str();
    // Only [A-Za-z0-9-]: "_" would let "X_Foo" pose as "X-Foo", other token chars are not
    // portable in an environment name.
    if !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return false;
    }
    // Sent as CONTENT_LENGTH/CONTENT_TYPE already (RFC 3875 §4.1.18).
    if name == CONTENT_LENGTH || name == CONTENT_TYPE {
        return false;
    }
    // httpoxy (CVE-2016-5385): HTTP_PROXY would read as the proxy setting of the script's HTTP client.
    if n == "proxy" {
        return false;
    }
    if name == AUTHORIZATION && !pass_authorization {
        return false;
    }
    !HOP_BY_HOP.contains(&n) && !named_by_connection.iter().any(|t| t == n)
}

fn var_name(name: &HeaderName) -> String {
    let mut s = String::with_capacity(5 + name.as_str().len());
    s.push_str("HTTP_");
    s.extend(name.as_str().chars().map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() }));
    s
}

/// Reads upstream output until the CGI head is complete; returns the head and the body (the
/// leftover bytes first, then the rest of `stream`).
pub(crate) async fn read_response<S>(mut stream: S) -> Result<GatewayResponse, GatewayError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, GatewayError>> + Send + Sync + Unpin + 'static,
{
    use futures_util::StreamExt;
    let mut parser = HeadParser::new();
    loop {
        match stream.next().await {
            Some(Ok(chunk)) => {
                if let Some((head, rest)) = parser.feed(&chunk)? {
                    return Ok(GatewayResponse { head, body: GatewayBody::new(rest, stream) });
                }
            }
            Some(Err(e)) => return Err(e),
            None => return Err(parser.eof_error()),
        }
    }
}
