//! SCGI gateway: forwards a request to an SCGI application (SCGI 1 protocol, Neil Schemenauer):
//! the meta-variables as one netstring (CONTENT_LENGTH first, then SCGI=1), the body after it,
//! and the answer read as a CGI response.
//!
//! The connection is made by the route's [`Dialer`] (resolve once, the loop check, `script_timeout_secs` as the
//! connect timeout), as every outbound TCP connection of hopgate is.
//! Does not: pool connections or retry (SCGI has no keep-alive: one connection per request),
//! or send bodies of unknown length (411: SCGI needs CONTENT_LENGTH up front).

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::AsyncWriteExt;

use crate::backend::NotAnswered;
use crate::backend::meta::{
    self, FeedError, GatewayError, GatewayResponse, MetaVars, TaskGuard, UpstreamReader, feed_body,
};
use crate::config::Authority;
use crate::error::Error;
use crate::idle::{Stamp, Timer};
use crate::upstream::Dialer;

/// An application silent this long (no output while nothing moves) answers 504.
pub const DEFAULT_SCGI_TIMEOUT_SECS: u64 = 60;
/// Largest header netstring `decode_head` accepts.
pub const MAX_SCGI_HEAD_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ScgiConfig {
    /// `scgi://HOST:PORT`.
    pub addr: Authority,
    pub timeout: Duration,
}

impl ScgiConfig {
    pub fn new(addr: Authority) -> ScgiConfig {
        ScgiConfig { addr, timeout: Duration::from_secs(DEFAULT_SCGI_TIMEOUT_SECS) }
    }
}

/// One SCGI application, dialled through `dialer`.
#[derive(Debug, Clone)]
pub struct Scgi {
    cfg: ScgiConfig,
    dialer: Dialer,
}

impl Scgi {
    pub fn new(cfg: ScgiConfig, dialer: Dialer) -> Scgi {
        Scgi { cfg, dialer }
    }

    /// Sends one request with exactly `vars` (CONTENT_LENGTH and SCGI added when missing); at
    /// most CONTENT_LENGTH body bytes follow. Returns once the response head is in.
    pub async fn send<S, E>(&self, vars: &MetaVars, body: S) -> Result<GatewayResponse, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        self.try_send(vars, body).await.map_err(NotAnswered::error)
    }

    /// [`Scgi::send`], with the body back when the connection could not be opened (nothing was sent).
    pub async fn try_send<S, E>(&self, vars: &MetaVars, body: S) -> Result<GatewayResponse, NotAnswered<S>>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let addr = &self.cfg.addr;
        let timeout = self.cfg.timeout;
        let length = vars
            .get("CONTENT_LENGTH")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let head = encode_head(vars);
        let (stream, _) = match self.dialer.dial(&addr.host, addr.port).await {
            Ok(s) => s,
            Err(e) => return Err(NotAnswered::Unsent(e, body)),
        };
        let (reader, mut writer) = stream.into_split();
        let progress = Arc::new(Stamp::now());
        let feeding = progress.clone();
        let upstream = format!("scgi://{addr}");
        let name = upstream.clone();
        // The task returns the write half so it stays open (not half-closed) until reading ends.
        let feeder = tokio::spawn(async move {
            writer.write_all(&head).await.ok()?;
            feeding.touch();
            match feed_body(&mut writer, body, &feeding, Some(length), |c, out| out.extend_from_slice(&c)).await {
                Ok(()) => {}
                Err(FeedError::Client(e)) => {
                    tracing::debug!(upstream = %name, error = %e, "request body failed")
                }
                Err(FeedError::Upstream(e)) => {
                    tracing::debug!(upstream = %name, error = %e, "application stopped reading");
                }
            }
            Some(writer)
        });
        let out = UpstreamReader::new(reader, TaskGuard(feeder), Timer::shared(progress, timeout), upstream);
        meta::read_response(out).await.map_err(|e| NotAnswered::Sent(e.into()))
    }
}

/// The request head as a netstring: `LEN:` then `NAME\0VALUE\0` pairs, then `,`. CONTENT_LENGTH
/// comes first and SCGI=1 second, as the protocol requires; "0" when there is no body.
pub fn encode_head(vars: &MetaVars) -> Bytes {
    let mut pairs = BytesMut::new();
    let mut put = |name: &str, value: &[u8]| {
        pairs.put_slice(name.as_bytes());
        pairs.put_u8(0);
        // NULs cannot occur in header values or paths; drop any rather than break the framing.
        pairs.extend(value.iter().copied().filter(|&b| b != 0));
        pairs.put_u8(0);
    };
    put("CONTENT_LENGTH", vars.get("CONTENT_LENGTH").unwrap_or(b"0"));
    put("SCGI", b"1");
    for (name, value) in vars.iter() {
        if name != "CONTENT_LENGTH" && name != "SCGI" {
            put(name, value);
        }
    }
    let mut out = BytesMut::with_capacity(pairs.len() + 12);
    out.put_slice(pairs.len().to_string().as_bytes());
    out.put_u8(b':');
    out.put_slice(&pairs);
    out.put_u8(b',');
    out.freeze()
}

/// Reads a request head netstring (the application's side; for tests and tools): `Ok(None)` until
/// it is complete, then the pairs and the number of bytes it took.
#[allow(clippy::type_complexity)]
pub fn decode_head(buf: &[u8]) -> Result<Option<(Vec<(String, Vec<u8>)>, usize)>, GatewayError> {
    let bad = |why: &str| GatewayError::bad_response(format!("SCGI netstring: {why}"));
    let Some(colon) = buf.iter().position(|&b| b == b':') else {
        if buf.len() > 8 || !buf.iter().all(u8::is_ascii_digit) {
            return Err(bad("no length"));
        }
        return Ok(None);
    };
    let digits = &buf[..colon];
    if digits.is_empty()
        || digits.len() > 8
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
    {
        return Err(bad("bad length"));
    }
    let len: usize = std::str::from_utf8(digits).ok().and_then(|d| d.parse().ok()).ok_or_else(|| bad("bad length"))?;
    if len > MAX_SCGI_HEAD_BYTES {
        return Err(bad("too long"));
    }
    let end = colon + 1 + len;
    if buf.len() <= end {
        return Ok(None);
    }
    if buf[end] != b',' {
        return Err(bad("missing ','"));
    }
    let body = &buf[colon + 1..end];
    let mut pairs = Vec::new();
    if body.is_empty() {
        return Ok(Some((pairs, end + 1)));
    }
    let Some(inner) = body.strip_suffix(&[0]) else {
        return Err(bad("unterminated field"));
    };
    let mut fields = inner.split(|&b| b == 0);
    while let Some(name) = fields.next() {
        let value = fields.next().ok_or_else(|| bad("name without value"))?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| bad("name not UTF-8"))?;
        pairs.push((name, value.to_vec()));
    }
    Ok(Some((pairs, end + 1)))
}
