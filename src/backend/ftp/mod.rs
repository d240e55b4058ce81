//! FTP protocol layer for the HTTP/FTP gateway (issue 5): a small async FTP client (RFC 959, with
//! RFC 2428 EPSV and RFC 3659 SIZE/MDTM/MLST/MLSD/REST STREAM), a pool of logged-in control
//! connections, directory listing parsers (MLSD, Unix and DOS `LIST`) and HTML/JSON renderers.
//!
//! How the HTTP side uses it:
//! ```text
//! let pool = FtpPool::new(settings, config, dialer);         // the room's dialer: every connection
//! let path = ftp::decode_url_path(url_path)?;                 // 400 on CR/LF/NUL, `..`
//! let mut s = pool.checkout(&Target { host, port, login }).await?;
//! match s.stat(&path).await? {                                // MLST, else SIZE/MDTM, else CWD
//!     Stat { kind: EntryKind::Dir, .. } => render_html(title, &s.list(&path).await?, at_root),
//!     Stat { size, modified, .. } => body = s.retr(&path, offset).await?.with_expected_len(..),
//! }
//! PUT: let mut up = s.upload(&path).await?; write the body into `up`; up.finish().await?
//! any Err(e) -> e.into_error(server, realm): hopgate's Error (its kind, the reply in the detail, e as the cause)
//! Download read errors -> FtpError::from_io_owned(err, during)
//! ```
//! Every connection, control and data, is made by the room's `upstream::Dialer` (resolve once, the target
//! policy of the forward proxy, the loop check). Every data connection goes to the control connection's peer
//! IP, whatever address a PASV reply names (FTP bounce, RFC 2577). Paths are UTF-8; one with CR, LF or NUL is refused before any
//! command is sent.
//!
//! Does not: speak active mode (PORT/EPRT), FTPS, ASCII mode (always `TYPE I`), or resume a
//! failed transfer by itself.

mod body;
mod client;
mod dir;
mod error;
pub(crate) mod gateway;
pub mod listing;
mod pool;
pub mod reply;
mod transfer;

use std::time::Duration;

pub use client::{Features, FtpSession, Login, Stat};
pub use error::FtpError;
pub use gateway::{Ftp, serve};
pub use listing::{Entry, EntryKind};
pub use pool::{
    DEFAULT_FTP_IDLE_SECS, DEFAULT_FTP_MAX_IDLE_PER_KEY, DEFAULT_FTP_MAX_IDLE_TOTAL, DEFAULT_FTP_NOOP_AFTER_SECS,
    FtpPool, FtpPoolConfig, PooledSession, Target,
};
pub use transfer::{Download, Upload};

/// The well-known FTP control port, for `ftp://` URLs without one (RFC 1738 §3.2).
pub const DEFAULT_FTP_PORT: u16 = 21;
/// Waiting for any one reply on the control connection.
pub const DEFAULT_FTP_REPLY_TIMEOUT_SECS: u64 = 30;
/// TCP connect of a passive data connection.
pub const DEFAULT_FTP_DATA_CONNECT_TIMEOUT_SECS: u64 = 10;
/// A data connection that moves no byte for this long is a failed transfer.
pub const DEFAULT_FTP_DATA_IDLE_SECS: u64 = 60;
/// A directory listing larger than this is an error ([`FtpError::ListingTooLarge`]), not an OOM.
pub const DEFAULT_MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;

/// Timeouts and limits of one FTP session; `Default` uses the `DEFAULT_*` constants. The control connection is
/// made within the listener's `connect_secs` (the room's dialer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FtpSettings {
    pub reply_timeout: Duration,
    pub data_connect_timeout: Duration,
    pub data_idle_timeout: Duration,
    pub max_listing_bytes: usize,
}

impl Default for FtpSettings {
    fn default() -> Self {
        FtpSettings {
            reply_timeout: Duration::from_secs(DEFAULT_FTP_REPLY_TIMEOUT_SECS),
            data_connect_timeout: Duration::from_secs(DEFAULT_FTP_DATA_CONNECT_TIMEOUT_SECS),
            data_idle_timeout: Duration::from_secs(DEFAULT_FTP_DATA_IDLE_SECS),
            max_listing_bytes: DEFAULT_MAX_LISTING_BYTES,
        }
    }
}

/// Refuses a path that would break the command line it is put in: CR or LF would end the
/// command early and smuggle a second one (RFC 959 §4.1.3, Telnet end-of-line), NUL truncates it
/// on many servers.
pub fn check_path(path: &str) -> Result<(), FtpError> {
    if path.contains(['\r', '\n', '\0']) {
        return Err(FtpError::BadPath { reason: "path contains CR, LF or NUL" });
    }
    Ok(())
}

/// Turns the path of an `ftp://` URL (or the part of a request path under a gateway's base,
/// still percent-encoded, starting with `/`) into the FTP path the session methods take.
///
/// RFC 1738 §3.2.2: the path is relative to the log-in directory, so `/pub/a%20b` gives
/// `pub/a b` and `/` gives `` (the log-in directory itself); a first segment starting with
/// `%2F` makes it absolute (`/%2Fetc/x` gives `/etc/x`). Empty segments and a trailing `/` are
/// dropped (the caller sees the trailing `/` in the URL itself). `.` and `..` segments are a
/// [`FtpError::BadPath`], so that a gateway's base directory cannot be left; so are invalid
/// percent-escapes, invalid UTF-8 and CR, LF or NUL.
pub fn decode_url_path(url_path: &str) -> Result<String, FtpError> {
    let raw = url_path.strip_prefix('/').unwrap_or(url_path);
    let decoded = percent_decode(raw)?;
    check_path(&decoded)?;
    let absolute = decoded.starts_with('/');
    let mut segments = Vec::new();
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        if segment == "." || segment == ".." {
            return Err(FtpError::BadPath { reason: "path has a . or .. segment" });
        }
        segments.push(segment);
    }
    let joined = segments.join("/");
    Ok(if absolute { format!("/{joined}") } else { joined })
}

fn percent_decode(s: &str) -> Result<String, FtpError> {
    const BAD: FtpError = FtpError::BadPath { reason: "invalid percent-encoding in path" };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(BAD)?;
            let hi = (hex[0] as char).to_digit(16).ok_or(BAD)?;
            let lo = (hex[1] as char).to_digit(16).ok_or(BAD)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| FtpError::BadPath { reason: "path is not UTF-8" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_paths_decode_relative_to_login_dir() {
        assert_eq!(decode_url_path("/").unwrap(), "");
        assert_eq!(decode_url_path("").unwrap(), "");
        assert_eq!(decode_url_path("/pub/a%20b.txt").unwrap(), "pub/a b.txt");
        assert_eq!(decode_url_path("/pub//dir/").unwrap(), "pub/dir");
        assert_eq!(decode_url_path("/%2Fetc/x").unwrap(), "/etc/x");
        assert_eq!(decode_url_path("/%C3%BCber%20%E2%98%83").unwrap(), "über ☃");
        assert_eq!(decode_url_path("/ü x").unwrap(), "ü x");
    }

    #[test]
    fn url_paths_refuse_bad_input() {
        for bad in
            ["/a%0D%0ADELE%20x", "/a%0a", "/a%00b", "/a/../b", "/./a", "/a%2E%2E/x/%2e%2e", "/%zz", "/%4", "/%FF"]
        {
            let err = decode_url_path(bad).unwrap_err();
            assert!(matches!(err, FtpError::BadPath { .. }), "{bad}: {err}");
            assert_eq!(crate::error::Error::from(err).status(), http::StatusCode::BAD_REQUEST);
        }
    }

    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync + 'static>() {}

    /// Type-checked only: what the HTTP side holds across awaits or puts in a response body
    /// must be `Send` (hyper's service futures and bodies run on any worker thread).
    #[allow(dead_code)]
    fn futures_are_send(pool: &FtpPool, target: &Target, mut s: PooledSession) {
        assert_send(&pool.checkout(target));
        assert_send(&s.stat(""));
        assert_send(&s.list(""));
        assert_send(&s.retr("", 0));
    }

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<FtpPool>();
        assert_send_sync::<PooledSession>();
        assert_send_sync::<Download<PooledSession>>();
        assert_send_sync::<Upload<PooledSession>>();
        assert_send_sync::<FtpError>();
    }

    #[test]
    fn check_path_refuses_line_breaks() {
        assert!(check_path("a b/ü.txt").is_ok());
        assert!(check_path("a\rb").is_err());
        assert!(check_path("a\nb").is_err());
        assert!(check_path("a\0b").is_err());
    }
}
