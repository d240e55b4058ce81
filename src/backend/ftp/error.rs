//! What went wrong talking FTP (issue 5), and the one place it becomes hopgate's [`Error`]:
//! [`FtpError::into_error`] (and `From<FtpError> for Error`). The status comes from `Error::status`.

use std::{fmt, io};

use http::HeaderValue;

use super::reply::Reply;
use crate::error::{Error, Kind, Side};

/// One FTP failure. Variants name what happened; those caused by a server reply carry the
/// reply's full text (`550 Failed to open file.`), for the error page. The status each one gets
/// (through its [`Kind`]) is named on the variant.
#[derive(Debug)]
#[non_exhaustive]
pub enum FtpError {
    /// The path has CR, LF or NUL (or is otherwise unusable); no command was sent. 400.
    BadPath { reason: &'static str },
    /// The control or a data connection could not be made: the room's dialer says why (its kind decides the
    /// status: DNS or refused 502, its connect timeout 504, a loop 508, the target policy 403), in its words.
    Dial(Error),
    /// A reply or a data transfer took too long. 504.
    Timeout { during: &'static str },
    /// 421: the server is shutting down or refuses service (also as a greeting). 502.
    ServiceUnavailable { reply: String },
    /// 530 (not logged in): wrong user or password, or anonymous refused. 401.
    LoginRefused { reply: String },
    /// 550 on a path that does not exist. 404.
    NotFound { reply: String },
    /// 550 with a permission text, 553, or 532. 403.
    PermissionDenied { reply: String },
    /// Any other negative or unexpected reply to `command`. 502.
    Rejected { command: &'static str, reply: String },
    /// The server broke the protocol: an unparseable or oversized reply. 502.
    Protocol { detail: String },
    /// The server closed the control connection while a reply was awaited. 502.
    ConnectionClosed { during: &'static str },
    /// An I/O error on the control or data connection. 502.
    Io { during: &'static str, source: io::Error },
    /// A download ended without a 226/250 (a dropped data connection, 426, or fewer or more bytes
    /// than announced): the file must not be taken as complete. 502.
    TransferIncomplete { received: u64, reply: Option<String> },
    /// A listing exceeded `FtpSettings::max_listing_bytes`. 502.
    ListingTooLarge { limit: usize },
}

impl FtpError {
    /// hopgate's [`Error`] for this failure of the FTP server `server` (`host:port`, named in the detail; "" when
    /// unknown): the one place an `FtpError` becomes one. The kind keeps the meaning (a 421 is
    /// `UpstreamUnavailable`, a negative reply to a command `UpstreamRejected`, a 530 `Unauthorized` with a
    /// `Basic realm="FTP realm_host"` challenge); the detail names the server and quotes its reply as sent, code
    /// and text (the page is text/plain: nothing in it is markup); the error stays the source, for the log.
    /// A [`FtpError::Dial`] is the dialer's error as it is, as for every other upstream.
    pub fn into_error(self, server: &str, realm_host: &str) -> Error {
        let this = match self {
            FtpError::Dial(e) => return e,
            other => other,
        };
        let (kind, side) = match &this {
            FtpError::Dial(e) => (e.kind(), e.side()),
            FtpError::BadPath { .. } => (Kind::BadRequest, Side::Client),
            FtpError::NotFound { .. } => (Kind::NotFound, Side::Upstream),
            FtpError::PermissionDenied { .. } => (Kind::Forbidden, Side::Upstream),
            FtpError::LoginRefused { .. } => (Kind::Unauthorized, Side::Upstream),
            FtpError::Timeout { .. } => (Kind::ResponseTimeout, Side::Upstream),
            FtpError::ServiceUnavailable { .. } => (Kind::UpstreamUnavailable, Side::Upstream),
            FtpError::Rejected { .. } => (Kind::UpstreamRejected, Side::Upstream),
            FtpError::Protocol { .. } => (Kind::UpstreamProtocol, Side::Upstream),
            FtpError::ConnectionClosed { .. } | FtpError::Io { .. } | FtpError::TransferIncomplete { .. } => {
                (Kind::UpstreamClosedEarly, Side::Upstream)
            }
            FtpError::ListingTooLarge { .. } => (Kind::ResponseTooLarge, Side::Upstream),
        };
        let named = if server.is_empty() { "ftp server".to_string() } else { format!("ftp server {server}") };
        let detail = match (&this, this.reply_text()) {
            (FtpError::BadPath { reason }, _) => format!("bad ftp path: {reason}; no ftp command was sent"),
            (FtpError::Rejected { command, .. }, Some(reply)) => format!("{named} answered {command} with: {reply}"),
            (_, Some(reply)) => format!("{named} answered: {reply}"),
            (_, None) => format!("{named}: {this}"),
        };
        let mut err = Error::new(kind, side, detail);
        if kind == Kind::Unauthorized {
            let challenge = HeaderValue::from_str(&format!("Basic realm=\"FTP {}\"", realm_host.replace('"', "")))
                .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"FTP\""));
            err = err.with_challenge(challenge);
        }
        err.with_worded_source(this)
    }

    /// The FTP server's own reply text, code first, when a reply caused this error.
    pub fn reply_text(&self) -> Option<&str> {
        match self {
            FtpError::ServiceUnavailable { reply }
            | FtpError::LoginRefused { reply }
            | FtpError::NotFound { reply }
            | FtpError::PermissionDenied { reply }
            | FtpError::Rejected { reply, .. } => Some(reply),
            FtpError::TransferIncomplete { reply, .. } => reply.as_deref(),
            _ => None,
        }
    }

    /// Unwraps an `FtpError` carried in an `io::Error` returned by a [`super::Download`] or [`super::Upload`]
    /// (their `AsyncRead`/`AsyncWrite` can only return `io::Error`), or wraps a foreign one as `Io`.
    pub fn from_io_owned(err: io::Error, during: &'static str) -> FtpError {
        if !err.get_ref().is_some_and(|e| e.is::<FtpError>()) {
            return FtpError::Io { during, source: err };
        }
        match err.into_inner().map(|inner| inner.downcast::<FtpError>()) {
            Some(Ok(ftp)) => *ftp,
            // unreachable: checked just above
            _ => FtpError::Protocol { detail: "lost ftp error".into() },
        }
    }

    /// Classifies a negative (or unexpected) reply to `command`.
    ///
    /// The rule for 550, whose meaning RFC 959 leaves to the text ("file unavailable (e.g., file
    /// not found, no access)"): it is `PermissionDenied` (403) when the text says "permission",
    /// "denied", "not allowed", "forbidden" or "privilege" (vsftpd: `550 Permission denied.`,
    /// pyftpdlib: `550 Not enough privileges.`), else `NotFound` (404: vsftpd's `550 Failed to
    /// open file.`, pyftpdlib's `550 No such file or directory.`). A server that answers 550
    /// "Failed to open file." for an unreadable file thus gives 404, which also does not tell
    /// a client that the file exists. 553 (name not allowed, vsftpd's `553 Could not create
    /// file.`) and 532 (need account for storing) are 403, 530 is 401, 421 is 502
    /// (`UpstreamUnavailable`), any other 4xx/5xx to a command 502 (`UpstreamRejected`).
    pub fn from_reply(command: &'static str, reply: &Reply) -> FtpError {
        let text = reply.text();
        match reply.code {
            421 => FtpError::ServiceUnavailable { reply: text },
            530 => FtpError::LoginRefused { reply: text },
            532 | 553 => FtpError::PermissionDenied { reply: text },
            550 if says_permission(&text) => FtpError::PermissionDenied { reply: text },
            550 => FtpError::NotFound { reply: text },
            _ => FtpError::Rejected { command, reply: text },
        }
    }

    /// True for errors after which the control connection's state is unknown (I/O, timeouts,
    /// protocol errors, 421, broken transfers): such a session must not be reused.
    pub fn leaves_session_unknown(&self) -> bool {
        !matches!(
            self,
            FtpError::BadPath { .. }
                | FtpError::NotFound { .. }
                | FtpError::PermissionDenied { .. }
                | FtpError::Rejected { .. }
                | FtpError::LoginRefused { .. }
        )
    }
}

fn says_permission(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["permission", "denied", "not allowed", "forbidden", "privilege"].iter().any(|word| lower.contains(word))
}

impl fmt::Display for FtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FtpError::BadPath { reason } => write!(f, "bad ftp path: {reason}"),
            FtpError::Dial(e) => write!(f, "{e}"),
            FtpError::Timeout { during } => {
                write!(f, "ftp server timed out during {during}")
            }
            FtpError::ServiceUnavailable { reply } => {
                write!(f, "ftp server unavailable: {reply}")
            }
            FtpError::LoginRefused { reply } => write!(f, "ftp log-in refused: {reply}"),
            FtpError::NotFound { reply } => write!(f, "ftp path not found: {reply}"),
            FtpError::PermissionDenied { reply } => write!(f, "ftp permission denied: {reply}"),
            FtpError::Rejected { command, reply } => {
                write!(f, "ftp server rejected {command}: {reply}")
            }
            FtpError::Protocol { detail } => write!(f, "ftp protocol error: {detail}"),
            FtpError::ConnectionClosed { during } => {
                write!(f, "ftp server closed the connection during {during}")
            }
            FtpError::Io { during, source } => write!(f, "ftp i/o error during {during}: {source}"),
            FtpError::TransferIncomplete { received, reply } => match reply {
                Some(reply) => write!(f, "ftp transfer incomplete after {received} bytes: {reply}"),
                None => write!(f, "ftp transfer incomplete after {received} bytes"),
            },
            FtpError::ListingTooLarge { limit } => {
                write!(f, "ftp listing larger than {limit} bytes")
            }
        }
    }
}

impl std::error::Error for FtpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FtpError::Dial(e) => Some(e),
            FtpError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// An `FtpError` whose server is not known here (a bad path, found before any connection); the gateway calls
/// [`FtpError::into_error`] with the server's name instead.
impl From<FtpError> for Error {
    fn from(e: FtpError) -> Error {
        e.into_error("", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, text: &str) -> Reply {
        Reply { code, lines: vec![format!("{code} {text}")] }
    }

    #[test]
    fn replies_keep_their_meaning_and_words() {
        let cases = [
            ("RETR", 550, "Failed to open file.", Kind::NotFound, 404),
            ("RETR", 550, "No such file or directory.", Kind::NotFound, 404),
            ("CWD", 550, "Failed to change directory.", Kind::NotFound, 404),
            ("STOR", 550, "Permission denied.", Kind::Forbidden, 403),
            ("STOR", 550, "Not enough privileges.", Kind::Forbidden, 403),
            ("STOR", 553, "Could not create file.", Kind::Forbidden, 403),
            ("STOR", 532, "Need account for storing files.", Kind::Forbidden, 403),
            ("PASS", 530, "Login incorrect.", Kind::Unauthorized, 401),
            ("USER", 421, "Service not available.", Kind::UpstreamUnavailable, 502),
            ("RETR", 451, "Local error.", Kind::UpstreamRejected, 502),
            ("TYPE", 504, "Not implemented.", Kind::UpstreamRejected, 502),
        ];
        for (cmd, code, text, kind, status) in cases {
            let ftp = FtpError::from_reply(cmd, &reply(code, text));
            assert_eq!(ftp.reply_text(), Some(format!("{code} {text}").as_str()));
            let err = ftp.into_error("h:21", "h");
            assert_eq!((err.kind(), err.status().as_u16()), (kind, status), "{code} {text}");
            assert_eq!(err.side(), Side::Upstream);
            // the reply, code and text, survives into the page's detail
            assert!(err.detail().ends_with(&format!(": {code} {text}")), "{}", err.detail());
        }
        let e = FtpError::from_reply("RETR", &reply(451, "x")).into_error("h:21", "h");
        assert_eq!(e.detail(), "ftp server h:21 answered RETR with: 451 x");
        assert!(!FtpError::from_reply("RETR", &reply(550, "x")).leaves_session_unknown());
    }

    #[test]
    fn other_failures_keep_their_meaning() {
        let cases = [
            (FtpError::BadPath { reason: "x" }, Kind::BadRequest, 400),
            (FtpError::Dial(Error::upstream(Kind::ConnectRefused, "x")), Kind::ConnectRefused, 502),
            (FtpError::Dial(Error::upstream(Kind::ConnectTimeout, "x")), Kind::ConnectTimeout, 504),
            (FtpError::Dial(Error::client(Kind::Loop, "x")), Kind::Loop, 508),
            (FtpError::Timeout { during: "greeting" }, Kind::ResponseTimeout, 504),
            (FtpError::Protocol { detail: "x".into() }, Kind::UpstreamProtocol, 502),
            (FtpError::ConnectionClosed { during: "x" }, Kind::UpstreamClosedEarly, 502),
            (FtpError::TransferIncomplete { received: 1, reply: None }, Kind::UpstreamClosedEarly, 502),
            (FtpError::ListingTooLarge { limit: 5 }, Kind::ResponseTooLarge, 502),
        ];
        for (ftp, kind, status) in cases {
            let err = Error::from(ftp);
            assert_eq!((err.kind(), err.status().as_u16()), (kind, status), "{err:?}");
        }
    }

    #[test]
    fn the_detail_is_plain_text_and_the_cause_is_logged() {
        let e = FtpError::NotFound { reply: "550 <b>gone</b> & away".into() }.into_error("h:21", "h");
        assert_eq!(e.detail(), "ftp server h:21 answered: 550 <b>gone</b> & away");
        let e = FtpError::LoginRefused { reply: "530 Login incorrect.".into() }.into_error("h:21", "h\"x");
        assert_eq!(e.challenge().unwrap(), "Basic realm=\"FTP hx\"");
        let e = FtpError::Timeout { during: "download" }.into_error("h:21", "h");
        assert_eq!(e.detail(), "ftp server h:21: ftp server timed out during download");
        let e = Error::from(FtpError::BadPath { reason: "CR" });
        assert_eq!(e.detail(), "bad ftp path: CR; no ftp command was sent");
        let e = FtpError::Io { during: "upload", source: io::Error::other("pipe gone") }.into_error("h:21", "h");
        assert_eq!(e.chain(), "ftp server h:21: ftp i/o error during upload: pipe gone");
    }

    #[test]
    fn ftp_error_survives_an_io_error() {
        let io = io::Error::other(FtpError::ListingTooLarge { limit: 5 });
        assert!(matches!(FtpError::from_io_owned(io, "x"), FtpError::ListingTooLarge { limit: 5 }));
        let foreign = io::Error::new(io::ErrorKind::BrokenPipe, "pipe");
        assert!(matches!(FtpError::from_io_owned(foreign, "upload"), FtpError::Io { .. }));
    }

    #[test]
    fn a_dial_error_stays_the_dialers() {
        let e = FtpError::Dial(Error::upstream(Kind::ConnectRefused, "connection refused by 127.0.0.1:2121"));
        let e = e.into_error("h:21", "h");
        assert_eq!((e.kind(), e.detail()), (Kind::ConnectRefused, "connection refused by 127.0.0.1:2121"));
    }
}
