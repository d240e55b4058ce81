//! The TLS ClientHello as an intercepting listener reads it before splicing (issue 18): the records it comes in
//! (RFC 8446 §5.1, RFC 5246 §6.2), reassembled when it is split over several records or segments, and the server
//! name (RFC 6066 §3) the policy judges. Nothing is decrypted or answered here; the caller forwards the very
//! bytes it read.
//!
//! Bounds: the ClientHello message (its 4-byte header included) may take [`MAX_HELLO_BYTES`], and the records
//! carrying it [`MAX_RECORDS_BYTES`] (tiny records have 5 bytes of header each); past either the hello is
//! refused ([`Refusal::TooLarge`]). A prefix of a valid hello is always [`Read::Incomplete`], never a refusal.
//! Does not: read SSLv2-style hellos, decrypt ECH (the outer name is the one seen), or check anything the server
//! will check.

use std::fmt;

/// The largest ClientHello (handshake header included) that is reassembled; larger is refused.
pub const MAX_HELLO_BYTES: usize = 16 * 1024;
/// The most bytes of records read for one ClientHello (headers of small records included).
pub const MAX_RECORDS_BYTES: usize = 2 * MAX_HELLO_BYTES;
/// The TLS record type of handshake messages.
pub const HANDSHAKE: u8 = 22;
/// The TLS record type of alerts.
pub const ALERT: u8 = 21;
const CLIENT_HELLO: u8 = 1;
const SERVER_NAME: u16 = 0;
const HOST_NAME: u8 = 0;
/// encrypted_client_hello (RFC 9849).
const ECH: u16 = 0xfe0d;
/// The largest record payload (RFC 8446 §5.1: 2^14).
const MAX_RECORD: usize = 1 << 14;

/// What the bytes read so far come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// A valid beginning: more bytes are needed.
    Incomplete,
    /// The whole ClientHello, in the first `len` bytes.
    Hello(ClientHello),
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The host name of the server_name extension, lowercase; None without one.
    pub sni: Option<String>,
    /// The record-layer version of its first record (an alert in reply uses it).
    pub record_version: u16,
    /// An encrypted_client_hello extension: the real name is hidden, `sni` is the public one.
    pub ech: bool,
    /// The bytes of the records that carried it.
    pub len: usize,
}

/// Why a ClientHello is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over [`MAX_HELLO_BYTES`] (the length it declares), or its records over [`MAX_RECORDS_BYTES`].
    TooLarge(usize),
    /// Not a well-formed ClientHello; says what is wrong.
    Malformed(&'static str),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooLarge(n) => write!(
                f,
                "TLS ClientHello of {n} bytes is over the limit of {MAX_HELLO_BYTES} (records: {MAX_RECORDS_BYTES})"
            ),
            Refusal::Malformed(why) => write!(f, "malformed TLS ClientHello: {why}"),
        }
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// Reads the ClientHello at the start of a connection's first bytes.
pub fn read(buf: &[u8]) -> Read {
    let mut msg: Vec<u8> = Vec::new();
    let mut pos = 0;
    let mut record_version = 0;
    loop {
        match declared(&msg) {
            Err(refusal) => return Read::Refused(refusal),
            Ok(Some(total)) if msg.len() >= total => {
                return match parse_body(&msg[4..total]) {
                    Ok((sni, ech)) => Read::Hello(ClientHello { sni, record_version, ech, len: pos }),
                    Err(why) => Read::Refused(Refusal::Malformed(why)),
                };
            }
            Ok(_) => {}
        }
        let rest = &buf[pos..];
        if rest.is_empty() {
            return Read::Incomplete;
        }
        if rest[0] != HANDSHAKE {
            return Read::Refused(Refusal::Malformed(if pos == 0 {
                "not a TLS handshake record"
            } else {
                "another record type inside the ClientHello"
            }));
        }
        if rest.len() >= 2 && rest[1] != 3 {
            return Read::Refused(Refusal::Malformed("record version is not 3.x"));
        }
        if rest.len() < 5 {
            return Read::Incomplete;
        }
        let len = usize::from(u16_at(rest, 3));
        if len == 0 {
            return Read::Refused(Refusal::Malformed("an empty handshake record"));
        }
        if len > MAX_RECORD {
            return Read::Refused(Refusal::Malformed("a record over 2^14 bytes"));
        }
        if pos + 5 + len > MAX_RECORDS_BYTES {
            return Read::Refused(Refusal::TooLarge(pos + 5 + len));
        }
        if pos == 0 {
            record_version = u16_at(rest, 1);
        }
        let have = (rest.len() - 5).min(len);
        msg.extend_from_slice(&rest[5..5 + have]);
        if have < len {
            // A partial record: its first bytes may already say the hello is too large; the rest is awaited.
            return match declared(&msg) {
                Err(refusal) => Read::Refused(refusal),
                Ok(_) => Read::Incomplete,
            };
        }
        pos += 5 + len;
    }
}

/// The length (header included) the handshake message reassembled so far declares, once its header is there.
fn declared(msg: &[u8]) -> Result<Option<usize>, Refusal> {
    if msg.len() < 4 {
        return Ok(None);
    }
    if msg[0] != CLIENT_HELLO {
        return Err(Refusal::Malformed("the first handshake message is no ClientHello"));
    }
    let total = 4 + (usize::from(msg[1]) << 16 | usize::from(msg[2]) << 8 | usize::from(msg[3]));
    if total > MAX_HELLO_BYTES {
        return Err(Refusal::TooLarge(total));
    }
    Ok(Some(total))
}

/// A cursor over a ClientHello body; every read is bounds-checked.
struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], &'static str> {
        if self.b.len() < n {
            return Err(what);
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, &'static str> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, &'static str> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one- or two-byte length.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], &'static str> {
        let n = usize::from(self.u8(what)?);
        self.take(n, what)
    }

    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], &'static str> {
        let n = usize::from(self.u16(what)?);
        self.take(n, what)
    }
}

/// RFC 8446 §4.1.2 (and 5246 §7.4.1.2): legacy_version, random, session id, cipher suites, compression methods,
/// extensions (absent in a bare TLS 1.2 hello). Returns the server name and whether ECH is offered.
fn parse_body(body: &[u8]) -> Result<(Option<String>, bool), &'static str> {
    let mut c = Cursor { b: body };
    c.take(2, "truncated legacy_version")?;
    c.take(32, "truncated random")?;
    if c.vec8("truncated session id")?.len() > 32 {
        return Err("session id over 32 bytes");
    }
    let suites = c.vec16("truncated cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("cipher suites are not a non-empty list of pairs");
    }
    if c.vec8("truncated compression methods")?.is_empty() {
        return Err("no compression method");
    }
    if c.b.is_empty() {
        return Ok((None, false));
    }
    let mut exts = Cursor { b: c.vec16("truncated extensions")? };
    if !c.b.is_empty() {
        return Err("bytes after the extensions");
    }
    let mut seen = Vec::new();
    let mut sni = None;
    let mut ech = false;
    while !exts.b.is_empty() {
        let kind = exts.u16("truncated extension")?;
        let data = exts.vec16("truncated extension")?;
        // RFC 8446 §4.2: no extension twice.
        if seen.contains(&kind) {
            return Err("an extension appears twice");
        }
        seen.push(kind);
        match kind {
            SERVER_NAME => sni = Some(server_name(data)?),
            ECH => ech = true,
            _ => {}
        }
    }
    Ok((sni, ech))
}

/// RFC 6066 §3: a ServerNameList with exactly one host_name; a DNS name in ASCII without a trailing dot.
fn server_name(data: &[u8]) -> Result<String, &'static str> {
    let mut c = Cursor { b: data };
    let mut list = Cursor { b: c.vec16("truncated server name list")? };
    if !c.b.is_empty() {
        return Err("bytes after the server name list");
    }
    let mut name = None;
    while !list.b.is_empty() {
        if list.u8("truncated server name")? != HOST_NAME {
            return Err("a server name that is no host_name");
        }
        let host = list.vec16("truncated host name")?;
        if name.is_some() {
            return Err("two host names");
        }
        name = Some(host);
    }
    let host = name.ok_or("an empty server name list")?;
    let valid_label = |l: &[u8]| {
        !l.is_empty() && l.len() <= 63 && l.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.is_empty() || host.len() > 253 || !host.split(|&b| b == b'.').all(valid_label) {
        return Err("the host name is not a DNS name");
    }
    // ASCII only, checked above.
    Ok(String::from_utf8_lossy(host).to_ascii_lowercase())
}

/// A fatal alert record (RFC 8446 §6): what a refused client reads before the connection closes.
pub fn alert(record_version: u16, description: Alert) -> [u8; 7] {
    let [v0, v1] = record_version.to_be_bytes();
    [ALERT, v0, v1, 0, 2, 2, description as u8]
}

/// The alerts an intercepting listener sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    /// The policy refused the connection (by its name, or its rate).
    AccessDenied = 49,
    /// The ClientHello could not be read (malformed, too large).
    DecodeError = 50,
    /// The original destination could not be reached.
    InternalError = 80,
}

/// A handshake message cut into records of at most `size` bytes of payload each (for tests and fuzzing: the same
/// hello framed differently).
pub fn frame(message: &[u8], size: usize, record_version: u16) -> Vec<u8> {
    let size = size.clamp(1, MAX_RECORD);
    let mut out = Vec::with_capacity(message.len() + 5 * message.len().div_ceil(size));
    for chunk in message.chunks(size) {
        out.push(HANDSHAKE);
        out.extend_from_slice(&record_version.to_be_bytes());
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// A minimal ClientHello handshake message naming `sni` (no record header), with `padding` bytes of a padding
/// extension (RFC 7685): for tests and fuzzing.
pub fn hello_message(sni: Option<&str>, padding: usize) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x5a; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[1, 0]); // null compression
    let mut exts = Vec::new();
    if let Some(name) = sni {
        let n = name.as_bytes();
        let entry_len = 3 + n.len();
        exts.extend_from_slice(&SERVER_NAME.to_be_bytes());
        exts.extend_from_slice(&((entry_len + 2) as u16).to_be_bytes());
        exts.extend_from_slice(&(entry_len as u16).to_be_bytes());
        exts.push(HOST_NAME);
        exts.extend_from_slice(&(n.len() as u16).to_be_bytes());
        exts.extend_from_slice(n);
    }
    // supported_versions: TLS 1.3.
    exts.extend_from_slice(&[0, 43, 0, 3, 2, 3, 4]);
    if padding > 0 {
        exts.extend_from_slice(&21u16.to_be_bytes());
        exts.extend_from_slice(&(padding as u16).to_be_bytes());
        exts.resize(exts.len() + padding, 0);
    }
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut msg = vec![CLIENT_HELLO];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_however_the_hello_is_framed() {
        let msg = hello_message(Some("WWW.Example.com"), 0);
        for size in [1, 2, 7, 100, MAX_RECORD] {
            let bytes = frame(&msg, size, 0x0301);
            match read(&bytes) {
                Read::Hello(h) => {
                    assert_eq!(h.sni.as_deref(), Some("www.example.com"), "{size}");
                    assert_eq!(h.len, bytes.len());
                }
                other => panic!("{size}: {other:?}"),
            }
            for cut in 0..bytes.len() {
                assert_eq!(read(&bytes[..cut]), Read::Incomplete, "records of {size}, cut at {cut}");
            }
        }
        let unnamed = frame(&hello_message(None, 0), 50, 0x0301);
        let expected = ClientHello { sni: None, record_version: 0x0301, ech: false, len: unnamed.len() };
        assert_eq!(read(&unnamed), Read::Hello(expected));
        // Bytes after the hello (early data, the next flight) are not part of it.
        let mut more = frame(&msg, MAX_RECORD, 0x0303);
        let len = more.len();
        more.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        assert!(matches!(read(&more), Read::Hello(h) if h.len == len));
    }

    #[test]
    fn limits_and_refusals() {
        let big = hello_message(Some("a.example"), MAX_HELLO_BYTES);
        let bytes = frame(&big, MAX_RECORD, 0x0303);
        assert_eq!(read(&bytes[..20]), Read::Refused(Refusal::TooLarge(big.len())), "refused as soon as it says so");
        let just = hello_message(Some("a.example"), 0);
        let fits = hello_message(Some("a.example"), MAX_HELLO_BYTES - just.len() - 4);
        assert_eq!(fits.len(), MAX_HELLO_BYTES);
        assert!(matches!(read(&frame(&fits, 4000, 0x0303)), Read::Hello(_)), "exactly the limit");
        // Tiny records: the records' bytes are bounded too.
        let tiny = frame(&hello_message(Some("a.example"), 6000), 1, 0x0303);
        assert!(matches!(read(&tiny), Read::Refused(Refusal::TooLarge(_))));
        for (bytes, why) in [
            (b"GET / HTTP/1.1\r\n".to_vec(), "not a TLS handshake record"),
            (vec![22, 3, 1, 0, 0], "an empty handshake record"),
            (vec![22, 2, 0], "record version is not 3.x"),
            (frame(&[2, 0, 0, 1, 0], 10, 0x0303), "the first handshake message is no ClientHello"),
        ] {
            assert_eq!(read(&bytes), Read::Refused(Refusal::Malformed(why)));
        }
        let mut two = frame(&hello_message(Some("a.example"), 0), 30, 0x0303);
        two[30 + 5] = ALERT;
        assert_eq!(read(&two), Read::Refused(Refusal::Malformed("another record type inside the ClientHello")));
        let bad_name = frame(&hello_message(Some("a b.example"), 0), MAX_RECORD, 0x0303);
        assert_eq!(read(&bad_name), Read::Refused(Refusal::Malformed("the host name is not a DNS name")));
        let trailing_dot = frame(&hello_message(Some("a.example."), 0), MAX_RECORD, 0x0303);
        assert!(matches!(read(&trailing_dot), Read::Refused(_)));
    }

    #[test]
    fn alerts() {
        assert_eq!(alert(0x0303, Alert::AccessDenied), [21, 3, 3, 0, 2, 2, 49]);
    }
}
